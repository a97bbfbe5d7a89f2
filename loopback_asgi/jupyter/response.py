"""The sidecar's HTTP/1.1 response, relayed to the browser by the tornado side of the adapter.

:class:`ResponseRelay` reads one response from the sidecar's unix socket and
writes it to the browser through the handler's own connection. Guarantees:

- Streaming with bounded memory: at most one ``CHUNK`` (1 MiB) buffer per
  response; each piece is awaited on the browser socket before the next read
  (backpressure). Bodies of any size; SSE pieces reach the browser as they
  arrive.
- The head reaches the browser before the relay waits on the sidecar for
  body bytes, so a response that streams slowly shows its headers at once;
  a small body that is already here leaves in the same write as the head.
- A ``Content-Length`` from the sidecar is kept, so tornado sends the body as
  is (no chunked re-encoding); large bodies are read straight into one
  reused buffer and written from it (no per-piece copies).
- ``complete`` is true only if the whole body arrived; a sidecar that stops
  mid-body leaves it false, and the caller cuts the browser's stream.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from jupyter_server.base.handlers import JupyterHandler
from tornado import httputil
from tornado.iostream import IOStream, StreamClosedError, UnsatisfiableReadError

from loopback_asgi._transports import splice
from loopback_asgi.sidecar.headers import HOP_BY_HOP_STR

if TYPE_CHECKING:
    from tornado.web import RequestHandler

__all__ = ["CHUNK", "BadResponse", "ResponseRelay", "chunk_size"]

CHUNK = 2**20
# tornado's read_into() and HTTP1Connection.write() take any buffer, memoryviews
# included (their annotations say bytearray/bytes): slices of one buffer need no copies.
SMALL = 64 * 1024  # bodies up to this size are read whole and may share the head's write
SPLICE_MIN = 256 * 1024  # below this, setting up a kernel-side relay costs more than copying
MAX_HEAD = 256 * 1024


class BadResponse(Exception):
    """The sidecar sent something that is not an HTTP/1.1 response."""


_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[^"\\\r\n]|\\[^\r\n])*"'
# RFC 9112 §7.1: chunk-size is 1*HEXDIG (no sign, "0x", "_" or spaces, all of
# which int(x, 16) takes), then chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ).
# On a pooled connection a size read two ways is a desync: refuse it instead.
CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[ \t]*%b(?:[ \t]*=[ \t]*(?:%b|%b))?)*\r\n" % (_TOKEN, _TOKEN, _QUOTED)
)


def chunk_size(line: bytes) -> int:
    """The size on a chunk's first line (CRLF included); :class:`BadResponse` unless it is RFC 9112's grammar."""
    match = CHUNK_LINE.fullmatch(line)
    if match is None:
        raise BadResponse("Bad chunk size.")
    return int(match[1], 16)


class ResponseRelay:
    """One response from ``stream`` to ``handler``'s browser connection.

    After :meth:`run`: ``started`` (a head arrived and was given to the
    handler), ``head_sent`` (and went on to the browser), ``complete`` (the
    whole body arrived), ``keep_alive`` (the sidecar stream may carry another
    exchange), ``client_gone`` (the browser stopped reading; the rest was not
    relayed), ``bad`` (for the caller to set when the sidecar sent something
    that is not HTTP: not worth a retry).
    """

    def __init__(self, handler: RequestHandler, stream: IOStream, method: str) -> None:
        self.handler = handler
        self.stream = stream
        self.method = method
        self.started = False
        self.complete = False
        self.keep_alive = True
        self.client_gone = False
        self.bad = False  # set by the caller when run() raised BadResponse
        self.head_sent = False
        self._splicer: splice.Splice | None = None

    async def run(self) -> None:
        """Relay the response.

        Raises ``StreamClosedError`` if the sidecar closed the stream, :class:`BadResponse` if it sent garbage.
        """
        code, length, chunked = await self._head()
        if self.method == "HEAD" or code in (204, 304):
            await self._send_head()
        elif chunked:
            await self._chunked()
            return
        elif length is not None:
            await self._body(length, splice=True)
        else:  # delimited by the sidecar closing the connection
            self.keep_alive = False
            await self._until_close()
        self.complete = not self.client_gone

    async def _head(self) -> tuple[int, int | None, bool]:
        while True:
            try:
                data = await self.stream.read_until(b"\r\n\r\n", max_bytes=MAX_HEAD)
            except StreamClosedError:
                if isinstance(self.stream.error, UnsatisfiableReadError):
                    raise BadResponse("The response head is too long.") from None
                raise
            first, _, rest = data.decode("latin-1").partition("\r\n")
            try:
                start = httputil.parse_response_start_line(first)
            except httputil.HTTPInputError as exc:
                raise BadResponse(str(exc)) from exc
            if not 100 <= start.code < 200:
                break  # informational answers (100 Continue) are not relayed
        headers = httputil.HTTPHeaders()
        named: set[str] = set()
        length: int | None = None
        chunked = False
        for line in rest.split("\r\n"):
            if not line:
                continue
            name, colon, value = line.partition(":")
            if not colon:
                raise BadResponse(f"Malformed header line {line[:40]!r}.")
            name, value, low = name.strip(), value.strip(), name.strip().lower()
            if low == "content-length":
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise BadResponse("Bad Content-Length.")
                length = int(value)
            elif low == "transfer-encoding":
                chunked = value.lower().endswith("chunked")
            elif low == "connection":
                named.update(v.strip().lower() for v in value.split(","))
            headers.add(name, value)
        self.keep_alive = start.version == "HTTP/1.1" and "close" not in named
        out = httputil.HTTPHeaders()
        for name, value in headers.get_all():
            low = name.lower()
            if low not in HOP_BY_HOP_STR and low not in named:
                out.add(name, value)
        if chunked:
            length = None  # RFC 9112 §6.3: Transfer-Encoding overrides Content-Length
            if "Content-Length" in out:
                del out["Content-Length"]
        h = self.handler
        # Only the sidecar's headers (tornado's and Jupyter's defaults go);
        # a login cookie Jupyter set after a ?token= visit is added by flush().
        h._headers = out
        JupyterHandler.set_status(h, start.code, start.reason or None)
        self.started = True
        return start.code, length, chunked

    async def _send_head(self, data: bytes = b"") -> None:
        """Write the head (and ``data`` with it) to the browser."""
        self.head_sent = True
        if data:
            JupyterHandler.write(self.handler, data)
        try:
            await JupyterHandler.flush(self.handler)
        except StreamClosedError:
            self.client_gone = True

    async def _send(self, data: bytes | memoryview) -> None:
        if not self.head_sent:
            return await self._send_head(bytes(data))
        if self.client_gone:
            return
        try:
            await self.handler.request.connection.write(data)  # type: ignore[union-attr,arg-type]
        except StreamClosedError:
            self.client_gone = True

    async def _body(self, length: int, *, splice: bool = False) -> None:
        """Relay exactly ``length`` bytes; ``StreamClosedError`` if the sidecar stops first.

        ``splice``: the body is the whole rest of a ``Content-Length`` response,
        so its bytes may go to the browser kernel-side (:mod:`loopback_asgi._transports.splice`).
        """
        if length <= SMALL:
            pending = self.stream.read_bytes(length)
            if not self.head_sent and not _done(pending):
                await self._send_head()  # the body is not here yet: the head goes first
            data = await pending
            if not self.client_gone:
                await self._send(data)
            return
        if not self.head_sent:
            await self._send_head()
        view: memoryview | None = None
        left = length
        while left and not self.client_gone:
            # Bytes tornado already read from the sidecar (with the head) go the usual way first.
            if splice and left >= SPLICE_MIN and getattr(self.stream, "_read_buffer_size", 1) == 0:
                if await self._splice(left):
                    return
                splice = False
            if view is None:
                view = memoryview(bytearray(CHUNK))
            n = await self.stream.read_into(view[: min(left, CHUNK)], partial=True)  # type: ignore[arg-type]
            left -= n
            await self._send(view[:n])

    async def _splice(self, left: int) -> bool:
        """Relay the last ``left`` body bytes inside the kernel; False (nothing done) if tornado's state rules it out.

        Uses tornado internals, each checked first: the browser connection's
        ``Content-Length`` accounting (``_expected_content_remaining``, which must
        equal ``left``; no chunked output) and the sidecar stream's read buffer
        and event registration.
        """
        conn = self.handler.request.connection
        browser = getattr(conn, "stream", None)
        sidecar = self.stream
        if (
            not splice.available()
            or type(browser) is not IOStream  # TLS (SSLIOStream) or anything unknown: copy
            or browser.closed()
            or browser.writing()
            or getattr(conn, "_chunking_output", True) is not False
            or getattr(conn, "_expected_content_remaining", None) != left
            or sidecar.closed()
            or sidecar.reading()
            or not hasattr(sidecar, "_state")
        ):
            return False
        try:
            splicer = splice.Splice(sidecar.socket, browser.socket, left)
        except OSError:  # out of descriptors: copy instead
            return False
        if sidecar._state is not None:
            # An idle tornado stream listens for reads (to notice a close) and
            # would pull body bytes into its own buffer: off its watch list.
            # With _state None, its next read or write registers it again.
            sidecar.io_loop.remove_handler(sidecar.fileno())
            sidecar._state = None
        self._splicer = splicer
        try:
            outcome = await splicer.run()
        finally:
            self._splicer = None
            conn._expected_content_remaining -= splicer.sent  # type: ignore[union-attr]
        if outcome == splice.CLIENT_GONE:
            self.client_gone = True
            browser.close()  # as a failed tornado write would have
        elif outcome == splice.SOURCE_LOST:
            raise StreamClosedError()
        return True

    def abort(self) -> None:
        """The browser left: stop a kernel-side relay at once (a copying one stops at its next step)."""
        if self._splicer is not None:
            self._splicer.abort()

    async def _chunked(self) -> None:
        while True:
            size = chunk_size(await self.stream.read_until(b"\r\n", max_bytes=4096))
            if size == 0:
                while (await self.stream.read_until(b"\r\n", max_bytes=MAX_HEAD)) != b"\r\n":
                    pass  # trailers are not relayed
                if not self.head_sent:
                    await self._send_head()
                self.complete = not self.client_gone
                return
            await self._body(size)
            if self.client_gone:
                return
            if await self.stream.read_bytes(2) != b"\r\n":
                raise BadResponse("Bad chunk end.")

    async def _until_close(self) -> None:
        if not self.head_sent:
            await self._send_head()
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        while not self.client_gone:
            try:
                n = await self.stream.read_into(view, partial=True)  # type: ignore[arg-type]
            except StreamClosedError:
                return
            await self._send(view[:n])


def _done(awaitable: object) -> bool:
    done = getattr(awaitable, "done", None)
    return bool(done()) if done is not None else False
