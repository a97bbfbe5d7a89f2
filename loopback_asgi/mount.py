"""One line to serve the sidecar inside another Starlette app (Solara, Shiny, marimo, FastAPI).

``mount_into(app)`` puts ``create_app()`` at ``/loopback`` of an app that is
already running in this process, so ``/loopback/<namespace>/<port>/<path>``
reaches ``127.0.0.1:<port>`` over the app's own HTTP and WebSocket server:
streaming both ways, no comm and no size limit. It also announces the mount
in this process (:func:`loopback_asgi.kernel.announce_mount`), so
``browser_url`` called in the same process returns the mounted path.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute, Mount

from loopback_asgi.kernel import announce_mount
from loopback_asgi.sidecar.app import Sidecar, create_app

__all__ = ["mount_into"]


def mount_into(app: Any, path: str = "/loopback", *, public_path: str | None = None, **options: Any) -> Sidecar:
    """Serve ``create_app(**options)`` at ``path`` of ``app``; returns the sidecar. Idempotent per ``path``.

    ``app`` is a Starlette app (Solara's ``solara.server.starlette.app``,
    what ``marimo.create_asgi_app().build()`` returns, a FastAPI app) or an
    object holding one as ``starlette_app`` (a ``shiny.App``). The mount goes
    first among its routes, so the app's own catch-all routes do not hide
    it; mounting the same ``path`` again replaces the earlier mount. It may
    be done while the app is serving: Starlette reads its routes per request.
    ``public_path`` is where the browser sees ``path`` when the app itself is
    served under a prefix (default: ``path``).

    The mount is as public as the app: anyone who can load the app's pages
    can reach the namespaces' ports through it (the port policy, the
    cross-site checks and the header hygiene of the sidecar apply; pass
    ``token=`` to require a token as well). The sidecar's pooled upstream
    connections close with the process; its lifespan is not entered.
    """
    target = getattr(app, "starlette_app", app)
    routes: list[BaseRoute] = target.router.routes
    path = "/" + path.strip("/")
    sidecar = create_app(**options)
    mount = Mount(path, app=sidecar)
    routes[:] = [mount, *(r for r in routes if not (isinstance(r, Mount) and r.path == path))]
    announce_mount(public_path or path, sidecar.state.namespaces)
    return sidecar
