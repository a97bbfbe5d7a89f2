"""The HTTP relay: one request from the client to a loopback upstream and back.

Bodies stream both ways with bounded memory and no size cap: the request body
goes upstream as it arrives from ``receive()``, the response body goes back
chunk by chunk from ``aiter_raw()``, so ``Content-Encoding`` stays intact.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Collection

import anyio
import httpcore
import httpx

from .errors import send_error
from .headers import request_headers, response_headers
from .target import Target
from .types import Receive, Scope, Send

__all__ = ["HTTPRelay"]

log = logging.getLogger("loopback_asgi")

# httpcore reads a response body 64 KiB at a time, and every read is a trip
# through anyio, httpcore and h11. asyncio and uvloop hand over up to 256 KiB
# per socket read; taking that whole cuts the relay's CPU per GB by about 30%
# (benchmarks/, docs/benchmarks.md). Memory per response stays bounded by it.
READ_SIZE = 256 * 1024


def _widen_reads() -> None:
    # READ_NUM_BYTES is httpcore's class-level knob for the read size.
    cls = httpcore.AsyncHTTP11Connection
    if getattr(cls, "READ_NUM_BYTES", READ_SIZE) < READ_SIZE:
        cls.READ_NUM_BYTES = READ_SIZE


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


class HTTPRelay:
    """Relays HTTP requests over one pooled keep-alive ``httpx.AsyncHTTPTransport``.

    Requests go to the transport directly: the ``AsyncClient`` layer above it
    (auth, redirects, a cookie jar) has nothing to do in a relay and costs
    about a fifth of its CPU per request. A bare transport reads no proxy
    environment variables, so a user's ``HTTP_PROXY`` cannot capture a
    127.0.0.1 request. Call :meth:`aclose` when done (the app's lifespan does).
    """

    def __init__(self, *, max_connections: int | None = None, secrets: Collection[bytes] = ()) -> None:
        _widen_reads()
        self.transport = httpx.AsyncHTTPTransport(
            trust_env=False,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections or 256,
                keepalive_expiry=30,
            ),
        )
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
        # The header timeout starts once the request body is sent; an upload
        # has no deadline of its own (as nginx's proxy_read_timeout).
        scope_ = anyio.CancelScope(deadline=math.inf)
        # Set once the request body is read: from then on ``receive()`` only
        # reports the client leaving, which the watcher below waits for.
        body_read = anyio.Event()
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
                scope_.deadline = anyio.current_time() + ns.header_timeout
                body_read.set()

            body = stream_body()
        else:
            scope_.deadline = anyio.current_time() + ns.header_timeout
            body_read.set()

        request = httpx.Request(
            scope["method"],
            httpx.URL(scheme="http", host=ns.host, port=target.port, raw_path=target.target.encode("latin-1")),
            headers=headers,
            content=body,
            extensions={
                "timeout": {"connect": ns.connect_timeout, "read": None, "write": None, "pool": ns.connect_timeout}
            },
        )
        where = f"namespace {ns.name!r} port {target.port}"
        # One watcher per request, from the end of the request body to the end
        # of the response: a client that leaves while the upstream is still
        # thinking, or stalls mid-body, releases the upstream connection at once.
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                await body_read.wait()
                await _wait_disconnect(receive)
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            try:
                await self._exchange(scope, send, request, target, scope_, where)
            finally:
                tg.cancel_scope.cancel()

    async def _exchange(
        self, scope: Scope, send: Send, request: httpx.Request, target: Target, scope_: anyio.CancelScope, where: str
    ) -> None:
        """Send ``request`` upstream and relay its answer; never raises for upstream or client failures."""
        try:
            with scope_:
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
        if scope_.cancelled_caught:
            return await send_error(scope, send, 504, f"The server on {where} sent no response in time.")
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": response_headers(response.headers.raw, target, response.status_code),
                }
            )
            await self._pump(response, send)
        except httpx.HTTPError as exc:
            # Cut the client's stream: returning without the final body
            # message makes the server close the connection.
            log.info("jupyter-loopback: upstream %s dropped mid-body: %r", where, exc)
        finally:
            await response.aclose()

    @staticmethod
    async def _pump(response: httpx.Response, send: Send) -> None:
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class ClientGone(Exception):
    """The client went away while its request body was being sent upstream."""
