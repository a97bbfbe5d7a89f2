"""The HTTP relay: one request from the client to a loopback upstream and back.

Bodies stream both ways with bounded memory and no size cap: the request body
goes upstream as it arrives from ``receive()``, the response body goes back
chunk by chunk from the transport's raw byte stream, so ``Content-Encoding``
stays intact.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Collection

import httpx

from loopback_asgi._transports.http import (
    LoopbackTransport,
    body_complete,
    byte_headers,
    fixed_length,
    hand_over,
    raw_headers,
    whole_body,
)
from loopback_asgi.sidecar.errors import send_error
from loopback_asgi.sidecar.extensions import SPLICE
from loopback_asgi.sidecar.headers import request_headers, response_headers
from loopback_asgi.sidecar.target import Target
from loopback_asgi.types import Receive, Scope, Send

__all__ = ["HTTPRelay"]

log = logging.getLogger("loopback_asgi")

# How long after the request body a relay starts watching for its client
# leaving. Most exchanges are over sooner and never pay for the watcher task;
# a client that leaves a slow one releases the upstream at most this late.
WATCH_AFTER = 0.02
# Bodies of at least this many bytes go kernel-side where the server offers it.
SPLICE_MIN = 1024 * 1024


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _framing(scope: Scope) -> tuple[bool, bool]:
    """(has a body, is chunked) for the client's request."""
    length, chunked = b"", False
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = value.strip()
        elif name == b"transfer-encoding":
            chunked = True
    return chunked or length not in (b"", b"0"), chunked


class _Upload(httpx.AsyncByteStream):
    """The client's request body, as it arrives."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self.chunks = chunks

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.chunks


_NO_BODY = httpx.ByteStream(b"")


@functools.lru_cache(maxsize=4096)
def _origin(host: str, port: int) -> httpx.URL:
    # The request target travels in the ``target`` extension, so the URL
    # (parsed and validated once per upstream) is shared by its requests.
    return httpx.URL(scheme="http", host=host, port=port, path="/")


class _Guard:
    """Ends one relay early, for one reason: the header deadline passed or the client left.

    The relay's :class:`_Watch` looks at it every ``WATCH_AFTER`` seconds
    once armed: the first look past ``WATCH_AFTER`` starts a small task
    watching for the client leaving, a look past the deadline fires it. So
    the common short exchange costs no timer and no task. Either event
    cancels the relay's task, which closes the upstream connection wherever
    it was waiting.
    """

    __slots__ = (
        "armed",
        "closed",
        "deadline",
        "headers_in",
        "reason",
        "receive",
        "started",
        "task",
        "watch",
        "watcher",
    )

    def __init__(self, watch: _Watch) -> None:
        self.watch = watch
        self.task = asyncio.current_task(watch.loop)
        self.reason: str | None = None
        self.closed = False
        self.started = False
        self.headers_in = False
        self.armed = 0.0
        self.deadline = 0.0
        self.watcher: asyncio.Task[None] | None = None

    def arm(self, receive: Receive, header_timeout: float) -> None:
        """The request body is read: start the header deadline and, soon, the watch for the client leaving."""
        self.receive = receive
        self.armed = now = self.watch.loop.time()
        self.deadline = now + header_timeout
        self.watch.add(self)

    def look(self, now: float) -> bool:
        """One look from the watch; False once nothing is left to watch for."""
        if self.closed:
            return False
        if self.watcher is None and now - self.armed >= WATCH_AFTER:
            self.watcher = self.watch.loop.create_task(_wait_disconnect(self.receive))
            self.watcher.add_done_callback(self._left)
        if not self.headers_in and now >= self.deadline:
            self._fire("timeout")
        return self.watcher is None or not self.headers_in

    def headers_arrived(self) -> None:
        self.headers_in = True

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
        self.watch.guards.discard(self)
        if self.watcher is not None:
            self.watcher.cancel()


class _Watch:
    """The relay's armed guards, looked at every ``WATCH_AFTER`` seconds by one timer that runs while there are any.

    A deadline therefore fires up to ``WATCH_AFTER`` late, and the watch for
    a client leaving starts between one and two ``WATCH_AFTER`` after the
    request body; one timer for all relays costs less than one per relay.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.guards: set[_Guard] = set()
        self.timer: asyncio.TimerHandle | None = None

    def add(self, guard: _Guard) -> None:
        self.guards.add(guard)
        if self.timer is None:
            self.timer = self.loop.call_later(WATCH_AFTER, self._tick)

    def _tick(self) -> None:
        loop = self.loop
        now = loop.time()
        done = [guard for guard in self.guards if not guard.look(now)]
        self.guards.difference_update(done)
        self.timer = loop.call_later(WATCH_AFTER, self._tick) if self.guards else None

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.guards.clear()


def _where(target: Target) -> str:
    return f"namespace {target.namespace.name!r} port {target.port}"


@functools.lru_cache(maxsize=64)
def _timeouts(connect: float) -> dict[str, float | None]:
    # Shared by the requests of namespaces with this connect timeout; the transport only reads it.
    return {"connect": connect, "read": None, "write": None, "pool": connect}


class HTTPRelay:
    """Relays HTTP requests over one pooled keep-alive :class:`LoopbackTransport`.

    Requests go to the transport directly: the ``AsyncClient`` layer above it
    (auth, redirects, a cookie jar) has nothing to do in a relay. The
    transport reads no proxy environment variables, so a user's
    ``HTTP_PROXY`` cannot capture a 127.0.0.1 request. Call :meth:`aclose`
    when done (the app's lifespan does).
    """

    def __init__(self, *, max_connections: int | None = None, secrets: Collection[bytes] = ()) -> None:
        self.transport = LoopbackTransport(max_connections=max_connections)
        self.secrets = frozenset(secrets)
        self.spliced = 0  # response bodies sent kernel-side (see protocols/http.py)
        self._watch: _Watch | None = None

    async def aclose(self) -> None:
        if self._watch is not None:
            self._watch.close()
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
        watch = self._watch
        if watch is None or not watch.loop.is_running():
            # Looked up only when the relay meets a new loop (tests run several in turn): each
            # look-up costs a system call (getpid) on Python 3.11.
            watch = self._watch = _Watch(asyncio.get_running_loop())
        guard = _Guard(watch)
        stream: httpx.AsyncByteStream = _NO_BODY
        has_body, chunked = _framing(scope)
        if has_body:

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

            stream = _Upload(stream_body())
            if chunked:
                # The body is re-framed upstream; a Content-Length sent along
                # with chunking is not trusted.
                headers = [h for h in headers if h[0] != b"content-length"]
                headers.append((b"transfer-encoding", b"chunked"))
        else:
            guard.arm(receive, ns.header_timeout)

        # ``stream=`` (not ``content=``): the headers go as built above,
        # with no defaults added and no second pass over them.
        request = httpx.Request(
            scope["method"],
            _origin(ns.host, target.port),
            headers=byte_headers(headers),
            stream=stream,
            extensions={
                "target": target.target_bytes,
                "timeout": _timeouts(ns.connect_timeout),
            },
        )
        try:
            await self._exchange(scope, send, request, target, guard)
        except asyncio.CancelledError:
            # A client that left needs no answer; a missed deadline gets 504
            # unless the response had started (then its stream is cut).
            reason = guard.caught()
            if reason is None:
                raise
            if reason == "timeout" and not guard.started:
                await send_error(scope, send, 504, f"The server on {_where(target)} sent no response in time.")
        finally:
            guard.close()

    async def _exchange(self, scope: Scope, send: Send, request: httpx.Request, target: Target, guard: _Guard) -> None:
        """Send ``request`` upstream and relay its answer; never raises for upstream or client failures."""
        try:
            response = await self.transport.handle_async_request(request)
        except ClientGone:
            return
        except httpx.ConnectTimeout:
            return await send_error(scope, send, 504, f"Connecting to {_where(target)} timed out.")
        except httpx.PoolTimeout:
            return await send_error(scope, send, 503, f"Too many connections to {_where(target)}; try again.")
        except httpx.ConnectError:
            return await send_error(scope, send, 502, f"Nothing is listening on {_where(target)}.")
        except httpx.HTTPError as exc:
            log.info("jupyter-loopback: upstream %s failed before its headers: %r", _where(target), exc)
            return await send_error(scope, send, 502, f"The server on {_where(target)} closed the connection.")
        finally:
            guard.headers_arrived()
        try:
            guard.started = True
            status = response.status_code
            headers = response_headers(raw_headers(response), target, status)
            extensions = scope.get("extensions") or {}
            body = whole_body(response)
            if body is not None:
                # The whole body came with the headers (the common small response).
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
            await send({"type": "http.response.start", "status": status, "headers": headers})
            if status >= 200 and (splice := extensions.get(SPLICE)) is not None:
                if fixed_length(response) >= SPLICE_MIN:
                    # A big fixed-length body goes kernel-side when the server can (protocols/http.py).
                    delivered = await splice["send_rest"](functools.partial(hand_over, response))
                    if delivered is not None:
                        self.spliced += 1
                        if delivered:
                            await send({"type": "http.response.body", "body": b"", "more_body": False})
                        else:
                            log.info("jupyter-loopback: upstream %s or its client stopped mid-body", _where(target))
                        return
            final = False
            # The transport's own byte stream, as ``aiter_raw()`` would give
            # it (Content-Encoding intact), without its extra generator layer.
            stream = response.stream
            assert isinstance(stream, httpx.AsyncByteStream)
            async for chunk in stream:
                # A piece known to be the last is sent as final: one message,
                # not two, for the common small response.
                final = body_complete(response)
                await send({"type": "http.response.body", "body": chunk, "more_body": not final})
            if not final:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except httpx.HTTPError as exc:
            # Cut the client's stream: returning without the final body
            # message makes the server close the connection.
            log.info("jupyter-loopback: upstream %s dropped mid-body: %r", _where(target), exc)
        finally:
            # The stream's own close (what ``response.aclose()`` calls, minus
            # its bookkeeping): the connection goes back to the pool or is dropped.
            await response.stream.aclose()  # type: ignore[union-attr]


class ClientGone(Exception):
    """The client went away while its request body was being sent upstream."""
