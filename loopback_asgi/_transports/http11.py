"""HTTP/1.1 on the wire: a request's head and body framing out, a response parsed in.

:func:`request_head` and :func:`body_frame` write what a
:class:`~loopback_asgi._transports.http_connection.Connection` sends;
:class:`ResponseReader` parses what comes back with httptools, from bytes the
caller reads itself: the connection's socket, or the sidecar's answer the
Jupyter adapter reads through tornado. Bad input on either side raises an
httpx exception (``LocalProtocolError`` for a request that cannot be
written, ``RemoteProtocolError`` for a malformed response).
"""

from __future__ import annotations

import httptools
import httpx

__all__ = ["ResponseReader", "body_frame", "request_head"]

# The lengths of the names "content-length" and "transfer-encoding": only headers this long can frame a body.
_FRAMING_LENGTHS = frozenset({14, 17})


def _last_coding_chunked(value: bytes) -> bool:
    """Whether a ``Transfer-Encoding`` value's last coding, the one that frames the body, is chunked."""
    return value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"


def _chunked(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the response's last transfer coding is chunked (else its body ends with the connection)."""
    codings = [v for n, v in headers if n.lower() == b"transfer-encoding"]
    return bool(codings) and _last_coding_chunked(codings[-1])


def request_head(request: httpx.Request) -> tuple[bytes, bool]:
    """The request line and headers of ``request``, and whether its body goes chunked.

    The target goes out byte for byte: the ``target`` extension, else
    ``request.url.raw_path``. A target, header name or value that would
    break the head (a space in the target, a line break anywhere, a colon in
    a name) raises ``httpx.LocalProtocolError``.
    """
    target = request.extensions.get("target") or request.url.raw_path
    if b" " in target or b"\r" in target or b"\n" in target:
        raise httpx.LocalProtocolError("The request target contains a space or a line break.")
    raw = request.headers.raw
    parts = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), target)]
    chunked = False
    for name, value in raw:
        if len(name) == 17 and name.lower() == b"transfer-encoding":
            chunked = _last_coding_chunked(value)
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    # One look at the whole head: a line break inside a name or a value
    # (header injection) shows as more of them than the head has lines.
    lines = len(raw) + 2
    head = b"".join(parts)
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b":" in b"".join([n for n, _ in raw]):
        raise httpx.LocalProtocolError("A request header contains a line break or a bad name.")
    return head, chunked


def body_frame(chunk: bytes, chunked: bool, *, last: bool) -> list[bytes]:
    """``chunk`` of a request body as it goes out: as is, or as a chunk (and, if ``last``, the final one)."""
    if not chunked:
        return [chunk]
    parts = [b"%x\r\n" % len(chunk), chunk, b"\r\n"] if chunk else []
    return [*parts, b"0\r\n\r\n"] if last else parts


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
        self.reset(head_only=head_only)

    def reset(self, *, head_only: bool = False) -> None:
        """Ready for the next response on the same connection, after a complete one (the parser carries on)."""
        self.head_only = head_only
        """A response to ``HEAD``: it ends with its headers, whatever they say of a body."""
        self._informational = False
        self._framing: list[tuple[bytes, bytes]] = []  # the headers that may frame the body
        self.status = 0
        self.reason = b""
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
