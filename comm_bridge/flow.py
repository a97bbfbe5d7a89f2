"""Flow control and batching for the streams the bridge carries (loop thread only).

A :class:`Session` is one fetch or WebSocket: its ``inbox`` holds what the
page sent (body chunks, frames, a close), its ``window`` the credit the page
granted for what the kernel sends back. :func:`drain` turns a producer (an
HTTP response body) into batches, so a fast producer fills ``CHUNK``-sized
messages and a slow one is forwarded as soon as it yields.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from .protocol import ACK_BYTES, WINDOW, WINDOW_MESSAGES

__all__ = ["Session", "Window", "drain"]

T = TypeVar("T")

# Items read ahead of the page; with CHUNK-sized batches this bounds memory.
READ_AHEAD = 16
# How long a batch may wait to fill while the page is behind: each message
# costs the same on every hop whatever its size, so bulk data goes in big ones.
LINGER = 0.005


class Window:
    """Credit for one stream towards the page: bytes and messages not yet acknowledged."""

    def __init__(self) -> None:
        self.bytes = 0
        self.messages = 0
        self._moved = asyncio.Event()
        self.on_release: Callable[[], None] | None = None
        """Called after the page acknowledged something, for a sender that does not wait in :meth:`reserve`."""

    @property
    def full(self) -> bool:
        """Whether the page is a whole window behind."""
        return self.bytes >= WINDOW or self.messages >= WINDOW_MESSAGES

    def take(self, size: int) -> None:
        """Count ``size`` bytes in one message as in flight without waiting; the sender checks :attr:`full`."""
        self.bytes += size
        self.messages += 1

    async def reserve(self, size: int) -> None:
        """Wait until the page has room, then count ``size`` bytes in one message as in flight.

        A message of up to half the window waits until it fits, so in flight
        stays within ``WINDOW`` (a batch may run a little past ``CHUNK``); the
        page acknowledges every ``ACK_BYTES``, so one of up to ``WINDOW -
        ACK_BYTES`` always fits in the end. A larger one (a whole WebSocket message) waits only for the window
        to be under ``WINDOW``.
        """
        while self.messages >= WINDOW_MESSAGES or (
            self.bytes + size > WINDOW if size <= WINDOW - ACK_BYTES else self.bytes >= WINDOW
        ):
            self._moved.clear()
            await self._moved.wait()
        self.bytes += size
        self.messages += 1

    def release(self, size: int, messages: int) -> None:
        self.bytes = max(0, self.bytes - size)
        self.messages = max(0, self.messages - messages)
        self._moved.set()
        if self.on_release is not None:
            self.on_release()


class Session:
    """One stream's state: what the page sent, the credit it gave, the task serving it."""

    def __init__(self, id: int) -> None:
        self.id = id
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.window = Window()
        self.task: asyncio.Task[None] | None = None


class _End:
    pass


END = _End()


async def drain(
    source: AsyncIterator[T],
    size: Callable[[T], int],
    flush: Callable[[list[T], bool], Awaitable[None]],
    limit: int,
    busy: Callable[[], bool] = lambda: False,
    settle: bool = False,
) -> None:
    """Read ``source`` ahead and call ``flush(batch, last)`` with batches of up to about ``limit``.

    A batch is what was already read when the previous flush returned, so a
    trickling source streams item by item. While ``busy()`` (the page is
    behind, say) a batch also waits up to ``LINGER`` seconds for more, so
    bulk transfers travel in few large messages; with ``settle`` it lets the
    reader run once before flushing, so the end of a small HTTP response
    rides with its body. ``flush(…, True)`` comes
    exactly once, last, possibly with an empty batch. An error of ``source``
    is raised here after the items before it were flushed; cancelling
    ``drain`` cancels and awaits the reader.
    """
    queue: asyncio.Queue[T | _End | BaseException] = asyncio.Queue(READ_AHEAD)
    loop = asyncio.get_running_loop()

    async def read() -> None:
        try:
            async for item in source:
                await queue.put(item)
        except Exception as exc:
            await queue.put(exc)
            return
        await queue.put(END)

    reader = asyncio.ensure_future(read())
    try:
        while True:
            item = await queue.get()
            batch: list[T] = []
            total = 0
            deadline = loop.time() + LINGER if busy() else None
            while not isinstance(item, (_End, BaseException)):
                batch.append(item)
                total += size(item)
                if total >= limit:
                    break
                if queue.empty() and settle:
                    await asyncio.sleep(0)
                if queue.empty() and deadline is not None and deadline > loop.time():
                    try:
                        item = await asyncio.wait_for(queue.get(), deadline - loop.time())
                    except asyncio.TimeoutError:
                        break
                    continue
                if queue.empty():
                    break
                item = queue.get_nowait()
            if isinstance(item, BaseException):
                if batch:
                    await flush(batch, False)
                raise item
            last = isinstance(item, _End)
            await flush(batch, last)
            if last:
                return
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
