// Generated from comm_bridge/js/ by `make js` (tools/bundle_js.mjs): edit those files, not this one.
// Its JSDoc and types are there; `npm run typecheck` checks them.

// comm_bridge/js/protocol.js
var CHUNK = 1 << 20;
var SEND_CHUNK = 256 << 10;
var BATCH_FRAMES = 64;
var WAIT_FOR_BRIDGE_MS = 1e4;
var NO_BRIDGE = "No comm bridge is running: call comm_bridge.enable_comm_bridge() in the kernel.";
function bytes(b) {
  if (b instanceof Uint8Array) return b;
  if (ArrayBuffer.isView(b)) return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  return new Uint8Array(b);
}
function exact(b) {
  const view = bytes(b);
  const whole = view.byteOffset === 0 && view.byteLength === view.buffer.byteLength;
  return (
    /** @type {ArrayBuffer} */
    whole ? view.buffer : view.slice().buffer
  );
}
function failure(message) {
  return { status: "error", data: { message }, buffers: [] };
}
var ORDER = /* @__PURE__ */ Symbol.for("jupyter_loopback.order");
function post(model, content, buffers = []) {
  const m = (
    /** @type {any} */
    model
  );
  const order = m[ORDER] ??= { src: Math.random().toString(36).slice(2), seq: 0 };
  model.send({ ...content, src: order.src, seq: order.seq++ }, void 0, buffers.map(exact));
}
function abortError(signal) {
  return signal.reason ?? new DOMException("The operation was aborted.", "AbortError");
}
function concat(parts) {
  if (parts.length === 1) return parts[0];
  const whole = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  parts.reduce((at, p) => (whole.set(p, at), at + p.byteLength), 0);
  return whole;
}
function split(whole, sizes) {
  let at = 0;
  return sizes.map((n) => whole.subarray(at, at += n));
}

// comm_bridge/js/flow.js
var WINDOW = 16 << 20;
var WINDOW_MESSAGES = 256;
var ACK_BYTES = WINDOW * 3 / 4;
var ACK_MESSAGES = WINDOW_MESSAGES / 4;
var FRAME_COST = 64;
var Credit = class {
  constructor() {
    this.inflight = 0;
    this.waiting = [];
  }
  /** @param {number} cost */
  fits(cost) {
    return this.inflight === 0 || this.inflight + cost <= WINDOW;
  }
  /** @param {number} cost */
  async take(cost) {
    while (!this.fits(cost)) await new Promise((resolve) => this.waiting.push(() => resolve(void 0)));
    this.inflight += cost;
  }
  /** @param {number} amount */
  give(amount) {
    this.inflight = Math.max(0, this.inflight - amount);
    for (const wake of this.waiting.splice(0)) wake();
  }
};
async function upload(model, id, body, credit, stopped) {
  const send = async (piece, last) => {
    await credit.take(piece.byteLength + FRAME_COST);
    if (!stopped()) post(model, { op: "body", id, end: last }, piece.byteLength || !last ? [piece] : []);
  };
  if (body instanceof Uint8Array) {
    let at = 0;
    do {
      await send(body.subarray(at, at + SEND_CHUNK), at + SEND_CHUNK >= body.byteLength);
      at += SEND_CHUNK;
    } while (at < body.byteLength && !stopped());
    return;
  }
  const reader = body.getReader();
  for (; ; ) {
    const { done, value } = await reader.read();
    if (stopped()) return void reader.cancel();
    if (done) return send(new Uint8Array(0), true);
    for (let at = 0; at < value.byteLength; at += SEND_CHUNK) await send(value.subarray(at, at + SEND_CHUNK), false);
  }
}

// comm_bridge/js/fetch.js
var MAX_REDIRECTS = 20;
var NULL_BODY = /* @__PURE__ */ new Set([101, 103, 204, 205, 304]);
var REDIRECT = /* @__PURE__ */ new Set([301, 302, 303, 307, 308]);
function exchange(registry, model, port, path, method, headers, body, signal) {
  const id = registry.id();
  return new Promise((resolve, reject) => {
    let controller = null;
    let settled = false;
    let finished = false;
    let delivered = 0;
    let ackedBytes = 0;
    let received = 0;
    let ackedMessages = 0;
    const credit = new Credit();
    const ack = () => {
      if (finished || !controller) return;
      const queued = Math.max(0, CHUNK - (controller.desiredSize ?? CHUNK));
      const size = delivered - queued - ackedBytes;
      const messages = received - ackedMessages;
      if (size < ACK_BYTES && messages < ACK_MESSAGES) return;
      ackedBytes += Math.max(0, size);
      ackedMessages += messages;
      post(model, { op: "ack", id, bytes: Math.max(0, size), messages });
    };
    const end = (reason) => {
      finished = true;
      registry.pending.delete(id);
      signal?.removeEventListener("abort", abort);
      credit.give(Infinity);
      if (reason !== void 0) post(model, { op: "cancel", id });
    };
    const fail = (error) => {
      if (finished) return;
      end();
      if (!settled) reject(error);
      else controller?.error(error);
      settled = true;
    };
    const abort = () => {
      if (finished) return;
      const error = abortError(
        /** @type {AbortSignal} */
        signal
      );
      fail(error);
      post(model, { op: "cancel", id });
    };
    const handle = (msg, buffers) => {
      if (msg.op === "head") {
        const stream = new ReadableStream(
          {
            start: (c) => {
              controller = c;
            },
            pull: ack,
            cancel: (reason) => end(reason ?? "cancelled")
          },
          new ByteLengthQueuingStrategy({ highWaterMark: CHUNK })
        );
        const status = Number(msg.status);
        const statusText = /^[\t\x20-\x7e\x80-\xff]*$/.test(msg.reason) ? msg.reason : "";
        const head = new Headers();
        for (const [name, value] of msg.headers) {
          try {
            head.append(name, value);
          } catch {
          }
        }
        const nullBody = NULL_BODY.has(status) || method === "HEAD";
        try {
          resolve(new Response(nullBody ? null : stream, { status, statusText, headers: head }));
          settled = true;
        } catch (err) {
          fail(new TypeError(`The upstream answered status ${status}, which a Response cannot carry.`));
        }
      } else if (msg.op === "data") {
        received += 1;
        for (const chunk of buffers) {
          delivered += chunk.byteLength;
          controller?.enqueue(chunk);
        }
        if (msg.end) {
          end();
          controller?.close();
        } else ack();
      } else if (msg.op === "credit") {
        credit.give(Number(msg.bytes));
      } else if (msg.op === "error") {
        if (!settled && msg.status) {
          end();
          settled = true;
          const headers2 = { "content-type": "text/plain; charset=utf-8", "x-jupyter-loopback-error": "1" };
          resolve(new Response(String(msg.message), { status: msg.status, headers: headers2 }));
        } else fail(new TypeError(String(msg.message)));
      }
    };
    registry.pending.set(id, { model, handle, fail: (message) => fail(new TypeError(message)) });
    if (signal?.aborted) return abort();
    signal?.addEventListener("abort", abort, { once: true });
    post(model, { op: "fetch", id, port, path, method, headers, body: body !== null });
    if (body !== null) upload(model, id, body, credit, () => finished).catch((err) => fail(new TypeError(String(err))));
  });
}
async function bridgeFetch(registry, port, path, init = {}) {
  const signal = init.signal ?? void 0;
  if (signal?.aborted) throw abortError(signal);
  const streaming = typeof ReadableStream !== "undefined" && init.body instanceof ReadableStream;
  const probe = new Request("http://127.0.0.1/", {
    method: init.method,
    headers: init.headers,
    body: init.body,
    ...streaming ? { duplex: "half" } : {}
  });
  let method = probe.method;
  let headers = [...probe.headers];
  let body = null;
  if (streaming) body = /** @type {ReadableStream<Uint8Array>} */
  probe.body;
  else if (probe.body) body = new Uint8Array(await probe.arrayBuffer());
  if (body instanceof Uint8Array) headers.push(["content-length", String(body.byteLength)]);
  const model = await registry.model(WAIT_FOR_BRIDGE_MS);
  if (!model) throw new TypeError(NO_BRIDGE);
  let current = path.startsWith("/") ? path : `/${path}`;
  for (let hop = 0; ; hop++) {
    const response = await exchange(registry, model, port, current, method, headers, body, signal);
    if (!REDIRECT.has(response.status) || init.redirect === "manual") return response;
    const location = response.headers.get("location");
    const next = location === null ? null : new URL(location, `http://upstream${current}`);
    if (next === null || next.origin !== "http://upstream") return response;
    if (init.redirect === "error") {
      await response.body?.cancel();
      throw new TypeError(`The server on port ${port} redirected and init.redirect is "error".`);
    }
    const toGet = response.status === 303 ? method !== "HEAD" : response.status <= 302 && method === "POST";
    if (!toGet && body !== null && !(body instanceof Uint8Array)) return response;
    if (hop >= MAX_REDIRECTS) throw new TypeError(`Too many redirects from port ${port}.`);
    await response.body?.cancel();
    if (toGet) {
      method = "GET";
      body = null;
      headers = headers.filter(([name]) => !name.startsWith("content-"));
    }
    current = next.pathname + next.search;
  }
}

// comm_bridge/js/handler_target.js
var HandlerTarget = class extends EventTarget {
  /** @param {Event} event */
  _fire(event) {
    const handler = (
      /** @type {any} */
      this[`on${event.type}`]
    );
    if (typeof handler === "function") handler.call(this, event);
    this.dispatchEvent(event);
  }
};
function readyStates(cls, names) {
  const constants = Object.fromEntries(names.map((name, value) => [name, { value, enumerable: true }]));
  Object.defineProperties(cls, constants);
  Object.defineProperties(cls.prototype, constants);
}

// comm_bridge/js/eventsource.js
var EventStream = class {
  constructor() {
    this.buffer = "";
    this.started = false;
    this.afterCR = false;
    this.data = [];
    this.type = "";
    this.lastEventId = "";
    this.retry = null;
  }
  /** @param {string} text @returns {{type: string, data: string, lastEventId: string}[]} */
  push(text) {
    if (!this.started && text) {
      this.started = true;
      if (text.startsWith("\uFEFF")) text = text.slice(1);
    }
    if (this.afterCR && text.startsWith("\n")) text = text.slice(1);
    if (text) this.afterCR = false;
    this.buffer += text;
    const events = [];
    const lines = this.buffer.split(/\r\n|\r|\n/);
    this.buffer = /** @type {string} */
    lines.pop();
    if (this.buffer === "" && text.endsWith("\r")) this.afterCR = true;
    for (const line of lines) {
      if (line === "") {
        const { type, data, lastEventId } = this;
        if (data.length) events.push({ type: type || "message", data: data.join("\n"), lastEventId });
        this.data = [];
        this.type = "";
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") this.data.push(value);
      else if (field === "event") this.type = value;
      else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
      else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
    }
    return events;
  }
};
var BridgeEventSource = class extends HandlerTarget {
  /**
   * @param {string} url @param {boolean} withCredentials
   * @param {(init: RequestInit) => Promise<Response>} fetchTarget
   */
  constructor(url, withCredentials, fetchTarget) {
    super();
    this.url = url;
    this.withCredentials = withCredentials;
    this.readyState = 0;
    this.onopen = null;
    this.onmessage = null;
    this.onerror = null;
    this._fetch = fetchTarget;
    this._retry = 3e3;
    this._lastEventId = "";
    this._controller = null;
    this._timer = void 0;
    queueMicrotask(() => this._connect());
  }
  close() {
    this.readyState = 2;
    clearTimeout(this._timer);
    this._controller?.abort();
  }
  async _connect() {
    if (this.readyState === 2) return;
    const controller = this._controller = new AbortController();
    const headers = { accept: "text/event-stream", "cache-control": "no-cache" };
    if (this._lastEventId) headers["last-event-id"] = this._lastEventId;
    try {
      const response = await this._fetch({ headers, signal: controller.signal, cache: "no-store" });
      const type = (response.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
      if (response.status !== 200 || type !== "text/event-stream" || !response.body) {
        await response.body?.cancel();
        if (this.readyState === 2) return;
        this.readyState = 2;
        return this._fire(new Event("error"));
      }
      if (this.readyState === 2) return void response.body.cancel();
      this.readyState = 1;
      this._fire(new Event("open"));
      const stream = new EventStream();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const origin = new URL(this.url).origin;
      for (; ; ) {
        const { done, value } = await reader.read();
        if (done || this.readyState === 2) break;
        for (const event of stream.push(value)) {
          this._lastEventId = event.lastEventId;
          if (this.readyState === 2) break;
          this._fire(new MessageEvent(event.type, { data: event.data, lastEventId: event.lastEventId, origin }));
        }
        this._lastEventId = stream.lastEventId;
        if (stream.retry !== null) this._retry = stream.retry;
      }
    } catch {
    }
    if (this.readyState === 2) return;
    this.readyState = 0;
    this._fire(new Event("error"));
    if (this.readyState !== 2) this._timer = setTimeout(() => this._connect(), this._retry);
  }
};
readyStates(BridgeEventSource, ["CONNECTING", "OPEN", "CLOSED"]);

// comm_bridge/js/routing.js
var UNSAFE_METHODS = /^(?!GET$|HEAD$|OPTIONS$|TRACE$)/i;
function xsrf(win, method) {
  const cookie = /(?:^|;\s*)_xsrf=([^;]*)/.exec(win.document.cookie);
  return cookie && UNSAFE_METHODS.test(method) ? decodeURIComponent(cookie[1]) : null;
}
function routing(win, ic) {
  const native = win.fetch.bind(win);
  const base = () => win.document.baseURI;
  const fetchTarget = async (target, init) => {
    if (await ic.decide(target) === "route") {
      const headers = new Headers(init.headers);
      const token = xsrf(win, init.method || "GET");
      if (token && !headers.has("x-xsrftoken")) headers.set("x-xsrftoken", token);
      const credentials = init.credentials === "include" ? "include" : "same-origin";
      return native(ic.routed(target, base()), { ...init, headers, credentials });
    }
    const response = await ic.shared.fetch(target.port, target.path, init);
    Object.defineProperty(response, "url", { value: target.url.href.replace(/#.*/, "") });
    return response;
  };
  return { native, base, fetch: fetchTarget };
}
function desc(proto, name) {
  return (
    /** @type {PropertyDescriptor} */
    Object.getOwnPropertyDescriptor(proto, name)
  );
}

// comm_bridge/js/images.js
function parseSrcset(text) {
  const out = [];
  let at = 0;
  while (at < text.length) {
    while (at < text.length && /[\s,]/.test(text[at])) at++;
    if (at >= text.length) break;
    const start = at;
    while (at < text.length && !/\s/.test(text[at])) at++;
    let url = text.slice(start, at);
    let descriptor = "";
    if (url.endsWith(",")) url = url.replace(/,+$/, "");
    else {
      const from = at;
      let depth = 0;
      while (at < text.length && (text[at] !== "," || depth > 0)) {
        if (text[at] === "(") depth++;
        else if (text[at] === ")") depth = Math.max(0, depth - 1);
        at++;
      }
      descriptor = text.slice(from, at).trim();
    }
    out.push({ url, descriptor });
  }
  return out;
}
function serializeSrcset(candidates) {
  return candidates.map((c) => c.descriptor ? `${c.url} ${c.descriptor}` : c.url).join(", ");
}
var ImageRouter = class {
  /**
   * @param {Win} win @param {Interceptor} ic @param {Routes} routes
   * @param {(win: Win) => void} patchFrame patches a same-origin iframe's window
   */
  constructor(win, ic, routes, patchFrame) {
    this.win = win;
    this.ic = ic;
    this.routes = routes;
    this.patchFrame = patchFrame;
    const img = win.HTMLImageElement.prototype;
    const source = win.HTMLSourceElement.prototype;
    this.natives = /* @__PURE__ */ new Map();
    this.natives.set(img, { src: desc(img, "src"), srcset: desc(img, "srcset") });
    this.natives.set(source, { srcset: desc(source, "srcset") });
    this.removeAttribute = win.Element.prototype.removeAttribute;
    this.states = /* @__PURE__ */ new WeakMap();
    this.frames = /* @__PURE__ */ new WeakSet();
  }
  /** Whether `attr` of `el` carries image URLs. @param {Element} el @param {string} attr */
  carries(el, attr) {
    const { HTMLImageElement, HTMLSourceElement } = this.win;
    const img = el instanceof HTMLImageElement;
    return attr === "src" && img || attr === "srcset" && (img || el instanceof HTMLSourceElement);
  }
  /**
   * Route `value` for `attr` of `el`; false when it is not ours (the caller
   * sets it natively). `parsed`: the attribute already holds the value.
   * @param {Element} el @param {string} attr @param {string} value @param {boolean} [parsed]
   */
  route(el, attr, value, parsed = false) {
    const base = this.routes.base();
    const candidates = attr === "src" ? [{ url: value, descriptor: "" }] : parseSrcset(value);
    const targets = candidates.map((c) => this.ic.match(c.url.trim(), base));
    const ours = targets.some(Boolean);
    if (parsed && (!ours || this.states.get(el)?.pending[attr] === value)) return false;
    if (!ours) {
      const state2 = this.states.get(el);
      if (state2) this.forget(state2, attr);
      return false;
    }
    const state = this.stateOf(el);
    this.forget(state, attr);
    const seq = state.seq;
    const rewrite = (urls) => attr === "src" ? urls[0] : serializeSrcset(candidates.map((c, i) => ({ ...c, url: urls[i] })));
    if (targets.every((t) => !t || this.ic.known(t) === "route")) {
      if (parsed && !targets.some((t) => t?.loopback)) return true;
      this.set(el, attr, rewrite(candidates.map((c, i) => this.routedOr(targets[i], c.url, base))));
      return true;
    }
    state.pending[attr] = value;
    if (parsed) this.removeAttribute.call(el, attr);
    const created = [];
    const settle = async (target, url) => {
      if (!target || await this.ic.decide(target) === "route") return this.routedOr(target, url, base);
      const response = await this.routes.fetch(target, {});
      if (!response.ok) throw new TypeError(`${target.url.href} answered ${response.status}.`);
      const objectUrl = URL.createObjectURL(await response.blob());
      created.push(objectUrl);
      return objectUrl;
    };
    Promise.all(candidates.map((c, i) => settle(targets[i], c.url))).then(
      (urls) => {
        if (state.seq !== seq) return void created.forEach((u) => URL.revokeObjectURL(u));
        delete state.pending[attr];
        state.urls.push(...created);
        this.set(el, attr, rewrite(urls));
      },
      (err) => {
        created.forEach((u) => URL.revokeObjectURL(u));
        if (state.seq !== seq) return;
        delete state.pending[attr];
        console.warn("comm_bridge: could not load an intercepted image:", err);
        el.dispatchEvent(new Event("error"));
      }
    );
    return true;
  }
  /** Route the image attributes `el` already holds (parsed HTML). @param {Element} el */
  check(el) {
    for (const attr of ["src", "srcset"]) {
      const value = el.getAttribute(attr);
      if (value !== null && this.carries(el, attr)) this.route(el, attr, value, true);
    }
  }
  /** `check` `node` and every image element under it; patch the same-origin iframes there. @param {Node} node */
  scan(node) {
    if (!(node instanceof this.win.Element)) return;
    this.check(node);
    for (const el of node.querySelectorAll("img[src], img[srcset], source[srcset]")) this.check(el);
    for (const frame of [node, ...node.querySelectorAll("iframe")])
      if (frame instanceof this.win.HTMLIFrameElement) this.frame(frame);
  }
  /**
   * Patch a same-origin iframe's window now, before its `srcdoc` runs (folium
   * and other HTML outputs draw their maps in one), and its new document on
   * each load. A cross-origin iframe is left alone.
   * @param {HTMLIFrameElement} frame
   */
  frame(frame) {
    const enter = () => {
      try {
        const win = (
          /** @type {Win | null} */
          frame.contentWindow
        );
        if (win?.document) this.patchFrame(win);
      } catch {
      }
    };
    if (!this.frames.has(frame)) {
      this.frames.add(frame);
      frame.addEventListener("load", enter);
    }
    enter();
  }
  /** @param {Target | null} target @param {string} url @param {string} base */
  routedOr(target, url, base) {
    return target?.loopback ? this.ic.routed(target, base) : url;
  }
  /** @param {Element} el @param {string} attr @param {string} value */
  set(el, attr, value) {
    const { HTMLImageElement, HTMLSourceElement } = this.win;
    const proto = el instanceof HTMLImageElement ? HTMLImageElement.prototype : HTMLSourceElement.prototype;
    const d = (
      /** @type {Record<string, PropertyDescriptor>} */
      this.natives.get(proto)[attr]
    );
    d.set.call(el, value);
  }
  /**
   * A new URL replaces the last: its object URLs go, its answer in flight is dropped.
   * @param {{urls: string[], pending: Record<string, string>, seq: number}} state @param {string} attr
   */
  forget(state, attr) {
    for (const url of state.urls.splice(0)) URL.revokeObjectURL(url);
    delete state.pending[attr];
    state.seq++;
  }
  /**
   * The element's state, created with the listeners that revoke its object
   * URLs once the image they fed has loaded or failed. A `<source>` is
   * watched through its `<picture>`'s `<img>`, which loads for it.
   * @param {Element} el
   */
  stateOf(el) {
    let state = this.states.get(el);
    if (state) return state;
    state = { urls: [], pending: {}, seq: 0 };
    this.states.set(el, state);
    if (el instanceof this.win.HTMLImageElement) {
      const done = () => {
        const picture = el.parentElement instanceof this.win.HTMLPictureElement ? [...el.parentElement.children] : [];
        for (const each of [el, ...picture]) {
          const s = this.states.get(each);
          if (s?.urls.includes(el.currentSrc)) s.urls.splice(0).forEach((u) => URL.revokeObjectURL(u));
        }
      };
      el.addEventListener("load", done);
      el.addEventListener("error", done);
    } else {
      const img = el.parentElement?.querySelector(":scope > img");
      if (img) this.stateOf(img);
    }
    return state;
  }
};
function patchImages(win, images) {
  for (const [proto, attrs] of images.natives) {
    for (const [attr, d] of Object.entries(attrs)) {
      Object.defineProperty(proto, attr, {
        ...d,
        /** @this {Element} @param {string} value */
        set(value) {
          if (!images.route(this, attr, String(value))) d.set.call(this, value);
        }
      });
    }
  }
  const setAttribute = win.Element.prototype.setAttribute;
  win.Element.prototype.setAttribute = function(name, value) {
    const attr = String(name).toLowerCase();
    if (!images.carries(this, attr) || !images.route(this, attr, String(value))) setAttribute.call(this, name, value);
  };
}
function patchParsedHtml(win, images) {
  const element = win.Element.prototype;
  for (const name of ["innerHTML", "outerHTML"]) {
    const d = desc(element, name);
    Object.defineProperty(element, name, {
      ...d,
      /** @this {Element} @param {string} html */
      set(html) {
        const parent = this.parentElement;
        d.set.call(this, html);
        images.scan(name === "innerHTML" ? this : parent ?? this);
      }
    });
  }
  const adjacent = element.insertAdjacentHTML;
  element.insertAdjacentHTML = function(position, html) {
    adjacent.call(this, position, html);
    images.scan(this.parentElement ?? this);
  };
  const contextual = win.Range.prototype.createContextualFragment;
  win.Range.prototype.createContextualFragment = function(html) {
    const fragment = contextual.call(this, html);
    for (const child of fragment.children) images.scan(child);
    return fragment;
  };
}
function observeDocument(win, images) {
  const doc = win.document;
  if (images.ic.observed.has(doc)) return;
  images.ic.observed.add(doc);
  const observer = new win.MutationObserver((records) => {
    for (const record of records) {
      if (record.type === "attributes") images.check(
        /** @type {Element} */
        record.target
      );
      else record.addedNodes.forEach((node) => images.scan(node));
    }
  });
  const attributeFilter = ["src", "srcset"];
  observer.observe(doc, { subtree: true, childList: true, attributes: true, attributeFilter });
  images.scan(doc.documentElement);
}

// comm_bridge/js/websocket.js
var BridgeWebSocket = class extends HandlerTarget {
  /** @param {Registry} registry @param {number} port @param {string} path @param {string | string[]} [protocols] */
  constructor(registry, port, path, protocols = []) {
    super();
    this.url = `ws://127.0.0.1:${port}${path.startsWith("/") ? path : `/${path}`}`;
    this.readyState = 0;
    this.protocol = "";
    this.extensions = "";
    this._binaryType = "blob";
    this.onopen = null;
    this.onmessage = null;
    this.onerror = null;
    this.onclose = null;
    this._registry = registry;
    this._id = registry.id();
    this._model = null;
    this._outbox = [];
    this._queued = 0;
    this._flushing = false;
    this._credit = new Credit();
    this._partial = [];
    this._received = 0;
    this._receivedCost = 0;
    const list = typeof protocols === "string" ? [protocols] : [...protocols];
    registry.model(WAIT_FOR_BRIDGE_MS).then((model) => {
      if (this.readyState === 3) return;
      if (!model) return this._closed(1006, "", NO_BRIDGE);
      this._model = model;
      registry.pending.set(this._id, {
        model,
        handle: (msg, buffers) => this._handle(msg, buffers),
        fail: (message) => this._closed(1006, "", message)
      });
      post(model, { op: "ws_open", id: this._id, port, path: this.url.slice(this.url.indexOf("/", 5)), protocols: list });
      this._flush();
    });
  }
  get binaryType() {
    return this._binaryType;
  }
  set binaryType(value) {
    if (value === "blob" || value === "arraybuffer") this._binaryType = value;
  }
  /** Bytes accepted by `send` that the kernel has not yet passed upstream. */
  get bufferedAmount() {
    return this._queued + this._credit.inflight;
  }
  /** @param {string | ArrayBufferLike | Blob | ArrayBufferView} data */
  send(data) {
    if (this.readyState === 0) throw new DOMException("The WebSocket is still connecting.", "InvalidStateError");
    if (this.readyState !== 1) return;
    if (typeof data === "string") this._outbox.push({ text: true, data: new TextEncoder().encode(data) });
    else if (typeof Blob !== "undefined" && data instanceof Blob)
      this._outbox.push(data.arrayBuffer().then((b) => new Uint8Array(b)));
    else this._outbox.push({ text: false, data: bytes(
      /** @type {Bytes} */
      data
    ).slice() });
    const last = this._outbox[this._outbox.length - 1];
    if ("data" in last) this._queued += last.data.byteLength;
    this._schedule();
  }
  /** @param {number} [code] @param {string} [reason] */
  close(code, reason = "") {
    if (code !== void 0 && code !== 1e3 && !(code >= 3e3 && code <= 4999))
      throw new DOMException(`The close code ${code} is neither 1000 nor in 3000-4999.`, "InvalidAccessError");
    if (new TextEncoder().encode(reason).byteLength > 123)
      throw new DOMException("The close reason is longer than 123 bytes.", "SyntaxError");
    if (this.readyState >= 2) return;
    this.readyState = 2;
    this._outbox.push({ close: [code ?? 1e3, reason] });
    this._schedule();
  }
  _schedule() {
    if (!this._flushing && this._model) {
      this._flushing = true;
      queueMicrotask(() => this._flush());
    }
  }
  /** Send what `send` and `close` queued, in order, batched, as credit allows. */
  async _flush() {
    const model = this._model;
    if (!model) return;
    this._flushing = true;
    try {
      while (this._outbox.length && this.readyState !== 3) {
        const frames = [];
        const pieces = [];
        let cost = 0;
        while (this._outbox.length && frames.length < BATCH_FRAMES && cost < SEND_CHUNK) {
          const item = this._outbox[0];
          if (item instanceof Promise) {
            if (frames.length) break;
            this._outbox[0] = { text: false, data: await item };
            this._queued += /** @type {{data: Uint8Array}} */
            this._outbox[0].data.byteLength;
            continue;
          }
          if ("close" in item) break;
          const piece = item.data.subarray(0, SEND_CHUNK);
          const final = piece.byteLength === item.data.byteLength;
          if (!this._credit.fits(cost + piece.byteLength + FRAME_COST) && frames.length) break;
          frames.push([item.text ? 1 : 0, final ? 1 : 0]);
          pieces.push(piece);
          cost += piece.byteLength + FRAME_COST;
          this._queued -= piece.byteLength;
          if (final) this._outbox.shift();
          else item.data = item.data.subarray(SEND_CHUNK);
        }
        if (frames.length) {
          await this._credit.take(cost);
          if (this.readyState === 3) return;
          post(model, { op: "ws_send", id: this._id, frames }, pieces);
        } else {
          const item = (
            /** @type {{close: [number, string]}} */
            this._outbox.shift()
          );
          post(model, { op: "ws_close", id: this._id, code: item.close[0], reason: item.close[1] });
        }
      }
    } finally {
      this._flushing = false;
    }
  }
  /** @param {any} msg @param {Uint8Array[]} buffers */
  _handle(msg, buffers) {
    if (msg.op === "ws_open") {
      this.protocol = String(msg.protocol || "");
      if (this.readyState !== 0) return;
      this.readyState = 1;
      this._fire(new Event("open"));
    } else if (msg.op === "ws_data") {
      this._received += 1;
      msg.frames.forEach(([text, final], i) => {
        this._partial.push(buffers[i]);
        this._receivedCost += buffers[i].byteLength + FRAME_COST;
        if (final) this._message(Boolean(text), this._partial.splice(0));
      });
      if (this._receivedCost >= ACK_BYTES || this._received >= ACK_MESSAGES) {
        post(
          /** @type {Model} */
          this._model,
          {
            op: "ack",
            id: this._id,
            bytes: this._receivedCost,
            messages: this._received
          }
        );
        this._received = this._receivedCost = 0;
      }
    } else if (msg.op === "credit") {
      this._credit.give(Number(msg.bytes));
    } else if (msg.op === "ws_closed") {
      this._closed(Number(msg.code), String(msg.reason || ""));
    } else if (msg.op === "error") {
      this._closed(1006, "", String(msg.message));
    }
  }
  /** @param {boolean} text @param {Uint8Array[]} parts */
  _message(text, parts) {
    if (this.readyState !== 1 && this.readyState !== 2) return;
    const whole = concat(parts);
    let data;
    if (text) data = new TextDecoder().decode(whole);
    else if (this._binaryType === "arraybuffer") data = exact(whole);
    else data = new Blob([exact(whole)]);
    this._fire(new MessageEvent("message", { data, origin: this.url.slice(0, this.url.indexOf("/", 5)) }));
  }
  /** @param {number} code @param {string} reason @param {string} [error] */
  _closed(code, reason, error) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this._registry.pending.delete(this._id);
    this._credit.give(Infinity);
    if (error !== void 0) this._fire(Object.assign(new Event("error"), { message: error }));
    const init = { code, reason, wasClean: code !== 1006 };
    const event = typeof CloseEvent === "function" ? new CloseEvent("close", init) : Object.assign(new Event("close"), init);
    this._fire(event);
  }
};
readyStates(BridgeWebSocket, ["CONNECTING", "OPEN", "CLOSING", "CLOSED"]);

// comm_bridge/js/xhr.js
var XhrExchange = class {
  /** @param {string} method @param {Target} target */
  constructor(method, target) {
    this.method = method.toUpperCase();
    this.target = target;
    this.headers = [];
    this.readyState = 1;
    this.sent = false;
    this.status = 0;
    this.statusText = "";
    this.responseHeaders = null;
    this.parts = [];
    this.body = null;
    this.mime = null;
    this.controller = new AbortController();
    this.cached = null;
  }
  /** The response's MIME type, as overrideMimeType and Content-Type say. */
  contentType() {
    return this.mime ?? this.responseHeaders?.get("content-type") ?? "";
  }
  text() {
    const bytes2 = this.body ?? concat(this.parts.length ? this.parts : [new Uint8Array(0)]);
    const charset = /;\s*charset="?([^";\s]+)/i.exec(this.contentType())?.[1] ?? "utf-8";
    try {
      return new TextDecoder(charset).decode(bytes2);
    } catch {
      return new TextDecoder().decode(bytes2);
    }
  }
  /** @param {Win} win @param {"document" | ""} kind @returns {Document | null} */
  document(win, kind) {
    const mime = this.contentType().split(";")[0].trim().toLowerCase();
    const xml = mime === "text/xml" || mime === "application/xml" || mime.endsWith("+xml");
    if (!xml && !(kind === "document" && mime === "text/html")) return null;
    const parsed = new win.DOMParser().parseFromString(this.text(), xml ? "application/xml" : "text/html");
    return xml && parsed.querySelector("parsererror") ? null : parsed;
  }
  /** `xhr.response` for `type` once DONE. @param {Win} win @param {XMLHttpRequestResponseType} type */
  response(win, type) {
    if (type === "" || type === "text") return this.readyState >= 3 ? this.text() : "";
    if (this.readyState !== 4 || this.status === 0) return null;
    if (this.cached?.type === type) return this.cached.value;
    const body = (
      /** @type {Uint8Array} */
      this.body
    );
    let value = null;
    if (type === "arraybuffer") value = exact(body.slice());
    else if (type === "blob") value = new Blob([exact(body)], { type: this.contentType() });
    else if (type === "document") value = this.document(win, "document");
    else if (type === "json") {
      try {
        value = JSON.parse(new TextDecoder().decode(body));
      } catch {
        value = null;
      }
    }
    this.cached = { type, value };
    return value;
  }
};
function patchXhr(win, ic, routes) {
  const proto = win.XMLHttpRequest.prototype;
  const exchanges = /* @__PURE__ */ new WeakMap();
  const native = {
    open: proto.open,
    send: proto.send,
    setRequestHeader: proto.setRequestHeader,
    abort: proto.abort,
    getResponseHeader: proto.getResponseHeader,
    getAllResponseHeaders: proto.getAllResponseHeaders,
    overrideMimeType: proto.overrideMimeType
  };
  const invalid = (message) => new DOMException(message, "InvalidStateError");
  const fire = (xhr, type, loaded = 0, total = 0) => {
    const init = { lengthComputable: total > 0, loaded, total };
    xhr.dispatchEvent(type === "readystatechange" ? new Event(type) : new ProgressEvent(type, init));
  };
  const fail = (xhr, x, type) => {
    x.controller.abort();
    x.readyState = 4;
    x.status = 0;
    x.statusText = "";
    x.responseHeaders = null;
    x.parts = [];
    fire(xhr, "readystatechange");
    fire(xhr, type);
    fire(xhr, "loadend");
  };
  const run = async (xhr, x, body) => {
    const payload = x.method === "GET" || x.method === "HEAD" || body == null ? void 0 : body instanceof win.Document ? new win.XMLSerializer().serializeToString(body) : body;
    const { signal } = x.controller;
    const late = () => exchanges.get(xhr) === x && !signal.aborted && fail(xhr, x, "timeout");
    const timer = xhr.timeout > 0 ? setTimeout(late, xhr.timeout) : void 0;
    try {
      const response = await routes.fetch(x.target, { method: x.method, headers: x.headers, body: payload, signal });
      if (x.controller.signal.aborted) return void response.body?.cancel();
      x.status = response.status;
      x.statusText = response.statusText;
      x.responseHeaders = response.headers;
      x.readyState = 2;
      fire(xhr, "readystatechange");
      const total = Number(response.headers.get("content-length")) || 0;
      let loaded = 0;
      const reader = response.body?.getReader();
      for (; ; ) {
        const chunk = reader ? await reader.read() : { done: true, value: void 0 };
        if (x.controller.signal.aborted) return void reader?.cancel();
        if (chunk.done || !chunk.value) break;
        x.parts.push(chunk.value);
        loaded += chunk.value.byteLength;
        x.readyState = 3;
        fire(xhr, "readystatechange");
        fire(xhr, "progress", loaded, total);
      }
      x.body = concat(x.parts.length ? x.parts : [new Uint8Array(0)]);
      x.readyState = 4;
      fire(xhr, "readystatechange");
      fire(xhr, "load", loaded, total);
      fire(xhr, "loadend", loaded, total);
    } catch {
      if (!x.controller.signal.aborted) fail(xhr, x, "error");
    } finally {
      clearTimeout(timer);
    }
  };
  Object.assign(proto, {
    /** @this {XMLHttpRequest} @param {string} method @param {string | URL} url @param {any[]} rest */
    open(method, url, ...rest) {
      const old = exchanges.get(this);
      if (old) old.controller.abort();
      exchanges.delete(this);
      const target = ic.match(url, routes.base());
      const sync = rest.length > 0 && !rest[0];
      const way = target && ic.known(target);
      if (target?.loopback && way === "route") url = ic.routed(target, routes.base());
      if (!target || way === "route" || sync) {
        native.open.call(this, method, String(url), .../** @type {[boolean]} */
        rest.length ? rest : [true]);
        const token = way === "route" ? xsrf(win, method) : null;
        if (token) native.setRequestHeader.call(this, "X-XSRFToken", token);
        return;
      }
      exchanges.set(this, new XhrExchange(String(method), target));
      fire(this, "readystatechange");
    },
    /** @this {XMLHttpRequest} @param {Document | XMLHttpRequestBodyInit | null} [body] */
    send(body) {
      const x = exchanges.get(this);
      if (!x) return native.send.call(this, body);
      if (x.readyState !== 1 || x.sent) throw invalid("send() needs an opened, unsent request.");
      x.sent = true;
      fire(this, "loadstart");
      run(this, x, body);
    },
    /** @this {XMLHttpRequest} @param {string} name @param {string} value */
    setRequestHeader(name, value) {
      const x = exchanges.get(this);
      if (!x) return native.setRequestHeader.call(this, name, value);
      if (x.readyState !== 1 || x.sent) throw invalid("setRequestHeader() needs an opened, unsent request.");
      x.headers.push([String(name), String(value)]);
    },
    /** @this {XMLHttpRequest} */
    abort() {
      const x = exchanges.get(this);
      if (!x) return native.abort.call(this);
      if (x.readyState === 1 && x.sent || x.readyState === 2 || x.readyState === 3) fail(this, x, "abort");
      x.controller.abort();
      x.readyState = 0;
    },
    /** @this {XMLHttpRequest} @param {string} name */
    getResponseHeader(name) {
      const x = exchanges.get(this);
      if (!x) return native.getResponseHeader.call(this, name);
      return x.responseHeaders?.get(name) ?? null;
    },
    /** @this {XMLHttpRequest} */
    getAllResponseHeaders() {
      const x = exchanges.get(this);
      if (!x) return native.getAllResponseHeaders.call(this);
      return [...x.responseHeaders ?? []].map(([name, value]) => `${name}: ${value}\r
`).join("");
    },
    /** @this {XMLHttpRequest} @param {string} mime */
    overrideMimeType(mime) {
      const x = exchanges.get(this);
      if (!x) return native.overrideMimeType.call(this, mime);
      if (x.readyState >= 3) throw invalid("overrideMimeType() comes before the response.");
      x.mime = String(mime);
    }
  });
  const getters = {
    readyState: (_, x) => x.readyState,
    status: (_, x) => x.status,
    statusText: (_, x) => x.statusText,
    responseURL: (_, x) => x.readyState >= 2 && x.status ? x.target.url.href.replace(/#.*/, "") : "",
    response: (xhr, x) => x.response(win, xhr.responseType),
    responseText: (xhr, x) => {
      if (xhr.responseType !== "" && xhr.responseType !== "text")
        throw invalid(`responseText needs responseType "" or "text".`);
      return x.response(win, "text");
    },
    responseXML: (xhr, x) => {
      if (xhr.responseType !== "" && xhr.responseType !== "document")
        throw invalid(`responseXML needs responseType "" or "document".`);
      return x.readyState === 4 && x.status ? x.document(win, xhr.responseType) : null;
    }
  };
  for (const [name, answer] of Object.entries(getters)) {
    const d = desc(proto, name);
    Object.defineProperty(proto, name, {
      ...d,
      /** @this {XMLHttpRequest} */
      get() {
        const x = exchanges.get(this);
        return x ? answer(this, x) : (
          /** @type {() => any} */
          d.get.call(this)
        );
      }
    });
  }
}

// comm_bridge/js/patch.js
function patchWindow(win, ic) {
  if (!win.document) return;
  let images = ic.patched.get(win);
  if (!images) {
    const routes = routing(win, ic);
    images = new ImageRouter(win, ic, routes, (frame) => patchWindow(frame, ic));
    ic.patched.set(win, images);
    patchImages(win, images);
    patchParsedHtml(win, images);
    patchFetch(win, ic, routes);
    patchXhr(win, ic, routes);
    patchWebSocket(win, ic);
    patchEventSource(win, ic, routes);
  }
  observeDocument(win, images);
}
function patchFetch(win, ic, routes) {
  const native = routes.native;
  const patched = {
    /** @param {RequestInfo | URL} input @param {RequestInit} [init] */
    async fetch(input, init) {
      const href = input instanceof win.Request ? input.url : String(input);
      const target = ic.match(href, routes.base());
      if (!target) return native(input, init);
      const request2 = new win.Request(input, init);
      const body = request2.body === null ? void 0 : await request2.arrayBuffer();
      const { method, headers, signal, redirect, credentials } = request2;
      return routes.fetch(target, { method, headers, body, signal, redirect, credentials });
    }
  };
  win.fetch = patched.fetch;
}
function patchWebSocket(win, ic) {
  const Native = win.WebSocket;
  class WebSocket extends Native {
    /** @param {string | URL} url @param {string | string[]} [protocols] */
    constructor(url, protocols) {
      const target = ic.match(url, win.document.baseURI);
      if (target && ic.known(target) !== "route") {
        return (
          /** @type {any} */
          ic.shared.openWebSocket(target.port, target.path, protocols)
        );
      }
      super(target?.loopback ? ic.routed(target, win.document.baseURI, true) : url, protocols);
    }
    /** @param {any} value */
    static [Symbol.hasInstance](value) {
      return value instanceof Native || value instanceof BridgeWebSocket;
    }
  }
  win.WebSocket = WebSocket;
}
function patchEventSource(win, ic, routes) {
  const Native = win.EventSource;
  if (typeof Native !== "function") return;
  class EventSource extends Native {
    /** @param {string | URL} url @param {EventSourceInit} [init] */
    constructor(url, init) {
      const target = ic.match(url, routes.base());
      if (target && ic.known(target) !== "route") {
        const fetchTarget = (request2) => routes.fetch(target, request2);
        return (
          /** @type {any} */
          new BridgeEventSource(target.url.href, Boolean(init?.withCredentials), fetchTarget)
        );
      }
      super(target?.loopback ? ic.routed(target, routes.base()) : url, init);
    }
    /** @param {any} value */
    static [Symbol.hasInstance](value) {
      return value instanceof Native || value instanceof BridgeEventSource;
    }
  }
  win.EventSource = EventSource;
}

// comm_bridge/js/probe.js
var PROBE_TIMEOUT_MS = 5e3;
function probeRoute(native, prefix) {
  const asked = native ? native(`${prefix}/__probe__`, {
    cache: "no-store",
    credentials: "same-origin",
    signal: AbortSignal.timeout(PROBE_TIMEOUT_MS)
  }).then(
    (response) => response.ok ? "route" : "comm",
    () => "comm"
  ) : Promise.resolve("comm");
  const probe = { way: null, ready: asked.then((way) => probe.way = way) };
  return probe;
}

// comm_bridge/js/intercept.js
var LOOPBACK_HOSTS = /* @__PURE__ */ new Set(["127.0.0.1", "localhost"]);
var Interceptor = class {
  /** @param {Channels} shared */
  constructor(shared) {
    this.shared = shared;
    this.ports = /* @__PURE__ */ new Map();
    this.prefixes = /* @__PURE__ */ new Map();
    this.probes = /* @__PURE__ */ new Map();
    this.windows = /* @__PURE__ */ new Set();
    this.patched = /* @__PURE__ */ new WeakMap();
    this.observed = /* @__PURE__ */ new WeakSet();
    this.fetch = typeof fetch === "function" ? fetch.bind(globalThis) : null;
  }
  /**
   * Register `port` (and its route `prefix`), then patch every known window.
   * @param {number | string} port @param {string | null} [prefix]
   */
  add(port, prefix) {
    const number = Number(port);
    if (!Number.isInteger(number) || number < 1 || number > 65535) return;
    const clean = typeof prefix === "string" && prefix.startsWith("/") ? prefix.replace(/\/+$/, "") : "";
    const known = this.ports.get(String(number));
    this.ports.set(String(number), clean || known || null);
    if (clean && !this.prefixes.has(clean)) {
      this.prefixes.set(clean, number);
      this.probe(clean);
    }
    for (const win of this.windows) patchWindow(win, this);
  }
  /** Patch `win` now if anything is registered, or once something is. @param {Win} win */
  watch(win) {
    this.windows.add(win);
    if (this.ports.size) patchWindow(win, this);
  }
  /** @param {string} prefix @returns {Probe} */
  probe(prefix) {
    const existing = this.probes.get(prefix);
    if (existing) return existing;
    const probe = probeRoute(this.fetch, prefix);
    this.probes.set(prefix, probe);
    return probe;
  }
  /**
   * The target of `href` if it is ours to route, else null.
   * @param {string | URL} href @param {string} base the document's base URL
   * @returns {Target | null}
   */
  match(href, base) {
    if (!this.ports.size) return null;
    let url;
    try {
      url = new URL(String(href), base);
    } catch {
      return null;
    }
    const scheme = url.protocol === "ws:" ? "http:" : url.protocol === "wss:" ? "https:" : url.protocol;
    if (scheme === "http:" && LOOPBACK_HOSTS.has(url.hostname) && this.ports.has(url.port)) {
      const prefix = (
        /** @type {string | null} */
        this.ports.get(url.port)
      );
      return { port: Number(url.port), path: url.pathname + url.search, prefix, loopback: true, url };
    }
    const here = new URL(base);
    if (this.prefixes.size === 0 || `${scheme}//${url.host}` !== here.origin) return null;
    for (const [prefix, port] of this.prefixes) {
      if (url.pathname !== prefix && !url.pathname.startsWith(`${prefix}/`)) continue;
      const path = (url.pathname.slice(prefix.length) || "/") + url.search;
      return { port, path, prefix, loopback: false, url };
    }
    return null;
  }
  /** The way for `target` if already known (a probe in flight: null). @param {Target} target @returns {Way | null} */
  known(target) {
    return target.prefix === null ? "comm" : this.probe(target.prefix).way;
  }
  /** @param {Target} target @returns {Promise<Way>} */
  decide(target) {
    return target.prefix === null ? Promise.resolve("comm") : this.probe(target.prefix).ready;
  }
  /**
   * The URL the browser loads for `target` through its route (a same-origin
   * URL under the prefix stays as it was).
   * @param {Target} target @param {string} base @param {boolean} [socket]
   */
  routed(target, base, socket = false) {
    const url = target.loopback ? new URL(`${target.prefix}${target.path}`, base) : new URL(target.url.href);
    if (socket) url.protocol = url.protocol === "https:" || url.protocol === "wss:" ? "wss:" : "ws:";
    url.hash = "";
    return url.href;
  }
};

// comm_bridge/js/registry.js
var Registry = class {
  constructor() {
    this.models = [];
    this.pending = /* @__PURE__ */ new Map();
    this.waiting = [];
    this.next = Math.floor(Math.random() * 2 ** 32) * 2 ** 20;
  }
  id() {
    return this.next++;
  }
  /** Subscribe a bridge model; the returned function undoes it and fails its pending exchanges. @param {Model} model */
  add(model) {
    this.models.push(model);
    for (const wake of this.waiting.splice(0)) wake();
    const route = (msg, buffers) => {
      const entry = msg && typeof msg.id === "number" ? this.pending.get(msg.id) : void 0;
      if (entry && entry.model === model) entry.handle(msg, (buffers || []).map(bytes));
    };
    model.on("msg:custom", route);
    return () => {
      model.off("msg:custom", route);
      this.models = this.models.filter((m) => m !== model);
      for (const [id, entry] of this.pending) {
        if (entry.model !== model) continue;
        this.pending.delete(id);
        entry.fail("The comm bridge closed.");
      }
    };
  }
  /** The newest live bridge, waiting up to `ms` for one to appear. @param {number} ms @returns {Promise<Model | null>} */
  model(ms) {
    const current = this.models[this.models.length - 1];
    if (current || ms <= 0) return Promise.resolve(current ?? null);
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        resolve(this.models[this.models.length - 1] ?? null);
      };
      const timer = setTimeout(() => {
        this.waiting = this.waiting.filter((w) => w !== wake);
        resolve(null);
      }, ms);
      this.waiting.push(wake);
    });
  }
};

// comm_bridge/js/request.js
async function request(registry, ns, kind, data = null, buffers = [], options = {}) {
  const model = await registry.model(options.timeout || WAIT_FOR_BRIDGE_MS);
  if (!model) return failure(NO_BRIDGE);
  const id = registry.id();
  const views = buffers.map(bytes);
  const chunked = views.reduce((n, b) => n + b.byteLength, 0) > SEND_CHUNK;
  const credit = new Credit();
  let incoming = null;
  return new Promise((resolve) => {
    let timer;
    const finish = (reply2) => {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", abort);
      registry.pending.delete(id);
      credit.give(Infinity);
      resolve(reply2);
    };
    const giveUp = (message) => {
      if (!registry.pending.has(id)) return;
      finish(failure(message));
      post(model, { op: "cancel", id });
    };
    const abort = () => giveUp("The request was aborted.");
    const reply = (msg, bufs) => finish({ status: msg.status === "ok" ? "ok" : "error", data: msg.data ?? null, buffers: bufs });
    const handle = (msg, bufs) => {
      if (msg.op === "reply" && Array.isArray(msg.sizes)) incoming = { msg, parts: [] };
      else if (msg.op === "reply") reply(msg, bufs);
      else if (msg.op === "credit") credit.give(Number(msg.bytes));
      else if (msg.op === "data" && incoming) {
        incoming.parts.push(...bufs);
        if (msg.end) reply(incoming.msg, split(concat(incoming.parts), incoming.msg.sizes));
      } else if (msg.op === "error") finish(failure(String(msg.message)));
    };
    registry.pending.set(id, { model, handle, fail: (message) => finish(failure(message)) });
    if (options.timeout) timer = setTimeout(() => giveUp(`No reply within ${options.timeout} ms.`), options.timeout);
    if (options.signal?.aborted) return abort();
    options.signal?.addEventListener("abort", abort, { once: true });
    const head = { op: "request", id, ns: String(ns), kind: String(kind), data };
    try {
      if (!chunked) return post(model, head, views);
      post(model, { ...head, sizes: views.map((b) => b.byteLength) });
      upload(model, id, concat(views), credit, () => !registry.pending.has(id)).catch(
        (err) => finish(failure(`The request could not be sent: ${err}`))
      );
    } catch (err) {
      finish(failure(`The request could not be sent: ${err}`));
    }
  });
}

// comm_bridge/js/api.js
function api() {
  const existing = (
    /** @type {any} */
    globalThis.__jupyter_loopback__
  );
  if (existing && existing.registry instanceof Object && existing.kind === "comm_bridge") return withInterception(existing);
  const registry = new Registry();
  const created = {
    kind: "comm_bridge",
    version: 1,
    registry,
    /** @param {string} ns @param {string} kind @param {any} [data] @param {Bytes[]} [buffers] @param {RequestOptions} [options] */
    request: (ns, kind, data, buffers, options) => request(registry, ns, kind, data, buffers, options),
    /** @param {number} port @param {string} path @param {RequestInit} [init] */
    fetch: (port, path, init) => bridgeFetch(registry, port, path, init),
    /** @param {number} port @param {string} path @param {string | string[]} [protocols] */
    openWebSocket: (port, path, protocols) => new BridgeWebSocket(registry, port, path, protocols),
    /** Resolves true once a bridge is live (false after `ms`). @param {number} [ms] */
    ready: (ms = WAIT_FOR_BRIDGE_MS) => registry.model(ms).then(Boolean),
    /**
     * Route this page's requests for `http://127.0.0.1:<port>` and `localhost:<port>`
     * (and same-origin URLs under `prefix`) through the route or the comm.
     * @param {number | string} port @param {string | null} [prefix]
     */
    interceptLocalhost: (port, prefix) => withInterception(created).interceptor.add(port, prefix)
  };
  globalThis.__jupyter_loopback__ = created;
  return withInterception(created);
}
function withInterception(shared) {
  const api2 = (
    /** @type {any} */
    shared
  );
  if (!(api2.interceptor instanceof Object)) api2.interceptor = new Interceptor(shared);
  api2.interceptLocalhost ??= (port, prefix) => api2.interceptor.add(port, prefix);
  return api2;
}

// comm_bridge/js/widget.js
function follow(model) {
  const shared = api();
  const apply = () => {
    const ports = model.get?.("intercepted_ports");
    const prefixes = model.get?.("intercepted_prefixes") ?? {};
    for (const port of Array.isArray(ports) ? ports : [])
      shared.interceptLocalhost(port, prefixes[String(port)] ?? null);
    for (const [port, prefix] of Object.entries(prefixes)) shared.interceptLocalhost(Number(port), String(prefix));
  };
  if (typeof window !== "undefined") shared.interceptor.watch(window);
  apply();
  model.on("change:intercepted_ports", apply);
  model.on("change:intercepted_prefixes", apply);
  return () => {
    model.off("change:intercepted_ports", apply);
    model.off("change:intercepted_prefixes", apply);
  };
}
var widget_default = {
  /** Once per bridge model: subscribe it to the page's registry. @param {{model: Model}} ctx */
  initialize({ model }) {
    const removed = api().registry.add(model);
    const unfollowed = follow(model);
    return () => {
      unfollowed();
      removed();
    };
  },
  /**
   * Views show nothing: the bridge is plumbing. A view in another window gets
   * the interception there too.
   * @param {{model: Model, el: HTMLElement}} ctx
   */
  render({ el }) {
    el.hidden = true;
    const view = el.ownerDocument?.defaultView;
    if (view) api().interceptor.watch(
      /** @type {Win} */
      view
    );
  }
};
export {
  BridgeEventSource,
  BridgeWebSocket,
  EventStream,
  Interceptor,
  Registry,
  api,
  widget_default as default,
  parseSrcset,
  serializeSrcset
};
