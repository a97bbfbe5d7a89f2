"""Which way the browser reaches a kernel-local server from here: one answer, one branch in library code.

Four ways exist, and which one works depends on where the code runs:

- ``"route"``: the Jupyter server that launched this kernel serves the
  namespace (``<base_url>loopback/<namespace>/<port>/``), as announced to
  this process by that server;
- ``"mount"``: this process serves the sidecar inside its own ASGI app
  (:func:`loopback_asgi.mount_into` in Solara, Shiny, marimo);
- ``"bridge"``: the page has a live comm bridge in this kernel or page
  session (:func:`comm_bridge.enable_comm_bridge`; VS Code, Colab, marimo,
  Solara and Shiny without a mount);
- ``"direct"``: none of these, so ``http://127.0.0.1:<port>/`` as it is (a
  browser on the same machine).

Each answer rests on something this process knows for certain: an
announcement checked against the launching server's pid and host, a mount
made in this process, a bridge whose comm is open. Nothing is guessed from
environment variables alone.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Literal, NamedTuple

from loopback_asgi.kernel import autodetect_prefix, mounted_prefix

__all__ = ["Reach", "reach"]

How = Literal["route", "mount", "bridge", "direct"]


class Reach(NamedTuple):
    """``how`` the browser reaches the port, and the ``url`` to hand it.

    For ``"bridge"`` and ``"direct"`` the URL is the loopback URL itself;
    with the bridge the page reaches it through
    ``window.__jupyter_loopback__.fetch(port, path)`` / ``openWebSocket``, or
    unchanged once ``comm_bridge.intercept_localhost(port)`` ran.
    """

    how: How
    url: str


def reach(namespace: str, port: int, path: str = "", environ: Mapping[str, str] | None = None) -> Reach:
    """How this process's browser reaches ``http://127.0.0.1:<port>/<path>``: route, mount, bridge or direct.

    Library code then has one branch::

        way = reach("mylib", port, "tiles/")
        if way.how == "bridge":
            comm_bridge.intercept_localhost(port)
        tiles = way.url

    The Jupyter route wins over a mount, a mount over the bridge. The bridge
    is asked only when ``comm_bridge`` was imported (a kernel that never
    enabled it does not import anywidget for this).
    """
    path = path.lstrip("/")
    for how, prefix in (("route", autodetect_prefix(namespace, environ)), ("mount", mounted_prefix(namespace))):
        if prefix is not None:
            return Reach(how, f"{prefix.replace('{port}', str(port)).rstrip('/')}/{path}")  # type: ignore[arg-type]
    direct = f"http://127.0.0.1:{port}/{path}"
    widget = sys.modules.get("comm_bridge.widget")
    if widget is not None and widget.is_comm_bridge_enabled():
        return Reach("bridge", direct)
    return Reach("direct", direct)
