"""The sidecar's uvicorn HTTP protocol: the head leaves with the first body piece; big bodies move kernel-side.

uvicorn writes the head when the app sends ``http.response.start`` and the
body at each ``http.response.body``: two sends on the socket for the common
small response. The ASGI specification lets a server hold the head until the
first body message, and the relay sends that message straight after the
start when the upstream's body is already here. So here the head waits,
for the rest of the current loop step at most, and goes out with the next
write; when no body follows in that step (a body that streams slowly, an
SSE stream) it goes out alone at the next step. Nothing else changes:
order, flow control and closing are uvicorn's.

The protocol also offers the ASGI scope extension ``"loopback.splice"``:
``await scope["extensions"]["loopback.splice"]["send_rest"](take)`` sends
the rest of a ``Content-Length`` body from the upstream's socket to the
client's with ``os.splice`` (:mod:`.splice`), never entering the
process. ``take()`` hands over the upstream socket (see
``Connection.hand_over``) and is only called once the client's socket has
nothing of uvicorn's left to send, so bytes keep their order. The answer:
None (nothing was done; relay the body as usual), True (all of it was
delivered) or False (the upstream or the client stopped; the response is
cut).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from . import splice

__all__ = ["SPLICE", "HeadWithBody", "HttpProtocol"]

SPLICE = "loopback.splice"
Take = Callable[[], "tuple[Any, bytes, int] | None"]


class HeadWithBody:
    """One response's transport, as its cycle sees it: the first write is held until the next or the step's end."""

    __slots__ = ("cycle", "held", "loop", "transport", "used")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.held: bytes | None = None
        self.used = False
        self.cycle: RequestResponseCycle | None = None

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

    async def send_rest(self, take: Take) -> bool | None:
        """The ``loopback.splice`` extension: the rest of the response body, kernel-side (see the module)."""
        cycle = self.cycle
        transport = self.transport
        if (
            cycle is None
            or not splice.available()
            or not cycle.response_started
            or cycle.chunked_encoding
            or cycle.response_complete
            or cycle.disconnected
            or cycle.scope["method"] == "HEAD"
        ):
            return None
        self.flush()
        sink = transport.get_extra_info("socket")
        if sink is None or transport.is_closing() or transport.get_write_buffer_size():
            return None
        taken = take()
        if taken is None:
            return None
        source, rest, left = taken
        if len(rest) + left != cycle.expected_content_length:
            return False  # not the body uvicorn announced: cut rather than send a wrong one
        sent = 0
        try:
            if rest:
                await _send_all(self.loop, sink, rest)
                sent = len(rest)
            splicer = splice.Splice(source, sink, left)
            try:
                outcome = await splicer.run()
            finally:
                sent += splicer.sent
        except OSError:
            return False  # the client left
        finally:
            cycle.expected_content_length -= sent
        return outcome == splice.DONE


async def _send_all(loop: asyncio.AbstractEventLoop, sink: Any, data: bytes) -> None:
    """Write ``data`` to the client's socket through a duplicate descriptor (the transport's is the loop's)."""
    dup = socket.socket(fileno=os.dup(sink.fileno()))
    try:
        await loop.sock_sendall(dup, data)
    finally:
        dup.close()


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, each response cycle writing through a :class:`HeadWithBody`."""

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not before:  # a new request (an upgrade makes none)
            held = cycle.transport = HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]
            held.cycle = cycle
            cycle.scope.setdefault("extensions", {})[SPLICE] = {"send_rest": held.send_rest}
