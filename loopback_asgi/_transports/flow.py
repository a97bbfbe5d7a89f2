"""Write-side flow control shared by the upstream connections' asyncio protocols.

asyncio tells a protocol when its transport's buffer is above the high-water
mark (``pause_writing``) and back below the low-water mark
(``resume_writing``); :class:`WriteFlow` turns that into an awaitable, so a
sender waits only while the socket's buffer is full and costs no coroutine
otherwise.
"""

from __future__ import annotations

import asyncio

__all__ = ["WriteFlow"]


class WriteFlow:
    """Write-side flow control for a protocol: :meth:`wait_writable` returns once the socket's buffer has room.

    asyncio calls ``pause_writing``/``resume_writing``; the protocol calls
    :meth:`writer_lost` from ``connection_lost``, after which nothing waits.
    """

    _loop: asyncio.AbstractEventLoop
    _writable = True
    _drain: asyncio.Future[None] | None = None

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def writer_lost(self) -> None:
        self.resume_writing()  # no more pauses: the caller's next write finds the connection gone

    async def wait_writable(self) -> None:
        if self._writable:
            return
        self._drain = self._loop.create_future()
        try:
            await self._drain
        finally:
            self._drain = None
