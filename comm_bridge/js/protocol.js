// @ts-check
/**
 * The messages of the comm bridge, page side: their sizes, how one is posted
 * on a bridge model, and the byte helpers every exchange uses. The kernel
 * side and the wire format are `comm_bridge/protocol.py`.
 */

export const CHUNK = 1 << 20;
// Page-to-kernel pieces are smaller: every message a page sends, with its
// batching (at most two pieces), stays under 512 KiB, so under Colab's
// reported 1 MB limit even base64-encoded (Shiny, marimo) and about 2 MB as
// VS Code's JSON arrays of numbers. docs/frameworks.md has the figures.
export const SEND_CHUNK = 256 << 10;
export const BATCH_FRAMES = 64;
export const WAIT_FOR_BRIDGE_MS = 10000;
export const NO_BRIDGE = "No comm bridge is running: call comm_bridge.enable_comm_bridge() in the kernel.";

/**
 * @typedef {{
 *   send(content: any, callbacks?: any, buffers?: ArrayBuffer[]): void,
 *   get?(name: string): any,
 *   on(event: string, callback: (...args: any[]) => void): void,
 *   off(event: string, callback: (...args: any[]) => void): void,
 * }} Model
 * @typedef {{model: Model, handle(msg: any, buffers: Uint8Array[]): void, fail(message: string): void}} Pending
 * @typedef {{status: "ok" | "error", data: any, buffers: Uint8Array[]}} Reply
 * @typedef {{timeout?: number, signal?: AbortSignal}} RequestOptions
 * @typedef {ArrayBuffer | ArrayBufferView} Bytes
 */

/** @param {Bytes} b @returns {Uint8Array} */
export function bytes(b) {
  if (b instanceof Uint8Array) return b;
  if (ArrayBuffer.isView(b)) return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  return new Uint8Array(b);
}

/** An ArrayBuffer holding exactly these bytes (the comm sends whole buffers). @param {Bytes} b */
export function exact(b) {
  const view = bytes(b);
  const whole = view.byteOffset === 0 && view.byteLength === view.buffer.byteLength;
  return /** @type {ArrayBuffer} */ (whole ? view.buffer : view.slice().buffer);
}

/** @param {string} message @returns {Reply} */
export function failure(message) {
  return { status: "error", data: { message }, buffers: [] };
}

const ORDER = Symbol.for("jupyter_loopback.order");

/**
 * Send one message on `model`, numbered: marimo posts each page message
 * separately and they may overtake each other, so the kernel puts them back
 * in order by `src` (this model's random tag, shared by every copy of this
 * module) and `seq` (comm_bridge/order.py).
 * @param {Model} model @param {any} content @param {Bytes[]} [buffers]
 */
export function post(model, content, buffers = []) {
  const m = /** @type {any} */ (model);
  const order = (m[ORDER] ??= { src: Math.random().toString(36).slice(2), seq: 0 });
  model.send({ ...content, src: order.src, seq: order.seq++ }, undefined, buffers.map(exact));
}

/** @param {AbortSignal} signal */
export function abortError(signal) {
  return signal.reason ?? new DOMException("The operation was aborted.", "AbortError");
}

/** @param {Uint8Array[]} parts @returns {Uint8Array} */
export function concat(parts) {
  if (parts.length === 1) return parts[0];
  const whole = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  parts.reduce((at, p) => (whole.set(p, at), at + p.byteLength), 0);
  return whole;
}

/** @param {Uint8Array} whole @param {number[]} sizes @returns {Uint8Array[]} */
export function split(whole, sizes) {
  let at = 0;
  return sizes.map((n) => whole.subarray(at, (at += n)));
}
