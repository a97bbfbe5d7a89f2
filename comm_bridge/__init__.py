"""comm_bridge: loopback HTTP, WebSockets and requests over the kernel's widget comm.

For frontends with no jupyter-server (VS Code, Colab, marimo, Solara, Shiny)::

    import comm_bridge
    comm_bridge.enable_comm_bridge()

    @comm_bridge.on_request("mylib", "get_tile")
    def _(data, buffers):
        return {"ok": True}, [png_bytes]

The page then has ``window.__jupyter_loopback__`` with ``request``, ``fetch``
and ``openWebSocket``. ``intercept_localhost(port)`` makes the page's own
requests to ``http://127.0.0.1:<port>`` (``<img>``, ``fetch``, XHR,
WebSocket, EventSource) take the bridge too. Install with ``pip install "jupyter-loopback[comm]"``.
"""

from __future__ import annotations

from .intercept import intercept_localhost
from .widget import CommBridge, Handler, enable_comm_bridge, is_comm_bridge_enabled, off_request, on_request

__all__ = [
    "CommBridge",
    "Handler",
    "enable_comm_bridge",
    "intercept_localhost",
    "is_comm_bridge_enabled",
    "off_request",
    "on_request",
]
