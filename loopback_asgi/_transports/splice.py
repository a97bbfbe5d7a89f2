"""Move a response body from one socket to another inside the kernel (Linux ``splice``).

Two relays use it: the sidecar (upstream socket → client socket,
``protocols/http.py``) and the adapter (sidecar socket → browser socket,
``jupyter/response.py``). Below, the *source* is where the body comes from
and the *client* where it goes.

:class:`Splice` relays the rest of a ``Content-Length`` body: source socket
→ pipe → client socket, with ``os.splice`` on non-blocking descriptors, driven
by the event loop's readiness callbacks. The bytes never enter the process:
no ``recv``/``send`` copies, no Python step per piece. Guarantees:

- Bounded memory: at most one pipe (``PIPE_SIZE``, 1 MiB) of body in flight.
  Backpressure both ways: nothing is read from the source while the pipe is
  full, and the pipe is drained only as fast as the client's socket takes it.
- Pieces reach the client as they arrive (a streamed body is not held back).
- The descriptors are duplicates of the streams' own, so a stream closed
  meanwhile (the client left) cannot hand its descriptor number to another
  connection under the relay; :meth:`Splice.abort` stops at once.
- ``outcome`` says how it ended: ``DONE`` (every byte delivered), ``SOURCE_LOST``
  (the source stopped first; what had arrived was delivered) or ``CLIENT_GONE``.

Only the caller knows whether splicing applies (plain sockets, nothing
buffered above them); :func:`available` says whether the platform can.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket

__all__ = ["CLIENT_GONE", "DONE", "PIPE_SIZE", "SOURCE_LOST", "Splice", "available"]

DONE, SOURCE_LOST, CLIENT_GONE = "done", "source lost", "client gone"
PIPE_SIZE = 2**20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# Per callback at most this many bytes, then the loop's other callbacks get a turn.
TURN_BYTES = 16 * 2**20
_READ, _WRITE = 1, 2


def available() -> bool:
    """Whether ``os.splice`` exists here (Linux, Python 3.10+)."""
    return hasattr(os, "splice")


class Splice:
    """Relay ``length`` bytes from ``source`` to ``sink`` (the client)."""

    def __init__(self, source: socket.socket, sink: socket.socket, length: int) -> None:
        self.left = length  # still to read from the source
        self.sent = 0  # delivered to the client
        self.outcome = ""
        self._in_pipe = 0
        self._eof = False
        self._waiting = 0
        self._fds: list[int] = []
        self._loop = asyncio.get_running_loop()
        self._done: asyncio.Future[None] = self._loop.create_future()
        try:
            self._src = self._dup(source.fileno())
            self._dst = self._dup(sink.fileno())
            self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._fds += [self._r, self._w]
            with contextlib.suppress(OSError):  # a smaller pipe still works, in more steps
                fcntl.fcntl(self._w, F_SETPIPE_SZ, PIPE_SIZE)
        except BaseException:
            self._close()
            raise

    def _dup(self, fd: int) -> int:
        new = os.dup(fd)  # non-inheritable; shares the (non-blocking) open file
        self._fds.append(new)
        return new

    async def run(self) -> str:
        """Relay until done, the source stops, or the client leaves; return ``outcome``."""
        try:
            self._pump()
            await self._done
        finally:
            self._close()
        return self.outcome

    def abort(self) -> None:
        """The client left (its stream was closed): stop now and let go of both sockets."""
        self._finish(CLIENT_GONE)

    def _pump(self) -> None:
        if self._done.done():
            return
        flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
        splice = os.splice  # positional arguments below: no keyword parsing per call
        budget = TURN_BYTES
        while budget > 0:
            moved = False
            if self.left and not self._eof and self._in_pipe < PIPE_SIZE:
                try:
                    n = splice(self._src, self._w, min(self.left, PIPE_SIZE - self._in_pipe), None, None, flags)
                except BlockingIOError:
                    pass  # nothing from the source yet, or the pipe is full
                except OSError:
                    self._eof = True  # reset by the source: deliver what arrived, then cut
                else:
                    if n == 0:
                        self._eof = True
                    self.left -= n
                    self._in_pipe += n
                    moved = n > 0
            if self._in_pipe:
                try:
                    n = splice(self._r, self._dst, self._in_pipe, None, None, flags)
                except BlockingIOError:
                    pass  # the client's socket is full
                except OSError:  # EPIPE, ECONNRESET: the client left
                    return self._finish(CLIENT_GONE)
                else:
                    self._in_pipe -= n
                    self.sent += n
                    budget -= n
                    moved = moved or n > 0
            if not self._in_pipe and (not self.left or self._eof):
                return self._finish(DONE if not self.left else SOURCE_LOST)
            if not moved:
                # Wait for whichever side holds things up: the client while the
                # pipe has bytes for it (backpressure), else the source.
                return self._wait(_WRITE if self._in_pipe else _READ)
        self._wait(0)
        self._loop.call_soon(self._pump)

    def _wait(self, what: int) -> None:
        if what == self._waiting:
            return  # already registered: no system call
        if self._waiting == _READ:
            self._loop.remove_reader(self._src)
        elif self._waiting == _WRITE:
            self._loop.remove_writer(self._dst)
        if what == _READ:
            self._loop.add_reader(self._src, self._pump)
        elif what == _WRITE:
            self._loop.add_writer(self._dst, self._pump)
        self._waiting = what

    def _finish(self, outcome: str) -> None:
        if self._done.done():
            return
        self.outcome = outcome
        self._close()
        self._done.set_result(None)

    def _close(self) -> None:
        if self._fds:
            self._wait(0)  # unregister before closing: epoll keys on the open file, not the number
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
