"""The adapter's sidecar-leg WebSocket client (loopback_asgi/jupyter/ws_client.py) against a real
``websockets`` server on a unix socket: framing, fragments, pings, close codes, refusals, backpressure."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, unix_serve
from websockets.frames import Frame
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from loopback_asgi.jupyter.ws_client import Refused, SidecarWebSocket, connect

Handler = Callable[[ServerConnection], Awaitable[None]]


class Inbox:
    """What the client's on_message saw; ``hold`` makes it return an unresolved future."""

    def __init__(self) -> None:
        self.items: list[tuple[bytes | None, bool]] = []
        self.changed = asyncio.Event()
        self.hold: asyncio.Future[None] | None = None

    def __call__(self, ws: SidecarWebSocket, data: bytes | None, binary: bool) -> Awaitable[None] | None:
        self.items.append((data, binary))
        self.changed.set()
        return self.hold

    async def wait(self, count: int) -> None:
        while len(self.items) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 10)


@asynccontextmanager
async def server(handler: Handler, **kwargs: Any) -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "sock")
        async with unix_serve(handler, path, **kwargs):
            yield path


async def open_ws(path: str, inbox: Inbox, offered: list[str] | None = None, **kwargs: Any) -> SidecarWebSocket:
    kwargs.setdefault("max_message", 2**30)
    return await connect(path, "/ws?x=1", [("X-Test", "yes")], offered or [], inbox, timeout=5, **kwargs)


async def test_messages_both_ways_with_fragments_pings_and_the_subprotocol() -> None:
    seen: list[Any] = []

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen.append((ws.request.path, ws.request.headers.get("X-Test"), ws.subprotocol))
        async for message in ws:
            seen.append(message)
            if message == "fragments":
                await ws.send(["hel", "lo ", "wörld"])
            elif message == "ping":
                await asyncio.wait_for(await ws.ping(b"p"), 5)  # answered by the client
                await ws.send("pong seen")
            else:
                await ws.send(message)

    inbox = Inbox()
    async with server(handler, subprotocols=["b", "a"], max_size=None) as path:
        ws = await open_ws(path, inbox, ["a", "b"])
        assert ws.selected_subprotocol == "b"
        ws.send(b"fragments", False)
        big = os.urandom(5 * 2**20)
        ws.send(big, True)
        ws.send(b"ping", False)
        await inbox.wait(3)
        assert inbox.items == [("hello wörld".encode(), False), (big, True), (b"pong seen", False)]
        ws.close(1000, "bye")
        await inbox.wait(4)
        assert inbox.items[-1] == (None, False)
    assert seen[0] == ("/ws?x=1", "yes", "b")
    assert seen[1:] == ["fragments", big, "ping"]


@pytest.mark.parametrize(("code", "reason"), [(4001, "custom"), (1000, ""), (None, None)])
async def test_server_close_code_and_reason(code: int | None, reason: str | None) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("before")
        if code is None:
            ws.transport.abort()  # no close frame at all
        else:
            await ws.close(code, reason or "")

    inbox = Inbox()
    async with server(handler) as path:
        ws = await open_ws(path, inbox)
        await inbox.wait(2)
    assert inbox.items == [(b"before", False), (None, False)]
    assert (ws.close_code, ws.close_reason if code else None) == (code, reason if code else None)


async def test_refused_handshake_gives_status_and_text() -> None:
    async def refuse(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(403, "Port 22 is not allowed.\n")

    async def handler(ws: ServerConnection) -> None:
        raise AssertionError("not reached")

    async with server(handler, process_request=refuse) as path:
        with pytest.raises(Refused) as caught:
            await open_ws(path, Inbox())
    assert (caught.value.code, caught.value.body) == (403, "Port 22 is not allowed.")


async def test_nothing_listening_is_an_os_error() -> None:
    with tempfile.TemporaryDirectory() as tmp, pytest.raises(OSError):
        await open_ws(os.path.join(tmp, "none"), Inbox())


async def test_delivery_waits_for_the_receiver_and_keeps_order() -> None:
    sent = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        for i in range(50):
            await ws.send(str(i))
        sent.set()
        await ws.close(1000)

    inbox = Inbox()
    loop = asyncio.get_running_loop()
    inbox.hold = loop.create_future()
    async with server(handler) as path:
        await open_ws(path, inbox)
        await inbox.wait(1)
        await asyncio.wait_for(sent.wait(), 10)
        for _ in range(50):  # loop turns in which the rest could arrive if reading were not paused
            await asyncio.sleep(0)
        assert len(inbox.items) == 1
        held, inbox.hold = inbox.hold, None
        held.set_result(None)
        await inbox.wait(51)
    assert [item[0] for item in inbox.items] == [str(i).encode() for i in range(50)] + [None]


async def test_message_over_the_limit_closes_with_1009() -> None:
    got: list[int | None] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.send(b"x" * 2000)
        try:
            await ws.recv()
        except Exception:
            pass
        got.append(ws.close_code)

    inbox = Inbox()
    async with server(handler) as path:
        ws = await open_ws(path, inbox, max_message=1000)
        await inbox.wait(1)
        assert inbox.items == [(None, False)]
        assert ws.close_code == 1009
        for _ in range(500):
            if got:
                break
            await asyncio.sleep(0.01)
    assert got == [1009]


async def test_frames_are_masked_with_unpredictable_keys() -> None:
    """RFC 6455 §5.3: each client frame's masking key is fresh and unpredictable (not zero).

    A real websockets ``ServerProtocol`` answers the handshake and decodes the
    frames; the raw bytes are kept to read each frame's key. The messages are
    zero bytes, so a frame's masked payload is its key repeated.
    """
    raw = bytearray()
    messages: list[bytes] = []
    got_all = asyncio.Event()
    count, size = 8, 16

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        protocol = ServerProtocol()
        while not got_all.is_set():
            data = await asyncio.wait_for(reader.read(65536), 10)
            assert data
            if protocol.handshake_exc is None and protocol.state is State.OPEN:
                raw.extend(data)
            protocol.receive_data(data)
            for event in protocol.events_received():
                if isinstance(event, Request):
                    protocol.send_response(protocol.accept(event))
                elif isinstance(event, Frame):
                    messages.append(event.data)
                    if len(messages) == count:
                        got_all.set()
            writer.write(b"".join(protocol.data_to_send()))
        writer.close()

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "sock")
        listener = await asyncio.start_unix_server(handle, path)
        async with listener:
            ws = await open_ws(path, Inbox())
            for _ in range(count):
                ws.send(b"\0" * size, True)
            await asyncio.wait_for(got_all.wait(), 10)
            ws.transport.abort()  # type: ignore[union-attr]
    assert messages == [b"\0" * size] * count
    frames = [bytes(raw[i : i + 2 + 4 + size]) for i in range(0, count * (2 + 4 + size), 2 + 4 + size)]
    keys = [frame[2:6] for frame in frames]
    assert all(frame[1] == 0x80 | size and frame[6:] == frame[2:6] * (size // 4) for frame in frames)
    assert b"\0\0\0\0" not in keys and len(set(keys)) == count


async def test_a_long_close_reason_is_cut_at_a_character_boundary() -> None:
    """A close reason is at most 123 bytes (RFC 6455 §5.5) and stays valid UTF-8 (§5.5.1)."""
    received: list[tuple[int, str] | None] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()
        rcvd = ws.protocol.close_rcvd
        received.append(None if rcvd is None else (rcvd.code, rcvd.reason))

    inbox = Inbox()
    async with server(handler) as path:
        ws = await open_ws(path, inbox)
        ws.close(4000, "é" * 70)  # 140 bytes; byte 123 falls inside a character
        await inbox.wait(1)
    assert received == [(4000, "é" * 61)]
