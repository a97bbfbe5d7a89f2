// @ts-check
/**
 * Interception: the page's own requests to a registered loopback port.
 *
 * `interceptLocalhost(port, prefix)` registers a port; from then on this
 * window's <img> (src, srcset, setAttribute, parsed HTML), fetch,
 * XMLHttpRequest, WebSocket and EventSource requests for
 * http://127.0.0.1:<port>/… or http://localhost:<port>/… — and for
 * same-origin URLs under `prefix` — are routed: to the same-origin route
 * `prefix` when `<prefix>/__probe__` answers 2xx, otherwise over the comm.
 * Every other URL goes to the browser untouched.
 *
 * This module keeps the registered ports and decides where a URL goes;
 * patch.js patches a window's entry points (images.js, xhr.js for the
 * larger ones), routing.js sends a request the way the probe (probe.js) chose.
 */

import { patchWindow } from "./patch.js";
import { probeRoute } from "./probe.js";

/** @typedef {import("./probe.js").Way} Way */
/** @typedef {import("./probe.js").Probe} Probe */
/** @typedef {import("./images.js").ImageRouter} ImageRouter */
/** @typedef {import("./websocket.js").BridgeWebSocket} BridgeWebSocket */

const LOOPBACK_HOSTS = new Set(["127.0.0.1", "localhost"]);

/**
 * Where a request is headed: the upstream `port`, the `path` (with query) on
 * it, the port's registered `prefix`, and whether the URL named the loopback
 * host itself (`loopback`) or a same-origin URL under the prefix.
 * @typedef {{port: number, path: string, prefix: string | null, loopback: boolean, url: URL}} Target
 * @typedef {Window & typeof globalThis} Win
 * @typedef {{
 *   fetch(port: number, path: string, init?: RequestInit): Promise<Response>,
 *   openWebSocket(port: number, path: string, protocols?: string | string[]): BridgeWebSocket,
 * }} Channels the bridge's own ways to a port, which the interception uses
 */

/**
 * The page's registered ports and routes, shared by every window it patches.
 * A prefix is probed once: `<prefix>/__probe__` answering 2xx means the
 * route works; anything else, a network error or no answer within
 * PROBE_TIMEOUT_MS means the comm (probe.js).
 */
export class Interceptor {
  /** @param {Channels} shared */
  constructor(shared) {
    this.shared = shared;
    /** @type {Map<string, string | null>} port (as URL.port spells it) to prefix */
    this.ports = new Map();
    /** @type {Map<string, number>} */
    this.prefixes = new Map();
    /** @type {Map<string, Probe>} */
    this.probes = new Map();
    /** @type {Set<Win>} */
    this.windows = new Set();
    /** Windows patched (once each, by whichever copy of this module got there first). @type {WeakMap<Win, ImageRouter>} */
    this.patched = new WeakMap();
    /** @type {WeakSet<Document>} */
    this.observed = new WeakSet();
    /** The fetch of the page before any patch: probes must not be intercepted. */
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
    /** @type {URL} */
    let url;
    try {
      url = new URL(String(href), base);
    } catch {
      return null;
    }
    const scheme = url.protocol === "ws:" ? "http:" : url.protocol === "wss:" ? "https:" : url.protocol;
    if (scheme === "http:" && LOOPBACK_HOSTS.has(url.hostname) && this.ports.has(url.port)) {
      const prefix = /** @type {string | null} */ (this.ports.get(url.port));
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
}
