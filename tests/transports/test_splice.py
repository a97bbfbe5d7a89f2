"""The adapter's kernel-side body relay (``_transports/splice.py``): real sockets in process, then through Jupyter."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from loopback_asgi import fastpaths
from loopback_asgi._transports import splice
from loopback_asgi._transports.splice import CLIENT_GONE, DONE, SOURCE_LOST, Splice
from loopback_asgi.jupyter.response import SPLICE_MIN
from tests.jupyter_fixtures import JupyterServer, start_jupyter, stop_jupyter
from tests.upstream import PATTERN

pytestmark = pytest.mark.skipif(not splice.available(), reason="os.splice is Linux-only")

MiB = 2**20


def _expected(offset: int, size: int) -> bytes:
    """Bytes ``offset .. offset+size`` of the upstream's ``/bytes`` body (PATTERN repeated)."""
    start = offset % len(PATTERN)
    out = bytearray()
    while len(out) < size:
        out += PATTERN[start : start + size - len(out)]
        start = 0
    return bytes(out)


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    """(server end, client end) of a loopback TCP connection: the browser's socket and the browser."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    server.setblocking(False)
    return server, client


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _feed(sock: socket.socket, data: bytes, written: list[int], close: bool = True) -> threading.Thread:
    """Write ``data`` to ``sock`` (blocking, in a thread), counting progress in ``written[0]``."""

    def run() -> None:
        view = memoryview(data)
        try:
            while written[0] < len(data):
                written[0] += sock.send(view[written[0] : written[0] + 65536])
        except OSError:
            pass
        if close:
            sock.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


async def _read_all(sock: socket.socket, size: int = -1) -> bytes:
    """``size`` bytes (or, if -1, up to EOF) from the browser's end, in a thread; 30 s at most per recv."""
    return await asyncio.get_running_loop().run_in_executor(None, _recv, sock, size)


def _recv(sock: socket.socket, size: int) -> bytes:
    sock.settimeout(30)
    out = bytearray()
    while size < 0 or len(out) < size:
        chunk = sock.recv(MiB)
        if not chunk:
            break
        out += chunk
    return bytes(out)


async def test_moves_the_body_exactly_and_holds_back_a_slow_reader() -> None:
    before = _fds()
    sidecar, relay_in = socket.socketpair()
    relay_in.setblocking(False)
    relay_out, browser = _tcp_pair()
    body = _expected(0, 64 * MiB)
    written = [0]
    _feed(sidecar, body, written)
    splice = Splice(relay_in, relay_out, len(body))
    task = asyncio.ensure_future(splice.run())
    # The browser reads nothing: the writer must stall after a bounded amount (pipe + socket buffers).
    deadline = time.monotonic() + 10
    last, steady = -1, 0
    while time.monotonic() < deadline and steady < 10:
        await asyncio.sleep(0.02)
        steady, last = (steady + 1, last) if written[0] == last else (0, written[0])
    assert written[0] < 24 * MiB, f"{written[0]} bytes taken in while the browser read nothing"
    received = await _read_all(browser, len(body))
    assert await asyncio.wait_for(task, 30) == DONE
    assert splice.sent == len(body) and received == body
    for s in (relay_in, relay_out, browser):
        s.close()
    assert _fds() == before


async def test_sidecar_stopping_mid_body_delivers_what_arrived_then_reports_it() -> None:
    sidecar, relay_in = socket.socketpair()
    relay_in.setblocking(False)
    relay_out, browser = _tcp_pair()
    part = _expected(0, 3 * MiB)
    _feed(sidecar, part, [0])  # closes after 3 MiB of a declared 10 MiB
    splice = Splice(relay_in, relay_out, 10 * MiB)
    outcome = await asyncio.wait_for(splice.run(), 30)
    relay_out.close()  # the caller cuts the browser's stream
    assert outcome == SOURCE_LOST and splice.sent == len(part)
    assert await _read_all(browser) == part
    for s in (relay_in, browser):
        s.close()


async def test_browser_leaving_ends_it_and_lets_go_of_the_sidecar_socket() -> None:
    before = _fds()
    sidecar, relay_in = socket.socketpair()
    relay_in.setblocking(False)
    relay_out, browser = _tcp_pair()
    written = [0]
    _feed(sidecar, _expected(0, 256 * MiB), written, close=False)
    splice = Splice(relay_in, relay_out, 256 * MiB)
    task = asyncio.ensure_future(splice.run())
    assert await _read_all(browser, 1)
    browser.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    browser.close()  # RST: the next splice to it fails
    assert await asyncio.wait_for(task, 30) == CLIENT_GONE
    relay_in.close()
    relay_out.close()
    # No duplicate of the relay's end survives: the sidecar's writer sees the connection gone.
    sidecar.settimeout(10)
    with pytest.raises(OSError):
        while True:
            sidecar.send(b"x" * 65536)
    sidecar.close()
    assert _fds() == before


async def test_abort_while_waiting_on_a_silent_sidecar() -> None:
    before = _fds()
    sidecar, relay_in = socket.socketpair()
    relay_in.setblocking(False)
    relay_out, browser = _tcp_pair()
    splice = Splice(relay_in, relay_out, 10 * MiB)
    task = asyncio.ensure_future(splice.run())
    await asyncio.sleep(0.05)
    assert not task.done()
    splice.abort()  # what the handler's on_close does when tornado sees the browser leave
    assert await asyncio.wait_for(task, 5) == CLIENT_GONE
    for s in (sidecar, relay_in, relay_out, browser):
        s.close()
    assert _fds() == before


# Through a real Jupyter server: the handler's use of it (jupyter/response.py).


def _pipes(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:")
    return count


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _wait_for(predicate: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _check(chunks: Iterator[bytes], offset: int = 0) -> int:
    """Compare a body with the upstream's pattern piece by piece; return the offset reached."""
    for chunk in chunks:
        assert chunk == _expected(offset, len(chunk)), f"wrong bytes at offset {offset}"
        offset += len(chunk)
    return offset


@pytest.fixture
def clean_log(jupyter_base: JupyterServer) -> Iterator[None]:
    """The server logs no traceback and no framing error during the test."""
    start = len(jupyter_base.proc.output)
    yield
    new = "".join(jupyter_base.proc.output[start:])
    assert "Traceback" not in new and "HTTPOutputError" not in new and "Uncaught exception" not in new, new


@pytest.mark.usefixtures("clean_log")
def test_large_body_goes_kernel_side_and_arrives_exact(jupyter_base: JupyterServer, upstream: int) -> None:
    pid = jupyter_base.proc.pid
    n = 48 * MiB + 3
    with jupyter_base.client() as c:
        c.get(jupyter_base.loopback(upstream, "json"), headers=jupyter_base.auth).raise_for_status()
        idle = _pipes(pid)
        for _ in range(2):  # twice on one keep-alive connection: the sidecar stream is reused after it
            with c.stream("GET", jupyter_base.loopback(upstream, f"bytes?n={n}"), headers=jupyter_base.auth) as r:
                assert r.status_code == 200 and r.headers["content-length"] == str(n)
                chunks = r.iter_raw()
                offset = _check(iter([next(chunks)]))
                # The client pauses: the relay's pipe is there, holding at most its bound.
                assert _wait_for(lambda: _pipes(pid) == idle + 2), (idle, _pipes(pid))
                assert _check(chunks, offset) == n
            assert _wait_for(lambda: _pipes(pid) == idle)
        r = c.get(jupyter_base.loopback(upstream, "json"), headers=jupyter_base.auth)
        assert r.json() == {"hello": "world"}


@pytest.mark.usefixtures("clean_log")
def test_sizes_and_framings_around_the_threshold(jupyter_base: JupyterServer, upstream: int) -> None:
    with jupyter_base.client() as c:
        for n in (SPLICE_MIN - 1, SPLICE_MIN, SPLICE_MIN + 1, 5 * MiB + 7):
            for chunked in ("0", "1"):
                url = jupyter_base.loopback(upstream, f"bytes?n={n}&chunked={chunked}")
                r = c.get(url, headers=jupyter_base.auth)
                assert r.status_code == 200 and r.content == _expected(0, n), (n, chunked)
                assert r.headers.get("content-length") == (str(n) if chunked == "0" else None)
            r = c.head(jupyter_base.loopback(upstream, f"bytes?n={n}"), headers=jupyter_base.auth)
            assert r.headers["content-length"] == str(n) and r.content == b""


@pytest.mark.usefixtures("clean_log")
def test_upstream_dying_mid_body_cuts_the_browser_stream(jupyter_base: JupyterServer, upstream: int) -> None:
    with jupyter_base.client() as c:
        got = 0
        with pytest.raises(httpx.RemoteProtocolError):
            with c.stream("GET", jupyter_base.loopback(upstream, "die?after=1000000"), headers=jupyter_base.auth) as r:
                assert r.headers["content-length"] == "4000000"
                for chunk in r.iter_raw():
                    assert chunk == _expected(got, len(chunk))
                    got += len(chunk)
        assert got == 1000000  # what the upstream sent arrived; then the cut
        assert c.get(jupyter_base.loopback(upstream, "json"), headers=jupyter_base.auth).status_code == 200


@pytest.mark.usefixtures("clean_log")
def test_sidecar_killed_mid_body_cuts_the_browser_stream(jupyter_base: JupyterServer, upstream: int) -> None:
    pid = jupyter_base.proc.pid
    with jupyter_base.client() as c:
        c.get(jupyter_base.loopback(upstream, "json"), headers=jupyter_base.auth).raise_for_status()
        idle = _pipes(pid)
        got = 0
        with pytest.raises(httpx.RemoteProtocolError):
            with c.stream("GET", jupyter_base.loopback(upstream, "bytes?n=1000000000"), headers=jupyter_base.auth) as r:
                chunks = r.iter_raw()
                got = _check(iter([next(chunks)]))
                assert _wait_for(lambda: _pipes(pid) == idle + 2)
                (sidecar,) = jupyter_base.sidecar_pids()
                os.kill(sidecar, signal.SIGKILL)
                got = _check(chunks, got)
        assert got < 1000000000
        assert _wait_for(lambda: _pipes(pid) == idle)
        started = time.monotonic()
        r = c.get(jupyter_base.loopback(upstream, "json"), headers=jupyter_base.auth, timeout=5)
        assert r.status_code == 200 and time.monotonic() - started < 5


@pytest.mark.usefixtures("clean_log")
def test_browser_leaving_mid_body_releases_everything(jupyter_base: JupyterServer, upstream: int) -> None:
    pid = jupyter_base.proc.pid
    path = f"{jupyter_base.base_url}loopback/app/{upstream}/bytes?n=1000000000"
    with jupyter_base.client() as c:
        c.get(jupyter_base.loopback(upstream, "json"), headers=jupyter_base.auth).raise_for_status()
    (sidecar,) = jupyter_base.sidecar_pids()
    idle_pipes, server_fds, sidecar_fds = _pipes(pid), _fd_count(pid), _fd_count(sidecar)
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", jupyter_base.port), timeout=10) as browser:
            browser.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: token {jupyter_base.token}\r\n\r\n".encode()
            )
            assert browser.recv(65536).startswith(b"HTTP/1.1 200")
            assert _wait_for(lambda: _pipes(pid) == idle_pipes + 2)
            browser.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        # Gone: no pipe, no socket left in the server, the sidecar's connection closed too.
        assert _wait_for(lambda: _pipes(pid) == idle_pipes), "the relay's pipe outlived the browser"
        assert _wait_for(lambda: _fd_count(pid) <= server_fds), (server_fds, _fd_count(pid))
        assert _wait_for(lambda: _fd_count(sidecar) <= sidecar_fds), (sidecar_fds, _fd_count(sidecar))
        with jupyter_base.client() as c:
            r = c.get(jupyter_base.loopback(upstream, "bytes?n=3000000"), headers=jupyter_base.auth)
            assert r.status_code == 200 and r.content == _expected(0, 3000000)
        assert jupyter_base.proc.popen.poll() is None


def test_switched_off_the_body_is_copied_and_arrives_exact(upstream: int) -> None:
    """Both kernel-side relays off (the adapter's and its sidecar's): the same body, copied, no pipe in the adapter."""
    server = start_jupyter("/", env={fastpaths.ENV: "adapter_splice,sidecar_splice"})
    try:
        pid = server.proc.pid
        n = 8 * MiB + 3
        with server.client() as c:
            c.get(server.loopback(upstream, "json"), headers=server.auth).raise_for_status()
            idle = _pipes(pid)
            with c.stream("GET", server.loopback(upstream, f"bytes?n={n}"), headers=server.auth) as r:
                assert r.status_code == 200 and r.headers["content-length"] == str(n)
                chunks = r.iter_raw()
                offset = _check(iter([next(chunks)]))
                assert _pipes(pid) == idle  # no kernel-side relay was set up
                assert _check(chunks, offset) == n
            r = c.get(server.loopback(upstream, "json"), headers=server.auth)
            assert r.json() == {"hello": "world"}
        assert "Traceback" not in "".join(server.proc.output)
    finally:
        stop_jupyter(server)
