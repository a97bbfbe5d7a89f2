// The comm bridge's ES module under node's test runner, as anywidget loads it:
// the bundle comm_bridge/static/bridge.js (`?copy` imports a second copy, as
// a page with two bridge widgets has). A fake anywidget model
// stands in for the comm; each test plays the kernel by answering what the
// module sends, with the message shapes of comm_bridge/protocol.py.
import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";

import widget from "../../comm_bridge/static/bridge.js";

const CHUNK = 1 << 20;
const WINDOW = 16 << 20;
const ACK_BYTES = (WINDOW * 3) / 4;

class FakeModel {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this.listeners = new Map();
    /** @type {{content: any, buffers: Uint8Array[]}[]} */
    this.sent = [];
    /** @type {((content: any, buffers: Uint8Array[]) => void) | null} */
    this.kernel = null;
  }
  on(name, fn) {
    if (!this.listeners.has(name)) this.listeners.set(name, new Set());
    this.listeners.get(name).add(fn);
  }
  off(name, fn) {
    this.listeners.get(name)?.delete(fn);
  }
  send(content, _callbacks, buffers = []) {
    for (const b of buffers) assert.ok(b instanceof ArrayBuffer, "the comm gets whole ArrayBuffers");
    const bytes = buffers.map((b) => new Uint8Array(b));
    this.sent.push({ content, buffers: bytes });
    if (this.kernel) queueMicrotask(() => this.kernel(content, bytes));
  }
  /** The kernel's `widget.send(content, buffers)`: buffers arrive as DataViews, as ipywidgets delivers them. */
  reply(content, buffers = []) {
    const views = buffers.map((b) => new DataView(b.buffer, b.byteOffset, b.byteLength));
    for (const fn of this.listeners.get("msg:custom") ?? []) fn(content, views);
  }
  ops(op) {
    return this.sent.filter((m) => m.content.op === op);
  }
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 0));
let cleanups = [];
let objectUrls = 0;
const realCreate = URL.createObjectURL;

beforeEach(() => {
  delete globalThis.__jupyter_loopback__;
  objectUrls = 0;
  URL.createObjectURL = (...args) => {
    objectUrls += 1;
    return realCreate.apply(URL, args);
  };
});

afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
  URL.createObjectURL = realCreate;
  assert.equal(objectUrls, 0, "the bridge creates no object URLs");
});

function bridge() {
  const model = new FakeModel();
  cleanups.push(widget.initialize({ model }));
  return model;
}

function echoKernel(model) {
  model.kernel = (msg, buffers) => {
    if (msg.op === "request" && msg.ns === "t" && msg.kind === "echo")
      model.reply({ op: "reply", id: msg.id, status: "ok", data: { echo: msg.data } }, buffers.map((b) => b.slice().reverse()));
    else if (msg.op === "request")
      model.reply({ op: "reply", id: msg.id, status: "error", data: { message: `No handler for ${msg.ns}/${msg.kind}.` } });
  };
}

test("request resolves data and buffers; errors resolve status error", async () => {
  const model = bridge();
  echoKernel(model);
  const api = globalThis.__jupyter_loopback__;
  const reply = await api.request("t", "echo", { a: 1 }, [new Uint8Array([1, 2, 3]), new Uint8Array([9, 8]).subarray(1)]);
  assert.equal(reply.status, "ok");
  assert.deepEqual(reply.data, { echo: { a: 1 } });
  assert.deepEqual(reply.buffers.map((b) => [...b]), [[3, 2, 1], [8]]);
  assert.ok(reply.buffers[0] instanceof Uint8Array);
  const missing = await api.request("t", "nope");
  assert.equal(missing.status, "error");
  assert.match(missing.data.message, /No handler for t\/nope/);
});

test("large request buffers and replies travel in CHUNK pieces", async () => {
  const model = bridge();
  let head = null;
  const parts = [];
  model.kernel = (msg, buffers) => {
    if (msg.op === "request") return void (head = msg);
    if (msg.op !== "body") return;
    parts.push(...buffers);
    model.reply({ op: "credit", id: msg.id, bytes: buffers.reduce((n, b) => n + b.byteLength + 64, 0) });
    if (!msg.end) return;
    const whole = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
    parts.reduce((at, p) => (whole.set(p, at), at + p.byteLength), 0);
    whole.reverse(); // the "handler"; the reply comes back in pieces too
    model.reply({ op: "reply", id: msg.id, status: "ok", data: "big", sizes: [whole.length - 3, 3] });
    for (let at = 0; at < whole.length; at += CHUNK)
      model.reply({ op: "data", id: msg.id, end: at + CHUNK >= whole.length }, [whole.subarray(at, at + CHUNK)]);
  };
  const a = new Uint8Array(9 * CHUNK + 5).map((_, i) => i % 249);
  const b = new Uint8Array([1, 2, 3]);
  const reply = await globalThis.__jupyter_loopback__.request("t", "big", null, [a, b]);
  assert.deepEqual(head.sizes, [a.length, 3]);
  assert.equal(model.ops("request")[0].buffers.length, 0);
  assert.ok(model.sent.every((m) => m.buffers.every((x) => x.byteLength <= CHUNK)), "no message over CHUNK");
  assert.equal(reply.status, "ok");
  const expected = new Uint8Array([...a, ...b]).reverse();
  assert.deepEqual(reply.buffers.map((x) => x.byteLength), [expected.length - 3, 3]);
  assert.deepEqual(new Uint8Array([...reply.buffers[0], ...reply.buffers[1]]), expected);
});

test("request times out, aborts, and waits for a bridge that appears later", async () => {
  const api = (widget.initialize({ model: new FakeModel() })(), globalThis.__jupyter_loopback__);
  const none = await api.request("t", "echo", null, [], { timeout: 20 });
  assert.equal(none.status, "error");
  assert.match(none.data.message, /enable_comm_bridge/);

  const later = api.request("t", "echo", 5);
  const model = bridge();
  echoKernel(model);
  assert.deepEqual((await later).data, { echo: 5 });

  model.kernel = null; // a kernel that never answers
  const slow = await api.request("t", "echo", 1, [], { timeout: 30 });
  assert.match(slow.data.message, /No reply within 30 ms/);
  const controller = new AbortController();
  const aborted = api.request("t", "echo", 1, [], { signal: controller.signal });
  await settle();
  controller.abort();
  assert.match((await aborted).data.message, /aborted/);
  assert.equal(model.ops("cancel").length, 2, "the kernel hears about both");
});

test("replies are handled once: views do not subscribe, other models are ignored, closing fails pending", async () => {
  const first = bridge();
  const second = bridge();
  const el = { hidden: false };
  widget.render({ model: second, el });
  widget.render({ model: second, el });
  assert.equal(el.hidden, true);
  assert.equal(second.listeners.get("msg:custom").size, 1);
  const api = globalThis.__jupyter_loopback__;
  const pending = api.request("t", "echo", 1);
  await settle();
  const [{ content }] = second.ops("request"); // the newest bridge is used
  assert.equal(first.ops("request").length, 0);
  first.reply({ op: "reply", id: content.id, status: "ok", data: "wrong model" });
  second.reply({ op: "reply", id: content.id, status: "ok", data: "right" });
  second.reply({ op: "reply", id: content.id, status: "ok", data: "duplicate" });
  assert.equal((await pending).data, "right");

  const orphan = api.request("t", "echo", 2);
  await settle();
  cleanups.pop()(); // the second bridge's model is destroyed
  assert.match((await orphan).data.message, /closed/);
  assert.equal(second.listeners.get("msg:custom").size, 0);
});

test("a second copy of the module shares the page's registry", async () => {
  const copy = (await import("../../comm_bridge/static/bridge.js?copy")).default;
  const model = bridge();
  echoKernel(model);
  const api = globalThis.__jupyter_loopback__;
  const other = new FakeModel();
  cleanups.push(copy.initialize({ model: other }));
  assert.equal(globalThis.__jupyter_loopback__, api);
  assert.equal(api.registry.models.length, 2);
});

/** Play the HTTP side of the kernel: answer a fetch with head then the given chunks. */
function httpKernel(model, respond) {
  model.kernel = (msg, buffers) => {
    if (msg.op === "fetch") respond(msg, buffers);
  };
}

test("fetch resolves a real Response whose body streams and is acknowledged as read", async () => {
  const model = bridge();
  let id;
  httpKernel(model, (msg) => {
    id = msg.id;
    model.reply({ op: "head", id, status: 201, reason: "Created", headers: [["content-type", "text/plain"], ["x-a", "1"], ["x-a", "2"]] });
    model.reply({ op: "data", id, end: false }, [new TextEncoder().encode("first ")]);
  });
  const response = await globalThis.__jupyter_loopback__.fetch(8000, "/hello?x=1");
  assert.ok(response instanceof Response);
  assert.equal(response.status, 201);
  assert.equal(response.statusText, "Created");
  assert.equal(response.headers.get("x-a"), "1, 2");
  const [{ content }] = model.ops("fetch");
  assert.deepEqual([content.port, content.path, content.method, content.body], [8000, "/hello?x=1", "GET", false]);
  const reader = response.body.getReader();
  assert.equal(new TextDecoder().decode((await reader.read()).value), "first ", "the first chunk before the last exists");
  const big = new Uint8Array(14 * CHUNK).fill(7);
  for (let at = 0; at < big.length; at += CHUNK) model.reply({ op: "data", id, end: false }, [big.subarray(at, at + CHUNK)]);
  let size = 0;
  while (size < 14 * CHUNK) size += (await reader.read()).value.byteLength;
  const acked = model.ops("ack").reduce((n, m) => n + m.content.bytes, 0);
  assert.ok(acked >= ACK_BYTES, `acknowledged ${acked} bytes as they were read`);
  model.reply({ op: "data", id, end: true }, [new TextEncoder().encode(" last")]);
  assert.equal(new TextDecoder().decode((await reader.read()).value), " last");
  assert.equal((await reader.read()).done, true);
});

test("a reader that stops reading stops acknowledging", async () => {
  const model = bridge();
  httpKernel(model, (msg) => {
    model.reply({ op: "head", id: msg.id, status: 200, reason: "OK", headers: [] });
    for (let i = 0; i < 8; i++) model.reply({ op: "data", id: msg.id, end: false }, [new Uint8Array(CHUNK)]);
  });
  const response = await globalThis.__jupyter_loopback__.fetch(8000, "/bytes");
  await settle();
  assert.equal(model.ops("ack").length, 0, "nothing consumed, nothing acknowledged");
  await response.body.cancel();
  assert.equal(model.ops("cancel").length, 1);
});

test("fetch uploads in chunks with content-length and waits for credit", async () => {
  const model = bridge();
  let id;
  httpKernel(model, (msg) => (id = msg.id));
  const body = new Uint8Array(20 * CHUNK + 3).map((_, i) => i % 251);
  const pending = globalThis.__jupyter_loopback__.fetch(8000, "/upload", { method: "POST", body });
  await settle();
  await settle();
  const [{ content }] = model.ops("fetch");
  assert.equal(content.body, true);
  assert.deepEqual(content.headers.find(([k]) => k === "content-length"), ["content-length", String(body.length)]);
  const sentBefore = model.ops("body").reduce((n, m) => n + m.buffers[0].byteLength, 0);
  assert.ok(sentBefore <= WINDOW, `only a window is sent before credit (${sentBefore})`);
  model.reply({ op: "credit", id, bytes: WINDOW });
  for (let i = 0; i < 10; i++) await settle();
  const chunks = model.ops("body");
  assert.equal(chunks.at(-1).content.end, true);
  const sent = new Uint8Array(chunks.reduce((n, m) => n + m.buffers[0].byteLength, 0));
  chunks.reduce((at, m) => (sent.set(m.buffers[0], at), at + m.buffers[0].byteLength), 0);
  assert.deepEqual(sent, body);
  assert.ok(chunks.every((m) => m.buffers[0].byteLength <= CHUNK));
  model.reply({ op: "head", id, status: 200, reason: "OK", headers: [] });
  model.reply({ op: "data", id, end: true });
  assert.equal(await (await pending).text(), "");
});

test("an empty POST body still ends", async () => {
  const model = bridge();
  model.kernel = (msg) => {
    if (msg.op !== "body" || !msg.end) return; // answer once the whole body is in
    model.reply({ op: "head", id: msg.id, status: 204, reason: "No Content", headers: [] });
    model.reply({ op: "data", id: msg.id, end: true });
  };
  const response = await globalThis.__jupyter_loopback__.fetch(8000, "/upload", { method: "POST", body: "" });
  assert.equal(response.status, 204);
  const [chunk] = model.ops("body");
  assert.deepEqual([chunk.content.end, chunk.buffers.length], [true, 0]);
  assert.deepEqual(model.ops("fetch")[0].content.headers.find(([k]) => k === "content-length"), ["content-length", "0"]);
});

test("refusals answer like the sidecar; a cut stream errors; abort rejects", async () => {
  const model = bridge();
  httpKernel(model, (msg) => model.reply({ op: "error", id: msg.id, status: 502, message: "Nothing is listening on port 9." }));
  const refused = await globalThis.__jupyter_loopback__.fetch(9, "/");
  assert.equal(refused.status, 502);
  assert.equal(await refused.text(), "Nothing is listening on port 9.");

  httpKernel(model, (msg) => {
    model.reply({ op: "head", id: msg.id, status: 200, reason: "OK", headers: [] });
    model.reply({ op: "error", id: msg.id, status: 0, message: "The server dropped the response." });
  });
  const cut = await globalThis.__jupyter_loopback__.fetch(8000, "/die");
  await assert.rejects(cut.arrayBuffer(), /dropped/);

  httpKernel(model, () => {});
  const controller = new AbortController();
  const aborted = globalThis.__jupyter_loopback__.fetch(8000, "/slow", { signal: controller.signal });
  await settle();
  controller.abort();
  await assert.rejects(aborted, { name: "AbortError" });
});

test("same-upstream redirects are followed; 303 turns a POST into a GET", async () => {
  const model = bridge();
  httpKernel(model, (msg) => {
    if (msg.path === "/form") model.reply({ op: "head", id: msg.id, status: 303, reason: "See Other", headers: [["location", "done?ok=1"]] });
    else model.reply({ op: "head", id: msg.id, status: 200, reason: "OK", headers: [] });
    model.reply({ op: "data", id: msg.id, end: true }, [new TextEncoder().encode(msg.method + " " + msg.path)]);
  });
  const response = await globalThis.__jupyter_loopback__.fetch(8000, "/form", { method: "POST", body: "a=1" });
  assert.equal(await response.text(), "GET /done?ok=1");
  const manual = await globalThis.__jupyter_loopback__.fetch(8000, "/form", { method: "POST", body: "a=1", redirect: "manual" });
  assert.equal(manual.status, 303);
});

/** Play a WebSocket upstream that echoes, and closes when asked. */
function wsKernel(model, protocol = "") {
  const partial = [];
  model.kernel = (msg, buffers) => {
    if (msg.op === "ws_open") model.reply({ op: "ws_open", id: msg.id, protocol });
    if (msg.op === "ws_send") {
      msg.frames.forEach(([text, final], i) => {
        partial.push(buffers[i]);
        if (!final) return;
        const parts = partial.splice(0);
        const whole = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
        parts.reduce((at, p) => (whole.set(p, at), at + p.byteLength), 0);
        // Echo back in CHUNK pieces, as the kernel does.
        for (let at = 0; at < Math.max(whole.byteLength, 1); at += CHUNK)
          model.reply({ op: "ws_data", id: msg.id, frames: [[text, at + CHUNK >= whole.byteLength ? 1 : 0]] }, [whole.subarray(at, at + CHUNK)]);
      });
    }
    if (msg.op === "ws_close") model.reply({ op: "ws_closed", id: msg.id, code: msg.code, reason: msg.reason });
  };
}

function nextEvent(target, type) {
  return new Promise((resolve) => target.addEventListener(type, resolve, { once: true }));
}

test("openWebSocket: events, every send type in order, binaryType, close code", async () => {
  const model = bridge();
  wsKernel(model, "b");
  const ws = globalThis.__jupyter_loopback__.openWebSocket(8000, "/ws", ["a", "b"]);
  assert.equal(ws.readyState, ws.CONNECTING);
  assert.throws(() => ws.send("too early"), { name: "InvalidStateError" });
  let onopen = 0;
  ws.onopen = () => (onopen += 1);
  await nextEvent(ws, "open");
  assert.equal(onopen, 1);
  assert.equal(ws.protocol, "b");
  assert.deepEqual(model.ops("ws_open")[0].content.protocols, ["a", "b"]);

  const got = [];
  ws.binaryType = "arraybuffer";
  ws.onmessage = (event) => got.push(event.data);
  const before = model.ops("ws_send").length;
  ws.send("one");
  ws.send(new Uint8Array([1, 2, 3]).subarray(1));
  ws.send(new Blob([new Uint8Array([4])]));
  ws.send(new Uint16Array([0x0605]).buffer);
  ws.send("five");
  assert.ok(ws.bufferedAmount > 0);
  while (got.length < 5) await nextEvent(ws, "message");
  assert.equal(got[0], "one");
  assert.deepEqual([...new Uint8Array(got[1])], [2, 3]);
  assert.deepEqual([...new Uint8Array(got[2])], [4]);
  assert.deepEqual([...new Uint8Array(got[3])], [5, 6]);
  assert.equal(got[4], "five");
  assert.ok(model.ops("ws_send").length - before <= 3, "sends in one turn share comm messages");

  ws.binaryType = "blob";
  const big = new Uint8Array(3 * CHUNK + 1).map((_, i) => i % 253);
  ws.send(big);
  const message = await nextEvent(ws, "message");
  assert.ok(message.data instanceof Blob);
  assert.deepEqual(new Uint8Array(await message.data.arrayBuffer()), big);
  assert.ok(model.ops("ws_send").every((m) => m.buffers.every((b) => b.byteLength <= CHUNK)));

  assert.throws(() => ws.close(1001), { name: "InvalidAccessError" });
  ws.send("last");
  ws.close(4321, "bye");
  assert.equal(ws.readyState, ws.CLOSING);
  const closed = await nextEvent(ws, "close");
  assert.equal(got.at(-1), "last", "frames sent before close arrive first");
  assert.deepEqual([closed.code, closed.reason, closed.wasClean], [4321, "bye", true]);
  assert.equal(ws.readyState, ws.CLOSED);
  const closeAt = model.sent.findIndex((m) => m.content.op === "ws_close");
  assert.ok(model.sent.slice(0, closeAt).some((m) => m.content.op === "ws_send" && m.buffers.some((b) => new TextDecoder().decode(b) === "last")));
});

test("openWebSocket: a refused upstream fires error then close 1006; server push and server close", async () => {
  const model = bridge();
  model.kernel = (msg) => model.reply({ op: "error", id: msg.id, status: 502, message: "Nothing is accepting WebSockets on port 9." });
  const refused = globalThis.__jupyter_loopback__.openWebSocket(9, "/ws");
  const order = [];
  refused.onerror = (event) => order.push(["error", event.message]);
  refused.onclose = (event) => order.push(["close", event.code]);
  await nextEvent(refused, "close");
  assert.deepEqual(order, [["error", "Nothing is accepting WebSockets on port 9."], ["close", 1006]]);

  wsKernel(model);
  const ws = globalThis.__jupyter_loopback__.openWebSocket(8000, "/push");
  await nextEvent(ws, "open");
  const id = model.ops("ws_open").at(-1).content.id;
  const texts = [];
  ws.addEventListener("message", (event) => texts.push(event.data));
  const frames = Array.from({ length: 100 }, () => [1, 1]);
  model.reply({ op: "ws_data", id, frames }, frames.map((_, i) => new TextEncoder().encode(String(i))));
  for (let i = 100; i < 200; i++) model.reply({ op: "ws_data", id, frames: [[1, 1]] }, [new TextEncoder().encode(String(i))]);
  assert.deepEqual(texts, Array.from({ length: 200 }, (_, i) => String(i)));
  assert.ok(model.ops("ack").some((m) => m.content.id === id), "server push is acknowledged");
  model.reply({ op: "ws_closed", id, code: 4000, reason: "server says bye" });
  assert.equal(ws.readyState, ws.CLOSED);
});
