"""The jupyter_server extension: ``<base_url>loopback/<namespace>/<port>/…``.

Enabled on install by ``jupyter-config/jupyter_server_config.d/jupyter_loopback.json``.
At load it

- registers one route, ``<base_url>loopback(/…)``, served by a handler built on
  jupyter-server-proxy's ``ServerProcess`` handler class with the streaming
  relay of :mod:`loopback_asgi.jupyter.handler` in front;
- prepares the sidecar (:mod:`loopback_asgi.jupyter.process`), launched on the first request
  with the admin policy (:class:`Loopback`) in its environment;
- announces the route to the kernels this server launches, in
  ``JUPYTER_LOOPBACK_ROUTE`` (read by :func:`loopback_asgi.autodetect_prefix`).
- turns Nagle's algorithm off on the server's kernel websockets
  (:mod:`loopback_asgi.jupyter.nodelay`; ``c.Loopback.kernel_websocket_nodelay``).

Admin policy, e.g. in ``jupyter_server_config.py``::

    c.Loopback.enabled_namespaces = ["app", "mylib"]
    c.Loopback.allowed_ports = "8000-8100"
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from dataclasses import dataclass, field, fields
from typing import Any

from jupyter_server_proxy.config import ServerProcess
from tornado import web
from traitlets import Bool, Float, Int, List, Unicode
from traitlets.config import Configurable

from loopback_asgi.jupyter import nodelay as jupyter_nodelay
from loopback_asgi.jupyter.handler import RelayMixin
from loopback_asgi.jupyter.process import Sidecar
from loopback_asgi.kernel import ROUTE_ENV
from loopback_asgi.namespaces import NAME_PATTERN, Namespace, Policy, PortPolicy, load_namespaces

__all__ = ["NAMESPACES_ENV", "Loopback", "install", "setup_proxy_handler"]

NAMESPACES_ENV = "JUPYTER_LOOPBACK_NAMESPACES"
SETTINGS_KEY = "jupyter_loopback"


class Loopback(Configurable):
    """Admin policy for the loopback route (``c.Loopback.*``); unset traits fall back to ``JUPYTER_LOOPBACK_*``."""

    enabled_namespaces = List(
        Unicode(), default_value=None, allow_none=True, config=True, help="Serve only these namespaces."
    )
    disabled_namespaces = List(Unicode(), config=True, help="Never serve these namespaces.")
    allowed_ports = Unicode(
        None, allow_none=True, config=True, help='Ports allowed in every namespace, e.g. "8000,8050-8060".'
    )
    connect_timeout = Float(None, allow_none=True, config=True, help="Upstream connect timeout, seconds.")
    header_timeout = Float(None, allow_none=True, config=True, help="Upstream response-header timeout, seconds.")
    max_connections = Int(
        None, allow_none=True, config=True, help="Concurrent upstream connections: one limit for all upstreams."
    )
    startup_timeout = Float(10.0, config=True, help="How long a request waits for the sidecar to (re)start.")
    kernel_websocket_nodelay = Bool(
        True, config=True, help="Turn Nagle's algorithm off on the server's kernel websockets (widget round trips)."
    )

    def policy(self) -> Policy:
        """This configuration as a :class:`Policy`, on top of the environment's."""
        base = Policy.from_env()
        return Policy(
            enabled=frozenset(self.enabled_namespaces) if self.enabled_namespaces is not None else base.enabled,
            disabled=frozenset(self.disabled_namespaces) | base.disabled,
            ports=PortPolicy.parse(self.allowed_ports) if self.allowed_ports else base.ports,
            connect_timeout=self.connect_timeout if self.connect_timeout is not None else base.connect_timeout,
            header_timeout=self.header_timeout if self.header_timeout is not None else base.header_timeout,
            max_connections=self.max_connections if self.max_connections is not None else base.max_connections,
        )


@dataclass
class _State:
    """What one jupyter-server's adapter holds, in ``web_app.settings``."""

    prefix: str
    policy: Policy
    sidecar: Sidecar
    base: type[web.RequestHandler]
    handler: type[web.RequestHandler]
    kwargs: dict[str, Any]
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    served: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, type[web.RequestHandler]] = field(default_factory=dict)

    def sidecar_env(self) -> dict[str, str]:
        """The policy, and the namespaces already discovered here (the sidecar skips discovery)."""
        given = {name: _namespace_fields(ns) for name, ns in self.namespaces.items()}
        return {**self.policy.to_env(), NAMESPACES_ENV: json.dumps(given)}

    def announce(self) -> None:
        """Compute the served namespaces and tell future kernels where the route is."""
        self.namespaces, self.failures = load_namespaces(self.extra, self.policy)
        self.served = sorted(self.namespaces)
        self.publish()

    def publish(self) -> None:
        """Put the route into the environment that future kernels inherit."""
        aliases = sorted(name for name in self.aliases if name in self.namespaces)
        route = {"prefix": self.prefix, "namespaces": self.served, "aliases": aliases}
        os.environ[ROUTE_ENV] = json.dumps({**route, "pid": os.getpid(), "host": socket.gethostname()})


def _namespace_fields(ns: Namespace) -> dict[str, Any]:
    out = {f.name: getattr(ns, f.name) for f in fields(ns) if f.name != "name"}
    out["ports"] = str(ns.ports)
    return out


def install(web_app: web.Application, serverapp: Any = None) -> _State:
    """Add the loopback route to ``web_app`` (once; later calls return the same state)."""
    existing: _State | None = web_app.settings.get(SETTINGS_KEY)
    if existing is not None:
        return existing
    base_url = web_app.settings.get("base_url", "/")
    prefix = base_url.rstrip("/") + "/loopback"
    config = Loopback(parent=serverapp) if serverapp is not None else Loopback()
    policy = config.policy()
    if config.kernel_websocket_nodelay:
        jupyter_nodelay.install(web_app)

    def command(socket_path: str) -> list[str]:
        return [
            sys.executable, "-m", "loopback_asgi.cli", "serve",
            "--unix-socket", socket_path, "--public-root", prefix, "--trust-forwarded",
        ]  # fmt: skip

    sidecar = Sidecar(command, lambda: state.sidecar_env(), restart_wait=config.startup_timeout)
    # jupyter-server-proxy's description of the process; its handler class
    # brings Jupyter auth, activity tracking and HTTP/WebSocket dispatch.
    process = ServerProcess(
        name="loopback",
        command=command(sidecar.socket_path),
        unix_socket=sidecar.socket_path,
        timeout=config.startup_timeout,
        launcher_entry={"enabled": False},  # a relay has no page of its own to launch
    )
    base, kwargs = process.make_proxy_handler()
    handler = _handler_class(base, sidecar, prefix, "", serverapp)
    state = _State(prefix, policy, sidecar, base, handler, kwargs)
    web_app.settings[SETTINGS_KEY] = state
    web_app.add_handlers(".*", [(re.escape(prefix) + r"((?:/|\?).*)?", handler, kwargs)])
    state.announce()
    log = getattr(serverapp, "log", None)
    for name, reason in state.failures.items():
        if log is not None:
            log.warning("jupyter-loopback: namespace %r skipped: %s", name, reason)
    if log is not None:
        log.info("jupyter-loopback: %sloopback/<namespace>/<port>/ serves %s", base_url, ", ".join(state.served))
    return state


def _handler_class(
    base: type[web.RequestHandler], sidecar: Sidecar, strip: str, replace: str, serverapp: Any
) -> type[web.RequestHandler]:
    secrets = {os.environ.get("JUPYTERHUB_API_TOKEN", "")}
    token = getattr(getattr(serverapp, "identity_provider", None), "token", "")
    secrets.add(token if isinstance(token, str) else "")
    attrs = {"sidecar": sidecar, "strip": strip, "replace": replace, "secrets": frozenset(secrets - {""})}
    cls = type("LoopbackHandler", (RelayMixin, base), attrs)
    return web.stream_request_body(cls)


def setup_proxy_handler(
    web_app: web.Application,
    namespace: str,
    *,
    handler_cls: type[web.RequestHandler] | None = None,
    **fields: Any,
) -> type[web.RequestHandler]:
    """Serve ``namespace`` on this server: ``<base_url>loopback/<namespace>/<port>/…``.

    The seed API, for a library's own server extension. ``fields`` are
    :class:`~loopback_asgi.Namespace` fields (all optional); without them a
    namespace its library also declares by entry point keeps the declared
    fields. 0.3.x's route ``<base_url><namespace>-proxy/<port>/…`` is served
    too, through the same sidecar, with 0.3.x's unauthenticated probe
    ``<base_url><namespace>-proxy[/<port>]/__probe__`` (204 while the
    namespace is served, 404 otherwise, never reaching the upstream).
    ``handler_cls``, if given, is mixed in front of the alias's handler.

    Returns the alias's handler class; a later call for the same namespace
    returns the same class and adds no route. The sidecar restarts only when
    the namespaces it serves change. Raises ``ValueError`` for a bad name or
    field.
    """
    if not NAME_PATTERN.fullmatch(namespace):
        raise ValueError(f"namespace must match [a-z0-9][a-z0-9-]*: {namespace!r}")
    Namespace.from_value(namespace, fields)  # validate now, not in the sidecar
    serverapp = web_app.settings.get("serverapp")
    state = install(web_app, serverapp)
    before = state.namespaces.get(namespace)
    declare = bool(fields) or before is None
    if declare:
        state.extra[namespace] = {k: str(v) if isinstance(v, PortPolicy) else v for k, v in fields.items()}
    cls: type[web.RequestHandler] | None = state.aliases.get(namespace)
    if cls is None:
        cls = state.aliases[namespace] = _alias(web_app, state, namespace, handler_cls, serverapp)
    if declare:
        state.announce()
    else:
        state.publish()
    if state.namespaces.get(namespace) != before:
        state.sidecar.restart()  # a running sidecar learns the namespace on its next start
    return cls


def _alias(
    web_app: web.Application,
    state: _State,
    namespace: str,
    handler_cls: type[web.RequestHandler] | None,
    serverapp: Any,
) -> type[web.RequestHandler]:
    alias = state.prefix.removesuffix("loopback") + f"{namespace}-proxy"
    relay = _handler_class(state.base, state.sidecar, alias, f"/{namespace}", serverapp)
    name = namespace.title().replace("-", "") + "Loopback"
    bases = (relay,) if handler_cls is None else (handler_cls, relay)
    cls: type[web.RequestHandler] = web.stream_request_body(
        type(f"{name}ProxyHandler", bases, {"namespace": namespace})
    )
    probe = type(f"{name}ProbeHandler", (_Probe,), {"namespace": namespace, "state": state})
    # The probe first: it is more specific than the alias, and tornado takes the first match.
    web_app.add_handlers(
        ".*",
        [
            (re.escape(alias) + r"(?:/[0-9]+)?/__probe__", probe),
            (re.escape(alias) + r"((?:/|\?).*)?", cls, state.kwargs),
        ],
    )
    return cls


class _Probe(web.RequestHandler):
    """0.3.x's probe: an empty 204 while the namespace is served here, else 404.

    Unauthenticated, as 0.3.x's page code expects; it answers from this
    server alone (no upstream, no sidecar) and says nothing the URL did not.
    """

    namespace: str
    state: _State

    def set_default_headers(self) -> None:
        self.clear_header("Server")
        self.set_header("Cache-Control", "no-store")

    def get(self) -> None:
        self.set_status(204 if self.namespace in self.state.namespaces else 404)

    def head(self) -> None:
        self.get()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish()


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "loopback_asgi.jupyter"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    install(serverapp.web_app, serverapp)
