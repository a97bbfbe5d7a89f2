"""The request path → loopback upstream mapping, the sidecar's security core.

The namespace and port are read from the *raw* path, before any
percent-decoding, and must be in canonical form: a namespace that is not
``[a-z0-9][a-z0-9-]*`` is unknown (404), a port that is not plain decimal
without leading zeros is malformed (400). The upstream host never comes from
the request: it is the namespace's loopback address, so no ``@``, ``:``,
``//``, backslash or encoded form can point the proxy elsewhere
(CVE-2022-21697).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote_to_bytes

from loopback_asgi.namespaces import NAME_PATTERN, Namespace

__all__ = ["Target", "TargetError", "resolve"]

# Query parameters that carry Jupyter's (or the sidecar's) credentials and
# never reach an upstream (jupyter-server-proxy issue #590).
CREDENTIAL_PARAMS = (b"token", b"_xsrf")
# Bytes a request target may not carry raw (RFC 9112 §3.2): controls, space,
# DEL, non-ASCII, and ``#``, which would end the target. An ASGI server other
# than uvicorn may still pass them in ``raw_path``; they go upstream
# percent-encoded, as a browser sends them.
UNSAFE_BYTES = re.compile(rb"[^\x21-\x7e]|#")


def _visible(raw: bytes) -> bytes:
    return UNSAFE_BYTES.sub(lambda m: b"%%%02X" % m.group()[0], raw)


@dataclass(frozen=True, slots=True)
class Target:
    """Where one request goes, and under which public prefix it was asked."""

    namespace: Namespace
    port: int
    prefix: str
    """Public path prefix of this route, e.g. ``/user/a/loopback/mylib/8000``."""
    path: str
    """Raw (still percent-encoded) path sent upstream, always starting with ``/``."""
    query: bytes
    """Raw query string sent upstream, credentials removed."""
    bare: bool = False
    """True when the request stopped at ``…/<port>`` with no trailing slash."""
    # Worked out once per target (targets are cached per path): what each request sends as bytes.
    target_bytes: bytes = field(init=False, repr=False, compare=False)
    netloc_bytes: bytes = field(init=False, repr=False, compare=False)
    prefix_bytes: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_bytes", self.target.encode("latin-1"))
        object.__setattr__(self, "netloc_bytes", self.netloc.encode("latin-1"))
        object.__setattr__(self, "prefix_bytes", self.prefix.encode("latin-1"))

    @property
    def host(self) -> str:
        return self.namespace.host

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def target(self) -> str:
        """The HTTP request target: raw path plus query."""
        return f"{self.path}?{self.query.decode('latin-1')}" if self.query else self.path


class TargetError(Exception):
    """A request that maps to no upstream: carries the HTTP status and one sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _param_name(part: bytes) -> bytes:
    # Decoded as Jupyter (tornado's parse_qs) decodes it: ``%74oken=`` is ``token=`` too.
    name = part.split(b"=", 1)[0]
    return unquote_to_bytes(name.replace(b"+", b" ")) if b"%" in name or b"+" in name else name


def strip_credentials(query: bytes) -> bytes:
    """Drop ``token=`` and ``_xsrf=`` parameters, however their names are percent-encoded;
    keep every other byte as sent."""
    if b"%" not in query and not any(name in query for name in CREDENTIAL_PARAMS):
        return query
    kept = [part for part in query.split(b"&") if _param_name(part) not in CREDENTIAL_PARAMS]
    return b"&".join(kept)


def resolve(
    raw_path: bytes,
    query: bytes,
    namespaces: dict[str, Namespace],
    public_root: str = "",
    public_prefix: str | None = None,
) -> Target:
    """Map ``/<namespace>/<port>/<rest>`` (relative to the app's mount) to a target.

    ``public_root`` is the public path under which the app is mounted (for
    Jupyter, ``<base_url>loopback``); the route's public prefix is
    ``<public_root>/<namespace>/<port>`` unless a trusted proxy gave another
    one in ``public_prefix`` (Jupyter's 0.3.x alias ``<base_url><ns>-proxy/<port>``).
    Raises :class:`TargetError` with 404, 400 or 403 for an unknown namespace, a malformed port or a port outside
    the namespace's policy.
    """
    parts = raw_path.split(b"/", 3)
    if len(parts) < 3 or parts[0] != b"":
        names = ", ".join(sorted(namespaces)) or "none"
        raise TargetError(404, f"No namespace in the path; the declared namespaces are: {names}.")
    raw_name, raw_port = parts[1], parts[2]
    name = raw_name.decode("latin-1")
    ns = namespaces.get(name) if NAME_PATTERN.fullmatch(name) else None
    if ns is None:
        names = ", ".join(sorted(namespaces)) or "none"
        raise TargetError(404, f"Unknown namespace {name!r}; the declared namespaces are: {names}.")
    if not (raw_port.isdigit() and raw_port.isascii() and len(raw_port) <= 5 and raw_port[:1] != b"0"):
        raise TargetError(400, f"The port {raw_port.decode('latin-1')!r} is not a number from 1 to 65535.")
    port = int(raw_port)
    if port > 65535:
        raise TargetError(400, f"The port {port} is not a number from 1 to 65535.")
    if port not in ns.ports:
        raise TargetError(403, f"Port {port} is not allowed for namespace {name!r} (allowed: {ns.ports}).")
    prefix = public_prefix if public_prefix is not None else f"{public_root}/{name}/{port}"
    bare = len(parts) == 3
    rest = "/" + (_visible(parts[3]).decode("ascii") if not bare else "")
    path = rest if ns.strip_prefix else quote(prefix, safe="/") + rest
    return Target(ns, port, prefix, path, _visible(strip_credentials(query)), bare)
