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

Frame mode (``open_upstream(..., frames=True)``, the comm bridge's) hands
out data frames instead of messages and takes them from any thread:

- :meth:`Upstream.receive_frames` gets each read's data frames, in order,
  as ``(text, fin, payload)`` (fragments stay fragments, text is not
  decoded), in one call per read, on the loop; frames that came before it
  was set are handed over first.
- :meth:`Upstream.send_frames` is safe from any thread and never blocks.
  Off the loop, frames go straight to the socket when nothing waits before
  them, so a sender on another thread costs the loop no wakeup; what the
  socket does not take waits, in order, for the loop. Everything the loop
  writes (a pong, a close) goes after what was sent before it.
- ``buffered`` counts the bytes not yet taken by the socket; ``on_drain`` is
  called on the loop once they are down to the transport's low-water mark.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import cast

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, ProtocolError
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from loopback_asgi._transports.frames import client_frame, cut_reason, frame_head, server_frame
from loopback_asgi._transports.http11 import WriteFlow

__all__ = ["Closed", "DataFrame", "Upstream", "open_upstream"]

DataFrame = tuple[bool, bool, "bytes | bytearray | memoryview"]
"""``(text, fin, payload)``: one data frame; ``text`` is the type of the message it belongs to."""

# Whole, unfragmented data frames up to this size are split off the input
# here and become messages at once; websockets' parser takes everything else
# (control frames, fragments, larger or invalid frames), always from a frame
# boundary, so it sees a valid stream and keeps its checks and its state.
FAST_FRAME = 64 * 1024
# A handshake answer longer than this goes to the parser as is (it refuses it).
MAX_HEAD = 64 * 1024
# Buffers in one sendmsg call (Linux's UIO_MAXIOV is 1024).
IOV_MAX = 512


class Closed(Exception):
    """The upstream connection is over: no more messages."""


class Upstream(WriteFlow, asyncio.Protocol):
    """A client WebSocket connection; one reader and one writer at a time."""

    def __init__(
        self, protocol: ClientProtocol, *, max_queue: int, ping_interval: float | None, frames: bool = False
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
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
        # Frame mode: received data frames wait here for the consumer; the
        # lock orders every write, whichever thread makes it.
        self._on_frames: Callable[[list[DataFrame]], None] | None = None
        self._received: list[DataFrame] | None = [] if frames else None
        self._lock: threading.Lock | None = threading.Lock() if frames else None
        self._sock: socket.socket | None = None  # a duplicate of the transport's, for writes off the loop
        self._pending: deque[bytes | memoryview] = deque()  # written off the loop, not yet taken by the socket
        self._pending_size = 0
        self._handing = False  # the loop is asked to hand ``_pending`` to the transport
        self._continuing = False  # the message being sent is fragmented and goes on
        self._held = False  # the consumer paused reading
        self.ending: asyncio.Future[None] = self._loop.create_future()
        """Frame mode: done once a close frame went either way or the connection is over."""
        self.on_drain: Callable[[], None] | None = None
        """Frame mode: called on the loop when the bytes waiting for the socket are down to the low-water mark."""

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
            frame = client_frame(0x1, message.encode()) if isinstance(message, str) else client_frame(0x2, message)
            if self._lock is None:
                self.transport.write(frame)
            else:
                with self._lock:  # after what other threads sent
                    self._hand_over()
                    self.transport.write(frame)
        return None if self._writable else self.wait_writable()

    # -- frame mode ------------------------------------------------------

    def receive_frames(self, consumer: Callable[[list[DataFrame]], None]) -> None:
        """Frame mode: hand each read's data frames to ``consumer`` (loop thread), those read so far at once."""
        self._on_frames = consumer
        self._deliver()

    def pause_reading(self) -> None:
        """Frame mode: stop reading (the consumer is behind); frames already read still come (loop thread)."""
        if not self._held and self.transport is not None:
            self._held = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Frame mode: read again after :meth:`pause_reading` (loop thread)."""
        if self._held and self.transport is not None:
            self._held = False
            self.transport.resume_reading()

    def send_frames(self, frames: Iterable[DataFrame]) -> None:
        """Frame mode: send data frames from any thread, after everything sent before; never blocks.

        A message may be cut into frames: ``fin`` false on all but its last,
        the ``text`` of its first counts. Frames sent once the closing
        handshake began (from either side) are dropped.
        """
        lock = self._lock
        if lock is None:
            raise RuntimeError("send_frames() needs open_upstream(..., frames=True).")
        with lock:
            transport = self.transport
            if transport is None or transport.is_closing() or self.protocol.state is not State.OPEN:
                return
            out: list[bytes | memoryview] = []
            for text, fin, payload in frames:
                # apply_mask reads any buffer: a piece of the page's message is masked without a copy.
                opcode = 0x0 if self._continuing else 0x1 if text else 0x2
                frame = client_frame(opcode, cast(bytes, payload))
                self._continuing = not fin
                if fin:
                    out.append(frame)
                else:  # the same frame with FIN cleared, without copying the payload
                    out += (bytes((frame[0] & 0x7F,)), memoryview(frame)[1:])
            if threading.get_ident() == self._thread:
                self._hand_over()
                for data in out:
                    transport.write(data)
                return
            if not self._pending and transport.get_write_buffer_size() == 0:
                out = self._send_direct(out)
            if out:
                self._pending.extend(out)
                self._pending_size += sum(map(len, out))
                if not self._handing:
                    self._handing = True
                    self._loop.call_soon_threadsafe(self._hand_over_later)

    @property
    def buffered(self) -> int:
        """Frame mode: bytes sent but not yet taken by the socket (any thread; an estimate while the loop writes)."""
        transport = self.transport
        return self._pending_size + (transport.get_write_buffer_size() if transport is not None else 0)

    def _send_direct(self, out: list[bytes | memoryview]) -> list[bytes | memoryview]:
        """Write ``out`` to the socket from this thread as far as it takes it now; what is left (lock held)."""
        sock = self._sock
        while out and sock is not None:
            try:
                sent = sock.sendmsg(out[:IOV_MAX])
            except OSError:  # full, or gone: the loop's transport writes the rest or finds the error
                return out
            while sent:
                head = out[0]
                if sent >= len(head):
                    sent -= len(head)
                    out.pop(0)
                else:
                    out[0] = memoryview(head)[sent:]
                    sent = 0
        return out

    def _hand_over(self) -> None:
        """Give what other threads left waiting to the transport, in order (loop thread, lock held)."""
        if self._pending:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.writelines(self._pending)
            self._pending.clear()
            self._pending_size = 0

    def _hand_over_later(self) -> None:
        assert self._lock is not None
        with self._lock:
            self._handing = False
            self._hand_over()
        if self._writable and self.on_drain is not None:
            self.on_drain()  # else ``resume_writing`` calls it

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.on_drain is not None:
            self.on_drain()

    def _deliver(self) -> None:
        received = self._received
        if received and self._on_frames is not None:
            self._received = []
            self._on_frames(received)
        # A close frame either way (the upstream's, or one sent on failing the connection), or the end.
        state = self.protocol.state
        if not self.ending.done() and (state is State.CLOSING or state is State.CLOSED or self.protocol.close_rcvd):
            self.ending.set_result(None)

    def shut(self) -> None:
        """Send a close frame (1000) unless one was, and drop the connection without waiting (loop thread)."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(1000)
            self._flush()
        if self.transport is not None and self.transport.get_write_buffer_size() == 0:
            self.transport.close()  # the close frame is out: end with a FIN
        self.abort()

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
        self.resume_reading()
        self._split()  # what was read goes to the parser, which finds the close frame
        self._process()
        if self.protocol.state is State.OPEN:
            try:
                self.protocol.send_close(code, cut_reason(reason) if code is not None else "")
            except ProtocolError:  # a code no endpoint may send (RFC 6455 §7.4.1)
                self.protocol.send_close(1000, cut_reason(reason))
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
            or self._lock is not None
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
        if self._lock is not None:
            # Its own descriptor of the same socket: writes off the loop never
            # touch the transport, and a descriptor number the loop closed and
            # the process reused is never written to.
            self._sock = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))

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
        if self._lock is not None:
            with self._lock:
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
                self._pending.clear()
                self._pending_size = 0
        if not self.ending.done():
            self.ending.set_result(None)
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
        if self._received is not None:
            self._deliver()
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
        if self._received is not None:  # frame mode: fragments stay fragments
            if not self._discard:
                self._received.append((self._opcode is Opcode.TEXT, frame.fin, frame.data))
            return
        if not frame.fin:
            self._fragments.append(bytes(frame.data))
            return
        data = b"".join([*self._fragments, frame.data]) if self._fragments else bytes(frame.data)
        self._fragments = []
        self._message(self._opcode is Opcode.TEXT, data)

    def _message(self, text: bool, data: bytes) -> None:
        if self._discard:
            return
        if self._received is not None:
            self._received.append((text, True, data))
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
        if self._lock is not None:
            with self._lock:
                self._hand_over()  # what other threads sent goes first
                self._write_protocol_data()
        else:
            self._write_protocol_data()

    def _write_protocol_data(self) -> None:
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
    frames: bool = False,
) -> Upstream:
    """Connect and complete the handshake within ``timeout`` s, sending ``headers`` along.

    With ``frames``, the connection is in frame mode (see the module's docstring).

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
        return Upstream(protocol, max_queue=max_queue, ping_interval=ping_interval, frames=frames)

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
