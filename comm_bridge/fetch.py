"""Generic loopback HTTP over the comm: the kernel half of ``fetch``.

``fetch(port, path, init)`` in the page becomes one request to
``http://127.0.0.1:<port><path>`` on the sidecar's own upstream client
(:class:`loopback_asgi._transports.http.LoopbackTransport`): only loopback,
only ports the policy allows, proxy variables never read, hop-by-hop headers
and Jupyter credentials stripped by the sidecar's own header policy
(:mod:`loopback_asgi.sidecar.headers`), the same timeouts and refusals. The
response streams back as it arrives, in ``CHUNK``-sized messages paced by
the page's credit, so a body of any size passes in bounded memory and a
server-sent event reaches the page while the response is still being
produced. A long fixed-length body is read straight into its messages
(:mod:`comm_bridge.bulk`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

import httpx

from loopback_asgi._transports.http import byte_headers, fixed_length, hand_over, raw_headers
from loopback_asgi.sidecar.headers import request_headers, response_headers

from . import bulk
from .channel import Channel
from .flow import END, Session, drain
from .protocol import CHUNK, CREDIT_BYTES, FRAME_COST

__all__ = ["serve_fetch"]


@functools.lru_cache(maxsize=16)
def _timeouts(connect: float) -> dict[str, float | None]:
    return {"connect": connect, "read": None, "write": None, "pool": connect}


class _Upload(httpx.AsyncByteStream):
    def __init__(self, channel: Channel, session: Session) -> None:
        self.channel, self.session = channel, session

    async def __aiter__(self) -> AsyncIterator[bytes]:
        unreported = 0
        session = self.session
        while (item := await session.inbox.get()) is not END:
            yield item
            unreported += len(item) + FRAME_COST
            if unreported >= CREDIT_BYTES:
                self.channel.send({"op": "credit", "id": session.id, "bytes": unreported}, ())
                unreported = 0


_NO_BODY = httpx.ByteStream(b"")


async def serve_fetch(
    channel: Channel,
    session: Session,
    port: int,
    path: str,
    method: str,
    headers: list[tuple[str, str]],
    has_body: bool,
) -> None:
    """Send one request upstream and relay its answer as ``head`` then ``data`` messages, or ``error``."""
    id = session.id
    target = channel.resolve(id, port, path)
    if target is None:
        return None
    ns = target.namespace
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    if not any(k == b"accept-encoding" for k, _ in raw):
        # The page cannot set it (browsers add it below fetch); ask for plain bytes.
        raw.append((b"accept-encoding", b"identity"))
    # No public prefix exists on this path, so no X-Forwarded-Prefix either.
    sent = [h for h in request_headers(raw, target, client=None, scheme="http") if h[0] != b"x-forwarded-prefix"]
    if has_body:
        # The page's body streams in as it comes: chunked, whatever length was claimed.
        sent = [h for h in sent if h[0] != b"content-length"]
        sent.append((b"transfer-encoding", b"chunked"))
    request = httpx.Request(
        method,
        f"http://{ns.host}:{port}",
        headers=byte_headers(sent),
        stream=_Upload(channel, session) if has_body else _NO_BODY,
        extensions={"target": target.target_bytes, "timeout": _timeouts(ns.connect_timeout)},
    )
    where = f"port {port}"
    try:
        pending = channel.transport.handle_async_request(request)
        # The header deadline covers a request without a body; an upload has none (as nginx).
        response = await (pending if has_body else asyncio.wait_for(pending, ns.header_timeout))
    except httpx.ConnectTimeout:
        return channel.error(id, 504, f"Connecting to {where} timed out.")
    except asyncio.TimeoutError:
        return channel.error(id, 504, f"The server on {where} sent no response in time.")
    except httpx.PoolTimeout:
        return channel.error(id, 503, f"Too many connections to {where}; try again.")
    except httpx.ConnectError:
        return channel.error(id, 502, f"Nothing is listening on {where}.")
    except httpx.HTTPError:
        return channel.error(id, 502, f"The server on {where} closed the connection.")
    try:
        status = response.status_code
        out = response_headers(raw_headers(response), target, status)
        # A Response built in the page is never decoded by the browser, so
        # the kernel decodes here what the upstream encoded, as the
        # browser's network layer would (httpx's decoders).
        decode = "content-encoding" in response.headers
        if decode:
            out = [(k, v) for k, v in out if k.lower() not in (b"content-encoding", b"content-length")]
        head = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in out]
        reason = response.extensions.get("reason_phrase", b"")
        reason = reason.decode("latin-1") if isinstance(reason, bytes) else str(reason)
        channel.send({"op": "head", "id": id, "status": status, "reason": reason, "headers": head}, ())
        if not decode and bulk.eligible(method, status, fixed_length(response)):
            handed = hand_over(response)
            if handed is not None:
                channel.direct += 1
                return await bulk.relay(handed, session, channel.send, channel.pool)

        async def flush(batch: list[bytes], last: bool) -> None:
            await session.window.reserve(sum(map(len, batch)))
            channel.send({"op": "data", "id": id, "end": last}, batch)

        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        body = response.aiter_bytes() if decode else aiter(stream)
        await drain(body, len, flush, CHUNK, lambda: session.window.bytes >= CHUNK, settle=True)
    except (httpx.HTTPError, bulk.BodyCut):
        channel.error(id, 0, f"The server on {where} dropped the response before its end.")
    finally:
        await response.aclose()
