"""Frame mode: a WebSocket upstream that hands out data frames and takes them from any thread.

The comm bridge's WebSocket leg (``comm_bridge/websocket.py``) uses it:
frames cross between the page's messages and the upstream without being
joined into messages here, and its sending thread writes to the socket
without waking the loop.

Guarantees:

- :meth:`FrameUpstream.receive_frames` gets each read's data frames, in
  order, as ``(text, fin, payload)`` (fragments stay fragments, text is not
  decoded), in one call per read, on the loop; frames that came before it
  was set are handed over first.
- :meth:`FrameUpstream.send_frames` is safe from any thread and never
  blocks. Off the loop, frames go straight to the socket when nothing waits
  before them, so a sender on another thread costs the loop no wakeup; what
  the socket does not take waits, in order, for the loop. Everything the
  loop writes (a pong, a close) goes after what was sent before it.
- ``buffered`` counts the bytes not yet taken by the socket; ``on_drain`` is
  called on the loop once they are down to the transport's low-water mark.
- ``ending`` is done once a close frame went either way or the connection
  is over.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from loopback_asgi._transports.frames import client_frame
from loopback_asgi._transports.websocket.connection import Connection

__all__ = ["DataFrame", "FrameUpstream"]

DataFrame = tuple[bool, bool, "bytes | bytearray | memoryview"]
"""``(text, fin, payload)``: one data frame; ``text`` is the type of the message it belongs to."""

# Buffers in one sendmsg call (Linux's UIO_MAXIOV is 1024).
IOV_MAX = 512


class FrameUpstream(Connection):
    """A client WebSocket connection in frame mode; frames are sent from any thread, received on the loop."""

    def __init__(self, protocol: ClientProtocol, *, ping_interval: float | None) -> None:
        super().__init__(protocol, ping_interval=ping_interval)
        self._thread = threading.get_ident()
        # Received data frames wait here for the consumer; the lock orders
        # every write, whichever thread makes it.
        self._on_frames: Callable[[list[DataFrame]], None] | None = None
        self._received: list[DataFrame] = []
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None  # a duplicate of the transport's, for writes off the loop
        self._pending: deque[bytes | memoryview] = deque()  # written off the loop, not yet taken by the socket
        self._pending_size = 0
        self._handing = False  # the loop is asked to hand ``_pending`` to the transport
        self._continuing = False  # the message being sent is fragmented and goes on
        self._held = False  # the consumer paused reading
        self.ending: asyncio.Future[None] = self._loop.create_future()
        """Done once a close frame went either way or the connection is over."""
        self.on_drain: Callable[[], None] | None = None
        """Called on the loop when the bytes waiting for the socket are down to the low-water mark."""

    def receive_frames(self, consumer: Callable[[list[DataFrame]], None]) -> None:
        """Hand each read's data frames to ``consumer`` (loop thread), those read so far at once."""
        self._on_frames = consumer
        self._deliver()

    def pause_reading(self) -> None:
        """Stop reading (the consumer is behind); frames already read still come (loop thread)."""
        if not self._held and self.transport is not None:
            self._held = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read again after :meth:`pause_reading` (loop thread)."""
        if self._held and self.transport is not None:
            self._held = False
            self.transport.resume_reading()

    def send_frames(self, frames: Iterable[DataFrame]) -> None:
        """Send data frames from any thread, after everything sent before; never blocks.

        A message may be cut into frames: ``fin`` false on all but its last,
        the ``text`` of its first counts. Frames sent once the closing
        handshake began (from either side) are dropped.
        """
        with self._lock:
            transport = self.transport
            if transport is None or transport.is_closing() or self.protocol.state is not State.OPEN:
                return
            out: list[bytes | memoryview] = []
            for text, fin, payload in frames:
                # apply_mask reads any buffer: a piece of the page's message is masked without a copy.
                opcode = 0x0 if self._continuing else 0x1 if text else 0x2
                frame = client_frame(opcode, payload)
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
        """Bytes sent but not yet taken by the socket (any thread; an estimate while the loop writes)."""
        transport = self.transport
        return self._pending_size + (transport.get_write_buffer_size() if transport is not None else 0)

    def shut(self) -> None:
        """Send a close frame (1000) unless one was, and drop the connection without waiting (loop thread)."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(1000)
            self._flush()
        if self.transport is not None and self.transport.get_write_buffer_size() == 0:
            self.transport.close()  # the close frame is out: end with a FIN
        self.abort()

    # -- writing from any thread -----------------------------------------

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
        with self._lock:
            self._handing = False
            self._hand_over()
        if self._writable and self.on_drain is not None:
            self.on_drain()  # else ``resume_writing`` calls it

    def _flush(self) -> None:
        with self._lock:
            self._hand_over()  # what other threads sent goes first
            super()._flush()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.on_drain is not None:
            self.on_drain()

    # -- reading on the loop ---------------------------------------------

    def _message(self, text: bool, data: bytes) -> None:
        if not self._discard:
            self._received.append((text, True, data))

    def _data_frame(self, frame: Frame) -> None:
        if not self._discard:  # fragments stay fragments
            self._received.append((self._opcode is Opcode.TEXT, frame.fin, frame.data))

    def _process(self) -> None:
        self._events()
        self._flush()
        self._deliver()

    def _deliver(self) -> None:
        received = self._received
        if received and self._on_frames is not None:
            self._received = []
            self._on_frames(received)
        # A close frame either way (the upstream's, or one sent on failing the connection), or the end.
        state = self.protocol.state
        if not self.ending.done() and (state is State.CLOSING or state is State.CLOSED or self.protocol.close_rcvd):
            self.ending.set_result(None)

    def _drop_unread(self) -> None:
        self.resume_reading()

    # -- asyncio.Protocol ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # Its own descriptor of the same socket: writes off the loop never
        # touch the transport, and a descriptor number the loop closed and
        # the process reused is never written to.
        self._sock = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))

    def connection_lost(self, exc: Exception | None) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            self._pending.clear()
            self._pending_size = 0
        if not self.ending.done():
            self.ending.set_result(None)
        super().connection_lost(exc)
