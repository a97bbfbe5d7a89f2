"""Message mode: a WebSocket upstream that sends and receives whole messages.

The sidecar's relay and the Jupyter adapter's leg to the sidecar use it:
each relayed message costs one wakeup on each side, and :meth:`Upstream.detach`
hands the connection over to a byte-for-byte relay (``_transports/pipe.py``).

Guarantees:

- Messages come out whole and in order. Reading from the socket pauses while
  ``max_queue`` messages wait for the consumer (backpressure); sending waits
  while the socket's buffer is full.
- :meth:`Upstream.recv` raises :class:`~.connection.Closed` once the
  connection is over; ``close_rcvd`` then holds the upstream's close frame,
  if it sent one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from loopback_asgi._transports.frames import client_frame, server_frame
from loopback_asgi._transports.websocket.connection import Closed, Connection

__all__ = ["Upstream"]


class Upstream(Connection):
    """A client WebSocket connection in message mode; one reader and one writer at a time."""

    def __init__(self, protocol: ClientProtocol, *, max_queue: int, ping_interval: float | None) -> None:
        super().__init__(protocol, ping_interval=ping_interval)
        self._max_queue = max_queue
        self._messages: deque[str | bytes] = deque()
        self._fragments: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None

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
            self.transport.write(
                client_frame(0x1, message.encode()) if isinstance(message, str) else client_frame(0x2, message)
            )
        return None if self._writable else self.wait_writable()

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

    def _data_frame(self, frame: Frame) -> None:
        if frame.opcode is not Opcode.CONT:
            self._fragments = []
        if not frame.fin:
            self._fragments.append(bytes(frame.data))
            return
        data = b"".join([*self._fragments, frame.data]) if self._fragments else bytes(frame.data)
        self._fragments = []
        self._message(self._opcode is Opcode.TEXT, data)

    def _process(self) -> None:
        self._events()
        self._flush()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)  # a message, a close frame or the end: recv() looks again

    def _drop_unread(self) -> None:
        self._messages.clear()

    def _ended(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
