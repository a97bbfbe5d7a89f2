"""loopback_asgi/protocols/http.py: HeadWithBody on a real socket pair (nothing held for long, nothing reordered),
and big bodies sent kernel-side through a live sidecar."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from loopback_asgi.protocols.http import HeadWithBody


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


# -- kernel-side bodies through a live sidecar ---------------------------------

MiB = 2**20
PATTERN = bytes(range(256)) * 4096  # tests/upstream.py's body pattern, 1 MiB


def spliced(client: httpx.Client, base: str) -> int:
    return int(client.get(f"{base}/_loopback/health").json()["http_bodies_spliced"])


def test_big_bodies_go_kernel_side_and_the_connection_carries_on(
    sidecar: str, upstream: int, auth: dict[str, str]
) -> None:
    """Two 3 MiB bodies and a small one on one keep-alive connection: every byte right, in order."""
    with httpx.Client(headers=auth, trust_env=False, timeout=30) as client:
        before = spliced(client, sidecar)
        for _ in range(2):
            r = client.get(f"{sidecar}/app/{upstream}/bytes?n={3 * MiB + 5}")
            assert r.status_code == 200 and r.headers["content-length"] == str(3 * MiB + 5)
            assert r.content == PATTERN * 3 + PATTERN[:5]
        assert client.get(f"{sidecar}/app/{upstream}/json").json() == {"hello": "world"}
        head = client.head(f"{sidecar}/app/{upstream}/bytes?n={3 * MiB}")
        assert head.status_code == 200 and head.content == b""
        assert spliced(client, sidecar) == before + 2  # the HEAD and the small one went the usual way


def test_an_upstream_dying_mid_body_cuts_a_kernel_side_body(sidecar: str, upstream: int, auth: dict[str, str]) -> None:
    """4 MiB announced, 1 MiB sent, then the upstream breaks the connection: the client gets that 1 MiB, then a cut."""
    with httpx.Client(headers=auth, trust_env=False, timeout=30) as client:
        before = spliced(client, sidecar)
        got = bytearray()
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            with client.stream("GET", f"{sidecar}/app/{upstream}/die?after={MiB}") as r:
                assert r.headers["content-length"] == str(4 * MiB)
                for piece in r.iter_raw():
                    got += piece
        assert bytes(got) == PATTERN
        assert spliced(client, sidecar) == before + 1
        assert client.get(f"{sidecar}/app/{upstream}/json").json() == {"hello": "world"}
