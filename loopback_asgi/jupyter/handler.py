"""The tornado side of the adapter: stream ``<base_url>loopback/…`` to the sidecar.

:class:`RelayMixin` is mixed in front of the handler class jupyter-server-proxy
builds for the sidecar's ``ServerProcess``; from that class it keeps Jupyter's
authentication (302 to login, 403 for WebSockets), activity tracking, and the
HTTP-or-WebSocket dispatch. Everything that carries bytes is its own:

- HTTP: request bodies go to the sidecar as they arrive (``stream_request_body``,
  each chunk awaited on the sidecar socket), responses go to the browser as
  they arrive (each chunk awaited on the browser socket). Memory per request
  is a few chunks, whatever the size; nothing is buffered, nothing is capped.
- WebSocket: see :mod:`loopback_asgi.jupyter.websocket`.
- Jupyter's credentials stay here: an ``Authorization`` header that Jupyter
  authenticated the request with is not forwarded, nor an ``X-XSRFToken`` (or
  ``X-CSRFToken``) carrying Jupyter's own ``_xsrf`` token; an app's token of
  the same name passes (the sidecar also drops ``token`` headers,
  ``?token=``, ``_xsrf`` and Jupyter/Hub cookies).
- CSRF: Jupyter's ``_xsrf`` check is replaced for this route by the
  ``Sec-Fetch-Site``/``Origin`` check, since the proxied app cannot know ``_xsrf``.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from jupyter_server.base.handlers import JupyterHandler
from tornado import httputil, web
from tornado.iostream import IOStream, StreamClosedError
from tornado.websocket import WebSocketHandler

from loopback_asgi.jupyter.process import Sidecar, SidecarUnavailable
from loopback_asgi.jupyter.response import BadResponse, ResponseRelay
from loopback_asgi.jupyter.websocket import WebSocketRelayMixin
from loopback_asgi.sidecar.headers import HOP_BY_HOP_STR

__all__ = ["RelayMixin"]

DRAIN_LIMIT = 2**20
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
XSRF_HEADERS = frozenset({"x-xsrftoken", "x-csrftoken"})  # the names tornado reads Jupyter's _xsrf token from
CREDENTIAL = re.compile(r"\s*(token|bearer)\s+(\S+)\s*$", re.IGNORECASE)
# Methods beyond tornado's seven that apps behind the route use (WebDAV,
# CalDAV, the QUERY draft): the relay passes them like any other.
EXTRA_METHODS = ("PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "REPORT", "SEARCH", "QUERY")


class _NotLoggedIn(web.HTTPError):
    """No Jupyter user: GET and HEAD go to the login page, the rest get 403."""


class RelayMixin(WebSocketRelayMixin):
    """Put in front of a jupyter-server-proxy ``SuperviseAndProxyHandler`` subclass.

    Class attributes set by the adapter: ``sidecar`` and ``strip`` (the public
    prefix replaced by ``replace`` before the path goes to the sidecar).
    """

    sidecar: Sidecar
    strip: str = "/loopback"
    replace: str = ""
    secrets: frozenset[str] = frozenset()

    _conn: IOStream | None = None
    _body = False
    _chunked = False
    _reused = False
    _write_failed = False
    _refusal: web.HTTPError | None = None
    _pending: tuple[int, str] | None = None
    _response: ResponseRelay | None = None

    def __init__(self, application: web.Application, request: httputil.HTTPServerRequest, **kwargs: Any) -> None:
        # jupyter-server-proxy's constructors run RequestHandler.__init__ twice
        # and wrap seven methods per request (about a tenth of a small GET's
        # CPU here). The relay uses none of what they set up but the two
        # settings its activity tracking reads; one __init__ is enough.
        self.update_last_activity = True
        self.exclude_last_activity_patterns: list[re.Pattern[str]] = []
        WebSocketHandler.__init__(self, application, request, **kwargs)

    async def ensure_process(self) -> None:
        """jupyter-server-proxy's hook: (re)start the sidecar, wait until it accepts connections."""
        await self.sidecar.ensure()

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        """Path arguments as Latin-1: the relay forwards the raw URI, so a path that is not
        UTF-8 (``%C0%AE``) is the upstream's to judge, not a 400 with a traceback in the log."""
        if name is None:
            return value.decode("latin-1")
        return super().decode_argument(value, name)

    # Auth and CSRF

    def check_xsrf_cookie(self) -> None:
        """Replaces Jupyter's ``_xsrf`` check for this route: refuse cross-site unsafe requests only."""
        if not hasattr(self, "_jupyter_current_user"):
            return  # tornado's early call; Jupyter's prepare calls again once the user is known
        if self._cross_site():
            raise web.HTTPError(403, f"Cross-site {self.request.method} request refused.")

    def _cross_site(self) -> bool:
        origin = self.request.headers.get("Origin")
        if origin is not None:
            # Same host, or allowed by the server's allow_origin settings.
            return not JupyterHandler.check_origin(self)  # type: ignore[arg-type]
        return self.request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site"

    def _is_jupyter_credential(self, value: str) -> bool:
        match = CREDENTIAL.match(value)
        if match is None:
            return False
        if match[1].lower() == "token" or match[2] in self.secrets:
            return True
        token = getattr(self, "token", None)
        if token and match[2] == token:
            return True
        # Jupyter (or the Hub) authenticated this request with a token and it
        # was not in the URL: it came from this header.
        # ``token_authenticated`` is JupyterHandler's public property (the identity provider's answer).
        return bool(getattr(self, "token_authenticated", False)) and not self.get_argument("token", "")

    def _is_jupyter_xsrf(self, value: str) -> bool:
        """Whether ``value`` is Jupyter's XSRF token: tornado's own check of it against the ``_xsrf`` cookie passes."""
        # tornado's check reads the first of ?_xsrf=, X-XSRFToken, X-CSRFToken: it judges ``value`` only if that is it.
        headers = self.request.headers
        if (self.get_argument("_xsrf", None) or headers.get("X-Xsrftoken") or headers.get("X-Csrftoken")) != value:
            return False
        try:
            web.RequestHandler.check_xsrf_cookie(self)
        except web.HTTPError:
            return False  # no _xsrf cookie, or another token: the app's own
        return True

    def _upstream_path(self) -> str:
        uri = self.request.uri or "/"
        rest = uri[len(self.strip) :] if uri.startswith(self.strip) else uri
        if not rest.startswith("/"):
            rest = "/" + rest
        return self.replace + rest

    def _upstream_headers(self, *, websocket: bool = False) -> list[tuple[str, str]]:
        headers = self.request.headers
        named = {v.strip().lower() for v in headers.get("Connection", "").split(",")}
        out = []
        for name, value in headers.get_all():
            low = name.lower()
            if low in HOP_BY_HOP_STR or low in named or low.startswith("x-forwarded-"):
                continue
            if websocket and (low.startswith("sec-websocket-") or low == "host"):
                continue
            if low == "authorization" and self._is_jupyter_credential(value):
                continue
            if low in XSRF_HEADERS and self._is_jupyter_xsrf(value):
                continue
            out.append((name, value))
        # The sidecar trusts these: only this server can reach its socket.
        out.append(("X-Forwarded-For", self.request.remote_ip or ""))
        out.append(("X-Forwarded-Proto", self.request.protocol))
        out.append(("X-Forwarded-Host", self.request.host))
        if self.replace:
            # An alias (0.3.x's ``<ns>-proxy/<port>``): the sidecar rewrites
            # redirects and cookie paths into this public prefix, not its own.
            port = (self.request.uri or "")[len(self.strip) :].split("?", 1)[0].split("/", 2)[1:2]
            out.append(("X-Forwarded-Prefix", f"{self.strip}/{port[0] if port else ''}"))
        return out

    def _fail(self, status: int, message: str) -> None:
        self._headers = httputil.HTTPHeaders({"Content-Type": "text/plain; charset=utf-8"})
        JupyterHandler.set_status(self, status)
        JupyterHandler.finish(self, message + "\n")

    # HTTP

    async def prepare(self) -> None:
        # Jupyter's own prepare (host check, identity, our check_xsrf_cookie),
        # but nothing may finish the response here: tornado closes the
        # connection of a streaming-body request answered before its body was
        # read, which breaks keep-alive and can reset away the answer itself.
        # Refusals and the login redirect wait until the body is read.
        upgrade = self.request.headers.get("Upgrade", "").lower() == "websocket"
        try:
            await JupyterHandler.prepare(self, _redirect_to_login=False)  # type: ignore[arg-type]
            if self.current_user is None:  # every request, whatever allow_unauthenticated_access says
                raise _NotLoggedIn(403, "Not authenticated with Jupyter.")
        except web.HTTPError as exc:
            if upgrade or not self._small_body():
                raise
            self._refusal = exc
            return
        if self._finished:
            return
        self._transforms = []
        self._activity()
        if upgrade:
            return await self._open_websocket()
        stream = getattr(self.request.connection, "stream", None)
        if stream is not None:
            stream.set_nodelay(True)
        self.request.connection.set_max_body_size(2**62)  # type: ignore[union-attr]
        length = self.request.headers.get("Content-Length")
        chunked = "chunked" in self.request.headers.get("Transfer-Encoding", "").lower()
        self._body = chunked or (length is not None and length.strip() not in ("", "0"))
        self._chunked = chunked
        await self._start_request(reuse=not self._body)

    async def _start_request(self, *, reuse: bool) -> None:
        try:
            stream = await self.sidecar.connect(reuse=reuse)
        except SidecarUnavailable as exc:
            self._pending = (502, str(exc))  # answered once the body is read
            return
        self._reused = reuse
        self._conn = stream
        # The request head in one write; tornado's parser already refused
        # line breaks in the path and header values.
        lines = [f"{self.request.method} {self._upstream_path()} HTTP/1.1"]
        lines.extend(f"{name}: {value}" for name, value in self._upstream_headers())
        if self._chunked:  # the browser's framing is hop-by-hop: chunk again towards the sidecar
            lines.append("Transfer-Encoding: chunked")
        try:
            await stream.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        except StreamClosedError:
            self._write_failed = True

    def _small_body(self) -> bool:
        length = self.request.headers.get("Content-Length", "0")
        chunked = "Transfer-Encoding" in self.request.headers
        return not chunked and length.isdigit() and int(length) <= DRAIN_LIMIT

    async def data_received(self, chunk: bytes) -> None:
        if self._conn is None or self._write_failed or not chunk:
            return  # the sidecar stopped reading (it answered early): drop the rest
        try:
            if self._chunked:
                await self._conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                await self._conn.write(chunk)
        except StreamClosedError:
            self._write_failed = True

    async def _relay(self) -> None:
        if self._pending is not None:
            return self._fail(*self._pending)
        if self._refusal is not None:
            if isinstance(self._refusal, _NotLoggedIn) and self.request.method in ("GET", "HEAD"):
                web.authenticated(lambda handler: None)(self)  # redirects to login
                return
            raise self._refusal
        if self._finished or self._conn is None:
            return
        if self._chunked and not self._write_failed:
            try:
                await self._conn.write(b"0\r\n\r\n")
            except StreamClosedError:
                self._write_failed = True
        relay = await self._read_response()
        deadline = time.monotonic() + self.sidecar.restart_wait
        delay = 0.01
        while not relay.started and not relay.bad and not self._body and time.monotonic() < deadline:
            # No answer and no body sent: a pooled connection the sidecar had
            # just closed, or a sidecar that died. Retry on a fresh connection
            # while nothing can have reached the upstream twice: idempotent
            # methods, or a request that never left.
            if not (self.request.method in IDEMPOTENT or self._write_failed):
                break
            if not self._reused:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)
            self._write_failed = False
            if self._conn is not None:
                self._conn.close()
            await self._start_request(reuse=False)
            if self._pending is not None or self._conn is None:
                return self._fail(*(self._pending or (502, "The loopback sidecar is not reachable.")))
            relay = await self._read_response()
        conn, self._conn = self._conn, None
        assert conn is not None
        if not relay.started or (relay.bad and not relay.head_sent):
            conn.close()  # never back to the pool: what follows on it cannot be trusted
            if relay.bad:
                return self._fail(502, "The loopback sidecar sent a malformed response.")
            return self._fail(502, "The loopback sidecar closed the connection before answering.")
        if relay.client_gone:
            conn.close()
            return
        if not relay.complete:
            # The upstream broke off mid-body: the browser must see a cut stream.
            conn.close()
            self.request.connection.close()  # type: ignore[union-attr]
            return
        if relay.keep_alive and not self._write_failed:
            self.sidecar.release(conn)
        else:
            conn.close()
        JupyterHandler.finish(self)

    async def _read_response(self) -> ResponseRelay:
        assert self._conn is not None
        relay = self._response = ResponseRelay(self, self._conn, self.request.method or "GET")
        try:
            await relay.run()
        except StreamClosedError:
            relay.keep_alive = False
        except BadResponse:
            relay.keep_alive, relay.bad = False, True
        return relay

    async def http_get(self, *args: Any) -> None:
        await self._relay()

    async def post(self, *args: Any) -> None:
        await self._relay()

    put = patch = delete = head = options = post
    propfind = proppatch = mkcol = copy = move = lock = unlock = report = search = query = post
    SUPPORTED_METHODS = (*web.RequestHandler.SUPPORTED_METHODS, *EXTRA_METHODS)

    def on_close(self) -> None:
        super().on_close()
        if self._conn is not None:  # the browser left mid-HTTP-exchange
            self._conn.close()
        if self._response is not None:  # a kernel-side relay holds the sockets itself
            self._response.abort()
