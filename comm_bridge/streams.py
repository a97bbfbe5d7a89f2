"""The dispatcher of every stream op: the page's ``fetch``, ``body``, ``ws_*``, ``ack`` and ``cancel`` messages.

:meth:`Streams.handle` runs on the kernel's shell thread and only validates
and hands over; sessions live on the runtime's loop thread and are served by
:func:`comm_bridge.fetch.serve_fetch` or
:func:`comm_bridge.websocket.serve_websocket`. Cancelling a session (the
page's ``cancel``, or :meth:`Runtime.close`) closes its upstream response or
connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .channel import Channel, Send
from .fetch import serve_fetch
from .flow import END, Session
from .runtime import Runtime
from .websocket import Upstream, serve_websocket

__all__ = ["Streams"]

log = logging.getLogger("comm_bridge")


class Streams(Channel):
    """Every fetch and WebSocket of one bridge."""

    def __init__(self, send: Send, runtime: Runtime, ports: object = None) -> None:
        super().__init__(send, runtime, ports)
        self.websockets: dict[int, Upstream] = {}
        """WebSockets by id, for the shell thread: added there at ``ws_open``, removed on the loop at the end."""

    def handle(self, op: object, msg: dict[str, Any], buffers: list[memoryview]) -> None:
        """Route one page message; raises ``KeyError``/``TypeError``/``ValueError`` on a malformed one."""
        id = msg["id"]
        call = self.runtime.call
        if op == "fetch":
            headers = [(str(k), str(v)) for k, v in msg.get("headers") or ()]
            method = str(msg.get("method") or "GET").upper()
            call(
                self._open,
                Session(id),
                serve_fetch,
                int(msg["port"]),
                str(msg["path"]),
                method,
                headers,
                bool(msg["body"]),
            )
        elif op == "body":
            items: list[Any] = [bytes(b) for b in buffers]
            call(self._feed, id, items + [END] if msg.get("end") else items)
        elif op == "ws_open":
            self._open_websocket(id, int(msg["port"]), str(msg["path"]), [str(p) for p in msg.get("protocols") or ()])
        elif op == "ws_send":
            frames = [(bool(text), bool(final), b) for (text, final), b in zip(msg["frames"], buffers, strict=True)]
            if (upstream := self.websockets.get(id)) is not None:  # a stream that ended drops late input
                upstream.send(frames)  # written from this thread: no handoff to the loop
        elif op == "ws_close":
            if (upstream := self.websockets.get(id)) is not None:
                upstream.close(int(msg.get("code") or 1000), str(msg.get("reason") or ""))
        elif op == "ack":
            call(self._ack, id, int(msg["bytes"]), int(msg["messages"]))
        elif op == "cancel":
            call(self._cancel, id)
        else:
            raise ValueError(f"unknown op {op!r}")

    async def aclose(self) -> None:
        """Cancel every stream and close the HTTP client (on the loop thread)."""
        tasks = [s.task for s in self.sessions.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.aclose_transport()

    def _open_websocket(self, id: int, port: int, path: str, protocols: list[str]) -> None:
        # The upstream object exists from here on, on the shell thread, so the
        # page's frames and close find it in order even while it connects.
        if id in self.websockets:
            return self.error(id, 400, "This stream id is already in use.")
        session = Session(id)
        upstream = self.websockets[id] = Upstream(self, session)
        self.runtime.call(self._open, session, serve_websocket, upstream, port, path, protocols)

    def _open(self, session: Session, serve: Callable[..., Any], *args: Any) -> None:
        id = session.id
        if id in self.sessions:
            if (upstream := self.websockets.get(id)) is not None and upstream.session is session:
                del self.websockets[id]
            return self.error(id, 400, "This stream id is already in use.")
        self.sessions[id] = session

        async def run() -> None:
            try:
                await serve(self, session, *args)
            except Exception as exc:  # never let one stream's bug reach the loop
                log.debug("comm_bridge: stream %s failed", id, exc_info=True)
                self.error(id, 0, f"The stream failed: {type(exc).__name__}: {exc}")
            finally:
                self.sessions.pop(id, None)
                upstream = self.websockets.get(id)
                if upstream is not None and upstream.session is session:
                    del self.websockets[id]

        session.task = asyncio.ensure_future(run())

    def _feed(self, id: int, items: list[Any]) -> None:
        session = self.sessions.get(id)
        if session is not None:  # a stream that ended drops late input
            for item in items:
                session.inbox.put_nowait(item)

    def _ack(self, id: int, size: int, messages: int) -> None:
        session = self.sessions.get(id)
        if session is not None:
            session.window.release(size, messages)

    def _cancel(self, id: int) -> None:
        session = self.sessions.get(id)
        if session is not None and session.task is not None:
            session.task.cancel()
