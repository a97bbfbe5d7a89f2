"""``TCP_NODELAY`` on the jupyter server's kernel websockets (``/api/kernels/<id>/channels``).

A kernel's reply reaches the page as a few small websocket frames in a row
(``status: busy``, the message, ``status: idle``). With Nagle's algorithm on,
each small frame after the first waits for the browser's delayed ACK of the
one before, about 40 ms: a widget round trip of ~50 ms instead of ~10 ms.
Tornado leaves Nagle on for a websocket and jupyter_server does not turn it
off, so this module does, through jupyter_server's own extension point: the
``kernel_websocket_connection_class`` setting, which builds one connection per
kernel websocket and whose ``connect()`` the handler calls from ``open()``.

The class configured there (jupyter_server's, a gateway's, an admin's or
another extension's) is kept: it is subclassed with :class:`NoDelay` in front,
which calls tornado's public ``WebSocketHandler.set_nodelay(True)`` and then the
class's own ``connect()``. Both legs to the kernel are ZMQ, which turns Nagle
off on its TCP sockets itself.
"""

from __future__ import annotations

from typing import Any, cast

from tornado import web
from tornado.ioloop import IOLoop

__all__ = ["SETTING", "NoDelay", "install", "with_nodelay"]

SETTING = "kernel_websocket_connection_class"


class NoDelay:
    """Mixin for a kernel websocket connection class: Nagle off before ``connect()``.

    ``connect()`` runs from the handler's ``open()``, once the websocket is
    established and before any kernel message is relayed, so every frame of
    the session goes out without delay. The wrapped class's ``connect()`` is
    called unchanged and its result (a future, a coroutine or ``None``)
    returned as is.
    """

    websocket_handler: Any

    def connect(self) -> Any:
        handler: Any = getattr(self, "websocket_handler", None)
        # set_nodelay needs the established connection; tornado skips non-TCP
        # sockets (a server on a Unix socket) and a socket already closed.
        if getattr(handler, "ws_connection", None) is not None:
            handler.set_nodelay(True)
        return cast(Any, super()).connect()


def with_nodelay(cls: type) -> type:
    """``cls`` with :class:`NoDelay` in front; ``cls`` itself if it has it already.

    The subclass keeps ``cls``'s name, so its ``c.<Name>.*`` configuration and
    log lines stay the same, and shares its class-level state (open sessions).
    """
    if issubclass(cls, NoDelay):
        return cls
    return type(cls.__name__, (NoDelay, cls), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})


def _wrap(settings: dict[str, Any]) -> None:
    cls = settings.get(SETTING)
    if isinstance(cls, type):
        settings[SETTING] = with_nodelay(cls)


def install(web_app: web.Application) -> None:
    """Turn Nagle off on every kernel websocket of ``web_app``.

    Wraps the connection class now, and once more on the event loop's first
    turn, after every server extension has loaded: an extension loaded after
    this one that sets its own class keeps it, with Nagle off too.
    """
    _wrap(web_app.settings)
    IOLoop.current().add_callback(_wrap, web_app.settings)
