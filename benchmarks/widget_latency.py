"""Widget round trips in JupyterLab and Chromium, with Nagle on and off on the kernel websocket.

Run: ``make bench-widgets`` (= ``.venv/bin/python benchmarks/widget_latency.py``);
``--write-docs`` also puts the table into docs/benchmarks.md.

Two JupyterLab servers side by side, one with
``--Loopback.kernel_websocket_nodelay=False`` (Nagle on, as a stock
jupyter_server), one with the default (Nagle off). Each opens the same
notebook in headless Chromium: a bare anywidget whose ``on_msg`` echoes what
it gets, and this project's comm bridge with an echo ``on_request`` handler.
The page times round trips with ``performance.now()``: ``model.send`` to the
``msg:custom`` event that answers it, and
``window.__jupyter_loopback__.request`` to its result, with no buffer (0 B)
and one 64 KiB buffer; and, for the part the browser takes no share in, a
``kernel_info`` round trip from Python over a websocket of its own to the
same kernel. The two servers are measured back to back for each
figure, in several rounds, so a change in the machine's load falls on both.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser_fixtures import CHROMIUM, CHROMIUM_ARGS, Lab, start_lab  # noqa: E402
from tests.comm_fixtures import RUN_CELLS  # noqa: E402
from tests.jupyter_fixtures import _cmdline, tree_pids  # noqa: E402
from tests.nodelay_probe import kernel_info, tcp_sockets  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- widget-results:start -->", "<!-- widget-results:end -->"
TARGET = 0.35  # Nagle off at 0 B, as a fraction of Nagle on

CELL = """
import anywidget, comm_bridge
from IPython.display import display

class Echo(anywidget.AnyWidget):
    _esm = '''
    export default {
      initialize({ model }) {
        const waiting = new Map();
        let next = 0;
        model.on("msg:custom", (msg) => { waiting.get(msg.id)?.(); waiting.delete(msg.id); });
        window.__widget_echo__ = (buffers) => new Promise((resolve) => {
          const id = ++next;
          waiting.set(id, resolve);
          model.send({ id }, undefined, buffers);
        });
      },
      render({ el }) { el.textContent = "echo"; },
    };
    '''

    def __init__(self):
        super().__init__()
        self.on_msg(lambda _widget, content, buffers: self.send(content, buffers))

comm_bridge.enable_comm_bridge()

@comm_bridge.on_request("bench", "echo")
def _echo(data, buffers):
    return data, buffers

display(Echo())
"""

# Time `n` round trips of one kind after `warmup` untimed ones; milliseconds each.
MEASURE = """async ({ kind, size, n, warmup }) => {
  const payload = size ? [new Uint8Array(size).map((_, i) => i % 251)] : [];
  const api = window.__jupyter_loopback__;
  const once = kind === "echo"
    ? () => window.__widget_echo__(payload)
    : async () => {
        const r = await api.request("bench", "echo", {}, payload);
        if (r.status !== "ok") throw new Error(JSON.stringify(r.data));
      };
  for (let i = 0; i < warmup; i++) await once();
  const out = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await once();
    out.push(performance.now() - t);
  }
  return out;
}"""

ROWS = [
    ("anywidget echo, 0 B", "echo", 0),
    ("anywidget echo, 64 KiB", "echo", 65536),
    ("comm bridge `request`, 0 B", "request", 0),
    ("comm bridge `request`, 64 KiB", "request", 65536),
    ("`kernel_info`, Python client on the same kernel (no browser)", "kernel_info", 0),
]
SETUPS = {"Nagle on (switch off)": ["--Loopback.kernel_websocket_nodelay=False"], "Nagle off (default)": []}


@contextmanager
def lab(home: Path, extra: list[str]) -> Iterator[Lab]:
    """JupyterLab (tests/browser_fixtures.py's ``start_lab``) with the bench notebook in its root."""
    server = start_lab(home, *extra)
    try:
        server.notebook("bench.ipynb", CELL)
        yield server
    finally:
        server.proc.stop()


def _conns(pids: list[int]) -> list[tuple[int, int, bool]]:
    """``(local port, peer port, TCP_NODELAY)`` of these processes' TCP connections."""
    out = []
    for pid in pids:
        try:
            out += [(s["local"][1], s["peer"][1], s["nodelay"]) for s in tcp_sockets(pid)]
        except OSError:
            continue  # gone, or not permitted (no ptrace rights over it)
    return out


def _count(conns: list[tuple[int, int, bool]]) -> str:
    return f"{sum(1 for c in conns if c[2])} of {len(conns)}"


def legs(server_pid: int, port: int) -> str:
    """How many connections of each leg of the page's comm path run with TCP_NODELAY, read from each process."""
    tree = tree_pids(server_pid)
    kernel = _conns([p for p in tree if b"ipykernel_launcher" in _cmdline(p)])
    chromium = [p for p in tree_pids(os.getpid()) if b"chromium" in _cmdline(p)]
    page = [c for c in _conns(chromium) if c[1] == port]
    server = _conns([server_pid])
    to_page = [c for c in server if c[0] == port and c[1] in {c[0] for c in page}]
    to_kernel = [c for c in server if c[1] in {c[0] for c in kernel}]
    return (
        f"page→server (Chromium) {_count(page)}, server→page {_count(to_page)}, "
        f"server→kernel (ZMQ) {_count(to_kernel)}, kernel→server (ZMQ) {_count(kernel)}"
    )


def open_page(browser: Any, server: Lab) -> Any:
    """The notebook, run, with the echo widget and the bridge ready in the page."""
    page = browser.new_page()
    page.set_default_timeout(120_000)
    page.goto(f"{server.url}lab/tree/bench.ipynb?token={server.token}")
    page.wait_for_function("() => window.jupyterapp?.shell.currentWidget?.context?.path === 'bench.ipynb'")
    page.evaluate(RUN_CELLS, 120_000)
    page.wait_for_function("() => window.__widget_echo__ && window.__jupyter_loopback__?.registry.models.length > 0")
    return page


def kernel_info_rtts(server: Lab, n: int, warmup: int) -> list[float]:
    """``kernel_info`` round trips from Python over a websocket of its own to the notebook's kernel; ms each."""
    from websockets.sync.client import connect

    kernel = server.api("GET", "api/sessions")[0]["kernel"]["id"]
    ws_url = server.url.replace("http://", "ws://", 1) + f"api/kernels/{kernel}/channels?session_id={uuid.uuid4().hex}"
    out = []
    with connect(ws_url, additional_headers={"Authorization": f"token {server.token}"}, proxy=None) as ws:
        for i in range(warmup + n):
            started = time.perf_counter()
            kernel_info(ws, None)
            if i >= warmup:
                out.append((time.perf_counter() - started) * 1000)
    return out


def measure(rounds: int, n: int, warmup: int) -> tuple[dict[str, dict[str, list[float]]], dict[str, str]]:
    """Samples per setup and row, and per setup the TCP_NODELAY count of each leg."""
    from playwright.sync_api import sync_playwright

    samples: dict[str, dict[str, list[float]]] = {setup: {row: [] for row, _, _ in ROWS} for setup in SETUPS}
    with ExitStack() as stack, sync_playwright() as p:
        labs = {
            setup: stack.enter_context(lab(Path(stack.enter_context(tempfile.TemporaryDirectory())), extra))
            for setup, extra in SETUPS.items()
        }
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pages = {setup: open_page(browser, server) for setup, server in labs.items()}
            found = {}
            for setup, server in labs.items():
                found[setup] = legs(server.proc.pid, server.port)
                print(f"{setup}: TCP_NODELAY on {found[setup]}", flush=True)
            for r in range(rounds):
                for row, kind, size in ROWS:
                    for setup, page in pages.items():  # the two setups back to back: the same load falls on both
                        arg = {"kind": kind, "size": size, "n": n, "warmup": warmup}
                        if kind == "kernel_info":
                            got = kernel_info_rtts(labs[setup], n, warmup)
                        else:
                            got = page.evaluate(MEASURE, arg)
                        samples[setup][row] += got
                        print(f"round {r + 1}/{rounds} {setup}: {row}: p50 {statistics.median(got):.1f} ms", flush=True)
        finally:
            browser.close()
    return samples, found


def table(
    samples: dict[str, dict[str, list[float]]],
    found: dict[str, str],
    rounds: int,
    n: int,
    load: tuple[float, float],
    nice: int,
) -> str:
    on, off = SETUPS  # Nagle on (switch off), Nagle off (the default)
    lines = [
        f"| round trip, median (p90) | {on} | {off} | off / on |",
        "|---|---|---|---|",
    ]
    for row, _, _ in ROWS:
        a, b = (statistics.median(samples[s][row]) for s in (on, off))
        p90 = [statistics.quantiles(samples[s][row], n=10)[-1] for s in (on, off)]
        mark = f" (target ≤ {TARGET}×: {'met' if b / a <= TARGET else 'MISSED'})" if row.endswith(" 0 B") else ""
        lines.append(f"| {row} | {a:.1f} ms ({p90[0]:.1f}) | {b:.1f} ms ({p90[1]:.1f}) | {b / a:.2f}×{mark} |")
    import jupyter_server
    import tornado

    chromium = os.popen(f"{CHROMIUM} --version 2>/dev/null").read().strip() or "chromium"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines += [
        "",
        f"{rounds} rounds × {n} round trips per figure and setup, the setups back to back; {when}, "
        f"{os.cpu_count()} cores ({platform.machine()}, Linux {platform.release()}), "
        f"load average {load[0]:.1f} before, {load[1]:.1f} after{f', run at nice {nice}' if nice else ''}; "
        f"jupyter_server {jupyter_server.__version__}, tornado {tornado.version}, {chromium}.",
        "",
        "Connections with TCP_NODELAY on each leg, read from the processes' sockets during the run:",
        "",
        *(f"- {setup}: {said}" for setup, said in found.items()),
    ]
    return "\n".join(lines)


def write_docs(text: str) -> None:
    doc = DOCS.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(doc):
        raise SystemExit(f"{DOCS} has no {START} … {END} section")
    DOCS.write_text(pattern.sub(lambda _: f"{START}\n{text}\n{END}", doc))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("-n", type=int, default=30, help="timed round trips per figure and round")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--nice", type=int, default=0, help="niceness for this run's processes (negative: ahead of other load; root)"
    )
    parser.add_argument("--write-docs", action="store_true", help=f"put the table into {DOCS.relative_to(ROOT)}")
    args = parser.parse_args()
    if args.nice:
        os.nice(args.nice)  # inherited by the servers, kernels and Chromium started below
    before = os.getloadavg()[0]
    samples, found = measure(args.rounds, args.n, args.warmup)
    text = table(samples, found, args.rounds, args.n, (before, os.getloadavg()[0]), os.nice(0))
    print("\n" + text)
    if args.write_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
