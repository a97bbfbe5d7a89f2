"""Namespaces: what a library declares, how it is discovered, and admin policy.

A library declares one namespace in the ``jupyter_loopback.namespaces`` entry
point group; the entry point's name is the namespace and its value is a
:class:`Namespace` or a plain ``dict`` of its fields (``{}`` means all
defaults). A namespace whose entry point fails to load is skipped with a
logged warning, and the others keep working.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from importlib.metadata import entry_points
from typing import Any, Literal

__all__ = [
    "ENTRY_POINT_GROUP",
    "NAME_PATTERN",
    "Namespace",
    "Policy",
    "PortPolicy",
    "discover_namespaces",
    "load_namespaces",
]

log = logging.getLogger("loopback_asgi")

ENTRY_POINT_GROUP = "jupyter_loopback.namespaces"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


@dataclass(frozen=True)
class PortPolicy:
    """A set of allowed TCP ports, kept as sorted inclusive ranges.

    Built from ``"1024-65535"``, ``"8000,8050-8060"``, a ``range``, an int, or
    an iterable of ints, ``(low, high)`` pairs and ranges.
    """

    ranges: tuple[tuple[int, int], ...] = ((1024, 65535),)

    def __contains__(self, port: object) -> bool:
        if not isinstance(port, int):
            return False
        return any(low <= port <= high for low, high in self.ranges)

    def __str__(self) -> str:
        return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in self.ranges)

    @classmethod
    def parse(cls, value: Any) -> PortPolicy:
        """Normalise any accepted spelling; raise ``ValueError`` on anything else."""
        if isinstance(value, PortPolicy):
            return value
        items: list[tuple[int, int]] = []
        if isinstance(value, str):
            for part in filter(None, (p.strip() for p in value.split(","))):
                first, _, last = part.partition("-")
                items.append((int(first), int(last or first)))
        elif isinstance(value, int) and not isinstance(value, bool):
            items.append((value, value))
        elif isinstance(value, range):
            if value.step != 1 or not value:
                raise ValueError(f"port range must be contiguous and non-empty: {value!r}")
            items.append((value.start, value.stop - 1))
        elif isinstance(value, tuple) and len(value) == 2 and all(type(v) is int for v in value):
            items.append((value[0], value[1]))
        elif isinstance(value, Iterable):
            for item in value:
                items.extend(cls.parse(item).ranges)
        else:
            raise ValueError(f"not a port policy: {value!r}")
        for low, high in items:
            if not 1 <= low <= high <= 65535:
                raise ValueError(f"ports must lie in 1-65535 with low <= high: {low}-{high}")
        if not items:
            raise ValueError("a port policy needs at least one port")
        return cls(tuple(sorted(set(items))))


@dataclass(frozen=True)
class Namespace:
    """One library's route: ``<prefix>/<name>/<port>/…`` to its loopback servers.

    Every field is optional. Timeouts are in seconds: ``connect_timeout`` bounds
    the TCP connect, ``header_timeout`` the wait for response headers once the
    request body is sent; a response body that is streaming has no deadline.
    """

    name: str = ""
    ports: PortPolicy = field(default_factory=PortPolicy)
    strip_prefix: bool = True
    host: Literal["127.0.0.1", "::1"] = "127.0.0.1"
    connect_timeout: float = 10.0
    header_timeout: float = 60.0
    rewrite_redirects: bool = True
    rewrite_cookie_path: bool = True
    websocket: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "ports", PortPolicy.parse(self.ports))
        if self.host not in ("127.0.0.1", "::1"):
            raise ValueError(f"host must be 127.0.0.1 or ::1, not {self.host!r}")
        if self.name and not NAME_PATTERN.fullmatch(self.name):
            raise ValueError(f"namespace name must match [a-z0-9][a-z0-9-]*: {self.name!r}")
        for name in ("connect_timeout", "header_timeout"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be positive")

    @classmethod
    def from_value(cls, name: str, value: Any) -> Namespace:
        """Build from an entry point's value: a ``Namespace`` or a dict of its fields."""
        if isinstance(value, Namespace):
            return replace(value, name=name)
        if isinstance(value, Mapping):
            known = {f.name for f in fields(cls)} - {"name"}
            unknown = set(value) - known
            if unknown:
                raise ValueError(f"unknown namespace fields: {', '.join(sorted(unknown))}")
            return cls(name=name, **dict(value))
        raise TypeError(f"expected a Namespace or a dict, got {type(value).__name__}")


def discover_namespaces() -> tuple[dict[str, Namespace], dict[str, str]]:
    """Load every declared namespace.

    Returns ``(namespaces, failures)``: failures maps a namespace name to the
    one-line reason its entry point was skipped.
    """
    found: dict[str, Namespace] = {}
    failures: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            if not NAME_PATTERN.fullmatch(ep.name):
                raise ValueError("the name must match [a-z0-9][a-z0-9-]*")
            found[ep.name] = Namespace.from_value(ep.name, ep.load())
        except Exception as exc:  # a broken library must not break the others
            reason = f"{type(exc).__name__}: {exc}"
            failures[ep.name] = reason
            log.warning("jupyter-loopback: skipping namespace %r (%s): %s", ep.name, ep.value, reason)
    return found, failures


@dataclass(frozen=True)
class Policy:
    """What an administrator allows, applied on top of the declared namespaces.

    ``enabled``: if set, only these namespaces are served. ``disabled``: never
    served. ``ports``: intersected with each namespace's own policy.
    Timeouts, when set, replace the namespaces' own. ``max_connections`` caps
    concurrent upstream HTTP connections, one limit for all upstreams together,
    and separately upstream WebSockets (``None``: no cap).
    """

    enabled: frozenset[str] | None = None
    disabled: frozenset[str] = frozenset()
    ports: PortPolicy | None = None
    connect_timeout: float | None = None
    header_timeout: float | None = None
    max_connections: int | None = None

    ENV = {
        "enabled": "JUPYTER_LOOPBACK_ENABLED_NAMESPACES",
        "disabled": "JUPYTER_LOOPBACK_DISABLED_NAMESPACES",
        "ports": "JUPYTER_LOOPBACK_ALLOWED_PORTS",
        "connect_timeout": "JUPYTER_LOOPBACK_CONNECT_TIMEOUT",
        "header_timeout": "JUPYTER_LOOPBACK_HEADER_TIMEOUT",
        "max_connections": "JUPYTER_LOOPBACK_MAX_CONNECTIONS",
    }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Policy:
        """Read the policy from ``JUPYTER_LOOPBACK_*`` variables (see ``ENV``)."""
        env = os.environ if environ is None else environ
        raw = {key: env[var].strip() for key, var in cls.ENV.items() if env.get(var, "").strip()}

        def names(value: str) -> frozenset[str]:
            return frozenset(n.strip() for n in value.split(",") if n.strip())

        return cls(
            enabled=names(raw["enabled"]) if "enabled" in raw else None,
            disabled=names(raw.get("disabled", "")),
            ports=PortPolicy.parse(raw["ports"]) if "ports" in raw else None,
            connect_timeout=float(raw["connect_timeout"]) if "connect_timeout" in raw else None,
            header_timeout=float(raw["header_timeout"]) if "header_timeout" in raw else None,
            max_connections=int(raw["max_connections"]) if "max_connections" in raw else None,
        )

    def to_env(self) -> dict[str, str]:
        """The inverse of :meth:`from_env`, for handing the policy to a sidecar process."""
        out: dict[str, str] = {}
        if self.enabled is not None:
            out[self.ENV["enabled"]] = ",".join(sorted(self.enabled))
        if self.disabled:
            out[self.ENV["disabled"]] = ",".join(sorted(self.disabled))
        if self.ports is not None:
            out[self.ENV["ports"]] = str(self.ports)
        for key in ("connect_timeout", "header_timeout", "max_connections"):
            if getattr(self, key) is not None:
                out[self.ENV[key]] = str(getattr(self, key))
        return out

    def apply(self, namespaces: Mapping[str, Namespace]) -> dict[str, Namespace]:
        """The namespaces this policy serves, with ports and timeouts narrowed."""
        out: dict[str, Namespace] = {}
        for name, ns in namespaces.items():
            if name in self.disabled or (self.enabled is not None and name not in self.enabled):
                continue
            changes: dict[str, Any] = {}
            if self.ports is not None:
                ranges = [
                    (max(a, c), min(b, d))
                    for a, b in ns.ports.ranges
                    for c, d in self.ports.ranges
                    if max(a, c) <= min(b, d)
                ]
                if not ranges:
                    continue
                changes["ports"] = PortPolicy(tuple(ranges))
            if self.connect_timeout is not None:
                changes["connect_timeout"] = self.connect_timeout
            if self.header_timeout is not None:
                changes["header_timeout"] = self.header_timeout
            out[name] = replace(ns, **changes) if changes else ns
        return out


def load_namespaces(
    extra: Mapping[str, Namespace | Mapping[str, Any]] | None = None,
    policy: Policy | None = None,
) -> tuple[dict[str, Namespace], dict[str, str]]:
    """Discovered namespaces plus ``extra`` ones, filtered by ``policy``.

    Returns ``(namespaces, failures)`` like :func:`discover_namespaces`.
    """
    found, failures = discover_namespaces()
    for name, value in (extra or {}).items():
        found[name] = Namespace.from_value(name, value)
    return (policy or Policy()).apply(found), failures
