"""Header hygiene both ways: hop-by-hop, forwarding, credentials, rewriting.

Headers stay as ASGI-style lists of ``(name, value)`` byte pairs so repeated
headers (several ``Set-Cookie``) survive untouched and in order.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable

from loopback_asgi.sidecar.target import Target

__all__ = [
    "HOP_BY_HOP",
    "HOP_BY_HOP_STR",
    "request_headers",
    "response_headers",
    "rewrite_cookie_path",
    "rewrite_location",
]

Headers = list[tuple[bytes, bytes]]

# RFC 9110 §7.6.1 plus the legacy names proxies strip, and two a proxy answers
# or rewrites itself: ``Expect`` (the 100-continue handshake is per connection,
# RFC 9110 §10.1.1) and ``Forwarded`` (RFC 7239: a client must not choose what
# the upstream believes about the chain; ``X-Forwarded-*`` are set below).
# The one list for every path: the sidecar, the Jupyter adapter, the comm bridge.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"expect",
        b"forwarded",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# The same names as ``str``, for tornado's headers in the adapter.
HOP_BY_HOP_STR = frozenset(name.decode("ascii") for name in HOP_BY_HOP)
# Set by the sidecar itself, never taken from the client.
OWN = frozenset({b"host", b"x-forwarded-prefix"})
FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
WEBSOCKET = frozenset(
    {b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol"}
)
# Cookies of Jupyter, JupyterHub and the sidecar's token login: the upstream
# never sees them (jupyter-server-proxy issue #590).
CREDENTIAL_COOKIE = re.compile(rb"^(?:_xsrf|username-[^=]*|jupyterhub-[^=]*|jupyter-loopback-token)$")
TOKEN_AUTH = re.compile(rb"^\s*token\s", re.IGNORECASE)


def _connection_names(value: bytes) -> set[bytes]:
    return {v.strip().lower() for v in value.split(b",")}


_DROP_TRUSTED = HOP_BY_HOP | OWN
_DROP = _DROP_TRUSTED | FORWARDED
_DROP_NO_BODY = HOP_BY_HOP | {b"content-length"}


def _filter_cookies(value: bytes) -> bytes:
    kept = [
        c
        for c in (c.strip() for c in value.split(b";"))
        if c and not CREDENTIAL_COOKIE.match(c.split(b"=", 1)[0].strip())
    ]
    return b"; ".join(kept)


def request_headers(
    headers: Iterable[tuple[bytes, bytes]],
    target: Target,
    *,
    client: str | None,
    scheme: str,
    secrets: Collection[bytes] = (),
    trust_forwarded: bool = False,
    websocket: bool = False,
) -> Headers:
    """The headers sent upstream for one request.

    Drops hop-by-hop headers (and those named in ``Connection``), Jupyter's
    credentials (``Authorization: token …``, an ``Authorization`` carrying one
    of ``secrets``, Jupyter/Hub cookies), and sets ``Host`` to the upstream
    and ``X-Forwarded-For/Proto/Host/Prefix``. Incoming ``X-Forwarded-*`` are
    kept only with ``trust_forwarded`` (the sidecar sits behind Jupyter).
    """
    # One pass; the names a Connection header lists (rare) are taken out afterwards.
    drop = _DROP_TRUSTED if trust_forwarded else _DROP
    if websocket:
        drop = drop | WEBSOCKET
    out: Headers = [(b"host", target.netloc_bytes)]
    seen: dict[bytes, bytes] = {}
    host: bytes | None = None
    named: set[bytes] | None = None
    for raw_name, value in headers:
        name = raw_name.lower()
        if name in drop:
            if name == b"host":
                if host is None:
                    host = value
            elif name == b"connection":
                named = _connection_names(value) | (named or set())
            continue
        if name == b"authorization":
            credential = value.split(None, 1)[-1].strip()
            if TOKEN_AUTH.match(value) or credential in secrets:
                continue
        elif name == b"cookie":
            value = _filter_cookies(value)
            if not value:
                continue
        if name in FORWARDED:
            seen[name] = value
            continue
        out.append((name, value))
    if named:
        out = [out[0], *(h for h in out[1:] if h[0] not in named)]
        seen = {n: v for n, v in seen.items() if n not in named}
    original_host = seen.get(b"x-forwarded-host") or host
    forwarded_for = seen.get(b"x-forwarded-for", b"")
    if client:
        forwarded_for = forwarded_for + b", " + client.encode() if forwarded_for else client.encode()
    if forwarded_for:
        out.append((b"x-forwarded-for", forwarded_for))
    out.append((b"x-forwarded-proto", seen.get(b"x-forwarded-proto", scheme.encode())))
    if original_host:
        out.append((b"x-forwarded-host", original_host))
    out.append((b"x-forwarded-prefix", target.prefix_bytes))
    return out


def _inside(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix) and path[len(prefix)] in "/?#"


def rewrite_location(value: str, target: Target) -> str:
    """Point a ``Location`` at the public prefix.

    An absolute URL to the upstream itself and a root-relative path both move
    under the prefix; one that already lies inside it (an app told its root
    path) and any other URL are left as they are, never doubled.
    """
    for host in (target.host, "localhost", "127.0.0.1", "[::1]"):
        origin = f"http://{host}:{target.port}"
        if value.startswith(origin) and value[len(origin) : len(origin) + 1] in ("", "/", "?", "#"):
            value = value[len(origin) :] or "/"
            if value[0] != "/":
                value = "/" + value
            break
    if value.startswith("/") and not value.startswith("//") and not _inside(value, target.prefix):
        return target.prefix + value
    return value


PATH_ATTR = re.compile(rb"(;\s*path\s*=\s*)([^;]*)", re.IGNORECASE)


def rewrite_cookie_path(value: bytes, target: Target) -> bytes:
    """Move a cookie's ``Path`` under the prefix unless it already lies inside it."""
    prefix = target.prefix_bytes

    def sub(match: re.Match[bytes]) -> bytes:
        path = match.group(2).strip()
        if not path.startswith(b"/") or _inside(path.decode("latin-1"), target.prefix):
            return match.group(0)
        return match.group(1) + prefix + (b"" if path == b"/" else path)

    return PATH_ATTR.sub(sub, value)


def response_headers(headers: Iterable[tuple[bytes, bytes]], target: Target, status: int = 200) -> Headers:
    """The upstream's response headers as sent to the client.

    Hop-by-hop headers go; ``Content-Encoding`` and ``Content-Length`` pass
    untouched, except on a 204 or 304, which carry no body whatever
    ``Content-Length`` says (RFC 9110 §8.6) and would otherwise make the ASGI
    server wait for one; ``Location`` and cookie paths are rewritten when the
    namespace asks for it (the default).
    """
    drop = _DROP_NO_BODY if status in (204, 304) else HOP_BY_HOP
    ns = target.namespace
    out: Headers = []
    named: set[bytes] | None = None
    for raw_name, value in headers:
        name = raw_name.lower()
        if name in drop:
            if name == b"connection":
                named = _connection_names(value) | (named or set())
            continue
        if name == b"location" and ns.rewrite_redirects:
            value = rewrite_location(value.decode("latin-1"), target).encode("latin-1")
        elif name == b"set-cookie" and ns.rewrite_cookie_path:
            value = rewrite_cookie_path(value, target)
        out.append((name, value))
    if named:
        out = [h for h in out if h[0] not in named]
    return out
