"""The jupyter_server adapter: ``<base_url>loopback/<namespace>/<port>/…`` through the sidecar.

- :mod:`.extension`: the server extension, the admin policy and
  ``setup_proxy_handler``;
- :mod:`.handler`: the tornado handler that streams HTTP to the sidecar;
- :mod:`.response`: the sidecar's answer relayed to the browser;
- :mod:`.websocket`: the WebSocket relay (its sidecar leg is
  :mod:`loopback_asgi._transports.websocket`);
- :mod:`.process`: the sidecar process, launched and supervised;
- :mod:`.nodelay`: ``TCP_NODELAY`` on the server's kernel websockets.
"""

from __future__ import annotations

from loopback_asgi.jupyter.extension import (
    NAMESPACES_ENV,
    Loopback,
    _jupyter_server_extension_points,  # noqa: F401
    _load_jupyter_server_extension,  # noqa: F401
    install,
    setup_proxy_handler,
)

# jupyter_server finds the extension's two hooks here, in the package it was given.
__all__ = ["NAMESPACES_ENV", "Loopback", "install", "setup_proxy_handler"]
