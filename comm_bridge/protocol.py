"""The wire format between ``static/bridge.js`` and the kernel.

Every message is an ipywidgets ``custom`` message on the bridge's comm: a JSON
object with an ``op`` and an ``id``, plus binary buffers. Ids are integers the
page draws from a random 52-bit start, so two pages attached to one kernel do
not collide, and integers keep ipykernel from tracking them as subshell
replies.

Both directions are flow-controlled by credit so memory stays bounded end to
end and the notebook server's IOPub rate limit (1000 messages/s, reset by each
``idle`` status) is never reached: the kernel keeps at most ``WINDOW`` bytes
and ``WINDOW_MESSAGES`` messages of one stream unacknowledged; the page keeps
at most ``WINDOW`` bytes of uploads or WebSocket frames in flight. Every
buffer is at most ``CHUNK`` bytes, well under jupyter-server's 10 MiB
WebSocket message cap.
"""

from __future__ import annotations

from typing import Literal, TypedDict

__all__ = [
    "ACK_BYTES",
    "ACK_MESSAGES",
    "CHUNK",
    "CREDIT_BYTES",
    "FRAME_COST",
    "WINDOW",
    "WINDOW_MESSAGES",
    "Ack",
    "Body",
    "Cancel",
    "Fetch",
    "Reply",
    "Request",
    "WsClose",
    "WsOpen",
    "WsSend",
]

CHUNK = 1 << 20
"""Largest buffer sent either way."""
WINDOW = 8 << 20
"""Bytes of one stream allowed in flight before the sender waits for credit."""
WINDOW_MESSAGES = 256
"""Kernel-to-page messages of one stream allowed in flight."""
ACK_BYTES = WINDOW // 2
"""The page acknowledges after consuming this many bytes…"""
ACK_MESSAGES = WINDOW_MESSAGES // 4
"""…or receiving this many messages of one stream."""
CREDIT_BYTES = WINDOW // 4
"""The kernel grants credit after sending this many uploaded bytes upstream."""
FRAME_COST = 64
"""What an empty WebSocket frame counts against the window, so empty frames are bounded too."""

Op = Literal["request", "fetch", "body", "ack", "cancel", "ws_open", "ws_send", "ws_close"]


class Request(TypedDict):
    """Page → kernel: call the handler registered for ``(ns, kind)``."""

    op: Literal["request"]
    id: int
    ns: str
    kind: str
    data: object


class Reply(TypedDict):
    """Kernel → page: a handler's answer; ``data`` is ``{"message": …}`` on error."""

    op: Literal["reply"]
    id: int
    status: Literal["ok", "error"]
    data: object


class Fetch(TypedDict):
    """Page → kernel: one HTTP request to ``127.0.0.1:<port><path>``; ``body`` says chunks follow."""

    op: Literal["fetch"]
    id: int
    port: int
    path: str
    method: str
    headers: list[list[str]]
    body: bool


class Body(TypedDict):
    """Page → kernel: request body chunks (the buffers); ``end`` marks the last."""

    op: Literal["body"]
    id: int
    end: bool


class Ack(TypedDict):
    """Page → kernel: bytes and messages of a stream the page has consumed."""

    op: Literal["ack"]
    id: int
    bytes: int
    messages: int


class Cancel(TypedDict):
    """Page → kernel: abandon a request, a response body or a connecting WebSocket."""

    op: Literal["cancel"]
    id: int


class WsOpen(TypedDict):
    """Page → kernel: open a WebSocket to ``ws://127.0.0.1:<port><path>``."""

    op: Literal["ws_open"]
    id: int
    port: int
    path: str
    protocols: list[str]


class WsSend(TypedDict):
    """Page → kernel: frames as ``[text, final]`` pairs, one buffer each.

    A message larger than ``CHUNK`` travels as several frames, all but the
    last with ``final`` 0. Text is UTF-8.
    """

    op: Literal["ws_send"]
    id: int
    frames: list[list[int]]


class WsClose(TypedDict):
    """Page → kernel: close with ``code`` and ``reason`` after the frames sent before it."""

    op: Literal["ws_close"]
    id: int
    code: int
    reason: str
