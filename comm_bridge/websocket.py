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

The connection is the project's one WebSocket client,
:mod:`loopback_asgi._transports.websocket`, in frame mode; this module is
the comm's side of it. The kernel's shell thread hands the page's frames to
the client, which writes them straight to the socket when nothing waits
before them, and the client hands the upstream's frames, one read at a time,
to :meth:`Upstream.relay` on the loop (no tasks or queues). An echo thus
wakes the loop thread once, for the answer, where a handoff to the loop and
two task switches cost about 0.3 ms more (docs/comm-bridge.md).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence

from websockets.exceptions import InvalidStatus

from loopback_asgi._transports.frames import close_code
from loopback_asgi._transports.websocket import DataFrame, open_upstream
from loopback_asgi._transports.websocket import FrameUpstream as Client

from .channel import Channel
from .flow import Session
from .protocol import CHUNK, CREDIT_BYTES, FRAME_COST
from .runtime import GRACE

__all__ = ["Upstream", "serve_websocket"]

PageFrame = tuple[bool, bool, "bytes | memoryview"]
"""``(text, final, piece)`` as the page sent it."""

MAX_MESSAGE = 2**30
CLOSE_TIMEOUT = 10.0
"""How long the upstream has to close the TCP connection after the close handshake."""
MAX_FRAMES = 1024
"""Frames in one ``ws_data`` message, so a burst of tiny frames still makes messages of sane size."""


class Upstream:
    """One page WebSocket's upstream connection. :meth:`send` and :meth:`close` are safe from any thread.

    Before the handshake completes they are kept, in order, and replayed
    when it does. ``lock`` guards that change and the credit count.
    """

    def __init__(self, streams: Channel, session: Session) -> None:
        self.streams = streams
        self.session = session
        self.loop = streams.runtime.loop
        self.lock = threading.Lock()
        self.client: Client | None = None
        self.opened = False
        self.early: list[Callable[[], object]] = []
        self.unreported = 0
        self.closing: asyncio.Future[tuple[int, str]] | None = None
        """The page's close (code, reason), on the loop."""
        # While the shell thread waits for the upstream's answer to the frames
        # it just sent (see ``send``), the loop leaves its messages here.
        self.handoff_lock = threading.Lock()
        self.handoff: list[tuple[dict[str, object], Sequence[bytes | memoryview]]] | None = None
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
        # The frames sent before are in the socket or wait for the loop, ahead of this.
        self.loop.call_soon_threadsafe(self._close, code, reason)

    def _send(self, frames: Sequence[PageFrame]) -> int:
        """Hand the frames to the client; the credit now due (lock held)."""
        if self.client is None:
            return 0  # over: what the page sent after the end is dropped
        self.client.send_frames(frames)
        self.unreported += sum(len(piece) + FRAME_COST for _, _, piece in frames)
        return self._credit()

    def _close(self, code: int, reason: str) -> None:
        if self.closing is not None and not self.closing.done():
            # The shared mapping of close codes; the page checked the code and the reason too.
            self.closing.set_result((close_code(code) or 1000, reason))

    def _credit(self) -> int:
        # Credit for what the socket took, so a stalled upstream stalls the page (lock held).
        if self.unreported < CREDIT_BYTES or self.client is None or self.client.buffered >= CREDIT_BYTES:
            return 0
        credit, self.unreported = self.unreported, 0
        return credit

    def drained(self) -> None:
        """The client's socket took what waited: credit the page for it (loop thread)."""
        with self.lock:
            credit = self._credit()
        if credit:
            self.streams.send({"op": "credit", "id": self.session.id, "bytes": credit}, ())

    def relay(self, received: list[DataFrame]) -> None:
        """Send the upstream's data frames to the page, at most ``CHUNK`` bytes per message (loop thread)."""
        frames: list[list[int]] = []
        pieces: list[bytes | memoryview] = []
        size = cost = 0
        for text, fin, payload in received:
            data = memoryview(payload)
            for at in range(0, max(len(data), 1), CHUNK):
                piece = data[at : at + CHUNK]
                if frames and (size + len(piece) > CHUNK or len(frames) >= MAX_FRAMES):
                    self._post(frames, pieces, cost)
                    frames, pieces, size, cost = [], [], 0, 0
                frames.append([int(text), int(fin and at + CHUNK >= len(data))])
                pieces.append(piece)
                size += len(piece)
                cost += len(piece) + FRAME_COST
        if frames:
            self._post(frames, pieces, cost)
        self.resume()

    def _post(self, frames: list[list[int]], pieces: list[bytes | memoryview], cost: int) -> None:
        self.session.window.take(cost)
        self.deliver({"op": "ws_data", "id": self.session.id, "frames": frames}, pieces)
        if not self.linger and time.monotonic() - self.sent_at < GRACE:
            self.linger = True  # answers come back quickly again: worth waiting for

    def deliver(self, content: dict[str, object], pieces: Sequence[bytes | memoryview]) -> None:
        """Send a message to the page after those the shell thread still holds for it (loop thread)."""
        with self.handoff_lock:
            if self.handoff is not None:  # the shell thread waits for this answer: it sends it
                self.handoff.append((content, pieces))
                self.answered.set()
                return
            self.streams.send(content, pieces)

    def resume(self) -> None:
        """Read while the page has room, stop while it is a window behind (loop thread)."""
        if self.client is not None:
            if self.session.window.full:
                self.client.pause_reading()
            else:
                self.client.resume_reading()

    def attach(self, client: Client) -> None:
        """Start relaying over ``client``: what the page sent so far first (loop thread)."""
        with self.lock:
            self.client = client
            self.opened = True
            early, self.early = self.early, []
            for replay in early:
                replay()
        client.on_drain = self.drained
        self.session.window.on_release = self.resume
        client.receive_frames(self.relay)
        self.resume()

    def shut(self) -> None:
        """Drop the connection, sending a close frame unless one was; late sends find nothing (loop thread)."""
        with self.lock:
            self.opened = True
            client, self.client = self.client, None
        if client is not None:
            client.shut()


async def serve_websocket(
    streams: Channel, session: Session, up: Upstream, port: int, path: str, protocols: list[str]
) -> None:
    """Connect upstream, then relay both ways until either side closes; cancelling sends a close and shuts."""
    id = session.id
    target = streams.resolve(id, port, path)
    if target is None:
        return None
    ns = target.namespace
    where = f"port {port}"
    if not ns.websocket:
        return streams.error(id, 403, "WebSockets are disabled by the administrator.")
    up.closing = asyncio.get_running_loop().create_future()
    client: Client | None = None
    try:
        try:
            client = await open_upstream(
                f"ws://{target.netloc}{target.target}",
                (),
                subprotocols=protocols or None,
                max_size=MAX_MESSAGE,
                ping_interval=None,
                timeout=ns.connect_timeout + ns.header_timeout,
                frames=True,
            )
        except InvalidStatus as exc:
            return streams.error(id, 502, f"The server on {where} refused the WebSocket ({exc.response.status_code}).")
        except TimeoutError:
            return streams.error(id, 504, f"Connecting to {where} timed out.")
        except Exception:  # refused, reset, or not a WebSocket handshake
            return streams.error(id, 502, f"Nothing is accepting WebSockets on {where}.")
        streams.send({"op": "ws_open", "id": id, "protocol": client.subprotocol or ""}, ())
        up.attach(client)
        await asyncio.wait((up.closing, client.ending), return_when=asyncio.FIRST_COMPLETED)
        code, reason = up.closing.result() if up.closing.done() else (1000, "")
        await client.close(code, reason, timeout=CLOSE_TIMEOUT)
    finally:
        up.shut()
    close = client.close_rcvd
    code, reason = (close.code, close.reason) if close is not None else (1006, "")
    up.deliver({"op": "ws_closed", "id": id, "code": code, "reason": reason}, ())
