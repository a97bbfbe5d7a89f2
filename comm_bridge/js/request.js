// @ts-check
/**
 * `request(ns, kind, data, buffers, options)`: call a kernel handler and
 * resolve its reply; large buffers go up and come back in credit-paced pieces.
 */

import { Credit, upload } from "./flow.js";
import { NO_BRIDGE, SEND_CHUNK, WAIT_FOR_BRIDGE_MS, bytes, concat, failure, post, split } from "./protocol.js";

/** @typedef {import("./protocol.js").Bytes} Bytes */
/** @typedef {import("./protocol.js").Reply} Reply */
/** @typedef {import("./protocol.js").RequestOptions} RequestOptions */
/** @typedef {import("./registry.js").Registry} Registry */

/**
 * Call the kernel handler registered for `(ns, kind)`. Never rejects: a missing
 * bridge or handler, a raising handler, a timeout or an abort resolve
 * `{status: "error", data: {message}}`.
 * @param {Registry} registry @param {string} ns @param {string} kind @param {any} [data]
 * @param {Bytes[]} [buffers] @param {RequestOptions} [options] @returns {Promise<Reply>}
 */
export async function request(registry, ns, kind, data = null, buffers = [], options = {}) {
  const model = await registry.model(options.timeout || WAIT_FOR_BRIDGE_MS);
  if (!model) return failure(NO_BRIDGE);
  const id = registry.id();
  const views = buffers.map(bytes);
  // Buffers over SEND_CHUNK in all travel after the request in SEND_CHUNK pieces,
  // paced by credit, and so may a reply's (in CHUNK pieces): no message nears the 10 MiB cap.
  const chunked = views.reduce((n, b) => n + b.byteLength, 0) > SEND_CHUNK;
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
