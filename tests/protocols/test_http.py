"""loopback_asgi/protocols/http.py under a real uvicorn server: the ``loopback.splice`` offer and its switch."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from loopback_asgi import fastpaths
from loopback_asgi.protocols import http as protocol
from loopback_asgi.protocols.http import HttpProtocol
from loopback_asgi.sidecar.extensions import SPLICE


@contextlib.asynccontextmanager
async def serving(app: Any, *, keep_alive: float = 5, http: type = HttpProtocol) -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        http=http,
        lifespan="off",
        log_level="critical",
        access_log=False,  # as the sidecar runs it
        server_header=False,
        date_header=False,
        timeout_keep_alive=keep_alive,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def exchange(port: int, requests: bytes, *, responses: int = 1, timeout: float = 5) -> bytes:
    """Send ``requests`` on one connection and read until ``responses`` complete responses came back or EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(requests)
    got = b""
    try:
        async with asyncio.timeout(timeout):
            while got.count(b"HTTP/1.1 ") < responses or not _complete(got, responses):
                more = await reader.read(65536)
                if not more:
                    break
                got += more
    finally:
        writer.close()
    return got


def _complete(data: bytes, responses: int) -> bool:
    rest = data
    for _ in range(responses):
        head, sep, rest = rest.partition(b"\r\n\r\n")
        if not sep:
            return False
        lines = head.split(b"\r\n")
        lengths = [line.split(b":", 1)[1] for line in lines if line.lower().startswith(b"content-length:")]
        size = int(lengths[0]) if lengths else 0
        if len(rest) < size:
            return False
        rest = rest[size:]
    return True


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode()


async def _offered(http: type) -> tuple[bytes, list[set[str]]]:
    """Two responses on one connection through ``http``; what came back and the extensions each scope offered."""
    offered: list[set[str]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            offered.append(set(scope.get("extensions", {})))
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
            await send({"type": "http.response.body", "body": b"hello"})

    async with serving(app, http=http) as port:
        got = await exchange(port, get("/a") + get("/b"), responses=2)
    return got, offered


async def test_the_splice_extension_is_offered_when_on() -> None:
    assert fastpaths.enabled("sidecar_splice") and protocol.SPLICE_ON
    got, offered = await _offered(HttpProtocol)
    assert got.count(b"HTTP/1.1 200 OK") == 2 and got.endswith(b"hello")
    assert offered == [{SPLICE}] * 2


async def test_switched_off_it_is_not_offered_and_uvicorn_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "SPLICE_ON", False)
    got, offered = await _offered(HttpProtocol)
    assert got.count(b"HTTP/1.1 200 OK") == 2 and got.endswith(b"hello")
    assert offered == [set()] * 2


def test_the_switch_turns_it_off() -> None:
    code = "from loopback_asgi.protocols import http as p; print(p.SPLICE_ON)"
    for setting, expected in (("", "True"), ("sidecar_splice", "False"), ("adapter_splice", "True"), ("off", "False")):
        env = {**os.environ, fastpaths.ENV: setting}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == expected, (setting, out.stderr)
