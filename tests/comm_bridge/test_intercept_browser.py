"""intercept_localhost in JupyterLab and Chromium: the page's own requests to a registered port.

A notebook enables the bridge and registers two upstreams (tests/intercept_upstream.py
on 127.0.0.1): ``COMM`` with a route whose probe answers 404 (no such route,
so its requests travel over the comm) and ``ROUTE`` with the
``itest-proxy`` route a server extension mounted with ``setup_proxy_handler``
(probe 204, so its requests are rewritten to the route). ``SCRIPT`` is
registered before the bridge exists, by the ``<script>`` output the kernel
displays then. ``FREE`` is never registered. The browser may not reach the registered ports directly: any
request to them is aborted and recorded, so a request that slipped past the
interception fails the test instead of quietly working.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser_fixtures import RUN_ALL, Lab, start_lab, write_notebook
from tests.conftest import ROOT, Proc, start

EXTENSION = """
from jupyter_loopback import setup_proxy_handler

def _jupyter_server_extension_points():
    return [{"module": "itest_ext"}]

def _load_jupyter_server_extension(serverapp):
    setup_proxy_handler(serverapp.web_app, "itest")
"""

CELL = """
import comm_bridge
# Before the bridge: the kernel displays the <script> that registers the port in the page.
comm_bridge.intercept_localhost({script})
comm_bridge.enable_comm_bridge()
comm_bridge.intercept_localhost({comm}, path_prefix="/nothere-proxy/{comm}")
comm_bridge.intercept_localhost({route}, path_prefix="/itest-proxy/{route}")
print("enabled", comm_bridge.is_comm_bridge_enabled())
"""


@dataclass
class Page:
    """The notebook's page, what it requested and what was refused."""

    page: Any
    comm: int
    route: int
    free: int
    script: int
    requests: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)

    def run(self, script: str, **args: Any) -> Any:
        ports = {"comm": self.comm, "route": self.route, "free": self.free, "script": self.script}
        return self.page.evaluate(script, {**ports, **args})

    def fresh(self) -> None:
        self.requests.clear()
        self.refused.clear()
        self.sockets.clear()

    def requested(self, fragment: str) -> list[str]:
        return [url for url in self.requests if fragment in url]


def _upstream() -> Proc:
    return start([str(Path(ROOT, ".venv/bin/python")), "-m", "tests.intercept_upstream"], r"listening on (\d+)")


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[int, int, int, int]]:
    procs = [_upstream() for _ in range(4)]
    try:
        yield tuple(int(p.match[1]) for p in procs)  # type: ignore[misc]
    finally:
        for proc in procs:
            proc.stop()


@pytest.fixture(scope="module")
def itest_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """JupyterLab with a server extension that mounts 0.3.x's ``itest-proxy`` route."""
    home = tmp_path_factory.mktemp("intercept-lab")
    site = home / "site"
    site.mkdir()
    (site / "itest_ext.py").write_text(EXTENSION)
    env = {"PYTHONPATH": f"{ROOT}{os.pathsep}{site}"}
    lab = start_lab(home, python=str(ROOT / ".venv/bin/python"), extensions={"itest_ext": True}, env=env)
    try:
        yield lab
    finally:
        lab.proc.stop()


@pytest.fixture(scope="module")
def page(itest_lab: Lab, browser: Any, upstreams: tuple[int, int, int, int]) -> Iterator[Page]:
    comm, route, free, script = upstreams
    write_notebook(itest_lab, "intercept.ipynb", [("code", CELL.format(comm=comm, route=route, script=script))])
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    opened = Page(page, comm, route, free, script)
    registered = re.compile(rf"^(?:http|ws)://(?:127\.0\.0\.1|localhost):(?:{comm}|{route}|{script})/")

    def gate(route_: Any) -> None:
        url = route_.request.url
        opened.requests.append(url)
        if registered.match(url):
            opened.refused.append(url)
            route_.abort()
        else:
            route_.continue_()

    context.route("**/*", gate)
    page.on("websocket", lambda ws: opened.sockets.append(ws.url))
    page.goto(f"{itest_lab.url}lab/tree/intercept.ipynb?reset&token={itest_lab.token}")
    page.wait_for_function("() => window.jupyterapp?.shell.currentWidget?.context?.path === 'intercept.ipynb'")
    errors = page.evaluate(RUN_ALL, 120_000)
    assert not errors, errors
    page.wait_for_function(
        """({comm, route, script}) => {
          const ic = window.__jupyter_loopback__?.interceptor;
          return ic && ic.probes.get(`/itest-proxy/${route}`)?.way && ic.probes.get(`/nothere-proxy/${comm}`)?.way
            && ic.ports.has(String(script));
        }""",
        arg={"comm": comm, "route": route, "script": script},
    )
    yield opened
    context.close()
    itest_lab.shutdown_kernels()


# Helpers every page script starts with.
HELPERS = """
const loaded = (el, ms = 20000) => new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error(`no load: ${el.outerHTML}`)), ms);
  el.addEventListener("load", () => { clearTimeout(timer); resolve([el.naturalWidth, el.naturalHeight]); });
});
const image = () => { const img = new Image(); document.body.append(img); return img; };
const upstream = (port, path) => `http://127.0.0.1:${port}${path}`;
"""


def script(body: str) -> str:
    return "async ({comm, route, free, script, ...args}) => {" + HELPERS + body + "}"


def per_port(page: Page, prelude: str, body: str, after: str = "") -> Any:
    """Run ``body`` in a fresh page once per way (``port``: the comm's, then the route's).

    ``body`` puts what it found in ``results[port]``; ``after`` runs once, after both; ``results`` is returned.
    """
    page.fresh()
    loop = f"const results = {{}};\nfor (const port of [comm, route]) {{{body}}}\n{after}\nreturn results;"
    return page.run(script(prelude + loop))


def test_probe_picks_the_route_when_it_answers_and_the_comm_when_it_does_not(page: Page, itest_lab: Lab) -> None:
    ways = page.run(
        script(
            """const ic = window.__jupyter_loopback__.interceptor;
            return [ic.probes.get(`/itest-proxy/${route}`).way, ic.probes.get(`/nothere-proxy/${comm}`).way];"""
        )
    )
    assert ways == ["route", "comm"]
    # What the page asked: the alias's probe answers 204, an absent route 404.
    assert httpx.get(f"{itest_lab.url}itest-proxy/{page.route}/__probe__").status_code == 204
    assert httpx.get(f"{itest_lab.url}nothere-proxy/{page.comm}/__probe__").status_code == 404


def test_img_src_property(page: Page) -> None:
    page.fresh()
    out = page.run(
        script(
            """const a = image(), b = image();
            a.src = upstream(comm, "/png?w=5&h=4");
            b.src = upstream(route, "/png?w=6&h=4");
            const [ca, cb] = await Promise.all([loaded(a), loaded(b)]);
            return {comm: ca, route: cb, src: [a.src.slice(0, 5), b.src]};"""
        )
    )
    assert out["comm"] == [5, 4] and out["route"] == [6, 4]
    assert out["src"][0] == "blob:"
    assert out["src"][1].endswith(f"/itest-proxy/{page.route}/png?w=6&h=4")
    assert page.requested(f"/itest-proxy/{page.route}/png?w=6&h=4")
    assert not page.refused and not page.requested(f"nothere-proxy/{page.comm}/png")


def test_img_set_attribute(page: Page) -> None:
    page.fresh()
    out = page.run(
        script(
            """const a = image(), b = image();
            a.setAttribute("src", upstream(comm, "/png?w=7&h=2"));
            b.setAttribute("SRC", upstream(route, "/png?w=8&h=2"));
            return Promise.all([loaded(a), loaded(b)]);"""
        )
    )
    assert out == [[7, 2], [8, 2]]
    assert page.requested(f"/itest-proxy/{page.route}/png?w=8&h=2") and not page.refused


def test_img_parsed_from_html(page: Page) -> None:
    page.fresh()
    out = page.run(
        script(
            """const div = document.createElement("div");
            div.innerHTML = `<img id="ia" src="${upstream(comm, "/png?w=9&h=3")}">`
              + `<img id="ib" src="${upstream(route, "/png?w=10&h=3")}">`;
            const a = div.querySelector("#ia"), b = div.querySelector("#ib");
            const done = [loaded(a), loaded(b)];
            document.body.append(div);
            const later = document.createElement("div");
            document.body.append(later);
            later.insertAdjacentHTML("beforeend", `<img id="ic" src="${upstream(comm, "/png?w=11&h=3")}">`);
            done.push(loaded(later.querySelector("#ic")));
            return Promise.all(done);"""
        )
    )
    assert out == [[9, 3], [10, 3], [11, 3]]
    assert page.requested(f"/itest-proxy/{page.route}/png?w=10&h=3") and not page.refused


def test_srcset(page: Page) -> None:
    page.fresh()
    out = page.run(
        script(
            """const a = image(), b = image(), pic = document.createElement("picture");
            a.srcset = `${upstream(comm, "/png?w=12&h=2")} 1x, ${upstream(comm, "/png?w=24&h=4")} 2x`;
            b.setAttribute("srcset", `${upstream(route, "/png?w=13&h=2")} 1x`);
            pic.innerHTML = `<source srcset="${upstream(comm, "/png?w=14&h=2")}"><img>`;
            document.body.append(pic);
            const sizes = await Promise.all([loaded(a), loaded(b), loaded(pic.querySelector("img"))]);
            return {sizes, srcset: [a.srcset, b.srcset]};"""
        )
    )
    assert out["sizes"] == [[12, 2], [13, 2], [14, 2]]
    assert re.fullmatch(r"blob:\S+ 1x, blob:\S+ 2x", out["srcset"][0])
    assert out["srcset"][1].endswith(f"/itest-proxy/{page.route}/png?w=13&h=2 1x")
    assert not page.refused


def test_fetch_string_url_and_request(page: Page) -> None:
    out = per_port(
        page,
        "const json = async (r) => [r.status, r.url, await r.json()];",
        """
              const init = {method: "POST", body: "hello", headers: {"x-mine": "a"}};
              const post = new Request(upstream(port, "/echo?q=1"), init);
              results[port] = [
                await json(await fetch(upstream(port, "/json"))),
                await json(await fetch(new URL(upstream(port, "/json")))),
                await json(await fetch(post)),
                await json(await fetch(`http://localhost:${port}/json`)),
              ];""",
        "results.sameOrigin = await json(await fetch(`/nothere-proxy/${comm}/json`));",
    )
    for port in (page.comm, page.route):
        plain, url, post, localhost = out[str(port)]
        assert plain == [200, f"http://127.0.0.1:{port}/json", {"hello": "world"}] or port == page.route
        assert plain[2] == url[2] == localhost[2] == {"hello": "world"}
        status, _, echo = post
        assert status == 200 and echo["method"] == "POST" and echo["size"] == 5 and echo["query"] == "q=1"
        assert ["x-mine", "a"] in echo["headers"]
    assert out["sameOrigin"][0] == 200 and out["sameOrigin"][2] == {"hello": "world"}
    assert page.requested(f"/itest-proxy/{page.route}/json") and page.requested(f"/itest-proxy/{page.route}/echo")
    assert not page.refused and not page.requested(f"/nothere-proxy/{page.comm}/json")


XHR = """
const xhr = (port, path, type, setup = () => {}, method = "GET", body = null) => new Promise((resolve) => {
  const x = new XMLHttpRequest();
  const events = [];
  for (const e of ["readystatechange", "loadstart", "progress", "load", "error", "abort", "timeout", "loadend"])
    x.addEventListener(e, () => events.push(e === "readystatechange" ? `rs${x.readyState}` : e));
  x.open(method, upstream(port, path));
  x.responseType = type;
  setup(x);
  x.onloadend = () => resolve({x, events: events.filter((e, i) => e !== events[i - 1])});
  x.send(body);
});
"""


def test_xhr_every_response_type(page: Page) -> None:
    out = per_port(
        page,
        XHR,
        """
              const ab = await xhr(port, "/bytes?n=3000", "arraybuffer");
              const bytes = new Uint8Array(ab.x.response);
              const text = await xhr(port, "/latin1", "text");
              const plain = await xhr(port, "/json", "");
              const json = await xhr(port, "/json", "json");
              const blob = await xhr(port, "/png?w=2&h=2", "blob");
              const doc = await xhr(port, "/xml", "document");
              const xml = await xhr(port, "/xml", "");
              results[port] = {
                arraybuffer: [ab.x.response instanceof ArrayBuffer, bytes.length, bytes[0], bytes[257]],
                events: ab.events,
                text: [text.x.response, text.x.responseText],
                plain: [plain.x.responseText, plain.x.response],
                json: json.x.response,
                blob: [blob.x.response instanceof Blob, blob.x.response.type, blob.x.response.size > 50],
                document: doc.x.response.querySelector("item").textContent,
                responseXML: xml.x.responseXML.documentElement.nodeName,
              };""",
    )
    for port in (page.comm, page.route):
        got = out[str(port)]
        assert got["arraybuffer"] == [True, 3000, 0, 1]
        assert got["events"] == ["rs1", "loadstart", "rs2", "rs3", "progress", "rs4", "load", "loadend"]
        assert got["text"] == ["café", "café"]
        assert got["plain"] == ['{"hello": "world"}'] * 2
        assert got["json"] == {"hello": "world"}
        assert got["blob"] == [True, "image/png", True]
        assert got["document"] == "one" and got["responseXML"] == "root"
    assert page.requested(f"/itest-proxy/{page.route}/bytes") and not page.refused


def test_xhr_headers_status_and_handlers(page: Page) -> None:
    out = per_port(
        page,
        XHR,
        """
              let onload = 0, onreadystatechange = 0;
              const tea = await xhr(port, "/teapot", "", (x) => {
                x.onload = () => onload++;
                x.onreadystatechange = () => onreadystatechange++;
              });
              const sent = await xhr(port, "/headers", "json", (x) => x.setRequestHeader("X-Mine", "yes"));
              const posted = await xhr(port, "/echo", "json", () => {}, "POST", new Uint8Array([1, 2, 3]));
              results[port] = {
                status: [tea.x.status, tea.x.statusText, tea.x.responseText],
                header: [tea.x.getResponseHeader("X-Teapot"), tea.x.getResponseHeader("nope")],
                all: tea.x.getAllResponseHeaders(),
                url: tea.x.responseURL,
                handlers: [onload, onreadystatechange > 0],
                sent: sent.x.response,
                posted: [posted.x.status, posted.x.response.method, posted.x.response.size],
              };""",
        # Aborted, timed out and broken exchanges over the comm.
        """const aborted = await xhr(comm, "/slow?delay=5", "", (x) => setTimeout(() => x.abort(), 50));
        const late = await xhr(comm, "/slow?delay=5", "", (x) => { x.timeout = 100; });
        const broken = await xhr(comm, "/die?after=1000", "arraybuffer");
        results.failures = [aborted.events, aborted.x.readyState, late.events, broken.events, broken.x.status];""",
    )
    for port in (page.comm, page.route):
        got = out[str(port)]
        assert got["status"] == [418, "I'm a Teapot", "short and stout"]
        assert got["header"] == ["yes", None]
        assert "x-teapot: yes\r\n" in got["all"] and "content-type: text/plain\r\n" in got["all"]
        assert got["handlers"] == [1, True]
        assert ["x-mine", "yes"] in got["sent"]
        assert got["posted"] == [200, "POST", 3]
    assert out[str(page.comm)]["url"] == f"http://127.0.0.1:{page.comm}/teapot"
    assert out[str(page.route)]["url"].endswith(f"/itest-proxy/{page.route}/teapot")
    aborted, state, late, broken, status = out["failures"]
    assert aborted == ["rs1", "loadstart", "rs4", "abort", "loadend"] and state == 0
    assert late == ["rs1", "loadstart", "rs4", "timeout", "loadend"]
    assert broken[-3:] == ["rs4", "error", "loadend"] and status == 0
    assert not page.refused


def test_websocket(page: Page) -> None:
    page.fresh()
    out = page.run(
        script(
            """const session = (port) => new Promise((resolve, reject) => {
              const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?choose=b`, ["a", "b"]);
              ws.binaryType = "arraybuffer";
              const got = [];
              ws.onerror = () => reject(new Error("websocket error"));
              ws.onopen = () => { ws.send("hello"); ws.send(new Uint8Array([1, 2, 3])); };
              ws.onmessage = (e) => {
                got.push(typeof e.data === "string" ? e.data : [...new Uint8Array(e.data)]);
                if (got.length === 2) ws.close(4000, "done");
              };
              ws.onclose = (e) =>
                resolve({got, code: e.code, protocol: ws.protocol, url: ws.url, isWs: ws instanceof WebSocket});
            });
            return {comm: await session(comm), route: await session(route)};"""
        )
    )
    for got in (out["comm"], out["route"]):
        assert got["got"] == ["hello", [1, 2, 3]] and got["code"] == 4000
        assert got["protocol"] == "b" and got["isWs"] is True
    assert out["comm"]["url"] == f"ws://127.0.0.1:{page.comm}/ws?choose=b"
    assert out["route"]["url"].endswith(f"/itest-proxy/{page.route}/ws?choose=b")
    assert any(f"/itest-proxy/{page.route}/ws" in url for url in page.sockets)
    assert not any(f":{page.comm}/" in url or f":{page.route}/" in url for url in page.sockets)
    assert not page.refused


def test_event_source(page: Page) -> None:
    page.fresh()
    out = page.run(
        script(
            """const listen = (port) => new Promise((resolve, reject) => {
              const es = new EventSource(upstream(port, "/sse-id"));
              const got = [];
              const timer = setTimeout(() => reject(new Error(`events: ${JSON.stringify(got.slice(0, 6))}`)), 20000);
              es.addEventListener("greet", (e) => {
                got.push(["greet", e.data, e.lastEventId]);
                if (got.length < 3) return;
                clearTimeout(timer);
                es.close();
                resolve({got, state: es.readyState, isEs: es instanceof EventSource});
              });
              es.onmessage = (e) => got.push(["message", e.data, e.lastEventId]);
            });
            const stream = (port) => new Promise((resolve) => {
              const es = new EventSource(upstream(port, "/sse?n=3&interval=0.05"));
              const got = [];
              es.onmessage = (e) => { got.push(e.data); if (got.length === 3) { es.close(); resolve(got); } };
            });
            const streamed = [await stream(comm), await stream(route)];
            return {comm: await listen(comm), route: await listen(route), streamed};"""
        )
    )
    # The stream ends, the source reconnects after `retry` with Last-Event-ID: 7.
    expected = [["greet", "hello\nnone", "7"], ["message", "plain", "7"], ["greet", "hello\n7", "7"]]
    for got in (out["comm"], out["route"]):
        assert got["got"] == expected and got["state"] == 2 and got["isEs"] is True
    assert out["streamed"] == [["0", "1", "2"]] * 2
    assert page.requested(f"/itest-proxy/{page.route}/sse-id") and not page.refused


def test_unregistered_port_is_left_alone(page: Page) -> None:
    page.fresh()
    out = page.run(
        script(
            """const img = image();
            img.src = upstream(free, "/png?w=4&h=4");
            const size = await loaded(img);
            const opaque = await fetch(upstream(free, "/json"), {mode: "no-cors"});
            const ws = new WebSocket(`ws://127.0.0.1:${free}/ws`);
            await new Promise((resolve) => { ws.onopen = resolve; ws.onerror = resolve; });
            ws.close();
            return {size, src: img.src, type: opaque.type, ws: ws.url};"""
        )
    )
    assert out == {
        "size": [4, 4],
        "src": f"http://127.0.0.1:{page.free}/png?w=4&h=4",
        "type": "opaque",
        "ws": f"ws://127.0.0.1:{page.free}/ws",
    }
    assert page.requested(f"http://127.0.0.1:{page.free}/png?w=4&h=4")
    assert page.requested(f"http://127.0.0.1:{page.free}/json")
    assert f"ws://127.0.0.1:{page.free}/ws" in page.sockets


def test_object_urls_are_revoked(page: Page) -> None:
    page.fresh()
    out = page.run(
        script(
            """const created = [], revoked = new Set();
            const create = URL.createObjectURL, revoke = URL.revokeObjectURL;
            URL.createObjectURL = (b) => { const u = create(b); created.push(u); return u; };
            URL.revokeObjectURL = (u) => { revoked.add(u); revoke(u); };
            try {
              const a = image(), b = image(), c = image();
              a.src = upstream(comm, "/png?w=3&h=3");
              await loaded(a);
              b.srcset = `${upstream(comm, "/png?w=3&h=3")} 1x, ${upstream(comm, "/png?w=6&h=6")} 2x`;
              await loaded(b);
              // Replaced before it loaded, and replaced after.
              c.src = upstream(comm, "/png?w=40&h=40");
              c.src = upstream(comm, "/png?w=2&h=2");
              const first = await loaded(c);
              const shown = c.src;
              c.src = upstream(comm, "/png?w=1&h=1");
              await loaded(c);
              // Fails to decode: revoked on error.
              const d = image();
              const failed = new Promise((resolve) => d.addEventListener("error", () => resolve(d.currentSrc)));
              d.src = upstream(comm, "/json");
              const broken = await failed;
              const pic = document.createElement("picture");
              pic.innerHTML = `<source srcset="${upstream(comm, "/png?w=5&h=5")}"><img>`;
              document.body.append(pic);
              await loaded(pic.querySelector("img"));
              const settled = Date.now() + 5000;
              while (revoked.size < created.length && Date.now() < settled) await new Promise((r) => setTimeout(r, 20));
              const stillThere = await fetch(shown).then(() => true, () => false);
              const unrevoked = created.filter((u) => !revoked.has(u)).length;
              return {created: created.length, unrevoked, first, stillThere, broken: revoked.has(broken)};
            } finally {
              URL.createObjectURL = create;
              URL.revokeObjectURL = revoke;
            }"""
        )
    )
    assert out["created"] >= 7 and out["unrevoked"] == 0 and out["broken"] is True
    assert out["first"] == [2, 2] and out["stillThere"] is False


def test_same_origin_iframe_output(page: Page) -> None:
    """An HTML output that draws in a srcdoc iframe (folium's way): its own window is patched before it runs."""
    page.fresh()
    out = page.run(
        script(
            """const inner = `<img id="static" src="${upstream(comm, "/png?w=16&h=2")}"><img id="dynamic">`
              + `<script>document.getElementById("dynamic").src = "${upstream(route, "/png?w=17&h=2")}";`
              + `const x = new Image(); x.id = "comm"; document.body.append(x);`
              + `x.src = "${upstream(comm, "/png?w=18&h=2")}";<\\/script>`;
            const host = document.createElement("div");
            document.body.append(host);
            host.innerHTML = `<iframe srcdoc="${inner.replaceAll('"', "&quot;")}"></iframe>`;
            const frame = host.querySelector("iframe");
            const size = (id) => frame.contentDocument?.getElementById(id)?.naturalWidth ?? 0;
            const until = Date.now() + 20000;
            while (Date.now() < until && !(size("static") && size("dynamic") && size("comm")))
              await new Promise((r) => setTimeout(r, 50));
            const src = (id) => frame.contentDocument.getElementById(id).src;
            const sizes = [size("static"), size("dynamic"), size("comm")];
            return {sizes, src: [src("dynamic"), src("comm").slice(0, 5)]};"""
        )
    )
    assert out["sizes"] == [16, 17, 18]
    assert out["src"] == [f"{page.page.url.split('/lab')[0]}/itest-proxy/{page.route}/png?w=17&h=2", "blob:"]
    # The dynamic images never asked the ports; the static one may have, before the new document was watched.
    assert [url for url in page.refused if "w=16" not in url] == []


def test_the_displayed_script_registers_a_port(page: Page) -> None:
    """The fallback output of a kernel with no bridge: its <script>, run by JupyterLab, registers the port."""
    page.fresh()
    out = page.run(
        script(
            """const img = image();
            img.src = upstream(script, "/png?w=19&h=2");
            const size = await loaded(img);
            const synced = window.__jupyter_loopback__.registry.models.map((m) => m.get("intercepted_ports"));
            return {size, src: img.src.slice(0, 5), synced};"""
        )
    )
    assert out["size"] == [19, 2] and out["src"] == "blob:"
    assert all(page.script not in ports for ports in out["synced"])  # not from the widget's state
    assert not page.refused
