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
 * so several views or several bridges never handle a reply twice. The wire
 * format is `comm_bridge/protocol.py`.
 *
 * - `interceptLocalhost(port, prefix)` makes the page's own requests to
 *   `http://127.0.0.1:<port>` take the route `prefix` or the comm
 *   (intercept.js); its images are the only object URLs the bridge
 *   creates, and it revokes them.
 *
 * This file is the anywidget entry (`initialize`, `render`); the rest lives
 * beside it in comm_bridge/js/: protocol.js (message sizes, posting, bytes),
 * flow.js (credit and acks), registry.js (models and pending exchanges),
 * request.js, fetch.js, websocket.js, eventsource.js, api.js (the page-wide
 * object), and the interception: intercept.js (ports and matching), probe.js,
 * routing.js, patch.js, images.js, xhr.js. `make js` bundles them into the
 * one file anywidget loads, comm_bridge/static/bridge.js.
 */

import { api } from "./api.js";

/** @typedef {import("./protocol.js").Model} Model */
/** @typedef {import("./intercept.js").Win} Win */

/**
 * Register the ports and routes in the model's synced state, now and as they
 * change, and patch the windows its views live in.
 * @param {Model} model @returns {() => void}
 */
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

export default {
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
    if (view) api().interceptor.watch(/** @type {Win} */ (view));
  },
};

export { api } from "./api.js";
export { BridgeEventSource, EventStream } from "./eventsource.js";
export { parseSrcset, serializeSrcset } from "./images.js";
export { Interceptor } from "./intercept.js";
export { Registry } from "./registry.js";
export { BridgeWebSocket } from "./websocket.js";
