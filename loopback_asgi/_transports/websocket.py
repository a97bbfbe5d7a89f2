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
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import cast

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from loopback_asgi._transports.frames import client_frame, cut_reason, frame_head, server_frame
from loopback_asgi._transports.http11 import WriteFlow

__all__ = ["Closed", "Upstream", "open_upstream"]

# Whole, unfragmented data frames up to this size are split off the input
# here and become messages at once; websockets' parser takes everything else
# (control frames, fragments, larger or invalid frames), always from a frame
# boundary, so it sees a valid stream and keeps its checks and its state.
FAST_FRAME = 64 * 1024
# A handshake answer longer than this goes to the parser as is (it refuses it).
MAX_HEAD = 64 * 1024


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
        self._head: bytearray | None = bytearray()  # the handshake answer so far; None once past it
        self._split_frames = False  # past a good handshake: frames are split off here
        self._input = bytearray()  # read, not yet handed out, starting at a frame boundary
        self._owed = 0  # bytes of a frame the parser has begun and still needs
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
            self._split()  # frames read before the pause
            self._process()
        return message

    async def send(self, message: str | bytes) -> None:
        """Send one message; waits while the socket's buffer is full. Raises :class:`Closed` after the end."""
        waiting = self.send_nowait(message)
        if waiting is not None:
            await waiting

    def send_nowait(self, message: str | bytes) -> Awaitable[None] | None:
        """Send one message; an awaitable only while the socket's buffer is full (no coroutine per message).

        Raises :class:`Closed` after the end.
        """
        if self.lost.done() or self.protocol.state is not State.OPEN:
            raise Closed
        self._flush()  # anything the protocol queued (a pong) goes first
        if self.transport is not None and not self.transport.is_closing():
            if isinstance(message, str):
                self.transport.write(client_frame(0x1, message.encode()))
            else:
                self.transport.write(client_frame(0x2, message))
        return None if self._writable else self.wait_writable()

    async def close(self, code: int | None = 1000, reason: str = "", *, timeout: float = 2) -> None:
        """Start (or finish) the closing handshake, wait up to ``timeout`` s for the upstream, then drop it.

        ``code`` None sends a close frame with no status; a long ``reason``
        is cut at a character boundary (:func:`cut_reason`).

        Messages not yet received are dropped, and reading resumes if it was
        paused: the upstream's answer is read even behind a full queue.
        """
        self._discard = True
        self._messages.clear()
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        self._split()  # what was read goes to the parser, which finds the close frame
        self._process()
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, cut_reason(reason) if code is not None else "")
            self._flush()
        if not self.lost.done():
            try:
                await asyncio.wait_for(asyncio.shield(self.lost), timeout)
            except asyncio.TimeoutError:
                pass
        self.abort()

    def detach(self) -> tuple[asyncio.Transport, bytes] | None:
        """Give up the connection at a frame boundary, for a byte-for-byte relay (``websocket_pipe``).

        Returns the transport and what was read but not handed out, as the
        upstream's own frames (messages waiting in the queue are framed
        again); or None, leaving everything as it was, unless the connection
        is open, unfragmented and the parser holds nothing. Afterwards this
        object sends, pings and reads nothing.
        """
        protocol = self.protocol
        if (
            self.transport is None
            or self.transport.is_closing()
            or self.lost.done()
            or not self._split_frames
            or self._owed
            or self._fragments
            or self._discard
            or protocol.state is not State.OPEN
            or protocol.current_size is not None
            or protocol.extensions
        ):
            return None
        self._flush()
        self._stop_pings()
        frames = [server_frame(0x1, m.encode()) if isinstance(m, str) else server_frame(0x2, m) for m in self._messages]
        self._messages.clear()
        rest = b"".join(frames) + bytes(self._input)
        self._input.clear()
        self._split_frames, self._discard = False, True
        if self._paused:
            self._paused = False
            self.transport.resume_reading()
        transport, self.transport = self.transport, None
        return transport, rest

    def abort(self) -> None:
        self._stop_pings()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    # -- asyncio.Protocol ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have asyncio.Transport's methods but not its class.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._split_frames:
            if self._owed:
                take = min(self._owed, len(data))
                self.protocol.receive_data(data[:take])
                self._owed -= take
                data = data[take:]
                self._events()
            self._input += data
            self._split()
        elif self._head is not None:
            self._handshake_bytes(data)
        else:
            self.protocol.receive_data(data)
        self._process()

    def eof_received(self) -> bool:
        rest = bytes(self._head or b"") + bytes(self._input)
        self._head, self._split_frames = None, False
        self._input.clear()
        if rest:
            self.protocol.receive_data(rest)
        self.protocol.receive_eof()
        self._process()
        return False

    def _handshake_bytes(self, data: bytes) -> None:
        """Give the parser the handshake answer alone; frames read with it wait in ``_input``."""
        assert self._head is not None
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0 and len(self._head) <= MAX_HEAD:
            return
        cut = end + 4 if end >= 0 else len(self._head)
        head, rest = bytes(self._head[:cut]), bytes(self._head[cut:])
        self._head = None
        self.protocol.receive_data(head)
        self._events()
        if self.protocol.state is State.OPEN:
            self._split_frames = True
            self._input += rest
            self._split()
        elif rest:
            self.protocol.receive_data(rest)

    def _split(self) -> None:
        """Turn whole small data frames at the front of ``_input`` into messages; pass anything else to the parser."""
        buf = self._input
        while len(buf) >= 2 and not self._paused and self._split_frames:
            parsed = frame_head(buf)  # a masked frame from a server counts its mask; the parser refuses it
            if parsed is None:
                return
            pos, n = parsed
            b0, b1 = buf[0], buf[1]
            end = pos + n
            opcode = b0 & 0x0F
            fast = (
                b0 & 0xF0 == 0x80  # FIN, no RSV bits
                and opcode in (0x1, 0x2)
                and not b1 & 0x80
                and n <= FAST_FRAME
                and (self.protocol.max_message_size is None or n <= self.protocol.max_message_size)
                and self.protocol.current_size is None  # not inside a fragmented message
                and self.protocol.state is State.OPEN
                and not self._discard
            )
            if fast:
                if len(buf) < end:
                    return
                payload = bytes(buf[pos:end])
                del buf[:end]
                self._message(opcode == 0x1, payload)
            else:
                take = min(end, len(buf))
                self.protocol.receive_data(bytes(buf[:take]))
                del buf[:take]
                self._owed = end - take
                self._events()  # in order: its frame counts before the next one
                if self._owed:
                    return

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

    def _events(self) -> None:
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                self._handshake_done()
            elif isinstance(event, Frame):
                self._frame(event)

    def _process(self) -> None:
        self._events()
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
        self._message(self._opcode is Opcode.TEXT, data)

    def _message(self, text: bool, data: bytes) -> None:
        if self._discard:
            return
        if text:
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
    unix_path: str | None = None,
) -> Upstream:
    """Connect and complete the handshake within ``timeout`` s, sending ``headers`` along.

    With ``unix_path``, the connection goes to that unix socket; ``uri``
    then only gives the path and the ``Host`` header. A header or a path
    holding a line break raises ``ValueError``.
    """
    if any(ch in text for pair in headers for text in pair for ch in "\r\n") or "\r" in uri or "\n" in uri:
        raise ValueError("A header or the path holds a line break.")
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
        if unix_path is not None:
            _, upstream = await loop.create_unix_connection(factory, unix_path)
        else:
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
        where = unix_path if unix_path is not None else f"{wsuri.host}:{wsuri.port}"
        raise TimeoutError(f"No WebSocket handshake with {where} within {timeout} s.") from None
