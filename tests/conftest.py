"""Shared fixtures: real processes on 127.0.0.1, started and awaited by readiness."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["tests.security_fixtures", "tests.browser_fixtures", "tests.jupyter_fixtures", "tests.comm_fixtures"]

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-0123456789"


@dataclass
class Proc:
    """A child process and what its readiness line said."""

    popen: subprocess.Popen[str]
    match: re.Match[str]
    output: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        if self.reader is not None:
            self.reader.join(10)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


def start(cmd: Sequence[str], ready: str, *, env: dict[str, str] | None = None, timeout: float = 30) -> Proc:
    """Start ``cmd`` and wait (bounded) until a line of its output matches ``ready``."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    popen = subprocess.Popen(
        list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env, cwd=ROOT
    )
    pattern = re.compile(ready)
    found: list[re.Match[str]] = []
    lines: list[str] = []
    event = threading.Event()

    def read() -> None:
        assert popen.stdout is not None
        for line in popen.stdout:
            lines.append(line)
            if not found and (m := pattern.search(line)):
                found.append(m)
                event.set()
        event.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not event.wait(timeout) or not found:
        popen.kill()
        popen.wait(10)
        reader.join(10)
        raise RuntimeError(f"{cmd[0]} did not become ready:\n{''.join(lines)}")
    return Proc(popen, found[0], lines, reader)


def start_upstream(host: str = "127.0.0.1", *args: str) -> Proc:
    return start([sys.executable, "-m", "tests.upstream", "--host", host, *args], r"upstream listening on (\d+)")


def start_sidecar(*args: str, env: dict[str, str] | None = None) -> Proc:
    """``jupyter-loopback serve --port 0 --token TOKEN``; ``match[1]`` is its base URL."""
    cmd = [sys.executable, "-m", "loopback_asgi.cli", "serve", "--port", "0", "--token", TOKEN, *args]
    return start(cmd, r"on (http://[^/]+)/", env=env)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for servers that cannot be told port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_in_thread(
    app: Any, *, lifespan: str = "off", after: Callable[[], Awaitable[None]] | None = None
) -> Iterator[str]:
    """Serve the ASGI ``app`` with uvicorn on a thread of its own; yields ``http://127.0.0.1:<port>``.

    The socket listens before the ``with`` block starts, so no wait is needed.
    ``after`` runs on the server's loop once it has stopped (a mounted app's
    lifespan exit, which closes its pooled upstream connections).
    """
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan=lifespan))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(sockets=[sock]),), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        if after is not None:
            loop.run_until_complete(after())
        loop.close()
        sock.close()


@pytest.fixture(scope="session")
def upstream() -> Iterator[int]:
    """Port of a real uvicorn upstream (tests/upstream.py) on 127.0.0.1."""
    proc = start_upstream()
    yield int(proc.match[1])
    proc.stop()


@pytest.fixture(scope="session")
def sidecar_proc() -> Iterator[Proc]:
    proc = start_sidecar()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def sidecar(sidecar_proc: Proc) -> str:
    """Base URL of a standalone sidecar serving the built-in ``app`` namespace."""
    return sidecar_proc.match[1]


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"token {TOKEN}"}


def rss_peak_rise(pid: int) -> tuple[int, int]:
    """Reset the peak-RSS mark of ``pid``; return ``(current_rss, reset_time)`` in bytes.

    Pair with :func:`peak_rss` after the work: the difference is the rise.
    """
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    return _status(pid, "VmRSS"), int(time.time())


def peak_rss(pid: int) -> int:
    return _status(pid, "VmHWM")


def _status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)
