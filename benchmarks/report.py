"""Turning measurements into the tables: values with ratios to direct, and the targets' verdicts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["METRICS", "Results", "markdown_tables", "summary_table", "targets"]

# A measured value (seconds, req/s or MB/s), or the reason a route failed it.
Value = float | str
Results = dict[str, dict[str, Value]]


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str  # "ms" values are stored in seconds
    higher_is_better: bool


METRICS = [
    Metric("get_p50", "small GET p50", "ms", False),
    Metric("get_p99", "small GET p99", "ms", False),
    Metric("rps16", "small GET req/s, 16 connections", "req/s", True),
    Metric("mb50", "50 MB GET", "MB/s", True),
    Metric("gb1", "1 GB GET", "MB/s", True),
    Metric("gb1_ttfb", "1 GB GET, time to first byte", "ms", False),
    Metric("sse_any", "SSE first event, `Accept: */*`", "ms", False),
    Metric("sse_es", "SSE first event, `Accept: text/event-stream`", "ms", False),
    Metric("ws_p50", "WS echo p50 (32 B)", "ms", False),
    Metric("ws_10mb", "WS 10 MB message round trip", "ms", False),
    Metric("first", "first request after server start", "ms", False),
]


def fmt(metric: Metric, value: Value) -> str:
    if isinstance(value, str):
        return value
    if metric.unit == "ms":
        ms = value * 1000
        return f"{ms:.2f} ms" if ms < 10 else f"{ms:.0f} ms"
    return f"{value:,.0f} {metric.unit}"


def markdown_tables(results: Results, rows: list[tuple[str, str]], verdicts: list[tuple[str, str, str]]) -> str:
    """The results table (ratios to direct in parentheses), its notes, and the targets table, as Markdown.

    A failure or a skip shows as "fails [n]" / "skipped [n]" with the reason in note n.
    """
    notes: list[str] = []

    def note(text: str) -> int:
        if text not in notes:
            notes.append(text)
        return notes.index(text) + 1

    head = ["measurement", *(label for _, label in rows)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for metric in METRICS:
        values = results.get(metric.key, {})
        if not values:
            continue
        direct = values.get("direct")
        cells = [metric.label]
        for key, label in rows:
            value = values.get(key)
            if value is None:
                cells.append("—")
            elif isinstance(value, str):
                skipped = value.startswith("skipped")
                text = value if skipped else f"{label}, {metric.label}: {value}"
                cells.append(f"{'skipped' if skipped else 'fails'} [{note(text)}]")
            else:
                ratio = f" ({value / direct:.2f}×)" if isinstance(direct, float) and direct and key != "direct" else ""
                cells.append(fmt(metric, value) + ratio)
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines.append("")
        lines += [f"[{i}] {text.replace('|', '/')}  " for i, text in enumerate(notes, 1)]
    lines += ["", "| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {name} | {measured} | {verdict} |" for name, measured, verdict in verdicts]
    return "\n".join(lines)


SUMMARY = ("get_p50", "rps16", "gb1", "sse_any", "ws_p50")


def summary_table(results: Results, rows: list[tuple[str, str]]) -> str:
    """A short Markdown table (the README's): a few measurements, values only, failures as "fails"."""
    short = {"chain": "full chain", "jsp": "jupyter-server-proxy 4.6", "peer033": "jupyter-loopback 0.3.3"}
    head = ["", *(short.get(key, label) for key, label in rows)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for metric in (m for m in METRICS if m.key in SUMMARY):
        values = results.get(metric.key, {})
        cells = [metric.label]
        for key, _ in rows:
            value = values.get(key)
            if value is None or (isinstance(value, str) and value.startswith("skipped")):
                cells.append("—")
            elif isinstance(value, str):
                cells.append("fails")
            else:
                cells.append(fmt(metric, value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


Check = Callable[[Results], tuple[str, bool] | None]


def _num(results: Results, metric: str, row: str) -> float | None:
    value = results.get(metric, {}).get(row)
    return value if isinstance(value, float) else None


def _added(metric: str, row: str, limit_ms: float) -> Check:
    def check(r: Results) -> tuple[str, bool] | None:
        a, d = _num(r, metric, row), _num(r, metric, "direct")
        if a is None or d is None:
            return None
        added = (a - d) * 1000
        return f"+{added:.2f} ms", added <= limit_ms

    return check


def _ratio(metric: str, row: str, other: str, limit: float, *, at_least: bool) -> Check:
    def check(r: Results) -> tuple[str, bool] | None:
        a, b = _num(r, metric, row), _num(r, metric, other)
        if a is None or b is None or b == 0:
            return None
        ratio = a / b
        return f"{ratio:.2f}×", ratio >= limit if at_least else ratio <= limit

    return check


def _absolute(metric: str, row: str, limit: float, *, at_least: bool, unit: str) -> Check:
    def check(r: Results) -> tuple[str, bool] | None:
        a = _num(r, metric, row)
        if a is None:
            return None
        shown = a * 1000 if unit == "ms" else a
        return f"{shown:,.1f} {unit}", a >= limit if at_least else a <= limit

    return check


TARGETS: list[tuple[str, Check]] = [
    ("sidecar adds ≤ 0.5 ms to a small GET p50", _added("get_p50", "sidecar", 0.5)),
    ("sidecar keeps ≥ 30% of direct req/s", _ratio("rps16", "sidecar", "direct", 0.3, at_least=True)),
    ("sidecar ≥ 800 MB/s on a 1 GB GET", _absolute("gb1", "sidecar", 800, at_least=True, unit="MB/s")),
    ("sidecar adds ≤ 0.15 ms to a WS echo p50", _added("ws_p50", "sidecar", 0.15)),
    ("full chain small GET p50 ≤ 1.1× jupyter-server-proxy's", _ratio("get_p50", "chain", "jsp", 1.1, at_least=False)),
    ("full chain 1 GB GET ≥ 0.2× direct", _ratio("gb1", "chain", "direct", 0.2, at_least=True)),
    ("full chain 1 GB GET first byte ≤ 50 ms", _absolute("gb1_ttfb", "chain", 0.05, at_least=False, unit="ms")),
    (
        "full chain SSE first event ≤ 20 ms, `Accept: */*`",
        _absolute("sse_any", "chain", 0.02, at_least=False, unit="ms"),
    ),
    ("full chain WS echo p50 ≤ 1.2× jupyter-server-proxy's", _ratio("ws_p50", "chain", "jsp", 1.2, at_least=False)),
    ("full chain first request after start ≤ 1.5 s", _absolute("first", "chain", 1.5, at_least=False, unit="ms")),
]


def targets(results: Results) -> list[tuple[str, str, str]]:
    """(target, measured, PASS / MISS / "not measured") for every target."""
    out = []
    for name, check in TARGETS:
        verdict = check(results)
        if verdict is None:
            out.append((name, "—", "not measured"))
        else:
            out.append((name, verdict[0], "PASS" if verdict[1] else "MISS"))
    return out


def user_figures(results: Results) -> str:
    """What the full chain's figures mean for a user, worked out from them (Markdown bullets)."""
    lines = []
    p50 = _num(results, "get_p50", "chain")
    rps = _num(results, "rps16", "chain")
    if p50 is not None and rps is not None:
        # A browser opens at most 6 HTTP/1.1 connections to one origin.
        tiles = 200 / min(rps, 6 / p50)
        lines.append(
            f"- **A tile map of 200 tiles** (a full view of a localtileserver or ipyleaflet map, fetched over a "
            f"browser's 6 connections): about {tiles * 1000:,.0f} ms of proxy time for all of them, on top of "
            "the tile server's own work."
        )
    ws = _num(results, "ws_p50", "chain")
    if ws is not None:
        lines.append(
            f"- **A Bokeh or Panel slider drag**: each update is a WebSocket message; the chain's round trip is "
            f"{ws * 1000:.2f} ms, so the proxy allows about {1 / ws:,.0f} updates a second, far more than a "
            "60 Hz drag sends."
        )
    gb = _num(results, "gb1", "chain")
    if gb is not None:
        lines.append(
            f"- **A 1 GB download** (a raster, a model, a data export): about {1000 / gb:,.1f} s at "
            f"{gb:,.0f} MB/s, with memory bounded whatever the size."
        )
    sse = _num(results, "sse_any", "chain")
    if sse is not None:
        lines.append(
            f"- **A progress bar fed by server-sent events**: each event reaches the page {sse * 1000:.1f} ms "
            "after the server sends it, whatever `Accept` header the page's code sends."
        )
    return "\n".join(lines)


CHART = ("get_p50", "rps16", "gb1", "ws_p50")


def svg_chart(results: Results, rows: list[tuple[str, str]]) -> str:
    """A bar chart (SVG) of each route's cost against direct: ×1 is direct, shorter is better.

    Latencies show as value / direct, throughputs as direct / value, so every bar
    reads "times slower than direct"; a failed or skipped route has no bar.
    """
    metrics = [m for m in METRICS if m.key in CHART and isinstance(results.get(m.key, {}).get("direct"), float)]
    others = [(key, label) for key, label in rows if key != "direct"]
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
    bar_h, gap, left, width = 14, 10, 260, 420
    height = 40 + len(metrics) * (len(others) * bar_h + gap + 18) + 20 * len(others)
    worst = 1.0
    cells: list[list[float | None]] = []
    for metric in metrics:
        direct = results[metric.key]["direct"]
        row: list[float | None] = []
        for key, _ in others:
            value = results[metric.key].get(key)
            if isinstance(value, float) and isinstance(direct, float) and value > 0:
                row.append(value / direct if not metric.higher_is_better else direct / value)
            else:
                row.append(None)
        worst = max([worst, *(v for v in row if v is not None)])
        cells.append(row)
    scale = width / worst
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 80}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<text x="{left}" y="16">times slower than direct (1× = direct; shorter is better)</text>',
    ]
    y = 30
    for metric, row in zip(metrics, cells, strict=True):
        out.append(f'<text x="4" y="{y + 12}" font-weight="bold">{_esc(metric.label)}</text>')
        y += 18
        for (_, label), colour, ratio in zip(others, colours, row, strict=False):
            out.append(f'<text x="12" y="{y + bar_h - 3}">{_esc(label)}</text>')
            if ratio is None:
                out.append(f'<text x="{left + 4}" y="{y + bar_h - 3}" fill="#777">fails or skipped</text>')
            else:
                out.append(
                    f'<rect x="{left}" y="{y}" width="{max(ratio * scale, 1):.1f}" height="{bar_h - 2}" '
                    f'fill="{colour}"/>'
                )
                out.append(f'<text x="{left + ratio * scale + 4:.1f}" y="{y + bar_h - 3}">{ratio:.2f}×</text>')
            y += bar_h
        y += gap
    out.append(
        f'<line x1="{left + scale:.1f}" y1="24" x2="{left + scale:.1f}" y2="{y}" stroke="#000" stroke-dasharray="3,3"/>'
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("`", "")
