"""Opening a WebSocket connection to a loopback upstream, in either mode.

:func:`open_upstream` connects over TCP or a unix socket, sends websockets'
handshake request with the caller's headers, and returns the connection once
the upstream accepted it, or raises.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Literal, overload

from websockets.client import ClientProtocol
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from loopback_asgi._transports.websocket.frame_mode import FrameUpstream
from loopback_asgi._transports.websocket.messages import Upstream

__all__ = ["open_upstream"]


@overload
async def open_upstream(
    uri: str,
    headers: Sequence[tuple[str, str]],
    *,
    subprotocols: Sequence[str] | None,
    max_size: int | None,
    max_queue: int = ...,
    ping_interval: float | None = ...,
    timeout: float,
    unix_path: str | None = ...,
    frames: Literal[False] = ...,
) -> Upstream: ...


@overload
async def open_upstream(
    uri: str,
    headers: Sequence[tuple[str, str]],
    *,
    subprotocols: Sequence[str] | None,
    max_size: int | None,
    max_queue: int = ...,
    ping_interval: float | None = ...,
    timeout: float,
    unix_path: str | None = ...,
    frames: Literal[True],
) -> FrameUpstream: ...


async def open_upstream(
    uri: str,
    headers: Sequence[tuple[str, str]],
    *,
    subprotocols: Sequence[str] | None,
    max_size: int | None,
    max_queue: int = 4,
    ping_interval: float | None = 20,
    timeout: float,
    unix_path: str | None = None,
    frames: bool = False,
) -> Upstream | FrameUpstream:
    """Connect and complete the handshake within ``timeout`` s, sending ``headers`` along.

    Returns an :class:`Upstream` (message mode, at most ``max_queue``
    messages read ahead), or with ``frames`` a :class:`FrameUpstream`.
    Raises ``websockets.exceptions.InvalidStatus`` (the upstream answered
    with an HTTP status), ``InvalidHandshake``, ``OSError`` or
    ``TimeoutError``; the connection is dropped on any failure.

    With ``unix_path``, the connection goes to that unix socket; ``uri``
    then only gives the path and the ``Host`` header. A header or a path
    holding a line break raises ``ValueError``.
    """
    if any(ch in text for pair in headers for text in pair for ch in "\r\n") or "\r" in uri or "\n" in uri:
        raise ValueError("A header or the path holds a line break.")
    wsuri = parse_uri(uri)
    protocol = ClientProtocol(
        wsuri, subprotocols=[Subprotocol(s) for s in subprotocols] if subprotocols else None, max_size=max_size
    )
    request = protocol.connect()
    for name, value in headers:
        request.headers[name] = value
    protocol.send_request(request)

    def factory() -> Upstream | FrameUpstream:
        if frames:
            return FrameUpstream(protocol, ping_interval=ping_interval)
        return Upstream(protocol, max_queue=max_queue, ping_interval=ping_interval)

    async def handshake() -> Upstream | FrameUpstream:
        loop = asyncio.get_running_loop()
        if unix_path is not None:
            _, upstream = await loop.create_unix_connection(factory, unix_path)
        else:
            _, upstream = await loop.create_connection(factory, wsuri.host, wsuri.port)
        try:
            upstream._flush()
            await upstream.handshake
        except BaseException:
            upstream.abort()
            raise
        return upstream

    try:
        return await asyncio.wait_for(handshake(), timeout)
    except asyncio.TimeoutError:
        where = unix_path if unix_path is not None else f"{wsuri.host}:{wsuri.port}"
        raise TimeoutError(f"No WebSocket handshake with {where} within {timeout} s.") from None
