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
from typing import Any

from jupyter_server_proxy.unixsock import UnixResolver
from tornado import httputil, web
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, WebSocketHandler, websocket_connect

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
    _pump: asyncio.Future[None] | None = None

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
            request_timeout=3600,
        )
        for attempt in range(3):
            try:
                await self.sidecar.ensure()
                self._ws = await websocket_connect(
                    request,
                    resolver=UnixResolver(socket_path=self.sidecar.socket_path),
                    max_message_size=MAX_MESSAGE,
                    subprotocols=offered or None,
                )
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

    async def open(self, *args: Any) -> None:
        self.set_nodelay(True)
        self._pump = asyncio.ensure_future(self._pump_upstream())

    async def _pump_upstream(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            while (message := await ws.read_message()) is not None:
                self._record_activity()  # type: ignore[attr-defined]
                await self.write_message(message, binary=isinstance(message, bytes))
        except WebSocketClosedError:
            pass
        finally:
            if self.ws_connection is not None and not self.ws_connection.is_closing():
                self.close(_close_code(ws.close_code), ws.close_reason)

    async def on_message(self, message: str | bytes) -> None:
        self._record_activity()  # type: ignore[attr-defined]
        if self._ws is None:
            return
        try:
            await self._ws.write_message(message, binary=isinstance(message, bytes))
        except WebSocketClosedError:
            pass

    def on_close(self) -> None:
        if self._ws is not None and self._ws.protocol is not None:
            code = _close_code(getattr(self, "close_code", None))
            self._ws.close(code, getattr(self, "close_reason", None) if code else None)
