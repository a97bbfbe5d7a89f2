"""loopback_asgi/protocols/http.py under a real uvicorn server: ``loopback.respond`` (a whole response in one write,
or a refusal that changes nothing) and keep-alive with one timer per idle spell."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from loopback_asgi import fastpaths
from loopback_asgi.protocols import http as protocol
from loopback_asgi.protocols.http import HttpProtocol
from loopback_asgi.sidecar.extensions import RESPOND, SPLICE

# What the app is asked to answer, by path; ``respond`` is tried first and its answer recorded.
CASES: dict[str, tuple[int, list[tuple[bytes, bytes]], bytes]] = {
    "/plain": (200, [(b"content-type", b"text/plain"), (b"content-length", b"5")], b"hello"),
    "/no-length": (200, [(b"content-type", b"text/plain")], b"hello"),
    "/capitals": (200, [(b"Content-Length", b"2"), (b"X-Up", b"1")], b"ok"),
    "/connection": (200, [(b"content-length", b"3"), (b"Connection", b"close")], b"abc"),
    "/with-length": (201, [(b"content-length", b"3"), (b"x-a", b"1"), (b"x-a", b"2")], b"abc"),
    "/wrong-length": (200, [(b"content-length", b"9")], b"abc"),
    "/chunked": (200, [(b"transfer-encoding", b"chunked")], b"abc"),
    "/no-content": (204, [], b""),
    "/line-break": (200, [(b"x-bad", b"a\r\nx-injected: 1")], b"abc"),
    "/bad-name": (200, [(b"x bad", b"1")], b"abc"),
}


class App:
    def __init__(self) -> None:
        self.answers: list[tuple[str, str, bool]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        status, headers, body = CASES.get(path.removeprefix("/wrapped"), CASES["/plain"])
        if path.startswith("/wrapped"):
            inner = send

            async def send(message: dict[str, Any]) -> None:  # a middleware's wrapper
                await inner(message)

        respond = scope["extensions"][RESPOND]["respond"]
        done = respond(send, status, headers, body)
        self.answers.append((scope["method"], path, done))
        if not done:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})


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


async def test_a_whole_response_leaves_in_one_piece_and_the_connection_carries_on() -> None:
    app = App()
    async with serving(app) as port:
        got = await exchange(port, get("/plain") + get("/with-length") + get("/capitals"), responses=3)
    assert got == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello"
        b"HTTP/1.1 201 Created\r\ncontent-length: 3\r\nx-a: 1\r\nx-a: 2\r\n\r\nabc"
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-up: 1\r\n\r\nok"  # names lowered, as uvicorn sends them
    )
    assert app.answers == [("GET", "/plain", True), ("GET", "/with-length", True), ("GET", "/capitals", True)]


def get_once(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode()


OK = b"HTTP/1.1 200 OK\r\n"
CLOSE = b"connection: close\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        # A middleware's wrapped send must see every message.
        (get_once("/wrapped/plain"), OK + b"content-type: text/plain\r\ncontent-length: 5\r\n" + CLOSE + b"\r\nhello"),
        (get_once("/plain", "HEAD"), OK + b"content-type: text/plain\r\ncontent-length: 5\r\n" + CLOSE + b"\r\n"),
        (get_once("/no-content"), b"HTTP/1.1 204 No Content\r\n" + CLOSE + b"\r\n"),
        (get_once("/chunked"), OK + b"transfer-encoding: chunked\r\n" + CLOSE + b"\r\n3\r\nabc\r\n0\r\n\r\n"),
        (
            get_once("/no-length"),
            OK + b"content-type: text/plain\r\n" + CLOSE + b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (get("/connection"), OK + b"content-length: 3\r\nconnection: close\r\n\r\nabc"),  # uvicorn closes after it
        (get_once("/wrong-length"), OK + b"content-length: 9\r\n" + CLOSE + b"\r\nabc"),  # uvicorn cuts it short
        # uvicorn's own send refuses these after the response started: the connection closes with nothing sent.
        (get_once("/line-break"), b""),
        (get_once("/bad-name"), b""),
    ],
)
async def test_respond_refuses_what_it_cannot_send_as_is(request_bytes: bytes, expected: bytes) -> None:
    app = App()
    async with serving(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes)
        try:
            async with asyncio.timeout(5):
                got = await reader.read(-1)  # to the server's close
        finally:
            writer.close()
    assert got == expected
    assert [done for _, _, done in app.answers] == [False]


async def test_keep_alive_closes_an_idle_connection_and_spares_a_busy_one() -> None:
    app = App()
    async with serving(app, keep_alive=0.3) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            # Busy for about three keep-alive periods, never idle for one: the same connection serves all.
            for _ in range(9):
                writer.write(get("/plain"))
                async with asyncio.timeout(5):
                    assert (await reader.readuntil(b"hello")).startswith(b"HTTP/1.1 200")
                await asyncio.sleep(0.1)
            idle_from = time.monotonic()
            async with asyncio.timeout(5):
                assert await reader.read(100) == b""  # closed by the server
            idle = time.monotonic() - idle_from
        finally:
            writer.close()
    assert len(app.answers) == 9
    assert 0.15 <= idle < 2, idle


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


async def test_the_one_write_path_is_taken_when_on() -> None:
    assert fastpaths.enabled("sidecar_one_write") and HttpProtocol is protocol._OneWriteProtocol
    got, offered = await _offered(HttpProtocol)
    assert got.count(b"HTTP/1.1 200 OK") == 2 and got.endswith(b"hello")
    assert offered == [{RESPOND, SPLICE}] * 2


async def test_switched_off_uvicorn_writes_every_response(monkeypatch: pytest.MonkeyPatch) -> None:
    got, offered = await _offered(protocol._SpliceProtocol)
    assert got.count(b"HTTP/1.1 200 OK") == 2 and got.endswith(b"hello")
    assert offered == [{SPLICE}] * 2  # no loopback.respond: the relay sends the two ASGI messages
    monkeypatch.setattr(protocol, "SPLICE_ON", False)
    got, offered = await _offered(protocol._SpliceProtocol)
    assert got.count(b"HTTP/1.1 200 OK") == 2 and offered == [set()] * 2


def test_the_switch_picks_the_protocol() -> None:
    code = "from loopback_asgi.protocols import http as p; print(p.HttpProtocol.__name__, p.SPLICE_ON)"
    for setting, expected in (("", "_OneWriteProtocol True"), ("sidecar_one_write", "_SpliceProtocol True"),
                              ("off", "_SpliceProtocol False")):  # fmt: skip
        env = {**os.environ, fastpaths.ENV: setting}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == expected, (setting, out.stderr)
