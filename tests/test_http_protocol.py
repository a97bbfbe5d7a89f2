"""HeadWithBody (loopback_asgi/http_protocol.py) on a real socket pair: nothing held for long, nothing reordered."""

from __future__ import annotations

import asyncio
import socket

from loopback_asgi.http_protocol import HeadWithBody


async def pair() -> tuple[asyncio.Transport, socket.socket]:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    return transport, theirs


async def read_until(sock: socket.socket, size: int, *, timeout: float = 5) -> bytes:
    loop = asyncio.get_running_loop()
    got = b""
    async with asyncio.timeout(timeout):
        while len(got) < size:
            more = await loop.sock_recv(sock, 65536)
            if not more:
                break
            got += more
    return got


async def test_head_and_body_written_in_one_step_arrive_in_order() -> None:
    transport, peer = await pair()
    held = HeadWithBody(transport, asyncio.get_running_loop())
    held.write(b"HEAD\r\n\r\n")
    assert transport.get_write_buffer_size() == 0 and held.held == b"HEAD\r\n\r\n"  # not written yet
    held.write(b"body-1")
    held.write(b"body-2")
    assert await read_until(peer, 20) == b"HEAD\r\n\r\nbody-1body-2"
    transport.close()
    peer.close()


async def test_a_head_alone_leaves_at_the_next_step() -> None:
    transport, peer = await pair()
    held = HeadWithBody(transport, asyncio.get_running_loop())
    held.write(b"HEAD\r\n\r\n")
    await asyncio.sleep(0)  # one loop step: a streaming body's head must not wait for the body
    assert held.held is None
    assert await read_until(peer, 8, timeout=2) == b"HEAD\r\n\r\n"
    await asyncio.sleep(0.05)
    held.write(b"late body")
    assert await read_until(peer, 9) == b"late body"
    transport.close()
    peer.close()


async def test_close_sends_a_held_head_first() -> None:
    transport, peer = await pair()
    held = HeadWithBody(transport, asyncio.get_running_loop())
    held.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    held.close()
    assert held.is_closing()
    assert await read_until(peer, 1000) == b"HTTP/1.1 204 No Content\r\n\r\n"  # then EOF
    peer.close()
