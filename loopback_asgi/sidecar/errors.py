"""Error answers: a status and one sentence, as text, HTML or JSON by ``Accept``.

Never a traceback. The HTML form escapes everything it echoes, and every form
carries ``X-Content-Type-Options: nosniff`` so a browser cannot be talked into
reading a reflected path as markup (CVE-2024-35225).
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable

from loopback_asgi.types import ErrorBody, Scope, Send

__all__ = ["error_body", "send_error"]

REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _accept(scope: Scope) -> bytes:
    for name, value in scope.get("headers", ()):
        if name == b"accept":
            return bytes(value).lower()
    return b""


def error_body(scope: Scope, status: int, message: str) -> tuple[bytes, bytes]:
    """``(content_type, body)`` for an error, chosen by the request's ``Accept``."""
    accept = _accept(scope)
    if b"application/json" in accept:
        payload: ErrorBody = {"status": status, "error": message}
        return b"application/json", json.dumps(payload).encode()
    if b"text/html" in accept:
        title = f"{status} {REASONS.get(status, 'Error')}"
        page = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body><h1>{title}</h1><p>{html.escape(message)}</p></body></html>"
        )
        return b"text/html; charset=utf-8", page.encode()
    return b"text/plain; charset=utf-8", f"{status} {REASONS.get(status, 'Error')}: {message}\n".encode()


async def send_error(
    scope: Scope,
    send: Send,
    status: int,
    message: str,
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
    *,
    websocket: bool = False,
) -> None:
    """Answer an HTTP request, or refuse a WebSocket handshake, with ``status``.

    For a WebSocket the answer goes out as the handshake's HTTP response
    (the ASGI denial-response extension) when the server supports it, else as
    a plain refusal (uvicorn answers 403): never as 101-then-close.
    """
    content_type, body = error_body(scope, status, message)
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"no-store"),
        *extra_headers,
    ]
    if websocket:
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
            return
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
