"""What every stream of one bridge shares: the way to the page, the runtime, the policy, the upstream client.

``fetch`` and ``websocket`` each relay one kind of stream through a
:class:`Channel`; :mod:`comm_bridge.streams` routes the page's messages to
them. Neither stream module imports the other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

from loopback_asgi._transports.http import LoopbackTransport
from loopback_asgi.namespaces import Namespace, Policy, PortPolicy
from loopback_asgi.sidecar.target import Target, TargetError

from . import bulk
from .flow import Session
from .runtime import Runtime

__all__ = ["Channel", "Send", "loopback_namespace"]

Send = Callable[[dict[str, Any], Sequence[bytes | memoryview]], None]

# Characters kept as they are in a request target; anything else (spaces,
# controls, non-ASCII) is percent-encoded, so the path can never split the
# request line.
PATH_SAFE = "!$%&'()*+,/:;=?@[]~"


def loopback_namespace(ports: object = None) -> Namespace | None:
    """The policy for generic access: ``ports`` narrowed by the administrator's environment.

    It is the built-in ``app`` namespace's policy: ``None`` when the
    administrator disabled ``app`` or allows none of ``ports``.
    """
    ns = Namespace(name="app", ports=PortPolicy() if ports is None else PortPolicy.parse(ports))
    return Policy.from_env().apply({"app": ns}).get("app")


class Channel:
    """One bridge's link to its page and to the upstreams (the HTTP client is used on the loop thread only)."""

    def __init__(self, send: Send, runtime: Runtime, ports: object = None) -> None:
        self.send = send
        self.runtime = runtime
        self.namespace = loopback_namespace(ports)
        self.sessions: dict[int, Session] = {}
        self._transport: LoopbackTransport | None = None
        self.pool = bulk.Pool()
        """Read buffers of large downloads, used on the loop thread only."""
        self.direct = 0
        """Response bodies relayed by :func:`comm_bridge.bulk.relay` (the rest stream through the client)."""

    @property
    def transport(self) -> LoopbackTransport:
        """The sidecar's own pooled HTTP/1.1 client, made on first use (on the loop thread)."""
        if self._transport is None:
            self._transport = LoopbackTransport()
        return self._transport

    async def aclose_transport(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()

    def error(self, id: int, status: int, message: str) -> None:
        """Tell the page a stream failed: before its head ``status`` says how, after it 0."""
        self.send({"op": "error", "id": id, "status": status, "message": message}, ())

    def resolve(self, id: int, port: int, path: str) -> Target | None:
        """:meth:`target`, or None once the page was told why not (its 400 or 403)."""
        try:
            return self.target(port, path)
        except TargetError as exc:
            self.error(id, exc.status, exc.message)
            return None

    def target(self, port: int, path: str) -> Target:
        """Validate a port and path against the policy; raises :class:`TargetError` (400/403)."""
        ns = self.namespace
        if ns is None:
            raise TargetError(403, "Generic loopback access is disabled by the administrator.")
        if not 1 <= port <= 65535:
            raise TargetError(400, f"The port {port} is not a number from 1 to 65535.")
        if port not in ns.ports:
            raise TargetError(403, f"Port {port} is not allowed (allowed: {ns.ports}).")
        raw = quote(path.split("#", 1)[0], safe=PATH_SAFE)
        raw = raw if raw.startswith("/") else "/" + raw
        path_part, _, query = raw.partition("?")
        return Target(ns, port, "", path_part, query.encode("ascii"))
