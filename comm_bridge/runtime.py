"""Where the bridge's work runs: never on the kernel's shell thread.

Comm messages arrive on the shell thread, which also runs the notebook's
cells. The bridge only parses them there and hands the work on: synchronous
handlers to a thread pool (so one slow handler holds one worker, not the
kernel or the other requests), coroutines and all network I/O to one asyncio
loop in a daemon thread. Replies go out from those threads: ipykernel's IOPub
socket is a ``BackgroundSocket`` whose sends are queued to the IOPub thread,
so publishing from any thread is safe and keeps each thread's order.

The handoff to a worker is the one cost every request pays over a handler
run inline, so :class:`Workers` keeps it to a lock release: an idle worker
waits on its own lock and the shell thread releases it (measured here: 10 µs
of CPU against 50 µs for ``ThreadPoolExecutor.submit`` plus
``concurrent.futures.wait``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["GRACE", "Deadlines", "Runtime", "Workers"]

log = logging.getLogger("comm_bridge")

T = TypeVar("T")

WORKERS = 32
GRACE = 0.001
"""How long the shell thread waits for a sync handler it just handed to the pool."""


def _new_loop() -> asyncio.AbstractEventLoop:
    try:  # uvloop wakes faster across threads; the standard loop works the same
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is absent on Windows and PyPy
        return asyncio.new_event_loop()


class Runtime:
    """One event loop thread plus a pool of ``workers`` threads, started at construction.

    ``close()`` stops the loop after cancelling its tasks and shuts the pool
    down without waiting for running handlers (they are daemon threads' work
    whose replies are discarded).
    """

    def __init__(self, workers: int = WORKERS) -> None:
        self.workers = Workers(workers)
        self.deadlines = Deadlines()
        self.loop = _new_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), name="comm-bridge-loop", daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    def call(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop thread, in call order."""
        self.loop.call_soon_threadsafe(fn, *args)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Run a coroutine on the loop; the returned future is thread-safe."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def submit(self, fn: Callable[..., object], *args: Any) -> threading.Lock:
        """Run ``fn(*args)`` on a worker thread; the returned lock is released once it returned."""
        return self.workers.run(fn, *args)

    def close(self) -> None:
        if self.loop.is_closed():
            return

        async def stop() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.thread.is_alive():
            try:
                self.spawn(stop()).result(10)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self.thread.join(10)
        self.loop.close()
        self.workers.close()
        self.deadlines.close()


Job = tuple[Callable[..., object], tuple[Any, ...], threading.Lock]


class Workers:
    """Up to ``size`` daemon threads running jobs; an idle thread is woken directly, the latest idle first.

    :meth:`run` returns at once with a lock that is released when the job
    has returned, so a caller may wait a moment for a fast job with
    ``acquire(timeout=…)``. With every thread busy, jobs wait in order. A job
    must not raise (one that does is logged). :meth:`close` lets running
    jobs finish, drops waiting ones and ends idle threads.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._backlog: deque[Job] = deque()
        self._started = 0
        self._closed = False

    def run(self, fn: Callable[..., object], *args: Any) -> threading.Lock:
        done = threading.Lock()
        done.acquire()
        job = (fn, args, done)
        with self._lock:
            if self._closed:
                raise RuntimeError("the workers are closed")
            if self._idle:
                worker = self._idle.pop()
                worker.job = job
                worker.wake.release()
                return done
            if self._started >= self.size:
                self._backlog.append(job)
                return done
            self._started += 1
        _Worker(self, job)
        return done

    def _next(self, worker: _Worker, done: threading.Lock) -> Job | None:
        # ``done`` is released as late as possible: the caller it wakes then
        # finds the GIL free instead of waking again for it.
        with self._lock:
            if self._closed or self._backlog:
                done.release()
                return None if self._closed else self._backlog.popleft()
            worker.job = None
            self._idle.append(worker)
        done.release()
        worker.wake.acquire()
        return worker.job

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._backlog.clear()
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.wake.release()  # with no job: the thread ends


class _Worker:
    def __init__(self, workers: Workers, job: Job) -> None:
        self.workers = workers
        self.job: Job | None = job
        self.wake = threading.Lock()
        self.wake.acquire()
        threading.Thread(target=self._run, name="comm-bridge-worker", daemon=True).start()

    def _run(self) -> None:
        job = self.job
        while job is not None:
            fn, args, done = job
            try:
                fn(*args)
            except BaseException:  # a job's bug must not end the thread
                log.exception("comm_bridge: a worker's job raised")
            job = self.workers._next(self, done)


class Deadlines:
    """Calls each ``fn`` registered with :meth:`add` once its delay has passed, on one daemon thread.

    Registering wakes the thread only when the new deadline is the earliest,
    which with equal timeouts is never, so the request path pays no thread
    handoff for its timeout. ``fn`` must be cheap and must not raise; an
    entry whose work finished first simply finds nothing to do.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], object]]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def add(self, delay: float, fn: Callable[[], object]) -> None:
        entry = (time.monotonic() + delay, next(self._order), fn)
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="comm-bridge-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0] is entry:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                while not self._closed and (not self._heap or self._heap[0][0] > now):
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
                    now = time.monotonic()
                if self._closed:
                    return
                due = []
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
            for fn in due:
                fn()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()
