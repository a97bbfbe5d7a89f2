"""The sidecar: a Starlette app that relays ``/<namespace>/<port>/…`` to a loopback upstream.

It imports neither uvicorn's nor tornado's internals, so it mounts in any ASGI
server (marimo, Solara and Shiny are Starlette apps). The server-side
protocols that uvicorn runs for it live in :mod:`loopback_asgi.protocols`; the
upstream clients in :mod:`loopback_asgi._transports`.
"""

from __future__ import annotations

from loopback_asgi.sidecar.app import Sidecar, create_app

__all__ = ["Sidecar", "create_app"]
