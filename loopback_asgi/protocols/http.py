"""The sidecar's uvicorn HTTP protocol: uvicorn's own, offering big bodies a kernel-side path.

The protocol offers the ASGI scope extension ``"loopback.splice"``:
``await scope["extensions"]["loopback.splice"]["send_rest"](take)`` sends
the rest of a ``Content-Length`` body from the upstream's socket to the
client's with ``os.splice`` (:mod:`loopback_asgi._transports.splice`), never entering the
process. ``take()`` hands over the upstream socket (see
``Connection.hand_over``) and is only called once the client's socket has
nothing of uvicorn's left to send, so bytes keep their order. The answer:
None (nothing was done; relay the body as usual), True (all of it was
delivered) or False (the upstream or the client stopped; the response is
cut). It reads and updates uvicorn's response cycle (the fast path
``sidecar_splice`` of :mod:`loopback_asgi.fastpaths`): with it off, or with
a uvicorn outside the checked range, the extension is not offered.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from loopback_asgi import fastpaths
from loopback_asgi._transports import splice
from loopback_asgi.sidecar.extensions import SPLICE

__all__ = ["HttpProtocol"]

Take = Callable[[], "tuple[Any, bytes, int] | None"]
SPLICE_ON = fastpaths.enabled("sidecar_splice")
"""Whether the protocol offers ``loopback.splice``."""


async def _send_rest(cycle: RequestResponseCycle, transport: Any, take: Take) -> bool | None:
    """The ``loopback.splice`` extension: the rest of the response body, kernel-side (see the module)."""
    if (
        not splice.available()
        or not cycle.response_started
        or cycle.chunked_encoding
        or cycle.response_complete
        or cycle.disconnected
        or cycle.scope["method"] == "HEAD"
    ):
        return None
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
            await _send_all(asyncio.get_running_loop(), sink, rest)
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
    """uvicorn's httptools protocol, offering ``loopback.splice`` when that fast path is on."""

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not before and SPLICE_ON:  # a new request (an upgrade makes none)
            transport = cycle.transport
            extensions = cycle.scope.setdefault("extensions", {})
            extensions[SPLICE] = {"send_rest": functools.partial(_send_rest, cycle, transport)}
