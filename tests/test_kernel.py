"""Kernel side through real kernels: the URL a kernel gets is the route that really exists."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from loopback_asgi import autodetect_prefix, browser_url

from .jupyter_fixtures import SERVE_IN_KERNEL, JupyterServer, Kernel

# Run after SERVE_IN_KERNEL: the server's port, what the kernel was told, and the URL of its server.
PRINT_ROUTE = """
from loopback_asgi import autodetect_prefix, browser_url
print(json.dumps({"port": port, "prefix": autodetect_prefix("app"), "url": browser_url("app", port, "x/y?z=1"),
                  "unknown": autodetect_prefix("not-declared")}))
"""


@pytest.fixture(scope="module", params=["jupyter_root", "jupyter_base"])
def kernel(request: pytest.FixtureRequest) -> Iterator[Kernel]:
    server: JupyterServer = request.getfixturevalue(request.param)
    k = Kernel.start(server)
    yield k
    k.shutdown()


@pytest.mark.proves("jupyterlab", "route")
async def test_kernel_gets_the_route_and_it_reaches_the_kernels_server(kernel: Kernel) -> None:
    server = kernel.server
    found = json.loads(await kernel.execute(SERVE_IN_KERNEL + PRINT_ROUTE))
    port = found["port"]
    assert found["prefix"] == f"{server.base_url}loopback/app/{{port}}"
    assert found["url"] == f"{server.base_url}loopback/app/{port}/x/y?z=1"
    assert found["unknown"] is None
    with server.client() as c:
        r = c.get(f"http://127.0.0.1:{server.port}{found['url']}", headers=server.auth)
    assert r.status_code == 200 and r.json()["path"] == "/x/y?z=1"


async def test_kernel_honours_overrides(kernel: Kernel) -> None:
    code = (
        "import os\nfrom loopback_asgi import autodetect_prefix\n"
        "env = dict(os.environ)\n"
        "print(autodetect_prefix('app', {**env, 'JUPYTER_LOOPBACK_DISABLE': '1'}),"
        " autodetect_prefix('app', {**env, 'JUPYTER_LOOPBACK_PREFIX': '/x/{namespace}/{port}'}),"
        " autodetect_prefix('app', {**env, 'JPY_PARENT_PID': '1'}))"
    )
    assert (await kernel.execute(code)).split() == ["None", "/x/app/{port}", "None"]


def _plain_python(env: dict[str, str]) -> str:
    code = (
        "from loopback_asgi import autodetect_prefix, browser_url\n"
        "print(autodetect_prefix('app'), browser_url('app', 8000, 'a'))"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JPY_", "JUPYTER_LOOPBACK"))}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"JPY_SESSION_NAME": "/content/x.ipynb", "JPY_PARENT_PID": "1"},  # Colab / standalone Voila look alike
        {"JPY_PARENT_PID": str(os.getpid()), "VSCODE_PID": "1"},
    ],
)
def test_plain_python_gets_none(env: dict[str, str]) -> None:
    assert _plain_python(env) == "None http://127.0.0.1:8000/a"


def test_a_route_announced_by_another_server_or_host_is_ignored(jupyter_base: JupyterServer) -> None:
    route = {"prefix": "/base/loopback", "namespaces": ["app"], "pid": jupyter_base.proc.pid, "host": "elsewhere"}
    env = {"JUPYTER_LOOPBACK_ROUTE": json.dumps(route), "JPY_PARENT_PID": str(jupyter_base.proc.pid)}
    assert _plain_python(env) == "None http://127.0.0.1:8000/a"
    route["host"] = socket.gethostname()
    env["JUPYTER_LOOPBACK_ROUTE"] = json.dumps(route)
    assert _plain_python({**env, "JPY_PARENT_PID": "1"}) == "None http://127.0.0.1:8000/a"
    assert _plain_python(env) == "/base/loopback/app/{port} /base/loopback/app/8000/a"


def test_in_process_helpers_without_route() -> None:
    assert autodetect_prefix("app", {}) is None
    assert browser_url("app", 9000, "/p", {}) == "http://127.0.0.1:9000/p"
