"""The sidecar process behind jupyter-server: launch, supervision, connections.

One :class:`Sidecar` per jupyter-server. It runs ``python -m loopback_asgi.cli
serve --unix-socket <dir>/sock`` under simpervisor (jupyter-server-proxy's
supervisor) on a socket in a fresh 0700 directory, so no other local user can
reach it. Guarantees:

- :meth:`Sidecar.connect` returns a connected stream or raises
  :class:`SidecarUnavailable` within ``restart_wait`` seconds: a sidecar that
  died (any exit code, ``SIGKILL`` included) is started again on demand. One
  that cannot start is abandoned after that wait, not restarted in a loop.
- The sidecar dies with the server: it is stopped at interpreter exit and,
  on Linux, gets ``SIGTERM`` from the kernel if the server is killed outright.
- Idle keep-alive connections are reused only while younger than
  ``idle_seconds`` (below uvicorn's 5 s keep-alive) and not readable
  (a readable idle socket means the peer closed it); a timer closes them once
  they expire, so a burst's leftovers go whether or not another request comes.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from simpervisor import KilledProcessError, SupervisedProcess  # type: ignore[import-untyped]
from tornado.iostream import IOStream, StreamClosedError

__all__ = ["Sidecar", "SidecarUnavailable"]

log = logging.getLogger("loopback_asgi")

PR_SET_PDEATHSIG = 1
# How often giving up on a sidecar that cannot start tries to stop simpervisor's restarts (10 ms apart).
ABANDON_TRIES = 200
# Expired idle streams are closed together, up to this long after the first expires: one timer per spell.
REAP_SLACK = 0.5


class SidecarUnavailable(Exception):
    """The sidecar could not be reached in time; the message says why."""


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask Linux to SIGTERM the
    # sidecar when the server process goes away, even by SIGKILL.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Sidecar:
    """A supervised sidecar on a private unix socket, with a small connection pool."""

    def __init__(
        self,
        command: Callable[[str], list[str]],
        env: Callable[[], dict[str, str]],
        *,
        restart_wait: float = 5.0,
        idle_seconds: float = 4.0,
        max_idle: int = 32,
    ) -> None:
        self.directory = tempfile.mkdtemp(prefix="jupyter-loopback-")  # 0700, ours
        self.socket_path = os.path.join(self.directory, "sock")
        self._command = command
        self._env = env
        self.restart_wait = restart_wait
        self.idle_seconds = idle_seconds
        self.max_idle = max_idle
        self.proc: SupervisedProcess | None = None
        self._lock = asyncio.Lock()
        self._idle: list[tuple[IOStream, float]] = []
        self._reaper: asyncio.TimerHandle | None = None
        self._stopping: set[asyncio.Task[Any]] = set()
        self.launches = 0
        atexit.register(self.stop)

    @property
    def pid(self) -> int | None:
        """The sidecar's process id while it runs."""
        if self.proc is None or not self.proc.running:
            return None
        pid: int | None = self.proc.pid
        return pid

    async def ensure(self) -> None:
        """Start the sidecar unless it is running; return once it accepts connections.

        Raises :class:`SidecarUnavailable` after ``restart_wait`` seconds.
        """
        async with self._lock:
            if self.proc is None:
                kwargs: dict[str, Any] = {"env": {**os.environ, **self._env()}}
                if sys.platform.startswith("linux"):
                    kwargs["preexec_fn"] = _die_with_parent
                self.proc = SupervisedProcess(
                    "jupyter-loopback", *self._command(self.socket_path), always_restart=True, log=log, **kwargs
                )
            # simpervisor installs SIGINT/SIGTERM handlers that sys.exit(0),
            # which would skip jupyter-server's own shutdown (kernels); put
            # the server's handlers back. The sidecar is stopped at exit.
            if not self.proc.running:  # first start, or it exited (simpervisor restarts only on failure)
                saved = _signal_handlers()
                await self.proc.start()
                _restore_signal_handlers(saved)
                self.launches += 1
        try:
            await self._wait_connectable(time.monotonic() + self.restart_wait)
        except SidecarUnavailable:
            # A sidecar that cannot start would be restarted by simpervisor
            # in a tight loop: give up on it; the next request tries afresh.
            await _abandon(self._detach(running_only=False))
            raise

    async def _wait_connectable(self, deadline: float) -> None:
        delay = 0.005
        while True:
            try:
                stream = await self._open()
            except (OSError, StreamClosedError) as exc:
                if time.monotonic() + delay > deadline:
                    raise SidecarUnavailable(f"The loopback sidecar did not start: {exc}.") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 0.05)
            else:
                stream.close()  # only a probe: connect() opens the stream it uses
                return

    async def _open(self) -> IOStream:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stream = IOStream(sock)
        try:
            await stream.connect(self.socket_path)
        except BaseException:
            stream.close()
            raise
        return stream

    async def connect(self, *, reuse: bool = True) -> IOStream:
        """A stream to the sidecar: an idle pooled one if ``reuse``, else a new one."""
        now = time.monotonic()
        self._close_expired(now)
        while reuse and self._idle:
            stream, since = self._idle.pop()
            if now - since < self.idle_seconds and not stream.closed() and not _readable(stream):
                return stream
            stream.close()
        deadline = now + self.restart_wait
        while True:
            try:
                return await self._open()
            except (OSError, StreamClosedError) as exc:
                # Dead or restarting: (re)start it and wait, bounded by the deadline.
                if time.monotonic() > deadline:
                    raise SidecarUnavailable(f"The loopback sidecar is not reachable: {exc}.") from exc
                await self.ensure()

    def release(self, stream: IOStream) -> None:
        """Give back a stream whose last exchange completed cleanly."""
        if stream.closed() or len(self._idle) >= self.max_idle:
            stream.close()
            return
        self._idle.append((stream, time.monotonic()))
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().call_later(self.idle_seconds + REAP_SLACK, self._reap)

    def _close_expired(self, now: float) -> None:
        # Oldest first: the list is in release order.
        while self._idle and now - self._idle[0][1] >= self.idle_seconds:
            self._idle.pop(0)[0].close()

    def _reap(self) -> None:
        """Close the idle streams that expired; come back when the next one will have."""
        now = time.monotonic()
        self._close_expired(now)
        self._reaper = None
        if self._idle:
            wait = self._idle[0][1] + self.idle_seconds - now + REAP_SLACK
            self._reaper = asyncio.get_running_loop().call_later(wait, self._reap)

    def _detach(self, *, running_only: bool = True) -> Any:
        """Forget the sidecar (and the idle streams to it); its ``SupervisedProcess``, or None.

        With ``running_only`` (the default), None too when no process of it runs at this moment.
        """
        for stream, _ in self._idle:
            stream.close()
        self._idle.clear()
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        proc, self.proc = self.proc, None
        if proc is None or (running_only and (not proc.running or not proc.pid)):
            return None
        return proc

    def restart(self) -> None:
        """Ask a running sidecar to exit; the next request starts a fresh one."""
        proc = self._detach()
        if proc is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: no watcher runs to restart it either
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            return
        # simpervisor's own stop (SIGTERM, then reaped): its watcher does not restart it.
        task = loop.create_task(proc.terminate())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def stop(self) -> None:
        """Stop the sidecar (SIGTERM, then SIGKILL after 3 s) and remove its directory. Idempotent.

        Called at exit, when no loop runs simpervisor's watcher any more.
        """
        proc = self._detach()
        if proc is not None:
            _terminate(proc.pid)
        shutil.rmtree(self.directory, ignore_errors=True)


async def _abandon(proc: Any) -> None:
    """End simpervisor's restarts of ``proc`` (a ``SupervisedProcess``, or None) with its own ``kill``.

    A process that exits at once is restarted at once, and between an exit
    and the next start ``kill`` finds no process to signal (and ends
    nothing): it is tried again until it lands, ``ABANDON_TRIES`` times at most.
    """
    for _ in range(ABANDON_TRIES if proc is not None else 0):
        try:
            await proc.kill()
            return
        except KilledProcessError:
            return  # stopped already
        except ProcessLookupError:
            await asyncio.sleep(0.01)
    if proc is not None:
        log.warning("jupyter-loopback: the sidecar that failed to start could not be stopped")


def _readable(stream: IOStream) -> bool:
    try:
        ready, _, _ = select.select([stream.socket], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(ready)


def _terminate(pid: int) -> None:
    # Wait without reaping: asyncio's child watcher owns the reaping, and a
    # second waitpid() makes it log "Unknown child process".
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if _gone(pid):
                return
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
    except OSError:  # no /proc: ask the kernel instead
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False


def _signal_handlers() -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(saved: dict[int, Any]) -> None:
    for signum, handler in saved.items():
        if handler is not None and signal.getsignal(signum) is not handler:
            signal.signal(signum, handler)
