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
from typing import TYPE_CHECKING

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from loopback_asgi.target import TargetError

from .flow import LINGER, Session
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


def _split(message: str | bytes) -> list[Frame]:
    data = message.encode() if isinstance(message, str) else message
    text = int(isinstance(message, str))
    view = memoryview(data)
    return [(text, int(at + CHUNK >= len(data)), view[at : at + CHUNK]) for at in range(0, max(len(data), 1), CHUNK)]


async def _to_page(streams: Streams, session: Session, upstream: ClientConnection) -> None:
    """Relay upstream messages as they come; while the page is behind, batch up to CHUNK for LINGER.

    Messages are read here directly (no read-ahead task), so an echo costs no
    extra hop; cancelling ``recv`` to end a batch loses nothing.
    """
    loop = asyncio.get_running_loop()
    closed = False
    while not closed:
        try:
            batch = _split(await upstream.recv())
        except ConnectionClosed:
            return
        size = sum(len(p) + FRAME_COST for _, _, p in batch)
        if session.window.bytes >= CHUNK:
            deadline = loop.time() + LINGER
            while size < CHUNK and (left := deadline - loop.time()) > 0:
                try:
                    more = _split(await asyncio.wait_for(upstream.recv(), left))
                except asyncio.TimeoutError:
                    break
                except ConnectionClosed:
                    closed = True
                    break
                batch += more
                size += sum(len(p) + FRAME_COST for _, _, p in more)
        await session.window.reserve(size)
        frames = [[text, final] for text, final, _ in batch]
        streams.send({"op": "ws_data", "id": session.id, "frames": frames}, [p for _, _, p in batch])


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
