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
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketHandler, WebSocketProtocol, WebSocketProtocol13

from loopback_asgi.jupyter.process import Sidecar, SidecarUnavailable
from loopback_asgi.jupyter.ws_client import Refused, SidecarWebSocket, connect
from loopback_asgi.jupyter.ws_pipe import BrowserPipe

__all__ = ["MAX_MESSAGE", "WebSocketRelayMixin"]

MAX_MESSAGE = 2**30
# Close codes a peer must never send (RFC 6455 §7.4.1): relay "no status" as none.
RESERVED_CLOSE: dict[int, int | None] = {1005: None, 1006: 1011, 1015: 1011}


def _close_code(code: int | None) -> int | None:
    return RESERVED_CLOSE.get(code, code) if code is not None else None


class WebSocketRelayMixin(WebSocketHandler):
    """WebSocket relay to the sidecar; the HTTP side (:class:`~.handler.RelayMixin`) supplies the hooks."""

    sidecar: Sidecar
    _ws: SidecarWebSocket | None = None
    _opened: asyncio.Future[None] | None = None
    _upstream_closed: tuple[int | None, str | None] | None = None
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
        self._opened = asyncio.get_running_loop().create_future()
        for attempt in range(3):
            try:
                await self.sidecar.ensure()
                self._ws = await connect(
                    self.sidecar.socket_path,
                    path,
                    headers,
                    offered,
                    self._from_sidecar,
                    timeout=self.sidecar.restart_wait,
                    max_message=MAX_MESSAGE,
                )
                return
            except Refused as exc:  # the sidecar refused the handshake: pass its answer on
                return self._fail(exc.code, exc.body)
            except ValueError as exc:
                return self._fail(400, str(exc))
            except (OSError, asyncio.TimeoutError, SidecarUnavailable) as exc:
                error: Exception = exc
            if attempt == 2:
                return self._fail(502, f"The loopback sidecar is not reachable: {error}.")

    def get_websocket_protocol(self) -> WebSocketProtocol | None:
        protocol = super().get_websocket_protocol()
        if type(protocol) is WebSocketProtocol13:
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
        transport, rest = detached
        return BrowserPipe(protocol.stream, transport, rest, max_size=MAX_MESSAGE, activity=self._activity)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        chosen = self._ws.selected_subprotocol if self._ws is not None else None
        return chosen if chosen in subprotocols else None

    def open(self, *args: Any) -> None:
        self.set_nodelay(True)
        if self._opened is not None and not self._opened.done():
            self._opened.set_result(None)
        if self._upstream_closed is not None:
            self.close(*self._upstream_closed)

    def _from_sidecar(self, ws: SidecarWebSocket, data: bytes | None, binary: bool) -> Awaitable[None] | None:
        """Called for each sidecar message (``None``: closed); what it returns is awaited first."""
        if data is None:
            code = _close_code(ws.close_code)
            self._upstream_closed = (code, ws.close_reason if code else None)
            if self.ws_connection is not None and not self.ws_connection.is_closing():
                self.close(*self._upstream_closed)
            return None
        if self._opened is None or not self._opened.done():
            # A message before the browser's handshake is answered: hold the
            # sidecar (and this message) until it is.
            return self._deliver_after_open(data, binary)
        self._activity()
        return _send(self.ws_connection, data, binary)

    async def _deliver_after_open(self, data: bytes, binary: bool) -> None:
        assert self._opened is not None
        await self._opened
        delivered = _send(self.ws_connection, data, binary)
        if delivered is not None:
            await delivered

    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        self._activity()
        if self._ws is None:
            return None
        if isinstance(message, bytes):
            return self._ws.send(message, True)
        return self._ws.send(message.encode("utf-8"), False)

    def _activity(self) -> None:
        # Jupyter's idle culling works in minutes: one record a second is plenty.
        now = time.monotonic()
        if now - self._activity_at >= 1.0:
            self._activity_at = now
            self._record_activity()  # type: ignore[attr-defined]

    def on_close(self) -> None:
        if self._opened is not None and not self._opened.done():
            self._opened.cancel()
        if self._ws is not None:
            code = _close_code(getattr(self, "close_code", None))
            self._ws.close(code, getattr(self, "close_reason", None) if code else None)


def _send(conn: WebSocketProtocol | None, payload: bytes, binary: bool) -> Awaitable[None] | None:
    """Send one message to the browser on ``conn``: an awaitable while it still
    waits in the socket's write buffer (backpressure), ``None`` once the kernel
    has it or if ``conn`` is closed (the close path handles that)."""
    if conn is None or conn.is_closing():
        return None
    write_frame = getattr(conn, "_write_frame", None)
    if write_frame is None or getattr(conn, "_compressor", None) is not None:
        try:
            message = payload if binary else payload.decode("utf-8")
            return _settled(conn.write_message(message, binary=binary))
        except WebSocketClosedError:
            return None
    # tornado's write_message() wraps every write in a Task; framing the
    # message here spares it, and the loop turns it costs, when the write
    # completes at once (nearly always for small messages).
    try:
        written: asyncio.Future[None] = write_frame(True, 0x2 if binary else 0x1, payload)
    except StreamClosedError:
        return None
    if written.done():
        if not written.cancelled():
            written.exception()  # a closed stream is the close path's business
        return None
    return _settled(written)


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
