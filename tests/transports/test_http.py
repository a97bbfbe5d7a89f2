"""LoopbackTransport and its wire ``Connection`` against scripted raw servers.

Each upstream here is a real TCP server on 127.0.0.1 (``tests/scripted.py``)
that writes exact bytes, so the edge cases a well-behaved upstream never
produces are reached: HEAD with a length, interim responses, bodies delimited
by the connection's end or cut short, stale kept-alive connections, malformed
or surplus responses, pool limits, flow control, request framing. Where the
user-visible answer matters, the same server sits behind a real sidecar.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from loopback_asgi._transports.http import LoopbackTransport
from loopback_asgi._transports.http_connection import HIGH_WATER, Connection
from tests.conftest import TOKEN, Proc
from tests.scripted import WAIT, Peer, ScriptedServer

AUTH = {"Authorization": f"token {TOKEN}"}
# The transport has no read deadline of its own, so a regression would hang:
# fail fast instead.
pytestmark = pytest.mark.timeout(30)
SOCKET_READ = 256 * 1024  # the most an asyncio transport reads from a socket at once


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def keep_alive(peer: Peer) -> None:
    """Answer every request with ``ok`` on a kept-alive connection until the client leaves."""
    while True:
        request = await peer.read_request(timeout=60)
        await peer.send(ok(b"ok " + request.target))


@contextlib.asynccontextmanager
async def pool(**options: float) -> AsyncIterator[tuple[LoopbackTransport, httpx.AsyncClient]]:
    transport = LoopbackTransport(**options)
    async with httpx.AsyncClient(transport=transport, timeout=WAIT, trust_env=False) as client:
        yield transport, client


async def until(predicate: Callable[[], object], timeout: float = WAIT) -> None:
    """Wait (bounded) for a condition another task or the event loop brings about."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def connection(response: httpx.Response) -> Connection:
    conn = response.stream._conn  # type: ignore[union-attr]
    assert isinstance(conn, Connection)
    return conn


async def head_has_a_length(peer: Peer) -> None:
    """Answer HEAD with ``Content-Length: 1000`` and no body, anything else with ``ok``, until the client leaves."""
    while True:
        request = await peer.read_request(timeout=60)
        if request.method == b"HEAD":
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: text/plain\r\n\r\n")
        else:
            await peer.send(ok(b"ok " + request.target))


async def test_head_with_a_length_returns_at_once_and_the_pool_goes_on() -> None:
    async with ScriptedServer(head_has_a_length) as server, pool() as (_, client):
        r = await asyncio.wait_for(client.head(f"{server.url}/x"), 1)
        assert (r.status_code, r.headers["content-length"], r.content) == (200, "1000", b"")
        r = await asyncio.wait_for(client.get(f"{server.url}/y"), WAIT)
        assert r.content == b"ok /y"


@pytest.mark.parametrize("split", [True, False], ids=["separate-writes", "one-write"])
async def test_interim_responses_are_skipped(split: bool) -> None:
    interim = [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
        ok(b"final", b"X-Final: 1\r\n"),
    ]

    async def script(peer: Peer) -> None:
        await peer.read_request()
        for part in interim if split else [b"".join(interim)]:
            await peer.send(part)
        await keep_alive(peer)

    async with ScriptedServer(script) as server, pool() as (_, client):
        r = await client.post(f"{server.url}/up", content=b"data")
        assert (r.status_code, r.reason_phrase, r.content) == (200, "OK", b"final")
        assert r.headers["x-final"] == "1" and "link" not in r.headers
        assert (await client.get(f"{server.url}/next")).content == b"ok /next"
        assert len(server.peers) == 1  # the connection was kept


async def test_switching_protocols_on_a_plain_request_is_an_error() -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        await peer.read_eof()

    async with ScriptedServer(script) as server, pool() as (_, client):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(server.url)
        await asyncio.wait_for(server.peers[0].done.wait(), WAIT)  # the client closed it


@pytest.mark.parametrize(
    "head",
    [b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 200 OK\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n"],
    ids=["http-1.1", "http-1.0", "not-chunked"],  # RFC 9112 section 6.3: a coding other than chunked last
)
async def test_a_body_delimited_by_close_is_complete_and_the_connection_not_reused(head: bytes) -> None:
    body = random.Random(1).randbytes(300_000)

    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(head + b"Content-Type: application/octet-stream\r\n\r\n" + body)
        peer.close()

    async with ScriptedServer(script, keep_alive) as server, pool() as (_, client):
        r = await client.get(f"{server.url}/first")
        assert r.content == body
        assert (await client.get(f"{server.url}/second")).content == b"ok /second"
        assert len(server.peers) == 2


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_length_body_cut_short_raises(how: str) -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000)
        peer.close() if how == "close" else peer.abort()

    async with ScriptedServer(script, keep_alive) as server, pool() as (_, client):
        async with client.stream("GET", server.url) as r:
            assert r.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                await asyncio.wait_for(r.aread(), WAIT)
        assert (await client.get(f"{server.url}/again")).content == b"ok /again"


async def test_the_sidecar_cuts_the_stream_of_a_body_cut_short(sidecar: str) -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000)
        peer.close()

    async with (
        ScriptedServer(script, keep_alive) as server,
        httpx.AsyncClient(headers=AUTH, timeout=WAIT, trust_env=False) as client,
    ):
        async with client.stream("GET", f"{sidecar}/app/{server.port}/x") as r:
            assert r.status_code == 200
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                await asyncio.wait_for(r.aread(), WAIT)
        r = await client.get(f"{sidecar}/app/{server.port}/next")
        assert (r.status_code, r.content) == (200, b"ok /next")


async def test_many_small_chunks_with_extensions_and_trailers_arrive_intact() -> None:
    rng = random.Random(7)
    body = rng.randbytes(60_000)
    framed = bytearray(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n")
    at = n = 0
    while at < len(body):
        piece = body[at : at + rng.randint(1, 40)]
        at += len(piece)
        extension = b";n=%d" % n if n % 7 == 0 else b""
        framed += b"%x%s\r\n%s\r\n" % (len(piece), extension, piece)
        n += 1
    framed += b"0\r\nX-Sum: " + hashlib.sha256(body).hexdigest().encode() + b"\r\n\r\n"

    async def script(peer: Peer) -> None:
        await peer.read_request()
        for start in range(0, len(framed), 977):  # splits size lines and CRLFs across reads
            await peer.send(bytes(framed[start : start + 977]))
        await keep_alive(peer)

    async with ScriptedServer(script) as server, pool() as (_, client):
        r = await client.get(server.url)
        assert n > 2000 and r.content == body
        assert (await client.get(f"{server.url}/next")).content == b"ok /next"
        assert len(server.peers) == 1


async def answer_once_then_drop(peer: Peer) -> None:
    """Answer one request keep-alive, then read the next and close without a word (a stale connection)."""
    await peer.read_request()
    await peer.send(ok(b"first"))
    await peer.read_request()
    peer.close()


async def test_a_bodiless_request_on_a_stale_connection_is_retried_once() -> None:
    async with ScriptedServer(answer_once_then_drop, keep_alive) as server, pool() as (_, client):
        assert (await client.get(f"{server.url}/1")).content == b"first"
        r = await client.get(f"{server.url}/2")
        assert r.content == b"ok /2"
        assert len(server.peers) == 2 and len(server.peers[0].requests) == 2


async def test_a_streamed_body_is_not_replayed() -> None:
    sent = 0

    async def upload() -> AsyncIterator[bytes]:
        nonlocal sent
        for piece in (b"a" * 1000, b"b" * 1000):
            sent += 1
            yield piece

    async with ScriptedServer(answer_once_then_drop, keep_alive) as server, pool() as (_, client):
        assert (await client.get(f"{server.url}/1")).content == b"first"
        with pytest.raises(httpx.TransportError):
            await client.post(f"{server.url}/2", content=upload())
        assert sent == 2 and len(server.peers) == 1
        assert server.peers[0].requests[1].body == b"a" * 1000 + b"b" * 1000


async def test_a_request_the_upstream_began_to_answer_is_not_replayed() -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(ok(b"first"))
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 O")
        peer.close()

    async with ScriptedServer(script, keep_alive) as server, pool() as (_, client):
        assert (await client.get(f"{server.url}/1")).content == b"first"
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"{server.url}/2")
        assert len(server.peers) == 1


async def test_a_connection_the_upstream_closed_while_idle_is_not_used() -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(ok(b"first"))
        peer.close()

    async with ScriptedServer(script, keep_alive) as server, pool() as (_, client):
        assert (await client.get(f"{server.url}/1")).content == b"first"
        await asyncio.wait_for(server.peers[0].done.wait(), WAIT)
        assert (await client.get(f"{server.url}/2")).content == b"ok /2"
        assert len(server.peers[0].requests) == 1


async def test_the_sidecar_relays_head_and_a_stale_connection_without_a_fault(sidecar: str) -> None:
    """Through the sidecar: a GET that meets a stale connection gets 200; HEAD with a length answers at once."""
    async with (
        ScriptedServer(answer_once_then_drop, head_has_a_length) as server,
        httpx.AsyncClient(headers=AUTH, timeout=WAIT, trust_env=False) as client,
    ):
        assert (await client.get(f"{sidecar}/app/{server.port}/1")).content == b"first"
        r = await client.get(f"{sidecar}/app/{server.port}/2")
        assert (r.status_code, r.content) == (200, b"ok /2")
        assert len(server.peers[0].requests) == 2  # it did meet the stale connection
        r = await asyncio.wait_for(client.head(f"{sidecar}/app/{server.port}/h"), 2)
        assert (r.status_code, r.headers["content-length"], r.content) == (200, "1000", b"")


MALFORMED = [
    b"HTTP/1.1 abc OK\r\n\r\n",
    b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"HTTP/1.1 200 OK\r\nA header line with no colon\r\n\r\n",
]


@pytest.mark.parametrize("answer", MALFORMED)
async def test_a_malformed_response_is_a_protocol_error(answer: bytes) -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(answer)
        await peer.read_eof()

    async with ScriptedServer(script) as server, pool() as (_, client):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(server.url)
        await asyncio.wait_for(server.peers[0].done.wait(), WAIT)  # and the connection is dropped


async def test_the_sidecar_answers_502_with_one_sentence_to_a_malformed_response(
    sidecar: str, sidecar_proc: Proc
) -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(MALFORMED[0])
        await peer.read_eof()

    async with (
        ScriptedServer(script) as server,
        httpx.AsyncClient(headers=AUTH, timeout=WAIT, trust_env=False) as client,
    ):
        r = await client.get(f"{sidecar}/app/{server.port}/x")
        assert r.status_code == 502
        text = r.text.strip()
        assert "\n" not in text and text.endswith(".") and f"port {server.port}" in text, text
    assert "Traceback" not in "".join(sidecar_proc.output)


@pytest.mark.parametrize(
    "extra",
    [ok(b"unsolicited"), b"garbage after the body", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"],
    ids=["second-response", "garbage", "second-head"],
)
@pytest.mark.parametrize("when", ["same-write", "after"])
async def test_bytes_after_a_response_mean_the_connection_is_not_reused(extra: bytes, when: str) -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        if when == "same-write":
            await peer.send(ok(b"one") + extra)
        else:
            await peer.send(ok(b"one"))
            await peer.send(extra)
        await peer.read_eof()

    async with ScriptedServer(script, keep_alive) as server, pool() as (_, client):
        assert (await client.get(f"{server.url}/1")).content == b"one"
        if when == "after":
            # Bytes on an idle connection: it is dropped before anyone takes it.
            await asyncio.wait_for(server.peers[0].done.wait(), WAIT)
        assert (await client.get(f"{server.url}/2")).content == b"ok /2"
        assert len(server.peers) == 2 and len(server.peers[0].requests) == 1
        await asyncio.wait_for(server.peers[0].done.wait(), WAIT)


@pytest.mark.parametrize(
    "answer",
    [ok(b"one", b"Connection: close\r\n"), b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\none"],
    ids=["connection-close", "http-1.0"],
)
async def test_a_response_that_ends_the_connection_is_not_reused(answer: bytes) -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(answer)
        assert await peer.read_eof() == b""  # the client closes it, sending nothing more

    async with ScriptedServer(script, keep_alive) as server, pool() as (_, client):
        assert (await client.get(f"{server.url}/1")).content == b"one"
        await asyncio.wait_for(server.peers[0].done.wait(), WAIT)
        assert (await client.get(f"{server.url}/2")).content == b"ok /2"
        assert len(server.peers) == 2


async def test_a_held_response_exhausts_a_one_connection_pool() -> None:
    async with ScriptedServer(keep_alive) as server, pool(max_connections=1) as (_, client):
        held = await client.send(client.build_request("GET", f"{server.url}/held"), stream=True)
        started = time.monotonic()
        with pytest.raises(httpx.PoolTimeout):
            await client.get(f"{server.url}/waits", timeout=httpx.Timeout(WAIT, pool=0.3))
        assert 0.25 <= time.monotonic() - started < 2
        await held.aclose()
        r = await client.get(f"{server.url}/after", timeout=httpx.Timeout(WAIT, pool=0.3))
        assert r.content == b"ok /after"  # the slot came back


async def test_cancelling_a_request_closes_its_connection_and_frees_its_slot() -> None:
    arrived = asyncio.Event()

    async def silent(peer: Peer) -> None:
        await peer.read_request()
        arrived.set()
        assert await peer.read_eof() == b""

    async with ScriptedServer(silent, keep_alive) as server, pool(max_connections=1) as (_, client):
        task = asyncio.ensure_future(client.get(f"{server.url}/never"))
        await asyncio.wait_for(arrived.wait(), WAIT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(server.peers[0].done.wait(), WAIT)  # the upstream saw the connection end
        r = await client.get(f"{server.url}/after", timeout=httpx.Timeout(WAIT, pool=0.3))
        assert r.content == b"ok /after"


async def test_a_large_body_read_slowly_keeps_the_buffer_bounded() -> None:
    total, piece = 20 * 2**20, bytes(range(256)) * 256
    sent = 0

    async def flood(peer: Peer) -> None:
        nonlocal sent
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        while sent < total:
            await peer.send(piece)
            sent += len(piece)

    async with ScriptedServer(flood) as server, pool() as (transport, client):
        r = await transport.handle_async_request(client.build_request("GET", server.url))
        conn = connection(r)
        await until(lambda: conn._paused)
        # Reading stays paused until the consumer catches up: the server's
        # sending stalls once the kernel's buffers are full.
        last, steady = -1, 0
        deadline = time.monotonic() + WAIT
        while steady < 10 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            steady, last = (steady + 1, last) if sent == last else (0, sent)
        assert steady >= 10 and sent < total, (sent, steady)
        assert conn._buffered <= HIGH_WATER + SOCKET_READ
        digest, got, most = hashlib.sha256(), 0, 0
        async for chunk in r.aiter_raw():
            digest.update(chunk)
            got += len(chunk)
            most = max(most, conn._buffered)
        await r.aclose()
        assert got == total and digest.digest() == hashlib.sha256(piece * (total // len(piece))).digest()
        assert most <= HIGH_WATER + SOCKET_READ, most


@pytest.mark.parametrize(
    "headers, target",
    [
        ({"X-A": "a\r\nInjected: 1"}, None),
        ({"X-A": "a\nInjected: 1"}, None),
        ({"X-A\r\nInjected": "1"}, None),
        ({}, b"/a\r\nInjected: 1"),
        ({}, b"/a HTTP/1.1\nX: y"),
        ({}, b"/a b"),
    ],
)
async def test_line_breaks_in_a_header_or_the_target_are_refused_before_writing(
    headers: dict[str, str], target: bytes | None
) -> None:
    async def script(peer: Peer) -> None:
        assert await peer.read_eof() == b""

    async with ScriptedServer(script) as server, pool() as (_, client):
        extensions = {"target": target} if target else {}
        request = client.build_request("GET", f"{server.url}/x", headers=headers, extensions=extensions)
        with pytest.raises(httpx.LocalProtocolError):
            await asyncio.wait_for(client.send(request), WAIT)
        await asyncio.wait_for(server.peers[0].done.wait(), WAIT)


async def record(peer: Peer) -> None:
    request = await peer.read_request()
    await peer.send(ok(hashlib.sha256(request.body).hexdigest().encode()))
    await keep_alive(peer)


async def test_a_length_body_is_sent_as_it_is() -> None:
    body = random.Random(3).randbytes(100_000)
    async with ScriptedServer(record) as server, pool() as (_, client):
        await client.post(f"{server.url}/up", content=body)
        request = server.peers[0].requests[0]
        assert request.header(b"content-length") == b"100000" and request.header(b"transfer-encoding") is None
        assert request.raw.endswith(b"\r\n\r\n" + body) and request.body == body


@pytest.mark.parametrize("length", [False, True], ids=["chunked", "content-length"])
async def test_a_streamed_body_is_framed(length: bool) -> None:
    pieces = [b"ab", b"", b"c" * 70_000, b"d"]  # an empty piece must not end the body

    async def upload() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    headers = {"Content-Length": str(sum(map(len, pieces)))} if length else {}
    async with ScriptedServer(record) as server, pool() as (_, client):
        r = await client.post(f"{server.url}/up", content=upload(), headers=headers)
        assert r.content == hashlib.sha256(b"".join(pieces)).hexdigest().encode()
        request = server.peers[0].requests[0]
        assert request.body == b"".join(pieces)
        if length:
            assert request.header(b"transfer-encoding") is None and request.chunk_sizes == []
        else:
            assert request.header(b"transfer-encoding") == b"chunked" and request.chunk_sizes == [2, 70_000, 1]
        assert (await client.get(f"{server.url}/next")).content == b"ok /next"  # framing left nothing behind


async def test_the_target_extension_goes_out_byte_for_byte() -> None:
    target = b"/a/%2F/../b;p=1//c?x=%ZZ&y=\xc3\xa9&&z#frag"
    async with ScriptedServer(record) as server, pool() as (_, client):
        await client.send(client.build_request("GET", f"{server.url}/ignored", extensions={"target": target}))
        assert server.peers[0].requests[0].target == target
        assert server.peers[0].requests[0].raw.startswith(b"GET " + target + b" HTTP/1.1\r\n")


async def test_connecting_to_a_closed_port_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        async with pool() as (_, client):
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{port}/")


async def test_connecting_to_a_full_backlog_times_out() -> None:
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        for _ in range(4):  # never accepted: they fill the accept queue
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(address)
        probe = stack.enter_context(socket.socket())
        probe.settimeout(0.2)
        try:
            probe.connect(address)
        except OSError:
            pass
        else:
            pytest.skip("this kernel accepted a connection past a full backlog")
        async with pool() as (_, client):
            started = time.monotonic()
            with pytest.raises(httpx.ConnectTimeout):
                await client.get(f"http://127.0.0.1:{address[1]}/", timeout=httpx.Timeout(WAIT, connect=0.3))
            assert time.monotonic() - started < 2


async def test_aclose_closes_every_connection() -> None:
    async with ScriptedServer(keep_alive) as server, pool() as (transport, client):
        await asyncio.gather(*(client.get(f"{server.url}/{i}") for i in range(3)))
        assert len(server.peers) == 3  # three at once: three connections, now idle
        held = await client.send(client.build_request("GET", f"{server.url}/held"), stream=True)
        await transport.aclose()  # two idle, one busy: the server sees each end
        await asyncio.wait_for(asyncio.gather(*(p.done.wait() for p in server.peers)), WAIT)
        await held.aclose()


@pytest.mark.parametrize(
    "answer",
    [
        b'HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\nETag: "x"\r\n\r\n',
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ],
    ids=["304-with-length", "204"],
)
async def test_a_bodiless_status_returns_at_once_and_keeps_the_connection(answer: bytes) -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(answer)
        await keep_alive(peer)

    async with ScriptedServer(script) as server, pool() as (_, client):
        r = await asyncio.wait_for(client.get(f"{server.url}/1"), 1)
        assert r.content == b""
        assert (await client.get(f"{server.url}/2")).content == b"ok /2"
        assert len(server.peers) == 1


async def test_a_chunked_body_cut_short_raises() -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n10\r\nonly")
        peer.close()

    async with ScriptedServer(script) as server, pool() as (_, client):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(server.url)


async def test_idle_connections_past_max_idle_are_closed() -> None:
    async with ScriptedServer(keep_alive) as server, pool(max_idle=1) as (_, client):
        await asyncio.gather(*(client.get(f"{server.url}/{i}") for i in range(3)))
        assert len(server.peers) == 3
        await until(lambda: sum(p.done.is_set() for p in server.peers) == 2)
        (kept,) = [p for p in server.peers if not p.done.is_set()]
        assert (await client.get(f"{server.url}/again")).content == b"ok /again"
        assert len(server.peers) == 3 and len(kept.requests) == 2


async def test_a_response_closed_unread_after_reading_paused_leaves_a_working_connection() -> None:
    """A body of exactly HIGH_WATER bytes, complete but not consumed, pauses reading as it completes.

    Closed unread, the connection is kept (the response was complete); the
    next request on it must be read, not wait on a socket left paused.
    """

    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % HIGH_WATER + b"x" * HIGH_WATER)
        await keep_alive(peer)

    async with ScriptedServer(script) as server, pool() as (transport, client):
        r = await transport.handle_async_request(client.build_request("GET", f"{server.url}/big"))
        conn = connection(r)
        await until(lambda: conn.response.complete)
        assert conn._paused and not conn.drained
        await r.aclose()
        r = await asyncio.wait_for(client.get(f"{server.url}/next"), WAIT)
        assert r.content == b"ok /next"


async def test_an_expired_idle_connection_is_closed_not_reused() -> None:
    async with ScriptedServer(keep_alive) as server, pool(keepalive_expiry=0) as (_, client):
        for i in range(3):
            assert (await client.get(f"{server.url}/{i}")).content == b"ok /%d" % i
        assert len(server.peers) == 3
        await asyncio.wait_for(asyncio.gather(*(p.done.wait() for p in server.peers[:2])), WAIT)


async def test_idle_connections_are_closed_on_a_timer_without_another_request() -> None:
    """A burst's idle connections close once they expire, though no later request comes to notice."""
    async with ScriptedServer(keep_alive) as server, pool(keepalive_expiry=0.2) as (transport, client):
        await asyncio.gather(*(client.get(f"{server.url}/{i}") for i in range(5)))
        assert len(server.peers) == 5 and transport.idle_connections == 5
        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(p.done.wait() for p in server.peers)), WAIT)
        assert time.monotonic() - started < 0.2 + LoopbackTransport.REAP_SLACK + 0.5
        assert transport.idle_connections == 0
        # The pool still works, and arms its timer again.
        assert (await client.get(f"{server.url}/again")).content == b"ok /again"
        await asyncio.wait_for(server.peers[-1].done.wait(), WAIT)


async def test_the_idle_pool_is_bounded_by_default() -> None:
    async with ScriptedServer(keep_alive) as server, pool() as (transport, client):
        await asyncio.gather(*(client.get(f"{server.url}/{i}") for i in range(transport.max_idle + 8)))
        assert transport.max_idle <= 32 and transport.keepalive_expiry < 5
        assert transport.idle_connections == transport.max_idle
        await until(lambda: sum(p.done.is_set() for p in server.peers) == 8)


async def test_max_connections_is_one_limit_for_all_upstreams() -> None:
    """As docs/admin-policy.md says: a connection in use to one upstream takes the only slot from another."""
    async with ScriptedServer(keep_alive) as one, ScriptedServer(keep_alive) as two:
        async with pool(max_connections=1) as (transport, client):
            held = await transport.handle_async_request(client.build_request("GET", f"{one.url}/held"))
            with pytest.raises(httpx.PoolTimeout):
                await client.get(f"{two.url}/waits", timeout=httpx.Timeout(WAIT, pool=0.2))
            await held.aclose()
            assert (await client.get(f"{two.url}/now")).content == b"ok /now"


async def test_an_early_answer_while_the_body_is_still_streaming_stands() -> None:
    """The upstream answers 413 after the head and closes: the rest of the upload is dropped, the 413 is the answer."""

    async def script(peer: Peer) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        await peer.send(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large")
        peer.close()

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"x" * 65536

    async with ScriptedServer(script) as server, pool() as (_, client):
        r = await asyncio.wait_for(client.post(server.url, content=upload()), WAIT)
        assert (r.status_code, r.content) == (413, b"too large")


async def test_a_bad_header_is_refused_without_spending_another_connection() -> None:
    async with ScriptedServer(keep_alive) as server, pool() as (_, client):
        assert (await client.get(f"{server.url}/first")).content == b"ok /first"
        with pytest.raises(httpx.LocalProtocolError):
            await asyncio.wait_for(client.get(f"{server.url}/bad", headers={"X-A": "a\r\nInjected: 1"}), WAIT)
        assert (await client.get(f"{server.url}/after")).content == b"ok /after"
        # The bad request was neither written nor retried on a fresh connection.
        assert [r.target for p in server.peers for r in p.requests] == [b"/first", b"/after"]
        assert len(server.peers) == 2


async def test_a_transfer_coding_list_ending_in_chunked_is_chunk_framed() -> None:
    async def upload() -> AsyncIterator[bytes]:
        yield b"coded "
        yield b"bytes"

    async with ScriptedServer(record) as server, pool() as (_, client):
        headers = {"Transfer-Encoding": "gzip, chunked"}
        await client.post(f"{server.url}/up", content=upload(), headers=headers)
        request = server.peers[0].requests[0]
        assert request.chunk_sizes == [6, 5] and request.body == b"coded bytes"


@pytest.mark.parametrize(
    "header",
    [(b"x-a", b"1\r\nx-injected: yes"), (b"x-a", b"1\nx-injected: yes"), (b"x-a", b"1\r"), (b"x-a:b", b"1")],
)
async def test_a_header_with_a_line_break_or_a_colon_in_its_name_is_refused_before_sending(
    header: tuple[bytes, bytes],
) -> None:
    """Nothing is written: the upstream sees no request at all, and the next good request works."""

    async def script(peer: Peer) -> None:
        request = await peer.read_request(timeout=WAIT)
        assert request.target == b"/good"
        await peer.send(ok())

    async with ScriptedServer(script) as server:
        transport = LoopbackTransport()
        bad = httpx.Request("GET", f"{server.url}/bad", headers=[header])
        with pytest.raises(httpx.LocalProtocolError):
            await transport.handle_async_request(bad)
        response = await transport.handle_async_request(httpx.Request("GET", f"{server.url}/good"))
        assert response.status_code == 200
        await response.aread()
        await transport.aclose()
