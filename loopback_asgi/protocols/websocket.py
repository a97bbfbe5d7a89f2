"""The sidecar's uvicorn WebSocket protocol, able to hand its connection to a byte pipe.

It offers the ASGI scope extension ``"loopback.pipe"``
(:mod:`loopback_asgi.sidecar.extensions`); the pipe itself, which needs no
uvicorn, is :class:`loopback_asgi._transports.pipe.Pipe`.
"""

from __future__ import annotations

from typing import Any, cast

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from loopback_asgi import fastpaths
from loopback_asgi._transports.pipe import MAX_HANDSHAKE, Pipe
from loopback_asgi.sidecar.extensions import PIPE

__all__ = ["PIPE_ENABLED", "PipeProtocol"]

PIPE_ENABLED = fastpaths.enabled("sidecar_ws_pipe")
"""Whether ``loopback.pipe`` is offered (reads uvicorn's private state; see :mod:`loopback_asgi.fastpaths`)."""


class PipeProtocol(WebSocketsSansIOProtocol):
    """uvicorn's Sans-I/O WebSocket protocol, able to hand its connection to a :class:`Pipe`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipe: Pipe | None = None
        self._received = 0  # bytes read so far
        self._handshake_length: int | None = None  # the client's handshake request, once whole
        self._head = bytearray()

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # none for a handshake uvicorn refused
        if PIPE_ENABLED and isinstance(scope, dict):
            scope.setdefault("extensions", {})[PIPE] = {}

    def data_received(self, data: bytes) -> None:
        if self.pipe is not None:
            self.pipe.from_client(data)
            return
        self._received += len(data)
        if self._handshake_length is None and len(self._head) < MAX_HANDSHAKE:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end >= 0:
                self._handshake_length = end + 4
                self._head = bytearray()
        super().data_received(data)

    def _pipeable(self) -> bool:
        # Nothing read past the handshake: the client's stream is at a frame boundary, nothing is queued.
        return (
            self._handshake_length is not None
            and self._received == self._handshake_length
            and self.handshake_complete
            and not self.close_sent
            and not self.disconnected
            and self.initial_response is None
            and self.queue.empty()
            and self.conn.state is State.OPEN
            and not self.conn.extensions
            and not self.transport.is_closing()
        )

    async def send(self, message: Any) -> None:
        if message["type"] != PIPE:
            return await super().send(message)
        pipe = cast(Pipe, message["pipe"])
        if self.pipe is None and self._pipeable() and pipe.attach(self.transport):
            self.pipe = pipe
            self.stop_keepalive()  # pings and pongs now pass between the client and the upstream

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.pipe is not None:
            self.pipe.pause(self.pipe.server, True)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.pipe is not None:
            self.pipe.pause(self.pipe.server, False)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pipe is not None:
            self.pipe.client_lost()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        if self.pipe is None:
            return super().shutdown()
        self.pipe.end(1012)
