"""The jupyter-loopback 0.3.x API, unchanged, on this project's sidecar and comm bridge.

Code written for 0.3.x (localtileserver 1.0.0, for one) imports these names
and keeps working without a changed line:

- :func:`setup_proxy_handler` in a library's server extension serves
  ``<base_url><namespace>-proxy/<port>/…`` through the loopback sidecar, with
  its auth, CSRF, header hygiene, port policy and streaming;
- :func:`autodetect_prefix` in a kernel returns the prefix that works there,
  or ``None`` where no server route exists;
- :func:`enable_comm_bridge`, :func:`on_request`, :func:`off_request`,
  :func:`intercept_localhost` and :class:`CommBridge` are :mod:`comm_bridge`'s.

A facade, light to import in a kernel: the server half (tornado,
jupyter_server) and the bridge (anywidget) are imported on first use.
New code should declare an entry point and use :mod:`loopback_asgi` instead
(docs/migration.md).
"""

from __future__ import annotations

from typing import Any

from loopback_asgi import __version__
from loopback_asgi.kernel import is_in_jupyter_kernel
from loopback_asgi.kernel import proxy_prefix as autodetect_prefix

from ._comm import (
    RequestHandler,
    enable_comm_bridge,
    intercept_localhost,
    is_comm_bridge_enabled,
    off_request,
    on_request,
)

__all__ = [
    "CommBridge",
    "LoopbackProxyHandler",
    "RequestHandler",
    "__version__",
    "autodetect_prefix",
    "enable_comm_bridge",
    "intercept_localhost",
    "is_comm_bridge_enabled",
    "is_in_jupyter_kernel",
    "off_request",
    "on_request",
    "setup_proxy_handler",
]

# Imported on first access (name -> module): they pull in anywidget or tornado.
_LAZY = {
    "CommBridge": "comm_bridge",
    "LoopbackProxyHandler": "jupyter_loopback._server",
    "setup_proxy_handler": "jupyter_loopback._server",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jupyter_loopback' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
