"""The adapter's WebSocket leg as a byte pipe: browser stream ↔ sidecar socket, frames unparsed.

Once the browser's handshake is answered and the sidecar's leg is at a frame
boundary (:meth:`.Upstream.detach`), the two legs speak the same
framing: the browser's frames are masked client frames, valid for the
sidecar as sent, and the sidecar's are unmasked server frames, valid for the
browser as sent (no extension is negotiated on either leg). The sidecar
pipes them on the same way (``_transports/pipe.py``), so a message crosses the
chain with no parsing at all. Only frame boundaries are followed
(:class:`.FrameCursor`) for the size limit and for a close frame of the
adapter's own where one is due.

Guarantees, as the message relay's:

- Order each way; backpressure: the sidecar's socket is not read while the
  browser's stream has unsent bytes, and the browser's stream is not read
  while the sidecar's socket buffer is over its limit.
- A message over ``max_size`` closes both legs with 1009.
- The sidecar dropping without a close frame closes the browser with 1011;
  the browser dropping sends the sidecar a close frame with no status. A
  close frame is only written at a frame boundary; mid-frame the connection
  is just closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tornado.iostream import IOStream, StreamClosedError

from loopback_asgi._transports.frames import FrameCursor, client_frame, close_payload, server_frame
from loopback_asgi._transports.pipe import PipeEnd

__all__ = ["BrowserPipe"]

READ = 256 * 1024


class BrowserPipe:
    """Bytes both ways between the browser's tornado stream and the sidecar's asyncio transport."""

    def __init__(
        self,
        stream: IOStream,
        sidecar: asyncio.Transport,
        rest: bytes,
        *,
        max_size: int | None,
        activity: Callable[[], None],
    ) -> None:
        self.stream = stream
        self.sidecar = sidecar
        self.activity = activity
        self.up = FrameCursor(max_size)  # browser -> sidecar
        self.down = FrameCursor(max_size)  # sidecar -> browser
        self._rest = rest
        self._loop = asyncio.get_running_loop()
        self._drained: asyncio.Future[None] | None = None
        self._last_write: asyncio.Future[None] | None = None

    async def run(self) -> None:
        """Relay until either side ends; returns with both closed (or closing)."""
        self.sidecar.set_protocol(PipeEnd(self.from_sidecar, self._sidecar_paused, self.sidecar_lost))
        self.sidecar.set_write_buffer_limits(high=READ)
        if self._rest:
            self.from_sidecar(self._rest)
        try:
            while not self.stream.closed():
                data = await self.stream.read_bytes(READ, partial=True)
                self.activity()
                if self.sidecar.is_closing():
                    break
                cut = self.up.feed(data)
                if cut is not None:
                    if cut > 0:
                        self.sidecar.write(data[:cut])
                    return self._too_big(upstream_ok=cut >= 0)
                self.sidecar.write(data)
                if self._drained is not None:
                    await self._drained
        except StreamClosedError:
            pass
        # The browser is gone (or the sidecar was and closed it).
        if not self.sidecar.is_closing():
            if self.up.at_boundary and not self.up.close_seen:
                self.sidecar.write(client_frame(0x8, b""))  # no status: the browser just left
            self.sidecar.close()

    # -- the sidecar's side ------------------------------------------------

    def from_sidecar(self, data: bytes) -> None:
        if self.stream.closed():
            return
        self.activity()
        cut = self.down.feed(data)
        if cut is not None:
            if cut > 0:
                self._write(data[:cut])
            return self._too_big(browser_ok=cut >= 0)
        self._write(data)

    def _write(self, data: bytes) -> None:
        try:
            written = self.stream.write(data)
        except StreamClosedError:
            return
        self._last_write = written
        if not written.done():
            # The browser is slower than the sidecar: stop reading it until this is out.
            self.sidecar.pause_reading()
            written.add_done_callback(self._written)
        elif not written.cancelled():
            written.exception()  # retrieved: a browser that left is the read loop's business

    def _written(self, written: asyncio.Future[None]) -> None:
        if not written.cancelled():
            written.exception()  # a browser that left is the read loop's business
        if not self.sidecar.is_closing():
            self.sidecar.resume_reading()

    def sidecar_lost(self) -> None:
        if not self.stream.closed():
            if self.down.at_boundary and not self.down.close_seen:
                self._write(server_frame(0x8, close_payload(1011, "")))
            self._close_stream_after_writes()
        self.sidecar_drained()

    def _sidecar_paused(self, paused: bool) -> None:
        if not paused:
            self.sidecar_drained()
        elif self._drained is None:
            self._drained = self._loop.create_future()

    def sidecar_drained(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- the end -------------------------------------------------------------

    def _close_stream_after_writes(self) -> None:
        last = self._last_write
        if last is None or last.done():
            self.stream.close()
        else:
            last.add_done_callback(lambda _: self.stream.close())

    def _too_big(self, *, browser_ok: bool = True, upstream_ok: bool = True) -> None:
        code = close_payload(1009, "")
        if not self.stream.closed():
            if browser_ok and self.down.at_boundary and not self.down.close_seen:
                self._write(server_frame(0x8, code))
            self._close_stream_after_writes()
        if not self.sidecar.is_closing():
            if upstream_ok and self.up.at_boundary and not self.up.close_seen:
                self.sidecar.write(client_frame(0x8, code))
            self.sidecar.close()
