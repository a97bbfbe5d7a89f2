"""The namespace jupyter-loopback declares itself: ``app``, for a user's own servers.

A notebook user who starts a Dash, Panel or FastAPI app by hand reaches it at
``<base_url>loopback/app/<port>/`` with nothing to declare. Hub admins who do
not want it disable it like any other namespace.
"""

from __future__ import annotations

from loopback_asgi.namespaces import Namespace

__all__ = ["APP"]

APP = Namespace()
