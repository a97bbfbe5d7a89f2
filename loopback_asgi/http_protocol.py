"""The sidecar's uvicorn HTTP protocol: a response's head leaves in the same write as its first body piece.

uvicorn writes the head when the app sends ``http.response.start`` and the
body at each ``http.response.body``: two sends on the socket for the common
small response. The ASGI specification lets a server hold the head until the
first body message, and the relay sends that message straight after the
start when the upstream's body is already here. So here the head waits,
for the rest of the current loop step at most, and goes out with the next
write; when no body follows in that step (a body that streams slowly, an
SSE stream) it goes out alone at the next step. Nothing else changes:
order, flow control and closing are uvicorn's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HeadWithBody", "HttpProtocol"]


class HeadWithBody:
    """One response's transport, as its cycle sees it: the first write is held until the next or the step's end."""

    __slots__ = ("held", "loop", "transport", "used")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.held: bytes | None = None
        self.used = False

    def write(self, data: bytes) -> None:
        if not self.used:
            self.used = True
            self.held = data
            self.loop.call_soon(self.flush)
            return
        held = self.held
        if held is None:
            self.transport.write(data)
        else:
            self.held = None
            self.transport.writelines((held, data))

    def flush(self) -> None:
        held = self.held
        if held is not None:
            self.held = None
            if not self.transport.is_closing():
                self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, each response cycle writing through a :class:`HeadWithBody`."""

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not before:  # a new request (an upgrade makes none)
            self.cycle.transport = HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]
