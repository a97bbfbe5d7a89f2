"""reach() and mount_into(): which way the browser gets to a loopback port, and the one-line mount."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from websockets.asyncio.client import connect

from loopback_asgi import Reach, browser_url, kernel, mount_into, reach
from loopback_asgi.sidecar.app import Sidecar

from .conftest import serve_in_thread


@pytest.fixture(autouse=True)
def no_mounts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mounts announced here stay in this test: browser_url elsewhere in this process must not see them."""
    monkeypatch.setattr(kernel, "_mounts", [])


def _route_env(prefix: str = "/user/a/loopback") -> dict[str, str]:
    route = {"prefix": prefix, "namespaces": ["app"], "pid": os.getpid(), "host": socket.gethostname()}
    return {kernel.ROUTE_ENV: json.dumps(route), "JPY_PARENT_PID": str(os.getpid())}


def _catch_all(request: Any) -> PlainTextResponse:
    return PlainTextResponse("the app's own page")


class _ShinyLike:
    """An app object that holds its Starlette app as ``starlette_app``, as ``shiny.App`` does."""

    def __init__(self) -> None:
        self.starlette_app = Starlette(routes=[Route("/{path:path}", _catch_all)])


@pytest.fixture
def served() -> Iterator[tuple[str, Starlette]]:
    """A Starlette app with a catch-all route, served by uvicorn on 127.0.0.1; the sidecar not yet mounted."""
    app = Starlette(routes=[Route("/{path:path}", _catch_all)])

    async def close_pools() -> None:
        # A mount's lifespan does not run by itself; its exit closes the pooled upstream connections.
        for route in app.router.routes:
            inner = getattr(route, "app", None)
            if isinstance(inner, Sidecar):
                async with inner.router.lifespan_context(inner):
                    pass

    with serve_in_thread(app, after=close_pools) as url:
        yield url, app


def test_direct_where_nothing_else_exists(upstream: int) -> None:
    assert reach("app", upstream, "/json", environ={}) == Reach("direct", f"http://127.0.0.1:{upstream}/json")


def test_the_jupyter_route_wins(upstream: int) -> None:
    mount_into(Starlette())
    way = reach("app", upstream, "x", environ=_route_env())
    assert way == Reach("route", f"/user/a/loopback/app/{upstream}/x")


def test_an_announcement_of_another_server_is_not_trusted(upstream: int) -> None:
    env = {**_route_env(), "JPY_PARENT_PID": "1"}
    assert reach("app", upstream, environ=env).how == "direct"


async def test_mount_serves_http_and_websocket_while_the_app_runs(served: tuple[str, Starlette], upstream: int) -> None:
    url, app = served
    async with httpx.AsyncClient(trust_env=False) as client:
        before = await client.get(f"{url}/loopback/app/{upstream}/json")
        assert before.text == "the app's own page"  # the catch-all answers until the mount exists
        mount_into(app)
        r = await client.get(f"{url}/loopback/app/{upstream}/json")
        assert r.json() == {"hello": "world"}
        assert (await client.get(f"{url}/elsewhere")).text == "the app's own page"
    async with connect(f"ws://127.0.0.1:{url.rsplit(':', 1)[1]}/loopback/app/{upstream}/ws", proxy=None) as ws:
        await ws.send("ping")
        assert await ws.recv() == "ping"
    assert reach("app", upstream, "json", environ={}) == Reach("mount", f"/loopback/app/{upstream}/json")
    assert browser_url("app", upstream, "json", environ={}) == f"/loopback/app/{upstream}/json"


def test_mount_again_replaces_and_follows_starlette_app() -> None:
    app = _ShinyLike()
    mount_into(app)
    mount_into(app, "/loopback/", public_path="/proxied/loopback")
    mounts = [r for r in app.starlette_app.router.routes if getattr(r, "path", None) == "/loopback"]
    assert len(mounts) == 1 and app.starlette_app.router.routes[0] is mounts[0]
    assert browser_url("app", 8000, environ={}) == "/proxied/loopback/app/8000/"


def test_a_namespace_the_mount_does_not_serve_is_not_claimed() -> None:
    mount_into(Starlette(), namespaces={"mine": {}}, discover=False)
    assert reach("app", 8000, environ={}).how == "direct"
    assert reach("mine", 8000, environ={}) == Reach("mount", "/loopback/mine/8000/")
