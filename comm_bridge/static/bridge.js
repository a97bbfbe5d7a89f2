// @ts-check
/**
 * The comm bridge's page half: `window.__jupyter_loopback__`.
 *
 * - `request(ns, kind, data, buffers, options)` resolves `{status, data, buffers}`.
 * - `fetch(port, path, init)` resolves a real `Response` whose body streams.
 * - `openWebSocket(port, path, protocols)` returns a WebSocket-like object.
 *
 * One registry lives on `globalThis`, shared by every copy of this module on
 * the page. Each bridge model subscribes once (in `initialize`, never per
 * view), and a reply is handled only by the model its request was sent on,
 * so several views or several bridges never handle a reply twice. Nothing
 * here creates object URLs. The wire format is `comm_bridge/protocol.py`.
 */

const CHUNK = 1 << 20;
const WINDOW = 16 << 20;
const WINDOW_MESSAGES = 256;
const ACK_BYTES = (WINDOW * 3) / 4; // each ack costs the kernel a shell message: few of them
const ACK_MESSAGES = WINDOW_MESSAGES / 4;
const FRAME_COST = 64;
const BATCH_FRAMES = 64;
const WAIT_FOR_BRIDGE_MS = 10000;
const MAX_REDIRECTS = 20;
const NULL_BODY = new Set([101, 103, 204, 205, 304]);
const REDIRECT = new Set([301, 302, 303, 307, 308]);
const NO_BRIDGE = "No comm bridge is running: call comm_bridge.enable_comm_bridge() in the kernel.";

/**
 * @typedef {{
 *   send(content: any, callbacks?: any, buffers?: ArrayBuffer[]): void,
 *   on(event: string, callback: (...args: any[]) => void): void,
 *   off(event: string, callback: (...args: any[]) => void): void,
 * }} Model
 * @typedef {{model: Model, handle(msg: any, buffers: Uint8Array[]): void, fail(message: string): void}} Pending
 * @typedef {{status: "ok" | "error", data: any, buffers: Uint8Array[]}} Reply
 * @typedef {{timeout?: number, signal?: AbortSignal}} RequestOptions
 * @typedef {ArrayBuffer | ArrayBufferView} Bytes
 */

/** @param {Bytes} b @returns {Uint8Array} */
function bytes(b) {
  if (b instanceof Uint8Array) return b;
  if (ArrayBuffer.isView(b)) return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  return new Uint8Array(b);
}

/** An ArrayBuffer holding exactly these bytes (the comm sends whole buffers). @param {Bytes} b */
function exact(b) {
  const view = bytes(b);
  const whole = view.byteOffset === 0 && view.byteLength === view.buffer.byteLength;
  return /** @type {ArrayBuffer} */ (whole ? view.buffer : view.slice().buffer);
}

/** @param {string} message @returns {Reply} */
function failure(message) {
  return { status: "error", data: { message }, buffers: [] };
}

/** @param {Model} model @param {any} content @param {Bytes[]} [buffers] */
function post(model, content, buffers = []) {
  model.send(content, undefined, buffers.map(exact));
}

/** @param {AbortSignal} signal */
function abortError(signal) {
  return signal.reason ?? new DOMException("The operation was aborted.", "AbortError");
}

/** Models and pending exchanges of the whole page. */
class Registry {
  constructor() {
    /** @type {Model[]} */
    this.models = [];
    /** @type {Map<number, Pending>} */
    this.pending = new Map();
    /** @type {Array<() => void>} */
    this.waiting = [];
    // A random start, so two pages attached to one kernel do not share ids.
    this.next = Math.floor(Math.random() * 2 ** 32) * 2 ** 20;
  }

  id() {
    return this.next++;
  }

  /** Subscribe a bridge model; the returned function undoes it and fails its pending exchanges. @param {Model} model */
  add(model) {
    this.models.push(model);
    for (const wake of this.waiting.splice(0)) wake();
    /** @param {any} msg @param {Bytes[]} [buffers] */
    const route = (msg, buffers) => {
      const entry = msg && typeof msg.id === "number" ? this.pending.get(msg.id) : undefined;
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
}

/**
 * Call the kernel handler registered for `(ns, kind)`. Never rejects: a missing
 * bridge or handler, a raising handler, a timeout or an abort resolve
 * `{status: "error", data: {message}}`.
 * @param {Registry} registry @param {string} ns @param {string} kind @param {any} [data]
 * @param {Bytes[]} [buffers] @param {RequestOptions} [options] @returns {Promise<Reply>}
 */
async function request(registry, ns, kind, data = null, buffers = [], options = {}) {
  const model = await registry.model(options.timeout || WAIT_FOR_BRIDGE_MS);
  if (!model) return failure(NO_BRIDGE);
  const id = registry.id();
  const views = buffers.map(bytes);
  // Buffers over CHUNK in all travel after the request in CHUNK pieces, paced
  // by credit, and so may a reply's: no message nears the 10 MiB cap.
  const chunked = views.reduce((n, b) => n + b.byteLength, 0) > CHUNK;
  const credit = new Credit();
  /** @type {{msg: any, parts: Uint8Array[]} | null} */
  let incoming = null;
  return new Promise((resolve) => {
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer;
    /** @param {Reply} reply */
    const finish = (reply) => {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", abort);
      registry.pending.delete(id);
      credit.give(Infinity);
      resolve(reply);
    };
    /** @param {string} message */
    const giveUp = (message) => {
      if (!registry.pending.has(id)) return;
      finish(failure(message));
      post(model, { op: "cancel", id });
    };
    const abort = () => giveUp("The request was aborted.");
    /** @param {any} msg @param {Uint8Array[]} bufs */
    const reply = (msg, bufs) =>
      finish({ status: msg.status === "ok" ? "ok" : "error", data: msg.data ?? null, buffers: bufs });
    /** @param {any} msg @param {Uint8Array[]} bufs */
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
      upload(model, id, concat(views), credit, () => !registry.pending.has(id)).catch((err) =>
        finish(failure(`The request could not be sent: ${err}`)),
      );
    } catch (err) {
      finish(failure(`The request could not be sent: ${err}`));
    }
  });
}

/** @param {Uint8Array[]} parts @returns {Uint8Array} */
function concat(parts) {
  if (parts.length === 1) return parts[0];
  const whole = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  parts.reduce((at, p) => (whole.set(p, at), at + p.byteLength), 0);
  return whole;
}

/** @param {Uint8Array} whole @param {number[]} sizes @returns {Uint8Array[]} */
function split(whole, sizes) {
  let at = 0;
  return sizes.map((n) => whole.subarray(at, (at += n)));
}

/** Credit for what this page sends on one stream (uploads, WebSocket frames). */
class Credit {
  constructor() {
    this.inflight = 0;
    /** @type {Array<() => void>} */
    this.waiting = [];
  }
  /** @param {number} cost */
  fits(cost) {
    return this.inflight === 0 || this.inflight + cost <= WINDOW;
  }
  /** @param {number} cost */
  async take(cost) {
    while (!this.fits(cost)) await new Promise((resolve) => this.waiting.push(() => resolve(undefined)));
    this.inflight += cost;
  }
  /** @param {number} amount */
  give(amount) {
    this.inflight = Math.max(0, this.inflight - amount);
    for (const wake of this.waiting.splice(0)) wake();
  }
}

/**
 * One HTTP exchange: resolves the Response once the head arrives; the body
 * streams, acknowledged as the page reads it, so a reader that stops stops
 * the kernel after `WINDOW` bytes.
 * @param {Registry} registry @param {Model} model @param {number} port @param {string} path
 * @param {string} method @param {[string, string][]} headers
 * @param {Uint8Array | ReadableStream<Uint8Array> | null} body @param {AbortSignal | undefined} signal
 * @returns {Promise<Response>}
 */
function exchange(registry, model, port, path, method, headers, body, signal) {
  const id = registry.id();
  return new Promise((resolve, reject) => {
    /** @type {ReadableStreamDefaultController<Uint8Array> | null} */
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
    /** @param {any} [reason] */
    const end = (reason) => {
      finished = true;
      registry.pending.delete(id);
      signal?.removeEventListener("abort", abort);
      credit.give(Infinity);
      if (reason !== undefined) post(model, { op: "cancel", id });
    };
    /** @param {Error} error */
    const fail = (error) => {
      if (finished) return;
      end();
      if (!settled) reject(error);
      else controller?.error(error);
      settled = true;
    };
    const abort = () => {
      if (finished) return;
      const error = abortError(/** @type {AbortSignal} */ (signal));
      fail(error);
      post(model, { op: "cancel", id });
    };
    /** @param {any} msg @param {Uint8Array[]} buffers */
    const handle = (msg, buffers) => {
      if (msg.op === "head") {
        const stream = new ReadableStream(
          {
            start: (c) => {
              controller = c;
            },
            pull: ack,
            cancel: (reason) => end(reason ?? "cancelled"),
          },
          new ByteLengthQueuingStrategy({ highWaterMark: CHUNK }),
        );
        const status = Number(msg.status);
        const statusText = /^[\t\x20-\x7e\x80-\xff]*$/.test(msg.reason) ? msg.reason : "";
        const head = new Headers();
        for (const [name, value] of msg.headers) {
          try {
            head.append(name, value);
          } catch {
            // A header the Fetch API cannot represent is left out, as a browser does.
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
          // Refusals answer like the sidecar: 400/403/502/504 with one sentence.
          end();
          settled = true;
          const headers = { "content-type": "text/plain; charset=utf-8", "x-jupyter-loopback-error": "1" };
          resolve(new Response(String(msg.message), { status: msg.status, headers }));
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

/**
 * Send a request body in CHUNK pieces as credit allows.
 * @param {Model} model @param {number} id @param {Uint8Array | ReadableStream<Uint8Array>} body
 * @param {Credit} credit @param {() => boolean} stopped
 */
async function upload(model, id, body, credit, stopped) {
  /** @param {Uint8Array} piece @param {boolean} last */
  const send = async (piece, last) => {
    await credit.take(piece.byteLength + FRAME_COST);
    if (!stopped()) post(model, { op: "body", id, end: last }, piece.byteLength || !last ? [piece] : []);
  };
  if (body instanceof Uint8Array) {
    let at = 0;
    do {
      await send(body.subarray(at, at + CHUNK), at + CHUNK >= body.byteLength); // an empty body still ends
      at += CHUNK;
    } while (at < body.byteLength && !stopped());
    return;
  }
  const reader = body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (stopped()) return void reader.cancel();
    if (done) return send(new Uint8Array(0), true);
    for (let at = 0; at < value.byteLength; at += CHUNK) await send(value.subarray(at, at + CHUNK), false);
  }
}

/**
 * `fetch` to `http://127.0.0.1:<port><path>` in the kernel. Headers and body
 * are normalised as the browser's fetch does; same-upstream redirects are
 * followed unless `init.redirect` says otherwise. Rejects with a TypeError
 * only when the exchange breaks; refusals (port policy, nothing listening,
 * timeouts) resolve a 4xx/5xx Response as the sidecar would.
 * @param {Registry} registry @param {number} port @param {string} path @param {RequestInit} [init]
 * @returns {Promise<Response>}
 */
async function bridgeFetch(registry, port, path, init = {}) {
  const signal = init.signal ?? undefined;
  if (signal?.aborted) throw abortError(signal);
  const streaming = typeof ReadableStream !== "undefined" && init.body instanceof ReadableStream;
  const probe = new Request("http://127.0.0.1/", {
    method: init.method,
    headers: init.headers,
    body: init.body,
    ...(streaming ? { duplex: "half" } : {}),
  });
  let method = probe.method;
  /** @type {[string, string][]} */
  let headers = [...probe.headers];
  /** @type {Uint8Array | ReadableStream<Uint8Array> | null} */
  let body = null;
  if (streaming) body = /** @type {ReadableStream<Uint8Array>} */ (probe.body);
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
    if (!toGet && body !== null && !(body instanceof Uint8Array)) return response; // a stream cannot be replayed
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

/** A WebSocket-like object over the comm: the browser's WebSocket API, same events and states. */
class BridgeWebSocket extends EventTarget {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;
  CONNECTING = 0;
  OPEN = 1;
  CLOSING = 2;
  CLOSED = 3;

  /** @param {Registry} registry @param {number} port @param {string} path @param {string | string[]} [protocols] */
  constructor(registry, port, path, protocols = []) {
    super();
    this.url = `ws://127.0.0.1:${port}${path.startsWith("/") ? path : `/${path}`}`;
    this.readyState = 0;
    this.protocol = "";
    this.extensions = "";
    /** @type {BinaryType} */
    this._binaryType = "blob";
    /** @type {((event: Event) => void) | null} */
    this.onopen = null;
    /** @type {((event: MessageEvent) => void) | null} */
    this.onmessage = null;
    /** @type {((event: Event) => void) | null} */
    this.onerror = null;
    /** @type {((event: CloseEvent) => void) | null} */
    this.onclose = null;
    this._registry = registry;
    this._id = registry.id();
    /** @type {Model | null} */
    this._model = null;
    /** @type {Array<{text: boolean, data: Uint8Array} | {close: [number, string]} | Promise<Uint8Array>>} */
    this._outbox = [];
    this._queued = 0;
    this._flushing = false;
    this._credit = new Credit();
    /** @type {Uint8Array[]} */
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
        fail: (message) => this._closed(1006, "", message),
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
    else this._outbox.push({ text: false, data: bytes(/** @type {Bytes} */ (data)).slice() });
    const last = this._outbox[this._outbox.length - 1];
    if ("data" in last) this._queued += last.data.byteLength;
    this._schedule();
  }

  /** @param {number} [code] @param {string} [reason] */
  close(code, reason = "") {
    if (code !== undefined && code !== 1000 && !(code >= 3000 && code <= 4999))
      throw new DOMException(`The close code ${code} is neither 1000 nor in 3000-4999.`, "InvalidAccessError");
    if (new TextEncoder().encode(reason).byteLength > 123)
      throw new DOMException("The close reason is longer than 123 bytes.", "SyntaxError");
    if (this.readyState >= 2) return;
    this.readyState = 2;
    this._outbox.push({ close: [code ?? 1000, reason] });
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
        /** @type {number[][]} */
        const frames = [];
        /** @type {Uint8Array[]} */
        const pieces = [];
        let cost = 0;
        while (this._outbox.length && frames.length < BATCH_FRAMES && cost < CHUNK) {
          const item = this._outbox[0];
          if (item instanceof Promise) {
            if (frames.length) break;
            this._outbox[0] = { text: false, data: await item };
            this._queued += /** @type {{data: Uint8Array}} */ (this._outbox[0]).data.byteLength;
            continue;
          }
          if ("close" in item) break;
          const piece = item.data.subarray(0, CHUNK);
          const final = piece.byteLength === item.data.byteLength;
          if (!this._credit.fits(cost + piece.byteLength + FRAME_COST) && frames.length) break;
          frames.push([item.text ? 1 : 0, final ? 1 : 0]);
          pieces.push(piece);
          cost += piece.byteLength + FRAME_COST;
          this._queued -= piece.byteLength;
          if (final) this._outbox.shift();
          else item.data = item.data.subarray(CHUNK);
        }
        if (frames.length) {
          await this._credit.take(cost);
          if (this.readyState === 3) return;
          post(model, { op: "ws_send", id: this._id, frames }, pieces);
        } else {
          const item = /** @type {{close: [number, string]}} */ (this._outbox.shift());
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
      msg.frames.forEach((/** @type {number[]} */ [text, final], /** @type {number} */ i) => {
        this._partial.push(buffers[i]);
        this._receivedCost += buffers[i].byteLength + FRAME_COST;
        if (final) this._message(Boolean(text), this._partial.splice(0));
      });
      if (this._receivedCost >= ACK_BYTES || this._received >= ACK_MESSAGES) {
        post(/** @type {Model} */ (this._model), {
          op: "ack",
          id: this._id,
          bytes: this._receivedCost,
          messages: this._received,
        });
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
    /** @type {any} */
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
    if (error !== undefined) this._fire(Object.assign(new Event("error"), { message: error }));
    const init = { code, reason, wasClean: code !== 1006 };
    const event = typeof CloseEvent === "function" ? new CloseEvent("close", init) : Object.assign(new Event("close"), init);
    this._fire(event);
  }

  /** @param {Event} event */
  _fire(event) {
    const handler = /** @type {any} */ (this)[`on${event.type}`];
    if (typeof handler === "function") handler.call(this, event);
    this.dispatchEvent(event);
  }
}

/** The page-wide API, created once and shared by every copy of this module. */
function api() {
  const existing = /** @type {any} */ (globalThis).__jupyter_loopback__;
  if (existing && existing.registry instanceof Object && existing.kind === "comm_bridge") return existing;
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
  };
  /** @type {any} */ (globalThis).__jupyter_loopback__ = created;
  return created;
}

export default {
  /** Once per bridge model: subscribe it to the page's registry. @param {{model: Model}} ctx */
  initialize({ model }) {
    return api().registry.add(model);
  },
  /** Views show nothing: the bridge is plumbing. @param {{model: Model, el: HTMLElement}} ctx */
  render({ el }) {
    el.hidden = true;
  },
};

export { BridgeWebSocket, Registry, api };
