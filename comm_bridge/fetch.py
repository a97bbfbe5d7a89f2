"""Generic loopback HTTP over the comm, and the dispatcher of every stream op.

``fetch(port, path, init)`` in the page becomes one ``aiohttp`` request to
``http://127.0.0.1:<port><path>``: only loopback, only ports the policy
allows, proxy variables ignored (``trust_env=False``), hop-by-hop headers and
Jupyter credentials stripped as the sidecar does. The response streams back
as it arrives, in ``CHUNK``-sized messages paced by the page's credit, so a
body of any size passes in bounded memory and a server-sent event reaches
the page while the response is still being produced.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import yarl
from multidict import CIMultiDict

from loopback_asgi.namespaces import Namespace, Policy, PortPolicy
from loopback_asgi.sidecar.headers import request_headers, response_headers
from loopback_asgi.sidecar.target import Target, TargetError

from . import bulk
from .flow import END, Session, drain
from .protocol import CHUNK, CREDIT_BYTES, FRAME_COST
from .runtime import Runtime

if TYPE_CHECKING:
    from .websocket import Upstream

__all__ = ["Streams", "loopback_namespace"]

log = logging.getLogger("comm_bridge")

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


class Streams:
    """Every fetch and WebSocket of one bridge.

    :meth:`handle` runs on the kernel's shell thread and only validates and
    hands over; sessions live on the runtime's loop thread. Cancelling a
    session (the page's ``cancel``, or :meth:`Runtime.close`) closes its
    upstream response or connection.
    """

    def __init__(self, send: Send, runtime: Runtime, ports: object = None) -> None:
        self.send = send
        self.runtime = runtime
        self.namespace = loopback_namespace(ports)
        self.sessions: dict[int, Session] = {}
        self.websockets: dict[int, Upstream] = {}
        """WebSockets by id, for the shell thread: added there at ``ws_open``, removed on the loop at the end."""
        self._client: aiohttp.ClientSession | None = None
        self.pool = bulk.Pool()
        """Read buffers of large downloads, used on the loop thread only."""

    def handle(self, op: object, msg: dict[str, Any], buffers: list[memoryview]) -> None:
        """Route one page message; raises ``KeyError``/``TypeError``/``ValueError`` on a malformed one."""
        id = msg["id"]
        call = self.runtime.call
        if op == "fetch":
            headers = [(str(k), str(v)) for k, v in msg.get("headers") or ()]
            method = str(msg.get("method") or "GET").upper()
            call(
                self._open,
                Session(id),
                Streams._fetch,
                int(msg["port"]),
                str(msg["path"]),
                method,
                headers,
                bool(msg["body"]),
            )
        elif op == "body":
            items: list[Any] = [bytes(b) for b in buffers]
            call(self._feed, id, items + [END] if msg.get("end") else items)
        elif op == "ws_open":
            self._open_websocket(id, int(msg["port"]), str(msg["path"]), [str(p) for p in msg.get("protocols") or ()])
        elif op == "ws_send":
            frames = [(bool(text), bool(final), b) for (text, final), b in zip(msg["frames"], buffers, strict=True)]
            if (upstream := self.websockets.get(id)) is not None:  # a stream that ended drops late input
                upstream.send(frames)  # written from this thread: no handoff to the loop
        elif op == "ws_close":
            if (upstream := self.websockets.get(id)) is not None:
                upstream.close(int(msg.get("code") or 1000), str(msg.get("reason") or ""))
        elif op == "ack":
            call(self._ack, id, int(msg["bytes"]), int(msg["messages"]))
        elif op == "cancel":
            call(self._cancel, id)
        else:
            raise ValueError(f"unknown op {op!r}")

    async def aclose(self) -> None:
        """Cancel every stream and close the HTTP client (on the loop thread)."""
        tasks = [s.task for s in self.sessions.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()

    def error(self, id: int, status: int, message: str) -> None:
        """Tell the page a stream failed: before its head ``status`` says how, after it 0."""
        self.send({"op": "error", "id": id, "status": status, "message": message}, ())

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

    def _open_websocket(self, id: int, port: int, path: str, protocols: list[str]) -> None:
        # The upstream object exists from here on, on the shell thread, so the
        # page's frames and close find it in order even while it connects.
        from .websocket import Upstream, serve_websocket

        if id in self.websockets:
            return self.error(id, 400, "This stream id is already in use.")
        session = Session(id)
        upstream = self.websockets[id] = Upstream(self, session)
        self.runtime.call(self._open, session, serve_websocket, upstream, port, path, protocols)

    def _open(self, session: Session, serve: Callable[..., Any], *args: Any) -> None:
        id = session.id
        if id in self.sessions:
            if (upstream := self.websockets.get(id)) is not None and upstream.session is session:
                del self.websockets[id]
            return self.error(id, 400, "This stream id is already in use.")
        self.sessions[id] = session

        async def run() -> None:
            try:
                await serve(self, session, *args)
            except Exception as exc:  # never let one stream's bug reach the loop
                log.debug("comm_bridge: stream %s failed", id, exc_info=True)
                self.error(id, 0, f"The stream failed: {type(exc).__name__}: {exc}")
            finally:
                self.sessions.pop(id, None)
                upstream = self.websockets.get(id)
                if upstream is not None and upstream.session is session:
                    del self.websockets[id]

        session.task = asyncio.ensure_future(run())

    def _feed(self, id: int, items: list[Any]) -> None:
        session = self.sessions.get(id)
        if session is not None:  # a stream that ended drops late input
            for item in items:
                session.inbox.put_nowait(item)

    def _ack(self, id: int, size: int, messages: int) -> None:
        session = self.sessions.get(id)
        if session is not None:
            session.window.release(size, messages)

    def _cancel(self, id: int) -> None:
        session = self.sessions.get(id)
        if session is not None and session.task is not None:
            session.task.cancel()

    @property
    def client(self) -> aiohttp.ClientSession:
        # aiohttp rather than httpx here: its C parser hands over each socket
        # read whole, which halves the kernel's CPU per downloaded byte
        # (docs/comm-bridge.md, benchmark); the kernel is the bottleneck.
        if self._client is None:
            self._client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
                trust_env=False,
                auto_decompress=True,
                timeout=aiohttp.ClientTimeout(total=None),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
                # Buffer up to 2 CHUNKs before pausing the socket, not 128 KiB:
                # with the default, a fast upstream paused and resumed every read.
                read_bufsize=CHUNK,
            )
        return self._client

    async def _fetch(
        self, session: Session, port: int, path: str, method: str, headers: list[tuple[str, str]], has_body: bool
    ) -> None:
        id = session.id
        try:
            target = self.target(port, path)
        except TargetError as exc:
            return self.error(id, exc.status, exc.message)
        ns = target.namespace
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        if not any(k == b"accept-encoding" for k, _ in raw):
            # The page cannot set it (browsers add it below fetch); ask for plain bytes.
            raw.append((b"accept-encoding", b"identity"))
        # No public prefix exists on this path, so no X-Forwarded-Prefix either.
        sent = CIMultiDict(
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in request_headers(raw, target, client=None, scheme="http")
            if k != b"x-forwarded-prefix"
        )
        path_part, _, query = target.target.partition("?")
        url = yarl.URL.build(scheme="http", host=ns.host, port=port, path=path_part, query_string=query, encoded=True)
        where = f"port {port}"
        try:
            pending = self.client.request(
                method,
                url,
                headers=sent,
                data=self._upload(session) if has_body else None,
                allow_redirects=False,
                compress=None,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=ns.connect_timeout),
            )
            # The header deadline covers a request without a body; an upload has none (as nginx).
            response = await (pending if has_body else asyncio.wait_for(pending, ns.header_timeout))
        except aiohttp.ConnectionTimeoutError:
            return self.error(id, 504, f"Connecting to {where} timed out.")
        except asyncio.TimeoutError:
            return self.error(id, 504, f"The server on {where} sent no response in time.")
        except aiohttp.ClientConnectorError:
            return self.error(id, 502, f"Nothing is listening on {where}.")
        except aiohttp.ClientError:
            return self.error(id, 502, f"The server on {where} closed the connection.")
        try:
            out = response_headers(response.raw_headers, target)
            # A Response built in the page is never decoded by the browser, so
            # the kernel decodes here what the upstream encoded (auto_decompress),
            # as the browser's network layer would.
            if "content-encoding" in response.headers:
                out = [(k, v) for k, v in out if k.lower() not in (b"content-encoding", b"content-length")]
            head = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in out]
            status, reason = response.status, response.reason or ""
            self.send({"op": "head", "id": id, "status": status, "reason": reason, "headers": head}, ())
            if bulk.eligible(response, method, has_body):
                return await bulk.relay(response, session, self.send, self.pool)

            async def flush(batch: list[bytes], last: bool) -> None:
                await session.window.reserve(sum(map(len, batch)))
                self.send({"op": "data", "id": id, "end": last}, batch)

            body = _reads(response.content)
            await drain(body, len, flush, CHUNK, lambda: session.window.bytes >= CHUNK, settle=True)
        except aiohttp.ClientError:
            self.error(id, 0, f"The server on {where} dropped the response before its end.")
        finally:
            response.release()

    async def _upload(self, session: Session) -> AsyncIterator[bytes]:
        unreported = 0
        while (item := await session.inbox.get()) is not END:
            yield item
            unreported += len(item) + FRAME_COST
            if unreported >= CREDIT_BYTES:
                self.send({"op": "credit", "id": session.id, "bytes": unreported}, ())
                unreported = 0


async def _reads(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The body as aiohttp read it, one socket read at a time, uncopied.

    ``iter_any()`` would join whatever is buffered into one new ``bytes``,
    copying most of a fast download once more; the pieces go to the page as
    they are anyway.
    """
    while True:
        data, end_of_http_chunk = await content.readchunk()
        if data:
            yield data
        elif not end_of_http_chunk:
            return
