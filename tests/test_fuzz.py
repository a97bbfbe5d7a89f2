"""Black-box fuzz through a live standalone sidecar: hostile request targets reach nothing else.

The sidecar's policy (``JUPYTER_LOOPBACK_ALLOWED_PORTS``) allows only the
real upstream's port. Canaries listen where a confused proxy would go: the
same port on 127.0.0.2 and ``::1``, port 80 on 127.0.0.1 and 127.0.0.2, and
two 127.0.0.1 ports outside the policy. Raw sockets send the requests, so no
client library normalises them first. Seen failing, in a scratch copy of the
tree, with target.py's port-policy check removed: a 127.0.0.1 canary received
a relayed ``POST /echo/``.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from .conftest import TOKEN, Proc, start_sidecar
from .security_fixtures import Canary, figure

COUNT = 3000
SEED = 20240604


@pytest.fixture
def canary(upstream: int) -> Iterator[Canary]:
    c = Canary(
        [("127.0.0.2", upstream), ("::1", upstream), ("127.0.0.2", 80), ("127.0.0.1", 80), ("127.0.0.1", 0)] * 1
        + [("127.0.0.1", 0)]
    )
    yield c
    c.close()


@pytest.fixture
def strict_sidecar(upstream: int) -> Iterator[Proc]:
    proc = start_sidecar(env={"JUPYTER_LOOPBACK_ALLOWED_PORTS": str(upstream)})
    yield proc
    proc.stop()


def requests(rng: random.Random, port: int, canaries: list[int], sidecar_host: str) -> Iterator[bytes]:
    """Raw HTTP/1.1 requests built from the pieces SSRF and XSS tricks are made of."""
    ports = [
        str(port),
        *map(str, canaries),
        "80",
        "0",
        f"0{port}",
        f"{port}@127.0.0.2",
        f"127.0.0.2:{port}",
        f"[::1]:{port}",
        f"{port}:80",
        f"{port}%2f..",
        f"{port}.0",
        "65536",
        "99999999999999999999",
        f"+{port}",
        f"%3{str(port)[0]}{str(port)[1:]}",
        f"{port}\\",
        f"{port}%00",
        f"0x{port:x}",
        "-1",
        "\uff18\uff10",
    ]
    names = [
        "app",
        "APP",
        "app%2f",
        "",
        "..",
        "%61pp",
        "app@127.0.0.2",
        "app:80",
        "ap\\p",
        "<script>alert(1)</script>",
        "%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E",
        "a" * 300,
        "app.",
        "\u0430pp",
        "_loopback",
    ]
    rests = [
        "",
        "/",
        "/json",
        "/echo",
        "//127.0.0.2/json",
        "/..",
        "/../..",
        "/%2e%2e/%2e%2e",
        "/@127.0.0.2",
        f"/127.0.0.2:{port}/",
        "\\\\127.0.0.2\\x",
        "/%5c%5c127.0.0.2",
        f"/http://127.0.0.2:{port}/",
        "/%00",
        "/\u00e9",
        "/%C0%AE%C0%AE/",
        "/?token=x&_xsrf=y",
        "/#frag",
        "/;@127.0.0.2",
        "/<svg onload=alert(1)>",
    ]
    hosts = [sidecar_host, f"127.0.0.2:{port}", f"[::1]:{port}", f"127.0.0.1:{canaries[0]}", "evil.example", ""]
    accepts = ["text/html", "application/json", "*/*", ""]
    for _ in range(COUNT):
        method = rng.choice(["GET", "GET", "POST", "HEAD", "OPTIONS", "DELETE", "PUT"])
        # Half the requests name the real namespace, a third the allowed port, so
        # the tricks in the rest of the path reach the relay, not just the router.
        name = "app" if rng.random() < 0.5 else rng.choice(names)
        port_ = str(port) if rng.random() < 0.33 else rng.choice(ports)
        path = "/" + name + "/" + port_ + "".join(rng.choices(rests, k=rng.randint(0, 3)))
        form = rng.random()
        if form < 0.08:
            target = f"http://127.0.0.2:{port}{path}"
        elif form < 0.12:
            method, target = "CONNECT", f"127.0.0.2:{port}"
        elif form < 0.16:
            target = "*"
        else:
            target = path
        lines = [f"{method} {target} HTTP/1.1", f"Host: {rng.choice(hosts)}", f"Authorization: token {TOKEN}"]
        if accept := rng.choice(accepts):
            lines.append(f"Accept: {accept}")
        # Upgrade only on body-less requests: uvicorn (not the sidecar) leaves an
        # upgrade request that carries a body unanswered until the client gives up.
        if rng.random() < 0.15 and method not in ("POST", "PUT"):
            lines += ["Upgrade: websocket", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]
            lines.append("Connection: Upgrade")
        else:
            lines.append("Connection: close")
        if rng.random() < 0.2:
            lines.append(f"X-Forwarded-Host: 127.0.0.2:{port}")
        body = b""
        if method in ("POST", "PUT"):
            body = f"GET http://127.0.0.2:{port}/ HTTP/1.1\r\n\r\n".encode()
            lines.append(f"Content-Length: {len(body)}")
        yield "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n" + body


async def send_raw(host: str, port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        chunks = []
        while len(b"".join(chunks)) < 1 << 20:
            # A WebSocket accepted by the upstream stays open: its 101 is the answer we need.
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 10)
            except TimeoutError:
                return b"TIMEOUT " + b"".join(chunks)
            if not chunk or chunks and b" 101 " in chunks[0][:13]:
                chunks.append(chunk)
                break
            chunks.append(chunk)
            if b" 101 " in b"".join(chunks)[:13]:
                break
        return b"".join(chunks)
    finally:
        writer.close()


STATUS = re.compile(rb"^HTTP/1\.1 (\d{3}) ")


async def fuzz(host: str, port: int, payloads: list[bytes]) -> list[tuple[bytes, bytes]]:
    gate = asyncio.Semaphore(16)

    async def one(data: bytes) -> tuple[bytes, bytes]:
        async with gate:
            return data, await send_raw(host, port, data)

    return await asyncio.gather(*(one(p) for p in payloads))


def test_fuzzed_requests_reach_no_canary(canary: Canary, strict_sidecar: Proc, upstream: int) -> None:
    """3000 hostile requests: each answered with a status; nothing but the allowed upstream is ever dialled."""
    base = strict_sidecar.match[1]
    host, sport = base.removeprefix("http://").rsplit(":", 1)
    canary_ports = [p for h, p in canary.listening if h == "127.0.0.1" and p != 80]
    assert len(canary.listening) >= 5, canary.listening
    payloads = list(requests(random.Random(SEED), upstream, canary_ports, f"{host}:{sport}"))
    results = asyncio.run(fuzz(host, int(sport), payloads))

    statuses: Counter[str] = Counter()
    for sent, answer in results:
        m = STATUS.match(answer)
        assert m, f"no HTTP status for {sent[:200]!r}: {answer[:200]!r}"
        status = m[1].decode()
        statuses[status] += 1
        assert status != "500", f"500 for {sent[:200]!r}: {answer[:500]!r}"
        assert b"Traceback" not in answer
        head, _, body = answer.partition(b"\r\n\r\n")
        if b"x-content-type-options: nosniff" in head and b"text/html" in head:
            # The sidecar's own error page: whatever it echoes is escaped.
            assert not re.search(rb"<(script|img|svg)", body, re.I), body
        assert b"access-control-allow-origin: *" not in head.lower()

    assert canary.hits == [], canary.hits
    assert strict_sidecar.popen.poll() is None
    assert not any("Traceback" in line for line in strict_sidecar.output), "".join(strict_sidecar.output)[-3000:]
    ok = httpx.get(f"{base}/app/{upstream}/json", headers={"Authorization": f"token {TOKEN}"}, trust_env=False)
    assert ok.json() == {"hello": "world"}
    figure("test_fuzz", "bad inputs tried", len(results))
    figure("test_fuzz", "statuses", dict(sorted(statuses.items())))
    figure("test_fuzz", "canaries listening / connections they saw", f"{len(canary.listening)} / {len(canary.hits)}")
    figure("test_fuzz", "500s / tracebacks seen", 0)
