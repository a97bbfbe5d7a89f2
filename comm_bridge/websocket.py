"""Generic loopback WebSockets over the comm: the kernel half of ``openWebSocket``.

Guarantees:

- The upstream is connected before the page hears ``open``; a refused or
  failed handshake reaches the page as ``error`` then ``close`` (1006).
- The page's socket gets the subprotocol the upstream chose.
- Frames keep their type and order both ways; a message of any size travels
  in ``CHUNK`` pieces (as continuation frames upstream) and is whole again on
  the other side. No comm message carries more than ``CHUNK`` bytes.
- A close from either side is relayed with its code and reason; the page's
  close goes upstream only after the frames it sent before it.
- Nothing blocks the thread that hands frames over: what the socket cannot
  take at once waits, in order, for the loop to write it, and the page gets
  credit only for what left that queue.

Frames from the page are written to the upstream socket by the thread that
received them, the kernel's shell thread, and the upstream's frames are
relayed to the page straight from the loop's read callback (websockets'
sans-I/O protocol, no tasks or queues). An echo thus wakes the loop thread
once, for the answer, where a handoff to the loop and two task switches cost
about 0.3 ms more (docs/comm-bridge.md).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from loopback_asgi.sidecar.target import TargetError

from .channel import Channel
from .flow import Session
from .protocol import CHUNK, CREDIT_BYTES, FRAME_COST
from .runtime import GRACE

__all__ = ["Upstream", "serve_websocket"]

log = logging.getLogger("comm_bridge")

PageFrame = tuple[bool, bool, "bytes | memoryview"]
"""``(text, final, piece)`` as the page sent it."""

MAX_MESSAGE = 2**30
READ_SIZE = 1 << 18
CLOSE_TIMEOUT = 10.0
"""How long the upstream has to close the TCP connection after the close handshake."""
MAX_FRAMES = 1024
"""Frames in one ``ws_data`` message, so a burst of tiny frames still makes messages of sane size."""
IOV_MAX = 512


def _close_code(code: int) -> int:
    # Only these may be sent by an endpoint (RFC 6455 §7.4); the page checked too.
    return code if code == 1000 or 3000 <= code <= 4999 else 1000


class Upstream:
    """One page WebSocket's upstream connection. :meth:`send` and :meth:`close` are safe from any thread.

    Before the handshake completes they are kept, in order, and replayed
    when it does. ``lock`` guards the sans-I/O protocol and the socket's
    write side; the socket is read only on the loop.
    """

    def __init__(self, streams: Channel, session: Session) -> None:
        self.streams = streams
        self.session = session
        self.loop = streams.runtime.loop
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.protocol: ClientProtocol | None = None
        self.opened = False
        self.early: list[Callable[[], object]] = []
        self.out: deque[memoryview] = deque()
        self.queued = 0
        self.writing = False  # the loop waits for the socket to take ``out``
        self.reading = False
        self.unreported = 0
        self.continuing = False  # the page's fragmented message goes on
        self.text_in = False  # type of the upstream's fragmented message
        self.ended: asyncio.Future[None] | None = None
        self.close_timer: asyncio.TimerHandle | None = None
        # While the shell thread waits for the upstream's answer to the frames
        # it just wrote (see ``send``), the loop leaves its messages here.
        self.handoff_lock = threading.Lock()
        self.handoff: list[tuple[dict[str, object], list[bytes | memoryview]]] | None = None
        self.answered = threading.Event()
        self.linger = True  # the last wait saw an answer (or none was tried yet)
        self.sent_at = 0.0

    def send(self, frames: Sequence[PageFrame]) -> None:
        """Send the page's frames upstream, after everything it sent before.

        Then, on the shell thread, wait up to ``GRACE`` for the upstream's
        answer and send it to the page from here, as a request's fast reply
        is sent: the loop thread would otherwise send it while this thread
        publishes the kernel's idle status, the two fighting for the GIL. A
        session whose last wait saw no answer does not wait again until an
        answer comes within ``GRACE`` of the page's frames, so one-way
        traffic pays for one wait at most.
        """
        wait = self.linger
        with self.lock:
            if not self.opened:
                copied = [(text, final, bytes(piece)) for text, final, piece in frames]
                self.early.append(lambda: self._send(copied))
                return
            if wait:
                self.answered.clear()
                with self.handoff_lock:
                    self.handoff = []
            self.sent_at = time.monotonic()
            credit = self._send(frames)
        if credit:
            self.streams.send({"op": "credit", "id": self.session.id, "bytes": credit}, ())
        if wait:
            self.linger = self.answered.wait(GRACE)
            with self.handoff_lock:
                left, self.handoff = self.handoff or [], None
                for content, pieces in left:  # under the lock: the loop's next message goes after these
                    self.streams.send(content, pieces)

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake after the frames sent before; the upstream has ``CLOSE_TIMEOUT`` to end it."""
        with self.lock:
            if not self.opened:
                self.early.append(lambda: self._close(code, reason))
                return
            self._close(code, reason)

    def _send(self, frames: Sequence[PageFrame]) -> int:
        protocol = self.protocol
        if protocol is None or protocol.state is not State.OPEN or self.sock is None:
            return 0  # closing: what the page sent after its close or the upstream's is dropped
        for text, final, piece in frames:
            if self.continuing:
                protocol.send_continuation(piece, fin=final)
            elif text:
                protocol.send_text(piece, fin=final)
            else:
                protocol.send_binary(piece, fin=final)
            self.continuing = not final
            self.unreported += len(piece) + FRAME_COST
        self._write(protocol.data_to_send())
        return self._credit()

    def _close(self, code: int, reason: str) -> None:
        protocol = self.protocol
        if protocol is None or protocol.state is not State.OPEN or self.sock is None:
            return
        # A close frame holds 123 bytes of reason (RFC 6455 §5.5); the page checked too.
        protocol.send_close(_close_code(code), reason.encode()[:123].decode(errors="ignore"))
        self._write(protocol.data_to_send())
        self._on_loop(self._expect_close)

    def _credit(self) -> int:
        # Credit for what the socket took, so a stalled upstream stalls the page.
        if self.unreported < CREDIT_BYTES or self.queued >= CREDIT_BYTES:
            return 0
        credit, self.unreported = self.unreported, 0
        return credit

    def _write(self, data: list[bytes]) -> None:
        """Queue ``data`` and write as much as the socket takes now; the loop writes the rest (lock held)."""
        for chunk in data:
            if chunk:  # b"" asks for a half-close, which only a failed handshake does here
                self.out.append(memoryview(chunk))
                self.queued += len(chunk)
        if not self.writing:
            self._flush()
            if self.out:
                self.writing = True
                self._on_loop(self._watch_writable)

    def _flush(self) -> None:
        sock = self.sock
        while self.out and sock is not None:
            try:
                sent = sock.sendmsg(list(self.out)[:IOV_MAX])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # the upstream went away: the reader sees it too
                self.out.clear()
                self.queued = 0
                self._on_loop(self._end)
                return
            self.queued -= sent
            while sent:
                head = self.out[0]
                if sent >= len(head):
                    sent -= len(head)
                    self.out.popleft()
                else:
                    self.out[0] = head[sent:]
                    sent = 0

    def _on_loop(self, fn: Callable[[], None]) -> None:
        if threading.get_ident() == self.streams.runtime.thread.ident:
            fn()
        else:
            self.loop.call_soon_threadsafe(fn)

    def _watch_writable(self) -> None:
        if self.sock is not None:
            self.loop.add_writer(self.sock.fileno(), self._writable)

    def _writable(self) -> None:
        with self.lock:
            self._flush()
            if not self.out and self.sock is not None:
                self.loop.remove_writer(self.sock.fileno())
                self.writing = False
            credit = self._credit()
        if credit:
            self.streams.send({"op": "credit", "id": self.session.id, "bytes": credit}, ())

    def _readable(self) -> None:
        try:
            self._read()
        except Exception:  # a bug here must end this stream, not spin the loop on a readable socket
            log.debug("comm_bridge: WebSocket %s failed", self.session.id, exc_info=True)
            self._end()

    def _read(self) -> None:
        assert self.sock is not None and self.protocol is not None
        try:
            data = self.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        with self.lock:
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            events = self.protocol.events_received()
            self._write(self.protocol.data_to_send())
        self.relay(events)
        if not data:
            self._end()
        elif self.protocol.close_expected():
            self._expect_close()

    def relay(self, events: Sequence[object]) -> None:
        """Send the upstream's data frames to the page, at most ``CHUNK`` bytes per message (loop thread)."""
        frames: list[list[int]] = []
        pieces: list[bytes | memoryview] = []
        size = cost = 0
        for event in events:
            if not isinstance(event, Frame) or event.opcode not in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                continue  # the protocol answers pings and closes itself
            if event.opcode is not Opcode.CONT:
                self.text_in = event.opcode is Opcode.TEXT
            data = memoryview(event.data)
            for at in range(0, max(len(data), 1), CHUNK):
                piece = data[at : at + CHUNK]
                if frames and (size + len(piece) > CHUNK or len(frames) >= MAX_FRAMES):
                    self._post(frames, pieces, cost)
                    frames, pieces, size, cost = [], [], 0, 0
                frames.append([int(self.text_in), int(event.fin and at + CHUNK >= len(data))])
                pieces.append(piece)
                size += len(piece)
                cost += len(piece) + FRAME_COST
        if frames:
            self._post(frames, pieces, cost)
        self.resume()

    def _post(self, frames: list[list[int]], pieces: list[bytes | memoryview], cost: int) -> None:
        self.session.window.take(cost)
        content: dict[str, object] = {"op": "ws_data", "id": self.session.id, "frames": frames}
        with self.handoff_lock:
            if self.handoff is not None:  # the shell thread waits for this answer: it sends it
                self.handoff.append((content, pieces))
                self.answered.set()
                return
            self.streams.send(content, pieces)
        if not self.linger and time.monotonic() - self.sent_at < GRACE:
            self.linger = True  # answers come back quickly again: worth waiting for

    def resume(self) -> None:
        """Read while the page has room, stop while it is a window behind (loop thread)."""
        want = self.sock is not None and self.protocol is not None and not self.session.window.full
        if want and not self.reading:
            self.loop.add_reader(self.sock.fileno(), self._readable)  # type: ignore[union-attr]
        elif self.reading and not want and self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
        self.reading = want

    def _expect_close(self) -> None:
        if self.close_timer is None and self.ended is not None:
            self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self._end)

    def _end(self) -> None:
        if self.ended is not None and not self.ended.done():
            self.ended.set_result(None)

    def shut(self) -> None:
        """Stop watching the socket and close it; a close frame goes first if none was (loop thread)."""
        if self.close_timer is not None:
            self.close_timer.cancel()
        with self.lock:
            self.opened = True  # late sends and closes find no socket
            sock, self.sock = self.sock, None
            if sock is None:
                return
            if self.protocol is not None and self.protocol.state is State.OPEN:
                self.protocol.send_close(1000)
                for chunk in self.protocol.data_to_send():
                    self.out.append(memoryview(chunk))
            if self.reading:
                self.loop.remove_reader(sock.fileno())
            if self.writing:
                self.loop.remove_writer(sock.fileno())
            self.reading = self.writing = False
            try:  # best effort, never waiting: the upstream learns of the end from the close or the FIN
                sock.sendmsg(list(self.out)[:IOV_MAX])
            except OSError:
                pass
            self.out.clear()
            sock.close()


async def _connect(up: Upstream, host: str, port: int, uri: str, protocols: list[str]) -> Sequence[object]:
    """TCP connect and the opening handshake; the events that came with the response."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = up.sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a small frame must not wait for an ACK
    await loop.sock_connect(sock, (host, port))
    protocol = ClientProtocol(parse_uri(uri), subprotocols=protocols or None, max_size=MAX_MESSAGE)  # type: ignore[arg-type]
    protocol.send_request(protocol.connect())
    for data in protocol.data_to_send():
        await loop.sock_sendall(sock, data)
    while protocol.state is State.CONNECTING and protocol.handshake_exc is None:
        data = await loop.sock_recv(sock, READ_SIZE)
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
    if protocol.handshake_exc is not None:
        raise protocol.handshake_exc
    up.protocol = protocol
    return protocol.events_received()[1:]  # the response first, then any frames sent right after it


async def serve_websocket(
    streams: Channel, session: Session, up: Upstream, port: int, path: str, protocols: list[str]
) -> None:
    """Connect upstream, then relay both ways until either side closes; cancelling sends a close and shuts."""
    id = session.id
    try:
        target = streams.target(port, path)
    except TargetError as exc:
        return streams.error(id, exc.status, exc.message)
    ns = target.namespace
    where = f"port {port}"
    if not ns.websocket:
        return streams.error(id, 403, "WebSockets are disabled by the administrator.")
    up.ended = asyncio.get_running_loop().create_future()
    try:
        try:
            connecting = _connect(up, ns.host, port, f"ws://{target.netloc}{target.target}", protocols)
            events = await asyncio.wait_for(connecting, ns.connect_timeout + ns.header_timeout)
        except InvalidStatus as exc:
            return streams.error(id, 502, f"The server on {where} refused the WebSocket ({exc.response.status_code}).")
        except asyncio.TimeoutError:
            return streams.error(id, 504, f"Connecting to {where} timed out.")
        except Exception:  # refused, reset, or not a WebSocket handshake
            return streams.error(id, 502, f"Nothing is accepting WebSockets on {where}.")
        assert up.protocol is not None
        streams.send({"op": "ws_open", "id": id, "protocol": up.protocol.subprotocol or ""}, ())
        with up.lock:
            up.opened = True
            early, up.early = up.early, []
            for replay in early:
                replay()
        session.window.on_release = up.resume
        up.relay(events)
        await up.ended
    finally:
        up.shut()
    assert up.protocol is not None
    close = up.protocol.close_rcvd
    code, reason = (close.code, close.reason) if close is not None else (1006, "")
    streams.send({"op": "ws_closed", "id": id, "code": code, "reason": reason}, ())
