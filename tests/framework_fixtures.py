"""Fixtures and page scripts for the framework tests (tests/frameworks/).

The framework servers run from ``.venv-frameworks`` (``make
.venv-frameworks/.installed``, a step of ``make test``): marimo, Solara,
Shiny and shinywidgets from PyPI beside this checkout. Each app
(``tests/apps/``) starts its own upstream in the framework's process and
shows an element of class ``loopback-info`` with its port, its bridge and
how it is reached.

The same cases run through the bridge (``window.__jupyter_loopback__``) and,
where the app mounts the sidecar, through the route with the browser's own
``fetch``, ``WebSocket`` and ``EventSource``: a JSON response, a PNG
(byte-exact), a 20 MiB body, a WebSocket echo and its close code, and
server-sent events that arrive while the stream is still open; and a 3 MiB
upload, whose pieces marimo posts separately.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from . import upstream
from .apps.common import PNG
from .browser_fixtures import ARTIFACTS
from .conftest import ROOT, Proc, free_port, start

VENV = ROOT / ".venv-frameworks"
BIG = 20 << 20
BIG_SHA = hashlib.sha256((upstream.PATTERN * 20)[:BIG]).hexdigest()
PNG_SHA = hashlib.sha256(PNG).hexdigest()
SSE_EVENTS, SSE_INTERVAL = 3, 0.2
UP = 3 << 20  # an upload of twelve page-to-kernel pieces: marimo may deliver them out of order
UP_SHA = hashlib.sha256(bytes(i % 251 for i in range(UP))).hexdigest()

# Shared by both ways: `get(path)` returns a Response, `socket(path)` a WebSocket-like object.
CASES_JS = (
    """
async ({get, socket}) => {
  const sha = async (buf) => [...new Uint8Array(await crypto.subtle.digest("SHA-256", buf))]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
  const out = {};
  const json = await get("/json");
  out.json = {status: json.status, type: json.headers.get("content-type"), body: await json.json()};
  const png = await get("/png");
  const pngBytes = await png.arrayBuffer();
  out.png = {status: png.status, type: png.headers.get("content-type"), size: pngBytes.byteLength,
             sha: await sha(pngBytes)};
  const t0 = performance.now();
  const big = await get("/bytes?n=__BIG__");
  const bigBytes = await big.arrayBuffer();
  out.big = {status: big.status, size: bigBytes.byteLength, sha: await sha(bigBytes), ms: performance.now() - t0};
  const body = new Uint8Array(__UP__).map((_, i) => i % 251);
  const up = await get("/upload", {method: "POST", body, headers: {"content-type": "application/octet-stream"}});
  out.upload = {status: up.status, body: await up.json()};
  out.ws = await new Promise((resolve, reject) => {
    const ws = socket("/ws");
    const got = [];
    const timer = setTimeout(() => reject(new Error("websocket timed out: " + JSON.stringify(got))), 20000);
    ws.onopen = () => ws.send("hello");
    ws.onmessage = (e) => { got.push(e.data); if (e.data === "hello") ws.send("close:4321:bye"); };
    ws.onclose = (e) => { clearTimeout(timer); resolve({messages: got, code: e.code, reason: e.reason}); };
    ws.onerror = () => got.push("error");
  });
  const sse = await get("/sse?n=__N__&interval=__INTERVAL__");
  const reader = sse.body.getReader();
  const decoder = new TextDecoder();
  let text = "", first = null;
  for (let i = 0; i < 100; i++) {
    const {done, value} = await reader.read();
    if (done) break;
    if (first === null && value.byteLength) first = performance.now();
    text += decoder.decode(value, {stream: true});
  }
  out.sse = {type: sse.headers.get("content-type"), events: text.split("\\n\\n").filter(Boolean),
             leadMs: performance.now() - first};
  return out;
}
""".replace("__BIG__", str(BIG))
    .replace("__UP__", str(UP))
    .replace("__N__", str(SSE_EVENTS))
    .replace("__INTERVAL__", str(SSE_INTERVAL))
)

BRIDGE_JS = (
    "async (port) => { const L = window.__jupyter_loopback__;"
    " if (!(await L.ready(30000))) throw new Error('no bridge');"
    f" return await ({CASES_JS})({{get: (p, i) => L.fetch(port, p, i), socket: (p) => L.openWebSocket(port, p)}}); }}"
)
ROUTE_JS = (
    "async (prefix) => { const ws = new URL(prefix, location.href); ws.protocol = ws.protocol.replace('http', 'ws');"
    f" return await ({CASES_JS})({{get: (p, i) => fetch(prefix + p, i),"
    " socket: (p) => new WebSocket(ws.href.replace(/\\/$/, '') + p)}); }"
)
# Fire `n` requests at once and record every reply this page's bridge models receive.
BURST_JS = """
async ([tab, n]) => {
  const L = window.__jupyter_loopback__;
  await L.ready(30000);
  const seen = [];
  for (const m of L.registry.models) m.on("msg:custom", (msg) => { if (msg.op === "reply") seen.push(msg.data); });
  const replies = await Promise.all(
    Array.from({length: n}, (_, i) => L.request("demo", i % 2 ? "slow" : "echo", {tab, i})));
  return {replies: replies.map((r) => ({status: r.status, data: r.data})), seen};
}
"""


# What the screenshot shows: the PNG as the page received it through the bridge, and the other results.
SHOW_JS = """
async ([port, summary]) => {
  const png = await (await window.__jupyter_loopback__.fetch(port, "/png")).blob();
  const box = document.createElement("div");
  box.style.cssText = "position:fixed;right:12px;bottom:12px;z-index:99999;background:#fff;border:1px solid #888;"
    + "padding:8px;font:12px monospace;white-space:pre";
  const img = document.createElement("img");
  img.src = URL.createObjectURL(png);
  img.width = 128;
  box.append(img, document.createTextNode("\\n" + summary));
  document.body.append(box);
  await img.decode();
}
"""


def _summary(out: dict[str, Any]) -> str:
    return "\n".join(
        [
            "through the comm bridge:",
            f"JSON {out['json']['body']}",
            f"PNG {out['png']['size']} bytes, sha256 {out['png']['sha'][:12]}…",
            f"{out['big']['size'] >> 20} MiB in {out['big']['ms']:.0f} ms",
            f"upload {out['upload']['body']['size'] >> 20} MiB",
            f"WebSocket {out['ws']['messages']} closed {out['ws']['code']} {out['ws']['reason']!r}",
            f"SSE {out['sse']['events']}",
        ]
    )


def check_cases(out: dict[str, Any]) -> None:
    """Every case of :data:`CASES_JS` arrived whole."""
    assert out["json"] == {"status": 200, "type": "application/json", "body": {"hello": "world"}}
    assert out["png"] == {"status": 200, "type": "image/png", "size": len(PNG), "sha": PNG_SHA}
    assert (out["big"]["status"], out["big"]["size"], out["big"]["sha"]) == (200, BIG, BIG_SHA)
    assert out["upload"] == {"status": 200, "body": {"size": UP, "sha256": UP_SHA}}
    assert out["ws"] == {"messages": ["hello"], "code": 4321, "reason": "bye"}
    assert out["sse"]["type"].startswith("text/event-stream")
    assert out["sse"]["events"] == [f"data: {i}" for i in range(SSE_EVENTS)]
    # Pushed as produced: the first event came while the server still had (n-1) intervals to go.
    assert out["sse"]["leadMs"] >= (SSE_EVENTS - 1) * SSE_INTERVAL * 1000 * 0.75, out["sse"]


def check_isolated(out: dict[str, Any], tab: str, n: int) -> None:
    """Each reply answered this tab's own request, and no reply of another tab reached this page."""
    assert [r["status"] for r in out["replies"]] == ["ok"] * n
    assert [r["data"]["echo"] for r in out["replies"]] == [{"tab": tab, "i": i} for i in range(n)]
    assert len(out["seen"]) == n
    assert {s["echo"]["tab"] for s in out["seen"]} == {tab}


@dataclass
class Server:
    """A framework server: ``url`` ends with ``/``."""

    url: str
    proc: Proc


def framework_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{VENV} is missing: run `make .venv-frameworks/.installed`.")
    return python


@contextmanager
def start_framework(args: list[str], ready: str, *, env: dict[str, str] | None = None) -> Iterator[Server]:
    """Run ``.venv-frameworks/bin/<args>`` on a free port ({port} in args) until the ``with`` block ends."""
    port = free_port()
    cmd = [str(VENV / "bin" / args[0]), *(a.replace("{port}", str(port)) for a in args[1:])]
    framework_python()
    proc = start(cmd, ready, env=env, timeout=90)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(300):  # bounded: some servers print their URL before they listen
        try:
            httpx.get(url, timeout=5, trust_env=False)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        proc.stop()
        pytest.fail(f"{args[0]} did not answer at {url}:\n" + "".join(proc.output))
    try:
        yield Server(f"http://127.0.0.1:{port}/", proc)
    finally:
        proc.stop()


def marimo_config(home: Path) -> dict[str, str]:
    """marimo's user configuration in ``home``: ``marimo edit`` runs the cells on open."""
    (home / "marimo").mkdir()
    (home / "marimo" / "marimo.toml").write_text("[runtime]\nauto_instantiate = true\n")
    return {"XDG_CONFIG_HOME": str(home)}


@dataclass(frozen=True)
class App:
    """How one framework's app of tests/apps/ is served, and how its page reaches the upstream."""

    cli: list[str]
    ready: str
    how: str  # what reach() says in the app's page
    mounted: list[str] | None = None  # a second server for the route, where the CLI server cannot mount


MARIMO_APP = "tests/apps/marimo_app.py"
MARIMO_CLI = ["--headless", "--no-token", "--host", "127.0.0.1", "-p", "{port}"]
HOST_PORT = ["--host", "127.0.0.1", "--port", "{port}"]
APPS = {
    # marimo's CLI servers offer no hook to add a route: the mount is proven with
    # marimo's ASGI API (tests/apps/marimo_server.py) under uvicorn.
    "marimo": App(
        ["marimo", "run", MARIMO_APP, *MARIMO_CLI], r"URL: http", "bridge",
        ["uvicorn", "tests.apps.marimo_server:server", *HOST_PORT],
    ),
    # These apps also mount the sidecar, and reach() prefers the mount to the bridge.
    "shiny": App(["shiny", "run", "tests/apps/shiny_app.py", *HOST_PORT], r"Uvicorn running on", "mount"),
    "solara": App(
        ["solara", "run", "tests/apps/solara_app.py", *HOST_PORT, "--production"],
        r"Solara server is starting at", "mount",
    ),
}  # fmt: skip


@dataclass
class Framework:
    """One of :data:`APPS`, running: ``page`` serves the app's page and bridge, ``route`` the mounted sidecar."""

    name: str
    how: str
    page: Server
    route: Server


@pytest.fixture(scope="module", params=sorted(APPS))
def framework(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Framework]:
    """Each framework's app in turn (a test narrows them with ``parametrize("framework", [...], indirect=True)``)."""
    name: str = request.param
    app = APPS[name]
    env = marimo_config(tmp_path_factory.mktemp("marimo-config")) if name == "marimo" else None
    with ExitStack() as stack:
        page = stack.enter_context(start_framework(app.cli, app.ready, env=env))
        route = stack.enter_context(start_framework(app.mounted, r"Uvicorn running on")) if app.mounted else page
        yield Framework(name, app.how, page, route)


def open_page(browser: Any, url: str) -> tuple[Any, Any, dict[str, Any]]:
    """A new context and page at ``url``, once the app shows its ``loopback-info`` and the page's bridge is ready.

    Returns the info too. The info can show before the bridge widget's view
    has run, so the page's own ``window.__jupyter_loopback__`` is waited for.
    """
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    context.set_default_timeout(60_000)
    page = context.new_page()
    page.goto(url)
    text = page.locator(".loopback-info", has_text='"port"').first.text_content(timeout=90_000)
    page.wait_for_function("() => window.__jupyter_loopback__ !== undefined", timeout=60_000)
    assert page.evaluate("async () => await window.__jupyter_loopback__.ready(30000)"), "the page's bridge never came"
    return context, page, json.loads(text or "{}")


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def bridge_cases(browser: Any, url: str, name: str) -> dict[str, Any]:
    """Every case through the page's bridge; a screenshot ``<name>.png`` in the test artifacts."""
    context, page, info = open_page(browser, url)
    try:
        out = page.evaluate(BRIDGE_JS, info["port"])
        check_cases(out)
        page.evaluate(SHOW_JS, [info["port"], _summary(out)])
        screenshot(page, name)
        return info
    finally:
        context.close()


def route_cases(browser: Any, url: str) -> dict[str, Any]:
    """Every case through the mounted route that ``browser_url`` returned in the app's process."""
    context, page, info = open_page(browser, url)
    try:
        assert info["how"] == "mount", info
        assert info["url"] == info["reach"] == f"/loopback/app/{info['port']}/", info
        check_cases(page.evaluate(ROUTE_JS, info["url"].rstrip("/")))
        return info
    finally:
        context.close()


def two_tabs(browser: Any, url: str, n: int = 24) -> None:
    """Two tabs on one server at once: two bridges, and each tab gets only its own replies."""
    opened = [open_page(browser, url) for _ in range(2)]
    try:
        (_, a, info_a), (_, b, info_b) = opened
        assert info_a["bridge"] != info_b["bridge"], "both tabs share one bridge"
        # Start both bursts before waiting on either, so their requests are in flight together.
        a.evaluate(f"() => {{ window.__burst = ({BURST_JS})(['a', {n}]); }}")
        b.evaluate(f"() => {{ window.__burst = ({BURST_JS})(['b', {n}]); }}")
        check_isolated(a.evaluate("() => window.__burst"), "a", n)
        check_isolated(b.evaluate("() => window.__burst"), "b", n)
    finally:
        for context, _, _ in opened:
            context.close()


def worker_thread_replies(browser: Any, url: str) -> None:
    """A reply sent from a worker thread, and one from the bridge's own loop thread, reach the page."""
    context, page, _ = open_page(browser, url)
    try:
        script = "async (kind) => await window.__jupyter_loopback__.request('demo', kind, {k: kind})"
        slow = page.evaluate(script, "slow")
        assert slow["status"] == "ok" and slow["data"]["echo"] == {"k": "slow"}, slow
        assert slow["data"]["thread"] == "comm-bridge-worker", slow
        hurried = page.evaluate(script, "async")
        assert hurried["status"] == "ok" and hurried["data"]["thread"] == "comm-bridge-loop", hurried
    finally:
        context.close()


def session_end_closes_the_bridge(browser: Any, url: str) -> None:
    """A tab that closes ends its session, and the session's end closes its bridge and stops its threads."""
    count = "async () => (await window.__jupyter_loopback__.request('demo', 'bridges')).data"
    context, page, _ = open_page(browser, url)
    try:
        before = page.evaluate(count)
        other, other_page, _ = open_page(browser, url)
        with_other = page.evaluate(count)
        assert with_other == {"bridges": before["bridges"] + 1, "loops": before["loops"] + 1}
        other_page.close(run_before_unload=True)
        other.close()
        for _ in range(200):  # bounded: the framework ends the session once the page's socket closes
            if page.evaluate(count) == before:
                break
            page.wait_for_timeout(100)
        assert page.evaluate(count) == before
    finally:
        context.close()
