"""A real kernel and a test that plays its frontend over the ipywidgets comm protocol.

:class:`Kernel` starts an ipykernel with jupyter_client and speaks the
Jupyter wire protocol itself on zmq: ``execute``, and widget comms
(``comm_open`` from the kernel, ``comm_msg`` with ``method: "custom"`` and
buffers both ways). :class:`Bridge` speaks ``comm_bridge/protocol.py`` on
top of one comm, as ``static/bridge.js`` does in a browser. The benchmark
drives the same classes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import sys
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import zmq
import zmq.asyncio
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from comm_bridge.protocol import ACK_BYTES, ACK_MESSAGES, CHUNK, FRAME_COST, WINDOW

from .browser_fixtures import CHROMIUM, CHROMIUM_ARGS, Lab, start_lab

ROOT = Path(__file__).resolve().parent.parent
BATCH_FRAMES = 64  # as bridge.js
Custom = Callable[[dict[str, Any], list[memoryview]], None]

UPSTREAM = """
import subprocess as _sp, re as _re, atexit as _atexit
_up = _sp.Popen([{python!r}, "-m", "tests.upstream"], stdout=_sp.PIPE, text=True, cwd={root!r})
_atexit.register(_up.terminate)
UPSTREAM = int(_re.search(r"listening on (\\d+)", _up.stdout.readline()).group(1))
print(UPSTREAM, _up.pid)
"""


class KernelError(Exception):
    """A cell raised in the kernel."""


@dataclass
class _Run:
    done: asyncio.Event = field(default_factory=asyncio.Event)
    idle: bool = False
    reply: dict[str, Any] | None = None
    stdout: list[str] = field(default_factory=list)
    error: str | None = None


class Kernel:
    """One real ipykernel; ``python`` picks the interpreter (another venv for a reference)."""

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python
        self.comms: dict[str, dict[str, Any]] = {}
        self.on_custom: dict[str, Custom] = {}
        self._runs: dict[str, _Run] = {}
        self._comm_seen = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.children: list[int] = []

    async def start(self, timeout: float = 60) -> Kernel:
        self._dir = tempfile.TemporaryDirectory()
        spec = Path(self._dir.name, "kernels", "bridge-test")
        spec.mkdir(parents=True)
        argv = [self.python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "t", "language": "python"}))
        ksm = KernelSpecManager(kernel_dirs=[str(spec.parent)], ensure_native_kernel=False)
        self.km = AsyncKernelManager(kernel_name="bridge-test", kernel_spec_manager=ksm)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "JUPYTER_PLATFORM_DIRS": "1"}
        await self.km.start_kernel(env=env, cwd=str(ROOT))
        self.session = self.km.session
        info = self.km.get_connection_info()
        self.ctx = zmq.asyncio.Context()
        self.shell = self.ctx.socket(zmq.DEALER)
        self.shell.linger = 0
        self.shell.connect(f"tcp://{info['ip']}:{info['shell_port']}")
        self.iopub = self.ctx.socket(zmq.SUB)
        self.iopub.linger = 0
        self.iopub.setsockopt(zmq.SUBSCRIBE, b"")
        self.iopub.connect(f"tcp://{info['ip']}:{info['iopub_port']}")
        self._tasks = [asyncio.ensure_future(self._read(self.iopub)), asyncio.ensure_future(self._read(self.shell))]
        # IOPub is PUB/SUB: probe with kernel_info until our subscription sees the kernel.
        for _ in range(int(timeout * 4)):
            run = self._send("kernel_info_request", {})
            try:
                await asyncio.wait_for(run.done.wait(), 0.25)
                return self
            except asyncio.TimeoutError:
                continue
        raise RuntimeError("the kernel did not answer kernel_info in time")

    async def stop(self) -> None:
        for pid in self.children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.km.shutdown_kernel(now=False)
        self.ctx.destroy(linger=0)
        self._dir.cleanup()

    def _send(self, msg_type: str, content: dict[str, Any], buffers: Sequence[Any] = ()) -> _Run:
        msg = self.session.msg(msg_type, content)
        run = self._runs[msg["header"]["msg_id"]] = _Run()
        self.shell.send_multipart(self.session.serialize(msg) + list(buffers), copy=False)
        return run

    async def _read(self, socket: zmq.asyncio.Socket) -> None:
        while True:
            frames = await socket.recv_multipart(copy=False)
            _, rest = self.session.feed_identities(frames, copy=False)
            msg = self.session.deserialize(rest, content=True, copy=False)
            self._dispatch(msg)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg["header"]["msg_type"]
        content = msg["content"]
        run = self._runs.get(msg["parent_header"].get("msg_id", ""))
        if kind == "comm_msg":
            data = content.get("data") or {}
            handler = self.on_custom.get(content["comm_id"])
            if data.get("method") == "custom" and handler is not None:
                handler(data["content"], msg["buffers"])
            return
        if kind == "comm_open" and content.get("target_name") == "jupyter.widget":
            self.comms[content["comm_id"]] = content["data"].get("state", {})
            self._comm_seen.set()
        if run is None:
            return
        if kind == "stream" and content.get("name") == "stdout":
            run.stdout.append(content["text"])
        elif kind == "error":
            run.error = f"{content['ename']}: {content['evalue']}"
        elif kind == "status" and content["execution_state"] == "idle":
            run.idle = True
        elif kind.endswith("_reply"):
            run.reply = content
        if run.idle and run.reply is not None:
            run.done.set()
            self._runs.pop(msg["parent_header"]["msg_id"], None)

    async def execute(self, code: str, timeout: float = 60) -> str:
        """Run a cell; its stdout, or :class:`KernelError` with the exception."""
        run = self._send("execute_request", {"code": code, "silent": False, "store_history": False})
        await asyncio.wait_for(run.done.wait(), timeout)
        if run.error or (run.reply or {}).get("status") != "ok":
            raise KernelError(run.error or str(run.reply))
        return "".join(run.stdout)

    async def widget(self, model: str, timeout: float = 30) -> str:
        """The comm id of the first widget whose ``_model_name``/``_esm`` mentions ``model``."""

        async def find() -> str:
            while True:
                for comm_id, state in self.comms.items():
                    if model in str(state.get("_esm", "")) or model == state.get("_model_name"):
                        return comm_id
                self._comm_seen.clear()
                await self._comm_seen.wait()

        return await asyncio.wait_for(find(), timeout)

    def custom(self, comm_id: str, content: Any, buffers: Sequence[Any] = ()) -> None:
        """What ``model.send(content, callbacks, buffers)`` does in a browser."""
        data = {"comm_id": comm_id, "data": {"method": "custom", "content": content}}
        msg = self.session.msg("comm_msg", data)
        self.shell.send_multipart(self.session.serialize(msg) + list(buffers), copy=False)

    async def upstream(self) -> int:
        """Start tests/upstream.py from inside the kernel; its port (the kernel's child, killed at stop)."""
        out = await self.execute(UPSTREAM.format(python=sys.executable, root=str(ROOT)))
        port, pid = out.split()
        self.children.append(int(pid))
        return int(port)


@dataclass
class Response:
    status: int
    reason: str
    headers: list[list[str]]
    chunks: asyncio.Queue[Any]

    async def iter(self) -> AsyncIterator[bytes | memoryview]:
        while True:
            item = await self.chunks.get()
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.iter()])

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


class BridgeError(Exception):
    """The kernel answered ``op: "error"``; ``status`` as the sidecar would answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Bridge:
    """The page half of the comm bridge, in Python, on one comm of a :class:`Kernel`."""

    def __init__(self, kernel: Kernel, comm_id: str) -> None:
        self.kernel = kernel
        self.comm_id = comm_id
        self.pending: dict[int, Custom] = {}
        self.next = random.getrandbits(32) << 20
        self.largest = 0
        """The largest buffer the kernel has sent this page."""
        self.heaviest = 0
        """The most buffer bytes in one message the kernel has sent this page."""
        kernel.on_custom[comm_id] = self._route

    def _route(self, msg: dict[str, Any], buffers: list[memoryview]) -> None:
        self.heaviest = max(self.heaviest, sum(len(b) for b in buffers))
        handler = self.pending.get(msg.get("id", -1))
        if handler is not None:
            handler(msg, buffers)

    def _id(self) -> int:
        self.next += 1
        return self.next

    def send(self, content: dict[str, Any], buffers: Sequence[Any] = ()) -> None:
        self.kernel.custom(self.comm_id, content, buffers)

    async def request(
        self, ns: str, kind: str, data: Any = None, buffers: Sequence[bytes] = (), timeout: float = 60
    ) -> tuple[str, Any, list[memoryview]]:
        """One request, as bridge.js sends it: buffers over CHUNK in all follow in credit-paced pieces.

        Small replies' buffers are the zmq frames' memoryviews, uncopied, as a
        page gets them; a reply sent in pieces is joined and split again.
        """
        id = self._id()
        reply: asyncio.Future[tuple[str, Any, list[memoryview]]] = asyncio.get_running_loop().create_future()
        credit = _Credit()
        incoming: list[Any] = []

        def handle(msg: dict[str, Any], bufs: list[memoryview]) -> None:
            self.largest = max([self.largest, *(len(b) for b in bufs)])
            if reply.done():
                return
            if msg["op"] == "credit":
                credit.give(msg["bytes"])
            elif msg["op"] == "reply" and "sizes" in msg:
                incoming.append(msg)
            elif msg["op"] == "data" and incoming:
                incoming.extend(bytes(b) for b in bufs)
                if msg["end"]:
                    whole = memoryview(b"".join(incoming[1:]))
                    offsets = list(itertools.accumulate(incoming[0]["sizes"], initial=0))
                    parts = [whole[a:b] for a, b in itertools.pairwise(offsets)]
                    reply.set_result((incoming[0]["status"], incoming[0]["data"], parts))
            elif msg["op"] == "reply":
                reply.set_result((msg["status"], msg.get("data"), list(bufs)))
            elif msg["op"] == "error":
                reply.set_result(("error", {"message": msg["message"]}, []))

        self.pending[id] = handle
        head = {"op": "request", "id": id, "ns": ns, "kind": kind, "data": data}
        if sum(len(b) for b in buffers) <= CHUNK:
            self.send(head, buffers)
        else:
            self.send({**head, "sizes": [len(b) for b in buffers]})
            view = memoryview(b"".join(buffers))
            for at in range(0, len(view), CHUNK):
                piece = view[at : at + CHUNK]
                await credit.take(len(piece) + FRAME_COST)
                self.send({"op": "body", "id": id, "end": at + CHUNK >= len(view)}, [piece])
        # The reply resolves the awaited future directly, as bridge.js resolves
        # its promise; asyncio.wait_for would add a hop through the loop.
        timer = asyncio.get_running_loop().call_later(timeout, _expire, reply)
        try:
            return await reply
        finally:
            timer.cancel()
            del self.pending[id]

    async def fetch(
        self,
        port: int,
        path: str,
        method: str = "GET",
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        timeout: float = 60,
        ack: bool = True,
    ) -> Response:
        """One HTTP exchange; the body is acknowledged as it arrives unless ``ack`` is false (a stalled reader)."""
        id = self._id()
        loop = asyncio.get_running_loop()
        head: asyncio.Future[Response] = loop.create_future()
        chunks: asyncio.Queue[Any] = asyncio.Queue()
        credit = _Credit()
        unacked = [0, 0]

        def handle(msg: dict[str, Any], bufs: list[memoryview]) -> None:
            op = msg["op"]
            if op == "head":
                head.set_result(Response(msg["status"], msg["reason"], msg["headers"], chunks))
            elif op == "data":
                for b in bufs:  # kept as the zmq frame's memoryview: a page reads, it need not copy
                    chunks.put_nowait(b)
                    unacked[0] += len(b)
                unacked[1] += 1
                if msg["end"]:
                    chunks.put_nowait(None)
                    self.pending.pop(id, None)
                elif ack and (unacked[0] >= ACK_BYTES or unacked[1] >= ACK_MESSAGES):
                    self.send({"op": "ack", "id": id, "bytes": unacked[0], "messages": unacked[1]})
                    unacked[:] = [0, 0]
            elif op == "credit":
                credit.give(msg["bytes"])
            elif op == "error":
                self.pending.pop(id, None)
                error = BridgeError(msg["status"], msg["message"])
                if not head.done():
                    head.set_exception(error)
                else:
                    chunks.put_nowait(error)

        self.pending[id] = handle
        all_headers = list(headers) + ([("content-length", str(len(body)))] if body is not None else [])
        hdrs = [list(h) for h in all_headers]
        self.send(
            {
                "op": "fetch",
                "id": id,
                "port": port,
                "path": path,
                "method": method,
                "headers": hdrs,
                "body": body is not None,
            }
        )
        if body is not None:
            view = memoryview(body)
            for at in range(0, len(body), CHUNK):
                piece = view[at : at + CHUNK]
                await credit.take(len(piece) + FRAME_COST)
                self.send({"op": "body", "id": id, "end": at + CHUNK >= len(body)}, [piece])
            if not body:
                self.send({"op": "body", "id": id, "end": True})
        return await asyncio.wait_for(head, timeout)

    def websocket(self, port: int, path: str, protocols: Sequence[str] = (), ack: bool = True) -> WebSocket:
        """``openWebSocket``; messages are acknowledged as they arrive unless ``ack`` is false (a stalled reader)."""
        return WebSocket(self, port, path, protocols, ack)


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(asyncio.TimeoutError())


class _Inbox:
    """Messages in arrival order for one reader; ``get`` resumes straight from the handler, as onmessage fires."""

    def __init__(self) -> None:
        self.items: deque[Any] = deque()
        self.waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self.items.append(item)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def get(self, timeout: float) -> Any:
        if not self.items:
            loop = asyncio.get_running_loop()
            self.waiter = loop.create_future()
            timer = loop.call_later(timeout, _expire, self.waiter)
            try:
                await self.waiter
            finally:
                timer.cancel()
                self.waiter = None
        return self.items.popleft()


class _Credit:
    def __init__(self) -> None:
        self.inflight = 0
        self.moved = asyncio.Event()

    async def take(self, cost: int) -> None:
        while self.inflight and self.inflight + cost > WINDOW:
            self.moved.clear()
            await self.moved.wait()
        self.inflight += cost

    def give(self, amount: int) -> None:
        self.inflight = max(0, self.inflight - amount)
        self.moved.set()


class WebSocket:
    """``openWebSocket`` in Python: ``opened`` resolves the subprotocol; ``recv`` gives str/bytes or a close."""

    def __init__(self, bridge: Bridge, port: int, path: str, protocols: Sequence[str], ack: bool = True) -> None:
        self.bridge = bridge
        self.ack = ack
        self.id = bridge._id()
        self.opened: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.messages = _Inbox()
        self.closed: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self.credit = _Credit()
        self._partial: list[bytes] = []
        self._unacked = [0, 0]
        self._outbox: list[tuple[list[int], memoryview]] = []
        self._flushing = False
        bridge.pending[self.id] = self._handle
        bridge.send({"op": "ws_open", "id": self.id, "port": port, "path": path, "protocols": list(protocols)})

    def _handle(self, msg: dict[str, Any], bufs: list[memoryview]) -> None:
        op = msg["op"]
        if op == "ws_open":
            self.opened.set_result(msg["protocol"])
        elif op == "ws_data":
            for (text, final), b in zip(msg["frames"], bufs, strict=True):
                self._partial.append(bytes(b))
                self._unacked[0] += len(b) + FRAME_COST
                if final:
                    data = b"".join(self._partial)
                    self._partial = []
                    self.messages.put_nowait(data.decode() if text else data)
            self._unacked[1] += 1
            if self.ack and (self._unacked[0] >= ACK_BYTES or self._unacked[1] >= ACK_MESSAGES):
                self.bridge.send({"op": "ack", "id": self.id, "bytes": self._unacked[0], "messages": self._unacked[1]})
                self._unacked = [0, 0]
        elif op == "credit":
            self.credit.give(msg["bytes"])
        elif op in ("ws_closed", "error"):
            self.bridge.pending.pop(self.id, None)
            if not self.opened.done():
                self.opened.set_exception(BridgeError(msg.get("status", 0), msg.get("message", "closed")))
            if not self.closed.done():
                self.closed.set_result((msg.get("code", 1006), msg.get("reason", msg.get("message", ""))))
            self.messages.put_nowait(None)

    async def send(self, data: str | bytes) -> None:
        """Queue one message; messages sent in the same turn of the loop share comm messages, as in bridge.js."""
        raw = data.encode() if isinstance(data, str) else data
        view = memoryview(raw)
        for at in range(0, max(len(raw), 1), CHUNK):
            piece = view[at : at + CHUNK]
            await self.credit.take(len(piece) + FRAME_COST)
            self._outbox.append(([int(isinstance(data, str)), int(at + CHUNK >= len(raw))], piece))
            if not self._flushing:
                self._flushing = True
                asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        while self._outbox:
            batch = self._outbox[:BATCH_FRAMES]
            while sum(len(p) for _, p in batch) > CHUNK and len(batch) > 1:
                batch.pop()
            del self._outbox[: len(batch)]
            frames = [f for f, _ in batch]
            self.bridge.send({"op": "ws_send", "id": self.id, "frames": frames}, [p for _, p in batch])

    async def recv(self, timeout: float = 30) -> str | bytes | None:
        return await self.messages.get(timeout)

    def close(self, code: int = 1000, reason: str = "") -> None:
        self._flush()
        self.bridge.send({"op": "ws_close", "id": self.id, "code": code, "reason": reason})


ENABLE = """
import comm_bridge
BRIDGE = comm_bridge.enable_comm_bridge()

@comm_bridge.on_request("test", "echo")
def _echo(data, buffers):
    return {"echo": data}, [bytes(b)[::-1] for b in buffers]
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bridge_kernel() -> AsyncIterator[Kernel]:
    """A real kernel running this project's code, with the bridge enabled."""
    kernel = await Kernel().start()
    try:
        await kernel.execute(ENABLE)
        yield kernel
    finally:
        await kernel.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bridge(bridge_kernel: Kernel) -> Bridge:
    """The test's page half on the bridge's comm."""
    return Bridge(bridge_kernel, await bridge_kernel.widget("__jupyter_loopback__"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def kernel_upstream(bridge_kernel: Kernel) -> int:
    """Port of tests/upstream.py, started by the kernel."""
    return await bridge_kernel.upstream()


# The notebook the browser test runs: the bridge, a handler, and an upstream
# started by the kernel, whose port and pid the cell prints.
LAB_CELL = ENABLE + UPSTREAM.format(python=sys.executable, root=str(ROOT)).replace("print(", "print('UPSTREAM', ")


@pytest.fixture(scope="module")
def comm_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """JupyterLab (:func:`tests.browser_fixtures.start_lab`) for this module."""
    lab = start_lab(tmp_path_factory.mktemp("comm-lab"))
    try:
        yield lab
    finally:
        lab.proc.stop()


# Open the notebook's kernel session and run its cells with JupyterLab's own
# command; return every output's text, or the error tracebacks.
RUN_CELLS = """async (timeoutMs) => {
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  await panel.context.ready;
  await panel.sessionContext.ready;
  const done = app.commands.execute("notebook:run-all-cells");
  const late = new Promise((_, reject) => setTimeout(() => reject(new Error("cells still running")), timeoutMs));
  await Promise.race([done, late]);
  const out = [];
  for (const cell of panel.content.model.cells) {
    for (const o of cell.outputs.toJSON()) {
      if (o.output_type === "error") throw new Error(o.traceback.join("\\n"));
      if (o.output_type === "stream") out.push(o.text);
    }
  }
  return out.join("");
}"""


__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "ENABLE",
    "LAB_CELL",
    "RUN_CELLS",
    "Bridge",
    "BridgeError",
    "Kernel",
    "KernelError",
    "Lab",
    "Response",
    "WebSocket",
]
