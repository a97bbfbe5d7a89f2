"""The WebSocket half of the adapter's relay (see :mod:`.jupyter_relay` for HTTP).

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

from jupyter_server_proxy.unixsock import UnixResolver
from tornado import httpclient, httputil, web
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, WebSocketHandler, WebSocketProtocol

from .jupyter_sidecar import Sidecar, SidecarUnavailable

__all__ = ["MAX_MESSAGE", "WebSocketRelayMixin"]

MAX_MESSAGE = 2**30
# Close codes a peer must never send (RFC 6455 §7.4.1): relay "no status" as none.
RESERVED_CLOSE: dict[int, int | None] = {1005: None, 1006: 1011, 1015: 1011}


def _close_code(code: int | None) -> int | None:
    return RESERVED_CLOSE.get(code, code) if code is not None else None


class WebSocketRelayMixin(WebSocketHandler):
    """WebSocket relay to the sidecar; the HTTP side (:class:`.jupyter_relay.RelayMixin`) supplies the hooks."""

    sidecar: Sidecar
    _ws: WebSocketClientConnection | None = None
    _opened: asyncio.Future[None] | None = None
    _upstream_closed: tuple[int | None, str | None] | None = None
    _activity_at = -1e9

    def _cross_site(self) -> bool:
        raise NotImplementedError

    def _upstream_path(self) -> str:
        raise NotImplementedError

    def _upstream_headers(self, *, websocket: bool = False) -> httputil.HTTPHeaders:
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
        request = HTTPRequest(
            "ws://jupyter-loopback" + self._upstream_path(),
            headers=self._upstream_headers(websocket=True),
            connect_timeout=self.sidecar.restart_wait,
            request_timeout=3600,  # the handshake only; tornado drops it after the upgrade
        )
        self._opened = asyncio.get_running_loop().create_future()
        for attempt in range(3):
            try:
                await self.sidecar.ensure()
                self._ws = await _connect(self, request, offered)
                return
            except HTTPClientError as exc:
                if exc.code != 599:  # the sidecar refused the handshake: pass its answer on
                    body = exc.response.body.decode("utf-8", "replace") if exc.response else str(exc)
                    return self._fail(exc.code, body.strip() or exc.message or "WebSocket refused.")
                error: Exception = exc
            except (OSError, StreamClosedError, SidecarUnavailable) as exc:
                error = exc
            if attempt == 2:
                return self._fail(502, f"The loopback sidecar is not reachable: {error}.")

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        chosen = self._ws.selected_subprotocol if self._ws is not None else None
        return chosen if chosen in subprotocols else None

    def open(self, *args: Any) -> None:
        self.set_nodelay(True)
        if self._opened is not None and not self._opened.done():
            self._opened.set_result(None)
        if self._upstream_closed is not None:
            self.close(*self._upstream_closed)

    def _from_sidecar(self, message: str | bytes | None, conn: WebSocketClientConnection) -> Awaitable[None] | None:
        """Called by tornado for each sidecar message (``None``: closed); what it returns is awaited first."""
        if message is None:
            code = _close_code(conn.close_code)
            self._upstream_closed = (code, conn.close_reason if code else None)
            if self.ws_connection is not None and not self.ws_connection.is_closing():
                self.close(*self._upstream_closed)
            return None
        if self._opened is None or not self._opened.done():
            # A message before the browser's handshake is answered: hold the
            # sidecar (and this message) until it is.
            return self._deliver_after_open(message)
        return self._deliver(message)

    async def _deliver_after_open(self, message: str | bytes) -> None:
        assert self._opened is not None
        await self._opened
        delivered = self._deliver(message)
        if delivered is not None:
            await delivered

    def _deliver(self, message: str | bytes) -> Awaitable[None] | None:
        self._activity()
        return _send(self.ws_connection, message)

    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        self._activity()
        return _send(self._ws.protocol if self._ws is not None else None, message)

    def _activity(self) -> None:
        # Jupyter's idle culling works in minutes: one record a second is plenty.
        now = time.monotonic()
        if now - self._activity_at >= 1.0:
            self._activity_at = now
            self._record_activity()  # type: ignore[attr-defined]

    def on_close(self) -> None:
        if self._opened is not None and not self._opened.done():
            self._opened.cancel()
        if self._ws is not None and self._ws.protocol is not None:
            code = _close_code(getattr(self, "close_code", None))
            self._ws.close(code, getattr(self, "close_reason", None) if code else None)


class _SidecarConnection(WebSocketClientConnection):
    """The sidecar leg: each message goes straight to the browser, and tornado
    awaits that write before reading the next frame (backpressure, no queue)."""

    def __init__(self, relay: WebSocketRelayMixin, request: HTTPRequest, **kwargs: Any) -> None:
        self.relay = relay
        super().__init__(request, **kwargs)

    def _on_message(self, message: str | bytes | None) -> Awaitable[None] | None:
        return self.relay._from_sidecar(message, self)


async def _connect(relay: WebSocketRelayMixin, request: HTTPRequest, offered: list[str]) -> WebSocketClientConnection:
    # tornado.websocket.websocket_connect, with our connection class.
    request.headers = httputil.HTTPHeaders(request.headers)
    proxy = httpclient._RequestProxy(request, HTTPRequest._DEFAULTS)
    conn = _SidecarConnection(
        relay,
        proxy,  # type: ignore[arg-type]
        max_message_size=MAX_MESSAGE,
        subprotocols=offered or None,
        resolver=UnixResolver(socket_path=relay.sidecar.socket_path),
    )
    return await conn.connect_future


def _send(conn: WebSocketProtocol | None, message: str | bytes) -> Awaitable[None] | None:
    """Send one message on ``conn``: an awaitable while it still waits in the
    socket's write buffer (backpressure), ``None`` once the kernel has it or if
    ``conn`` is closed (the close path handles that)."""
    if conn is None or conn.is_closing():
        return None
    binary = isinstance(message, bytes)
    write_frame = getattr(conn, "_write_frame", None)
    if write_frame is None or getattr(conn, "_compressor", None) is not None:
        try:
            return _settled(conn.write_message(message, binary=binary))
        except WebSocketClosedError:
            return None
    # tornado's write_message() wraps every write in a Task; framing the
    # message here spares it, and the loop turns it costs, when the write
    # completes at once (nearly always for small messages).
    payload = message if isinstance(message, bytes) else message.encode("utf-8")
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
