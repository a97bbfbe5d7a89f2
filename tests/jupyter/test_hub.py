"""A real JupyterHub: configurable-http-proxy, DummyAuthenticator, SimpleLocalProcessSpawner.

A user's kernel gets ``/user/<name>/loopback/app/{port}``, and a request through
the Hub's proxy reaches the server that kernel runs, without the Hub token.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Proc, free_port, start
from tests.jupyter_fixtures import SERVE_IN_KERNEL, JupyterServer, Kernel

pytestmark = pytest.mark.hub

ROOT = Path(__file__).resolve().parents[2]
HUB_TOKEN = "hub-service-token-0123456789abcdef"
USER = "alice"

# Run after SERVE_IN_KERNEL: what the kernel was told, and the URL of its server.
PRINT_ROUTE = """
from loopback_asgi import autodetect_prefix, browser_url
print(json.dumps({"prefix": autodetect_prefix("app"), "url": browser_url("app", port, "hello?x=1")}))
"""


def _config(home: str, port: int) -> str:
    venv_bin = Path(sys.executable).parent
    return f"""
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {free_port()}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
c.ConfigurableHTTPProxy.auth_token = "proxy-token-0123456789"
c.JupyterHub.db_url = "sqlite:///{home}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{home}/cookie_secret"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = "{home}/{{username}}"
c.Spawner.cmd = ["{venv_bin}/jupyterhub-singleuser"]
c.Spawner.args = ["--allow-root"]
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.Spawner.environment = {{"JUPYTER_RUNTIME_DIR": "{home}/runtime"}}
c.JupyterHub.services = [{{"name": "tester", "api_token": "{HUB_TOKEN}"}}]
c.JupyterHub.load_roles = [
    {{"name": "tester", "scopes": ["admin:users", "admin:servers", "access:servers"], "services": ["tester"]}},
]
"""


@pytest.fixture(scope="module")
def hub() -> Iterator[JupyterServer]:
    home = tempfile.mkdtemp(prefix="jl-hub-")
    port = free_port()
    config = Path(home) / "jupyterhub_config.py"
    config.write_text(_config(home, port))
    env = {"PATH": f"{ROOT / 'node_modules' / '.bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
           f"{os.environ['PATH']}", "JUPYTER_LOOPBACK_ROUTE": ""}  # fmt: skip
    cmd = [sys.executable, "-m", "jupyterhub", "-f", str(config), "--no-ssl"]
    proc: Proc = start(cmd, r"JupyterHub is now running at", env=env, timeout=120)
    api = f"http://127.0.0.1:{port}/hub/api"
    headers = {"Authorization": f"token {HUB_TOKEN}"}
    try:
        with httpx.Client(trust_env=False, timeout=60, headers=headers) as c:
            assert c.post(f"{api}/users/{USER}").status_code in (201, 409)
            assert c.post(f"{api}/users/{USER}/server").status_code in (201, 202), proc.output[-20:]
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline:
                server = c.get(f"{api}/users/{USER}").json()["servers"].get("", {})
                if server.get("ready"):
                    break
                time.sleep(0.25)
            else:
                pytest.fail("single-user server did not become ready:\n" + "".join(proc.output[-40:]))
        yield JupyterServer(proc, port, f"/user/{USER}/", HUB_TOKEN, env)
    finally:
        proc.stop()


@pytest.mark.proves("jupyterhub", "route")
async def test_hub_user_kernel_gets_user_prefix_and_route_reaches_it(hub: JupyterServer) -> None:
    kernel = Kernel.start(hub)
    try:
        found = json.loads(await kernel.execute(SERVE_IN_KERNEL + PRINT_ROUTE))
        _check_route(hub, found)
    finally:
        kernel.shutdown()


def _check_route(hub: JupyterServer, found: dict[str, str]) -> None:
    assert found["prefix"] == f"/user/{USER}/loopback/app/{{port}}"
    assert found["url"].startswith(f"/user/{USER}/loopback/app/") and found["url"].endswith("/hello?x=1")
    with httpx.Client(trust_env=False, timeout=60) as c:
        r = c.get(f"http://127.0.0.1:{hub.port}{found['url']}", headers={"Authorization": f"Bearer {HUB_TOKEN}"})
        assert r.status_code == 200, r.text
        seen = r.json()
        assert seen["path"] == "/hello?x=1"
        assert HUB_TOKEN not in json.dumps(seen) and "Authorization" not in seen["headers"]
        # Without credentials the Hub's auth guards the route.
        r = c.get(f"http://127.0.0.1:{hub.port}{found['url']}")
        assert r.status_code in (302, 303) and "/hub/" in r.headers["location"], r.headers
