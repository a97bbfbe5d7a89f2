"""One HTTP/1.1 client connection: an asyncio ``Protocol`` fed to httptools' response parser.

The transport (``_transports/http.py``) sends one request at a time on a
``Connection`` and reads its response: headers first, then the body as an
async iterator. Responses are parsed by :class:`ResponseReader`, which the
Jupyter adapter also uses on the bytes it reads through tornado. Reading
pauses while more than ``HIGH_WATER`` bytes wait for the consumer and
resumes below ``LOW_WATER``; writing waits whenever the socket's buffer is
full. Every failure surfaces as an httpx exception.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import cast

import httptools
import httpx

__all__ = ["HIGH_WATER", "LOW_WATER", "Connection", "ResponseReader", "WriteFlow"]

HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024
# Small body pieces that queued up together (chunked framing, SSE) go out as
# one piece; large ones go out as they came, without a copy.
_JOIN = 64 * 1024


# The lengths of the names "content-length" and "transfer-encoding": only headers this long can frame a body.
_FRAMING_LENGTHS = frozenset({14, 17})


def _chunked(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the response's last transfer coding is chunked (else its body ends with the connection)."""
    codings = [v for n, v in headers if n.lower() == b"transfer-encoding"]
    return bool(codings) and codings[-1].rsplit(b",", 1)[-1].strip().lower() == b"chunked"


class WriteFlow:
    """Write-side flow control for a protocol: :meth:`wait_writable` returns once the socket's buffer has room.

    asyncio calls ``pause_writing``/``resume_writing``; the protocol calls
    :meth:`writer_lost` from ``connection_lost``, after which nothing waits.
    """

    _loop: asyncio.AbstractEventLoop
    _writable = True
    _drain: asyncio.Future[None] | None = None

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def writer_lost(self) -> None:
        self.resume_writing()  # no more pauses: the caller's next write finds the connection gone

    async def wait_writable(self) -> None:
        if self._writable:
            return
        self._drain = self._loop.create_future()
        try:
            await self._drain
        finally:
            self._drain = None


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
        self._start(head_only=False)

    def _start(self, *, head_only: bool) -> None:
        self.response = ResponseReader(head_only=head_only)
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
        target = request.extensions.get("target") or request.url.raw_path
        if b" " in target or b"\r" in target or b"\n" in target:
            raise httpx.LocalProtocolError("The request target contains a space or a line break.")
        raw = request.headers.raw
        parts = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), target)]
        chunked = False
        for name, value in raw:
            if len(name) == 17 and name.lower() == b"transfer-encoding":
                chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"  # the last coding frames
            parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        # One look at the whole head: a line break inside a name or a value
        # (header injection) shows as more of them than the head has lines.
        lines = len(raw) + 2
        head = b"".join(parts)
        if head.count(b"\n") != lines or head.count(b"\r") != lines or b":" in b"".join([n for n, _ in raw]):
            raise httpx.LocalProtocolError("A request header contains a line break or a bad name.")
        parts = [head]
        stream = request.stream
        if isinstance(stream, httpx.ByteStream):
            # A body already in memory goes out with the head in one write.
            parts += _frame(b"".join(stream), chunked, last=True)
            return await self._write(b"".join(parts))
        await self._write(b"".join(parts))
        assert isinstance(stream, httpx.AsyncByteStream)
        async for chunk in stream:
            if chunk:
                await self._write(b"".join(_frame(chunk, chunked, last=False)))
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


class ResponseReader:
    """One HTTP/1.1 response, parsed by httptools from bytes the caller reads itself (``feed``).

    For a caller that owns its socket (the Jupyter adapter reads the sidecar
    through tornado): after each :meth:`feed`, ``head`` is true once the
    status and headers are in, ``pieces`` holds the body bytes that came
    (chunked framing removed) for the caller to take, and ``complete`` is
    true at the body's end. Informational answers (``100 Continue``) are
    skipped. Malformed input raises ``httpx.RemoteProtocolError``.
    """

    def __init__(self, *, head_only: bool = False) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.head_only = head_only
        """A response to ``HEAD``: it ends with its headers, whatever they say of a body."""
        self._informational = False
        self._framing: list[tuple[bytes, bytes]] = []  # the headers that may frame the body
        self.status = 0
        self.reason = b""
        self.version = ""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head = False
        self.complete = False
        self.keep_alive = False
        self.length: int | None = None
        """The body's Content-Length, when it has one and is not chunked."""
        self.chunked = False
        self.until_eof = False
        """The body ends with the connection (neither a length nor chunked)."""
        self.pieces: list[bytes] = []
        self.body_read = 0

    def feed(self, data: bytes) -> None:
        """Parse the next bytes; past the end of the response, nothing more is read."""
        if self.complete:
            if data:
                raise httpx.RemoteProtocolError("The upstream sent more than one response.")
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, httpx.RemoteProtocolError) else exc
            raise httpx.RemoteProtocolError(f"The upstream sent a malformed response ({cause}).") from exc

    def eof(self) -> None:
        """The connection ended: the end of a body delimited by it, else ``httpx.RemoteProtocolError``."""
        if self.complete:
            return
        if self.head and self.until_eof:
            self.complete = True
        elif self.head:
            raise httpx.RemoteProtocolError("The upstream closed the connection mid-body.")
        else:
            raise httpx.RemoteProtocolError("The upstream closed the connection without a response.")

    def take(self) -> bytes:
        """The body bytes parsed since the last call, as one piece."""
        pieces = self.pieces
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        pieces.clear()
        return data

    # -- httptools callbacks ---------------------------------------------

    def on_message_begin(self) -> None:
        if self.head:
            raise httpx.RemoteProtocolError("The upstream sent more than one response.")
        self.reason = b""
        self.headers = []
        self._framing = []

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        if len(name) in _FRAMING_LENGTHS:
            self._framing.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status == 101:
            raise httpx.RemoteProtocolError("The upstream switched protocols on a plain HTTP request.")
        if status < 200:
            self._informational = True
            return
        self.status = status
        self.version = parser.get_http_version()
        self.keep_alive = parser.should_keep_alive()
        self.head = True
        if self.head_only or status in (204, 304):
            self.complete = True
            return
        # RFC 9112 section 6.3: neither a length nor chunked last means until the end.
        framing = self._framing
        self.chunked = _chunked(framing)
        lengths = {v.strip() for n, v in framing if n.lower() == b"content-length"}
        self.until_eof = not (lengths or self.chunked)
        if not self.chunked and len(lengths) == 1 and (length := lengths.pop()).isdigit():
            self.length = int(length)

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self.body_read += len(body)
            self.pieces.append(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self.complete = True


def _frame(chunk: bytes, chunked: bool, *, last: bool) -> list[bytes]:
    if not chunked:
        return [chunk]
    parts = [b"%x\r\n" % len(chunk), chunk, b"\r\n"] if chunk else []
    return [*parts, b"0\r\n\r\n"] if last else parts
