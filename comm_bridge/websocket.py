"""Generic loopback WebSockets over the comm: the kernel half of ``openWebSocket``.

Guarantees:

- The upstream is connected before the page hears ``open``; a refused or
  failed handshake reaches the page as ``error`` then ``close`` (1006).
- The page's socket gets the subprotocol the upstream chose.
- Frames keep their type and order both ways; a message of any size travels
  in ``CHUNK`` pieces and is whole again on the other side.
- A close from either side is relayed with its code and reason; the page's
  close goes upstream only after the frames it sent before it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from loopback_asgi.target import TargetError

from .flow import Session, drain
from .protocol import CHUNK, CREDIT_BYTES, FRAME_COST

if TYPE_CHECKING:
    from .fetch import Streams

__all__ = ["serve_websocket"]

Frame = tuple[int, int, "bytes | memoryview"]
"""``(text, final, piece)`` as on the wire."""

MAX_MESSAGE = 2**30
PING_INTERVAL = 20.0


def _close_code(code: int) -> int:
    # Only these may be sent by an endpoint (RFC 6455 §7.4); the page checked too.
    return code if code == 1000 or 3000 <= code <= 4999 else 1000


async def serve_websocket(streams: Streams, session: Session, port: int, path: str, protocols: list[str]) -> None:
    """Connect upstream, then pump both ways until either side closes."""
    id = session.id
    try:
        target = streams.target(port, path)
    except TargetError as exc:
        return streams.error(id, exc.status, exc.message)
    ns = target.namespace
    where = f"port {port}"
    if not ns.websocket:
        return streams.error(id, 403, "WebSockets are disabled by the administrator.")
    try:
        upstream = await connect(
            f"ws://{target.netloc}{target.target}",
            subprotocols=protocols or None,  # type: ignore[arg-type]
            compression=None,
            proxy=None,
            open_timeout=ns.connect_timeout + ns.header_timeout,
            max_size=MAX_MESSAGE,
            max_queue=16,
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_INTERVAL,
        )
    except InvalidStatus as exc:
        return streams.error(id, 502, f"The server on {where} refused the WebSocket ({exc.response.status_code}).")
    except TimeoutError:
        return streams.error(id, 504, f"Connecting to {where} timed out.")
    except (OSError, InvalidHandshake):
        return streams.error(id, 502, f"Nothing is accepting WebSockets on {where}.")
    sender = None
    try:
        streams.send({"op": "ws_open", "id": id, "protocol": upstream.subprotocol or ""}, ())
        sender = asyncio.ensure_future(_to_upstream(streams, session, upstream))
        await _to_page(streams, session, upstream)
    finally:
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        await upstream.close()
    close = upstream.protocol.close_rcvd
    code, reason = (close.code, close.reason) if close is not None else (1006, "")
    streams.send({"op": "ws_closed", "id": id, "code": code, "reason": reason}, ())


async def _frames(upstream: ClientConnection) -> AsyncIterator[Frame]:
    try:
        async for message in upstream:
            data = message.encode() if isinstance(message, str) else message
            text = int(isinstance(message, str))
            view = memoryview(data)
            for offset in range(0, max(len(data), 1), CHUNK):
                yield text, int(offset + CHUNK >= len(data)), view[offset : offset + CHUNK]
    except ConnectionClosed:
        return


async def _to_page(streams: Streams, session: Session, upstream: ClientConnection) -> None:
    async def flush(batch: list[Frame], last: bool) -> None:
        if batch:
            await session.window.reserve(sum(len(p) + FRAME_COST for _, _, p in batch))
            frames = [[text, final] for text, final, _ in batch]
            streams.send({"op": "ws_data", "id": session.id, "frames": frames}, [p for _, _, p in batch])

    await drain(
        _frames(upstream), lambda f: len(f[2]) + FRAME_COST, flush, CHUNK, lambda: session.window.bytes >= CHUNK
    )


async def _to_upstream(streams: Streams, session: Session, upstream: ClientConnection) -> None:
    parts: list[bytes] = []
    unreported = 0
    while True:
        item = await session.inbox.get()
        if item[0] == "close":
            await upstream.close(_close_code(item[1]), item[2])
            return
        (text, final), piece = item
        parts.append(piece)
        unreported += len(piece) + FRAME_COST
        if final:
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            parts = []
            try:
                await upstream.send(data.decode() if text else data)
            except ConnectionClosed:
                return
        if unreported >= CREDIT_BYTES:
            streams.send({"op": "credit", "id": session.id, "bytes": unreported}, ())
            unreported = 0
