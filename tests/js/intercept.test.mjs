// The interception's pure parts under node's test runner: the srcset and
// text/event-stream parsers, and which URLs the routing table claims. The
// patched browser APIs themselves are tested in Chromium (tests/comm_bridge/test_intercept_browser.py).
import assert from "node:assert/strict";
import { test } from "node:test";

import { EventStream } from "../../comm_bridge/js/eventsource.js";
import { parseSrcset, serializeSrcset } from "../../comm_bridge/js/images.js";
import { Interceptor } from "../../comm_bridge/js/intercept.js";

test("parseSrcset splits candidates as the HTML parser does", () => {
  assert.deepEqual(parseSrcset("a.png 1x, b.png 2x"), [
    { url: "a.png", descriptor: "1x" },
    { url: "b.png", descriptor: "2x" },
  ]);
  // Commas inside a URL stay; a trailing comma ends a URL with no descriptor.
  assert.deepEqual(parseSrcset("  http://h/a,b.png 100w,c.png,  d.png 2x "), [
    { url: "http://h/a,b.png", descriptor: "100w" },
    { url: "c.png", descriptor: "" },
    { url: "d.png", descriptor: "2x" },
  ]);
  assert.deepEqual(parseSrcset("e.png (x, y) 2x, f.png"), [
    { url: "e.png", descriptor: "(x, y) 2x" },
    { url: "f.png", descriptor: "" },
  ]);
  assert.deepEqual(parseSrcset(" , "), []);
  assert.equal(serializeSrcset(parseSrcset("a.png 1x,b.png")), "a.png 1x, b.png");
});

test("EventStream parses fields and line endings split anywhere; an event waits for its blank line", () => {
  const stream = new EventStream();
  assert.deepEqual(stream.push("\ufeffretry: 250\nevent: greet\nid: 7\ndata: a"), []);
  assert.deepEqual(stream.push("\r"), []);
  assert.deepEqual(stream.push("\ndata:b\r\r: comment\n\ndata\n\n"), [
    { type: "greet", data: "a\nb", lastEventId: "7" },
    { type: "message", data: "", lastEventId: "7" },
  ]);
  assert.equal(stream.retry, 250);
  assert.deepEqual(stream.push("id: 8\nretry: x\n\nid\n\n"), []);
  assert.equal(stream.lastEventId, "", "an empty id resets the last event id");
  assert.equal(stream.retry, 250, "a retry that is not digits is ignored");
  assert.deepEqual(stream.push("id: a\0b\ndata: x\n\ndata: cut off\n"), [{ type: "message", data: "x", lastEventId: "" }]);
});

test("Interceptor claims registered loopback ports and same-origin URLs under a route, nothing else", () => {
  const ic = new Interceptor(/** @type {any} */ ({}));
  const base = "http://lab.example:8888/user/a/lab/tree/x.ipynb";
  assert.equal(ic.match("http://127.0.0.1:8000/x", base), null, "nothing registered");
  ic.ports.set("8000", null);
  ic.ports.set("9000", "/user/a/mylib-proxy/9000");
  ic.prefixes.set("/user/a/mylib-proxy/9000", 9000);
  const claimed = (href) => {
    const t = ic.match(href, base);
    return t && [t.port, t.path, t.prefix, t.loopback];
  };
  assert.deepEqual(claimed("http://127.0.0.1:8000/tiles/1.png?a=b#f"), [8000, "/tiles/1.png?a=b", null, true]);
  assert.deepEqual(claimed("http://localhost:8000"), [8000, "/", null, true]);
  assert.deepEqual(claimed("ws://127.0.0.1:9000/ws"), [9000, "/ws", "/user/a/mylib-proxy/9000", true]);
  assert.deepEqual(claimed("/user/a/mylib-proxy/9000/api?q=1"), [9000, "/api?q=1", "/user/a/mylib-proxy/9000", false]);
  assert.deepEqual(claimed("ws://lab.example:8888/user/a/mylib-proxy/9000"), [9000, "/", "/user/a/mylib-proxy/9000", false]);
  for (const other of [
    "http://127.0.0.1:8001/x", // not registered
    "https://127.0.0.1:8000/x", // not plain HTTP
    "http://127.0.0.2:8000/x",
    "http://example.com:8000/x",
    "http://other.example:8888/user/a/mylib-proxy/9000/x", // another origin
    "/user/a/mylib-proxy/90001/x", // a longer prefix
    "/user/a/lab",
    "data:,x",
    "http://[::1",
  ])
    assert.equal(ic.match(other, base), null, other);
  const target = /** @type {any} */ (ic.match("http://127.0.0.1:9000/a/b?c#d", base));
  assert.equal(ic.routed(target, base), "http://lab.example:8888/user/a/mylib-proxy/9000/a/b?c");
  assert.equal(ic.routed(target, base, true), "ws://lab.example:8888/user/a/mylib-proxy/9000/a/b?c");
  assert.equal(ic.known(/** @type {any} */ (ic.match("http://127.0.0.1:8000/", base))), "comm");
});
