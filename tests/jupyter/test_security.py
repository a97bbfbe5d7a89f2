"""Advisory regressions through the full Jupyter chain: browser → jupyter server → sidecar → upstream.

As in test_security.py, each test names the defence it guards and says how it
failed when that defence was removed (in a scratch copy of the tree).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.jupyter_fixtures import JupyterServer, start_jupyter, stop_jupyter
from tests.security_fixtures import Canary, FaultUpstream, accepting, figure


@pytest.fixture
def jcanary() -> Iterator[Canary]:
    """A canary on a 127.0.0.1 port inside the default policy: the relay would dial it if asked."""
    c = Canary([("127.0.0.1", 0)])
    yield c
    c.close()


def test_jupyter_websocket_without_auth_is_refused(jupyter_base: JupyterServer, jcanary: Canary) -> None:
    """CVE-2024-28179 class: a WebSocket through Jupyter without Jupyter auth gets 403 and dials nothing.

    Guards the adapter's ``current_user is None → 403`` check in
    loopback_asgi/jupyter/handler.py ``prepare`` (jupyter_server 2.x lets
    handlers without ``@authenticated`` through by default). Seen failing, in a
    scratch copy of the tree, with that check removed: the anonymous
    handshake was relayed to the canary port (502 once the canary hung up)
    instead of refused with 403.
    """
    accepting(jupyter_base.port)
    (port,) = [p for _, p in jcanary.listening]
    url = f"{jupyter_base.ws_url}loopback/app/{port}/ws"
    attempts = [
        {},
        {"Authorization": "token wrong"},
        {"Authorization": "Bearer wrong"},
        {"Cookie": "username-127-0-0-1-8888=forged; _xsrf=x"},
    ]
    for headers in attempts:
        with pytest.raises(InvalidStatus) as info:
            connect(url, additional_headers=headers, proxy=None, open_timeout=30).close()
        assert info.value.response.status_code == 403, headers
    with pytest.raises(InvalidStatus) as info:
        connect(url + "?token=wrong", proxy=None, open_timeout=30).close()
    assert info.value.response.status_code == 403
    assert jcanary.hits == []
    figure("test_security::jupyter_ws_auth", "anonymous/forged WebSocket handshakes refused", len(attempts) + 1)


def test_jupyter_anonymous_http_is_sent_to_login_or_refused(jupyter_base: JupyterServer, jcanary: Canary) -> None:
    """jupyter-loopback 0.3.3 class (anonymous requests served on jupyter_server 2.x defaults).

    No credentials: GET/HEAD → 302 to the login page, other methods → 403,
    never a relay, never ``Access-Control-Allow-Origin: *``. Guards the same
    check as the WebSocket test; seen failing with it removed (the anonymous
    GET was relayed to the canary port: 502, not 302).
    """
    accepting(jupyter_base.port)
    (port,) = [p for _, p in jcanary.listening]
    url = jupyter_base.loopback(port, "x")
    count = 0
    with httpx.Client(trust_env=False, timeout=30) as client:
        for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            for headers in ({}, {"Authorization": "token wrong"}, {"Origin": "http://evil.example"}):
                r = client.request(method, url, headers=headers, content=b"x" if method in ("POST", "PUT") else None)
                count += 1
                if method in ("GET", "HEAD"):
                    assert r.status_code == 302 and "/login" in r.headers["location"], (method, headers)
                else:
                    assert r.status_code == 403, (method, headers, r.status_code)
                assert "access-control-allow-origin" not in r.headers
    assert jcanary.hits == []
    figure("test_security::jupyter_anonymous", "anonymous requests (302/403, none relayed)", count)


@pytest.mark.slow
def test_jupyter_admin_policy_from_traitlets_config(
    upstream: int, fault_upstream: FaultUpstream, tmp_path: Path
) -> None:
    """Hub admin policy in ``jupyter_server_config.py`` (``c.Loopback.*``) reaches the sidecar.

    Disabled namespace → 404, port outside ``allowed_ports`` → 403,
    ``header_timeout`` → 504, ``max_connections`` → the request over the cap
    waits, then 503 after ``connect_timeout``.
    """
    config = tmp_path / "config"
    config.mkdir()
    (config / "jupyter_server_config.py").write_text(
        "c.Loopback.disabled_namespaces = ['nope']\n"
        f"c.Loopback.allowed_ports = '{upstream},{fault_upstream.port}'\n"
        "c.Loopback.header_timeout = 3.0\n"
        "c.Loopback.connect_timeout = 1.0\n"
        "c.Loopback.max_connections = 2\n"
    )
    server = start_jupyter("/user/a/", env={"JUPYTER_CONFIG_DIR": str(config)})
    try:
        accepting(server.port)
        with httpx.Client(trust_env=False, timeout=30, headers=server.auth) as c:
            assert c.get(server.loopback(upstream, "json")).json() == {"hello": "world"}
            assert c.get(server.loopback(upstream, "json", namespace="nope")).status_code == 404
            other = upstream + 1 if upstream + 1 != fault_upstream.port else upstream + 2
            assert c.get(server.loopback(other, "json")).status_code == 403
            started = time.monotonic()
            assert c.get(server.loopback(fault_upstream.port, "stall")).status_code == 504
            took = time.monotonic() - started
            assert 2.9 < took < 8

        async def over_the_cap() -> list[int]:
            async with httpx.AsyncClient(trust_env=False, timeout=30, headers=server.auth) as ac:
                held = [asyncio.ensure_future(ac.get(server.loopback(fault_upstream.port, "hold?n=3"))) for _ in "ab"]
                for _ in range(1000):  # bounded: 10 s for both to be held at the upstream
                    if fault_upstream.held == 2:
                        break
                    await asyncio.sleep(0.01)
                third = await ac.get(server.loopback(fault_upstream.port, "ok"))
                return [third.status_code] + [(await h).status_code for h in held]

        statuses = asyncio.run(over_the_cap())
        assert statuses[0] == 503, statuses
        assert fault_upstream.peak_held == 2
    finally:
        stop_jupyter(server)
    figure("test_security::traitlets_policy", "504 after (s) with c.Loopback.header_timeout=3", round(took, 2))
    figure("test_security::traitlets_policy", "statuses over max_connections=2 (3rd, held, held)", statuses)


def test_jupyter_token_in_an_encoded_query_name_never_reaches_the_upstream(
    jupyter_base: JupyterServer, upstream: int
) -> None:
    """jupyter-server-proxy #590 class, through Jupyter: ``?%74oken=<token>`` signs in (tornado
    decodes parameter names) and must be stripped like ``?token=``.

    Guards ``strip_credentials`` comparing decoded names (loopback_asgi/sidecar/target.py). Seen failing
    before that fix: the upstream received ``%74oken=<the Jupyter token>``.
    """
    accepting(jupyter_base.port)
    token = jupyter_base.token
    for name in ("token", "%74oken", "tok%65n", "%74%6F%6B%65%6E", "TOKEN"):
        # A fresh client each time: no login cookie from the previous sign-in.
        with httpx.Client(trust_env=False, timeout=30) as client:
            r = client.get(jupyter_base.loopback(upstream, f"echo?{name}={token}&a=1"))
        if name == "TOKEN":  # not a Jupyter credential: not signed in
            assert r.status_code == 302
            continue
        assert r.status_code == 200, (name, r.status_code)
        assert r.json()["query"] == "a=1" and token not in json.dumps(r.json()), (name, r.json()["query"])
