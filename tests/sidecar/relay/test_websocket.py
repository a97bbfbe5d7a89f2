"""The WebSocket relay (loopback_asgi/sidecar/relay/websocket.py) through a live sidecar and upstream."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import TOKEN, start_sidecar

MiB = 2**20
AUTH = {"Authorization": f"token {TOKEN}"}


@pytest.fixture(scope="module", params=["pipe", "messages"])
def sidecar(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs against both ways of relaying a session (``--websocket-relay``)."""
    proc = start_sidecar("--websocket-relay", request.param)
    yield proc.match[1]
    proc.stop()


def ws_url(sidecar: str, upstream: int, path: str = "/ws") -> str:
    return f"{sidecar.replace('http://', 'ws://')}/app/{upstream}{path}"


def open_ws(url: str, **kwargs: object) -> connect:
    options: dict[str, object] = {"additional_headers": AUTH, "max_size": None, "proxy": None, **kwargs}
    return connect(url, **options)  # type: ignore[arg-type]


async def test_text_and_binary_frames_keep_type_and_order(sidecar: str, upstream: int) -> None:
    async with open_ws(ws_url(sidecar, upstream)) as ws:
        for i in range(200):
            await ws.send(f"t{i}" if i % 2 else f"b{i}".encode())
        got = [await ws.recv() for _ in range(200)]
    assert got == [f"t{i}" if i % 2 else f"b{i}".encode() for i in range(200)]


async def test_subprotocol_is_the_one_the_upstream_chose(sidecar: str, upstream: int) -> None:
    # The client lists "first" first; the upstream picks "second".
    async with open_ws(ws_url(sidecar, upstream, "/ws?choose=second"), subprotocols=["first", "second"]) as ws:
        assert ws.subprotocol == "second"
        await ws.send("x")
        assert await ws.recv() == "x"


async def test_no_subprotocol_when_the_upstream_picks_none(sidecar: str, upstream: int) -> None:
    async with open_ws(ws_url(sidecar, upstream), subprotocols=["first"]) as ws:
        assert ws.subprotocol is None


async def test_hundred_mib_message_both_ways(sidecar: str, upstream: int) -> None:
    payload = bytes(range(256)) * (100 * MiB // 256)
    async with open_ws(ws_url(sidecar, upstream)) as ws:
        await ws.send(payload)
        echoed = await asyncio.wait_for(ws.recv(), 120)
    assert echoed == payload


async def test_upstream_close_code_and_reason_reach_the_client(sidecar: str, upstream: int) -> None:
    async with open_ws(ws_url(sidecar, upstream)) as ws:
        await ws.send("close:4001:upstream says bye")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 4001
    assert ws.close_reason == "upstream says bye"


async def test_client_close_code_and_reason_reach_the_upstream(sidecar: str, upstream: int) -> None:
    async with open_ws(ws_url(sidecar, upstream)) as ws:
        await ws.send("ping")
        assert await ws.recv() == "ping"
        await ws.close(4001, "client says bye")
    async with httpx.AsyncClient(headers=AUTH, trust_env=False) as client:
        for _ in range(50):  # bounded: the upstream records the close asynchronously
            last = (await client.get(f"{sidecar}/app/{upstream}/last-close")).json()
            if last.get("code") == 4001:
                break
            await asyncio.sleep(0.05)
    assert last == {"code": 4001, "reason": "client says bye"}


async def test_handshake_headers_carry_forwarding_and_no_credentials(sidecar: str, upstream: int) -> None:
    headers = {**AUTH, "Cookie": "_xsrf=x; username-h=secret; mine=1"}
    async with open_ws(ws_url(sidecar, upstream, f"/ws-headers?token={TOKEN}"), additional_headers=headers) as ws:
        seen = dict(json.loads(await ws.recv()))
    assert seen["cookie"] == "mine=1"
    assert "authorization" not in seen
    assert seen["x-forwarded-prefix"] == f"/app/{upstream}"
    assert seen["host"] == f"127.0.0.1:{upstream}"


async def test_ping_pong_keepalive_answers(sidecar: str, upstream: int) -> None:
    async with open_ws(ws_url(sidecar, upstream)) as ws:
        latency = await asyncio.wait_for(await ws.ping(), 5)
    assert latency >= 0


async def test_backpressure_slow_reader_gets_everything(sidecar: str, upstream: int) -> None:
    """A reader that falls behind loses nothing; the writer is slowed, not buffered without bound."""
    chunk = b"x" * MiB
    async with open_ws(ws_url(sidecar, upstream), max_queue=1) as ws:

        async def writer() -> None:
            for _ in range(64):
                await ws.send(chunk)

        task = asyncio.ensure_future(writer())
        received = 0
        while received < 64:
            assert await asyncio.wait_for(ws.recv(), 30) == chunk
            received += 1
            if received % 16 == 0:
                await asyncio.sleep(0.05)
        await task
    assert received == 64


async def test_dead_upstream_refuses_the_handshake(sidecar: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with pytest.raises(InvalidStatus) as info:
        async with open_ws(ws_url(sidecar, free)):
            pass
    assert info.value.response.status_code == 502
    assert b"Nothing is accepting WebSockets" in info.value.response.body


async def test_upstream_refusing_the_websocket_refuses_the_handshake(sidecar: str, upstream: int) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with open_ws(ws_url(sidecar, upstream, "/ws-reject")):
            pass
    assert info.value.response.status_code == 502


async def test_sidecar_stays_healthy_after_many_sessions(sidecar: str, upstream: int) -> None:
    async def one(i: int) -> str:
        async with open_ws(ws_url(sidecar, upstream)) as ws:
            await ws.send(str(i))
            reply = await ws.recv()
            assert isinstance(reply, str)
            return reply

    replies = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(50))), 60)
    assert replies == [str(i) for i in range(50)]


async def test_sessions_went_the_configured_way(sidecar: str, upstream: int, request: pytest.FixtureRequest) -> None:
    """The relay the sidecar was started with is the one that carried the sessions above."""
    async with open_ws(ws_url(sidecar, upstream)) as ws:
        await ws.send("x")
        assert await ws.recv() == "x"
    health = httpx.get(f"{sidecar}/_loopback/health", headers=AUTH, trust_env=False).json()
    mode = request.node.callspec.params["sidecar"]
    other = {"pipe": "messages", "messages": "pipe"}[mode]
    assert health["websocket_sessions"].get(mode, 0) >= 1
    assert health["websocket_sessions"].get(other, 0) == 0
