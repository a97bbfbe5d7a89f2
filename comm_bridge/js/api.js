// @ts-check
/**
 * `window.__jupyter_loopback__`: the page-wide object, created once and
 * shared by every copy of the bridge. Its members' JSDoc is the JavaScript
 * reference (docs/reference/javascript.md, by tools/js_reference.py).
 */

import { bridgeFetch } from "./fetch.js";
import { Interceptor } from "./intercept.js";
import { WAIT_FOR_BRIDGE_MS } from "./protocol.js";
import { Registry } from "./registry.js";
import { request } from "./request.js";
import { BridgeWebSocket } from "./websocket.js";

/** @typedef {import("./protocol.js").Bytes} Bytes */
/** @typedef {import("./protocol.js").RequestOptions} RequestOptions */
/** @typedef {import("./intercept.js").Channels} Channels */

/** The page-wide API, created once and shared by every copy of this module. */
export function api() {
  const existing = /** @type {any} */ (globalThis).__jupyter_loopback__;
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
    interceptLocalhost: (port, prefix) => withInterception(created).interceptor.add(port, prefix),
  };
  /** @type {any} */ (globalThis).__jupyter_loopback__ = created;
  return withInterception(created);
}

/**
 * Give the page's API its Interceptor and `interceptLocalhost`, once: a copy
 * of this module from before them may have made the API.
 * @template {Channels} T @param {T} shared
 * @returns {T & {interceptor: Interceptor, interceptLocalhost(port: number | string, prefix?: string | null): void}}
 */
export function withInterception(shared) {
  const api = /** @type {any} */ (shared);
  if (!(api.interceptor instanceof Object)) api.interceptor = new Interceptor(shared);
  api.interceptLocalhost ??= (/** @type {number | string} */ port, /** @type {string | null} */ prefix) =>
    api.interceptor.add(port, prefix);
  return api;
}
