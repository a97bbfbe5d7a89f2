"""The project's one WebSocket client (loopback_asgi/_transports/websocket.py) over a unix socket.

The adapter reaches the sidecar this way; the server here is websockets'
own, so the client is checked against a real peer: messages both ways
with fragments and the subprotocol, a refusal's status and text, close
codes, a long close reason, header line breaks refused before any byte
is sent.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.server import ServerConnection, unix_serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response

from loopback_asgi._transports.frames import close_code, close_payload, cut_reason
from loopback_asgi._transports.websocket import Closed, Upstream, open_upstream

closes: asyncio.Queue[tuple[int | None, str | None]]  # the close frames the server received, per server()


async def handler(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request is not None else ""
    if path.startswith("/close/"):
        code = int(path.rsplit("/", 1)[1])
        await ws.close(code, "bye")
        return
    try:
        async for message in ws:
            if message == "fragments":
                await ws.send(["frag", "mented"])
            else:
                await ws.send(message)
    except ConnectionClosed:
        pass
    finally:
        rcvd = ws.protocol.close_rcvd
        closes.put_nowait((rcvd.code, rcvd.reason) if rcvd is not None else (None, None))


def refuse(ws: ServerConnection, request: Request) -> Response | None:
    if request.path == "/refused":
        return Response(403, "Forbidden", Headers([("Content-Length", "7")]), b"no way.")
    return None


@asynccontextmanager
async def server() -> AsyncIterator[str]:
    global closes
    closes = asyncio.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ws.sock")
        async with unix_serve(handler, path, subprotocols=["b", "a"], process_request=refuse):
            yield path


async def opened(path: str, where: str = "/echo", **kwargs: object) -> Upstream:
    options: dict[str, object] = {"subprotocols": ["a"], "max_size": 2**20, "ping_interval": None, "timeout": 5}
    options.update(kwargs)
    return await open_upstream("ws://jupyter-loopback" + where, [("X-Test", "1")], unix_path=path, **options)  # type: ignore[arg-type]


async def test_messages_both_ways_over_a_unix_socket() -> None:
    async with server() as path:
        ws = await opened(path)
        assert ws.subprotocol == "a"
        await ws.send("héllo")
        await ws.send(b"\x00" * 100_000)
        await ws.send("fragments")
        assert await ws.recv() == "héllo"
        assert await ws.recv() == b"\x00" * 100_000
        assert await ws.recv() == "fragmented"
        waiting = ws.send_nowait(b"x")
        if waiting is not None:
            await waiting
        assert await ws.recv() == b"x"
        await ws.close(None)
        assert await asyncio.wait_for(closes.get(), 5) == (1005, "")  # no status, as asked


async def test_a_refusal_gives_its_status_and_text() -> None:
    async with server() as path:
        with pytest.raises(InvalidStatus) as info:
            await opened(path, "/refused")
    assert info.value.response.status_code == 403
    assert info.value.response.body == b"no way."


async def test_nothing_listening_is_an_os_error() -> None:
    with tempfile.TemporaryDirectory() as tmp, pytest.raises(OSError):
        await opened(os.path.join(tmp, "none.sock"))


@pytest.mark.parametrize("header", [("X-Bad", "a\r\nInjected: 1"), ("X\nBad", "a")])
async def test_a_line_break_in_a_header_is_refused(header: tuple[str, str]) -> None:
    with pytest.raises(ValueError, match="line break"):
        await open_upstream("ws://jupyter-loopback/", [header], subprotocols=None, max_size=None, timeout=1)


async def test_the_servers_close_frame_is_kept_and_recv_ends() -> None:
    async with server() as path:
        ws = await opened(path, "/close/4001")
        with pytest.raises(Closed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_rcvd is not None and (ws.close_rcvd.code, ws.close_rcvd.reason) == (4001, "bye")
        with pytest.raises(Closed):
            ws.send_nowait("late")
        ws.abort()


async def test_a_long_close_reason_is_cut_at_a_character_boundary() -> None:
    async with server() as path:
        ws = await opened(path)
        await ws.close(4000, "é" * 100)  # 200 bytes: over a control frame's 125
        code, reason = await asyncio.wait_for(closes.get(), 5)
    assert code == 4000 and reason == "é" * 61


def test_close_codes_that_must_not_be_sent_are_mapped() -> None:
    assert [close_code(c) for c in (None, 1000, 1005, 1006, 1009, 1015, 4000)] == [
        None,
        1000,
        None,
        1011,
        1009,
        1011,
        4000,
    ]
    assert cut_reason("a" * 200) == "a" * 123
    assert close_payload(1000, "é" * 62) == b"\x03\xe8" + ("é" * 61).encode()
