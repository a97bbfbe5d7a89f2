"""The comm bridge against a real kernel, the test playing the frontend over the widget comm."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import signal
import time

import pytest

from tests.comm_fixtures import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ENABLE,
    LAB_CELL,
    ROOT,
    RUN_CELLS,
    Bridge,
    BridgeError,
    Kernel,
    KernelError,
    Lab,
)
from tests.upstream import PATTERN

pytestmark = pytest.mark.asyncio(loop_scope="module")

MB = 1_000_000


def pattern(n: int) -> bytes:
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


async def test_request_reply_with_buffers(bridge: Bridge) -> None:
    status, data, buffers = await bridge.request("test", "echo", {"a": [1, 2]}, [b"abc", b"", bytes(70_000)])
    assert status == "ok"
    assert data == {"echo": {"a": [1, 2]}}
    assert buffers == [b"cba", b"", bytes(70_000)]


async def test_large_request_and_reply_travel_in_pieces(bridge: Bridge) -> None:
    big, small = pattern(5 * MB + 3), b"xyz"
    bridge.largest = 0
    status, data, buffers = await bridge.request("test", "echo", "big", [big, small, b""])
    assert (status, data) == ("ok", {"echo": "big"})
    assert [bytes(b) for b in buffers] == [big[::-1], b"zyx", b""]
    assert 0 < bridge.largest <= 1 << 20


async def test_unknown_handler_is_an_error(bridge: Bridge) -> None:
    status, data, buffers = await bridge.request("nope", "missing")
    assert status == "error"
    assert "'nope'/'missing'" in data["message"]
    assert buffers == []


async def test_raising_handler_timeout_and_bad_reply(bridge_kernel: Kernel, bridge: Bridge) -> None:
    await bridge_kernel.execute(
        """
import time
@comm_bridge.on_request("test", "boom")
def _boom(data, buffers):
    raise KeyError("lost")

@comm_bridge.on_request("test", "sleepy", timeout=0.3)
def _sleepy(data, buffers):
    time.sleep(2)

@comm_bridge.on_request("test", "bad")
def _bad(data, buffers):
    return object()
"""
    )
    status, data, _ = await bridge.request("test", "boom")
    assert (status, data["message"]) == ("error", "The handler for 'test'/'boom' raised KeyError: 'lost'")
    started = time.perf_counter()
    status, data, _ = await bridge.request("test", "sleepy")
    assert status == "error" and "did not answer within 0.3 s" in data["message"]
    assert time.perf_counter() - started < 1.5
    status, data, _ = await bridge.request("test", "bad")
    assert status == "error" and "not JSON" in data["message"]
    # The kernel keeps working, and so does the bridge.
    assert (await bridge_kernel.execute("print(6 * 7)")).strip() == "42"
    assert (await bridge.request("test", "echo", 1))[0] == "ok"


async def test_async_handler_and_off_request(bridge_kernel: Kernel, bridge: Bridge) -> None:
    await bridge_kernel.execute(
        """
import asyncio
@comm_bridge.on_request("test", "async")
async def _async(data, buffers):
    await asyncio.sleep(0.01)
    return {"n": data["n"] + 1}, [b"x" * data["n"]]

@comm_bridge.on_request("test", "async-timeout", timeout=0.2)
async def _forever(data, buffers):
    await asyncio.sleep(30)
"""
    )
    assert await bridge.request("test", "async", {"n": 3}) == ("ok", {"n": 4}, [b"xxx"])
    status, data, _ = await bridge.request("test", "async-timeout")
    assert status == "error" and "within 0.2 s" in data["message"]
    assert (await bridge_kernel.execute("print(comm_bridge.off_request('test', 'async'))")).strip() == "True"
    assert (await bridge.request("test", "async", {"n": 3}))[0] == "error"


async def test_inline_handler(bridge_kernel: Kernel, bridge: Bridge) -> None:
    await bridge_kernel.execute(
        """
import threading
@comm_bridge.on_request("test", "where", inline=True)
def _where(data, buffers):
    return threading.current_thread() is threading.main_thread()

@comm_bridge.on_request("test", "where-default")
def _where_default(data, buffers):
    return threading.current_thread() is threading.main_thread()
"""
    )
    assert (await bridge.request("test", "where"))[:2] == ("ok", True)
    assert (await bridge.request("test", "where-default"))[:2] == ("ok", False)
    with pytest.raises(KernelError, match="cannot run inline"):
        await bridge_kernel.execute("@comm_bridge.on_request('t', 'a', inline=True)\nasync def _a(d, b): pass")


async def test_handlers_around_the_grace_period_answer_once(bridge_kernel: Kernel, bridge: Bridge) -> None:
    """A result within the shell thread's wait is sent by that thread, a later one by the worker: never both."""
    await bridge_kernel.execute(
        "import time\n"
        "@comm_bridge.on_request('test', 'about-grace')\n"
        "def _about_grace(data, buffers):\n"
        "    time.sleep(data * 1e-4)  # 0 to 1.9 ms, around the shell thread's 1 ms wait\n"
        "    return {'n': data}\n"
    )
    replies: collections.Counter[int] = collections.Counter()
    route = bridge._route

    def counting(msg: dict[str, object], bufs: list[memoryview]) -> None:
        if msg.get("op") == "reply":
            replies[int(msg["id"])] += 1  # type: ignore[call-overload]
        route(msg, bufs)

    bridge_kernel.on_custom[bridge.comm_id] = counting
    try:
        results = await asyncio.gather(*(bridge.request("test", "about-grace", i % 20) for i in range(200)))
        assert [r[:2] for r in results] == [("ok", {"n": i % 20}) for i in range(200)]
        assert (await bridge.request("test", "echo", 0))[0] == "ok"  # any duplicate would have arrived by now
    finally:
        bridge_kernel.on_custom[bridge.comm_id] = route
    assert len(replies) == 201 and set(replies.values()) == {1}


async def test_enable_is_idempotent(bridge_kernel: Kernel) -> None:
    out = await bridge_kernel.execute("print(comm_bridge.enable_comm_bridge() is BRIDGE)")
    assert out.strip() == "True"
    assert len([s for s in bridge_kernel.comms.values() if "__jupyter_loopback__" in str(s.get("_esm"))]) == 1


async def test_slow_handler_blocks_neither_cells_nor_other_requests(bridge_kernel: Kernel, bridge: Bridge) -> None:
    await bridge_kernel.execute(
        """
import threading
GATE = threading.Event()
@comm_bridge.on_request("test", "gate")
def _gate(data, buffers):
    GATE.wait(20)
    return "released"
"""
    )
    slow = [asyncio.ensure_future(bridge.request("test", "gate")) for _ in range(4)]
    started = time.perf_counter()
    assert (await bridge.request("test", "echo", "fast"))[0] == "ok"
    assert (await bridge_kernel.execute("print('cell ran')")).strip() == "cell ran"
    assert time.perf_counter() - started < 2
    assert not any(task.done() for task in slow)
    await bridge_kernel.execute("GATE.set()")
    assert [(await task)[1] for task in slow] == ["released"] * 4


async def test_fetch_json_and_headers(bridge: Bridge, kernel_upstream: int) -> None:
    response = await bridge.fetch(kernel_upstream, "/json")
    assert (response.status, await response.read()) == (200, b'{"hello": "world"}')
    response = await bridge.fetch(
        kernel_upstream,
        "/headers",
        headers=[
            ("X-Mine", "1"),
            ("Authorization", "token jupyter-secret"),
            ("Connection", "x-hop"),
            ("X-Hop", "2"),
            ("Forwarded", "for=6.6.6.6"),
        ],
    )
    sent = {k: v for k, v in __import__("json").loads(await response.read())}
    assert sent["x-mine"] == "1" and sent["host"] == f"127.0.0.1:{kernel_upstream}"
    assert "authorization" not in sent and "x-hop" not in sent and "x-forwarded-prefix" not in sent
    assert "forwarded" not in sent  # the one hop-by-hop list, as through the sidecar and the adapter


async def test_fetch_decodes_what_the_browser_would(bridge: Bridge, kernel_upstream: int) -> None:
    # A Response built in the page is never decoded by the browser: the kernel decodes.
    response = await bridge.fetch(kernel_upstream, "/gzip")
    assert await response.read() == b"hello gzip " * 1000
    assert response.header("content-encoding") is None and response.header("content-length") is None
    echoed = __import__("json").loads(await (await bridge.fetch(kernel_upstream, "/headers")).read())
    assert ["accept-encoding", "identity"] in echoed


async def test_proxy_variables_are_ignored(bridge_kernel: Kernel, bridge: Bridge, kernel_upstream: int) -> None:
    await bridge_kernel.execute(
        "import os\n_PROXY_VARS = ('HTTP_PROXY', 'http_proxy', 'ALL_PROXY', 'all_proxy')\nfor _v in _PROXY_VARS:\n"
        "    os.environ[_v] = 'http://127.0.0.1:9'\nos.environ.pop('NO_PROXY', None); os.environ.pop('no_proxy', None)"
    )
    try:
        assert (await bridge.fetch(kernel_upstream, "/json")).status == 200
        ws = bridge.websocket(kernel_upstream, "/ws")
        await ws.opened
        ws.close()
        assert (await ws.closed)[0] == 1000
    finally:
        await bridge_kernel.execute("for _v in _PROXY_VARS: del os.environ[_v]")


async def test_fetch_upload_and_50mb_download(bridge: Bridge, kernel_upstream: int) -> None:
    body = pattern(12 * MB + 7)
    response = await bridge.fetch(kernel_upstream, "/upload", "POST", body=body)
    assert __import__("json").loads(await response.read()) == {
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    response = await bridge.fetch(kernel_upstream, "/upload", "POST", body=b"")
    assert __import__("json").loads(await response.read())["size"] == 0
    response = await bridge.fetch(kernel_upstream, f"/bytes?n={50 * MB}")
    digest, size = hashlib.sha256(), 0
    async for chunk in response.iter():
        assert len(chunk) <= 1 << 20
        digest.update(chunk)
        size += len(chunk)
    assert size == 50 * MB
    assert digest.hexdigest() == hashlib.sha256(pattern(50 * MB)).hexdigest()


async def test_fetch_streams_before_the_end(bridge: Bridge, kernel_upstream: int) -> None:
    started = time.perf_counter()
    response = await bridge.fetch(kernel_upstream, "/sse?n=3&interval=0.5")
    first = await response.chunks.get()
    first_at = time.perf_counter() - started
    rest = await response.read()
    assert first == b"data: 0\n\n" and rest == b"data: 1\n\ndata: 2\n\n"
    assert first_at < 0.5 < time.perf_counter() - started


async def test_fetch_refusals_answer_like_the_sidecar(bridge: Bridge, kernel_upstream: int) -> None:
    with pytest.raises(BridgeError) as refused:
        await bridge.fetch(1, "/")  # below the default 1024-65535 policy
    assert refused.value.status == 403
    closed = _closed_port()
    with pytest.raises(BridgeError) as refused:
        await bridge.fetch(closed, "/")
    assert refused.value.status == 502 and f"port {closed}" in str(refused.value)


async def test_websocket_echo_close_code_and_order(bridge: Bridge, kernel_upstream: int) -> None:
    ws = bridge.websocket(kernel_upstream, "/ws?choose=b", ["a", "b"])
    assert await ws.opened == "b"
    await ws.send("hello")
    assert await ws.recv() == "hello"
    big = pattern(20 * MB)
    bridge.heaviest = 0
    await ws.send(big)
    assert await ws.recv() == big
    assert 0 < bridge.heaviest <= 1 << 20  # every comm message stays far below jupyter-server's 10 MiB cap
    for i in range(1000):
        await ws.send(f"{i}")
    assert [await ws.recv() for _ in range(1000)] == [f"{i}" for i in range(1000)]
    await ws.send("close:4321:bye")
    assert await ws.closed == (4321, "bye")


async def test_websocket_one_way_traffic_and_answers_in_order(bridge: Bridge, kernel_upstream: int) -> None:
    """Frames the upstream never answers all arrive (the kernel stops waiting for answers that do not come),
    and an answer after them comes back; then an echo session's answers keep their order."""
    ws = bridge.websocket(kernel_upstream, "/ws-count")
    await ws.opened
    for i in range(300):
        await ws.send(f"{i}")
        await asyncio.sleep(0)  # one comm message each, as a page sending over time
    await ws.send("count?")
    assert await asyncio.wait_for(ws.recv(), 30) == "300"
    echo = bridge.websocket(kernel_upstream, "/ws")
    await echo.opened
    got: list[str | bytes | None] = []
    for i in range(200):
        await echo.send(f"a{i}")
        await asyncio.sleep(0)
        if i % 3 == 2:  # read behind, in threes
            got += [await asyncio.wait_for(echo.recv(), 30) for _ in range(3)]
    got += [await asyncio.wait_for(echo.recv(), 30) for _ in range(200 - len(got))]
    assert got == [f"a{i}" for i in range(200)]
    for session in (ws, echo):
        session.close(1000, "done")
        assert await asyncio.wait_for(session.closed, 10) == (1000, "done")


async def test_websocket_close_from_the_page(bridge: Bridge, kernel_upstream: int) -> None:
    ws = bridge.websocket(kernel_upstream, "/ws")
    await ws.opened
    await ws.send(b"\x00\x01")
    ws.close(4001, "done")
    assert await ws.recv() == b"\x00\x01"
    assert await ws.closed == (4001, "done")
    response = await bridge.fetch(kernel_upstream, "/last-close")
    assert __import__("json").loads(await response.read()) == {"code": 4001, "reason": "done"}


async def test_websocket_closed_while_connecting(bridge: Bridge, kernel_upstream: int) -> None:
    """A close sent before the upstream answered waits for the handshake, then goes upstream with its code."""
    ws = bridge.websocket(kernel_upstream, "/ws")
    ws.close(4002, "early")  # the kernel has not even started connecting yet
    await asyncio.wait_for(ws.opened, 10)
    assert await asyncio.wait_for(ws.closed, 10) == (4002, "early")


async def test_websocket_refused(bridge: Bridge) -> None:
    ws = bridge.websocket(_closed_port(), "/ws")
    with pytest.raises(BridgeError) as refused:
        await ws.opened
    assert refused.value.status == 502
    assert (await ws.closed)[0] == 1006


async def test_websocket_close_code_no_endpoint_may_send_goes_as_1000(bridge: Bridge, kernel_upstream: int) -> None:
    """A close code RFC 6455 forbids in a page message (bridge.js refuses it) goes as 1000, with its reason."""
    ws = bridge.websocket(kernel_upstream, "/ws")
    await ws.opened
    bridge.send({"op": "ws_close", "id": ws.id, "code": 2000, "reason": "odd"})
    assert (await asyncio.wait_for(ws.closed, 10))[0] == 1000
    response = await bridge.fetch(kernel_upstream, "/last-close")
    assert __import__("json").loads(await response.read()) == {"code": 1000, "reason": "odd"}


async def test_the_websocket_leg_uses_the_one_client() -> None:
    """comm_bridge/websocket.py is a layer over loopback_asgi/_transports/websocket.py, no client of its own."""
    import ast

    import comm_bridge.websocket

    tree = ast.parse((ROOT / "comm_bridge" / "websocket.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "loopback_asgi._transports.websocket" in imported
    assert not imported & {"socket", "websockets.client", "websockets.protocol", "websockets.frames"}
    assert not hasattr(comm_bridge.websocket, "_close_code")  # close codes go through _transports/frames.py


async def test_close_and_enable_again() -> None:
    """Closing the bridge stops its threads cleanly; the next enable makes a new one that works."""
    kernel = await Kernel().start()
    try:
        await kernel.execute(ENABLE)
        old = await kernel.widget('kind: "comm_bridge"')
        out = await kernel.execute(
            "import threading, warnings\n"
            "warnings.simplefilter('error')\n"
            "BRIDGE.close()\n"
            "print(sorted(t.name for t in threading.enumerate() if t.name.startswith('comm-bridge-loop')))\n"
            "BRIDGE = comm_bridge.enable_comm_bridge()\n"
            "warnings.resetwarnings()"
        )
        assert out.strip() == "[]"
        new = next(c for c, state in kernel.comms.items() if c != old and 'kind: "comm_bridge"' in str(state))
        assert (await Bridge(kernel, new).request("test", "echo", 1))[:2] == ("ok", {"echo": 1})
    finally:
        await kernel.stop()


async def test_kernel_error_surfaces(bridge_kernel: Kernel) -> None:
    with pytest.raises(KernelError, match="ZeroDivisionError"):
        await bridge_kernel.execute("1 / 0")


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_es_module_under_node() -> None:
    """tests/js/*.test.mjs: the ES module against a fake model, with node's own test runner."""
    node = await asyncio.create_subprocess_exec(
        "node", "--test", "tests/js/", cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(node.communicate(), 120)
    assert node.returncode == 0, out.decode()[-4000:]
    assert b"# fail 0" in out


# What the page does once the bridge is up; everything it learns comes back as JSON.
PAGE = """async (port) => {
  const api = window.__jupyter_loopback__;
  const out = {};
  const echo = await api.request("test", "echo", {z: 8}, [new Uint8Array([1, 2, 3])]);
  out.echo = {status: echo.status, data: echo.data, buffers: echo.buffers.map((b) => [...b])};
  out.missing = await api.request("test", "missing");

  const json = await api.fetch(port, "/json");
  out.json = {status: json.status, type: json.headers.get("content-type"), body: await json.json()};

  const size = 20000000;
  const big = new Uint8Array(await (await api.fetch(port, `/bytes?n=${size}`)).arrayBuffer());
  out.big = {size: big.byteLength, pattern: big.every((b, i) => i % 4099 !== 0 || b === i % 256)};

  const started = performance.now();
  const reader = (await api.fetch(port, "/sse?n=3&interval=0.5")).body.getReader();
  const first = new TextDecoder().decode((await reader.read()).value);
  const firstAt = performance.now() - started;
  while (!(await reader.read()).done);
  out.sse = {first, firstAt, total: performance.now() - started};

  const upload = new Uint8Array(3000001).map((_, i) => (i * 7) % 256);
  const digest = [...new Uint8Array(await crypto.subtle.digest("SHA-256", upload))];
  const answer = await (await api.fetch(port, "/upload", {method: "POST", body: upload})).json();
  out.upload = {answer, sha256: digest.map((b) => b.toString(16).padStart(2, "0")).join("")};

  out.refused = (await api.fetch(1, "/")).status;

  const ws = api.openWebSocket(port, "/ws?choose=b", ["a", "b"]);
  ws.binaryType = "arraybuffer";
  const messages = [];
  const closed = new Promise((resolve) =>
    ws.addEventListener("close", (e) => resolve({code: e.code, reason: e.reason})));
  const next = () => new Promise((resolve) =>
    ws.addEventListener("message", (e) => resolve(e.data), {once: true}));
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
  out.protocol = ws.protocol;
  let got = next(); ws.send("hello"); out.text = await got;
  const blob = new Uint8Array(3 * 1048576 + 5).map((_, i) => i % 251);
  got = next(); ws.send(blob);
  const back = new Uint8Array(await got);
  out.binary = back.length === blob.length && back.every((b, i) => b === blob[i]);
  ws.onmessage = (e) => messages.push(e.data);
  for (let i = 0; i < 500; i++) ws.send(String(i));
  while (messages.length < 500) await next();
  out.ordered = messages.every((m, i) => m === String(i));
  ws.send("close:4321:bye");
  out.closed = await closed;
  return out;
}"""


@pytest.mark.browser
@pytest.mark.proves("jupyterlab", "bridge")
async def test_bridge_in_jupyterlab(comm_lab: Lab) -> None:
    """A notebook cell enables the bridge and starts a server; the page uses request, fetch and openWebSocket."""
    from playwright.async_api import async_playwright

    url = comm_lab.notebook("bridge.ipynb", LAB_CELL)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            page.set_default_timeout(60_000)
            await page.goto(url)
            await page.wait_for_function(
                "() => window.jupyterapp?.shell.currentWidget?.context?.path === 'bridge.ipynb'"
            )
            printed = await page.evaluate(RUN_CELLS, 120_000)
            _, port, pid = printed.split()
            try:
                await page.wait_for_function("() => window.__jupyter_loopback__?.registry.models.length > 0")
                out = await page.evaluate(PAGE, int(port))
            finally:
                os.kill(int(pid), signal.SIGTERM)
        finally:
            await browser.close()
    assert out["echo"] == {"status": "ok", "data": {"echo": {"z": 8}}, "buffers": [[3, 2, 1]]}
    assert out["missing"]["status"] == "error" and "'test'/'missing'" in out["missing"]["data"]["message"]
    assert out["json"] == {"status": 200, "type": "application/json", "body": {"hello": "world"}}
    assert out["big"] == {"size": 20_000_000, "pattern": True}
    assert out["sse"]["first"] == "data: 0\n\n" and out["sse"]["firstAt"] < 500 < out["sse"]["total"]
    upload = bytes((i * 7) % 256 for i in range(3_000_001))
    assert out["upload"]["answer"] == {"size": len(upload), "sha256": hashlib.sha256(upload).hexdigest()}
    assert out["upload"]["sha256"] == hashlib.sha256(upload).hexdigest()
    assert out["refused"] == 403
    assert (out["protocol"], out["text"], out["binary"], out["ordered"]) == ("b", "hello", True, True)
    assert out["closed"] == {"code": 4321, "reason": "bye"}


async def test_a_stalled_reader_stops_the_kernel_after_a_window(bridge: Bridge, kernel_upstream: int) -> None:
    from comm_bridge.protocol import WINDOW

    response = await bridge.fetch(kernel_upstream, f"/bytes?n={50 * MB}", ack=False)
    received = 0
    while True:  # bounded: the kernel must stop sending within a window
        try:
            chunk = await asyncio.wait_for(response.chunks.get(), 1.0)
        except asyncio.TimeoutError:
            break
        received += len(chunk)
        assert received <= WINDOW + (1 << 20), "the kernel ignored the page's credit"
    assert WINDOW // 2 <= received
    bridge.send({"op": "cancel", "id": bridge.next})


async def test_a_stalled_websocket_reader_stops_the_kernel_after_a_window(bridge: Bridge, kernel_upstream: int) -> None:
    from comm_bridge.protocol import WINDOW

    ws = bridge.websocket(kernel_upstream, "/ws", ack=False)
    await ws.opened
    message = bytes(512 * 1024)
    # 20 MiB through the echo; the sends themselves stall once the kernel withholds credit.
    sending = asyncio.ensure_future(asyncio.gather(*(ws.send(message) for _ in range(40))))
    received = 0
    try:
        while True:  # bounded: the kernel must stop relaying within a window
            try:
                got = await ws.recv(timeout=1.0)
            except asyncio.TimeoutError:
                break
            assert got == message
            received += len(message)
            assert received <= WINDOW + (1 << 20), "the kernel ignored the page's credit"
        assert WINDOW // 2 <= received
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        bridge.send({"op": "cancel", "id": ws.id})


@pytest.mark.parametrize("after", [65536, 8 << 20])  # the client's stream; the direct path (bulk.BULK and over)
async def test_a_body_cut_short_fails_after_what_arrived(bridge: Bridge, kernel_upstream: int, after: int) -> None:
    response = await bridge.fetch(kernel_upstream, f"/die?after={after}")  # declares 4 * after, sends after
    got = b""
    with pytest.raises(BridgeError) as cut:
        async for chunk in response.iter():
            got += bytes(chunk)
    assert cut.value.status == 0 and "dropped the response" in str(cut.value)
    assert pattern(after).startswith(got)  # in order and whole so far (a reset may discard what was unread)
    assert (await bridge.request("test", "echo", 1))[0] == "ok"


async def test_long_fixed_length_bodies_take_the_direct_path(
    bridge_kernel: Kernel, bridge: Bridge, kernel_upstream: int
) -> None:
    """At least ``bulk.BULK`` bytes with a Content-Length: read from the socket into the messages; else streamed."""

    async def direct_after(path: str, expected: bytes) -> int:
        assert await (await bridge.fetch(kernel_upstream, path)).read() == expected
        return int(await bridge_kernel.execute("print(BRIDGE.streams.direct)"))

    before = int(await bridge_kernel.execute("print(BRIDGE.streams.direct)"))
    assert await direct_after(f"/bytes?n={1 * MB}", pattern(1 * MB)) == before  # under bulk.BULK
    assert await direct_after("/gzip", b"hello gzip " * 1000) == before  # decoded: streamed
    assert await direct_after(f"/bytes?n={3 * MB}", pattern(3 * MB)) == before + 1


async def test_a_cancelled_download_ends(bridge_kernel: Kernel, bridge: Bridge, kernel_upstream: int) -> None:
    response = await bridge.fetch(kernel_upstream, f"/bytes?n={50 * MB}", ack=False)
    assert len(await asyncio.wait_for(response.chunks.get(), 10)) > 0
    bridge.send({"op": "cancel", "id": bridge.next})
    for _ in range(100):  # bounded: the kernel drops the stream soon after the cancel
        if (await bridge_kernel.execute("print(len(BRIDGE.streams.sessions))")).strip() == "0":
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the cancelled download is still running in the kernel")
    response = await bridge.fetch(kernel_upstream, f"/bytes?n={3 * MB}")
    assert await response.read() == pattern(3 * MB)


@pytest.mark.slow
async def test_200mb_fetch_in_bounded_kernel_memory(
    bridge_kernel: Kernel, bridge: Bridge, kernel_upstream: int
) -> None:
    from tests.conftest import peak_rss, rss_peak_rise

    pid = bridge_kernel.km.provisioner.process.pid  # type: ignore[attr-defined]
    before, _ = rss_peak_rise(pid)
    response = await bridge.fetch(kernel_upstream, f"/bytes?n={200 * MB}")
    size = 0
    async for chunk in response.iter():
        size += len(chunk)
    assert size == 200 * MB
    rise = peak_rss(pid) - before
    assert rise < 64 * MB, f"the kernel's memory rose by {rise / MB:.0f} MB"


async def test_malformed_messages_get_a_status_and_a_sentence(bridge: Bridge) -> None:
    replies: list[dict[str, object]] = []
    bridge.pending[4242] = lambda msg, bufs: replies.append(msg)
    bridge.send({"op": "fetch", "id": 4242})
    bridge.send({"op": "teleport", "id": 4242})
    bridge.send({"op": "ws_send", "id": 4242, "frames": [[1, 1]]})  # a frame without its buffer
    status, _, _ = await bridge.request("test", "echo", "still fine")
    assert status == "ok"
    del bridge.pending[4242]
    assert [r["status"] for r in replies] == [400, 400, 400]
    assert all(str(r["message"]).startswith("Bad message: ") for r in replies)


async def test_header_timeout_answers_504(bridge_kernel: Kernel, bridge: Bridge, kernel_upstream: int) -> None:
    await bridge_kernel.execute(
        "import dataclasses\n"
        "_ns = BRIDGE.streams.namespace\n"
        "BRIDGE.streams.namespace = dataclasses.replace(_ns, header_timeout=0.3)"
    )
    try:
        with pytest.raises(BridgeError) as timed_out:
            await bridge.fetch(kernel_upstream, "/slow?delay=3")
        assert timed_out.value.status == 504
    finally:
        await bridge_kernel.execute("BRIDGE.streams.namespace = _ns")


async def test_port_policy_follows_the_administrator(monkeypatch: pytest.MonkeyPatch) -> None:
    from comm_bridge.channel import loopback_namespace

    assert str(loopback_namespace().ports) == "1024-65535"  # type: ignore[union-attr]
    assert str(loopback_namespace("8000-9000").ports) == "8000-9000"  # type: ignore[union-attr]
    monkeypatch.setenv("JUPYTER_LOOPBACK_ALLOWED_PORTS", "8500-10000")
    assert str(loopback_namespace("8000-9000").ports) == "8500-9000"  # type: ignore[union-attr]
    monkeypatch.setenv("JUPYTER_LOOPBACK_DISABLED_NAMESPACES", "app")
    assert loopback_namespace() is None


def _relative_imports(path: object) -> set[str]:
    import ast
    from pathlib import Path

    assert isinstance(path, Path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):  # every import, TYPE_CHECKING and in functions too
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.update([node.module] if node.module else [a.name for a in node.names])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("comm_bridge."):
            found.add(node.module.split(".")[1])  # type: ignore[union-attr]
    return found


async def test_comm_bridge_modules_form_no_cycle_and_import_alone() -> None:
    """No comm_bridge module imports itself back through others, and each imports first in a fresh interpreter."""
    import sys

    modules = sorted(p for p in (ROOT / "comm_bridge").glob("*.py"))
    graph = {p.stem: _relative_imports(p) & {q.stem for q in modules} for p in modules}
    assert "websocket" not in graph["fetch"] and "fetch" not in graph["websocket"]
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name not in done:
            for child in sorted(graph[name]):
                visit(child, (*path, name))
            done.add(name)

    for name in graph:
        visit(name, ())
    names = [p.stem for p in modules if p.stem != "__init__"]
    runs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", f"import comm_bridge.{name}", cwd=ROOT, stderr=asyncio.subprocess.PIPE
        )
        for name in names
    ]
    for name, run in zip(names, runs, strict=True):
        _, err = await asyncio.wait_for(run.communicate(), 60)
        assert run.returncode == 0, f"comm_bridge.{name} does not import alone: {err.decode()[-400:]}"


async def test_an_empty_route_is_refused() -> None:
    """The public names themselves are checked in test_intercept.test_exports."""
    import comm_bridge

    with pytest.raises(ValueError):
        comm_bridge.on_request("", "kind")


async def test_many_streams_at_once(bridge: Bridge, kernel_upstream: int) -> None:
    """Requests, downloads, uploads and WebSockets interleaved on one comm, each answered exactly and whole."""

    async def download(i: int) -> bool:
        n = 1_500_000 + i
        return await (await bridge.fetch(kernel_upstream, f"/bytes?n={n}")).read() == pattern(n)

    async def upload(i: int) -> bool:
        body = pattern(700_000 + i)
        answer = __import__("json").loads(
            await (await bridge.fetch(kernel_upstream, "/upload", "POST", body=body)).read()
        )
        return answer == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}

    async def echo(i: int) -> bool:
        status, data, buffers = await bridge.request("test", "echo", i, [bytes([i % 256]) * i])
        return (status, data, buffers) == ("ok", {"echo": i}, [bytes([i % 256]) * i])

    async def chat(i: int) -> bool:
        ws = bridge.websocket(kernel_upstream, "/ws")
        await ws.opened
        for j in range(50):
            await ws.send(f"{i}:{j}")
        got = [await ws.recv() for _ in range(50)]
        ws.close(4000 + i)
        return got == [f"{i}:{j}" for j in range(50)] and (await ws.closed)[0] == 4000 + i

    jobs = [f(i) for i in range(8) for f in (download, upload, echo, chat)]
    assert all(await asyncio.wait_for(asyncio.gather(*jobs), 120))


async def test_workers_wake_idle_threads_queue_the_rest_and_survive_a_raising_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import threading

    from comm_bridge.runtime import Workers

    workers = Workers(2)
    gate = threading.Event()
    order: list[int] = []
    try:
        held = [workers.run(gate.wait, 10) for _ in range(2)]  # both threads busy
        queued = [workers.run(order.append, i) for i in range(5)]
        assert not any(done.acquire(timeout=0.05) for done in queued[:1])  # nobody free to run them
        gate.set()
        assert all(done.acquire(timeout=10) for done in held + queued)
        assert order == [0, 1, 2, 3, 4]  # waiting jobs run in order
        assert workers.run(lambda: 1 / 0).acquire(timeout=10)
        assert "a worker's job raised" in caplog.text
        again = workers.run(order.append, 5)
        assert again.acquire(timeout=10) and order[-1] == 5  # the thread lived on
        assert workers._started == 2
    finally:
        workers.close()
    with pytest.raises(RuntimeError):
        workers.run(order.append, 6)
