"""The HTTP relay: one request from the client to a loopback upstream and back.

Bodies stream both ways with bounded memory and no size cap: the request body
goes upstream as it arrives from ``receive()``, the response body goes back
chunk by chunk from ``aiter_raw()``, so ``Content-Encoding`` stays intact.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Collection

import httpx

from .errors import send_error
from .headers import request_headers, response_headers
from .target import Target
from .transport import LoopbackTransport
from .types import Receive, Scope, Send

__all__ = ["HTTPRelay"]

log = logging.getLogger("loopback_asgi")


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False


@functools.lru_cache(maxsize=4096)
def _origin(host: str, port: int) -> httpx.URL:
    # The request target travels in the ``target`` extension, so the URL
    # (parsed and validated once per upstream) is shared by its requests.
    return httpx.URL(scheme="http", host=host, port=port, path="/")


class _Guard:
    """Ends one relay early, for one reason: the header deadline passed or the client left.

    The deadline is a timer and the client is watched by one small task from
    the end of the request body on; either cancels the relay's task, which
    closes the upstream connection wherever it was waiting.
    """

    __slots__ = ("closed", "reason", "started", "task", "timer", "watcher")

    def __init__(self) -> None:
        self.task = asyncio.current_task()
        self.reason: str | None = None
        self.closed = False
        self.started = False
        self.timer: asyncio.TimerHandle | None = None
        self.watcher: asyncio.Task[None] | None = None

    def arm(self, receive: Receive, header_timeout: float) -> None:
        """The request body is read: start the header deadline and watch for the client leaving."""
        self.timer = asyncio.get_running_loop().call_later(header_timeout, self._fire, "timeout")
        self.watcher = asyncio.ensure_future(_wait_disconnect(receive))
        self.watcher.add_done_callback(self._left)

    def headers_arrived(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _left(self, watcher: asyncio.Task[None]) -> None:
        if not watcher.cancelled() and watcher.exception() is None:
            self._fire("gone")

    def _fire(self, reason: str) -> None:
        if self.reason is None and not self.closed and self.task is not None:
            self.reason = reason
            self.task.cancel()

    def caught(self) -> str | None:
        """Called on ``CancelledError``: our reason (the cancellation is then consumed) or None (re-raise it)."""
        if self.reason is not None and self.task is not None and hasattr(self.task, "uncancel"):
            self.task.uncancel()
        return self.reason

    def close(self) -> None:
        """No await: runs in ``finally`` whatever happened."""
        self.closed = True
        self.headers_arrived()
        if self.watcher is not None:
            self.watcher.cancel()


class HTTPRelay:
    """Relays HTTP requests over one pooled keep-alive :class:`LoopbackTransport`.

    Requests go to the transport directly: the ``AsyncClient`` layer above it
    (auth, redirects, a cookie jar) has nothing to do in a relay. The
    transport reads no proxy environment variables, so a user's
    ``HTTP_PROXY`` cannot capture a 127.0.0.1 request. Call :meth:`aclose`
    when done (the app's lifespan does).
    """

    def __init__(self, *, max_connections: int | None = None, secrets: Collection[bytes] = ()) -> None:
        self.transport = LoopbackTransport(max_connections=max_connections, keepalive_expiry=30)
        self.secrets = frozenset(secrets)

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, target: Target, *, trust_forwarded: bool = False
    ) -> None:
        """Relay one request. Guarantees the upstream response is closed on every path."""
        ns = target.namespace
        headers = request_headers(
            scope["headers"],
            target,
            client=(scope.get("client") or (None,))[0],
            scheme=scope.get("scheme", "http"),
            secrets=self.secrets,
            trust_forwarded=trust_forwarded,
        )
        # The header deadline starts once the request body is sent; an upload
        # has no deadline of its own (as nginx's proxy_read_timeout). From
        # then on ``receive()`` only reports the client leaving.
        guard = _Guard()
        body: AsyncIterator[bytes] | None = None
        if _has_body(scope):

            async def stream_body() -> AsyncIterator[bytes]:
                more = True
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientGone
                    more = message.get("more_body", False)
                    if message.get("body"):
                        yield message["body"]
                guard.arm(receive, ns.header_timeout)

            body = stream_body()
        else:
            guard.arm(receive, ns.header_timeout)

        request = httpx.Request(
            scope["method"],
            _origin(ns.host, target.port),
            headers=headers,
            content=body,
            extensions={
                "target": target.target.encode("latin-1"),
                "timeout": {"connect": ns.connect_timeout, "read": None, "write": None, "pool": ns.connect_timeout},
            },
        )
        where = f"namespace {ns.name!r} port {target.port}"
        try:
            await self._exchange(scope, send, request, target, guard, where)
        except asyncio.CancelledError:
            # A client that left needs no answer; a missed deadline gets 504
            # unless the response had started (then its stream is cut).
            reason = guard.caught()
            if reason is None:
                raise
            if reason == "timeout" and not guard.started:
                await send_error(scope, send, 504, f"The server on {where} sent no response in time.")
        finally:
            guard.close()

    async def _exchange(
        self, scope: Scope, send: Send, request: httpx.Request, target: Target, guard: _Guard, where: str
    ) -> None:
        """Send ``request`` upstream and relay its answer; never raises for upstream or client failures."""
        try:
            response = await self.transport.handle_async_request(request)
        except ClientGone:
            return
        except httpx.ConnectTimeout:
            return await send_error(scope, send, 504, f"Connecting to {where} timed out.")
        except httpx.PoolTimeout:
            return await send_error(scope, send, 503, f"Too many connections to {where}; try again.")
        except httpx.ConnectError:
            return await send_error(scope, send, 502, f"Nothing is listening on {where}.")
        except httpx.HTTPError as exc:
            log.info("jupyter-loopback: upstream %s failed before its headers: %r", where, exc)
            return await send_error(scope, send, 502, f"The server on {where} closed the connection.")
        finally:
            guard.headers_arrived()
        try:
            guard.started = True
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": response_headers(response.headers.raw, target, response.status_code),
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except httpx.HTTPError as exc:
            # Cut the client's stream: returning without the final body
            # message makes the server close the connection.
            log.info("jupyter-loopback: upstream %s dropped mid-body: %r", where, exc)
        finally:
            await response.aclose()


class ClientGone(Exception):
    """The client went away while its request body was being sent upstream."""
