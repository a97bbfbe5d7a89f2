"""One WebSocket connection to a loopback upstream: websockets' Sans-I/O client on an asyncio ``Protocol``.

The relay (``websocket.py``) opens an :class:`Upstream`, then sends and
receives whole messages. websockets' ``ClientProtocol`` does the handshake,
framing, masking, ping replies, size limits and the closing handshake; this
module moves its bytes and hands out messages with no task of its own, so a
relayed message costs one wakeup on each side.

Guarantees:

- :func:`open_upstream` returns only after a successful handshake; otherwise
  it raises ``websockets.exceptions.InvalidStatus`` (the upstream answered
  with an HTTP status), ``InvalidHandshake``, ``OSError`` or ``TimeoutError``.
- Messages come out whole and in order. Reading from the socket pauses while
  ``max_queue`` messages wait for the consumer (backpressure); sending waits
  while the socket's buffer is full.
- :meth:`Upstream.recv` raises :class:`Closed` once the connection is over;
  ``close_rcvd`` then holds the upstream's close frame, if it sent one.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections import deque
from collections.abc import Sequence
from typing import cast

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from .wire import WriteFlow

try:  # websockets' C masking, as websockets itself picks it
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a build without the C extension
    from websockets.utils import apply_mask

__all__ = ["Closed", "Upstream", "open_upstream"]


def _data_frame(opcode: int, payload: bytes) -> bytes:
    """One whole masked client data frame (RFC 6455 §5.2).

    Data frames are written here rather than through the protocol's
    ``send_text``/``send_binary``, which build the same bytes through a
    ``Frame`` object and its checks: the relay only ever sends whole
    messages while the connection is open, which is all those checks guard.
    """
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0xFF, n)
    mask = os.urandom(4)
    return head + mask + apply_mask(payload, mask)


class Closed(Exception):
    """The upstream connection is over: no more messages."""


class Upstream(WriteFlow, asyncio.Protocol):
    """A client WebSocket connection; one reader and one writer at a time."""

    def __init__(self, protocol: ClientProtocol, *, max_queue: int, ping_interval: float | None) -> None:
        self._loop = asyncio.get_running_loop()
        self.protocol = protocol
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[None] = self._loop.create_future()
        self.lost: asyncio.Future[None] = self._loop.create_future()
        self._max_queue = max_queue
        self._messages: deque[str | bytes] = deque()
        self._fragments: list[bytes] = []
        self._opcode = Opcode.TEXT
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._discard = False
        self._ping_interval = ping_interval
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_due: bytes | None = None

    @property
    def subprotocol(self) -> str | None:
        return self.protocol.subprotocol

    @property
    def close_rcvd(self) -> Close | None:
        return self.protocol.close_rcvd

    # -- messages --------------------------------------------------------

    async def recv(self) -> str | bytes:
        """The next whole message; raises :class:`Closed` when there will be no more."""
        while not self._messages:
            # After the upstream's close frame nothing more can come.
            if self.lost.done() or self.protocol.close_rcvd is not None or self.protocol.state is State.CLOSED:
                raise Closed
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._messages.popleft()
        if self._paused and len(self._messages) < self._max_queue and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return message

    async def send(self, message: str | bytes) -> None:
        """Send one message; waits while the socket's buffer is full. Raises :class:`Closed` after the end."""
        if self.lost.done() or self.protocol.state is not State.OPEN:
            raise Closed
        self._flush()  # anything the protocol queued (a pong) goes first
        if self.transport is not None and not self.transport.is_closing():
            if isinstance(message, str):
                self.transport.write(_data_frame(0x1, message.encode()))
            else:
                self.transport.write(_data_frame(0x2, message))
        await self.wait_writable()

    async def close(self, code: int = 1000, reason: str = "", *, timeout: float = 2) -> None:
        """Start (or finish) the closing handshake, wait up to ``timeout`` s for the upstream, then drop it.

        Messages not yet received are dropped, and reading resumes if it was
        paused: the upstream's answer is read even behind a full queue.
        """
        self._discard = True
        self._messages.clear()
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self._flush()
        if not self.lost.done():
            try:
                await asyncio.wait_for(asyncio.shield(self.lost), timeout)
            except asyncio.TimeoutError:
                pass
        self.abort()

    def abort(self) -> None:
        self._stop_pings()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    # -- asyncio.Protocol ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have asyncio.Transport's methods but not its class.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        self._process()

    def eof_received(self) -> bool:
        self.protocol.receive_eof()
        self._process()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_pings()
        if not self.handshake.done():
            self.handshake.set_exception(InvalidHandshake("The upstream closed the connection during the handshake."))
        if not self.lost.done():
            self.lost.set_result(None)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self.writer_lost()

    # -- the protocol's events -------------------------------------------

    def _process(self) -> None:
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                self._handshake_done()
            elif isinstance(event, Frame):
                self._frame(event)
        self._flush()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)  # a message, a close frame or the end: recv() looks again

    def _handshake_done(self) -> None:
        if self.handshake.done():
            return
        if self.protocol.handshake_exc is not None:
            self.handshake.set_exception(self.protocol.handshake_exc)
        else:
            self.handshake.set_result(None)
            self._schedule_ping()

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.PONG:
            if self._pong_due is not None and frame.data == self._pong_due:
                self._pong_due = None
            return
        if opcode in (Opcode.TEXT, Opcode.BINARY):
            self._opcode = opcode
            self._fragments = []
        elif opcode is not Opcode.CONT:
            return  # PING is answered by the protocol itself, CLOSE is kept in close_rcvd
        if not frame.fin:
            self._fragments.append(bytes(frame.data))
            return
        data = b"".join([*self._fragments, frame.data]) if self._fragments else bytes(frame.data)
        self._fragments = []
        if self._discard:
            return
        if self._opcode is Opcode.TEXT:
            try:
                self._messages.append(data.decode())
            except UnicodeDecodeError:
                self.protocol.fail(1007, "invalid UTF-8 in a text message")
                return
        else:
            self._messages.append(data)
        if len(self._messages) >= self._max_queue and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def _flush(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()  # the protocol's end of the closing handshake

    # -- keepalive -------------------------------------------------------

    def _schedule_ping(self) -> None:
        if self._ping_interval:
            self._ping_timer = self._loop.call_later(self._ping_interval, self._ping)

    def _ping(self) -> None:
        if self.protocol.state is not State.OPEN:
            return
        # No pong for a whole interval: the upstream is gone. Unless reading
        # is paused for a slow consumer: the pong may be waiting unread, so
        # a fresh ping replaces the one due.
        if self._pong_due is not None and not self._paused:
            self.protocol.fail(1011, "keepalive ping timeout")
            self._flush()
            self.abort()
            return
        self._pong_due = os.urandom(4)
        self.protocol.send_ping(self._pong_due)
        self._flush()
        self._schedule_ping()

    def _stop_pings(self) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None


async def open_upstream(
    uri: str,
    headers: Sequence[tuple[str, str]],
    *,
    subprotocols: Sequence[str] | None,
    max_size: int | None,
    max_queue: int = 4,
    ping_interval: float | None = 20,
    timeout: float,
) -> Upstream:
    """Connect and complete the handshake within ``timeout`` s, sending ``headers`` along."""
    wsuri = parse_uri(uri)
    protocol = ClientProtocol(
        wsuri, subprotocols=[Subprotocol(s) for s in subprotocols] if subprotocols else None, max_size=max_size
    )
    request = protocol.connect()
    for name, value in headers:
        request.headers[name] = value
    protocol.send_request(request)

    def factory() -> Upstream:
        return Upstream(protocol, max_queue=max_queue, ping_interval=ping_interval)

    async def handshake() -> Upstream:
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_connection(factory, wsuri.host, wsuri.port)
        try:
            upstream._flush()
            await upstream.handshake
        except BaseException:
            upstream.abort()
            raise
        return upstream

    try:
        return await asyncio.wait_for(handshake(), timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"No WebSocket handshake with {wsuri.host}:{wsuri.port} within {timeout} s.") from None
