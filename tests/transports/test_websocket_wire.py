"""The upstream WebSocket leg (``_transports/websocket/``) against scripted raw servers.

The server side here writes RFC 6455 frames by hand and reads the client's
masked frames back, so handshake failures, fragmentation, bad UTF-8, pings,
close frames, keepalive timeouts and backpressure are each reached exactly.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

import pytest
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.utils import apply_mask

from loopback_asgi._transports.websocket import Closed, FrameUpstream, Upstream, open_upstream
from tests.scripted import WAIT, Peer, ScriptedServer, ws_accept

pytestmark = pytest.mark.timeout(30)

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """A server frame (unmasked)."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    return head + payload


def close_frame(code: int, reason: str = "") -> bytes:
    return frame(CLOSE, code.to_bytes(2, "big") + reason.encode())


async def read_frame(peer: Peer, timeout: float = WAIT) -> tuple[int, bool, bytes]:
    """The client's next frame as ``(opcode, fin, unmasked payload)``; client frames must be masked."""

    async def read() -> tuple[int, bool, bytes]:
        b0, b1 = await peer.reader.readexactly(2)
        assert b1 & 0x80, "a client frame must be masked"
        n = b1 & 0x7F
        if n >= 126:
            n = int.from_bytes(await peer.reader.readexactly(2 if n == 126 else 8), "big")
        mask = await peer.reader.readexactly(4)
        data = await peer.reader.readexactly(n)
        return b0 & 0x0F, bool(b0 & 0x80), apply_mask(data, mask)  # websockets' own, in C where built

    return await asyncio.wait_for(read(), timeout)


async def accept(peer: Peer, extra: bytes = b"", then: bytes = b"") -> None:
    """Complete the opening handshake (with ``extra`` header lines), then send ``then`` in the same write."""
    request = await peer.read_request()
    key = request.header(b"sec-websocket-key")
    assert key is not None
    await peer.send(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + ws_accept(key) + b"\r\n" + extra + b"\r\n" + then
    )


async def answer_close(peer: Peer) -> tuple[int, str]:
    """Read frames up to the client's close frame, answer it, close; return its code and reason."""
    for _ in range(100):
        opcode, _, data = await read_frame(peer)
        if opcode == CLOSE:
            await peer.send(frame(CLOSE, data))
            peer.close()
            return int.from_bytes(data[:2], "big"), data[2:].decode()
    raise AssertionError("no close frame")


def connect(server: ScriptedServer, **options: object) -> Awaitable[Upstream]:
    settings: dict[str, object] = {"subprotocols": None, "max_size": None, "ping_interval": None, "timeout": WAIT}
    settings.update(options)
    return open_upstream(f"ws://127.0.0.1:{server.port}/ws?x=1", [("X-Forwarded-Prefix", "/p")], **settings)  # type: ignore[call-overload,no-any-return]


def connect_frames(server: ScriptedServer, **options: object) -> Awaitable[FrameUpstream]:
    settings: dict[str, object] = {"subprotocols": None, "max_size": None, "ping_interval": None, "timeout": WAIT}
    settings.update(options)
    return open_upstream(  # type: ignore[call-overload,no-any-return]
        f"ws://127.0.0.1:{server.port}/ws?x=1", [("X-Forwarded-Prefix", "/p")], frames=True, **settings
    )


Script = Callable[[Peer], Awaitable[None]]


async def test_the_handshake_sends_the_headers_and_takes_the_upstreams_subprotocol() -> None:
    seen: list[tuple[bytes, bytes | None, bytes | None]] = []

    async def script(peer: Peer) -> None:
        request = await peer.read_request()
        seen.append((request.target, request.header(b"x-forwarded-prefix"), request.header(b"sec-websocket-protocol")))
        key = request.header(b"sec-websocket-key")
        assert key is not None
        await peer.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + ws_accept(key) + b"\r\nSec-WebSocket-Protocol: b\r\n\r\n" + frame(TEXT, b"hi")
        )
        await answer_close(peer)

    async with ScriptedServer(script) as server:
        upstream = await connect(server, subprotocols=["a", "b"])
        assert upstream.subprotocol == "b"
        assert await asyncio.wait_for(upstream.recv(), WAIT) == "hi"  # a frame in the handshake's own write
        await upstream.close()
    assert seen == [(b"/ws?x=1", b"/p", b"a, b")]


@pytest.mark.parametrize("keep_open", [False, True])
async def test_a_refused_handshake_is_invalid_status(keep_open: bool) -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nnope\n")
        if keep_open:
            await peer.read_eof()
        else:
            peer.close()

    async with ScriptedServer(script) as server:
        with pytest.raises(InvalidStatus) as caught:
            await connect(server)
        assert caught.value.response.status_code == 403
        await asyncio.wait_for(server.peers[0].done.wait(), WAIT)  # and the connection is dropped


@pytest.mark.parametrize("partial", [b"", b"HTTP/1.1 101 Switching Protocols\r\nUpgr"])
async def test_a_server_closing_during_the_handshake_is_invalid_handshake(partial: bytes) -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(partial)
        peer.close()

    async with ScriptedServer(script) as server:
        with pytest.raises(InvalidHandshake):
            await connect(server)


async def test_a_silent_handshake_times_out_and_a_closed_port_refuses() -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        assert await peer.read_eof() == b""

    async with ScriptedServer(script) as server:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await connect(server, timeout=0.3)
        assert time.monotonic() - started < 2
        await asyncio.wait_for(server.peers[0].done.wait(), WAIT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        with pytest.raises(OSError):
            await open_upstream(
                f"ws://127.0.0.1:{s.getsockname()[1]}/", [], subprotocols=None, max_size=None, timeout=WAIT
            )


async def test_fragments_are_reassembled_and_interleaved_pings_answered() -> None:
    text = "hello wörld".encode()
    split = text.index(b"\xc3") + 1  # the fragments split a UTF-8 sequence
    pongs: list[bytes] = []

    async def script(peer: Peer) -> None:
        await accept(peer)
        await peer.send(frame(TEXT, text[:3], fin=False) + frame(CONT, text[3:split], fin=False))
        await peer.send(frame(PING, b"in-between") + frame(CONT, text[split:]))
        await peer.send(frame(BINARY, b"\x00\x01", fin=False) + frame(CONT, b"", fin=False) + frame(CONT, b"\x02"))
        opcode, _, data = await read_frame(peer)
        assert opcode == PONG
        pongs.append(data)
        await answer_close(peer)

    async with ScriptedServer(script) as server:
        upstream = await connect(server)
        assert await asyncio.wait_for(upstream.recv(), WAIT) == "hello wörld"
        assert await asyncio.wait_for(upstream.recv(), WAIT) == b"\x00\x01\x02"
        await upstream.close()
    assert pongs == [b"in-between"]


async def test_invalid_utf8_fails_the_connection_with_1007() -> None:
    codes: list[tuple[int, str]] = []

    async def script(peer: Peer) -> None:
        await accept(peer)
        await peer.send(frame(TEXT, b"fine") + frame(TEXT, b"bad \xff\xfe"))
        codes.append(await answer_close(peer))

    async with ScriptedServer(script) as server:
        upstream = await connect(server)
        assert await asyncio.wait_for(upstream.recv(), WAIT) == "fine"
        with pytest.raises(Closed):
            await asyncio.wait_for(upstream.recv(), WAIT)
        upstream.abort()
    assert codes and codes[0][0] == 1007


async def test_the_upstreams_close_frame_ends_recv_and_is_kept() -> None:
    echoed: list[bytes] = []

    async def script(peer: Peer) -> None:
        await accept(peer)
        await peer.send(frame(TEXT, b"last") + close_frame(4001, "bye"))
        opcode, _, data = await read_frame(peer)
        assert opcode == CLOSE
        echoed.append(data)
        peer.close()

    async with ScriptedServer(script) as server:
        upstream = await connect(server)
        assert await asyncio.wait_for(upstream.recv(), WAIT) == "last"
        with pytest.raises(Closed):
            await asyncio.wait_for(upstream.recv(), WAIT)
        close = upstream.close_rcvd
        assert close is not None and (close.code, close.reason) == (4001, "bye")
        with pytest.raises(Closed):
            await upstream.send("too late")
        await asyncio.wait_for(upstream.close(), WAIT)
    assert echoed == [(4001).to_bytes(2, "big") + b"bye"]


async def test_close_waits_for_the_upstreams_answer_only_as_long_as_told() -> None:
    async def answers(peer: Peer) -> None:
        await accept(peer)
        assert await answer_close(peer) == (1000, "done")

    async def ignores(peer: Peer) -> None:
        await accept(peer)
        assert (await read_frame(peer))[0] == CLOSE
        assert await peer.read_eof() == b""

    async with ScriptedServer(answers, ignores) as server:
        upstream = await connect(server)
        started = time.monotonic()
        await upstream.close(1000, "done", timeout=WAIT)
        assert time.monotonic() - started < 1  # the answer ended it, not the timeout
        upstream = await connect(server)
        started = time.monotonic()
        await upstream.close(timeout=0.3)
        assert 0.25 <= time.monotonic() - started < 2
        await asyncio.wait_for(server.peers[1].done.wait(), WAIT)


async def test_a_message_over_max_size_fails_with_1009() -> None:
    codes: list[tuple[int, str]] = []

    async def script(peer: Peer) -> None:
        await accept(peer)
        await peer.send(frame(BINARY, b"x" * 2000))
        codes.append(await answer_close(peer))

    async with ScriptedServer(script) as server:
        upstream = await connect(server, max_size=1000)
        with pytest.raises(Closed):
            await asyncio.wait_for(upstream.recv(), WAIT)
        upstream.abort()
    assert codes and codes[0][0] == 1009


async def test_keepalive_pings_are_sent_and_a_silent_upstream_is_failed_with_1011() -> None:
    interval = 0.2
    frames: list[tuple[int, bytes]] = []
    ended = 0.0

    async def silent(peer: Peer) -> None:
        nonlocal ended
        await accept(peer)
        for _ in range(10):
            try:
                opcode, _, data = await read_frame(peer)
            except asyncio.IncompleteReadError:
                break
            frames.append((opcode, data))
        ended = time.monotonic()

    async with ScriptedServer(silent) as server:
        upstream = await connect(server, ping_interval=interval)
        started = time.monotonic()
        with pytest.raises(Closed):
            await asyncio.wait_for(upstream.recv(), WAIT)
        await asyncio.wait_for(server.peers[0].done.wait(), WAIT)
    assert [opcode for opcode, _ in frames] == [PING, CLOSE]
    assert int.from_bytes(frames[1][1][:2], "big") == 1011
    assert 1.5 * interval <= ended - started <= 2.5 * interval + 0.5


async def test_an_upstream_answering_pings_stays_connected() -> None:
    interval = 0.1
    pings = 0

    async def answers(peer: Peer) -> None:
        nonlocal pings
        await accept(peer)
        for _ in range(100):
            opcode, _, data = await read_frame(peer)
            if opcode == PING:
                pings += 1
                await peer.send(frame(PONG, data))
            elif opcode == TEXT:
                await peer.send(frame(TEXT, data))
            elif opcode == CLOSE:
                await peer.send(frame(CLOSE, data))
                peer.close()
                return

    async with ScriptedServer(answers) as server:
        upstream = await connect(server, ping_interval=interval)
        deadline = time.monotonic() + WAIT
        while pings < 5 and time.monotonic() < deadline:
            await asyncio.sleep(interval / 2)
        assert pings >= 5  # five intervals, each ping answered: no 1011
        await upstream.send("still here")
        assert await asyncio.wait_for(upstream.recv(), WAIT) == "still here"
        await upstream.close()


async def test_backpressure_pauses_reading_at_max_queue_and_loses_nothing() -> None:
    count, size, max_queue = 50, 256 * 1024, 4
    sent = 0

    async def flood(peer: Peer) -> None:
        nonlocal sent
        await accept(peer)
        for i in range(count):
            await peer.send(frame(BINARY, bytes([i]) * size))
            sent += 1
        await answer_close(peer)

    async with ScriptedServer(flood) as server:
        upstream = await connect(server, max_queue=max_queue)
        deadline = time.monotonic() + WAIT
        while not upstream._paused and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert upstream._paused and len(upstream._messages) == max_queue
        last, steady = -1, 0
        while steady < 10 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            steady, last = (steady + 1, last) if sent == last else (0, sent)
        assert steady >= 10 and sent < count, sent  # the server's sending stalled
        assert len(upstream._messages) == max_queue
        for i in range(count):
            message = await asyncio.wait_for(upstream.recv(), WAIT)
            assert message == bytes([i]) * size, i
            assert len(upstream._messages) <= max_queue
        await upstream.close()


async def test_close_with_a_full_queue_still_reads_the_upstreams_answer() -> None:
    """The consumer stopped reading (backpressure), then closes: the upstream's close frame must still be seen."""
    closed: list[tuple[int, str]] = []

    async def streams_until_closed(peer: Peer) -> None:
        await accept(peer)

        async def feed() -> None:
            for i in range(10_000):
                await peer.send(frame(BINARY, bytes([i % 256]) * 65536))

        feeding = asyncio.ensure_future(feed())
        try:
            closed.append(await answer_close(peer))
        finally:
            feeding.cancel()
            await asyncio.gather(feeding, return_exceptions=True)

    async with ScriptedServer(streams_until_closed) as server:
        upstream = await connect(server, max_queue=2)
        deadline = time.monotonic() + WAIT
        while not upstream._paused and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert upstream._paused
        started = time.monotonic()
        await upstream.close(1001, "going away", timeout=WAIT)
        assert time.monotonic() - started < 1, "close waited for its timeout"
        assert upstream.close_rcvd is not None and upstream.close_rcvd.code == 1001
    assert closed == [(1001, "going away")]


async def test_a_consumer_behind_on_its_queue_does_not_fail_keepalive() -> None:
    """Reading paused by backpressure also holds back the upstream's pongs: that is not a dead upstream."""
    interval, pings = 0.1, 0
    codes: list[tuple[int, str]] = []

    async def answers(peer: Peer) -> None:
        nonlocal pings
        await accept(peer)
        await peer.send(b"".join(frame(TEXT, b"%d" % i) for i in range(10)))
        for _ in range(1000):
            opcode, _, data = await read_frame(peer)
            if opcode == PING:
                pings += 1
                await peer.send(frame(PONG, data))
            elif opcode == CLOSE:
                await peer.send(frame(CLOSE, data))
                codes.append((int.from_bytes(data[:2], "big"), data[2:].decode()))
                peer.close()
                return

    async with ScriptedServer(answers) as server:
        upstream = await connect(server, ping_interval=interval, max_queue=4)
        deadline = time.monotonic() + WAIT
        while (pings < 4 or not upstream._paused) and time.monotonic() < deadline:
            await asyncio.sleep(interval / 2)
        assert upstream._paused and pings >= 4  # several intervals with the pongs unread
        assert [await asyncio.wait_for(upstream.recv(), WAIT) for _ in range(10)] == [str(i) for i in range(10)]
        await upstream.close()
    assert codes == [(1000, "")]


@pytest.mark.parametrize(
    "answer",
    [
        b"Sec-WebSocket-Accept: d3JvbmcgYWNjZXB0IGtleSE=\r\n",
        b"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: never-offered\r\n",
        b"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n",
    ],
    ids=["wrong-accept", "unoffered-subprotocol", "unoffered-extension"],
)
async def test_a_101_that_breaks_the_handshake_rules_is_invalid_handshake(answer: bytes) -> None:
    async def script(peer: Peer) -> None:
        request = await peer.read_request()
        key = request.header(b"sec-websocket-key")
        assert key is not None
        head = answer.replace(b"{accept}", ws_accept(key))
        await peer.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + head + b"\r\n"
        )
        await peer.read_eof()

    async with ScriptedServer(script) as server:
        with pytest.raises(InvalidHandshake):
            await connect(server, subprotocols=["a"])
        await asyncio.wait_for(server.peers[0].done.wait(), WAIT)  # and the connection is dropped


@pytest.mark.parametrize("piece", [1, 7, 65_536, 1 << 20], ids=["bytewise", "7-byte", "64KiB", "one-write"])
async def test_small_and_large_frames_keep_their_order_however_the_bytes_arrive(piece: int) -> None:
    # Small whole data frames are split off before the parser sees them;
    # large ones, fragments and control frames go through the parser. Their
    # order must survive any split of the stream, including the handshake's
    # own last bytes.
    big = bytes(range(256)) * 400  # 102,400 bytes: over the small-frame limit
    stream = (
        frame(TEXT, b"one")
        + frame(BINARY, big)
        + frame(TEXT, b"two")
        + frame(PING, b"p")
        + frame(TEXT, b"thr", fin=False)
        + frame(CONT, b"ee")
        + frame(BINARY, b"\x04" * 200)
        + frame(TEXT, b"five")
    )
    pongs: list[bytes] = []

    async def script(peer: Peer) -> None:
        request = await peer.read_request()
        key = request.header(b"sec-websocket-key")
        assert key is not None
        data = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + ws_accept(key) + b"\r\n\r\n" + stream
        )
        for i in range(0, len(data), piece):
            await peer.send(data[i : i + piece])
        opcode, _, payload = await read_frame(peer)
        assert opcode == PONG
        pongs.append(payload)
        await answer_close(peer)

    async with ScriptedServer(script) as server:
        upstream = await connect(server)
        got = [await asyncio.wait_for(upstream.recv(), WAIT) for _ in range(6)]
        await upstream.close()
    assert got == ["one", big, "two", "three", b"\x04" * 200, "five"]
    assert pongs == [b"p"]


async def test_frame_mode_sends_fragments_from_another_thread_as_continuation_frames() -> None:
    got: list[tuple[int, bool, bytes]] = []

    async def script(peer: Peer) -> None:
        await accept(peer)
        for _ in range(5):
            got.append(await read_frame(peer))
        await answer_close(peer)

    async with ScriptedServer(script) as server:
        upstream = await connect_frames(server)
        big = bytes(range(256)) * 600  # over 64 KiB: the 8-byte length form
        await asyncio.to_thread(
            upstream.send_frames,
            [(True, False, b"ab"), (False, False, memoryview(big)), (True, True, b"ef"), (False, True, b"x")],
        )
        upstream.send_frames([(True, True, b"on the loop")])
        await upstream.close()
    assert got == [
        (TEXT, False, b"ab"),  # the first frame's type counts
        (CONT, False, big),
        (CONT, True, b"ef"),
        (BINARY, True, b"x"),
        (TEXT, True, b"on the loop"),
    ]


async def test_frame_mode_keeps_frames_that_came_with_the_handshake_for_the_consumer() -> None:
    async def script(peer: Peer) -> None:
        await accept(peer, then=frame(TEXT, b"hi") + frame(BINARY, b"\x00", fin=False) + frame(CONT, b"\x01"))
        await answer_close(peer)

    async with ScriptedServer(script) as server:
        upstream = await connect_frames(server)
        calls: list[list[tuple[bool, bool, bytes]]] = []
        arrived = asyncio.Event()

        def consume(frames: list[tuple[bool, bool, bytes | bytearray | memoryview]]) -> None:
            calls.append([(text, fin, bytes(payload)) for text, fin, payload in frames])
            arrived.set()

        upstream.receive_frames(consume)
        for _ in range(3):  # bounded: the bytes may come in up to three reads
            if sum(map(len, calls)) >= 3:
                break
            arrived.clear()
            await asyncio.wait_for(arrived.wait(), WAIT)
        assert [f for call in calls for f in call] == [
            (True, True, b"hi"),
            (False, False, b"\x00"),
            (False, True, b"\x01"),
        ]
        await upstream.close()


async def test_frame_mode_counts_what_the_socket_has_not_taken_and_tells_when_it_has() -> None:
    """A server that does not read leaves bytes waiting (``buffered``); once it reads, ``on_drain`` comes."""
    reading = asyncio.Event()
    total = 0

    async def script(peer: Peer) -> None:
        nonlocal total
        await accept(peer)
        await reading.wait()
        while True:
            opcode, _, data = await read_frame(peer)
            if opcode == CLOSE:
                await peer.send(frame(CLOSE, data))
                peer.close()
                return
            total += len(data)

    async with ScriptedServer(script) as server:
        upstream = await connect_frames(server)
        drains: list[int] = []
        drained = asyncio.Event()

        def on_drain() -> None:
            drains.append(upstream.buffered)
            drained.set()

        upstream.on_drain = on_drain
        piece = bytes(1 << 20)
        await asyncio.to_thread(upstream.send_frames, [(False, i == 31, piece) for i in range(32)])
        assert upstream.buffered > 0  # 32 MiB: more than the sockets hold
        drained.clear()
        reading.set()
        await asyncio.wait_for(drained.wait(), WAIT)  # down to the low-water mark
        assert drains[-1] <= 64 * 1024
        deadline = time.monotonic() + WAIT
        while upstream.buffered and time.monotonic() < deadline:  # the last bytes of a partial write
            await asyncio.sleep(0.01)
        assert upstream.buffered == 0
        await upstream.close()
    assert total == 32 << 20


async def test_frame_mode_ends_when_the_upstream_breaks_the_protocol() -> None:
    """A frame no server may send fails the connection (1002) and ends frame mode, though the TCP stays open."""
    sent: list[tuple[int, bool, bytes]] = []
    done = asyncio.Event()

    async def script(peer: Peer) -> None:
        await accept(peer)
        await peer.send(bytes([0x80 | 0x3, 0]))  # a reserved opcode
        sent.append(await read_frame(peer))
        await done.wait()  # the TCP connection stays open until the client drops it

    async with ScriptedServer(script) as server:
        upstream = await connect_frames(server)
        upstream.receive_frames(lambda frames: None)
        await asyncio.wait_for(upstream.ending, WAIT)
        await upstream.close(timeout=0.1)
        done.set()
    assert sent and sent[0][0] == CLOSE and int.from_bytes(sent[0][2][:2], "big") == 1002
