"""ASGI type aliases and the small wire shapes the sidecar speaks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypedDict

__all__ = ["ASGIApp", "ErrorBody", "Message", "Receive", "Scope", "Send"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ErrorBody(TypedDict):
    """The JSON body of every error the sidecar answers itself."""

    status: int
    error: str
