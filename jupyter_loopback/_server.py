"""0.3.x's ``setup_proxy_handler``, served by :func:`loopback_asgi.jupyter.setup_proxy_handler`.

Imported only in a jupyter-server process (it imports tornado).
"""

from __future__ import annotations

from typing import ClassVar, cast

from tornado import web

from loopback_asgi import jupyter

__all__ = ["LoopbackProxyHandler", "setup_proxy_handler"]


class LoopbackProxyHandler(web.RequestHandler):
    """The base of every class :func:`setup_proxy_handler` returns.

    A library may pass a subclass as ``handler_cls`` to add its own checks
    (``prepare``); the relay behind it is the sidecar's, for HTTP and WebSocket.
    """

    namespace: ClassVar[str] = ""


def setup_proxy_handler(
    web_app: web.Application,
    namespace: str,
    *,
    handler_cls: type[LoopbackProxyHandler] = LoopbackProxyHandler,
) -> type[LoopbackProxyHandler]:
    """Serve ``<base_url><namespace>-proxy/<port>/…`` (and ``loopback/<namespace>/…``) on this server.

    Returns the namespace's handler class, a subclass of ``handler_cls``.
    Calling it again for the same namespace, or for one its library also
    declares by entry point, returns the same class and changes nothing.
    Raises ``ValueError`` if ``namespace`` does not match ``[a-z0-9][a-z0-9-]*``.
    """
    # A namespace first set up through loopback_asgi keeps that class.
    return cast(type[LoopbackProxyHandler], jupyter.setup_proxy_handler(web_app, namespace, handler_cls=handler_cls))
