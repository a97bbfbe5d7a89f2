"""Where the bridge's work runs: never on the kernel's shell thread.

Comm messages arrive on the shell thread, which also runs the notebook's
cells. The bridge only parses them there and hands the work on: synchronous
handlers to a thread pool (so one slow handler holds one worker, not the
kernel or the other requests), coroutines and all network I/O to one asyncio
loop in a daemon thread. Replies go out from those threads: ipykernel's IOPub
socket is a ``BackgroundSocket`` whose sends are queued to the IOPub thread,
so publishing from any thread is safe and keeps each thread's order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["GRACE", "Deadlines", "Runtime"]

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
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="comm-bridge")
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

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` on a pool thread."""
        return self.pool.submit(fn, *args)

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
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.deadlines.close()


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
