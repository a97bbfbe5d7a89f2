"""A real upstream for the tests: a small ASGI app served by uvicorn on 127.0.0.1.

Run as ``python -m tests.upstream [--port N] [--host H]``; it prints
``upstream listening on <port>`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import json
import socket
from typing import Any
from urllib.parse import parse_qs

import uvicorn

Scope = dict[str, Any]

LAST_CLOSE: dict[str, Any] = {}
GZIPPED = gzip.compress(b"hello gzip " * 1000)
PATTERN = bytes(range(256)) * 4096  # 1 MiB


def _query(scope: Scope) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}


def _headers(scope: Scope) -> list[list[str]]:
    return [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]


async def _json(send: Any, payload: Any, status: int = 200, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Any) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        digest.update(chunk)
        more = message.get("more_body", False)
    return size, digest.hexdigest()


async def http(scope: Scope, receive: Any, send: Any) -> None:
    path = scope["path"]
    q = _query(scope)
    if path in ("/", "/json"):
        await _json(send, {"hello": "world"})
    elif path == "/echo" or path.startswith("/echo/"):
        size, digest = await _read_body(receive)
        await _json(
            send,
            {
                "method": scope["method"],
                "path": path,
                "raw_path": scope["raw_path"].decode("latin-1"),
                "query": scope["query_string"].decode("latin-1"),
                "headers": _headers(scope),
                "size": size,
                "sha256": digest,
            },
        )
    elif path == "/headers":
        await _json(send, _headers(scope))
    elif path == "/bytes":
        # n bytes of PATTERN; Content-Length unless chunked=1.
        n = int(q.get("n", "1024"))
        headers = [(b"content-type", b"application/octet-stream")]
        if q.get("chunked") != "1":
            headers.append((b"content-length", str(n).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        left = n
        while left > 0:
            chunk = PATTERN[: min(left, len(PATTERN))]
            left -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
        if n == 0:
            await send({"type": "http.response.body", "body": b""})
    elif path == "/upload":
        size, digest = await _read_body(receive)
        await _json(send, {"size": size, "sha256": digest})
    elif path == "/sse":
        n, interval = int(q.get("n", "3")), float(q.get("interval", "0.2"))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for i in range(n):
            await send({"type": "http.response.body", "body": f"data: {i}\n\n".encode(), "more_body": True})
            await asyncio.sleep(interval)
        await send({"type": "http.response.body", "body": b""})
    elif path == "/cookies":
        extra = [
            (b"set-cookie", b"a=1; Path=/"),
            (b"set-cookie", b"b=2; Path=/sub; HttpOnly"),
        ]
        await _json(send, {"cookies": 2}, extra=extra)
    elif path == "/redirect":
        to = q.get("to", "/json").encode()
        await send(
            {"type": "http.response.start", "status": 302, "headers": [(b"location", to), (b"content-length", b"0")]}
        )
        await send({"type": "http.response.body", "body": b""})
    elif path == "/gzip":
        headers = [
            (b"content-type", b"text/plain"),
            (b"content-encoding", b"gzip"),
            (b"content-length", str(len(GZIPPED)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": GZIPPED})
    elif path == "/slow":
        await asyncio.sleep(float(q.get("delay", "5")))
        await _json(send, {"slow": True})
    elif path == "/die":
        # Send part of a declared body, then break the connection.
        after = int(q.get("after", "65536"))
        headers = [(b"content-length", str(after * 4).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": PATTERN[:after], "more_body": True})
        raise RuntimeError("upstream dies mid-body on purpose")
    elif path == "/hop":
        extra = [(b"connection", b"x-private"), (b"x-private", b"secret"), (b"keep-alive", b"timeout=5")]
        await _json(send, _headers(scope), extra=extra)
    elif path == "/last-close":
        await _json(send, LAST_CLOSE)
    else:
        await _json(send, {"error": "not found", "path": path}, status=404)


async def websocket(scope: Scope, receive: Any, send: Any) -> None:
    """``/ws``: echo. ``?choose=P`` accepts subprotocol P when offered.

    A text message ``close:<code>:<reason>`` makes the server close with that
    code; the close code a client sends is kept for ``GET /last-close``.
    ``/ws-headers`` sends the handshake headers as JSON. ``/ws-count`` answers
    nothing but ``count?``, with how many messages came before it.
    """
    await receive()  # websocket.connect
    if scope["path"] == "/ws-reject":
        await send({"type": "websocket.close", "code": 1008})
        return
    q = _query(scope)
    choose = q.get("choose")
    subprotocol = choose if choose in scope.get("subprotocols", []) else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    if scope["path"] == "/ws-headers":
        await send({"type": "websocket.send", "text": json.dumps(_headers(scope))})
    count = 0
    while True:
        message = await receive()
        if scope["path"] == "/ws-count" and message["type"] == "websocket.receive":
            if message.get("text") == "count?":
                await send({"type": "websocket.send", "text": str(count)})
            count += 1
            continue
        if message["type"] == "websocket.disconnect":
            LAST_CLOSE.clear()
            LAST_CLOSE.update(code=message.get("code"), reason=message.get("reason", ""))
            return
        text = message.get("text")
        if text is not None and text.startswith("close:"):
            _, code, reason = text.split(":", 2)
            await send({"type": "websocket.close", "code": int(code), "reason": reason})
            return
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes")})


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await http(scope, receive, send)
    elif scope["type"] == "websocket":
        await websocket(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    # Idle keep-alive seconds; tornado (Bokeh, Panel) keeps idle connections for an hour by default.
    parser.add_argument("--timeout-keep-alive", type=int, default=5)
    args = parser.parse_args()
    # IPPROTO_TCP so asyncio turns Nagle off on accepted sockets (proto 0 is inherited and
    # skipped): otherwise every small response waits ~40 ms for a delayed ACK.
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(1024)
    config = uvicorn.Config(
        app,
        log_level="critical",
        ws_max_size=2**31,
        ws_per_message_deflate=False,
        lifespan="off",
        timeout_keep_alive=args.timeout_keep_alive,
    )
    print(f"upstream listening on {sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])  # uvicorn's loop choice: uvloop when installed


if __name__ == "__main__":
    main()
