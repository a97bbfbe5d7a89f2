"""A WebSocket connection to a loopback upstream, either mode: websockets' Sans-I/O client on an asyncio ``Protocol``.

websockets' ``ClientProtocol`` does the handshake, framing, masking, ping
replies, size limits and the closing handshake; :class:`Connection` moves
its bytes with no task of its own, keeps the connection alive with pings and
runs the closing handshake. What becomes of the data is the mode's:
whole messages (:class:`~.messages.Upstream`) or data frames
(:class:`~.frame_mode.FrameUpstream`).
"""

from __future__ import annotations

import asyncio
import os
from typing import cast

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, ProtocolError
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State

from loopback_asgi._transports.flow import WriteFlow
from loopback_asgi._transports.frames import cut_reason, frame_head

__all__ = ["Closed", "Connection"]

# Whole, unfragmented data frames up to this size are split off the input
# here and become messages at once; websockets' parser takes everything else
# (control frames, fragments, larger or invalid frames), always from a frame
# boundary, so it sees a valid stream and keeps its checks and its state.
FAST_FRAME = 64 * 1024
# A handshake answer longer than this goes to the parser as is (it refuses it).
MAX_HEAD = 64 * 1024


class Closed(Exception):
    """The upstream connection is over: no more messages."""


class Connection(WriteFlow, asyncio.Protocol):
    """A client WebSocket connection; a mode's subclass hands out what it reads.

    The subclass says what a whole small data frame becomes
    (:meth:`_message`), what a frame from the parser becomes
    (:meth:`_data_frame`), and what happens after each read
    (:meth:`_process`); both run on the loop.
    """

    def __init__(self, protocol: ClientProtocol, *, ping_interval: float | None) -> None:
        self._loop = asyncio.get_running_loop()
        self.protocol = protocol
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[None] = self._loop.create_future()
        self.lost: asyncio.Future[None] = self._loop.create_future()
        self._opcode = Opcode.TEXT  # of the message the data frames belong to
        self._paused = False  # reading paused for a slow consumer of messages
        self._discard = False
        self._head: bytearray | None = bytearray()  # the handshake answer so far; None once past it
        self._split_frames = False  # past a good handshake: frames are split off here
        self._input = bytearray()  # read, not yet handed out, starting at a frame boundary
        self._owed = 0  # bytes of a frame the parser has begun and still needs
        self._ping_interval = ping_interval
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_due: bytes | None = None

    @property
    def subprotocol(self) -> str | None:
        return self.protocol.subprotocol

    @property
    def close_rcvd(self) -> Close | None:
        return self.protocol.close_rcvd

    async def close(self, code: int | None = 1000, reason: str = "", *, timeout: float = 2) -> None:
        """Start (or finish) the closing handshake, wait up to ``timeout`` s for the upstream, then drop it.

        ``code`` None sends a close frame with no status; a long ``reason``
        is cut at a character boundary (:func:`cut_reason`).

        What was read and not handed out is dropped, and reading resumes if
        it was paused: the upstream's answer is read even behind a full queue.
        """
        self._discard = True
        self._drop_unread()
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        self._split()  # what was read goes to the parser, which finds the close frame
        self._process()
        if self.protocol.state is State.OPEN:
            try:
                self.protocol.send_close(code, cut_reason(reason) if code is not None else "")
            except ProtocolError:  # a code no endpoint may send (RFC 6455 §7.4.1)
                self.protocol.send_close(1000, cut_reason(reason))
            self._flush()
        if not self.lost.done():
            try:
                await asyncio.wait_for(asyncio.shield(self.lost), timeout)
            except asyncio.TimeoutError:
                pass
        self.abort()

    def abort(self) -> None:
        self._stop_pings()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    # -- what a mode does ------------------------------------------------

    def _message(self, text: bool, data: bytes) -> None:  # pragma: no cover - every mode has its own
        """A whole data frame split off the input here."""
        raise NotImplementedError

    def _data_frame(self, frame: Frame) -> None:  # pragma: no cover - every mode has its own
        """A data frame from the parser: a fragment, a large or a compressed frame."""
        raise NotImplementedError

    def _process(self) -> None:  # pragma: no cover - every mode has its own
        """After each read: take the parser's events (:meth:`_events`), write its answers (:meth:`_flush`), hand out."""
        raise NotImplementedError

    def _drop_unread(self) -> None:
        """On :meth:`close`: let go of what was read and not handed out."""

    def _ended(self) -> None:
        """The connection is over: wake the consumer."""

    # -- asyncio.Protocol ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have asyncio.Transport's methods but not its class.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._split_frames:
            if self._owed:
                take = min(self._owed, len(data))
                self.protocol.receive_data(data[:take])
                self._owed -= take
                data = data[take:]
                self._events()
            self._input += data
            self._split()
        elif self._head is not None:
            self._handshake_bytes(data)
        else:
            self.protocol.receive_data(data)
        self._process()

    def eof_received(self) -> bool:
        rest = bytes(self._head or b"") + bytes(self._input)
        self._head, self._split_frames = None, False
        self._input.clear()
        if rest:
            self.protocol.receive_data(rest)
        self.protocol.receive_eof()
        self._process()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_pings()
        if not self.handshake.done():
            self.handshake.set_exception(InvalidHandshake("The upstream closed the connection during the handshake."))
        if not self.lost.done():
            self.lost.set_result(None)
        self._ended()
        self.writer_lost()

    def _handshake_bytes(self, data: bytes) -> None:
        """Give the parser the handshake answer alone; frames read with it wait in ``_input``."""
        assert self._head is not None
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0 and len(self._head) <= MAX_HEAD:
            return
        cut = end + 4 if end >= 0 else len(self._head)
        head, rest = bytes(self._head[:cut]), bytes(self._head[cut:])
        self._head = None
        self.protocol.receive_data(head)
        self._events()
        if self.protocol.state is State.OPEN:
            self._split_frames = True
            self._input += rest
            self._split()
        elif rest:
            self.protocol.receive_data(rest)

    def _split(self) -> None:
        """Turn whole small data frames at the front of ``_input`` into messages; pass anything else to the parser."""
        buf = self._input
        while len(buf) >= 2 and not self._paused and self._split_frames:
            parsed = frame_head(buf)  # a masked frame from a server counts its mask; the parser refuses it
            if parsed is None:
                return
            pos, n = parsed
            b0, b1 = buf[0], buf[1]
            end = pos + n
            opcode = b0 & 0x0F
            fast = (
                b0 & 0xF0 == 0x80  # FIN, no RSV bits
                and opcode in (0x1, 0x2)
                and not b1 & 0x80
                and n <= FAST_FRAME
                and (self.protocol.max_message_size is None or n <= self.protocol.max_message_size)
                and self.protocol.current_size is None  # not inside a fragmented message
                and self.protocol.state is State.OPEN
                and not self._discard
            )
            if fast:
                if len(buf) < end:
                    return
                payload = bytes(buf[pos:end])
                del buf[:end]
                self._message(opcode == 0x1, payload)
            else:
                take = min(end, len(buf))
                self.protocol.receive_data(bytes(buf[:take]))
                del buf[:take]
                self._owed = end - take
                self._events()  # in order: its frame counts before the next one
                if self._owed:
                    return

    # -- the protocol's events and output --------------------------------

    def _events(self) -> None:
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                self._handshake_done()
            elif isinstance(event, Frame):
                self._frame(event)

    def _handshake_done(self) -> None:
        if self.handshake.done():
            return
        if self.protocol.handshake_exc is not None:
            self.handshake.set_exception(self.protocol.handshake_exc)
        else:
            self.handshake.set_result(None)
            self._schedule_ping()

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.PONG:
            if self._pong_due is not None and frame.data == self._pong_due:
                self._pong_due = None
            return
        if opcode in (Opcode.TEXT, Opcode.BINARY):
            self._opcode = opcode
        elif opcode is not Opcode.CONT:
            return  # PING is answered by the protocol itself, CLOSE is kept in close_rcvd
        self._data_frame(frame)

    def _flush(self) -> None:
        """Write what the protocol has to send (a handshake, a pong, a close frame)."""
        if self.transport is None or self.transport.is_closing():
            return
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()  # the protocol's end of the closing handshake

    # -- keepalive -------------------------------------------------------

    def _schedule_ping(self) -> None:
        if self._ping_interval:
            self._ping_timer = self._loop.call_later(self._ping_interval, self._ping)

    def _ping(self) -> None:
        if self.protocol.state is not State.OPEN:
            return
        # No pong for a whole interval: the upstream is gone. Unless reading
        # is paused for a slow consumer: the pong may be waiting unread, so
        # a fresh ping replaces the one due.
        if self._pong_due is not None and not self._paused:
            self.protocol.fail(1011, "keepalive ping timeout")
            self._flush()
            self.abort()
            return
        self._pong_due = os.urandom(4)
        self.protocol.send_ping(self._pong_due)
        self._flush()
        self._schedule_ping()

    def _stop_pings(self) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
