"""``create_app()``: the sidecar as a Starlette app.

Routes (relative to wherever the app is mounted):

- ``/<namespace>/<port>/<path>``: HTTP and WebSocket relay to
  ``127.0.0.1:<port>/<path>`` (or ``::1``, as the namespace says).
- ``/_loopback/health``: JSON with the served namespaces and load failures.

The app runs standalone under uvicorn (``jupyter-loopback serve``), behind
Jupyter (the adapter launches it on a private unix socket), or mounted in
another Starlette app (marimo, Solara, Shiny).
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from loopback_asgi import __version__
from loopback_asgi.namespaces import Namespace, Policy, load_namespaces
from loopback_asgi.sidecar.errors import send_error
from loopback_asgi.sidecar.relay.http import HTTPRelay
from loopback_asgi.sidecar.relay.websocket import WebSocketRelay
from loopback_asgi.sidecar.target import Target, TargetError, resolve
from loopback_asgi.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["TOKEN_COOKIE", "Sidecar", "create_app"]

TOKEN_COOKIE = "jupyter-loopback-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


PUBLIC_PREFIX = re.compile(rb"/[\x21-\x7e]*")


def _forwarded_prefix(scope: Scope) -> str | None:
    """The public prefix a trusted proxy (Jupyter's adapter) names in ``X-Forwarded-Prefix``, if it is a plain path."""
    value = _header(scope, b"x-forwarded-prefix")
    if value is None or not PUBLIC_PREFIX.fullmatch(value):
        return None
    return value.decode("ascii").rstrip("/")


def cross_site(scope: Scope, *, trust_forwarded: bool) -> bool:
    """True for a request another site made the browser send.

    ``Sec-Fetch-Site: cross-site``, or an ``Origin`` whose host is not the one
    the browser addressed. A request with neither header (curl, a library)
    is not a browser's cross-site request and passes.
    """
    if _header(scope, b"sec-fetch-site") == b"cross-site":
        return True
    origin = _header(scope, b"origin")
    if origin is None:
        return False
    host = (trust_forwarded and _header(scope, b"x-forwarded-host")) or _header(scope, b"host") or b""
    try:
        netloc = urlsplit(origin.decode("latin-1")).netloc
    except ValueError:
        return True
    return netloc.encode("latin-1").lower() != host.split(b",")[0].strip().lower()


# Targets remembered per endpoint, for paths plus queries up to this many bytes.
RESOLVED = 1024
RESOLVED_KEY = 512


class Loopback:
    """The ASGI endpoint behind ``/<namespace>/<port>/…`` for HTTP and WebSocket."""

    def __init__(
        self,
        namespaces: Mapping[str, Namespace],
        http: HTTPRelay,
        websocket: WebSocketRelay,
        *,
        public_root: str | None,
        trust_forwarded: bool,
    ) -> None:
        self.namespaces = dict(namespaces)
        self.http = http
        self.websocket = websocket
        self.public_root = public_root
        self.trust_forwarded = trust_forwarded
        # The namespaces and their policies are fixed for this endpoint's life,
        # so a path's target is worked out once (refusals are never kept).
        self._resolve = functools.lru_cache(maxsize=RESOLVED)(self._resolve_now)

    def _resolve_now(self, raw: bytes, query: bytes, public_root: str, public_prefix: str | None = None) -> Target:
        return resolve(raw, query, self.namespaces, public_root, public_prefix)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        is_ws = scope["type"] == "websocket"
        root = scope.get("root_path", "")
        raw = scope.get("raw_path") or scope["path"].encode("utf-8")
        if root:
            # The raw path still carries the mount point; drop as many
            # segments as the (literal) root path has.
            depth = root.count("/")
            parts = raw.split(b"/", depth + 1)
            raw = b"/" + parts[-1] if len(parts) > depth + 1 else b"/"
        public_root = root if self.public_root is None else self.public_root
        public_prefix = _forwarded_prefix(scope) if self.trust_forwarded else None
        try:
            qs = scope.get("query_string", b"")
            if len(raw) + len(qs) <= RESOLVED_KEY:
                target = self._resolve(raw, qs, public_root, public_prefix)
            else:
                target = self._resolve_now(raw, qs, public_root, public_prefix)
        except TargetError as exc:
            return await send_error(scope, send, exc.status, exc.message, websocket=is_ws)
        if (is_ws or scope["method"] not in SAFE_METHODS) and cross_site(scope, trust_forwarded=self.trust_forwarded):
            what = "WebSocket" if is_ws else f"{scope['method']} request"
            return await send_error(scope, send, 403, f"Cross-site {what} refused.", websocket=is_ws)
        if is_ws:
            return await self.websocket(scope, receive, send, target, trust_forwarded=self.trust_forwarded)
        if target.bare and scope["method"] in ("GET", "HEAD"):
            # ``…/<port>`` → ``…/<port>/`` so the app's relative links resolve.
            query = scope.get("query_string", b"").decode("latin-1")
            location = target.prefix + "/" + (f"?{query}" if query else "")
            headers = [(b"location", location.encode("latin-1")), (b"content-length", b"0")]
            await send({"type": "http.response.start", "status": 307, "headers": headers})
            return await send({"type": "http.response.body", "body": b""})
        await self.http(scope, receive, send, target, trust_forwarded=self.trust_forwarded)


class TokenAuth:
    """Requires the sidecar's token: ``Authorization: token <t>``, ``?token=<t>``
    or the cookie a ``?token=`` visit sets, so a browser's later requests pass.
    Anything else gets 401 (HTTP) or a refused handshake (WebSocket).
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _matches(self, value: bytes) -> bool:
        return hmac.compare_digest(value.strip(), self.token)

    def _with_cookie(self, send: Send) -> Send:
        cookie = f"{TOKEN_COOKIE}={self.token.decode()}; Path=/; HttpOnly; SameSite=Strict".encode()

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"set-cookie", cookie)]
            await send(message)

        return send_with_cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        auth = _header(scope, b"authorization") or b""
        scheme, _, credential = auth.partition(b" ")
        if scheme.lower() == b"token" and self._matches(credential):
            return await self.app(scope, receive, send)
        for part in (_header(scope, b"cookie") or b"").split(b";"):
            name, _, value = part.strip().partition(b"=")
            if name == TOKEN_COOKIE.encode() and self._matches(value):
                return await self.app(scope, receive, send)
        for part in scope.get("query_string", b"").split(b"&"):
            name, _, value = part.partition(b"=")
            if name == b"token" and self._matches(value):
                return await self.app(scope, receive, self._with_cookie(send))
        await send_error(
            scope,
            send,
            401,
            "This sidecar needs its token: send 'Authorization: token <token>' or add ?token=<token>.",
            [(b"www-authenticate", b"token")],
            websocket=scope["type"] == "websocket",
        )


class Sidecar(Starlette):
    """The sidecar's Starlette app, with a short way in for relayed requests.

    The relay endpoint answers every failure itself (a status and one
    sentence), so for ``/<namespace>/…`` the router and Starlette's error
    middleware would only add work to each request and each message; those
    requests go to the token check and the endpoint directly. Lifespan
    events and ``/_loopback/…`` take Starlette's usual path, which leads to
    the same endpoint for anything else.
    """

    def __init__(self, relay: ASGIApp, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan" and "/_loopback/" not in scope["path"]:
            scope["app"] = self
            return await self.relay(scope, receive, send)
        await super().__call__(scope, receive, send)


def create_app(
    namespaces: Mapping[str, Namespace | Mapping[str, Any]] | None = None,
    *,
    discover: bool = True,
    policy: Policy | None = None,
    token: str | None = None,
    public_root: str | None = None,
    trust_forwarded: bool = False,
    secrets: tuple[str, ...] = (),
    max_message_size: int | None = 2**30,
) -> Sidecar:
    """Build the sidecar app.

    ``namespaces`` adds to (or, with ``discover=False``, replaces) the ones
    declared by entry points; ``policy`` narrows them (default: read from
    ``JUPYTER_LOOPBACK_*`` variables). ``token`` requires the token on every
    request. ``public_root`` is the public path the app is reached under
    (default: the ASGI ``root_path``); it prefixes ``X-Forwarded-Prefix``,
    ``Location`` and cookie paths. ``trust_forwarded`` keeps incoming
    ``X-Forwarded-*`` headers: set it only when a trusted proxy (Jupyter) is
    the sole client. ``secrets`` are extra credentials never passed upstream.

    The app's lifespan closes its pooled upstream connections. Mounted inside
    another Starlette app, enter it from the outer lifespan:
    ``async with inner.router.lifespan_context(inner): yield``.
    """
    policy = Policy.from_env() if policy is None else policy
    if discover:
        served, failures = load_namespaces(namespaces, policy)
    else:
        served = policy.apply({n: Namespace.from_value(n, v) for n, v in (namespaces or {}).items()})
        failures = {}
    secret_bytes = [s.encode() for s in secrets if s] + ([token.encode()] if token else [])
    http = HTTPRelay(max_connections=policy.max_connections, secrets=secret_bytes)
    websocket = WebSocketRelay(max_size=max_message_size, secrets=secret_bytes, max_connections=policy.max_connections)
    endpoint = Loopback(served, http, websocket, public_root=public_root, trust_forwarded=trust_forwarded)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "status": "ok",
                "version": __version__,
                "namespaces": {n: {"ports": str(ns.ports), "host": ns.host} for n, ns in served.items()},
                "failures": failures,
                "websocket_sessions": dict(websocket.sessions),
                "http_bodies_spliced": http.spliced,
            }
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await http.aclose()

    app = Sidecar(
        TokenAuth(endpoint, token) if token else endpoint,
        routes=[
            Route("/_loopback/health", health),
            Route("/{path:path}", endpoint),
            WebSocketRoute("/{path:path}", endpoint),
        ],
        middleware=[Middleware(TokenAuth, token=token)] if token else [],
        lifespan=lifespan,
    )
    app.state.namespaces = served
    app.state.failures = failures
    return app
