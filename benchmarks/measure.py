"""The measurements, each bounded in count and time, each against one route (a :class:`Row`).

The client must not be the bottleneck: latency uses a raw HTTP/1.1
keep-alive connection over asyncio streams (no client library per request),
req/s uses ``wrk`` when installed (an asyncio load generator otherwise), big
downloads use ``curl`` when installed, WebSockets use ``websockets``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from websockets.asyncio.client import connect

__all__ = ["MeasureError", "Row", "big_get", "latency", "req_per_s", "sse_first_event", "ws_big", "ws_echo"]


class MeasureError(Exception):
    """A route failed a measurement: the message says how (recorded as "fails")."""


@dataclass
class Row:
    """One route to the same upstream: ``base + "/json"`` reaches the upstream's ``/json``."""

    key: str
    label: str
    base: str
    headers: dict[str, str] = field(default_factory=dict)
    skip: str | None = None

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.base)
        return parts.hostname or "127.0.0.1", parts.port or 80

    @property
    def prefix(self) -> str:
        return urlsplit(self.base).path

    def ws_url(self, path: str) -> str:
        return "ws" + self.base[len("http") :] + path


class RawHTTP:
    """One keep-alive HTTP/1.1 connection with just enough parsing for the benchmark."""

    def __init__(self, row: Row) -> None:
        self.row = row
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def request_bytes(self, path: str, extra: dict[str, str] | None = None) -> bytes:
        host, port = self.row.host_port
        headers = {"Host": f"{host}:{port}", **self.row.headers, **(extra or {})}
        lines = [f"GET {self.row.prefix}{path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(*self.row.host_port, limit=2**20)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.reader = self.writer = None

    async def send(self, request: bytes) -> tuple[int, dict[str, str]]:
        """Send a prepared request, read the response head; returns status and headers."""
        if self.writer is None:
            await self.connect()
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers

    async def read_body(self, headers: dict[str, str]) -> int:
        """Read (and drop) the body; returns its length. Closes the connection if the server will."""
        assert self.reader is not None
        size = 0
        if "content-length" in headers:
            left = int(headers["content-length"])
            while left:
                chunk = await self.reader.read(min(left, 2**20))
                if not chunk:
                    raise MeasureError("connection closed mid-body")
                left -= len(chunk)
                size += len(chunk)
        elif "chunked" in headers.get("transfer-encoding", ""):
            while True:
                line = await self.reader.readline()
                n = int(line.split(b";")[0], 16)
                if n == 0:
                    while (await self.reader.readline()) not in (b"\r\n", b""):
                        pass
                    break
                await self.reader.readexactly(n + 2)
                size += n
        else:
            while chunk := await self.reader.read(2**20):
                size += len(chunk)
            await self.close()
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return size

    async def get(self, request: bytes) -> int:
        status, headers = await self.send(request)
        await self.read_body(headers)
        return status


async def latency(row: Row, n: int, *, warmup: int = 50, budget: float = 60) -> list[float]:
    """Seconds per sequential small GET (``/json``) on one keep-alive connection."""
    conn = RawHTTP(row)
    request = conn.request_bytes("/json")
    samples: list[float] = []
    deadline = time.perf_counter() + budget
    try:
        for i in range(warmup + n):
            t = time.perf_counter()
            status = await asyncio.wait_for(conn.get(request), 10)
            if status != 200:
                raise MeasureError(f"GET /json answered {status}")
            if i >= warmup:
                samples.append(time.perf_counter() - t)
            if t > deadline:
                break
    finally:
        await conn.close()
    return samples


WRK_SCRIPT = """
-- Stop after a fixed count: this thread stops, and SIGINT ends wrk's main sleep early
-- (Linux delivers a process signal to the main thread first), so the reported
-- duration is the time the requests took.
local ffi = require("ffi")
ffi.cdef[[ int getpid(void); int kill(int pid, int sig); ]]
local limit = tonumber(os.getenv("BENCH_REQUESTS"))
local done = 0
function response(status, headers, body)
  done = done + 1
  if done == limit then
    wrk.thread:stop()
    ffi.C.kill(ffi.C.getpid(), 2)
  end
end
"""


def _wrk(row: Row, total: int, concurrency: int, budget: float) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT)
    try:
        # --timeout: on this shared 2-core machine a request can stall past wrk's 2 s default.
        cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{int(budget)}s", "--timeout", "30s", "-s", f.name]
        for k, v in row.headers.items():
            cmd += ["-H", f"{k}: {v}"]
        cmd.append(row.base + "/json")
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=budget + 30, env={**os.environ, "BENCH_REQUESTS": str(total)}
        )
    finally:
        os.unlink(f.name)
    text = out.stdout + out.stderr
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)\b", text)
    if out.returncode != 0 or not done:
        raise MeasureError(f"wrk failed: {text.strip()[-200:]}")
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        raise MeasureError(f"{m[1]} of {done[1]} responses were not 2xx")
    if m := re.search(r"Socket errors: (.*)", text):
        raise MeasureError(f"socket errors: {m[1]}")
    # When the budget ran out first, the rate over the budget is still the rate.
    seconds = float(done[2]) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[done[3]]
    return int(done[1]) / seconds


async def _asyncio_load(row: Row, total: int, concurrency: int, budget: float) -> float:
    deadline = time.perf_counter() + budget
    per = total // concurrency

    async def worker() -> None:
        conn = RawHTTP(row)
        request = conn.request_bytes("/json")
        try:
            for _ in range(per):
                if await conn.get(request) != 200:
                    raise MeasureError("a response was not 200")
                if time.perf_counter() > deadline:
                    raise MeasureError(f"did not finish {total} requests in {budget:.0f} s")
        finally:
            await conn.close()

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return per * concurrency / (time.perf_counter() - t)


async def req_per_s(row: Row, total: int, *, concurrency: int = 16, budget: float = 60) -> float:
    """Requests per second for ``total`` small GETs over ``concurrency`` keep-alive connections."""
    if shutil.which("wrk"):
        return await asyncio.to_thread(_wrk, row, total, concurrency, budget)
    return await _asyncio_load(row, total, concurrency, budget)


async def big_get(row: Row, size: int, *, budget: float = 180) -> tuple[float, float]:
    """Download ``size`` bytes from ``/bytes?n=``; returns (MB/s with MB = 10^6 bytes, seconds to first byte)."""
    url = f"{row.base}/bytes?n={size}"
    if shutil.which("curl"):
        cmd = ["curl", "-sS", "-o", "/dev/null", "--max-time", str(int(budget))]
        cmd += ["-w", "%{http_code} %{size_download} %{time_starttransfer} %{time_total}"]
        for k, v in row.headers.items():
            cmd += ["-H", f"{k}: {v}"]
        out = await asyncio.to_thread(subprocess.run, [*cmd, url], capture_output=True, text=True, timeout=budget + 30)
        fields = out.stdout.split()
        status, got, ttfb, total = int(fields[0]), int(fields[1]), float(fields[2]), float(fields[3])
        if out.returncode != 0 or status != 200 or got != size:
            why = out.stderr.strip().replace("curl: ", "") or f"{got} of {size} bytes"
            if status != 200:
                why += f", {await error_text(row, f'/bytes?n={size}')}"
            raise MeasureError(f"HTTP {status} after {total:.1f} s: {why}"[:200])
        return size / total / 1e6, ttfb
    conn = RawHTTP(row)
    t = time.perf_counter()
    try:
        status, headers = await asyncio.wait_for(conn.send(conn.request_bytes(f"/bytes?n={size}")), budget)
        ttfb = time.perf_counter() - t
        got = await asyncio.wait_for(conn.read_body(headers), budget)
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
        raise MeasureError(f"{type(exc).__name__}: {exc}"[:160]) from exc
    finally:
        await conn.close()
    if status != 200 or got != size:
        raise MeasureError(f"HTTP {status}, {got} of {size} bytes")
    return size / (time.perf_counter() - t) / 1e6, ttfb


async def first_byte(row: Row, size: int, n: int, *, budget: float = 60) -> list[float]:
    """Seconds from sending a GET of ``size`` bytes to its response head, ``n`` times; each connection is closed
    once the head is in (the body is not read: a user's first byte, not the download)."""
    samples = []
    for _ in range(n):
        conn = RawHTTP(row)
        try:
            await conn.connect()
            t = time.perf_counter()
            status, _ = await asyncio.wait_for(conn.send(conn.request_bytes(f"/bytes?n={size}")), budget)
            samples.append(time.perf_counter() - t)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            raise MeasureError(f"{type(exc).__name__}: {exc}"[:160]) from exc
        finally:
            await conn.close()
        if status != 200:
            raise MeasureError(f"HTTP {status}, {await error_text(row, f'/bytes?n={size}')}"[:200])
    return samples


async def error_text(row: Row, path: str) -> str:
    """The start of an error page, as text: what a failing route says about itself."""
    conn = RawHTTP(row)
    try:
        status, headers = await asyncio.wait_for(conn.send(conn.request_bytes(path)), 60)
        assert conn.reader is not None
        length = int(headers.get("content-length", "16384"))
        body = await asyncio.wait_for(conn.reader.readexactly(min(length, 16384)), 10) if status != 200 else b""
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        return type(exc).__name__
    finally:
        await conn.close()
    text = re.sub(r"<(script|style)[^>]*>.*?</\1>|<[^>]+>", " ", body.decode("utf-8", "replace"), flags=re.S)
    text = " ".join(text.split())
    # A Jupyter error page: keep what follows "<status> : ".
    return text[text.find(f"{status} :") :][:150] if f"{status} :" in text else text[:150]


async def sse_first_event(row: Row, accept: str, *, samples: int = 5, interval: float = 1.0) -> float:
    """Median seconds from request to the first event of ``/sse`` (events ``interval`` s apart).

    A route that holds the stream back shows up as about ``2 * interval``;
    then one sample is enough.
    """
    found: list[float] = []
    for _ in range(samples):
        conn = RawHTTP(row)
        t = time.perf_counter()
        try:
            await conn.connect()
            assert conn.writer is not None and conn.reader is not None
            conn.writer.write(conn.request_bytes(f"/sse?n=2&interval={interval}", {"Accept": accept}))
            seen = b""
            while b"data: 0" not in seen:
                chunk = await asyncio.wait_for(conn.reader.read(65536), 3 * interval + 10)
                if not chunk:
                    raise MeasureError("the stream ended without an event")
                seen += chunk
            found.append(time.perf_counter() - t)
            if not seen.startswith(b"HTTP/1.1 200"):
                raise MeasureError(seen.split(b"\r\n", 1)[0].decode("latin-1"))
        except TimeoutError as exc:
            raise MeasureError("no event in time") from exc
        finally:
            await conn.close()
        if found[-1] > interval / 2:
            break
    return statistics.median(found)


async def ws_echo(row: Row, n: int, *, warmup: int = 50, budget: float = 60) -> list[float]:
    """Seconds per round trip of a 32-byte text message through ``/ws`` (echo)."""
    samples: list[float] = []
    message = "x" * 32
    deadline = time.perf_counter() + budget
    async with connect(
        row.ws_url("/ws"),
        additional_headers=row.headers,
        compression=None,
        max_size=None,
        proxy=None,
        open_timeout=30,
        ping_interval=None,
    ) as ws:
        for i in range(warmup + n):
            t = time.perf_counter()
            await ws.send(message)
            if await asyncio.wait_for(ws.recv(), 10) != message:
                raise MeasureError("the echo differs")
            if i >= warmup:
                samples.append(time.perf_counter() - t)
            if t > deadline:
                break
    return samples


async def ws_big(row: Row, size: int, *, reps: int = 3, budget: float = 60) -> float:
    """Median seconds for a ``size``-byte binary message to go through ``/ws`` and come back."""
    payload = os.urandom(1024) * (size // 1024)
    times: list[float] = []
    try:
        async with connect(
            row.ws_url("/ws"),
            additional_headers=row.headers,
            compression=None,
            max_size=None,
            proxy=None,
            open_timeout=30,
            ping_interval=None,
        ) as ws:
            for _ in range(reps):
                t = time.perf_counter()
                await ws.send(payload)
                echo = await asyncio.wait_for(ws.recv(), budget)
                if echo != payload:
                    raise MeasureError(f"the echo differs ({len(echo)} bytes back)")
                times.append(time.perf_counter() - t)
    except TimeoutError as exc:
        raise MeasureError(f"no echo within {budget:.0f} s") from exc
    return statistics.median(times)
