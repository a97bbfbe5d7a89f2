// @ts-check
/**
 * Patching a window: `patchWindow` replaces its image, fetch, XHR, WebSocket
 * and EventSource entry points once (the images in images.js, XHR in xhr.js,
 * the rest here), each sending what the Interceptor claims the way
 * routing.js says and leaving every other URL to the browser.
 */

import { BridgeEventSource } from "./eventsource.js";
import { ImageRouter, observeDocument, patchImages, patchParsedHtml } from "./images.js";
import { routing } from "./routing.js";
import { BridgeWebSocket } from "./websocket.js";
import { patchXhr } from "./xhr.js";

/** @typedef {import("./intercept.js").Interceptor} Interceptor */
/** @typedef {import("./intercept.js").Win} Win */
/** @typedef {import("./routing.js").Routes} Routes */

/**
 * Patch `win`'s image, fetch, XHR, WebSocket and EventSource entry points, once.
 * @param {Win} win @param {Interceptor} ic
 */
export function patchWindow(win, ic) {
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
  // A same-origin iframe keeps its window when its srcdoc replaces the
  // initial document: the patches stay, the new document needs watching.
  observeDocument(win, images);
}

/**
 * `fetch(string | URL | Request, init)`.
 * @param {Win} win @param {Interceptor} ic @param {Routes} routes
 */
export function patchFetch(win, ic, routes) {
  const native = routes.native;
  // A method keeps its name, `fetch`, whatever names the bundle gives local bindings.
  const patched = {
    /** @param {RequestInfo | URL} input @param {RequestInit} [init] */
    async fetch(input, init) {
      const href = input instanceof win.Request ? input.url : String(input);
      const target = ic.match(href, routes.base());
      if (!target) return native(input, init);
      const request = new win.Request(input, init);
      const body = request.body === null ? undefined : await request.arrayBuffer();
      const { method, headers, signal, redirect, credentials } = request;
      return routes.fetch(target, { method, headers, body, signal, redirect, credentials });
    },
  };
  win.fetch = patched.fetch;
}

/**
 * `new WebSocket(url, protocols)`: a known route opens the native socket on
 * it; otherwise the bridge's WebSocket-like object (a probe still in flight
 * means the comm, which works either way).
 * @param {Win} win @param {Interceptor} ic
 */
export function patchWebSocket(win, ic) {
  const Native = win.WebSocket;
  class WebSocket extends Native {
    /** @param {string | URL} url @param {string | string[]} [protocols] */
    constructor(url, protocols) {
      const target = ic.match(url, win.document.baseURI);
      if (target && ic.known(target) !== "route") {
        // A constructor may return another object: the bridge's socket.
        return /** @type {any} */ (ic.shared.openWebSocket(target.port, target.path, protocols));
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

/**
 * `new EventSource(url, init)`: a known route opens the native EventSource on
 * it; otherwise a BridgeEventSource that goes the way the probe decides.
 * @param {Win} win @param {Interceptor} ic @param {Routes} routes
 */
export function patchEventSource(win, ic, routes) {
  const Native = win.EventSource;
  if (typeof Native !== "function") return;
  class EventSource extends Native {
    /** @param {string | URL} url @param {EventSourceInit} [init] */
    constructor(url, init) {
      const target = ic.match(url, routes.base());
      if (target && ic.known(target) !== "route") {
        const fetchTarget = (/** @type {RequestInit} */ request) => routes.fetch(target, request);
        return /** @type {any} */ (new BridgeEventSource(target.url.href, Boolean(init?.withCredentials), fetchTarget));
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
