"""tests/upstream.py plus what a page loads as images and documents, for the interception tests.

``/png?w=W&h=H`` is a W×H PNG (default 3×2), ``/xml`` an XML document,
``/latin1`` text in ISO-8859-1, ``/teapot`` a 418 with a header of its own;
``/sse-id`` sends events with ``event:``/``id:`` fields and echoes the
``Last-Event-ID`` it got. Everything else is tests/upstream.py. Run as
``python -m tests.intercept_upstream``; it prints ``upstream listening on <port>``.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from tests import upstream

__all__ = ["app", "png"]

_base = upstream.app


def png(width: int, height: int) -> bytes:
    """A valid RGB PNG of ``width`` × ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes((40, 120, 200)) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


async def _send(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    path = scope.get("path", "")
    if scope["type"] != "http" or path not in ("/png", "/xml", "/latin1", "/teapot", "/sse-id"):
        return await _base(scope, receive, send)
    query = upstream._query(scope)
    if path == "/png":
        body = png(int(query.get("w", "3")), int(query.get("h", "2")))
        await _send(send, 200, body, [(b"content-type", b"image/png")])
    elif path == "/xml":
        await _send(
            send,
            200,
            b"<?xml version='1.0'?><root><item n='1'>one</item></root>",
            [(b"content-type", b"application/xml")],
        )
    elif path == "/latin1":
        await _send(send, 200, "café".encode("latin-1"), [(b"content-type", b"text/plain; charset=iso-8859-1")])
    elif path == "/teapot":
        await _send(send, 418, b"short and stout", [(b"content-type", b"text/plain"), (b"x-teapot", b"yes")])
    else:
        last = dict(upstream._headers(scope)).get("last-event-id", "")
        body = f"retry: 50\nevent: greet\nid: 7\ndata: hello\ndata: {last or 'none'}\n\n: a comment\n\ndata: plain\n\n"
        await _send(send, 200, body.encode(), [(b"content-type", b"text/event-stream")])


def main() -> None:
    upstream.app = app  # tests/upstream.py's server, serving this app
    upstream.main()


if __name__ == "__main__":
    main()
