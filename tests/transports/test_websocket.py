"""The project's one WebSocket client (loopback_asgi/_transports/websocket/) over a unix socket.

The adapter reaches the sidecar this way; the server here is websockets'
own, so the client is checked against a real peer: messages both ways
with fragments and the subprotocol, a refusal's status and text, close
codes, a long close reason, header line breaks refused before any byte
is sent; and frame mode, the comm bridge's: frames handed out as they
came, sent from another thread in order and without the loop's help.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.server import ServerConnection, unix_serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response

from loopback_asgi._transports.frames import close_code, close_payload, cut_reason
from loopback_asgi._transports.websocket import Closed, DataFrame, FrameUpstream, Upstream, open_upstream

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
async def server(**options: object) -> AsyncIterator[str]:
    global closes
    closes = asyncio.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ws.sock")
        async with unix_serve(handler, path, subprotocols=["b", "a"], process_request=refuse, **options):  # type: ignore[arg-type]
            yield path


async def opened(path: str, where: str = "/echo", **kwargs: object) -> Upstream:
    options: dict[str, object] = {"subprotocols": ["a"], "max_size": 2**20, "ping_interval": None, "timeout": 5}
    options.update(kwargs)
    return await open_upstream("ws://jupyter-loopback" + where, [("X-Test", "1")], unix_path=path, **options)  # type: ignore[call-overload,no-any-return]


async def opened_frames(path: str, where: str = "/echo", **kwargs: object) -> FrameUpstream:
    options: dict[str, object] = {"subprotocols": ["a"], "max_size": 2**20, "ping_interval": None, "timeout": 5}
    options.update(kwargs)
    return await open_upstream(  # type: ignore[call-overload,no-any-return]
        "ws://jupyter-loopback" + where, [("X-Test", "1")], unix_path=path, frames=True, **options
    )


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


class Frames:
    """A frame-mode consumer: every call's frames, and the messages they make."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[bool, bool, bytes]]] = []
        self.messages: list[str | bytes] = []
        self._parts: list[bytes] = []
        self._changed = asyncio.Event()

    def __call__(self, frames: list[DataFrame]) -> None:
        self.calls.append([(text, fin, bytes(payload)) for text, fin, payload in frames])
        for text, fin, payload in frames:
            self._parts.append(bytes(payload))
            if fin:
                data = b"".join(self._parts)
                self._parts = []
                self.messages.append(data.decode() if text else data)
        self._changed.set()

    async def until(self, n: int, timeout: float = 20) -> list[str | bytes]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.messages) < n:
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), deadline - loop.time())
        return self.messages


async def test_frame_mode_hands_out_frames_as_they_came() -> None:
    async with server() as path:
        ws = await opened_frames(path)
        got = Frames()
        ws.receive_frames(got)
        ws.send_frames([(True, True, "héllo".encode()), (False, True, b"\x00" * 100_000)])
        ws.send_frames([(True, False, b"fragm"), (False, True, b"ents")])  # one text message in two frames
        await got.until(3)
        frames = [frame for call in got.calls for frame in call]
        assert frames == [
            (True, True, "héllo".encode()),  # text stays bytes: the consumer decodes
            (False, True, b"\x00" * 100_000),
            (True, False, b"frag"),  # the server's fragments stay fragments
            (True, False, b"mented"),
            (True, True, b""),  # websockets ends a message sent in pieces with an empty frame
        ]
        assert not hasattr(ws, "detach")  # frame mode never gives up its socket
        assert not ws.ending.done()
        await ws.close(4000, "done")
        assert await asyncio.wait_for(closes.get(), 5) == (4000, "done")
        assert ws.ending.done()
        ws.send_frames([(True, True, b"late")])  # after the close: dropped, no error


async def test_frame_mode_the_servers_close_ends_it() -> None:
    async with server() as path:
        ws = await opened_frames(path, "/close/4001")
        ws.receive_frames(Frames())
        await asyncio.wait_for(ws.ending, 5)
        assert ws.close_rcvd is not None and ws.close_rcvd.code == 4001
        ws.shut()


async def test_frames_from_another_thread_arrive_in_order_between_the_loops_writes() -> None:
    """Big fragmented messages and small ones from a thread, while the server pings (the loop answers)."""
    big = bytes(range(256)) * 4096  # 1 MiB: the socket cannot take three at once
    expected: list[str | bytes] = []
    for i in range(120):
        expected.append(big * 3 if i % 20 == 0 else str(i))

    def sender(ws: FrameUpstream) -> None:
        for i in range(120):
            if i % 20 == 0:
                ws.send_frames([(False, False, big), (False, False, memoryview(big)), (False, True, big)])
            else:
                ws.send_frames([(True, True, str(i).encode())])

    async with server(ping_interval=0.005, ping_timeout=10, max_size=None) as path:
        ws = await opened_frames(path, max_size=None)
        got = Frames()
        ws.receive_frames(got)
        drained: list[int] = []
        ws.on_drain = lambda: drained.append(ws.buffered)
        await asyncio.to_thread(sender, ws)
        assert await got.until(len(expected), timeout=60) == expected
        assert drained, "what waited for the loop was written and reported"
        assert ws.buffered == 0
        await ws.close()
        assert await asyncio.wait_for(closes.get(), 5) == (1000, "")  # no ping timeout, no protocol error


async def test_a_frame_from_another_thread_needs_no_loop() -> None:
    """With nothing waiting before it, a frame sent off the loop goes straight to the socket."""
    async with server() as path:
        ws = await opened_frames(path)
        got = Frames()
        ws.receive_frames(got)
        thread = threading.Thread(target=ws.send_frames, args=([(True, True, b"direct")],))
        thread.start()
        thread.join(5)  # the loop is blocked here: only the sending thread can write
        assert not thread.is_alive()
        assert ws.buffered == 0
        assert await got.until(1) == ["direct"]
        await ws.close()


async def test_each_mode_is_its_own_class() -> None:
    """Message mode by default, frame mode with ``frames``: neither offers the other's way of sending or reading."""
    async with server() as path:
        ws, frames = await opened(path), await opened_frames(path)
        assert type(ws) is Upstream and type(frames) is FrameUpstream
        assert not hasattr(ws, "send_frames") and not hasattr(frames, "recv")
        await ws.close()
        await frames.close()
        assert [await asyncio.wait_for(closes.get(), 5) for _ in range(2)] == [(1000, "")] * 2
