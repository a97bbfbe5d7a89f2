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
from .jupyter_fixtures import JupyterServer, start_jupyter, stop_jupyter
from .security_fixtures import Canary, accepting, figure

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


def requests(
    rng: random.Random,
    port: int,
    canaries: list[int],
    sidecar_host: str,
    *,
    prefix: str = "",
    token: str = TOKEN,
    count: int = COUNT,
) -> Iterator[bytes]:
    """Raw HTTP/1.1 requests built from the pieces SSRF and XSS tricks are made of.

    ``prefix`` goes before ``/<namespace>/…`` (``<base_url>loopback`` through Jupyter).
    """
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
    for _ in range(count):
        method = rng.choice(["GET", "GET", "POST", "HEAD", "OPTIONS", "DELETE", "PUT"])
        # Half the requests name the real namespace, a third the allowed port, so
        # the tricks in the rest of the path reach the relay, not just the router.
        name = "app" if rng.random() < 0.5 else rng.choice(names)
        port_ = str(port) if rng.random() < 0.33 else rng.choice(ports)
        path = prefix + "/" + name + "/" + port_ + "".join(rng.choices(rests, k=rng.randint(0, 3)))
        form = rng.random()
        # Absolute-form and CONNECT only at the sidecar: through Jupyter neither reaches the
        # loopback route (tornado routes the absolute URI to Jupyter's own catch-all, refuses
        # CONNECT before any handler), and jupyter_server logs a traceback rendering those errors.
        if form < 0.08 and not prefix:
            target = f"http://127.0.0.2:{port}{path}"
        elif form < 0.12 and not prefix:
            method, target = "CONNECT", f"127.0.0.2:{port}"
        elif form < 0.16:
            target = "*"
        else:
            target = path
        lines = [f"{method} {target} HTTP/1.1", f"Host: {rng.choice(hosts)}", f"Authorization: token {token}"]
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


def complete(data: bytes, head_only: bool) -> bool:
    """True once ``data`` holds a whole response (headers, and a Content-Length body if any)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    if b" 101 " in head[:13] or head_only:
        return True
    length = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
    return length is not None and len(body) >= int(length[1])


async def send_raw(host: str, port: int, data: bytes) -> bytes:
    """Send one raw request; read until the answer is complete or the server closes (10 s bound)."""
    head_only = data.startswith(b"HEAD ")
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        got = b""
        while len(got) < 1 << 20 and not complete(got, head_only):
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 10)
            except TimeoutError:
                return b"TIMEOUT " + got
            if not chunk:
                break
            got += chunk
        return got
    finally:
        writer.close()


STATUS = re.compile(rb"^HTTP/1\.1 (\d{3}) ")


async def fuzz(host: str, port: int, payloads: list[bytes]) -> list[tuple[bytes, bytes]]:
    gate = asyncio.Semaphore(16)

    async def one(data: bytes) -> tuple[bytes, bytes]:
        async with gate:
            return data, await send_raw(host, port, data)

    return await asyncio.gather(*(one(p) for p in payloads))


def check(name: str, results: list[tuple[bytes, bytes]], canary: Canary, log: list[str]) -> Counter[str]:
    """Every answer is a status, never a 500 or a traceback, escaped if it is our HTML; no canary was dialled."""
    statuses: Counter[str] = Counter()
    for sent, answer in results:
        m = STATUS.match(answer)
        assert m, f"no HTTP status for {sent[:200]!r}: {answer[:200]!r}"
        status = m[1].decode()
        statuses[status] += 1
        assert status != "500", f"500 for {sent[:200]!r}: {answer[:500]!r}"
        assert TRACEBACK not in answer
        head, _, body = answer.partition(b"\r\n\r\n")
        if b"x-content-type-options: nosniff" in head.lower() and b"text/html" in head.lower():
            # An error page: the markup the request carried is not reflected as markup.
            assert not INJECTED.search(body), body
        assert b"access-control-allow-origin: *" not in head.lower()
    assert canary.hits == [], canary.hits
    text = "".join(log)
    assert TRACEBACK.decode() not in text, text[max(0, text.find(TRACEBACK.decode()) - 1500) :][:4000]
    figure(name, "bad inputs tried", len(results))
    figure(name, "statuses", dict(sorted(statuses.items())))
    figure(name, "canaries listening / connections they saw", f"{len(canary.listening)} / {len(canary.hits)}")
    figure(name, "500s / tracebacks seen", 0)
    return statuses


TRACEBACK = b"Traceback (most recent call last)"
INJECTED = re.compile(rb"<script>alert|<svg[ /]onload|<img[ /]src=x|onerror=alert", re.I)


def test_fuzzed_requests_reach_no_canary(canary: Canary, strict_sidecar: Proc, upstream: int) -> None:
    """3000 hostile requests: each answered with a status; nothing but the allowed upstream is ever dialled."""
    base = strict_sidecar.match[1]
    host, sport = base.removeprefix("http://").rsplit(":", 1)
    canary_ports = [p for h, p in canary.listening if h == "127.0.0.1" and p != 80]
    assert len(canary.listening) >= 5, canary.listening
    payloads = list(requests(random.Random(SEED), upstream, canary_ports, f"{host}:{sport}"))
    results = asyncio.run(fuzz(host, int(sport), payloads))
    check("test_fuzz::sidecar", results, canary, strict_sidecar.output)
    assert strict_sidecar.popen.poll() is None
    ok = httpx.get(f"{base}/app/{upstream}/json", headers={"Authorization": f"token {TOKEN}"}, trust_env=False)
    assert ok.json() == {"hello": "world"}


@pytest.mark.slow
def test_fuzzed_requests_through_jupyter_reach_no_canary(canary: Canary, upstream: int) -> None:
    """1500 hostile requests through ``jupyter server`` (``c.Loopback.allowed_ports`` = the upstream's)."""
    server = start_jupyter("/user/f/", f"--Loopback.allowed_ports={upstream}")
    try:
        accepting(server.port)
        assert httpx.get(server.loopback(upstream, "json"), headers=server.auth, trust_env=False).status_code == 200
        canary_ports = [p for h, p in canary.listening if h == "127.0.0.1" and p != 80]
        prefix = f"{server.base_url}loopback"
        rng = random.Random(SEED + 1)
        payloads = list(
            requests(
                rng, upstream, canary_ports, f"127.0.0.1:{server.port}", prefix=prefix, token=server.token, count=1500
            )
        )
        results = asyncio.run(fuzz("127.0.0.1", server.port, payloads))
        statuses = check("test_fuzz::jupyter", results, canary, server.proc.output)
        assert statuses["200"] > 0  # the tricks did reach the relay, not only the router
        assert httpx.get(server.loopback(upstream, "json"), headers=server.auth, trust_env=False).status_code == 200
    finally:
        stop_jupyter(server)


def test_non_utf8_path_through_jupyter_reaches_the_upstream_unchanged(
    jupyter_base: JupyterServer, upstream: int
) -> None:
    """``%C0%AE`` (not UTF-8) in the path: relayed byte for byte, no 400 and no traceback in Jupyter's log.

    Regression, found by the Jupyter fuzz run: tornado decoded the route's path
    argument as UTF-8 before the relay saw the request, answered 400, and
    jupyter_server's error page raised while rendering it.
    """
    accepting(jupyter_base.port)
    before = len(jupyter_base.proc.output)
    for path in ("echo/%C0%AE%C0%AE/", "echo/%E9t%E9", "echo/%FF?q=%FE"):
        r = httpx.get(jupyter_base.loopback(upstream, path), headers=jupyter_base.auth, trust_env=False)
        assert r.status_code == 200, (path, r.status_code)
        assert r.json()["raw_path"] == "/" + path.split("?")[0]
    assert TRACEBACK.decode() not in "".join(jupyter_base.proc.output[before:])
