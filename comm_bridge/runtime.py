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
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["Runtime"]

T = TypeVar("T")

WORKERS = 32


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
