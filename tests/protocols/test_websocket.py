"""WebSocket sessions passed through as bytes (loopback_asgi/protocols/websocket.py), and their edges in both relays.

``FrameCursor`` is checked on its own against frames built here, split at
every byte; the rest runs through live sidecars started with each
``--websocket-relay``, so the pipe and the message relay must agree on
every edge: a message over the limit, fragments, a client that drops, an
upstream that dies, the sidecar stopping.
"""

from __future__ import annotations

import asyncio
import os
import signal
import struct
from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from loopback_asgi._transports.frames import FrameCursor, client_frame, server_frame
from tests.conftest import TOKEN, Proc, start_sidecar, start_upstream

AUTH = {"Authorization": f"token {TOKEN}"}
RELAYS = ["pipe", "messages"]
LIMIT = 1000


# -- FrameCursor -----------------------------------------------------------


def fragment(opcode: int, payload: bytes, *, fin: bool, masked: bool) -> bytes:
    frame = client_frame(opcode, payload) if masked else server_frame(opcode, payload)
    return frame if fin else bytes((frame[0] & 0x7F,)) + frame[1:]


def feed_split(cursor: FrameCursor, data: bytes, at: int) -> int | None:
    first = cursor.feed(data[:at])
    if first is not None:
        return first
    second = cursor.feed(data[at:])
    return None if second is None else (second + at if second >= 0 else -1)


@pytest.mark.parametrize("masked", [False, True])
def test_cursor_follows_frames_of_every_length_split_anywhere(masked: bool) -> None:
    stream = b"".join(
        fragment(op, payload, fin=True, masked=masked)
        for op, payload in [(1, b""), (2, b"x" * 125), (9, b"ping"), (2, b"y" * 126), (1, b"z" * 70_000), (10, b"")]
    )
    for at in range(len(stream) + 1):
        cursor = FrameCursor(None)
        assert feed_split(cursor, stream, at) is None
        assert cursor.at_boundary, at
        assert not cursor.close_seen


def test_cursor_is_mid_frame_until_the_payload_is_whole() -> None:
    frame = server_frame(2, b"a" * 300)
    cursor = FrameCursor(None)
    for i in range(len(frame) - 1):
        cursor.feed(frame[i : i + 1])
        assert not cursor.at_boundary
    cursor.feed(frame[-1:])
    assert cursor.at_boundary


def test_cursor_sees_a_close_frame() -> None:
    cursor = FrameCursor(None)
    cursor.feed(server_frame(1, b"bye") + server_frame(8, struct.pack("!H", 4001) + b"done"))
    assert cursor.close_seen and cursor.at_boundary


@pytest.mark.parametrize("masked", [False, True])
def test_cursor_limit_counts_a_message_across_its_fragments(masked: bool) -> None:
    ok = fragment(1, b"a" * 600, fin=False, masked=masked) + fragment(9, b"p", fin=True, masked=masked)
    ok += fragment(0, b"b" * 400, fin=True, masked=masked)  # 1000 bytes: at the limit, not over
    over = fragment(2, b"c" * 600, fin=False, masked=masked)
    second = fragment(0, b"d" * 401, fin=True, masked=masked)
    for at in range(len(ok) + len(over) + len(second) + 1):
        cursor = FrameCursor(LIMIT)
        got = feed_split(cursor, ok + over + second, at)
        start = len(ok) + len(over)  # where the frame that goes over starts
        head = 4 + (4 if masked else 0)  # its header: 16-bit length, and the mask
        # The cut is reported at the offending header, or as -1 if the header was split between pieces.
        assert got == (-1 if start < at < start + head else start), at


def test_cursor_limit_starts_again_with_each_message() -> None:
    cursor = FrameCursor(LIMIT)
    for _ in range(10):
        assert cursor.feed(server_frame(2, b"e" * LIMIT)) is None


# -- both relays, live -----------------------------------------------------


@pytest.fixture(scope="module", params=RELAYS)
def relay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def limited(relay: str) -> Iterator[str]:
    """A sidecar with ``--max-message-size 1000``, relaying the module's way."""
    proc = start_sidecar("--websocket-relay", relay, "--max-message-size", str(LIMIT))
    yield proc.match[1]
    proc.stop()


def url(base: str, port: int | str, path: str = "/ws") -> str:
    return f"ws{base.removeprefix('http')}/app/{port}{path}"


def open_ws(address: str) -> connect:
    return connect(address, additional_headers=AUTH, proxy=None, max_size=None)


async def wait_last_close(base: str, port: int, want: int) -> dict[str, object]:
    async with httpx.AsyncClient(headers=AUTH, trust_env=False) as client:
        for _ in range(100):  # bounded: the upstream records the close asynchronously
            last = (await client.get(f"{base}/app/{port}/last-close")).json()
            if last.get("code") == want:
                break
            await asyncio.sleep(0.05)
    return dict(last)


async def test_message_over_the_limit_closes_with_1009(limited: str, upstream: int) -> None:
    async with open_ws(url(limited, upstream)) as ws:
        await ws.send("a" * LIMIT)
        assert await ws.recv() == "a" * LIMIT
        await ws.send(b"b" * (LIMIT + 1))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1009


async def test_fragmented_messages_arrive_whole(limited: str, upstream: int) -> None:
    async with open_ws(url(limited, upstream)) as ws:
        await ws.send(["ab", "cd", "ef"])
        await ws.send([b"\x00" * 300, b"\x01" * 300])
        assert await ws.recv() == "abcdef"
        assert await ws.recv() == b"\x00" * 300 + b"\x01" * 300


async def test_client_dropping_sends_the_upstream_1000(limited: str, upstream: int) -> None:
    async with open_ws(url(limited, upstream)) as ws:
        await ws.send("before")
        assert await ws.recv() == "before"
        ws.transport.abort()  # no close frame: the TCP connection just ends
    assert (await wait_last_close(limited, upstream, 1000))["code"] == 1000


def stopped(proc: Proc) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.popen.wait(10)


async def test_upstream_dying_closes_the_client_with_1011(limited: str) -> None:
    own = start_upstream()
    try:
        async with open_ws(url(limited, own.match[1])) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            stopped(own)
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1011
    finally:
        own.stop()


async def test_sidecar_stopping_closes_the_client_with_1012(relay: str, upstream: int) -> None:
    own = start_sidecar("--websocket-relay", relay)
    try:
        async with open_ws(url(own.match[1], upstream)) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            own.popen.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1012
        assert own.popen.wait(10) in (0, -signal.SIGTERM)  # uvicorn ends by re-raising the signal it caught
    finally:
        own.stop()


# -- the fast path's switch (loopback_asgi/fastpaths.py: sidecar_ws_pipe) ---


@pytest.mark.parametrize("setting", ["", "sidecar_ws_pipe", "off"])
async def test_the_pipe_is_taken_unless_switched_off(setting: str, upstream: int) -> None:
    """With the switch unset the session is piped; switched off, the same sidecar relays messages."""
    own = start_sidecar("--websocket-relay", "pipe", env={"JUPYTER_LOOPBACK_FASTPATHS": setting})
    try:
        async with open_ws(url(own.match[1], upstream)) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        health = httpx.get(f"{own.match[1]}/_loopback/health", headers=AUTH, trust_env=False).json()
        way = "pipe" if setting == "" else "messages"
        assert health["websocket_sessions"] == {way: 1}
    finally:
        own.stop()
