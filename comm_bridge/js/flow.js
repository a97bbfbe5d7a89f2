// @ts-check
/**
 * Flow control, page side: the window of bytes and messages either side may
 * have in flight on one stream, the credit that paces what this page sends
 * (request bodies, WebSocket frames) and `upload`, which sends a body in
 * pieces as that credit allows. Acks for what the kernel sends go out from
 * fetch.js and websocket.js as the page consumes it (comm_bridge/flow.py is
 * the kernel's half).
 */

import { SEND_CHUNK, post } from "./protocol.js";

/** @typedef {import("./protocol.js").Model} Model */

export const WINDOW = 16 << 20;
export const WINDOW_MESSAGES = 256;
export const ACK_BYTES = (WINDOW * 3) / 4; // each ack costs the kernel a shell message: few of them
export const ACK_MESSAGES = WINDOW_MESSAGES / 4;
export const FRAME_COST = 64;

/** Credit for what this page sends on one stream (uploads, WebSocket frames). */
export class Credit {
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
 * Send a request body in SEND_CHUNK pieces as credit allows.
 * @param {Model} model @param {number} id @param {Uint8Array | ReadableStream<Uint8Array>} body
 * @param {Credit} credit @param {() => boolean} stopped
 */
export async function upload(model, id, body, credit, stopped) {
  /** @param {Uint8Array} piece @param {boolean} last */
  const send = async (piece, last) => {
    await credit.take(piece.byteLength + FRAME_COST);
    if (!stopped()) post(model, { op: "body", id, end: last }, piece.byteLength || !last ? [piece] : []);
  };
  if (body instanceof Uint8Array) {
    let at = 0;
    do {
      await send(body.subarray(at, at + SEND_CHUNK), at + SEND_CHUNK >= body.byteLength); // an empty body still ends
      at += SEND_CHUNK;
    } while (at < body.byteLength && !stopped());
    return;
  }
  const reader = body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (stopped()) return void reader.cancel();
    if (done) return send(new Uint8Array(0), true);
    for (let at = 0; at < value.byteLength; at += SEND_CHUNK) await send(value.subarray(at, at + SEND_CHUNK), false);
  }
}
