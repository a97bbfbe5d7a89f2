"""An httpx transport for loopback upstreams: pooled HTTP/1.1 over asyncio and httptools.

``LoopbackTransport`` plugs into httpx like its own transports do: requests
and responses are ``httpx.Request``/``httpx.Response``, failures are httpx's
exception classes, bodies stream both ways. The wire work is done by an
asyncio ``Protocol`` per connection and the C parser uvicorn already uses,
so a small request costs a few system calls and no per-call task groups,
socket polls or pure-Python parsing (docs/benchmarks.md has the numbers).

Guarantees:
- The request target goes out byte for byte: the ``target`` extension
  (httpcore's name for it) or else ``request.url.raw_path``.
- Response bodies stream with at most ``http_connection.HIGH_WATER`` bytes buffered
  per connection: reading from the socket pauses until the consumer catches up.
- A connection goes back to the pool only after a complete, keep-alive
  response was read to its end; anything else closes it.
- Connecting honours the request's ``timeout`` extension (``connect`` and
  ``pool``); waiting for a response has no deadline of its own — callers
  bound it with a cancel scope, and cancelling at any await closes the
  connection and never leaks a pool slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx

from loopback_asgi._transports.http_connection import Connection

__all__ = [
    "LoopbackTransport",
    "body_complete",
    "byte_headers",
    "fixed_length",
    "hand_over",
    "raw_headers",
    "whole_body",
]


def byte_headers(raw: list[tuple[bytes, bytes]]) -> httpx.Headers:
    """``httpx.Headers`` of byte pairs (the public constructor: building it by hand saved under 1 µs a response)."""
    return httpx.Headers(raw)


class LoopbackTransport(httpx.AsyncBaseTransport):
    """Pooled keep-alive HTTP/1.1 to plain-``http`` upstreams.

    ``max_connections`` caps connections in use at once, one limit for all
    upstreams together (waiting past the ``pool`` timeout raises
    ``httpx.PoolTimeout``). At most ``max_idle`` idle connections per upstream
    are kept, each for ``keepalive_expiry`` seconds: one timer closes those that
    expired, so a burst's leftovers are gone ``keepalive_expiry`` seconds after
    it (plus ``REAP_SLACK``) whether or not another request comes. Each idle
    connection also holds a socket, and maybe a thread, in the upstream's server.
    Proxy environment variables are never read.
    """

    # Expired connections are closed together, up to this long after the first expires: one timer per spell.
    REAP_SLACK = 0.5

    def __init__(
        self, *, max_connections: int | None = None, max_idle: int = 32, keepalive_expiry: float = 4.0
    ) -> None:
        self.max_idle = max_idle
        # Below uvicorn's 5 s keep-alive, the usual upstream's: a connection is rarely reused as its server closes it.
        self.keepalive_expiry = keepalive_expiry
        self._slots = asyncio.Semaphore(max_connections) if max_connections else None
        self._idle: dict[tuple[str, int], list[tuple[float, Connection]]] = {}
        self._open: set[Connection] = set()
        self._reaper: asyncio.TimerHandle | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"Only plain http upstreams are supported, not {url.scheme!r}.")
        key = (url.host, url.port or 80)
        timeouts = request.extensions.get("timeout") or {}
        await self._acquire(timeouts.get("pool"))
        try:
            return await self._send(request, key, timeouts.get("connect"))
        except BaseException:
            self._release_slot()
            raise

    async def _send(self, request: httpx.Request, key: tuple[str, int], connect: float | None) -> httpx.Response:
        # A bodiless request that meets a kept-alive connection the upstream
        # had just closed is sent again, once, on a fresh one.
        replayable = isinstance(request.stream, httpx.ByteStream)
        conn = self._checkout(key)
        reused = conn is not None
        while True:
            if conn is None:
                conn = await self._connect(key, connect)
            try:
                await conn.send_request(request)
                await conn.wait_headers()
            except httpx.LocalProtocolError:
                conn.close()  # the request itself is bad: another connection would not help
                raise
            except httpx.TransportError:
                conn.close()
                if reused and replayable and not conn.received_any:
                    conn, reused = None, False
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            break
        return httpx.Response(
            conn.status,
            headers=byte_headers(conn.headers),
            stream=_Body(self, conn, key),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": conn.reason},
        )

    async def _acquire(self, timeout: float | None) -> None:
        if self._slots is None:
            return
        if not self._slots.locked():
            await self._slots.acquire()  # free: returns at once
            return
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout)
        except asyncio.TimeoutError:
            raise httpx.PoolTimeout("No connection slot became free in time.") from None

    def _release_slot(self) -> None:
        if self._slots is not None:
            self._slots.release()

    async def _connect(self, key: tuple[str, int], timeout: float | None) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(Connection, *key), timeout)
        except asyncio.TimeoutError:
            raise httpx.ConnectTimeout(f"Connecting to {key[0]}:{key[1]} timed out.") from None
        except OSError as exc:
            raise httpx.ConnectError(f"Connecting to {key[0]}:{key[1]} failed: {exc.strerror or exc}.") from exc
        self._open.add(conn)
        conn.on_lost = self._open.discard
        return conn

    def _checkout(self, key: tuple[str, int]) -> Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            expires, conn = idle.pop()
            if conn.usable and expires > now:
                return conn
            conn.close()
        return None

    def _checkin(self, key: tuple[str, int], conn: Connection) -> None:
        self._release_slot()
        if not conn.reusable:
            conn.close()
            return
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self.max_idle:
            idle.pop(0)[1].close()
        conn.idle()
        idle.append((time.monotonic() + self.keepalive_expiry, conn))
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().call_later(self.keepalive_expiry + self.REAP_SLACK, self._reap)

    def _reap(self) -> None:
        """Close the idle connections that expired; come back when the next one will have."""
        self._reaper = None
        now = time.monotonic()
        soonest: float | None = None
        for key, idle in list(self._idle.items()):
            # Oldest first: each list is in check-in order.
            while idle and (idle[0][0] <= now or not idle[0][1].usable):
                idle.pop(0)[1].close()
            if idle:
                soonest = idle[0][0] if soonest is None else min(soonest, idle[0][0])
            else:
                del self._idle[key]
        if soonest is not None:
            self._reaper = asyncio.get_running_loop().call_later(soonest - now + self.REAP_SLACK, self._reap)

    @property
    def idle_connections(self) -> int:
        """How many idle connections the pool holds now."""
        return sum(len(idle) for idle in self._idle.values())

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for conn in list(self._open):
            conn.close()
        self._idle.clear()


class _Body(httpx.AsyncByteStream):
    """A response body: streams from its connection, returns it to the pool once read to the end."""

    def __init__(self, pool: LoopbackTransport, conn: Connection, key: tuple[str, int]) -> None:
        self._pool, self._conn, self._key = pool, conn, key
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._conn.body():
            yield chunk

    async def aclose(self) -> None:
        # No await: this runs in ``finally`` blocks of cancelled tasks.
        if not self._done:
            self._done = True
            self._pool._checkin(self._key, self._conn)


def _connection(response: httpx.Response) -> Connection | None:
    """The connection a :class:`LoopbackTransport` response reads from; None for any other response."""
    stream = response.stream
    return stream._conn if type(stream) is _Body else None


def body_complete(response: httpx.Response) -> bool:
    """Whether ``response``'s body has been read to its end with nothing more to come.

    True only for responses of a :class:`LoopbackTransport`; a relay uses it
    to mark the piece it just read as the last one, saving a message.
    """
    conn = _connection(response)
    return conn is not None and conn.drained


def whole_body(response: httpx.Response) -> bytes | None:
    """For a :class:`LoopbackTransport` response whose body has all arrived, unread: all of it; else None.

    The body then counts as read to its end; the stream yields nothing more.
    """
    conn = _connection(response)
    return None if conn is None else conn.take_body()


def raw_headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    """The response's headers as received, names in their own case (``response.headers.raw`` without the copy)."""
    conn = _connection(response)
    return response.headers.raw if conn is None else conn.headers


def hand_over(response: httpx.Response) -> tuple[object, bytes, int] | None:
    """For a :class:`LoopbackTransport` response: :meth:`Connection.hand_over` of its connection, else None."""
    conn = _connection(response)
    return None if conn is None else conn.hand_over()


def fixed_length(response: httpx.Response) -> int:
    """The body's Content-Length for a :class:`LoopbackTransport` response that has one (not chunked), else -1."""
    conn = _connection(response)
    length = None if conn is None else conn.body_length
    return -1 if length is None else length
