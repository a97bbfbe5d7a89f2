"""The sidecar leg of the adapter's WebSocket relay: a small RFC 6455 client on the unix socket.

An :class:`asyncio.Protocol` rather than tornado's ``websocket_connect``: frames
are parsed straight from each ``data_received`` (several per read when they
come together), with no future, Task or event-loop registration change per
frame. Guarantees:

- Messages are handed to ``on_message`` whole (fragments joined), in order,
  one at a time: when ``on_message`` returns an awaitable, reading from the
  sidecar pauses until it is done (backpressure, no queue).
- :meth:`SidecarWebSocket.send` returns an awaitable only while the message
  still waits in the transport's buffer; awaiting it is the sender's
  backpressure.
- Messages over ``max_message`` bytes close the connection with 1009; a
  protocol error closes it with 1002. ``on_message(ws, None, …)`` is called once,
  after every message that arrived before the close; ``close_code`` and
  ``close_reason`` then say how it ended (``None``: no close frame).
- Pings are answered; a close frame is answered and the socket closed; a
  close the sidecar does not answer is cut after ``CLOSE_WAIT`` seconds.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from collections.abc import Awaitable, Callable, Iterable

from tornado import httputil

from loopback_asgi._transports.websocket import client_frame, close_payload

__all__ = ["CLOSE_WAIT", "Refused", "SidecarWebSocket", "connect"]

CLOSE_WAIT = 5.0
MAX_HEAD = 256 * 1024
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OnMessage = Callable[["SidecarWebSocket", bytes | None, bool], Awaitable[None] | None]


class Refused(Exception):
    """The sidecar answered the handshake with ``code`` (not 101); ``body`` is its text."""

    def __init__(self, code: int, body: str) -> None:
        super().__init__(f"{code} {body}")
        self.code = code
        self.body = body


class SidecarWebSocket(asyncio.Protocol):
    """One client WebSocket to the sidecar; made by :func:`connect`."""

    def __init__(self, on_message: OnMessage, max_message: int) -> None:
        self.on_message = on_message
        self.max_message = max_message
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.selected_subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.key = base64.b64encode(os.urandom(16)).decode()
        self._buffer = bytearray()
        self._upgraded = False
        self._fragments: list[bytes] = []
        self._fragment_binary = False
        self._fragment_size = 0
        self._paused = False
        self._lost = False
        self._ended = False
        self._closing = False
        self._close_timer: asyncio.TimerHandle | None = None
        self._drained: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=0)  # pause_writing as soon as anything waits

    def data_received(self, data: bytes) -> None:
        if self._ended:
            if self.transport is not None:
                self.transport.close()  # the sidecar's answer to our close
            return
        self._buffer += data
        if self._upgraded:
            self._process()
        else:
            self._read_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._close_timer is not None:
            self._close_timer.cancel()
        self.resume_writing()
        if not self.handshake.done():
            self._read_head()  # a refusal whose body ends with the connection
            self._handshake_failed()
        elif not self._paused:
            self._process()

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def detach(self) -> tuple[asyncio.Transport, bytes] | None:
        """Give up the connection at a frame boundary, for a byte-for-byte relay (``jupyter_ws_pipe``).

        Returns the transport and the bytes read but not parsed (the start of
        a frame, at most); or None, changing nothing, unless the connection
        is open, no message is being delivered or assembled, and no close has
        begun. Afterwards this object sends and delivers nothing.
        """
        transport = self.transport
        if (
            transport is None
            or transport.is_closing()
            or not self._upgraded
            or self._paused
            or self._ended
            or self._closing
            or self._lost
            or self._fragments
        ):
            return None
        rest = bytes(self._buffer)
        self._buffer.clear()
        self._ended = self._closing = True
        self.transport = None
        return transport, rest

    # Sending

    def send(self, data: bytes, binary: bool) -> Awaitable[None] | None:
        """Send one message; an awaitable while it waits in the buffer, else ``None``."""
        if self._closing or self.transport is None or self.transport.is_closing():
            return None
        self._write_frame(0x2 if binary else 0x1, data)
        return self._drained

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Start the closing handshake (no status if ``code`` is ``None``); idempotent."""
        if self._closing or self.transport is None or self.transport.is_closing():
            return
        self._closing = True
        self._write_frame(0x8, b"" if code is None else close_payload(code, reason or ""))
        self._close_timer = asyncio.get_running_loop().call_later(CLOSE_WAIT, self.transport.abort)

    def _write_frame(self, opcode: int, payload: bytes) -> None:
        # Masked with a fresh random key (RFC 6455 §5.3's MUST), by websockets' C code.
        assert self.transport is not None
        self.transport.write(client_frame(opcode, payload))

    # Receiving

    def _read_head(self) -> None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD:
                self._handshake_failed(ConnectionError("The sidecar's handshake answer is too long."))
            return
        first, _, rest = bytes(self._buffer[:end]).decode("latin-1").partition("\r\n")
        try:
            start = httputil.parse_response_start_line(first)
            headers = httputil.HTTPHeaders.parse(rest)
        except httputil.HTTPInputError as exc:
            return self._handshake_failed(ConnectionError(f"Bad handshake answer from the sidecar: {exc}"))
        if start.code != 101:
            length = headers.get("Content-Length", "")
            body = self._buffer[end + 4 :]
            if length.isdigit() and len(body) < int(length) and not self._lost:
                return  # the refusal's body is still coming
            text = bytes(body[: int(length)] if length.isdigit() else body).decode("utf-8", "replace")
            return self._handshake_failed(Refused(start.code, text.strip() or start.reason or "WebSocket refused."))
        accept = base64.b64encode(hashlib.sha1(self.key.encode() + GUID).digest()).decode()
        if headers.get("Sec-WebSocket-Accept") != accept:
            return self._handshake_failed(ConnectionError("The sidecar's handshake answer does not match."))
        self.selected_subprotocol = headers.get("Sec-WebSocket-Protocol")
        del self._buffer[: end + 4]
        self._upgraded = True
        self.handshake.set_result(None)
        self._process()

    def _handshake_failed(self, exc: Exception | None = None) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(exc or ConnectionError("The sidecar closed the connection."))
        if self.transport is not None:
            self.transport.abort()

    def _process(self) -> None:
        buf = self._buffer
        while not self._paused and not self._ended:
            n = len(buf)
            if n < 2:
                break
            b0, b1 = buf[0], buf[1]
            length, pos = b1 & 0x7F, 2
            if length == 126:
                if n < 4:
                    break
                length, pos = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if n < 10:
                    break
                length, pos = int.from_bytes(buf[2:10], "big"), 10
            if b1 & 0x80 or b0 & 0x70:
                return self._fail(1002, "Masked or extended frame from the server.")
            if self._fragment_size + length > self.max_message:
                return self._fail(1009, "Message too big.")
            if n < pos + length:
                break
            with memoryview(buf) as view:
                payload = bytes(view[pos : pos + length])
            del buf[: pos + length]
            self._frame(bool(b0 & 0x80), b0 & 0x0F, payload)
        if self._lost and not self._paused and not self._ended:
            self._end()

    def _frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode >= 0x8:
            if not fin or len(payload) > 125:
                return self._fail(1002, "Bad control frame.")
            if opcode == 0x8:
                return self._close_received(payload)
            if opcode == 0x9 and not self._closing:
                self._write_frame(0xA, payload)
            elif opcode not in (0x9, 0xA):
                self._fail(1002, "Unknown control frame.")
            return
        if opcode == 0x0:
            if not self._fragments:
                return self._fail(1002, "Continuation without a first fragment.")
            self._fragments.append(payload)
            self._fragment_size += len(payload)
            if fin:
                payload, binary = b"".join(self._fragments), self._fragment_binary
                self._fragments, self._fragment_size = [], 0
                self._deliver(payload, binary)
            return
        if opcode not in (0x1, 0x2) or self._fragments:
            return self._fail(1002, "Unexpected frame.")
        if fin:
            return self._deliver(payload, opcode == 0x2)
        self._fragments, self._fragment_binary, self._fragment_size = [payload], opcode == 0x2, len(payload)

    def _deliver(self, payload: bytes, binary: bool) -> None:
        waiter = self.on_message(self, payload, binary)
        if waiter is None:
            return
        self._paused = True
        if self.transport is not None and not self._lost:
            self.transport.pause_reading()
        asyncio.ensure_future(waiter).add_done_callback(self._resume)

    def _resume(self, done: asyncio.Future[None]) -> None:
        if not done.cancelled():
            done.exception()  # the receiving side's failure is its close path's business
        self._paused = False
        if self.transport is not None and not self._lost:
            self.transport.resume_reading()
        self._process()

    def _close_received(self, payload: bytes) -> None:
        if len(payload) >= 2:
            self.close_code = struct.unpack("!H", payload[:2])[0]
            self.close_reason = payload[2:].decode("utf-8", "replace")
        if not self._closing:
            self._closing = True
            self._write_frame(0x8, payload[:2])  # echo the code (RFC 6455 §5.5.1)
        assert self.transport is not None
        self.transport.close()
        self._end()

    def _fail(self, code: int, reason: str) -> None:
        self.close(code, reason)
        self.close_code, self.close_reason = code, reason
        self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._buffer.clear()
            self.on_message(self, None, False)


async def connect(
    socket_path: str,
    path: str,
    headers: Iterable[tuple[str, str]],
    offered: list[str],
    on_message: OnMessage,
    *,
    timeout: float,
    max_message: int,
) -> SidecarWebSocket:
    """Open a WebSocket to the sidecar at ``path``; returns once the sidecar accepted it.

    Raises :class:`Refused` with the sidecar's status and text if it did not,
    ``OSError``/``ConnectionError``/``TimeoutError`` if it could not be reached.
    """
    loop = asyncio.get_running_loop()
    protocol = SidecarWebSocket(on_message, max_message)
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: jupyter-loopback",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {protocol.key}",
        "Sec-WebSocket-Version: 13",
    ]
    if offered:
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(offered))
    lines.extend(f"{name}: {value}" for name, value in headers)
    if any("\r" in line or "\n" in line for line in lines):
        raise ValueError("A header or the path holds a line break.")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    transport, _ = await asyncio.wait_for(loop.create_unix_connection(lambda: protocol, socket_path), timeout)
    try:
        transport.write(request)
        await asyncio.wait_for(protocol.handshake, timeout)
    except BaseException:
        transport.abort()
        raise
    return protocol
