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

The response is parsed by the project's one HTTP/1.1 response parser,
:class:`loopback_asgi._transports.http11.ResponseReader` (httptools/llhttp).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
from jupyter_server.base.handlers import JupyterHandler
from tornado import httputil
from tornado.iostream import IOStream, StreamClosedError

from loopback_asgi import fastpaths
from loopback_asgi._transports import splice
from loopback_asgi._transports.http11 import ResponseReader
from loopback_asgi.sidecar.headers import HOP_BY_HOP_STR

if TYPE_CHECKING:
    from tornado.web import RequestHandler

__all__ = ["CHUNK", "SPLICE", "BadResponse", "ResponseRelay"]

CHUNK = 2**20
SPLICE_MIN = 256 * 1024  # below this, setting up a kernel-side relay costs more than copying
MAX_HEAD = 256 * 1024
SPLICE = fastpaths.enabled("adapter_splice")
"""Whether a large ``Content-Length`` body may go to the browser inside the kernel (:meth:`ResponseRelay._splice`)."""


class BadResponse(Exception):
    """The sidecar sent something that is not an HTTP/1.1 response."""


class ResponseRelay:
    """One response from ``stream`` to ``handler``'s browser connection.

    After :meth:`run`: ``started`` (a head arrived and was given to the
    handler), ``head_sent`` (and went on to the browser), ``complete`` (the
    whole body arrived), ``keep_alive`` (the sidecar stream may carry another
    exchange), ``client_gone`` (the browser stopped reading; the rest was not
    relayed), ``bad`` (for the caller to set when the sidecar sent something
    that is not HTTP: not worth a retry), ``spliced`` (the body went kernel-side).
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
        self.spliced = False
        self._splicer: splice.Splice | None = None
        self._reader = ResponseReader(head_only=method == "HEAD")

    async def run(self) -> None:
        """Relay the response.

        Raises ``StreamClosedError`` if the sidecar closed the stream, :class:`BadResponse` if it sent garbage.
        """
        reader = self._reader
        seen = 0
        while not reader.head:
            seen += await self._read()
            if not reader.head and seen > MAX_HEAD:
                raise BadResponse("The response head is too long.")
        self._take_head()
        # A body already here in full leaves in the same write as the head;
        # otherwise the head goes first, and the body as it arrives.
        await self._send_head(reader.take() if reader.pieces else b"")
        may_splice = SPLICE and reader.length is not None
        while not reader.complete and not self.client_gone:
            if may_splice and reader.length is not None and reader.length - reader.body_read >= SPLICE_MIN:
                if await self._splice(reader.length - reader.body_read):
                    self.spliced = True
                    break
                may_splice = False
            try:
                await self._read()
            except StreamClosedError:
                if not reader.until_eof:
                    raise
                reader.eof()
            if reader.pieces:
                await self._send(reader.take())
        if reader.until_eof:
            self.keep_alive = False
        self.complete = not self.client_gone

    async def _read(self) -> int:
        """Feed the parser the next bytes from the sidecar; how many there were."""
        data = await self.stream.read_bytes(CHUNK, partial=True)
        try:
            self._reader.feed(data)
        except httpx.RemoteProtocolError as exc:
            raise BadResponse(str(exc)) from exc
        return len(data)

    def _take_head(self) -> None:
        """Give the sidecar's status and headers to the handler, less the hop-by-hop ones."""
        reader = self._reader
        named: set[str] = set()
        for raw_name, raw_value in reader.headers:
            if raw_name.lower() == b"connection":
                named.update(v.strip().lower() for v in raw_value.decode("latin-1").split(","))
        self.keep_alive = reader.keep_alive
        out = httputil.HTTPHeaders()
        for raw_name, raw_value in reader.headers:
            name = raw_name.decode("latin-1")
            low = name.lower()
            if low in HOP_BY_HOP_STR or low in named:
                continue
            if reader.chunked and low == "content-length":
                continue  # RFC 9112 §6.3: Transfer-Encoding overrides Content-Length
            out.add(name, raw_value.decode("latin-1").strip())
        h = self.handler
        # Only the sidecar's headers (tornado's and Jupyter's defaults go);
        # a login cookie Jupyter set after a ?token= visit is added by flush().
        h._headers = out
        JupyterHandler.set_status(h, reader.status, reader.reason.decode("latin-1") or None)
        self.started = True

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
            or getattr(sidecar, "_read_buffer_size", 1) != 0  # bytes tornado already read go the usual way
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
