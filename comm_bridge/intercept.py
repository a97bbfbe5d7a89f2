"""Reroute the page's requests to a loopback port, without the library changing its URLs.

Libraries such as localtileserver hand the browser ``http://127.0.0.1:<port>/…``
(or a same-origin route such as ``/user/a/mylib-proxy/<port>/…``) and let
Leaflet, an ``<img>`` or ``fetch`` load it. :func:`intercept_localhost`
registers the port on the bridge widget; ``static/bridge.js`` then routes those
requests itself: through the same-origin route when its ``__probe__`` answers,
otherwise over the comm. docs/comm-bridge.md lists the requests covered.
"""

from __future__ import annotations

import json
import operator
from typing import Any

from .widget import current_bridge

__all__ = ["intercept_localhost"]

# Waits up to 5 s for the page's bridge, then gives up: with no bridge the
# page has nothing to route through.
_SCRIPT = (
    "<script>(function(){{var port={port},prefix={prefix},n=0;"
    "function go(){{var a=window.__jupyter_loopback__;"
    "if(a&&a.interceptLocalhost){{a.interceptLocalhost(port,prefix);return true}}return false}}"
    "if(!go()){{var t=setInterval(function(){{if(go()||++n>50)clearInterval(t)}},100)}}}})();</script>"
)


def intercept_localhost(port: int, *, path_prefix: str | None = None, display: bool = True) -> Any:
    """Route the page's requests for ``http://127.0.0.1:<port>`` and ``localhost:<port>`` through the bridge.

    ``path_prefix`` is the absolute same-origin path that also reaches the
    port (``/base/mylib-proxy/<port>``, with the port filled in). The page
    asks ``<path_prefix>/__probe__`` once: when it answers 2xx, loopback URLs
    are rewritten to that route; otherwise they, and same-origin URLs under
    the prefix, travel over the comm. Ports never registered are left alone.

    With a live bridge (:func:`comm_bridge.enable_comm_bridge`) the port is
    added to the widget's synced state, so every view of it in the page
    routes, and nothing is displayed. Without one, the returned
    ``IPython.display.HTML`` (a ``<script>`` that registers the port once a
    bridge appears in the page) is displayed when ``display`` is true.
    Idempotent; returns that ``HTML`` either way, as 0.3.x did.
    """
    from IPython.display import HTML

    try:
        number = operator.index(port)  # an int, or a NumPy integer
    except TypeError:
        number = 0
    if isinstance(port, bool) or not 1 <= number <= 65535:
        raise ValueError(f"port must be an integer from 1 to 65535, not {port!r}.")
    port = number
    prefix = (path_prefix or "").rstrip("/") or None
    if prefix is not None and not prefix.startswith("/"):
        raise ValueError(f"path_prefix must be an absolute path such as '/mylib-proxy/{port}', not {path_prefix!r}.")
    html = HTML(_SCRIPT.format(port=port, prefix=json.dumps(prefix).replace("<", "\\u003c")))  # type: ignore[no-untyped-call]
    bridge = current_bridge()
    if bridge is not None:
        bridge.add_intercepted_port(port)
        if prefix is not None:
            bridge.add_intercepted_prefix(port, prefix)
    elif display:
        from IPython.display import display as show

        show(html)  # type: ignore[no-untyped-call]
    return html
