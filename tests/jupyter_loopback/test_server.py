"""0.3.x's server half through real jupyter servers (base ``/`` and ``/base/``).

A library extension calls ``jupyter_loopback.setup_proxy_handler`` as 0.3.x
libraries do: for its own namespace (twice), for one its library also declares
by entry point, and for one the admin disabled. Its route
``<base_url><ns>-proxy/<port>/…`` must behave as ``loopback/<ns>/<port>/…``,
its probe as 0.3.x's page code expects, and a kernel's ``autodetect_prefix``
must return the prefix that works.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import ROOT, free_port
from tests.jupyter_fixtures import SERVE_IN_KERNEL, JupyterServer, Kernel, start_jupyter, stop_jupyter

EXTENSION = """
import jupyter_loopback
from jupyter_server.base.handlers import JupyterHandler
from tornado import web


def _jupyter_server_extension_points():
    return [{"module": "mylib_ext"}]


def _rules(app):
    return sum(len(getattr(rule.target, "rules", ())) for rule in app.default_router.rules)


def _load_jupyter_server_extension(serverapp):
    app = serverapp.web_app
    first = jupyter_loopback.setup_proxy_handler(app, "mylib")
    again = jupyter_loopback.setup_proxy_handler(app, namespace="mylib")
    jupyter_loopback.setup_proxy_handler(app, "eplib")
    jupyter_loopback.setup_proxy_handler(app, "offlib")

    class Again(JupyterHandler):
        # Calls setup_proxy_handler again while the server (and its sidecar) runs.
        @web.authenticated
        def get(self):
            before = _rules(app)
            same = jupyter_loopback.setup_proxy_handler(app, "mylib") is first and again is first
            jupyter_loopback.setup_proxy_handler(app, "eplib")
            self.finish({"same": same, "rules": [before, _rules(app)], "namespace": first.namespace,
                         "base": issubclass(first, jupyter_loopback.LoopbackProxyHandler)})

    app.add_handlers(".*", [(app.settings["base_url"] + "mylib-again", Again)])
"""


@pytest.fixture(scope="module", params=["/", "/base/"])
def legacy(
    request: pytest.FixtureRequest, upstream: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JupyterServer]:
    """A server whose library extension uses the 0.3.x API; ``eplib`` allows only the upstream's port."""
    site = tmp_path_factory.mktemp("legacy-site")
    (site / "mylib_ext.py").write_text(EXTENSION)
    (site / "eplib.py").write_text(f"NAMESPACE = {{'ports': '{upstream}'}}\n")
    info = site / "eplib-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: eplib\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[jupyter_loopback.namespaces]\neplib = eplib:NAMESPACE\n")
    server = start_jupyter(
        request.param,
        "--ServerApp.jpserver_extensions={'mylib_ext': True}",
        env={"PYTHONPATH": f"{ROOT}{os.pathsep}{site}", "JUPYTER_LOOPBACK_DISABLED_NAMESPACES": "offlib"},
    )
    yield server
    stop_jupyter(server)


def _alias(server: JupyterServer, port: int | str, path: str = "", namespace: str = "mylib") -> str:
    return f"{server.url}{namespace}-proxy/{port}/{path}"


def test_alias_relays_as_the_loopback_route(legacy: JupyterServer, upstream: int) -> None:
    with legacy.client() as c:
        r = c.get(_alias(legacy, upstream, "json"), headers=legacy.auth)
        assert r.status_code == 200 and r.json() == {"hello": "world"}
        body = os.urandom(3 * 1024 * 1024)
        r = c.post(_alias(legacy, upstream, "echo/a%2Fb?x=1"), headers=legacy.auth, content=body)
        echoed = r.json()
        assert r.status_code == 200 and echoed["size"] == len(body) and echoed["query"] == "x=1"
        assert echoed["raw_path"] == "/echo/a%2Fb"
        # Jupyter's credentials stay with Jupyter.
        headers = {**legacy.auth, "Cookie": "username-127-0-0-1=secret"}
        r = c.get(_alias(legacy, upstream, f"headers?token={legacy.token}"), headers=headers)
        sent = {name.lower() for name, _ in r.json()}
        assert r.status_code == 200 and not sent & {"authorization", "cookie"}
        assert legacy.token not in r.text


def test_alias_rewrites_redirects_cookies_and_prefix_into_the_alias(legacy: JupyterServer, upstream: int) -> None:
    """A page on the alias stays on it: redirects, cookie paths and X-Forwarded-Prefix name the alias."""
    prefix = f"{legacy.base_url}mylib-proxy/{upstream}"
    with legacy.client() as c:
        r = c.get(_alias(legacy, upstream, "redirect?to=/json"), headers=legacy.auth)
        assert r.status_code == 302 and r.headers["location"] == f"{prefix}/json"
        r = c.get(_alias(legacy, upstream, "cookies"), headers=legacy.auth)
        assert r.headers.get_list("set-cookie") == [f"a=1; Path={prefix}", f"b=2; Path={prefix}/sub; HttpOnly"]
        r = c.get(_alias(legacy, upstream, "headers"), headers={**legacy.auth, "X-Forwarded-Prefix": "/evil"})
        assert dict((k.lower(), v) for k, v in r.json())["x-forwarded-prefix"] == prefix
        # The loopback route keeps its own prefix, whatever the client sends.
        r = c.get(
            f"{legacy.url}loopback/mylib/{upstream}/redirect?to=/json",
            headers={**legacy.auth, "X-Forwarded-Prefix": "/evil"},
        )
        assert r.headers["location"] == f"{legacy.base_url}loopback/mylib/{upstream}/json"


def test_alias_streams(legacy: JupyterServer, upstream: int) -> None:
    """The first server-sent event arrives while the upstream still sleeps before the second."""
    with (
        legacy.client() as c,
        c.stream("GET", _alias(legacy, upstream, "sse?n=2&interval=2"), headers=legacy.auth) as r,
    ):
        chunks = r.iter_raw()
        first = next(chunks)
        at_first = time.monotonic()
        rest = b"".join(chunks)
        assert first.startswith(b"data: 0") and b"data: 1" in first + rest
        assert time.monotonic() - at_first > 1.5


async def test_alias_websocket(legacy: JupyterServer, upstream: int) -> None:
    url = _alias(legacy, upstream, "ws").replace("http://", "ws://")
    async with connect(url, additional_headers=legacy.auth, proxy=None) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"


async def test_alias_refuses_anonymous_and_cross_site(legacy: JupyterServer, upstream: int) -> None:
    with legacy.client() as c:
        r = c.get(_alias(legacy, upstream, "json"))
        assert r.status_code in (302, 403) and "hello" not in r.text
        if r.status_code == 302:
            assert "login" in r.headers["location"]
        r = c.post(_alias(legacy, upstream, "echo"), headers={**legacy.auth, "Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403 and "Traceback" not in r.text
    url = _alias(legacy, upstream, "ws").replace("http://", "ws://")
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, proxy=None, open_timeout=30):
            pass
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize(
    ("namespace", "port", "status"),
    [
        ("mylib", "80", 403),  # outside the default 1024-65535
        ("mylib", "0x50", 400),
        ("mylib", "70000", 400),
        ("eplib", "upstream+1", 403),  # the entry point's own policy survives setup_proxy_handler
        ("eplib", "upstream", 200),
        ("offlib", "upstream", 404),  # the admin's policy too
    ],
)
def test_alias_port_and_admin_policy(
    legacy: JupyterServer, upstream: int, namespace: str, port: str, status: int
) -> None:
    port = {"upstream": str(upstream), "upstream+1": str(upstream + 1)}.get(port, port)
    with legacy.client() as c:
        r = c.get(_alias(legacy, port, "json", namespace), headers=legacy.auth)
    assert r.status_code == status, r.text
    assert "Traceback" not in r.text


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("shape", ["{ns}-proxy/__probe__", "{ns}-proxy/{closed}/__probe__"])
def test_probe_answers_without_auth_and_without_the_upstream(legacy: JupyterServer, method: str, shape: str) -> None:
    """0.3.x's page code asks before routing; nothing listens on ``closed``, so a relayed probe would be 502."""
    closed = free_port()
    with httpx.Client(trust_env=False, timeout=30) as c:
        for namespace, status in (("mylib", 204), ("eplib", 204), ("offlib", 404)):
            r = c.request(method, legacy.url + shape.format(ns=namespace, closed=closed))
            assert r.status_code == status, (namespace, r.status_code, r.text)
            assert r.content == b"" and r.headers["cache-control"] == "no-store"
            assert "server" not in r.headers and not any("namespace" in h for h in r.headers)


def test_probe_refuses_other_methods(legacy: JupyterServer) -> None:
    with httpx.Client(trust_env=False, timeout=30) as c:
        r = c.post(f"{legacy.url}mylib-proxy/__probe__", headers=legacy.auth)
        assert 400 <= r.status_code < 500 and r.content == b""
        r = c.get(f"{legacy.url}nothere-proxy/__probe__")
        assert r.status_code == 404


def test_setting_up_again_is_harmless(legacy: JupyterServer, upstream: int) -> None:
    """Same class, no new route, and the running sidecar is not restarted."""
    with legacy.client() as c:
        assert c.get(_alias(legacy, upstream, "json"), headers=legacy.auth).status_code == 200
        sidecars = legacy.sidecar_pids()
        r = c.get(f"{legacy.url}mylib-again", headers=legacy.auth)
        found = r.json()
        assert found["same"] and found["base"] and found["namespace"] == "mylib"
        assert found["rules"][0] == found["rules"][1]
        assert c.get(_alias(legacy, upstream, "json"), headers=legacy.auth).status_code == 200
        assert len(sidecars) == 1 and legacy.sidecar_pids() == sidecars


# Run after SERVE_IN_KERNEL: the server's port and the prefix 0.3.x's API detects per namespace.
PRINT_PREFIXES = """
import jupyter_loopback as jl
print(json.dumps({"port": port, "kernel": jl.is_in_jupyter_kernel(),
                  **{ns: jl.autodetect_prefix(ns) for ns in ("mylib", "eplib", "offlib", "app", "nope")},
                  "template": jl.autodetect_prefix("mylib", template="own/{namespace}/{{port}}")}))
"""


async def test_kernel_autodetects_the_prefix_that_works(legacy: JupyterServer) -> None:
    kernel = Kernel.start(legacy)
    try:
        found = json.loads(await kernel.execute(SERVE_IN_KERNEL + PRINT_PREFIXES))
        base = legacy.base_url
        assert found == {
            "port": found["port"],
            "kernel": True,
            "mylib": f"{base}mylib-proxy/{{port}}",
            "eplib": f"{base}eplib-proxy/{{port}}",
            "offlib": None,
            "app": f"{base}loopback/app/{{port}}",
            "nope": None,
            "template": f"{base}own/mylib/{{port}}",
        }
        origin = f"http://127.0.0.1:{legacy.port}"
        with legacy.client() as c:
            for ns in ("mylib", "app"):
                r = c.get(origin + found[ns].format(port=found["port"]) + "/t?q=1", headers=legacy.auth)
                assert r.status_code == 200 and r.json()["path"] == "/t?q=1", (ns, r.text)
    finally:
        kernel.shutdown()
