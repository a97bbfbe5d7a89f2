// @ts-check
/**
 * The page's bridge models and the exchanges awaiting their replies: one
 * Registry per page, on `globalThis`, so every copy of the bridge shares it.
 */

import { bytes } from "./protocol.js";

/** @typedef {import("./protocol.js").Model} Model */
/** @typedef {import("./protocol.js").Pending} Pending */
/** @typedef {import("./protocol.js").Bytes} Bytes */

/** Models and pending exchanges of the whole page. */
export class Registry {
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
