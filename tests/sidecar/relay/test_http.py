"""The HTTP relay (loopback_asgi/sidecar/relay/http.py) through a live sidecar and a live upstream."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import TOKEN, Proc, peak_rss, rss_peak_rise, start_sidecar
from tests.upstream import PATTERN

GiB = 2**30
MiB = 2**20


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(headers={"Authorization": f"token {TOKEN}"}, timeout=60, trust_env=False) as c:
        yield c


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "REPORT"])
def test_every_method_reaches_the_upstream(client: httpx.Client, sidecar: str, upstream: int, method: str) -> None:
    body = b"payload" if method not in ("GET", "OPTIONS") else None
    r = client.request(method, f"{sidecar}/app/{upstream}/echo/x?a=1&b=2", content=body)
    assert r.status_code == 200
    seen = r.json()
    assert seen["method"] == method
    assert seen["path"] == "/echo/x"
    assert seen["query"] == "a=1&b=2"
    assert seen["size"] == (len(body) if body else 0)


def test_head_has_no_body(client: httpx.Client, sidecar: str, upstream: int) -> None:
    r = client.head(f"{sidecar}/app/{upstream}/json")
    assert r.status_code == 200
    assert r.content == b""


@pytest.fixture
def not_modified_upstream() -> Iterator[int]:
    """A raw HTTP/1.1 server answering every request with a 304 that names a length.

    RFC 9110 allows that ``Content-Length`` (the representation's size) on a
    304 with no body; tornado's static files send it. uvicorn cannot, hence raw.
    """
    server = socket.create_server(("127.0.0.1", 0))
    reply = b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 1234\r\n\r\n'

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = server.accept()
            with conn:
                buffered = b""
                for _ in range(20):  # bounded: a few requests on one connection
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffered += data
                    while b"\r\n\r\n" in buffered:
                        _, buffered = buffered.split(b"\r\n\r\n", 1)
                        conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.close()
    thread.join(10)


def test_not_modified_with_a_length_keeps_the_connection_usable(
    client: httpx.Client, sidecar: str, not_modified_upstream: int
) -> None:
    for _ in range(3):  # one keep-alive connection each way
        r = client.get(f"{sidecar}/app/{not_modified_upstream}/x", headers={"If-None-Match": '"v1"'})
        assert r.status_code == 304
        assert r.headers["etag"] == '"v1"'


def test_raw_path_and_query_pass_unchanged(client: httpx.Client, sidecar: str, upstream: int) -> None:
    r = client.get(f"{sidecar}/app/{upstream}/echo/a%2Fb/%C3%A9?q=%20x&z")
    seen = r.json()
    assert seen["raw_path"] == "/echo/a%2Fb/%C3%A9"
    assert seen["query"] == "q=%20x&z"


def test_prefix_is_stripped_and_forwarded(client: httpx.Client, sidecar: str, upstream: int) -> None:
    r = client.get(f"{sidecar}/app/{upstream}/echo", headers={"X-Forwarded-Prefix": "/evil"})
    headers = dict(r.json()["headers"])
    assert headers["x-forwarded-prefix"] == f"/app/{upstream}"
    assert headers["host"] == f"127.0.0.1:{upstream}"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == sidecar.removeprefix("http://")


def test_untrusted_forwarded_headers_are_replaced(client: httpx.Client, sidecar: str, upstream: int) -> None:
    spoof = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
    headers = dict(client.get(f"{sidecar}/app/{upstream}/echo", headers=spoof).json()["headers"])
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-host"] != "evil.example"
    assert headers["x-forwarded-proto"] == "http"


def test_bare_port_redirects_to_trailing_slash(client: httpx.Client, sidecar: str, upstream: int) -> None:
    r = client.get(f"{sidecar}/app/{upstream}?x=1")
    assert r.status_code == 307
    assert r.headers["location"] == f"/app/{upstream}/?x=1"


def test_two_set_cookie_headers_survive_with_paths_rewritten(client: httpx.Client, sidecar: str, upstream: int) -> None:
    r = client.get(f"{sidecar}/app/{upstream}/cookies")
    assert r.headers.get_list("set-cookie") == [
        f"a=1; Path=/app/{upstream}",
        f"b=2; Path=/app/{upstream}/sub; HttpOnly",
    ]


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("http://127.0.0.1:{port}/x?y=1", "/app/{port}/x?y=1"),
        ("http://localhost:{port}/", "/app/{port}/"),
        ("/dashboard/", "/app/{port}/dashboard/"),
        ("/app/{port}/already", "/app/{port}/already"),
        ("relative/path", "relative/path"),
        ("https://example.org/elsewhere", "https://example.org/elsewhere"),
    ],
)
def test_location_is_rewritten_into_the_prefix(
    client: httpx.Client, sidecar: str, upstream: int, location: str, expected: str
) -> None:
    to = location.format(port=upstream)
    r = client.get(f"{sidecar}/app/{upstream}/redirect", params={"to": to})
    assert r.status_code == 302
    assert r.headers["location"] == expected.format(port=upstream)


def test_content_encoding_passes_through_untouched(client: httpx.Client, sidecar: str, upstream: int) -> None:
    with client.stream("GET", f"{sidecar}/app/{upstream}/gzip") as r:
        raw = b"".join(r.iter_raw())
    assert r.headers["content-encoding"] == "gzip"
    assert int(r.headers["content-length"]) == len(raw)
    assert gzip.decompress(raw) == b"hello gzip " * 1000


def test_hop_by_hop_headers_are_stripped_both_ways(client: httpx.Client, sidecar: str, upstream: int) -> None:
    sent = {"Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1", "TE": "trailers", "Keep-Alive": "5"}
    sent["Forwarded"] = "for=6.6.6.6;host=evil.example"
    r = client.get(f"{sidecar}/app/{upstream}/hop", headers=sent)
    seen = {name for name, _ in r.json()}
    assert not seen & {"x-secret-hop", "te", "keep-alive", "connection", "forwarded"}
    # The upstream's own hop-by-hop headers, including one it named in Connection.
    assert "x-private" not in r.headers
    assert "keep-alive" not in r.headers


def test_jupyter_credentials_never_reach_the_upstream(client: httpx.Client, sidecar: str, upstream: int) -> None:
    cookies = "_xsrf=abc; username-127-0-0-1-8888=secret; jupyterhub-session-id=s; app=kept"
    r = client.get(f"{sidecar}/app/{upstream}/echo?token={TOKEN}&_xsrf=abc&keep=1", headers={"Cookie": cookies})
    seen = r.json()
    headers = dict(seen["headers"])
    assert seen["query"] == "keep=1"
    assert headers["cookie"] == "app=kept"
    assert "authorization" not in headers
    assert TOKEN not in str(seen)


def test_an_app_bearer_token_still_reaches_the_upstream(sidecar: str, upstream: int) -> None:
    r = httpx.get(
        f"{sidecar}/app/{upstream}/echo?token={TOKEN}",
        headers={"Authorization": "Bearer app-own-token"},
        trust_env=False,
    )
    assert dict(r.json()["headers"])["authorization"] == "Bearer app-own-token"


def test_sse_is_delivered_as_produced_whatever_accept_says(client: httpx.Client, sidecar: str, upstream: int) -> None:
    for accept in ("*/*", "text/html", "text/event-stream"):
        started = time.monotonic()
        with client.stream("GET", f"{sidecar}/app/{upstream}/sse?n=3&interval=2", headers={"Accept": accept}) as r:
            first = next(r.iter_raw())
            elapsed = time.monotonic() - started
        assert first == b"data: 0\n\n"
        # The next event is 2 s away: the first one must not wait for it.
        assert elapsed < 1.5, (accept, elapsed)


def test_proxy_environment_variables_change_nothing(upstream: int) -> None:
    proc = start_sidecar(
        env={
            "HTTP_PROXY": "http://127.0.0.1:9",
            "http_proxy": "http://127.0.0.1:9",
            "ALL_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "",
        }
    )
    try:
        base = proc.match[1]
        r = httpx.get(f"{base}/app/{upstream}/json", headers={"Authorization": f"token {TOKEN}"}, trust_env=False)
        assert r.json() == {"hello": "world"}
    finally:
        proc.stop()


def test_keep_alive_reuses_pooled_upstream_connections(client: httpx.Client, sidecar: str, upstream: int) -> None:
    client.get(f"{sidecar}/app/{upstream}/json")
    before = _established_from(upstream)
    for _ in range(10):
        assert client.get(f"{sidecar}/app/{upstream}/json").status_code == 200
    # Without keep-alive every request would come from a new source port.
    assert before and _established_from(upstream) == before


def _established_from(port: int) -> set[int]:
    """Local ports of established TCP connections to 127.0.0.1:<port> (from /proc/net/tcp)."""
    peers = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if state == "01" and int(remote.split(":")[1], 16) == port:
                peers.add(int(local.split(":")[1], 16))
    return peers


def _rise(proc: Proc, work: object) -> int:
    base, _ = rss_peak_rise(proc.pid)
    assert callable(work)
    work()
    return peak_rss(proc.pid) - base


@pytest.mark.slow
def test_one_gib_download_streams_with_bounded_memory(
    client: httpx.Client, sidecar_proc: Proc, sidecar: str, upstream: int
) -> None:
    digest = hashlib.sha256()
    total = 0

    def download() -> None:
        nonlocal total
        with client.stream("GET", f"{sidecar}/app/{upstream}/bytes?n={GiB}") as r:
            assert r.status_code == 200
            for chunk in r.iter_raw():
                total += len(chunk)
                digest.update(chunk)

    rise = _rise(sidecar_proc, download)
    expected = hashlib.sha256()
    for _ in range(GiB // len(PATTERN)):
        expected.update(PATTERN)
    assert total == GiB
    assert digest.digest() == expected.digest()
    assert rise < 64 * MiB, f"sidecar RSS rose {rise / MiB:.1f} MiB"


@pytest.mark.slow
def test_one_gib_upload_streams_with_bounded_memory(
    client: httpx.Client, sidecar_proc: Proc, sidecar: str, upstream: int
) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(GiB // len(PATTERN)):
            yield PATTERN

    result: dict[str, object] = {}

    def upload() -> None:
        r = client.post(f"{sidecar}/app/{upstream}/upload", content=chunks())
        result.update(r.json())

    rise = _rise(sidecar_proc, upload)
    expected = hashlib.sha256()
    for chunk in chunks():
        expected.update(chunk)
    assert result == {"size": GiB, "sha256": expected.hexdigest()}
    assert rise < 64 * MiB, f"sidecar RSS rose {rise / MiB:.1f} MiB"


def test_upstream_dying_mid_body_cuts_the_stream_and_sidecar_stays_healthy(
    client: httpx.Client, sidecar: str, upstream: int
) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        with client.stream("GET", f"{sidecar}/app/{upstream}/die?after=65536") as r:
            assert r.status_code == 200
            for _ in r.iter_raw():
                pass
    assert client.get(f"{sidecar}/app/{upstream}/json").json() == {"hello": "world"}


def test_nothing_listening_is_502_naming_namespace_and_port(client: httpx.Client, sidecar: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]  # closed again: nothing listens there
    r = client.get(f"{sidecar}/app/{free}/x", headers={"Accept": "application/json"})
    assert r.status_code == 502
    assert r.json() == {"status": 502, "error": f"Nothing is listening on namespace 'app' port {free}."}


def test_header_timeout_is_504(upstream: int) -> None:
    proc = start_sidecar(env={"JUPYTER_LOOPBACK_HEADER_TIMEOUT": "0.5"})
    try:
        r = httpx.get(
            f"{proc.match[1]}/app/{upstream}/slow?delay=5",
            headers={"Authorization": f"token {TOKEN}"},
            trust_env=False,
            timeout=10,
        )
        assert r.status_code == 504
        assert "no response in time" in r.text
        assert "Traceback" not in r.text
    finally:
        proc.stop()
