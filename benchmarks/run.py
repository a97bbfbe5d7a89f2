"""HTTP/WebSocket benchmark: one upstream, five routes to it, measured side by side in one run.

Routes (rows), all to the same tests/upstream.py on 127.0.0.1:

1. direct to the upstream;
2. this project's standalone sidecar (``jupyter-loopback serve``), ``/app/<port>/…``;
3. the full chain through a real ``jupyter server`` with this project's
   adapter, ``/loopback/app/<port>/…`` (the sidecar is launched by the first
   request);
4. jupyter-server-proxy 4.6's ``/proxy/<port>/…`` and
5. jupyter-loopback 0.3.3's ``/bench-proxy/<port>/…`` — both in one
   ``jupyter server`` from ``benchmarks/.bench-venv-http`` (made on first use).

With ``--compare REV`` two more rows run the source tree of commit REV (the
sidecar, and the full chain: a ``jupyter server`` whose adapter comes from
that tree), and a table gives the current full chain's figures over REV's,
each within 10% or not. Each ``--without NAME`` adds a row that runs the
full chain with the fast path NAME switched off (``JUPYTER_LOOPBACK_FASTPATHS``,
loopback_asgi/fastpaths.py), and a table that gives what the fast path is
worth: each full-chain figure with it over without it.

Measurements go round the rows in turns, so a burst of load on this shared
machine hits every row alike. A route that fails a measurement is recorded as
"fails" with the reason; the run goes on.

    .venv/bin/python benchmarks/run.py [--quick] [--write-docs] [--no-peers] [--compare REV] [--without NAME ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import measure
import report
import servers
from measure import MeasureError, Row

from loopback_asgi import fastpaths

# How far a full-chain figure may move against the compared commit's (as a fraction).
TOLERANCE = 0.10

DOCS = servers.ROOT / "docs" / "benchmarks.md"
README = servers.ROOT / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
SUMMARY_START, SUMMARY_END = "<!-- bench-summary:start -->", "<!-- bench-summary:end -->"
# The run the docs show: its figures, and the chart drawn from them.
DOCS_JSON = servers.ROOT / "docs" / "data" / "bench-http.json"
DOCS_SVG = servers.ROOT / "docs" / "img" / "bench-http.svg"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def first_request(row: Row, timeout: float = 60) -> tuple[int, float]:
    """Status of the first ``GET /json`` on ``row``, and its seconds from the moment the port accepted.

    A Jupyter server logs "is running at" before it listens, so the connection
    is retried (bounded by ``timeout``) until the port accepts.
    """
    conn = measure.RawHTTP(row)
    deadline = time.perf_counter() + timeout
    while True:
        try:
            await conn.connect()
            break
        except ConnectionRefusedError:
            if time.perf_counter() > deadline:
                raise
            await asyncio.sleep(0.01)  # poll for the listening socket, bounded by the deadline
    start = time.perf_counter()
    try:
        status = await asyncio.wait_for(conn.get(conn.request_bytes("/json")), timeout)
    finally:
        await conn.close()
    return status, time.perf_counter() - start


async def check(row: Row, what: str) -> None:
    """Skip ``row`` (with ``what`` as the reason) unless ``GET /json`` answers 200."""
    try:
        status, _ = await first_request(row, timeout=30)
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        row.skip = f"skipped: {what} ({type(exc).__name__})"
        return
    if status != 200:
        row.skip = f"skipped: {what} (GET {row.prefix}/json answered {status})"


class Bench:
    def __init__(self, args: argparse.Namespace, tree: tuple[Path, str] | None = None) -> None:
        self.args = args
        self.tree = tree  # --compare: the compared commit's source tree and its hash
        self.rows: list[Row] = []
        self.results: report.Results = {}
        self.procs: list[servers.Proc] = []
        self.loaded: dict[str, str] = {}  # row -> where its loopback_asgi was imported from

    def record(self, metric: str, row: Row, value: report.Value) -> None:
        self.results.setdefault(metric, {})[row.key] = value

    def turn(self, n: int) -> list[Row]:
        """The live rows in the order of turn ``n``: with ``--compare``, every other turn backwards,
        so neither the current nor the compared code always goes first."""
        live = [row for row in self.rows if not row.skip]
        return live[::-1] if self.tree is not None and n % 2 else live

    async def each(self, metric: str, fn: Callable[[Row], Awaitable[float]], *, best_of: int = 1) -> None:
        """Measure every live row ``best_of`` times in turns; keep the best value."""
        best: dict[str, float] = {}
        for n in range(best_of):
            for row in self.turn(n):
                if isinstance(self.results.get(metric, {}).get(row.key), str):
                    continue  # failed already
                try:
                    value = await fn(row)
                except Exception as exc:  # any failure of a route is a result, not a crash
                    self.record(metric, row, why(exc))
                    continue
                old = best.get(row.key)
                if old is None or (value > old if metric_higher(metric) else value < old):
                    best[row.key] = value
                    self.record(metric, row, value)
        print(f"  {metric}: " + ", ".join(f"{k}={report.fmt(m(metric), v)}" for k, v in best.items()), flush=True)

    async def sampled(self, metrics: tuple[str, str], fn: Callable[[Row, int], Awaitable[list[float]]]) -> None:
        """Latency samples gathered in ``rounds`` turns over the rows; p50 and p99 of the pooled samples."""
        rounds, n = self.args.rounds, self.args.samples
        samples: dict[str, list[float]] = {}
        for turn in range(rounds):
            for row in self.turn(turn):
                if isinstance(self.results.get(metrics[0], {}).get(row.key), str):
                    continue
                try:
                    samples.setdefault(row.key, []).extend(await fn(row, n // rounds))
                except Exception as exc:  # any failure of a route is a result, not a crash
                    for metric in filter(None, metrics):
                        self.record(metric, row, why(exc))
        for row in self.rows:
            if got := samples.get(row.key):
                if not isinstance(self.results.get(metrics[0], {}).get(row.key), str):
                    self.record(metrics[0], row, statistics.median(got))
                    if metrics[1]:
                        self.record(metrics[1], row, percentile(got, 0.99))
        shown = {k: report.fmt(m(metrics[0]), statistics.median(v)) for k, v in samples.items() if v}
        print(f"  {metrics[0]}: " + ", ".join(f"{k}={v}" for k, v in shown.items()), flush=True)

    def verify(self, row: Row, proc: servers.Proc, root: Path) -> None:
        """Skip ``row`` unless its process imported ``loopback_asgi`` from the tree ``root``."""
        path = servers.loaded_from(proc)
        self.loaded[row.key] = path or "not reported"
        if path is None or not Path(path).is_relative_to(root):
            row.skip = f"skipped: runs loopback_asgi from {path or 'an unknown place'}, not from {root}"

    async def start_sidecar(self, row: Row, root: Path, up: int) -> None:
        try:
            proc, base = servers.start_sidecar(root)
        except (RuntimeError, OSError) as exc:
            row.skip = f"skipped: sidecar not available ({why(exc)})"
            return
        self.procs.append(proc)
        row.base = f"{base}/app/{up}"
        self.verify(row, proc, root)

    async def start_chain(self, row: Row, root: Path, up: int, env: dict[str, str] | None = None) -> None:
        """A ``jupyter server`` whose adapter (and so the sidecar it launches) comes from the tree ``root``."""
        try:
            proc, base = servers.start_jupyter(
                sys.executable, servers.project_extensions(root), pythonpath=str(root), env=env
            )
            self.procs.append(proc)
            self.verify(row, proc, root)
            if row.skip:
                return
            row.base = f"{base}/loopback/app/{up}"
            status, elapsed = await first_request(row)
            if status == 200:
                self.record("first", row, elapsed)
            else:
                row.skip = f"skipped: adapter not available (GET /loopback/app/{up}/json answered {status})"
            for n, (cwd, environ) in enumerate(servers.launched_sidecars(proc)):
                pythonpath = environ.get("PYTHONPATH", "")
                self.loaded[f"{row.key}'s sidecar{f' {n + 1}' if n else ''}"] = f"PYTHONPATH {pythonpath} (cwd {cwd})"
                if pythonpath != str(root):
                    row.skip = f"skipped: its sidecar runs with PYTHONPATH {pythonpath or 'unset'}, not {root}"
                for name, value in (env or {}).items():
                    if environ.get(name) != value:
                        row.skip = f"skipped: its sidecar runs without {name}={value}"
        except (RuntimeError, OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            row.skip = f"skipped: adapter not available ({why(exc)})"

    async def setup(self) -> None:
        auth = {"Authorization": f"token {servers.TOKEN}"}
        proc, up = servers.start_upstream()
        self.procs.append(proc)
        self.rows.append(Row("direct", "direct", f"http://127.0.0.1:{up}"))
        sidecar = Row("sidecar", "sidecar", "", auth)
        chain = Row("chain", "full chain (Jupyter + adapter)", "", auth)
        self.rows += [sidecar, chain]
        await self.start_sidecar(sidecar, servers.ROOT, up)
        await self.start_chain(chain, servers.ROOT, up)
        if self.tree is not None:
            tree, commit = self.tree
            rev_sidecar = Row("rev_sidecar", f"sidecar at {commit[:9]}", "", auth)
            rev_chain = Row("rev_chain", f"full chain at {commit[:9]}", "", auth)
            self.rows += [rev_sidecar, rev_chain]
            await self.start_sidecar(rev_sidecar, tree, up)
            await self.start_chain(rev_chain, tree, up)
        for name in self.args.without:
            off = Row(f"chain_without_{name}", f"full chain, {name} off", "", auth)
            self.rows.append(off)
            await self.start_chain(off, servers.ROOT, up, env={fastpaths.ENV: name})

        jsp = Row("jsp", "jupyter-server-proxy 4.6", "", auth)
        old = Row("peer033", "jupyter-loopback 0.3.3", "", auth)
        self.rows += [jsp, old]
        if self.args.no_peers:
            jsp.skip = old.skip = "skipped: --no-peers"
            return
        try:
            python = servers.peer_python()
            proc, base = servers.start_jupyter(python, servers.peer_extensions(), pythonpath=str(servers.HERE))
            self.procs.append(proc)
        except (RuntimeError, OSError, TimeoutError) as exc:
            jsp.skip = old.skip = f"skipped: peers not available ({why(exc)})"
            return
        jsp.base, old.base = f"{base}/proxy/{up}", f"{base}/bench-proxy/{up}"
        await check(jsp, "jupyter-server-proxy route not available")
        await check(old, "0.3.3 route not available")

    async def measure_all(self) -> None:
        a, q = self.args, self.args.quick
        await self.sampled(("get_p50", "get_p99"), lambda row, n: measure.latency(row, n))
        await self.each("rps16", lambda row: measure.req_per_s(row, a.requests), best_of=3)
        mb50 = 10**7 if q else 5 * 10**7

        async def mb(row: Row) -> float:
            return (await measure.big_get(row, mb50))[0]

        await self.each("mb50", mb, best_of=2)
        big = 10**8 if q else 10**9

        async def gb(row: Row) -> float:
            return (await measure.big_get(row, big))[0]

        await self.each("gb1", gb, best_of=1 if q else 2)
        # The first byte of a big body: the median of a few heads per turn (one download's is too noisy).
        await self.sampled(("gb1_ttfb", ""), lambda row, _: measure.first_byte(row, big, 2 if q else 5))
        await self.each("sse_any", lambda row: measure.sse_first_event(row, "*/*"))
        await self.each("sse_es", lambda row: measure.sse_first_event(row, "text/event-stream"))
        await self.sampled(("ws_p50", ""), lambda row, n: measure.ws_echo(row, n))
        await self.each("ws_10mb", lambda row: measure.ws_big(row, 10**7))
        for row in self.rows:
            if row.skip:
                for metric in report.METRICS:
                    if metric.key in self.results or metric.key == "first":
                        self.results.setdefault(metric.key, {}).setdefault(row.key, row.skip)

    async def run(self) -> dict[str, Any]:
        load = os.getloadavg()
        started = datetime.now(timezone.utc)
        try:
            print("starting servers", flush=True)
            await self.setup()
            for row in self.rows:
                print(f"  {row.label}: {row.skip or row.base}", flush=True)
            for key, where in self.loaded.items():
                print(f"  {key} imports loopback_asgi from {where}", flush=True)
            print("measuring", flush=True)
            await self.measure_all()
        finally:
            for proc in reversed(self.procs):
                proc.stop()
        load_end = os.getloadavg()
        meta = (
            f"Run {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average {load[0]:.1f} at start and "
            f"{load_end[0]:.1f} at the end; {'quick mode; ' if self.args.quick else ''}"
            f"{self.args.samples} sequential samples per latency, {self.args.requests} requests per req/s run, "
            f"{'wrk' if measure.shutil.which('wrk') else 'an asyncio client'} for req/s, "
            f"{'curl' if measure.shutil.which('curl') else 'an asyncio client'} for downloads."
        )
        record = {
            "meta": meta,
            "when": f"{started:%Y-%m-%d}, load average {load[0]:.1f}–{load_end[0]:.1f}",
            "rows": {r.key: r.label for r in self.rows},
            "results": self.results,
        }
        if self.tree is not None:
            record["compare"] = {
                "rev": self.args.compare,
                "commit": self.tree[1],
                "loaded": self.loaded,
                "tolerance": TOLERANCE,
                "ratios": compare(self.results),
            }
        if self.args.without:
            record["without"] = [
                {
                    "fastpath": name,
                    "tolerance": TOLERANCE,
                    "ratios": compare(self.results, against=f"chain_without_{name}"),
                }
                for name in self.args.without
            ]
        out = servers.HERE / "results"
        out.mkdir(exist_ok=True)
        path = out / f"http-{started:%Y%m%dT%H%M%S}.json"
        path.write_text(json.dumps(record, indent=1))
        print(f"results saved to {path}")
        return record


def compare(results: report.Results, against: str = "rev_chain") -> list[dict[str, Any]]:
    """Each full-chain figure over the row ``against``'s, and whether it stays within ``TOLERANCE``.

    A throughput may not fall below (1 − TOLERANCE)× the old one, a latency may not
    rise above (1 + TOLERANCE)×; a figure either side lacks has verdict "—".
    """
    out = []
    for metric in report.METRICS:
        values = results.get(metric.key, {})
        new, old = values.get("chain"), values.get(against)
        if new is None and old is None:
            continue
        ratio = new / old if isinstance(new, float) and isinstance(old, float) and old else None
        if ratio is None:
            verdict = "—"
        elif metric.higher_is_better:
            verdict = "PASS" if ratio >= 1 - TOLERANCE else "MISS"
        else:
            verdict = "PASS" if ratio <= 1 + TOLERANCE else "MISS"
        out.append({"metric": metric.key, "new": new, "old": old, "ratio": ratio, "verdict": verdict})
    return out


def ratio_rows(ratios: list[dict[str, Any]]) -> list[str]:
    """One Markdown table row per figure of a :func:`compare` list: new, old, new / old, verdict."""
    lines = []
    for item in ratios:
        metric = m(item["metric"])
        cells = [report.fmt(metric, v) if v is not None else "—" for v in (item["new"], item["old"])]
        ratio = f"{item['ratio']:.2f}" if item["ratio"] is not None else "—"
        lines.append(f"| {metric.label} | {cells[0]} | {cells[1]} | {ratio} | {item['verdict']} |")
    return lines


def compare_table(record: dict[str, Any]) -> str:
    """The ``--compare`` section: the full chain now against the compared commit, as Markdown."""
    info = record["compare"]
    short = info["commit"][:9]
    lines = [
        f"Full chain now against `{info['rev']}` ({short}), measured in the same turns; "
        f"PASS = within {info['tolerance']:.0%} (throughputs no lower, latencies no higher):",
        "",
        f"| full-chain figure | now | at {short} | now / {short} | verdict |",
        "|---|---|---|---|---|",
        *ratio_rows(info["ratios"]),
    ]
    lines += ["", "Where each process imported `loopback_asgi` from:", ""]
    lines += [f"- {key}: `{where}`" for key, where in info["loaded"].items()]
    return "\n".join(lines) + "\n"


def without_table(info: dict[str, Any]) -> str:
    """A ``--without`` section: the full chain with a fast path against the full chain without it."""
    name = info["fastpath"]
    lines = [
        f"What the fast path `{name}` is worth: the full chain with it against the full chain with it "
        f"switched off, measured in the same turns; PASS = no more than {info['tolerance']:.0%} worse "
        "with it (a gain shows as a ratio above 1 for throughputs, below 1 for latencies):",
        "",
        "| full-chain figure | with | without | with / without | verdict |",
        "|---|---|---|---|---|",
        *ratio_rows(info["ratios"]),
    ]
    return "\n".join(lines) + "\n"


def render(record: dict[str, Any]) -> tuple[str, str, str]:
    """The docs' text (meta line, chart, what it means, results, notes, targets), the README's summary and
    the chart's SVG, from a saved run."""
    results, rows = record["results"], list(record["rows"].items())
    tables = report.markdown_tables(results, rows, report.targets(results))
    summary = report.summary_table(results, rows)
    when = record.get("when", "time not recorded")
    chart = f"![Each route against direct]({DOCS_SVG.relative_to(DOCS.parent)})"
    meaning = report.user_figures(results)
    compared = f"\n{compare_table(record)}" if "compare" in record else ""
    compared += "".join(f"\n{without_table(info)}" for info in record.get("without", []))
    return (
        f"{record['meta']}\n\n{chart}\n\nWhat the full chain's figures mean for a user:\n\n{meaning}\n\n{tables}\n"
        f"{compared}",
        f"{summary}\n\nOne run of `make bench` on a shared 2-core machine ({when}).\n",
        report.svg_chart(results, rows),
    )


def block(path: Path, start: str, end: str) -> str:
    """What lies between the ``start`` and ``end`` markers of ``path``."""
    doc = path.read_text()
    return doc.split(start, 1)[1].split(end, 1)[0].removeprefix("\n")


def why(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, (MeasureError, RuntimeError)) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:160] or type(exc).__name__


def m(key: str) -> report.Metric:
    return next(metric for metric in report.METRICS if metric.key == key)


def metric_higher(key: str) -> bool:
    return m(key).higher_is_better


def replace_block(path: Path, start: str, end: str, text: str) -> None:
    """Replace what lies between the ``start`` and ``end`` markers of ``path``; nothing else changes."""
    doc = path.read_text()
    if start not in doc or end not in doc:
        raise SystemExit(f"{path} has no {start} … {end} block to replace")
    head, rest = doc.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{text}{end}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts and sizes, to check the harness")
    parser.add_argument("--no-peers", action="store_true", help="skip the jupyter-server-proxy and 0.3.3 rows")
    parser.add_argument("--write-docs", action="store_true", help="write the tables into docs/ and README.md")
    parser.add_argument("--samples", type=int, default=None, help="sequential latency samples per route")
    parser.add_argument("--requests", type=int, default=None, help="requests per req/s run")
    parser.add_argument("--rounds", type=int, default=4, help="turns over the routes for latency samples")
    parser.add_argument("--from-json", type=Path, help="measure nothing: show (and write) a saved run")
    parser.add_argument(
        "--compare",
        metavar="REV",
        help="also run commit REV's sidecar and full chain in the same turns, and give now / REV per full-chain figure",
    )
    parser.add_argument(
        "--without",
        metavar="NAME",
        action="append",
        default=[],
        choices=sorted(fastpaths.FASTPATHS),
        help="also run the full chain with the fast path NAME switched off, and give with / without per figure"
        " (repeatable)",
    )
    parser.add_argument(
        "--check-docs", action="store_true", help="exit 1 unless the docs show the saved run of docs/data/ exactly"
    )
    args = parser.parse_args()
    args.samples = args.samples or (200 if args.quick else 3000)
    args.requests = args.requests or (500 if args.quick else 8000)
    if args.check_docs:
        text, summary, svg = render(json.loads(DOCS_JSON.read_text()))
        stale = [
            str(path.relative_to(servers.ROOT))
            for path, ok in (
                (DOCS, block(DOCS, START, END) == text),
                (README, block(README, SUMMARY_START, SUMMARY_END) == summary),
                (DOCS_SVG, DOCS_SVG.is_file() and DOCS_SVG.read_text() == svg),
            )
            if not ok
        ]
        if stale:
            print(f"not what {DOCS_JSON.relative_to(servers.ROOT)} gives: {', '.join(stale)}", file=sys.stderr)
            return 1
        return 0
    if args.from_json:
        record = json.loads(args.from_json.read_text())
    elif args.compare:
        try:
            with servers.materialise(args.compare) as tree:
                record = asyncio.run(Bench(args, tree).run())
        except servers.RevError as exc:
            print(f"--compare {args.compare}: {exc}", file=sys.stderr)
            return 2
    else:
        record = asyncio.run(Bench(args).run())
    text, summary, svg = render(record)
    print("\n" + text)
    if args.write_docs:
        DOCS_JSON.parent.mkdir(exist_ok=True)
        DOCS_SVG.parent.mkdir(exist_ok=True)
        DOCS_JSON.write_text(json.dumps(record, indent=1) + "\n")
        DOCS_SVG.write_text(svg)
        replace_block(DOCS, START, END, text)
        replace_block(README, SUMMARY_START, SUMMARY_END, summary)
        print(f"tables written to {DOCS} and {README}; the run to {DOCS_JSON}, its chart to {DOCS_SVG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
