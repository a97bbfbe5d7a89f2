"""Load: 500 concurrent HTTP requests and 200 concurrent WebSockets, no errors, no leak.

Run twice: against a standalone sidecar, and through the full Jupyter chain
(``jupyter server`` → sidecar → upstream, at ``<base_url>loopback/app/<port>/``).
The HTTP requests are held at the upstream until all 500 are in flight at
once (:class:`~tests.security_fixtures.FaultUpstream` ``/hold``), so the
figure "requests held" is measured, not assumed. Afterwards the processes'
open fds come back to their baseline and a second round adds no RSS.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest
from websockets.asyncio.client import connect

from .conftest import TOKEN, Proc, start_upstream
from .jupyter_fixtures import JupyterServer, start_jupyter, stop_jupyter
from .security_fixtures import FaultUpstream, accepting, figure, open_fds, rss, wait_until

HTTP_N = 500
WS_N = 200
MiB = 2**20


@dataclass
class Round:
    ok: int = 0
    errors: int = 0
    held: int = 0
    seconds: float = 0.0


async def http_round(url: str, headers: dict[str, str], upstream: FaultUpstream) -> Round:
    """``HTTP_N`` requests at once to ``url`` (a ``/hold?n=HTTP_N``)."""
    out = Round()
    limits = httpx.Limits(max_connections=HTTP_N + 10, max_keepalive_connections=0)
    started = time.monotonic()
    async with httpx.AsyncClient(headers=headers, timeout=90, trust_env=False, limits=limits) as client:
        results = await asyncio.gather(*(client.get(url) for _ in range(HTTP_N)), return_exceptions=True)
    for r in results:
        if isinstance(r, httpx.Response) and r.status_code == 200:
            out.ok += 1
            out.held = max(out.held, int(r.text))
        else:
            out.errors += 1
            print(f"[load] error: {r!r}", getattr(r, "text", "")[:200])
    out.seconds = time.monotonic() - started
    upstream.peak_held = 0
    return out


async def ws_round(url: str, headers: dict[str, str]) -> Round:
    """``WS_N`` WebSockets open at once, each echoing 5 text and 5 binary messages, then closed."""
    out = Round()
    opened = 0
    all_open = asyncio.Event()
    started = time.monotonic()

    async def one(i: int) -> None:
        nonlocal opened
        async with connect(url, additional_headers=headers, proxy=None, open_timeout=60, max_size=None) as ws:
            opened += 1
            out.held = max(out.held, opened)
            if opened == WS_N:
                all_open.set()
            await asyncio.wait_for(all_open.wait(), 60)
            for k in range(5):
                await ws.send(f"{i}:{k}")
                assert await asyncio.wait_for(ws.recv(), 30) == f"{i}:{k}"
                await ws.send(bytes([i % 256, k]) * 1000)
                assert await asyncio.wait_for(ws.recv(), 30) == bytes([i % 256, k]) * 1000
        opened -= 1

    results = await asyncio.gather(*(one(i) for i in range(WS_N)), return_exceptions=True)
    for r in results:
        if r is None:
            out.ok += 1
        else:
            out.errors += 1
            print(f"[load] ws error: {r!r}")
    out.seconds = time.monotonic() - started
    return out


def settle(pids: list[int], baseline: dict[int, int], probe: Callable[[], None], slack: int = 4) -> dict[int, int]:
    """Wait (bounded, 20 s) until each pid's open fds are back within ``slack`` of its baseline."""

    def back() -> bool:
        probe()  # a request lets the pools notice connections the upstream closed
        return all(open_fds(p) <= baseline[p] + slack for p in pids)

    wait_until(back, 20, interval=0.5)
    return {p: open_fds(p) for p in pids}


def run_load(
    name: str,
    http_url: str,
    ws_url: str,
    headers: dict[str, str],
    pids: list[int],
    upstream: FaultUpstream,
    probe: Callable[[], None],
) -> None:
    probe()
    baseline_fds = {p: open_fds(p) for p in pids}
    rss0 = {p: rss(p) for p in pids}
    rounds = []
    for _ in range(2):
        h = asyncio.run(http_round(http_url, headers, upstream))
        w = asyncio.run(ws_round(ws_url, headers))
        after = settle(pids, baseline_fds, probe)
        rounds.append((h, w, after, {p: rss(p) for p in pids}))
        assert (h.errors, w.errors) == (0, 0), (h, w)
        assert h.ok == HTTP_N and h.held == HTTP_N, h
        assert w.ok == WS_N and w.held == WS_N, w
        assert all(after[p] <= baseline_fds[p] + 4 for p in pids), (baseline_fds, after)
    (h1, w1, _, rss1), (h2, w2, fds2, rss2) = rounds
    growth = {p: rss2[p] - rss1[p] for p in pids}
    assert all(g < 16 * MiB for g in growth.values()), growth
    figure(name, "HTTP requests held at once / errors", f"{h1.held} / {h1.errors + h2.errors} (x2 rounds)")
    figure(name, "WebSockets open at once / errors", f"{w1.held} / {w1.errors + w2.errors} (x2 rounds)")
    figure(name, "HTTP round / WS round (s)", f"{h1.seconds:.1f} / {w1.seconds:.1f}")
    figure(name, "open fds baseline -> after", {p: f"{baseline_fds[p]} -> {fds2[p]}" for p in pids})
    figure(
        name,
        "RSS MiB start -> after round 1 -> after round 2",
        {p: f"{rss0[p] / MiB:.0f} -> {rss1[p] / MiB:.0f} -> {rss2[p] / MiB:.0f}" for p in pids},
    )


@pytest.mark.slow
def test_load_through_the_standalone_sidecar(
    sidecars: Callable[..., Proc], fault_upstream: FaultUpstream, upstream: int
) -> None:
    proc = sidecars()
    base = proc.match[1]
    headers = {"Authorization": f"token {TOKEN}"}

    def probe() -> None:
        r = httpx.get(f"{base}/app/{fault_upstream.port}/ok", headers=headers, trust_env=False)
        assert r.status_code == 200

    run_load(
        "test_load::sidecar",
        f"{base}/app/{fault_upstream.port}/hold?n={HTTP_N}",
        f"ws{base.removeprefix('http')}/app/{upstream}/ws",
        headers,
        [proc.pid],
        fault_upstream,
        probe,
    )


@pytest.mark.slow
def test_load_through_jupyter(fault_upstream: FaultUpstream, upstream: int) -> None:
    server = start_jupyter("/user/load/")
    try:

        def probe() -> None:
            r = httpx.get(server.loopback(fault_upstream.port, "ok"), headers=server.auth, trust_env=False)
            assert r.status_code == 200

        accepting(server.port)
        probe()  # launches the sidecar
        pids = [server.proc.pid, *server.sidecar_pids()]
        assert len(pids) == 2
        run_load(
            "test_load::jupyter",
            server.loopback(fault_upstream.port, f"hold?n={HTTP_N}"),
            f"{server.ws_url}loopback/app/{upstream}/ws",
            server.auth,
            pids,
            fault_upstream,
            probe,
        )
    finally:
        stop_jupyter(server)


BURST_HTTP = 200
BURST_WS = 50
SETTLE = 10.0


async def burst(server: JupyterServer, port: int) -> None:
    """``BURST_HTTP`` GETs at once (each held 1 s upstream, so all overlap), then ``BURST_WS`` WebSockets at once."""
    limits = httpx.Limits(max_connections=BURST_HTTP, max_keepalive_connections=0)
    async with httpx.AsyncClient(headers=server.auth, timeout=90, trust_env=False, limits=limits) as client:
        url = server.loopback(port, "slow?delay=1")
        results = await asyncio.gather(*(client.get(url) for _ in range(BURST_HTTP)))
    assert {r.status_code for r in results} == {200}

    async def one(i: int) -> None:
        url = f"{server.ws_url}loopback/app/{port}/ws"
        async with connect(url, additional_headers=server.auth, proxy=None, open_timeout=60) as ws:
            await ws.send(str(i))
            assert await asyncio.wait_for(ws.recv(), 30) == str(i)

    await asyncio.gather(*(one(i) for i in range(BURST_WS)))


@pytest.mark.slow
def test_a_burst_through_jupyter_leaves_no_idle_connections_behind() -> None:
    """After a burst, the sidecar's and the server's fds are back to baseline within 10 s, with no request to help.

    The upstream keeps idle connections for 120 s, as tornado's servers
    (Bokeh, Panel) keep theirs for an hour: only the pools' own timers close them.
    """
    upstream = start_upstream("127.0.0.1", "--timeout-keep-alive", "120")
    server = start_jupyter("/")
    try:
        port = int(upstream.match[1])
        assert httpx.get(server.loopback(port, "json"), headers=server.auth, trust_env=False).status_code == 200
        (sidecar,) = server.sidecar_pids()
        pids = {"sidecar": sidecar, "jupyter": server.proc.pid}
        baseline = {name: open_fds(pid) for name, pid in pids.items()}
        asyncio.run(burst(server, port))
        ended = time.monotonic()
        peak = {name: open_fds(pid) for name, pid in pids.items()}
        seen: list[tuple[float, dict[str, int]]] = []

        def back() -> bool:
            now = {name: open_fds(pid) for name, pid in pids.items()}
            seen.append((time.monotonic() - ended, now))
            return all(now[name] <= baseline[name] + 2 for name in pids)

        settled = wait_until(back, SETTLE, interval=0.25)
        trace = [f"{t:.1f}s {fds}" for t, fds in seen[:: max(1, len(seen) // 12)]]
        figure("test_load::burst", "open fds baseline / right after the burst", f"{baseline} / {peak}")
        figure("test_load::burst", "open fds after the burst", trace + [f"{seen[-1][0]:.1f}s {seen[-1][1]}"])
        assert settled, (baseline, peak, trace)
    finally:
        stop_jupyter(server)
        upstream.stop()
