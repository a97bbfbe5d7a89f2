"""The WebSocket relay: upstream first, then the client, then two pumps.

Guarantees:

- The upstream is connected before the client's handshake is answered, so a
  dead upstream refuses the handshake (502) instead of accepting then closing.
- The client is accepted with the subprotocol the *upstream* chose.
- Text and binary frames keep their type and order; each pump awaits the
  other side's send, so a slow reader slows the writer (backpressure).
- When either side closes, its close code and reason go to the other side,
  the other pump is cancelled and awaited, and both connections are closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Collection

from websockets.exceptions import InvalidHandshake, InvalidStatus

from loopback_asgi._transports.frames import close_code
from loopback_asgi._transports.pipe import Pipe
from loopback_asgi._transports.websocket import Closed, Upstream, open_upstream
from loopback_asgi.sidecar.errors import send_error
from loopback_asgi.sidecar.extensions import PIPE
from loopback_asgi.sidecar.headers import request_headers
from loopback_asgi.sidecar.target import Target
from loopback_asgi.types import Receive, Scope, Send

__all__ = ["WebSocketRelay"]

log = logging.getLogger("loopback_asgi")


def _code(code: int | None) -> int:
    # ASGI has no "no status": it is 1000 here.
    return close_code(code) or 1000


class WebSocketRelay:
    """Relays one WebSocket session between an ASGI client and a loopback upstream.

    ``max_size`` bounds one message (default 1 GiB); ``ping_interval`` keeps
    the upstream leg alive (the ASGI server keeps the client leg alive).
    ``max_connections`` caps concurrent upstream WebSockets (the admin
    policy's cap, as for HTTP): a handshake over the cap waits up to the
    namespace's connect timeout for a free slot, then is refused with 503.
    """

    def __init__(
        self,
        *,
        max_size: int | None = 2**30,
        ping_interval: float | None = 20,
        secrets: Collection[bytes] = (),
        max_connections: int | None = None,
    ) -> None:
        self.max_size = max_size
        self.ping_interval = ping_interval
        self.secrets = frozenset(secrets)
        self.slots = asyncio.Semaphore(max_connections) if max_connections else None
        # Sessions accepted so far, by how they were relayed ("pipe" or "messages").
        self.sessions: Counter[str] = Counter()

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, target: Target, *, trust_forwarded: bool = False
    ) -> None:
        if self.slots is None:
            return await self._session(scope, receive, send, target, trust_forwarded)
        ns = target.namespace
        try:
            await asyncio.wait_for(self.slots.acquire(), ns.connect_timeout)
        except asyncio.TimeoutError:
            where = f"namespace {ns.name!r} port {target.port}"
            return await send_error(scope, send, 503, f"Too many connections to {where}; try again.", websocket=True)
        try:
            await self._session(scope, receive, send, target, trust_forwarded)
        finally:
            self.slots.release()

    async def _session(self, scope: Scope, receive: Receive, send: Send, target: Target, trust_forwarded: bool) -> None:
        ns = target.namespace
        where = f"namespace {ns.name!r} port {target.port}"
        if not ns.websocket:
            return await send_error(
                scope, send, 403, f"WebSockets are disabled for namespace {ns.name!r}.", websocket=True
            )
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        headers = request_headers(
            scope["headers"],
            target,
            client=(scope.get("client") or (None,))[0],
            scheme="https" if scope.get("scheme") == "wss" else "http",
            secrets=self.secrets,
            trust_forwarded=trust_forwarded,
            websocket=True,
        )
        headers = [(k, v) for k, v in headers if k not in (b"host", b"user-agent")]
        uri = f"ws://{target.netloc}{target.target}"
        try:
            upstream = await open_upstream(
                uri,
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
                subprotocols=list(scope.get("subprotocols") or ()) or None,
                max_size=self.max_size,
                max_queue=4,
                ping_interval=self.ping_interval,
                timeout=ns.connect_timeout + ns.header_timeout,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            return await send_error(
                scope, send, 502, f"The server on {where} refused the WebSocket ({status}).", websocket=True
            )
        except TimeoutError:
            return await send_error(scope, send, 504, f"Connecting to {where} timed out.", websocket=True)
        except (OSError, InvalidHandshake):
            return await send_error(scope, send, 502, f"Nothing is accepting WebSockets on {where}.", websocket=True)
        piped = False
        try:
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
            if PIPE in scope.get("extensions", {}):
                pipe = Pipe(upstream, max_size=self.max_size)
                await send({"type": PIPE, "pipe": pipe})
                piped = pipe.attached
                if piped:
                    self.sessions["pipe"] += 1
                    try:
                        await pipe.done
                    finally:
                        pipe.end(1012)  # cancelled (the server stopping): a no-op once done
                    return
            self.sessions["messages"] += 1
            await self._relay(receive, send, upstream)
        finally:
            if not piped:
                await upstream.close()

    async def _relay(self, receive: Receive, send: Send, upstream: Upstream) -> None:
        to_upstream = asyncio.ensure_future(self._client_to_upstream(receive, upstream))
        to_client = asyncio.ensure_future(self._upstream_to_client(send, upstream))
        try:
            done, _ = await asyncio.wait({to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (to_upstream, to_client):
                task.cancel()
            await asyncio.gather(to_upstream, to_client, return_exceptions=True)
        for task in done:
            exc = task.exception()
            if exc is not None and not isinstance(exc, (Closed, OSError)):
                log.warning("jupyter-loopback: WebSocket relay failed: %r", exc)

    @staticmethod
    async def _client_to_upstream(receive: Receive, upstream: Upstream) -> None:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                await upstream.send(text if text is not None else message.get("bytes") or b"")
            elif kind == "websocket.disconnect":
                await upstream.close(_code(message.get("code")), message.get("reason") or "")
                return

    @staticmethod
    async def _upstream_to_client(send: Send, upstream: Upstream) -> None:
        try:
            while True:
                data = await upstream.recv()
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": data})
        except Closed:
            pass
        # No close frame (the connection just dropped) is reported as 1011.
        close = upstream.close_rcvd
        await send(
            {
                "type": "websocket.close",
                "code": _code(close.code) if close else 1011,
                "reason": close.reason if close else "",
            }
        )
