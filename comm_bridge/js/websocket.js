// @ts-check
/**
 * `openWebSocket(port, path, protocols)`: a WebSocket over the comm, with the
 * browser's API. Frames go out batched and paced by credit (flow.js); frames
 * in are acknowledged as they are delivered.
 */

import { ACK_BYTES, ACK_MESSAGES, Credit, FRAME_COST } from "./flow.js";
import { HandlerTarget, readyStates } from "./handler_target.js";
import { BATCH_FRAMES, NO_BRIDGE, SEND_CHUNK, WAIT_FOR_BRIDGE_MS, bytes, concat, exact, post } from "./protocol.js";

/** @typedef {import("./protocol.js").Bytes} Bytes */
/** @typedef {import("./protocol.js").Model} Model */
/** @typedef {import("./registry.js").Registry} Registry */

/** A WebSocket-like object over the comm: the browser's WebSocket API, same events and states. */
export class BridgeWebSocket extends HandlerTarget {
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
        while (this._outbox.length && frames.length < BATCH_FRAMES && cost < SEND_CHUNK) {
          const item = this._outbox[0];
          if (item instanceof Promise) {
            if (frames.length) break;
            this._outbox[0] = { text: false, data: await item };
            this._queued += /** @type {{data: Uint8Array}} */ (this._outbox[0]).data.byteLength;
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
}
readyStates(BridgeWebSocket, ["CONNECTING", "OPEN", "CLOSING", "CLOSED"]);
