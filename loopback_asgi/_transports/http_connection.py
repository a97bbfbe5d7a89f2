"""One keep-alive HTTP/1.1 connection to a loopback upstream: an asyncio ``Protocol``.

The transport (``_transports/http.py``) pools these and sends one request
at a time on each: the head and body are written as :mod:`.http11` frames
them, the response is parsed by its :class:`~.http11.ResponseReader`, and
the body is handed out as an async iterator as it arrives. Reading pauses
while more than ``HIGH_WATER`` bytes wait for the consumer and resumes below
``LOW_WATER``; writing waits whenever the socket's buffer is full. Every
failure surfaces as an httpx exception.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import cast

import httpx

from loopback_asgi._transports.flow import WriteFlow
from loopback_asgi._transports.http11 import ResponseReader, body_frame, request_head

__all__ = ["HIGH_WATER", "LOW_WATER", "Connection"]

HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024
# Small body pieces that queued up together (chunked framing, SSE) go out as
# one piece; large ones go out as they came, without a copy.
_JOIN = 64 * 1024


class Connection(WriteFlow, asyncio.Protocol):
    """A keep-alive connection to one upstream; one request at a time.

    Each response is parsed by a fresh :class:`ResponseReader`
    (``response``); the connection adds what a socket it owns needs: the
    body handed out as it arrives, reading paused above ``HIGH_WATER``, and
    the connection's end turned into the body's end or an error.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.on_lost: Callable[[Connection], object] | None = None
        self.closed = False
        self.busy = False
        self._waiter: asyncio.Future[None] | None = None
        self.response = ResponseReader()
        self._start(head_only=False)

    def _start(self, *, head_only: bool) -> None:
        # One parser for the connection's life: a keep-alive connection is
        # reused only after a complete response, where the parser carries on.
        self.response.reset(head_only=head_only)
        self.received_any = False
        self._error: httpx.TransportError | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._handed_over = False

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def reason(self) -> bytes:
        return self.response.reason

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return self.response.headers

    @property
    def usable(self) -> bool:
        """Idle and still connected: fit for the next request."""
        return not (self.closed or self.busy)

    @property
    def drained(self) -> bool:
        """The response's body is complete and all of it was handed out."""
        return self.response.complete and not self._chunks

    @property
    def reusable(self) -> bool:
        """The response was read to its end and both sides keep the connection."""
        response = self.response
        return (
            response.complete
            and response.keep_alive
            and self._error is None
            and not (self.closed or response.head_only or response.until_eof)
        )

    @property
    def body_length(self) -> int | None:
        """The response body's Content-Length, if it has one and is not chunked."""
        return self.response.length

    def take_body(self) -> bytes | None:
        """The whole body at once, if it is complete and none of it was handed out; else None (nothing changed)."""
        if not self.response.complete or self._error is not None or self.response.body_read != self._buffered:
            return None
        chunks = self._chunks
        body = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        return body

    def hand_over(self) -> tuple[object, bytes, int] | None:
        """Stop reading a fixed-length body here, for a kernel-side copy (``protocols/http.py``).

        Returns the socket (to read the rest from), the body bytes read but
        not handed out yet, and how many bytes of the body are still to come;
        or None (nothing changed) unless the body has a Content-Length and is
        under way. The connection is not reused afterwards.
        """
        transport = self.transport
        response = self.response
        if (
            transport is None
            or self.closed
            or response.length is None
            or not response.head
            or response.complete
            or self._error is not None
            or self._handed_over
        ):
            return None
        sock = transport.get_extra_info("socket")
        if sock is None:
            return None
        transport.pause_reading()
        self._paused = self._handed_over = True
        rest = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return sock, rest, response.length - response.body_read

    # -- the request side -------------------------------------------------

    async def send_request(self, request: httpx.Request) -> None:
        """Write the request head and stream its body; raises ``httpx.WriteError`` if the upstream went away."""
        self.busy = True
        self._start(head_only=request.method == "HEAD")
        head, chunked = request_head(request)
        stream = request.stream
        if isinstance(stream, httpx.ByteStream):
            # A body already in memory goes out with the head in one write.
            return await self._write(b"".join([head, *body_frame(b"".join(stream), chunked, last=True)]))
        await self._write(head)
        assert isinstance(stream, httpx.AsyncByteStream)
        async for chunk in stream:
            if chunk:
                await self._write(b"".join(body_frame(chunk, chunked, last=False)))
        if chunked:
            await self._write(b"0\r\n\r\n")

    async def _write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            if self.response.head:
                return  # the upstream answered and left; its answer stands
            raise httpx.WriteError("The upstream closed the connection while the request was being sent.")
        self.transport.write(data)
        await self.wait_writable()

    # -- the response side ------------------------------------------------

    async def wait_headers(self) -> None:
        """Return once the response's status and headers are in; raises what went wrong before that."""
        while not self.response.head:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def body(self) -> AsyncIterator[bytes]:
        """The response body as it arrives; raises ``httpx.RemoteProtocolError`` if it is cut short."""
        while True:
            if self._chunks:
                if len(self._chunks) > 1 and self._buffered <= _JOIN:
                    chunk = b"".join(self._chunks)
                    self._chunks.clear()
                else:
                    chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered <= LOW_WATER and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                yield chunk
            elif self.response.complete:
                return
            elif self._error is not None:
                raise self._error
            else:
                await self._wait()

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: httpx.TransportError) -> None:
        if self._error is None:
            self._error = error
        self._wake()
        self.close()

    def idle(self) -> None:
        self.busy = False
        if self._paused and self.transport is not None:
            # A body can complete as it fills the buffer and be closed unread:
            # the next response must not wait on a socket left paused.
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        """Drop the connection at once (no flush: nothing pending is worth waiting for)."""
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    # -- asyncio.Protocol ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have asyncio.Transport's methods but not its class.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            self.close()  # an idle connection has nothing to say
            return
        self.received_any = True
        response = self.response
        try:
            response.feed(data)
        except httpx.RemoteProtocolError as exc:
            self._fail(exc)
        pieces = response.pieces
        if pieces:
            for piece in pieces:
                self._buffered += len(piece)
            self._chunks.extend(pieces)
            pieces.clear()
            if self._buffered >= HIGH_WATER and not self._paused and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()
        if response.head:
            self._wake()

    def eof_received(self) -> bool:
        self._ended()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._ended()
        self.writer_lost()
        if self.on_lost is not None:
            self.on_lost(self)

    def _ended(self) -> None:
        if self.busy and self._error is None:
            try:
                self.response.eof()
            except httpx.RemoteProtocolError as exc:
                self._error = exc
        self.closed = True
        self._wake()
