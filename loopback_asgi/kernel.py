"""Kernel side: the URL a browser can use to reach a server in this kernel.

The jupyter_server adapter announces its route to the kernels it launches in
``JUPYTER_LOOPBACK_ROUTE`` (JSON: public prefix, served namespaces, the
server's pid and host). A kernel trusts the announcement only when the server
that made it is the one that launched the kernel (``JPY_PARENT_PID``) on this
host; nothing is guessed from ``JPY_SESSION_NAME`` or ``JPY_PARENT_PID`` alone,
which Colab and standalone Voila set too.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from typing import TypedDict

__all__ = ["ROUTE_ENV", "Route", "announced_route", "autodetect_prefix", "browser_url"]

ROUTE_ENV = "JUPYTER_LOOPBACK_ROUTE"
PREFIX_ENV = "JUPYTER_LOOPBACK_PREFIX"
DISABLE_ENV = "JUPYTER_LOOPBACK_DISABLE"


class Route(TypedDict):
    """What the adapter announces in ``JUPYTER_LOOPBACK_ROUTE``."""

    prefix: str
    namespaces: list[str]
    pid: int
    host: str


def announced_route(environ: Mapping[str, str] | None = None) -> Route | None:
    """The route announced by the server that launched this process, if any."""
    env = os.environ if environ is None else environ
    try:
        route: Route = json.loads(env[ROUTE_ENV])
        launched_by = int(env.get("JPY_PARENT_PID", "0"))
        if route["pid"] != launched_by or route["host"] != socket.gethostname():
            return None
        return route
    except (KeyError, ValueError, TypeError):
        return None


def autodetect_prefix(namespace: str, environ: Mapping[str, str] | None = None) -> str | None:
    """``"<base_url>loopback/<namespace>/{port}"`` where that route exists, else ``None``.

    ``JUPYTER_LOOPBACK_DISABLE=1`` forces ``None``; ``JUPYTER_LOOPBACK_PREFIX``
    (which may contain ``{namespace}`` and ``{port}``) overrides detection.
    The result keeps ``{port}`` for the caller to fill in.
    """
    env = os.environ if environ is None else environ
    if env.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes"):
        return None
    override = env.get(PREFIX_ENV, "").strip()
    if override:
        return override.replace("{namespace}", namespace)
    route = announced_route(env)
    if route is None or namespace not in route["namespaces"]:
        return None
    return f"{route['prefix'].rstrip('/')}/{namespace}/{{port}}"


def browser_url(namespace: str, port: int, path: str = "", environ: Mapping[str, str] | None = None) -> str:
    """A URL for ``http://127.0.0.1:<port>/<path>`` that works in the user's browser.

    Through Jupyter this is a path under the server's own origin
    (``/user/alice/loopback/mylib/8000/tiles/1.png``); where no route exists
    it is the direct ``http://127.0.0.1:<port>/<path>``.
    """
    prefix = autodetect_prefix(namespace, environ)
    path = path.lstrip("/")
    if prefix is None:
        return f"http://127.0.0.1:{port}/{path}"
    return f"{prefix.replace('{port}', str(port)).rstrip('/')}/{path}"
