"""The WebSocket half of the adapter's relay (see :mod:`loopback_asgi.jupyter.handler` for HTTP).

Guarantees:

- The sidecar (and through it the upstream) is connected before the browser's
  handshake is answered: the browser gets the subprotocol the upstream chose,
  or the sidecar's own refusal (404, 403, 502 …) instead of 101-then-close.
- Messages up to ``MAX_MESSAGE`` (1 GiB) both ways, text and binary kept;
  each is awaited on the other side before the next is read (backpressure).
- Close codes and reasons are relayed both ways; ``1005`` (no status) stays
  no status and ``1006``/``1015``, which must not be sent, become ``1011``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from tornado import web
from tornado.websocket import WebSocketClosedError, WebSocketHandler, WebSocketProtocol, WebSocketProtocol13
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from loopback_asgi import fastpaths
from loopback_asgi._transports.frames import close_code
from loopback_asgi._transports.websocket import Closed, Upstream, open_upstream
from loopback_asgi.jupyter.process import Sidecar, SidecarUnavailable
from loopback_asgi.jupyter.ws_pipe import BrowserPipe

__all__ = ["MAX_MESSAGE", "PIPE_ENABLED", "WebSocketRelayMixin"]

PIPE_ENABLED = fastpaths.enabled("adapter_ws_pipe")
"""Whether the browser leg may become a byte pipe (tornado's private state; see :mod:`loopback_asgi.fastpaths`)."""

MAX_MESSAGE = 2**30


class WebSocketRelayMixin(WebSocketHandler):
    """WebSocket relay to the sidecar; the HTTP side (:class:`~.handler.RelayMixin`) supplies the hooks."""

    sidecar: Sidecar
    _ws: Upstream | None = None
    _pump: asyncio.Future[None] | None = None
    _closing: asyncio.Future[None] | None = None
    _activity_at = -1e9

    def _cross_site(self) -> bool:
        raise NotImplementedError

    def _upstream_path(self) -> str:
        raise NotImplementedError

    def _upstream_headers(self, *, websocket: bool = False) -> list[tuple[str, str]]:
        raise NotImplementedError

    def _fail(self, status: int, message: str) -> None:
        raise NotImplementedError

    @property
    def max_message_size(self) -> int:
        return MAX_MESSAGE

    async def _open_websocket(self) -> None:
        if self._cross_site():
            raise web.HTTPError(403, "Cross-site WebSocket refused.")
        offered = [p.strip() for p in self.request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        path, headers = self._upstream_path(), self._upstream_headers(websocket=True)
        for attempt in range(3):
            try:
                await self.sidecar.ensure()
                self._ws = await open_upstream(
                    "ws://jupyter-loopback" + path,
                    headers,
                    subprotocols=offered,
                    max_size=MAX_MESSAGE,
                    max_queue=2,  # then reading the sidecar pauses until the browser took one (backpressure)
                    ping_interval=None,  # a unix socket to a child process: nothing to keep alive
                    timeout=self.sidecar.restart_wait,
                    unix_path=self.sidecar.socket_path,
                )
                return
            except InvalidStatus as exc:  # the sidecar refused the handshake: pass its answer on
                response = exc.response
                text = response.body.decode("utf-8", "replace").strip() if response.body else ""
                return self._fail(response.status_code, text or response.reason_phrase or "WebSocket refused.")
            except (ValueError, InvalidURI) as exc:
                return self._fail(400, str(exc))
            except (OSError, asyncio.TimeoutError, SidecarUnavailable, InvalidHandshake) as exc:
                error: Exception = exc
            if attempt == 2:
                return self._fail(502, f"The loopback sidecar is not reachable: {error}.")

    def get_websocket_protocol(self) -> WebSocketProtocol | None:
        protocol = super().get_websocket_protocol()
        if PIPE_ENABLED and type(protocol) is WebSocketProtocol13:
            protocol.__class__ = _PipeOr13  # same state; only the frame loop may differ
        return protocol

    def _pipe(self, protocol: WebSocketProtocol13) -> BrowserPipe | None:
        """A byte pipe for this session, if both legs are at a clean point (:mod:`~loopback_asgi.jupyter.ws_pipe`)."""
        if (
            self._ws is None
            or getattr(protocol, "_compressor", None) is not None
            or getattr(protocol, "_decompressor", None) is not None
            or protocol.ping_interval  # the admin wants tornado's pings on the browser leg: keep them
            or protocol.stream is None
        ):
            return None
        detached = self._ws.detach()
        if detached is None:
            return None
        if self._pump is not None:
            self._pump.cancel()  # the pipe moves the sidecar's bytes from now on
        transport, rest = detached
        return BrowserPipe(protocol.stream, transport, rest, max_size=MAX_MESSAGE, activity=self._activity)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        chosen = self._ws.subprotocol if self._ws is not None else None
        return chosen if chosen in subprotocols else None

    def open(self, *args: Any) -> None:
        self.set_nodelay(True)
        if self._ws is not None:
            # Messages the sidecar sent before now waited in its queue.
            self._pump = asyncio.ensure_future(self._from_sidecar(self._ws))

    async def _from_sidecar(self, ws: Upstream) -> None:
        """Each sidecar message to the browser, the next read only once the last is sent; then its close."""
        try:
            while True:
                message = await ws.recv()
                self._activity()
                conn = self.ws_connection
                sent = _send(conn, message)
                # Wait for the browser only while tornado still holds unsent bytes.
                if sent is not None and conn is not None and conn.stream is not None and conn.stream.writing():
                    await sent
        except Closed:
            pass
        # The sidecar's close frame, else the one sent here on a protocol error
        # (1002, 1007, 1009); a sidecar that just dropped is 1011.
        frame = ws.close_rcvd or ws.protocol.close_sent
        code, reason = (close_code(frame.code), frame.reason) if frame is not None else (1011, "")
        if self.ws_connection is not None and not self.ws_connection.is_closing():
            self.close(code, reason if code is not None else None)

    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        self._activity()
        if self._ws is None:
            return None
        try:
            return self._ws.send_nowait(message)  # awaited by tornado before the next read: backpressure
        except Closed:
            return None  # the sidecar's close reaches the browser through _from_sidecar

    def _activity(self) -> None:
        # Jupyter's idle culling works in minutes: one record a second is plenty.
        now = time.monotonic()
        if now - self._activity_at >= 1.0:
            self._activity_at = now
            self._record_activity()  # type: ignore[attr-defined]

    def on_close(self) -> None:
        if self._ws is not None and self._closing is None:
            code = close_code(getattr(self, "close_code", None))
            reason = (getattr(self, "close_reason", None) or "") if code is not None else ""
            self._closing = asyncio.ensure_future(self._ws.close(code, reason))


def _send(conn: WebSocketProtocol | None, message: str | bytes) -> Awaitable[None] | None:
    """Send one message to the browser on ``conn``: an awaitable that resolves once
    it is written (backpressure), ``None`` if ``conn`` is closed (the close path
    handles that)."""
    if conn is None or conn.is_closing():
        return None
    try:
        return _settled(conn.write_message(message, binary=isinstance(message, bytes)))
    except WebSocketClosedError:
        return None


def _settled(future: Awaitable[None] | None) -> Awaitable[None] | None:
    """Resolves when ``future`` does, whatever the outcome: a peer that went
    away is handled by the close path, not by an exception in tornado's loop."""
    if future is None:
        return None
    fut = asyncio.ensure_future(future)
    out: asyncio.Future[None] = fut.get_loop().create_future()

    def done(f: asyncio.Future[None]) -> None:
        if not f.cancelled():
            f.exception()
        if not out.done():
            out.set_result(None)

    fut.add_done_callback(done)
    return out


class _PipeOr13(WebSocketProtocol13):
    """tornado's protocol, whose frame loop becomes a :class:`.BrowserPipe` when the session allows."""

    async def _receive_frame_loop(self) -> None:
        handler = self.handler
        pipe = handler._pipe(self) if isinstance(handler, WebSocketRelayMixin) else None
        if pipe is None:
            return await super()._receive_frame_loop()
        try:
            await pipe.run()
        finally:
            self.client_terminated = self.server_terminated = True
            handler.on_ws_connection_close(None, None)
