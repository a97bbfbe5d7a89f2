"""0.3.x's comm-bridge functions, forwarded to :mod:`comm_bridge` (imported when first called)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from comm_bridge import CommBridge

__all__ = [
    "RequestHandler",
    "enable_comm_bridge",
    "intercept_localhost",
    "is_comm_bridge_enabled",
    "off_request",
    "on_request",
]

RequestHandler = Callable[[dict[str, Any], list[bytes]], tuple[dict[str, Any], list[bytes]]]
"""0.3.x's handler: ``handler(data, buffers)`` returns ``(data, buffers)``."""

# 0.3.x kept this namespace for its own generic fetch and WebSocket kinds.
RESERVED = "__loopback__"


def enable_comm_bridge(*, display: bool = True) -> CommBridge:
    """Start this kernel's bridge once and return it (:func:`comm_bridge.enable_comm_bridge`)."""
    from comm_bridge import enable_comm_bridge as enable

    return enable(display=display)


def is_comm_bridge_enabled() -> bool:
    """Whether this kernel has a live bridge; never imports the bridge to find out."""
    if "comm_bridge" not in sys.modules:
        return False
    from comm_bridge import is_comm_bridge_enabled as enabled

    return enabled()


def on_request(namespace: str, kind: str) -> Callable[[RequestHandler], RequestHandler]:
    """Register ``handler(data, buffers) -> (data, buffers)`` for the page's ``request(namespace, kind, …)``.

    A decorator returning the handler unchanged; registering a pair again
    replaces its handler. Raises ``ValueError`` for 0.3.x's reserved
    namespace ``"__loopback__"``.
    """
    if namespace == RESERVED:
        raise ValueError(f"the {RESERVED!r} namespace is reserved; use your library's own namespace")
    from comm_bridge import on_request as register

    return register(namespace, kind)


def off_request(namespace: str, kind: str) -> bool:
    """Remove a handler; ``True`` if there was one."""
    from comm_bridge import off_request as unregister

    return unregister(namespace, kind)


def intercept_localhost(port: int, *, path_prefix: str | None = None, display: bool = True) -> Any:
    """Route the page's requests for ``http://127.0.0.1:<port>`` and ``localhost:<port>`` through the bridge.

    Through ``path_prefix`` (``<base_url><namespace>-proxy/<port>``) when its
    ``__probe__`` answers, else over the comm; see
    :func:`comm_bridge.intercept_localhost`. Returns the ``IPython.display.HTML``
    snippet, as 0.3.x did.
    """
    from comm_bridge import intercept_localhost as intercept

    return intercept(int(port), path_prefix=path_prefix, display=display)
