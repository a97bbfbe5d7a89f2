"""Faults through a live standalone sidecar: each ends in a clear status or a cut stream, never a hang.

The upstream is :class:`~tests.security_fixtures.FaultUpstream`, which records
when each of its connections ends, so "the upstream connection is closed
promptly" is observed where it matters: at the upstream. After every fault
the next request must work.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from .conftest import TOKEN, Proc, start, start_sidecar, start_upstream
from .jupyter_fixtures import JupyterServer, alive, start_jupyter, stop_jupyter
from .security_fixtures import FaultUpstream, accepting, figure, open_fds, wait_until

AUTH = {"Authorization": f"token {TOKEN}"}
PROMPT = 3.0  # seconds within which a dropped leg must be noticed and closed


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(headers=AUTH, timeout=30, trust_env=False) as c:
        yield c


@pytest.fixture
def quick(sidecars: Callable[..., Proc]) -> Iterator[Proc]:
    """A sidecar with a 1 s header timeout and a 2 s connect timeout (policy env).

    After the test, its log must hold no traceback: a fault is answered, not crashed on.
    """
    proc = sidecars(env={"JUPYTER_LOOPBACK_HEADER_TIMEOUT": "1", "JUPYTER_LOOPBACK_CONNECT_TIMEOUT": "2"})
    yield proc
    log = "".join(proc.output)
    assert "Traceback" not in log, log[-4000:]


def next_request_works(client: httpx.Client, base: str, up: FaultUpstream) -> None:
    r = client.get(f"{base}/app/{up.port}/ok")
    assert (r.status_code, r.content) == (200, b"ok")
    assert client.get(f"{base}/_loopback/health").json()["status"] == "ok"


def test_upstream_dies_mid_response_cuts_the_stream(
    client: httpx.Client, quick: Proc, fault_upstream: FaultUpstream
) -> None:
    """Upstream resets mid-body, 21 times (1 B, 64 KiB, ~300 KB into 4x that): each client sees the
    stream cut, and the sidecar logs no traceback.

    Regression: a drop in a body relayed inside the disconnect watcher's task group escaped as an
    ExceptionGroup ("Exception in ASGI application" with a traceback in the sidecar's log)."""
    base, rounds = quick.match[1], 20
    for after in (65536, 1, 300_000) * 7:
        started = time.monotonic()
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            with client.stream("GET", f"{base}/app/{fault_upstream.port}/die?after={after}") as r:
                assert r.status_code == 200
                for _ in r.iter_raw():
                    pass
        assert time.monotonic() - started < PROMPT
        next_request_works(client, base, fault_upstream)
    assert quick.popen.poll() is None
    figure("test_faults::dies_mid_response", "faults survived", rounds + 1)


@pytest.mark.parametrize("fault", ["stall", "trickle-headers"])
def test_header_timeout_is_504_and_the_upstream_is_let_go(
    client: httpx.Client, quick: Proc, fault_upstream: FaultUpstream, fault: str
) -> None:
    """An upstream that never answers, or trickles headers forever (slowloris): 504 after
    ``JUPYTER_LOOPBACK_HEADER_TIMEOUT`` (1 s here), and the sidecar closes its upstream connection."""
    base = quick.match[1]
    started = time.monotonic()
    r = client.get(f"{base}/app/{fault_upstream.port}/{fault}", headers={"Accept": "application/json"})
    took = time.monotonic() - started
    assert r.status_code == 504 and r.json()["status"] == 504
    assert 0.9 < took < 1 + PROMPT
    ended = fault_upstream.wait_ended(f"/{fault}", PROMPT)
    assert ended is not None and ended.how in ("eof", "reset")
    next_request_works(client, base, fault_upstream)
    figure(f"test_faults::{fault}", "504 after (s)", round(took, 2))


@pytest.mark.parametrize("length", [None, 10**12])
def test_client_disconnect_mid_download_closes_the_upstream(
    client: httpx.Client, quick: Proc, fault_upstream: FaultUpstream, length: int | None
) -> None:
    """A client leaving an endless download (chunked, or a huge Content-Length) makes the
    sidecar close the upstream connection promptly."""
    base = quick.match[1]
    query = f"?length={length}" if length else ""
    with client.stream("GET", f"{base}/app/{fault_upstream.port}/forever{query}") as r:
        got = 0
        for chunk in r.iter_raw():
            got += len(chunk)
            if got > 4 << 20:
                break
        left_at = time.monotonic()
    ended = fault_upstream.wait_ended("/forever", PROMPT + 5)
    assert ended is not None and ended.how in ("eof", "reset"), fault_upstream.ended
    delay = ended.at - left_at
    assert delay < PROMPT
    next_request_works(client, base, fault_upstream)
    figure("test_faults::client_disconnect", f"upstream closed after (ms), length={length}", round(delay * 1000))


def test_client_leaving_a_stalled_small_body_closes_the_upstream(quick: Proc, fault_upstream: FaultUpstream) -> None:
    """Headers with ``Content-Length: 1000``, then silence: the client gives up; the upstream is let go.

    Regression: the relay used to skip its disconnect watcher for bodies up to
    256 KiB, so this upstream connection (and its task) was held forever.
    """
    base = quick.match[1]
    host, port = base.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        target = f"/app/{fault_upstream.port}/silent?length=1000"
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: token {TOKEN}\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        left_at = time.monotonic()
    ended = fault_upstream.wait_ended("/silent", PROMPT + 5)
    assert ended is not None, "the sidecar kept the stalled upstream connection after its client left"
    assert ended.at - left_at < PROMPT
    figure("test_faults::stalled_small_body", "upstream closed after (ms)", round((ended.at - left_at) * 1000))


def test_client_leaving_before_the_headers_closes_the_upstream(
    sidecars: Callable[..., Proc], fault_upstream: FaultUpstream
) -> None:
    """The upstream never answers; the client gives up long before the header timeout (60 s).

    Regression: the disconnect watcher used to start only with the response,
    so this upstream connection was held until the header timeout; seen
    failing that way (still open after PROMPT) before the watcher moved.
    """
    base = sidecars(env={"JUPYTER_LOOPBACK_HEADER_TIMEOUT": "60"}).match[1]
    host, port = base.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        target = f"/app/{fault_upstream.port}/stall"
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: token {TOKEN}\r\n\r\n".encode())
        assert fault_upstream.wait_started("/stall", PROMPT + 5), "the request never reached the upstream"
        left_at = time.monotonic()
    ended = fault_upstream.wait_ended("/stall", PROMPT + 5)
    assert ended is not None, "the sidecar kept the upstream connection after its client left"
    assert ended.at - left_at < PROMPT
    figure("test_faults::left_before_headers", "upstream closed after (ms)", round((ended.at - left_at) * 1000))


def test_sidecar_sigkilled_mid_download_then_restarted(fault_upstream: FaultUpstream) -> None:
    """SIGKILL during a download: the client's stream is cut, the upstream sees its connection
    close, and a sidecar started again on the same port serves the next request."""
    proc = start_sidecar()
    base = proc.match[1]
    try:
        with httpx.Client(headers=AUTH, timeout=10, trust_env=False) as client:
            started = time.monotonic()
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                with client.stream("GET", f"{base}/app/{fault_upstream.port}/forever") as r:
                    for i, _ in enumerate(r.iter_raw()):
                        if i == 10:
                            os.kill(proc.pid, signal.SIGKILL)
            assert time.monotonic() - started < PROMPT + 5
            ended = fault_upstream.wait_ended("/forever", PROMPT)
            assert ended is not None and ended.how in ("eof", "reset")
            proc.stop()  # reaps the killed process
            # Started again on the same port, as a supervisor would.
            port = base.rsplit(":", 1)[1]
            cmd = [sys.executable, "-m", "loopback_asgi.cli", "serve", "--port", port, "--token", TOKEN]
            proc = start(cmd, r"on (http://[^/]+)/")
            next_request_works(client, base, fault_upstream)
    finally:
        proc.stop()
    figure("test_faults::sigkill", "faults survived", 1)


def test_upstream_killed_during_websocket_and_sse() -> None:
    """The upstream process is SIGKILLed with a WebSocket and an SSE stream open through the
    sidecar: the WebSocket closes (1011), the SSE stream is cut, and a new upstream works."""
    sidecar = start_sidecar()
    upstream = start_upstream()
    base, port = sidecar.match[1], upstream.match[1]
    try:
        ws_url = f"ws{base.removeprefix('http')}/app/{port}/ws"
        with (
            connect(ws_url, additional_headers=AUTH, proxy=None) as ws,
            httpx.Client(headers=AUTH, timeout=10, trust_env=False) as client,
        ):
            ws.send("hi")
            assert ws.recv(timeout=10) == "hi"
            with client.stream("GET", f"{base}/app/{port}/sse?n=1000&interval=0.05") as r:
                lines = r.iter_lines()
                assert next(lines).startswith("data: 0")
                started = time.monotonic()
                os.kill(upstream.pid, signal.SIGKILL)
                with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                    for _ in lines:
                        pass
            cut_after = time.monotonic() - started
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=PROMPT)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1011
            upstream.popen.wait(10)
            again = start_upstream()
            try:
                assert client.get(f"{base}/app/{again.match[1]}/json").json() == {"hello": "world"}
            finally:
                again.stop()
        assert cut_after < PROMPT
        figure("test_faults::upstream_killed", "SSE cut after (ms)", round(cut_after * 1000))
    finally:
        upstream.stop()
        sidecar.stop()


@pytest.mark.slow
def test_slowloris_clients_do_not_starve_others(quick: Proc, fault_upstream: FaultUpstream) -> None:
    """200 clients trickle their request headers to the sidecar; meanwhile requests still
    answer promptly, and once the trickle stops the sidecar's fds return to baseline."""
    base = quick.match[1]
    host, port = base.removeprefix("http://").rsplit(":", 1)
    with httpx.Client(headers=AUTH, timeout=10, trust_env=False) as client:
        next_request_works(client, base, fault_upstream)
        baseline = open_fds(quick.pid)
        socks = [socket.create_connection((host, int(port)), timeout=10) for _ in range(200)]
        try:
            for s in socks:
                s.sendall(b"GET /app/1/ HTTP/1.1\r\nHost: x\r\n")
            slowest = 0.0
            for i in range(10):
                for s in socks:
                    s.sendall(f"X-Trickle-{i}: {i}\r\n".encode())
                started = time.monotonic()
                next_request_works(client, base, fault_upstream)
                slowest = max(slowest, time.monotonic() - started)
            assert slowest < PROMPT
            held = open_fds(quick.pid) - baseline
        finally:
            for s in socks:
                s.close()
        settled = wait_until(lambda: open_fds(quick.pid) <= baseline + 2, 10)
        assert settled, (baseline, open_fds(quick.pid))
    figure("test_faults::slowloris_clients", "held / slowest other request (s)", f"{held} / {slowest:.3f}")


@pytest.mark.slow
def test_jupyter_server_restarted_mid_download(fault_upstream: FaultUpstream) -> None:
    """``jupyter server`` stopped (SIGTERM) during a download through it: the client's stream is
    cut, the upstream connection and the sidecar go away, and a server started again serves
    the next request."""
    server = start_jupyter("/user/r/")
    try:
        accepting(server.port)
        with httpx.Client(headers=server.auth, timeout=30, trust_env=False) as client:
            assert client.get(server.loopback(fault_upstream.port, "ok")).status_code == 200
            sidecars = server.sidecar_pids()
            assert len(sidecars) == 1
            started = time.monotonic()
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                with client.stream("GET", server.loopback(fault_upstream.port, "forever")) as r:
                    for i, _ in enumerate(r.iter_raw()):
                        if i == 10:
                            server.proc.popen.send_signal(signal.SIGTERM)
            cut_after = time.monotonic() - started
            ended = fault_upstream.wait_ended("/forever", 10)
            assert ended is not None and ended.how in ("eof", "reset")
            server.proc.popen.wait(20)
            assert wait_until(lambda: not any(alive(p) for p in sidecars), 10), "sidecar outlived the server"
        stop_jupyter(server)
        # Started again with the same runtime and config dirs (start_jupyter always binds port 0).
        dirs = {k: v for k, v in server.env.items() if k in ("JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR")}
        server = start_jupyter("/user/r/", env=dirs)
        accepting(server.port)
        with httpx.Client(headers=server.auth, timeout=30, trust_env=False) as client:
            r = client.get(server.loopback(fault_upstream.port, "ok"))
            assert (r.status_code, r.content) == (200, b"ok")
    finally:
        stop_jupyter(server)
    assert cut_after < 15
    figure("test_faults::jupyter_restart", "stream cut after (s) / faults survived", f"{cut_after:.2f} / 1")


@pytest.mark.slow
def test_faults_through_jupyter(jupyter_base: JupyterServer, fault_upstream: FaultUpstream) -> None:
    """Through ``jupyter server``: an upstream dying mid-body cuts the browser's stream; a header
    stall is a 504 only after the header timeout (default 60 s, so here: the client leaves first);
    a client leaving an endless or stalled download has the upstream connection closed promptly."""
    server, up = jupyter_base, fault_upstream
    accepting(server.port)
    before = len(server.proc.output)
    with httpx.Client(headers=server.auth, timeout=30, trust_env=False) as client:
        for _ in range(5):
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                with client.stream("GET", server.loopback(up.port, "die?after=65536")) as r:
                    assert r.status_code == 200
                    for _ in r.iter_raw():
                        pass
            assert client.get(server.loopback(up.port, "ok")).content == b"ok"
        delays = {}
        up.ended.clear()
        for path in ("forever", "forever?length=1000000000000", "silent?length=1000"):
            with client.stream("GET", server.loopback(up.port, path)) as r:
                assert r.status_code == 200
                if not path.startswith("silent"):
                    got = 0
                    for chunk in r.iter_raw():
                        got += len(chunk)
                        if got > 4 << 20:
                            break
                left_at = time.monotonic()
            name = "/" + path.split("?")[0]
            ended = wait_until(lambda n=name: [e for e in up.ended if e.path == n], PROMPT + 5)
            assert ended, (path, up.ended)
            delays[path] = round((ended[-1].at - left_at) * 1000)
            assert delays[path] < PROMPT * 1000
            up.ended.clear()
        assert client.get(server.loopback(up.port, "ok")).content == b"ok"
    log = "".join(server.proc.output[before:])  # jupyter server's and its sidecar's
    assert "Traceback" not in log, log[-4000:]
    figure("test_faults::jupyter", "upstream closed after client left (ms)", delays)
    figure("test_faults::jupyter", "mid-body deaths survived", 5)
