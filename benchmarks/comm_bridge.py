"""Benchmark the comm bridge against the comm channel's floor and jupyter-loopback 0.3.3.

Run: ``.venv/bin/python benchmarks/comm_bridge.py`` (creates
``benchmarks/.bench-venv-peer`` with jupyter-loopback 0.3.3 on first use).

Real kernels (ipykernel via jupyter_client); this script plays the frontend
over the widget comm, as ``tests/comm_fixtures.py`` does. Three subjects, one
run:

- floor: a bare anywidget whose ``on_msg`` echoes what it gets, on the shell
  thread; for throughput it answers a pull with N bytes from memory in
  CHUNK-sized messages. Nothing can be faster over this channel.
- ours: ``comm_bridge`` (this project).
- 0.3.3: jupyter-loopback 0.3.3's bridge in its own venv (same distribution
  name, so it cannot share ours), driven with its own message shapes.

Besides wall-clock figures it reports the kernel's own CPU time per round
trip, echo and download (``/proc/<pid>/stat``, Linux), which other load on
the machine disturbs far less.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from comm_bridge.protocol import CHUNK  # noqa: E402
from tests.comm_fixtures import Bridge, Kernel  # noqa: E402

PEER_VENV = ROOT / "benchmarks" / ".bench-venv-peer"
PEER_PY = PEER_VENV / "bin" / "python"
MB = 1_000_000
KIB64 = bytes(range(256)) * 256
SLOW_S = 2.0

FLOOR = """
import anywidget
from IPython.display import display

class Floor(anywidget.AnyWidget):
    _esm = "export default { render() {} }; // comm-floor"

    def __init__(self):
        super().__init__()
        self.on_msg(self._on)

    def _on(self, _widget, content, buffers):
        if content.get("op") == "pull":
            data = memoryview(bytes(content["n"]))
            for at in range(0, len(data), content["chunk"]):
                last = at + content["chunk"] >= len(data)
                self.send({"id": content["id"], "end": last}, [data[at : at + content["chunk"]]])
        else:
            self.send(content, buffers)

FLOOR_WIDGET = Floor()
display(FLOOR_WIDGET)
"""

OURS = """
import time, comm_bridge
comm_bridge.enable_comm_bridge()

@comm_bridge.on_request("bench", "echo")
def _echo(data, buffers):
    return data, buffers

@comm_bridge.on_request("bench", "echo-inline", inline=True)
def _echo_inline(data, buffers):
    return data, buffers

@comm_bridge.on_request("bench", "slow")
def _slow(data, buffers):
    time.sleep(SLOW_S)
""".replace("SLOW_S", repr(SLOW_S))

PEER = """
import time, jupyter_loopback
jupyter_loopback.enable_comm_bridge()

@jupyter_loopback.on_request("bench", "echo")
def _echo(data, buffers):
    return dict(data or {}), list(buffers)

@jupyter_loopback.on_request("bench", "slow")
def _slow(data, buffers):
    time.sleep(SLOW_S)
    return {}, []
""".replace("SLOW_S", repr(SLOW_S))


class Floor:
    """The bare echo widget, driven directly."""

    def __init__(self, kernel: Kernel, comm_id: str) -> None:
        self.kernel, self.comm_id = kernel, comm_id
        self.waiting: dict[int, Callable[[dict[str, Any], list[memoryview]], None]] = {}
        self.next = 0
        kernel.on_custom[comm_id] = lambda msg, bufs: self.waiting[msg["id"]](msg, bufs)

    async def echo(self, buffers: list[bytes]) -> None:
        self.next += 1
        done = asyncio.get_running_loop().create_future()
        self.waiting[self.next] = lambda msg, bufs: done.set_result(None)
        self.kernel.custom(self.comm_id, {"id": self.next}, buffers)
        await done
        del self.waiting[self.next]

    async def pull(self, n: int) -> int:
        self.next += 1
        done, got = asyncio.get_running_loop().create_future(), [0]

        def on(msg: dict[str, Any], bufs: list[memoryview]) -> None:
            got[0] += sum(len(b) for b in bufs)
            if msg["end"]:
                done.set_result(got[0])

        self.waiting[self.next] = on
        self.kernel.custom(self.comm_id, {"op": "pull", "id": self.next, "n": n, "chunk": CHUNK})
        return await done


class Peer:
    """jupyter-loopback 0.3.3's bridge, driven with its message shapes (type/id/namespace/kind)."""

    def __init__(self, kernel: Kernel, comm_id: str) -> None:
        self.kernel, self.comm_id = kernel, comm_id
        self.waiting: dict[str, asyncio.Future[tuple[dict[str, Any], list[bytes]]]] = {}
        self.events: dict[str, asyncio.Queue[Any]] = {}
        kernel.on_custom[comm_id] = self._on

    def _on(self, msg: dict[str, Any], bufs: list[memoryview]) -> None:
        if msg.get("type") == "response":
            future = self.waiting.pop(msg["id"], None)
            if future is not None and not future.done():
                future.set_result((msg, [bytes(b) for b in bufs]))
        elif msg.get("type") == "event":
            queue = self.events.get(msg["ws_id"])
            if queue is not None:
                queue.put_nowait(msg.get("text") if not msg.get("binary") else bytes(bufs[0]))

    async def request(
        self, ns: str, kind: str, data: Any, buffers: list[bytes] = ()
    ) -> tuple[dict[str, Any], list[bytes]]:  # type: ignore[assignment]
        id = uuid.uuid4().hex
        future = self.waiting[id] = asyncio.get_running_loop().create_future()
        self.kernel.custom(
            self.comm_id, {"type": "request", "id": id, "namespace": ns, "kind": kind, "data": data}, buffers
        )
        return await future

    async def echo(self, buffers: list[bytes]) -> None:
        await self.request("bench", "echo", {}, buffers)

    async def fetch(self, port: int, path: str) -> int:
        msg, bufs = await self.request(
            "__loopback__", "fetch", {"port": port, "path": path.split("?")[0], "query": path.partition("?")[2]}
        )
        if msg["status"] != "ok":
            raise RuntimeError(msg.get("error"))
        return len(bufs[0])


async def latencies(subjects: dict[str, Callable[[], Awaitable[Any]]], n: int, warmup: int = 30) -> dict[str, float]:
    """p50 in ms of each subject, sampled in turn (in a shuffled order each round) so load hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in subjects}
    order = list(subjects.items())
    for i in range(warmup + n):
        random.shuffle(order)  # whoever runs right after another subject inherits its kernel's tail work
        for name, fn in order:
            started = time.perf_counter()
            await fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) * 1000 for name, t in times.items()}


async def throughputs(subjects: dict[str, Callable[[], Awaitable[int]]], size: int, repeat: int) -> dict[str, Any]:
    """Median MB/s of each subject, runs taken in turn; a subject that fails reports why."""
    rates: dict[str, list[float]] = {name: [] for name in subjects}
    failed: dict[str, str] = {}
    for _ in range(repeat):
        for name, fn in subjects.items():
            if name in failed:
                continue
            started = time.perf_counter()
            try:
                got = await fn()
            except Exception as exc:
                failed[name] = f"fails: {str(exc)[:50]}"
                continue
            assert got == size, (name, got, size)
            rates[name].append(size / (time.perf_counter() - started) / MB)
    return {name: failed.get(name) or statistics.median(rates[name]) for name in subjects}


async def ours_fetch(bridge: Bridge, port: int, n: int) -> int:
    response = await bridge.fetch(port, f"/bytes?n={n}")
    size = 0
    async for chunk in response.iter():
        size += len(chunk)
    return size


def kernel_cpu(kernel: Kernel) -> float:
    """CPU seconds the kernel process has used so far, all threads (its children not included)."""
    pid = kernel.km.provisioner.process.pid  # type: ignore[attr-defined]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cpu_per_op(
    kernel: Kernel, subjects: dict[str, Callable[[], Awaitable[Any]]], n: int, rounds: int = 3
) -> dict[str, float]:
    """The kernel's CPU in ms per call of each subject: blocks of ``n`` calls, subjects in turn, ``rounds`` times.

    Less sensitive to a busy machine than wall-clock latency: other processes
    slow a round trip down but do not add to the kernel's own CPU time.
    """
    spent = dict.fromkeys(subjects, 0.0)
    for _ in range(rounds):
        for name, fn in subjects.items():
            before = kernel_cpu(kernel)
            for _ in range(n):
                await fn()
            spent[name] += kernel_cpu(kernel) - before
    return {name: total * 1000 / (n * rounds) for name, total in spent.items()}


async def behind_slow(request: Callable[[str], Awaitable[Any]], rounds: int = 3) -> float:
    """Median wait of a fast request sent just after four slow ones."""
    waits = []
    for _ in range(rounds):
        slow = [asyncio.ensure_future(request("slow")) for _ in range(4)]
        await asyncio.sleep(0.05)  # the four reach the kernel first: this measures queueing, not a race
        started = time.perf_counter()
        await request("echo")
        waits.append((time.perf_counter() - started) * 1000)
        await asyncio.gather(*slow)
    return statistics.median(waits)


async def ws_ours(
    bridge: Bridge, port: int, n: int, frames: int, request: Callable[[], Awaitable[Any]]
) -> dict[str, Any]:
    """Echo p50 sampled in turn with the request round trip, then frames/s of bursts (median of 3)."""
    ws = bridge.websocket(port, "/ws")
    await ws.opened

    async def one() -> None:
        await ws.send("x")
        await ws.recv()

    p50 = await latencies({"ws": one, "request": request}, n)
    rates, ordered = [], True
    for _ in range(3):
        started = time.perf_counter()
        for i in range(frames):
            await ws.send(str(i))
        got = [await ws.recv() for _ in range(frames)]
        rates.append(frames / (time.perf_counter() - started))
        ordered = ordered and got == [str(i) for i in range(frames)]
    ws.close()
    await ws.closed
    return {"echo": p50["ws"], "request": p50["request"], "rate": statistics.median(rates), "ordered": ordered}


async def ws_peer(peer: Peer, port: int, n: int, frames: int) -> dict[str, Any]:
    ws_id = uuid.uuid4().hex
    queue = peer.events[ws_id] = asyncio.Queue()
    await peer.request("__loopback__", "ws_open", {"ws_id": ws_id, "port": port, "path": "/ws"})

    async def one() -> None:
        await peer.request("__loopback__", "ws_send", {"ws_id": ws_id, "text": "x"})
        await queue.get()

    p50 = (await latencies({"ws": one}, n))["ws"]
    rates, ordered = [], True
    for _ in range(3):
        started = time.perf_counter()
        sends = [
            asyncio.ensure_future(peer.request("__loopback__", "ws_send", {"ws_id": ws_id, "text": str(i)}))
            for i in range(frames)
        ]
        got = [await asyncio.wait_for(queue.get(), 60) for _ in range(frames)]
        rates.append(frames / (time.perf_counter() - started))
        await asyncio.gather(*sends)
        ordered = ordered and got == [str(i) for i in range(frames)]
    await peer.request("__loopback__", "ws_close", {"ws_id": ws_id})
    return {"echo": p50, "rate": statistics.median(rates), "ordered": ordered}


def ensure_peer() -> None:
    if PEER_PY.exists():
        return
    subprocess.run(["python3", "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run(
        [str(PEER_PY), "-m", "pip", "install", "-q", "jupyter-loopback[comm]==0.3.3", "ipykernel"], check=True
    )


async def main(n: int, repeat: int) -> dict[str, Any]:
    ensure_peer()
    results: dict[str, Any] = {}
    ours_kernel = await Kernel().start()
    peer_kernel = await Kernel(str(PEER_PY)).start()
    try:
        await ours_kernel.execute(FLOOR)
        await ours_kernel.execute(OURS)
        await peer_kernel.execute(PEER)
        port = await ours_kernel.upstream()
        peer_port = await peer_kernel.upstream()
        floor = Floor(ours_kernel, await ours_kernel.widget("comm-floor"))
        ours = Bridge(ours_kernel, await ours_kernel.widget('kind: "comm_bridge"'))
        peer = Peer(peer_kernel, await peer_kernel.widget("__jupyter_loopback__"))

        async def ours_echo(buffers: list[bytes], kind: str = "echo") -> None:
            status, _, _ = await ours.request("bench", kind, None, buffers)
            assert status == "ok"

        for label, buffers in (("0 B", []), ("64 KiB", [KIB64])):
            results[f"rtt {label}"] = await latencies(
                {
                    "floor": lambda b=buffers: floor.echo(b),
                    "ours": lambda b=buffers: ours_echo(b),
                    "ours inline": lambda b=buffers: ours_echo(b, "echo-inline"),
                    "0.3.3": lambda b=buffers: peer.echo(b),
                },
                n,
            )
        for size, repeat_ in ((20 * MB, repeat), (200 * MB, 1)):
            results[f"fetch {size // MB} MB MB/s"] = await throughputs(
                {
                    "floor": lambda s=size: floor.pull(s),
                    "ours": lambda s=size: ours_fetch(ours, port, s),
                    "0.3.3": lambda s=size: peer.fetch(peer_port, f"/bytes?n={s}"),
                },
                size,
                repeat_,
            )
        ws = ours.websocket(port, "/ws")
        await ws.opened

        async def ws_echo() -> None:
            await ws.send("x")
            await ws.recv()

        results["kernel CPU ms per op"] = await cpu_per_op(
            ours_kernel, {"floor": lambda: floor.echo([]), "request": lambda: ours_echo([]), "ws echo": ws_echo}, n // 2
        )
        ws.close()
        await ws.closed
        results["kernel CPU ms per 20 MB"] = await cpu_per_op(
            ours_kernel, {"floor": lambda: floor.pull(20 * MB), "ours": lambda: ours_fetch(ours, port, 20 * MB)}, repeat
        )
        ours_ws = await ws_ours(ours, port, n, 1000, lambda: ours_echo([]))
        peer_ws = await ws_peer(peer, peer_port, n, 1000)
        results["ws echo p50 ms"] = {"ours": ours_ws["echo"], "request": ours_ws["request"], "0.3.3": peer_ws["echo"]}
        results["ws frames/s (1000, in order)"] = {"ours": ours_ws["rate"], "0.3.3": peer_ws["rate"]}
        results["ws in order"] = {"ours": ours_ws["ordered"], "0.3.3": peer_ws["ordered"]}
        results["request behind 4 slow handlers ms"] = {
            "ours": await behind_slow(lambda kind: ours.request("bench", kind)),
            "0.3.3": await behind_slow(lambda kind: peer.request("bench", kind, {})),
        }
    finally:
        await ours_kernel.stop()
        await peer_kernel.stop()
    return results


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if value < 100 else f"{value:.0f}"
    return str(value)


def table(results: dict[str, Any]) -> str:
    rtt_ours = results["rtt 0 B"]["ours"]
    lines = [
        "| measure | floor | ours | 0.3.3 | ours vs floor | target |",
        "|---|---|---|---|---|---|",
    ]
    for key, target in (("rtt 0 B", "≤ +0.3 ms"), ("rtt 64 KiB", "≤ +0.3 ms")):
        row = results[key]
        lines.append(
            f"| request round trip p50, {key[4:]} (ms) | {fmt(row['floor'])} | {fmt(row['ours'])} | {fmt(row['0.3.3'])}"
            f" | +{row['ours'] - row['floor']:.2f} ms | {target} |"
        )
    for key in ("rtt 0 B", "rtt 64 KiB"):
        row = results[key]
        lines.append(
            f"| … with `inline=True` (shell thread), {key[4:]} (ms) | {fmt(row['floor'])} | {fmt(row['ours inline'])}"
            f" | – | +{row['ours inline'] - row['floor']:.2f} ms | – |"
        )
    for key, target in (("fetch 20 MB MB/s", "≥ 0.5×"), ("fetch 200 MB MB/s", "completes")):
        row = results[key]
        ratio = row["ours"] / row["floor"]
        cells = f"{fmt(row['floor'])} | {fmt(row['ours'])} | {fmt(row['0.3.3'])}"
        lines.append(f"| {key[:-5]} (MB/s) | {cells} | {ratio:.2f}× | {target} |")
    row = results["ws echo p50 ms"]
    lines.append(
        f"| WebSocket echo p50 (ms) | – | {fmt(row['ours'])} | {fmt(row['0.3.3'])}"
        f" | {row['ours'] / row['request']:.2f}× our request ({fmt(row['request'])} ms, sampled in turn) | ≤ 1.2× |"
    )
    row = results["ws frames/s (1000, in order)"]
    order = {k: "in order" if v else "OUT OF ORDER" for k, v in results["ws in order"].items()}
    lines.append(
        f"| WebSocket frames/s, 1000 in order | – | {fmt(row['ours'])} ({order['ours']})"
        f" | {fmt(row['0.3.3'])} ({order['0.3.3']}) | – | ≥ 400 |"
    )
    cpu = results.get("kernel CPU ms per op")
    if cpu is not None:
        lines.append(
            f"| kernel CPU per round trip, 0 B (ms) | {cpu['floor']:.2f} | {cpu['request']:.2f} | – "
            f"| +{cpu['request'] - cpu['floor']:.2f} ms | – |"
        )
        lines.append(
            f"| kernel CPU per WebSocket echo (ms) | – | {cpu['ws echo']:.2f} | – "
            f"| {cpu['ws echo'] / cpu['request']:.2f}× our request | – |"
        )
        fetch = results["kernel CPU ms per 20 MB"]
        lines.append(
            f"| kernel CPU per 20 MB fetch (ms) | {fetch['floor']:.1f} | {fetch['ours']:.1f} | – "
            f"| {fetch['ours'] / fetch['floor']:.2f}× | – |"
        )
    row = results["request behind 4 slow handlers ms"]
    lines.append(
        f"| request behind four {SLOW_S:g} s handlers (ms) | – | {fmt(row['ours'])} | {fmt(row['0.3.3'])}"
        f" | {row['ours'] / rtt_ours:.1f}× our request | ≈ 1× |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="round trips per latency figure")
    parser.add_argument("--repeat", type=int, default=5, help="runs per throughput figure (median)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    figures = asyncio.run(main(args.n, args.repeat))
    print(table(figures))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
