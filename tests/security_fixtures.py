"""Fixtures for the security, fuzz, load and fault tests.

- :class:`Canary`: TCP listeners that must never be connected to (127.0.0.2,
  ``::1`` and 127.0.0.1 ports outside the policy).
- :class:`FaultUpstream`: a small raw-socket HTTP/1.1 upstream on 127.0.0.1
  whose misbehaviour a test picks by path (stall, trickle headers, die
  mid-body, stream forever) and which records when each connection ends, so a
  test can see *at the upstream* that the sidecar closed it.
- ``sidecars``: start standalone sidecars with a policy in the environment.
- :func:`figure`: figures a test measured; printed at once (``pytest -s``) and
  again in the terminal summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from .conftest import Proc, start_sidecar

FIGURES: list[tuple[str, str, Any]] = []


def figure(test: str, name: str, value: Any) -> None:
    """Record one measured figure (requests held, faults survived, inputs tried, errors seen…)."""
    FIGURES.append((test, name, value))
    print(f"[figure] {test}: {name} = {value}", flush=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("jupyter-loopback security, load and fault figures")
    for test, name, value in FIGURES:
        terminalreporter.write_line(f"{test}: {name} = {value}")


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes (then return it falsy)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def accepting(port: int, timeout: float = 30) -> None:
    """Wait (bounded) until 127.0.0.1:``port`` accepts connections.

    ``jupyter server --port=0`` logs its URL before its io_loop binds the port,
    so the readiness line alone can precede a refused connection.
    """

    def ok() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    if not wait_until(ok, timeout, interval=0.05):
        raise RuntimeError(f"nothing accepts connections on 127.0.0.1:{port}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise KeyError("VmRSS")


class Canary:
    """Listeners that record every connection made to them; a test asserts ``hits == []``."""

    def __init__(self, addresses: list[tuple[str, int]]) -> None:
        self.hits: list[tuple[str, int, bytes]] = []
        self.listening: list[tuple[str, int]] = []
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        for host, port in addresses:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()  # the port is taken by someone else: not a canary of ours
                continue
            sock.listen(64)
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ, (host, sock.getsockname()[1]))
            self.listening.append((host, sock.getsockname()[1]))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.1):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                with contextlib.suppress(BlockingIOError):
                    conn, _ = sock.accept()
                    # Recorded before the connection closes, so before the proxy can answer its client.
                    self.hits.append((*key.data, b""))
                    conn.settimeout(0.2)
                    with contextlib.suppress(OSError):
                        self.hits[-1] = (*key.data, conn.recv(200))
                    conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()


@dataclass
class Ended:
    """How one upstream connection ended."""

    path: str
    how: str  # "eof" (peer closed), "reset" (send failed), "done" (we finished), "bounded" (our time bound)
    at: float  # time.monotonic()
    sent: int


@dataclass
class FaultUpstream:
    """A raw HTTP/1.1 upstream on 127.0.0.1 with faults chosen by path.

    ``/ok`` 200 small body; ``/hold?n=N`` holds each request until N are held
    at once (or 30 s), then answers with the peak; ``/forever`` a chunked body
    that never ends (``?length=N``: a Content-Length it never reaches);
    ``/silent?length=L`` headers then no body at all;
    ``/trickle-headers`` one header line every 0.1 s, never a blank line;
    ``/stall`` never answers; ``/die?after=N`` declares 4N bytes, sends N and
    resets the connection. Idle keep-alive connections close after 1 s.
    Every connection's end is appended to ``ended``.
    """

    bound: float = 120.0
    port: int = 0
    ended: list[Ended] = field(default_factory=list)
    held: int = 0
    peak_held: int = 0
    connections: int = 0
    started: list[str] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _release: dict[int, asyncio.Event] = field(default_factory=dict)

    def start(self) -> FaultUpstream:
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=2048))
            self.port = server.sockets[0].getsockname()[1]
            self._server = server
            ready.set()
            self._loop.run_forever()
            server.close()
            self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        """Close the listener and every open connection, then the loop."""
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _shutdown(self) -> None:
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def wait_started(self, path: str, timeout: float) -> bool:
        """Wait (bounded) until a request for ``path`` has arrived."""
        return bool(wait_until(lambda: path in self.started, timeout))

    def wait_ended(self, path: str, timeout: float) -> Ended | None:
        found = wait_until(lambda: next((e for e in self.ended if e.path == path), None), timeout)
        return found  # type: ignore[no-any-return]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        state = {"path": "", "sent": 0, "how": "done"}
        try:
            await asyncio.wait_for(self._serve(reader, writer, state), self.bound)
        except (ConnectionError, OSError):
            state["how"] = "reset"
        except TimeoutError:
            state["how"] = "bounded"
        except _PeerGone:
            state["how"] = "eof"
        except asyncio.CancelledError:
            state["how"] = "shutdown"
        finally:
            self.ended.append(Ended(str(state["path"]), str(state["how"]), time.monotonic(), int(state["sent"])))
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: dict[str, Any]) -> None:
        idle = 30.0  # the first request may be slow to come under load; later ones close after 1 s idle
        while True:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), idle)
            except (TimeoutError, asyncio.IncompleteReadError):
                state["how"] = "eof" if reader.at_eof() else "idle"
                return
            target = head.split(b" ", 2)[1].decode("latin-1")
            path, _, query = target.partition("?")
            state["path"] = path
            self.started.append(path)
            args = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            keep, sent = await self._answer(path, args, reader, writer, state)
            state["sent"] += sent
            idle = 1.0
            if not keep:
                return

    async def _answer(
        self,
        path: str,
        args: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        state: dict[str, Any],
    ) -> tuple[bool, int]:
        def head(extra: str) -> bytes:
            return f"HTTP/1.1 200 OK\r\n{extra}\r\n".encode()

        if path == "/ok":
            writer.write(head("content-length: 2\r\n") + b"ok")
            await writer.drain()
            return True, 2
        if path == "/hold":
            want = int(args.get("n", "1"))
            self.held += 1
            self.peak_held = max(self.peak_held, self.held)
            event = self._release.setdefault(want, asyncio.Event())
            if self.held >= want:
                event.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), 30)
            self.held -= 1
            if self.held == 0:
                self._release.pop(want, None)
            body = str(self.peak_held).encode()
            writer.write(head(f"content-length: {len(body)}\r\n") + body)
            await writer.drain()
            return True, len(body)
        if path == "/forever":
            # Chunked, or with ``?length=N`` a Content-Length it never reaches.
            if "length" in args:
                writer.write(head(f"content-length: {args['length']}\r\n"))
                chunk = b"x" * 65536
            else:
                writer.write(head("transfer-encoding: chunked\r\n"))
                chunk = b"%x\r\n" % 65536 + b"x" * 65536 + b"\r\n"
            while True:
                writer.write(chunk)
                await writer.drain()
                state["sent"] += 65536
        if path == "/silent":
            writer.write(head(f"content-length: {args.get('length', '1000')}\r\n"))
            await writer.drain()
            await _until_eof(reader)
        if path == "/trickle-headers":
            writer.write(b"HTTP/1.1 200 OK\r\n")
            for i in range(100_000):
                writer.write(f"x-trickle-{i}: {i}\r\n".encode())
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_until_eof(reader), 0.1)
        if path == "/stall":
            await _until_eof(reader)
        if path == "/die":
            after = int(args.get("after", "65536"))
            writer.write(head(f"content-length: {after * 4}\r\n") + b"d" * after)
            await writer.drain()
            writer.transport.abort()
            return False, after
        writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        return True, 0


class _PeerGone(Exception):
    pass


async def _until_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass
    raise _PeerGone


@pytest.fixture
def fault_upstream() -> Iterator[FaultUpstream]:
    upstream = FaultUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture
def sidecars() -> Iterator[Callable[..., Proc]]:
    """``sidecars(env={...}, *args)`` starts a standalone sidecar; all are stopped afterwards."""
    started: list[Proc] = []

    def make(*args: str, env: dict[str, str] | None = None) -> Proc:
        proc = start_sidecar(*args, env=env)
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()
