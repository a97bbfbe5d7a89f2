"""Fixtures for the Jupyter tests: real ``jupyter server`` processes and real kernels.

- :func:`start_jupyter`: a ``jupyter server`` with a token and a base URL, in
  its own runtime/config dirs, awaited by its log line.
- :class:`Kernel`: a kernel started through the REST API; :meth:`Kernel.execute`
  runs code over the kernel websocket and returns its stdout.
  :data:`SERVE_IN_KERNEL` starts a server in it that echoes each request's path and headers.
- fixtures ``jupyter_base`` (base URL ``/base/``) and ``jupyter_root`` (``/``),
  module-scoped, with ``upstream`` ready.
- :func:`tree_pids` / :func:`tree_peak_rise`: the server and all its children
  (sidecar, kernels), for memory bounds; :func:`alive`: whether one still runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psutil
import pytest
from websockets.asyncio.client import connect

from .conftest import Proc, peak_rss, rss_peak_rise, start
from .security_fixtures import accepting, wait_until

JUPYTER_TOKEN = "jupyter-test-token-42"


# Kernel code: an HTTP server on 127.0.0.1 in the kernel, its port in ``port``,
# answering every GET with JSON: the path and the headers it was asked with.
# A test appends the line that prints what it reads.
SERVE_IN_KERNEL = """
import http.server, json, threading

class _Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path, "headers": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
threading.Thread(target=srv.serve_forever, daemon=True).start()
port = srv.server_address[1]
"""


@dataclass
class JupyterServer:
    proc: Proc
    port: int
    base_url: str
    token: str
    env: dict[str, str]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port><base_url>``, ending in ``/``."""
        return f"http://127.0.0.1:{self.port}{self.base_url}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.base_url}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def loopback(self, port: int, path: str = "", namespace: str = "app") -> str:
        return f"{self.url}loopback/{namespace}/{port}/{path}"

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(trust_env=False, timeout=60, **kwargs)

    def sidecar_pids(self) -> list[int]:
        """Pids of the loopback sidecars among the server's children."""
        return [pid for pid in tree_pids(self.proc.pid) if b"loopback_asgi.cli" in _cmdline(pid)]


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def tree_pids(root: int) -> list[int]:
    """``root`` and its living descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class TreePeak:
    """Peak-RSS rise of a process tree: reset the marks, do the work, read :meth:`rise`."""

    def __init__(self, root: int) -> None:
        self.start = {pid: rss_peak_rise(pid)[0] for pid in tree_pids(root)}

    def rise(self) -> int:
        total = 0
        for pid, before in self.start.items():
            try:
                total += max(0, peak_rss(pid) - before)
            except (OSError, KeyError):
                continue
        return total


def start_jupyter(
    base_url: str = "/",
    *args: str,
    env: dict[str, str] | None = None,
    python: str = sys.executable,
) -> JupyterServer:
    """A real ``jupyter server`` on 127.0.0.1 with :data:`JUPYTER_TOKEN`, in its own dirs.

    ``python`` picks the venv: its server extensions, kernels and
    ``jupyter_server_config.d`` files are the ones the server loads.
    """
    home = tempfile.mkdtemp(prefix="jl-jupyter-")
    full_env = {
        "JUPYTER_RUNTIME_DIR": os.path.join(home, "runtime"),
        "JUPYTER_CONFIG_DIR": os.path.join(home, "config"),
        "JUPYTER_LOOPBACK_ROUTE": "",
        **(env or {}),
    }
    cmd = [
        python, "-m", "jupyter_server", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0", f"--IdentityProvider.token={JUPYTER_TOKEN}",
        f"--ServerApp.base_url={base_url}", f"--ServerApp.root_dir={home}", *args,
    ]  # fmt: skip
    proc = start(cmd, r"http://127\.0\.0\.1:(\d+)/", env=full_env, timeout=90)
    try:
        port = int(proc.match[1]) or _bound_port(proc.pid)
        # The URL is logged a moment before the port is bound: wait until it accepts.
        accepting(port)
    except BaseException:
        proc.stop()  # a server that never became reachable is not left running
        raise
    return JupyterServer(proc, port, base_url, JUPYTER_TOKEN, full_env)


def _bound_port(pid: int) -> int:
    """The port a server told to take port 0 listens on (jupyter-server < 2.20 logs ``:0`` and keeps 0)."""

    def read() -> int:
        try:
            listening = [c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.status == "LISTEN"]
        except psutil.Error:
            return 0
        return listening[0] if len(listening) == 1 else 0

    port = wait_until(read, 30, interval=0.05)
    if not port:
        raise RuntimeError(f"jupyter server {pid} is not listening on one TCP port")
    return int(port)


def stop_jupyter(server: JupyterServer) -> None:
    server.proc.stop()


@pytest.fixture(scope="module")
def jupyter_base(upstream: int) -> Iterator[JupyterServer]:
    """A jupyter server with base URL ``/base/`` (and the session's upstream running)."""
    server = start_jupyter("/base/")
    yield server
    stop_jupyter(server)


@pytest.fixture(scope="module")
def jupyter_root(upstream: int) -> Iterator[JupyterServer]:
    server = start_jupyter("/")
    yield server
    stop_jupyter(server)


class Kernel:
    """A kernel started through the server's REST API; code runs over its websocket."""

    def __init__(self, server: JupyterServer, kernel_id: str) -> None:
        self.server = server
        self.id = kernel_id

    @classmethod
    def start(cls, server: JupyterServer) -> Kernel:
        with server.client() as c:
            r = c.post(f"{server.url}api/kernels", headers=server.auth, json={"name": "python3"})
            r.raise_for_status()
            return cls(server, r.json()["id"])

    async def execute(self, code: str, timeout: float = 90) -> str:
        """Run ``code``; return its stdout. Raises ``AssertionError`` with the traceback on error."""
        url = f"{self.server.ws_url}api/kernels/{self.id}/channels"
        msg_id, session = uuid.uuid4().hex, uuid.uuid4().hex
        request = {
            "header": {"msg_id": msg_id, "username": "test", "session": session, "msg_type": "execute_request",
                       "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }  # fmt: skip
        out: list[str] = []
        deadline = time.monotonic() + timeout
        reply: dict[str, Any] | None = None
        idle = False
        async with connect(
            url, max_size=None, proxy=None, open_timeout=timeout, additional_headers=self.server.auth
        ) as ws:
            await ws.send(json.dumps(request))
            while not (reply is not None and idle):
                left = deadline - time.monotonic()
                assert left > 0, f"kernel did not answer in {timeout} s; output so far: {''.join(out)!r}"
                msg = json.loads(await asyncio.wait_for(ws.recv(), left))
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["msg_type"]
                if kind == "stream" and msg["content"]["name"] == "stdout":
                    out.append(msg["content"]["text"])
                elif kind == "execute_reply":
                    reply = msg["content"]
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    idle = True
        assert reply is not None and reply["status"] == "ok", "\n".join(reply.get("traceback", []) if reply else [])
        return "".join(out)

    def shutdown(self) -> None:
        with self.server.client() as c:
            c.delete(f"{self.server.url}api/kernels/{self.id}", headers=self.server.auth)
