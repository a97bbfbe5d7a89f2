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
client's with ``os.splice`` (:mod:`loopback_asgi._transports.splice`), never entering the
process. ``take()`` hands over the upstream socket (see
``Connection.hand_over``) and is only called once the client's socket has
nothing of uvicorn's left to send, so bytes keep their order. The answer:
None (nothing was done; relay the body as usual), True (all of it was
delivered) or False (the upstream or the client stopped; the response is
cut).

And ``"loopback.respond"``: ``respond(send, status, headers, body)`` sends a
whole response whose body is already in memory in one write, without the
two ASGI messages, and completes the cycle as uvicorn would. It applies only
to the ``send`` this cycle gave the app (a middleware that wraps ``send``
sees every message), before anything was sent, for a response with a body to
a request that is not ``HEAD``, with a ``Content-Length`` that matches the
body and no other framing header, with uvicorn's access log off.
It answers False, having done nothing, otherwise; the caller then sends the
usual messages.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from loopback_asgi import fastpaths
from loopback_asgi._transports import splice
from loopback_asgi.sidecar.extensions import RESPOND, SPLICE

__all__ = ["HeadWithBody", "HttpProtocol"]

# Headers whose meaning uvicorn's own send works out; a response carrying one takes that path.
FRAMING = frozenset({b"connection", b"transfer-encoding"})
# Up to this size the head and body are joined into one buffer; past it they go as a vector.
JOIN_MAX = 64 * 1024
Take = Callable[[], "tuple[Any, bytes, int] | None"]
ONE_WRITE = fastpaths.enabled("sidecar_one_write")
"""Whether responses go through :class:`HeadWithBody` (the head with the first body piece, ``loopback.respond``)."""
SPLICE_ON = fastpaths.enabled("sidecar_splice")
"""Whether the protocol offers ``loopback.splice``."""


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

    def respond(self, send: object, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
        """The ``loopback.respond`` extension: a whole response in one write (see the module)."""
        cycle = self.cycle
        line = STATUS_LINE.get(status)
        if (
            cycle is None
            or line is None
            or send != cycle.send
            or self.used
            or cycle.response_started
            or cycle.disconnected
            or cycle.access_log
            or cycle.flow.write_paused
            or status < 200
            or status in (204, 304)
            or cycle.scope["method"] == "HEAD"
        ):
            return False
        size = b"%d" % len(body)
        parts = [line]
        length = None
        for name, value in (*cycle.default_headers, *headers):
            lowered = name.lower()
            if lowered in FRAMING:
                return False
            if lowered == b"content-length":
                if length is not None or value.strip() != size:
                    return False
                length = value
            parts += (lowered, b": ", value, b"\r\n")  # lowered, as uvicorn sends names
        if length is None:
            return False  # the upstream framed it otherwise (chunked, or to its end): uvicorn frames it as chunked
        # What uvicorn checks header by header, checked once over all of them:
        # no control byte or separator in a name, no line break or control byte in a value.
        if HEADER_RE.search(b"".join(parts[1::4])) or HEADER_VALUE_RE.search(b"\t".join(parts[3::4])):
            return False
        if not cycle.keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        head = b"".join(parts)
        self.used = True
        if len(body) <= JOIN_MAX:
            self.transport.write(head + body)
        else:
            self.transport.writelines((head, body))
        cycle.response_started = cycle.response_complete = True
        cycle.waiting_for_100_continue = False
        cycle.chunked_encoding = False
        cycle.expected_content_length = 0
        cycle.message_event.set()
        if not cycle.keep_alive:
            self.transport.close()
        cycle.on_response()
        return True


async def _send_rest(cycle: RequestResponseCycle, transport: Any, take: Take) -> bool | None:
    """The ``loopback.splice`` extension: the rest of the response body, kernel-side (see the module).

    ``transport`` is the cycle's (a :class:`HeadWithBody` holds the head until flushed).
    """
    if (
        not splice.available()
        or not cycle.response_started
        or cycle.chunked_encoding
        or cycle.response_complete
        or cycle.disconnected
        or cycle.scope["method"] == "HEAD"
    ):
        return None
    if isinstance(transport, HeadWithBody):
        transport.flush()
        transport = transport.transport
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


class _SpliceProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, offering ``loopback.splice`` when that fast path is on."""

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not before and SPLICE_ON:  # a new request (an upgrade makes none)
            transport = cycle.transport
            extensions = cycle.scope.setdefault("extensions", {})
            extensions[SPLICE] = {"send_rest": functools.partial(_send_rest, cycle, transport)}


class _OneWriteProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, each response cycle writing through a :class:`HeadWithBody`.

    Keep-alive works as uvicorn's does (an idle connection closes
    ``timeout_keep_alive`` seconds after its last response), with one timer
    per idle spell instead of one armed and cancelled per response: when it
    fires on a connection that was busy since, it is set again for the rest.
    """

    _idle_since: float | None = None

    def _unset_keepalive_if_required(self) -> None:
        # Bytes arrived or the connection ended: not idle. The timer stays; it looks when it fires.
        self._idle_since = None

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._idle_since = None
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        idle = self._idle_since
        if idle is None or self.transport.is_closing():
            return  # busy (the next response sets the timer again) or gone
        left = idle + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not before:  # a new request (an upgrade makes none)
            held = cycle.transport = HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]
            held.cycle = cycle
            extensions = cycle.scope.setdefault("extensions", {})
            if SPLICE_ON:
                extensions[SPLICE] = {"send_rest": functools.partial(_send_rest, cycle, held)}
            extensions[RESPOND] = {"respond": held.respond}


HttpProtocol: type[HttpToolsProtocol] = _OneWriteProtocol if ONE_WRITE else _SpliceProtocol
"""The sidecar's protocol: uvicorn's, with the fast paths that are on."""
