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
    "Credit",
    "Data",
    "Error",
    "Fetch",
    "Head",
    "Reply",
    "Request",
    "WsClose",
    "WsClosed",
    "WsData",
    "WsOpen",
    "WsOpened",
    "WsSend",
]

CHUNK = 1 << 20
"""Largest buffer the kernel sends; the page sends pieces of at most 256 KiB (``SEND_CHUNK`` in static/bridge.js)."""
WINDOW = 16 << 20
"""Bytes of one stream allowed in flight before the sender waits for credit."""
WINDOW_MESSAGES = 256
"""Kernel-to-page messages of one stream allowed in flight."""
ACK_BYTES = WINDOW * 3 // 4
"""The page acknowledges after consuming this many bytes…

Each acknowledgement costs the kernel about as much CPU as a request (ipykernel
handles it as a shell message), so they are rare: one per 12 MiB. What is
left of the window covers the acknowledgement's round trip.
"""
ACK_MESSAGES = WINDOW_MESSAGES // 4
"""…or receiving this many messages of one stream."""
CREDIT_BYTES = WINDOW // 4
"""The kernel grants credit after sending this many uploaded bytes upstream."""
FRAME_COST = 64
"""What an empty WebSocket frame counts against the window, so empty frames are bounded too."""

Op = Literal["request", "fetch", "body", "ack", "cancel", "ws_open", "ws_send", "ws_close"]


class Request(TypedDict):
    """Page → kernel: call the handler registered for ``(ns, kind)``.

    Buffers totalling more than ``CHUNK`` are announced by a ``sizes`` list
    instead and follow as :class:`Body` messages, paced by credit; a
    :class:`Reply` that large likewise carries ``sizes`` and is followed by
    :class:`Data` messages.
    """

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


class Head(TypedDict):
    """Kernel → page: the upstream's status line and headers (decoded body: no Content-Encoding)."""

    op: Literal["head"]
    id: int
    status: int
    reason: str
    headers: list[list[str]]


class Data(TypedDict):
    """Kernel → page: response body chunks (the buffers, possibly none); ``end`` marks the last."""

    op: Literal["data"]
    id: int
    end: bool


class Credit(TypedDict):
    """Kernel → page: bytes of uploads or WebSocket frames passed upstream since the last credit."""

    op: Literal["credit"]
    id: int
    bytes: int


class Error(TypedDict):
    """Kernel → page: a stream failed; ``status`` (400/403/502/504) before its head, 0 after."""

    op: Literal["error"]
    id: int
    status: int
    message: str


class WsOpened(TypedDict):
    """Kernel → page: the upstream accepted the WebSocket with ``protocol`` ("" for none)."""

    op: Literal["ws_open"]
    id: int
    protocol: str


class WsData(TypedDict):
    """Kernel → page: frames as ``[text, final]`` pairs, one buffer each, as in :class:`WsSend`."""

    op: Literal["ws_data"]
    id: int
    frames: list[list[int]]


class WsClosed(TypedDict):
    """Kernel → page: the connection closed with ``code`` (1006: without a close frame)."""

    op: Literal["ws_closed"]
    id: int
    code: int
    reason: str
