"""create_app() (loopback_asgi/sidecar/app.py): routing, errors, token, CSRF, mounting."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from loopback_asgi import create_app
from tests.conftest import TOKEN, serve_in_thread

AUTH = {"Authorization": f"token {TOKEN}"}


@pytest.mark.parametrize(
    ("path", "status", "sentence"),
    [
        ("/nope/8000/", 404, "Unknown namespace 'nope'; the declared namespaces are: app."),
        ("/", 404, "No namespace in the path; the declared namespaces are: app."),
        ("/app/http/", 400, "The port 'http' is not a number from 1 to 65535."),
        ("/app/99999/", 400, "The port 99999 is not a number from 1 to 65535."),
        ("/app/0/", 400, "The port '0' is not a number from 1 to 65535."),
        ("/app/080/", 400, "The port '080' is not a number from 1 to 65535."),
        ("/app/22/", 403, "Port 22 is not allowed for namespace 'app' (allowed: 1024-65535)."),
    ],
)
def test_errors_are_a_status_and_one_sentence(sidecar: str, path: str, status: int, sentence: str) -> None:
    r = httpx.get(sidecar + path, headers={**AUTH, "Accept": "application/json"}, trust_env=False)
    assert r.status_code == status
    assert r.json() == {"status": status, "error": sentence}
    text = httpx.get(sidecar + path, headers=AUTH, trust_env=False)
    assert text.headers["content-type"].startswith("text/plain")
    assert text.text.strip().endswith(sentence)
    assert "Traceback" not in text.text


def test_html_error_escapes_what_it_echoes(sidecar: str) -> None:
    r = httpx.get(
        f"{sidecar}/app/%3Cscript%3Ealert(1)%3C%2Fscript%3E/",
        headers={**AUTH, "Accept": "text/html"},
        trust_env=False,
    )
    assert r.status_code == 400
    assert "<script>" not in r.text
    assert r.headers["x-content-type-options"] == "nosniff"


def test_token_is_required_on_tcp(sidecar: str, upstream: int) -> None:
    r = httpx.get(f"{sidecar}/app/{upstream}/json", trust_env=False)
    assert r.status_code == 401
    assert httpx.get(f"{sidecar}/app/{upstream}/json", headers={"Authorization": "token wrong"}).status_code == 401


def test_token_query_sets_a_cookie_the_browser_reuses(sidecar: str, upstream: int) -> None:
    with httpx.Client(trust_env=False) as client:
        first = client.get(f"{sidecar}/app/{upstream}/echo?token={TOKEN}")
        assert first.status_code == 200
        assert "jupyter-loopback-token" in first.headers["set-cookie"]
        again = client.get(f"{sidecar}/app/{upstream}/echo")
        assert again.status_code == 200
        # The sidecar's own cookie is a credential too: never passed on.
        assert "jupyter-loopback-token" not in json.dumps(again.json())


async def test_websocket_without_token_is_refused(sidecar: str, upstream: int) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"{sidecar.replace('http', 'ws')}/app/{upstream}/ws", proxy=None):
            pass
    assert info.value.response.status_code == 401


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Origin": "https://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Sec-Fetch-Site": "same-origin"}, 200),
        ({}, 200),
    ],
)
def test_cross_site_unsafe_requests_are_refused(
    sidecar: str, upstream: int, headers: dict[str, str], status: int
) -> None:
    r = httpx.post(f"{sidecar}/app/{upstream}/echo", headers={**AUTH, **headers}, content=b"x", trust_env=False)
    assert r.status_code == status


def test_same_origin_post_passes_without_xsrf(sidecar: str, upstream: int) -> None:
    origin = sidecar  # the page was served by the sidecar itself
    r = httpx.post(
        f"{sidecar}/app/{upstream}/echo",
        headers={**AUTH, "Origin": origin, "Sec-Fetch-Site": "same-origin"},
        data={"field": "value"},
        trust_env=False,
    )
    assert r.status_code == 200
    assert r.json()["method"] == "POST"


def test_cross_site_get_is_a_plain_read_and_passes(sidecar: str, upstream: int) -> None:
    r = httpx.get(f"{sidecar}/app/{upstream}/json", headers={**AUTH, "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 200


async def test_cross_origin_websocket_is_refused(sidecar: str, upstream: int) -> None:
    url = f"{sidecar.replace('http', 'ws')}/app/{upstream}/ws"
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, additional_headers=AUTH, origin="https://evil.example", proxy=None):  # type: ignore[arg-type]
            pass
    assert info.value.response.status_code == 403
    async with connect(url, additional_headers=AUTH, origin=sidecar, proxy=None) as ws:  # type: ignore[arg-type]
        await ws.send("same origin")
        assert await ws.recv() == "same origin"


def test_health_lists_namespaces(sidecar: str) -> None:
    r = httpx.get(f"{sidecar}/_loopback/health", headers=AUTH, trust_env=False)
    body = r.json()
    assert body["status"] == "ok"
    assert body["namespaces"]["app"] == {"ports": "1024-65535", "host": "127.0.0.1"}


@pytest.fixture
def mounted(upstream: int) -> Iterator[str]:
    """The sidecar mounted at /loopback inside another Starlette app, served by uvicorn."""
    inner = create_app({"mine": {"ports": [upstream]}}, discover=False)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # A mounted app's lifespan does not run by itself: enter it from the
        # outer one so the pooled upstream connections are closed at exit.
        async with inner.router.lifespan_context(inner):
            yield

    outer = Starlette(routes=[Mount("/loopback", app=inner)], lifespan=lifespan)
    with serve_in_thread(outer, lifespan="on") as url:
        yield url


def test_mounted_in_another_starlette_app(mounted: str, upstream: int) -> None:
    r = httpx.get(f"{mounted}/loopback/mine/{upstream}/echo/x?y=1", trust_env=False)
    assert r.status_code == 200
    seen = r.json()
    assert seen["raw_path"] == "/echo/x"
    assert dict(seen["headers"])["x-forwarded-prefix"] == f"/loopback/mine/{upstream}"
    redirect = httpx.get(f"{mounted}/loopback/mine/{upstream}/redirect?to=/next", trust_env=False)
    assert redirect.headers["location"] == f"/loopback/mine/{upstream}/next"
    other_port = httpx.get(f"{mounted}/loopback/mine/{upstream + 1 if upstream < 65535 else 1024}/", trust_env=False)
    assert other_port.status_code == 403
