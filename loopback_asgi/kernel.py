"""Kernel side: the URL a browser can use to reach a server in this kernel.

The jupyter_server adapter announces its route to the kernels it launches in
``JUPYTER_LOOPBACK_ROUTE`` (JSON: public prefix, served namespaces, the
namespaces also served at 0.3.x's ``<base_url><namespace>-proxy/`` alias, the
server's pid and host). A kernel trusts the announcement only when the server
that made it is the one that launched the kernel (``JPY_PARENT_PID``) on this
host; nothing is guessed from ``JPY_SESSION_NAME`` or ``JPY_PARENT_PID`` alone,
which Colab and standalone Voila set too.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterable, Mapping
from typing import TypedDict

__all__ = [
    "PROXY_TEMPLATE",
    "ROUTE_ENV",
    "Route",
    "announced_route",
    "autodetect_prefix",
    "announce_mount",
    "browser_url",
    "is_in_jupyter_kernel",
    "mounted_prefix",
    "proxy_prefix",
]

ROUTE_ENV = "JUPYTER_LOOPBACK_ROUTE"
PREFIX_ENV = "JUPYTER_LOOPBACK_PREFIX"
DISABLE_ENV = "JUPYTER_LOOPBACK_DISABLE"
PROXY_TEMPLATE = "{namespace}-proxy/{{port}}"
"""0.3.x's route, relative to the base URL; ``{{port}}`` survives ``format(namespace=…)``."""


class _Announced(TypedDict):
    prefix: str
    namespaces: list[str]
    pid: int
    host: str


class Route(_Announced, total=False):
    """What the adapter announces in ``JUPYTER_LOOPBACK_ROUTE``.

    ``prefix`` is ``<base_url>loopback``; ``aliases`` are the served namespaces
    that a library's ``setup_proxy_handler`` also mounted at 0.3.x's
    ``<base_url><namespace>-proxy``.
    """

    aliases: list[str]


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
    return _prefix(namespace, environ, None)


def proxy_prefix(
    namespace: str, *, template: str = PROXY_TEMPLATE, environ: Mapping[str, str] | None = None
) -> str | None:
    """0.3.x's ``autodetect_prefix``: the prefix that works for ``namespace`` in this kernel.

    ``"<base_url><namespace>-proxy/{port}"`` where a library's
    ``setup_proxy_handler`` mounted that alias on the server that launched
    this kernel, else ``"<base_url>loopback/<namespace>/{port}"`` where the
    namespace is served, else ``None`` (no jupyter-server behind this kernel,
    or the namespace is not served there). A ``template`` other than 0.3.x's
    default names the caller's own route: it is formatted with ``namespace``
    and put under the base URL of the server that launched this kernel.
    ``JUPYTER_LOOPBACK_DISABLE`` and ``JUPYTER_LOOPBACK_PREFIX`` steer it as
    they steer :func:`autodetect_prefix`.
    """
    return _prefix(namespace, environ, template)


def _prefix(namespace: str, environ: Mapping[str, str] | None, template: str | None) -> str | None:
    env = os.environ if environ is None else environ
    if env.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes"):
        return None
    override = env.get(PREFIX_ENV, "").strip()
    if override:
        return override.replace("{namespace}", namespace)
    route = announced_route(env)
    if route is None:
        return None
    base = route["prefix"].removesuffix("loopback")
    if template is not None and template != PROXY_TEMPLATE:
        return base + template.format(namespace=namespace)
    if template is not None and namespace in route.get("aliases", ()):
        return f"{base}{namespace}-proxy/{{port}}"
    if namespace in route["namespaces"]:
        return f"{base}loopback/{namespace}/{{port}}"
    return None


_mounts: list[tuple[str, frozenset[str]]] = []
"""``create_app()`` mounts in this process (:func:`loopback_asgi.mount_into`): public path, served namespaces."""


def announce_mount(prefix: str, namespaces: Iterable[str]) -> None:
    """Record that this process serves ``namespaces`` at ``<prefix>/<namespace>/<port>/`` (a mounted sidecar).

    Only code in the same process can make this true, so
    :func:`mounted_prefix` never guesses. The latest announcement of a
    prefix replaces an earlier one.
    """
    prefix = "/" + prefix.strip("/")
    _mounts[:] = [(p, n) for p, n in _mounts if p != prefix]
    _mounts.append((prefix, frozenset(namespaces)))


def mounted_prefix(namespace: str) -> str | None:
    """``"<mount path>/<namespace>/{port}"`` where a sidecar mounted in this process serves ``namespace``."""
    for prefix, served in reversed(_mounts):
        if namespace in served:
            return f"{prefix.rstrip('/')}/{namespace}/{{port}}"
    return None


def is_in_jupyter_kernel() -> bool:
    """Whether this process is a running IPython kernel, whatever its frontend (Jupyter, VS Code, Colab).

    Read from the kernel application itself, not from environment variables;
    it says nothing about a server route (see :func:`proxy_prefix`).
    """
    app = sys.modules.get("ipykernel.kernelapp")
    return app is not None and bool(app.IPKernelApp.initialized())


def browser_url(namespace: str, port: int, path: str = "", environ: Mapping[str, str] | None = None) -> str:
    """A URL for ``http://127.0.0.1:<port>/<path>`` that works in the user's browser.

    Through Jupyter this is a path under the server's own origin
    (``/user/alice/loopback/mylib/8000/tiles/1.png``); in a process that
    mounted the sidecar into its own ASGI app (Solara, Shiny, marimo) it is
    the mounted path (``/loopback/mylib/8000/tiles/1.png``); where no route
    exists it is the direct ``http://127.0.0.1:<port>/<path>``.
    """
    prefix = autodetect_prefix(namespace, environ) or mounted_prefix(namespace)
    path = path.lstrip("/")
    if prefix is None:
        return f"http://127.0.0.1:{port}/{path}"
    return f"{prefix.replace('{port}', str(port)).rstrip('/')}/{path}"
