"""loopback_asgi/protocols/http.py: big bodies sent kernel-side through a live sidecar."""

from __future__ import annotations

import httpx
import pytest

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
