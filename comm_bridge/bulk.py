"""A large fixed-length response body, read from the socket straight into the messages that carry it.

The sidecar's HTTP client (``loopback_asgi._transports``) sends the request
and parses the head. For a body of at least ``BULK`` bytes with a
``Content-Length`` and no coding to undo, the connection then hands its
socket over (``hand_over``, the same step the sidecar's kernel-side copy
takes) and a :class:`Body` reads the rest into ``CHUNK``-sized buffers which
go to the page as they are, one buffer per message. This spares a copy of
every read and the page gets one 1 MiB buffer per message instead of
several pieces (docs/comm-bridge.md has the kernel's CPU per download). The
connection is closed afterwards rather than pooled.

Full buffers are sent ``BATCH`` at a time (or after ``LINGER``), since each
message sent alone wakes ipykernel's IOPub thread and costs the kernel more
CPU than the same messages back to back. Flow control is the page's credit,
as everywhere else: reading pauses while buffers wait for credit, so one
stream holds at most ``BATCH + 1`` buffers here besides what is in flight.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .flow import LINGER, Session
from .protocol import CHUNK, WINDOW, WINDOW_MESSAGES

__all__ = ["BULK", "Body", "BodyCut", "Pool", "eligible", "relay"]

BULK = 2 * CHUNK
"""Bodies at least this long take the direct path; shorter ones keep their pooled connection."""
BATCH = 3
"""Full buffers sent back to back, so that ipykernel's IOPub thread wakes once for several."""
READ_AHEAD = 2
"""Full buffers waiting for credit before reading pauses."""

POOL = WINDOW // CHUNK
"""Buffers a bridge keeps for reuse while it relays (a window's worth is in flight anyway)…"""
POOL_IDLE = 2
"""…and once it has not relayed for ``IDLE_AFTER`` seconds."""
IDLE_AFTER = 5.0

Send = Callable[[dict[str, Any], Sequence[bytes | memoryview]], None]


def _refs(buffers: list[bytearray], i: int) -> int:
    return sys.getrefcount(buffers[i])


# What _refs() counts for a buffer that only its list refers to, measured
# rather than assumed (the interpreter's own references vary by version).
_ALONE = _refs([bytearray()], 0) if hasattr(sys, "getrefcount") else -1


class Pool:
    """``CHUNK``-sized buffers to read into, each reused once nothing refers to it any more (one thread only).

    A sent buffer is referenced by the messages' views until zmq has written
    it (zero-copy sends), so a buffer whose only reference is this pool's is
    free. Reuse spares a fresh 1 MiB allocation, zeroed and page-faulted in,
    per message: as much CPU as reading the socket (measured). Without
    ``sys.getrefcount`` (not CPython) every buffer is new.
    """

    def __init__(self, size: int = POOL) -> None:
        self.size = size
        self.buffers: list[bytearray] = []
        self.users = 0
        self._trim: asyncio.TimerHandle | None = None

    def use(self) -> None:
        self.users += 1
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None

    def done(self) -> None:
        """One user is done: with none left for ``IDLE_AFTER`` seconds, keep only ``POOL_IDLE`` buffers."""
        self.users -= 1
        if self.users <= 0 and self._trim is None:
            self._trim = asyncio.get_running_loop().call_later(IDLE_AFTER, self._idle)

    def _idle(self) -> None:
        self._trim = None
        del self.buffers[POOL_IDLE:]

    def take(self) -> bytearray:
        for i in range(len(self.buffers)):
            if _refs(self.buffers, i) == _ALONE:
                return self.buffers[i]
        buffer = bytearray(CHUNK)
        if len(self.buffers) < self.size and _ALONE > 0:
            self.buffers.append(buffer)
        return buffer


class BodyCut(Exception):
    """The connection ended before the body did, or the server sent more than its ``Content-Length``."""


def eligible(method: str, status: int, length: int) -> bool:
    """Whether a response's body can be relayed by :func:`relay`: long and fixed-length (``length`` -1 if not)."""
    return method != "HEAD" and length >= BULK and status >= 200 and status not in (204, 304)


async def relay(handed: tuple[object, bytes, int], session: Session, send: Send, pool: Pool) -> None:
    """Relay the rest of a body as ``data`` messages, the last with ``end``.

    ``handed`` is what the connection's ``hand_over`` returned: its socket,
    the body bytes it had read, and how many are still to come. Raises
    :class:`BodyCut` after relaying what arrived if the connection ends
    before the body does. The socket is no longer watched on return, error
    or cancellation; closing it is the connection's job.
    """
    sock, early, remaining = handed
    fileno = getattr(sock, "fileno", None)
    assert fileno is not None  # a socket, or asyncio's wrapper of one
    pool.use()
    reader = _Reader(fileno())
    body = Body(session, send, len(early) + remaining, pool)
    reader.body = body
    try:
        body.connection_made(reader)
        body.start(early)
        await body.done
    finally:
        body.finish(None)
        reader.stop()
        pool.done()


class _Reader:
    """Feeds a socket's reads to a :class:`Body` as a transport would, with pausing (loop thread)."""

    def __init__(self, fd: int) -> None:
        # A duplicate: the loop refuses to watch a descriptor its paused transport still owns.
        self.fd = os.dup(fd)
        self.loop = asyncio.get_running_loop()
        self.body: Body | None = None
        self.reading = False
        self.stopped = False

    def _readable(self) -> None:
        body = self.body
        assert body is not None
        try:
            n = os.readv(self.fd, [body.get_buffer(-1)])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = 0
        if n:
            body.buffer_updated(n)
        else:
            self.pause_reading()
            self.stopped = True
            body.connection_lost(None)

    def is_closing(self) -> bool:
        return self.stopped

    def pause_reading(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.fd)

    def resume_reading(self) -> None:
        if not self.reading and not self.stopped:
            self.reading = True
            self.loop.add_reader(self.fd, self._readable)

    def stop(self) -> None:
        self.pause_reading()
        self.stopped = True
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Body:
    """Reads ``length`` bytes into ``CHUNK`` buffers and sends them as the page's credit allows (loop thread)."""

    def __init__(self, session: Session, send: Send, length: int, pool: Pool) -> None:
        self.session = session
        self.pool = pool
        self.send = send
        self.remaining = length
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: _Reader | None = None
        self._view = memoryview(pool.take())
        self._filled = 0
        self._cut = 0  # what of the buffer is already queued or sent: never written again
        self._pending: deque[memoryview] = deque()
        self._timer: asyncio.Handle | None = None
        self._lost = False
        self._finished = False
        self._excess = memoryview(bytearray(4096))

    def connection_made(self, transport: _Reader) -> None:
        self.transport = transport

    def start(self, early: bytes) -> None:
        """Take what the connection had read already, then read on."""
        view = memoryview(early)
        while view:
            take = min(CHUNK - self._filled, len(view))
            self._view[self._filled : self._filled + take] = view[:take]
            self._filled += take
            view = view[take:]
            self._cut_buffer()
        self.remaining -= len(early)
        self._cut_buffer()
        self.session.window.on_release = self.pump
        self.pump()

    def get_buffer(self, sizehint: int) -> memoryview:
        room = min(CHUNK - self._filled, self.remaining)
        if room <= 0:  # more than Content-Length: read and dropped below
            return self._excess
        return self._view[self._filled : self._filled + room]

    def buffer_updated(self, nbytes: int) -> None:
        if self._finished:
            return
        if self.remaining <= 0 or self._filled >= CHUNK:
            self._fail("The server sent more than its Content-Length.")
            return
        self._filled += nbytes
        self.remaining -= nbytes
        if self.remaining == 0 or self._filled == CHUNK:
            self._cut_buffer()
            if self.remaining == 0 or len(self._pending) >= BATCH:
                self.pump()
            else:
                self._timer = asyncio.get_running_loop().call_later(LINGER, self._flush_partial)
        elif self._timer is None:
            # A partial buffer goes at once while the page keeps up, else it
            # may fill for up to LINGER: bulk data travels in full messages.
            loop = asyncio.get_running_loop()
            if self.session.window.bytes < CHUNK:
                self._timer = loop.call_soon(self._flush_partial)
            else:
                self._timer = loop.call_later(LINGER, self._flush_partial)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.remaining > 0:
            self._lost = True
            self._cut_buffer()
            self.pump()

    def _flush_partial(self) -> None:
        self._timer = None
        self._cut_buffer()
        self.pump()

    def _cut_buffer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._filled > self._cut:
            self._pending.append(self._view[self._cut : self._filled])
            self._cut = self._filled
        if self._filled == CHUNK:
            # The old buffer belongs to the messages now (zmq sends it uncopied).
            self._view = memoryview(self.pool.take())
            self._filled = self._cut = 0

    def pump(self) -> None:
        """Send what credit allows; pause or resume reading to match (also the window's release callback)."""
        if self._finished:
            return
        window = self.session.window
        ended = self.remaining == 0
        while self._pending:
            size = len(self._pending[0])
            if window.messages >= WINDOW_MESSAGES or window.bytes + size > WINDOW:
                break
            window.take(size)
            piece = self._pending.popleft()
            last = ended and not self._pending
            self.send({"op": "data", "id": self.session.id, "end": last}, [piece])
            if last:
                return self.finish(None)
        if self._pending:
            if len(self._pending) >= READ_AHEAD or ended:
                self._pause()
            else:
                self._resume()
            return
        if ended:  # everything arrived with the head (rare: eligible() wants more to come)
            self.send({"op": "data", "id": self.session.id, "end": True}, ())
            return self.finish(None)
        if self._lost:
            return self.finish(BodyCut("The connection closed before the body's end."))
        self._resume()

    def _resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _pause(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def _fail(self, message: str) -> None:
        self.finish(BodyCut(message))

    def finish(self, exc: Exception | None) -> None:
        """Stop relaying; ``done`` resolves, or raises ``exc``. Idempotent."""
        if self._finished:
            return
        self._finished = True
        if self.session.window.on_release == self.pump:
            self.session.window.on_release = None
        if self._timer is not None:
            self._timer.cancel()
        self._pause()
        if not self.done.done():
            if exc is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc)
