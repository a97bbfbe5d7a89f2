"""The adapter's WebSocket relay (loopback_asgi/jupyter/websocket.py), through a real Jupyter server.

Frames of every size and kind in order, pings answered end to end,
fragments, the browser dropping, the sidecar dying: what the relay must
keep, on both of the sidecar's ways (byte pipe or messages).
"""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from loopback_asgi import fastpaths
from loopback_asgi._transports.frames import client_frame
from tests.jupyter_fixtures import JupyterServer, start_jupyter, stop_jupyter


def url(server: JupyterServer, port: int) -> str:
    return f"{server.ws_url}loopback/app/{port}/ws"


async def test_frames_of_every_size_and_kind_in_order(jupyter_base: JupyterServer, upstream: int) -> None:
    sizes = [0, 1, 125, 126, 65535, 65536, 300_000]
    async with connect(url(jupyter_base, upstream), additional_headers=jupyter_base.auth, proxy=None) as ws:
        for n in sizes:
            await ws.send(bytes(range(256)) * (n // 256) + bytes(n % 256))
            await ws.send("é" * n)
        await ws.send(["frag", "mented ", "text"])
        pong = await ws.ping(b"end to end")
        for n in sizes:
            assert await ws.recv() == bytes(range(256)) * (n // 256) + bytes(n % 256)
            assert await ws.recv() == "é" * n
        assert await ws.recv() == "fragmented text"
        await asyncio.wait_for(pong, 10)


async def test_the_browser_dropping_closes_upstream_with_no_status(jupyter_base: JupyterServer, upstream: int) -> None:
    async with connect(url(jupyter_base, upstream), additional_headers=jupyter_base.auth, proxy=None) as ws:
        await ws.send("before")
        assert await ws.recv() == "before"
        ws.transport.abort()  # the TCP connection just ends, no close frame
    async with httpx.AsyncClient(trust_env=False) as client:
        for _ in range(100):  # bounded: the upstream records the close a moment later
            last = (await client.get(f"http://127.0.0.1:{upstream}/last-close")).json()
            if last.get("code") == 1005:
                break
            await asyncio.sleep(0.05)
    assert last == {"code": 1005, "reason": ""}


async def test_the_sidecar_dying_closes_the_browser_with_1011(jupyter_base: JupyterServer, upstream: int) -> None:
    async with connect(url(jupyter_base, upstream), additional_headers=jupyter_base.auth, proxy=None) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
        pids = jupyter_base.sidecar_pids()
        assert pids
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1011
    # The adapter starts a new sidecar for the next session.
    async with connect(url(jupyter_base, upstream), additional_headers=jupyter_base.auth, proxy=None) as ws:
        await ws.send("again")
        assert await asyncio.wait_for(ws.recv(), 10) == "again"


# -- the fast path's switch (loopback_asgi/fastpaths.py: adapter_ws_pipe) ---


async def reserved_bit_frame_close(server: JupyterServer, port: int) -> int | None:
    """Send a frame with RSV1 set (no extension allows it): only the upstream, reached byte for byte, answers 1002."""
    async with connect(url(server, port), additional_headers=server.auth, proxy=None) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
        frame = bytearray(client_frame(0x1, b"reserved"))
        frame[0] |= 0x40
        ws.transport.write(bytes(frame))
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
    return info.value.rcvd.code if info.value.rcvd is not None else None


async def test_the_adapter_pipes_the_session(jupyter_base: JupyterServer, upstream: int) -> None:
    if not fastpaths.enabled("adapter_ws_pipe"):
        # An installed tornado outside the checked range (the lowest-versions run): the
        # fallback is what runs, and test_switched_off_tornado_reads_the_frames covers it.
        pytest.skip(f"adapter_ws_pipe is not taken with tornado {fastpaths.version_of('tornado')}")
    assert await reserved_bit_frame_close(jupyter_base, upstream) == 1002  # the upstream's own answer


async def test_switched_off_tornado_reads_the_frames(upstream: int) -> None:
    server = start_jupyter(env={"JUPYTER_LOOPBACK_FASTPATHS": "adapter_ws_pipe"})
    try:
        assert await reserved_bit_frame_close(server, upstream) != 1002  # tornado refused it itself
        async with connect(url(server, upstream), additional_headers=server.auth, proxy=None) as ws:
            for n in (0, 125, 70_000):
                await ws.send("é" * n)
                assert await ws.recv() == "é" * n
    finally:
        stop_jupyter(server)
