"""The ASGI scope extensions the sidecar app may use, declared in one place.

A server that offers one puts its name in ``scope["extensions"]``; the app
uses it only then, so under any other ASGI server (marimo, Solara, Shiny,
plain uvicorn) it relays message by message. ``jupyter-loopback serve``
offers both through :mod:`loopback_asgi.protocols`.
"""

from __future__ import annotations

__all__ = ["PIPE", "SPLICE"]

SPLICE = "loopback.splice"
"""``await send_rest(take)``: the rest of a ``Content-Length`` body moves from the
upstream's socket to the client's inside the kernel (``os.splice``)."""

PIPE = "loopback.pipe"
"""``{"type": "loopback.pipe", "pipe": Pipe(...)}``: after both handshakes, a
WebSocket session passes as bytes (:class:`loopback_asgi._transports.pipe.Pipe`)."""
