"""A WebSocket session as a byte pipe: once both handshakes are done, frames pass through unparsed.

Both legs speak the same framing (no extension is negotiated on either), a
client's frames are valid upstream as they are (masked), and the upstream's
frames are valid for the client as they are (unmasked). So after the
handshakes the sidecar copies bytes each way and only follows frame
boundaries (:class:`FrameCursor`, a few header bytes per frame, payloads
never copied). Text, binary, fragments, pings, pongs and close frames, with
their codes and reasons, reach the other side exactly as sent.

How it is switched on: the server's protocol offers the ASGI scope
extension ``"loopback.pipe"`` (:mod:`loopback_asgi.sidecar.extensions`;
under ``jupyter-loopback serve``, :class:`loopback_asgi.protocols.websocket.PipeProtocol`).
The relay, after accepting the client, sends ``{"type": "loopback.pipe",
"pipe": Pipe(...)}`` and the protocol hands its connection to the pipe if
nothing was read past the client's handshake. If either side is not at a
clean point (a frame half read, a fragmented message, an extension), nothing
changes and the relay carries on message by message. Under another ASGI
server the relay never asks.

Guarantees, as the message relay's:

- Order: bytes leave in the order they arrived, each way.
- Backpressure: a side whose outgoing buffer is full stops the other side's
  reading until it drains.
- ``max_size`` bounds a message (its frames added up): one over it closes
  both legs with 1009.
- The upstream dropping without a close frame closes the client with 1011;
  the client dropping sends the upstream 1000; the sidecar stopping sends
  both 1012. A close frame is only written at a frame boundary; mid-frame
  the connection is just closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from loopback_asgi._transports.frames import FrameCursor, client_frame, close_payload, server_frame
from loopback_asgi._transports.websocket import Upstream

__all__ = ["MAX_HANDSHAKE", "Pipe", "PipeEnd"]

# A client handshake longer than this is never piped (uvicorn refuses it anyway).
MAX_HANDSHAKE = 64 * 1024


class Pipe:
    """Joins the client's connection and the upstream's, byte for byte, until either ends."""

    def __init__(self, upstream: Upstream, *, max_size: int | None) -> None:
        self.upstream = upstream
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.attached = False
        self.client: asyncio.Transport | None = None
        self.server: asyncio.Transport | None = None
        self.up = FrameCursor(max_size)  # client -> upstream
        self.down = FrameCursor(max_size)  # upstream -> client

    def attach(self, client: asyncio.Transport) -> bool:
        """Take both connections if the upstream is at a clean point; False changes nothing."""
        detached = self.upstream.detach()
        if detached is None:
            return False
        self.server, rest = detached
        self.client = client
        self.attached = True
        self.server.set_protocol(
            PipeEnd(self.from_upstream, lambda paused: self.pause(self.client, paused), self.upstream_lost)
        )
        if rest:
            self.from_upstream(rest)
        return True

    # -- bytes -----------------------------------------------------------

    def from_client(self, data: bytes) -> None:
        self._pass(data, self.up, self.server)

    def from_upstream(self, data: bytes) -> None:
        self._pass(data, self.down, self.client)

    def _pass(self, data: bytes, cursor: FrameCursor, to: asyncio.Transport | None) -> None:
        if to is None or to.is_closing():
            return
        cut = cursor.feed(data)
        if cut is None:
            to.write(data)
            return
        if cut > 0:
            to.write(data[:cut])
        # The leg the offending frame was headed for may be mid-frame now: no close frame there.
        self.end(1009, client_ok=cut >= 0 or cursor is self.up, upstream_ok=cut >= 0 or cursor is self.down)

    # -- the end ---------------------------------------------------------

    def end(self, code: int, *, client_ok: bool = True, upstream_ok: bool = True) -> None:
        """Close both legs, with close frames of ``code`` where no close frame passed and a frame boundary allows."""
        self._close(self.client, self.down, server_frame(0x8, close_payload(code, "")), client_ok)
        self._close(self.server, self.up, client_frame(0x8, close_payload(code, "")), upstream_ok)
        self._finish()

    @staticmethod
    def _close(to: asyncio.Transport | None, cursor: FrameCursor, frame: bytes, may_write: bool) -> None:
        if to is None or to.is_closing():
            return
        if may_write and cursor.at_boundary and not cursor.close_seen:
            to.write(frame)
        to.close()  # after what is buffered

    def client_lost(self) -> None:
        self._close(self.server, self.up, client_frame(0x8, close_payload(1000, "")), True)
        self._finish()

    def upstream_lost(self) -> None:
        self._close(self.client, self.down, server_frame(0x8, close_payload(1011, "")), True)
        self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    # -- backpressure ----------------------------------------------------

    @staticmethod
    def pause(transport: asyncio.Transport | None, paused: bool) -> None:
        if transport is None or transport.is_closing():
            return
        if paused:
            transport.pause_reading()
        else:
            transport.resume_reading()


class PipeEnd(asyncio.Protocol):
    """The protocol of a connection a pipe took over: its events go to the pipe's callbacks."""

    def __init__(self, data: Callable[[bytes], None], paused: Callable[[bool], None], lost: Callable[[], None]) -> None:
        self._data = data
        self._paused = paused
        self._lost = lost

    def data_received(self, data: bytes) -> None:
        self._data(data)

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost follows

    def pause_writing(self) -> None:
        self._paused(True)

    def resume_writing(self) -> None:
        self._paused(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()
