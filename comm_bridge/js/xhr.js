// @ts-check
/**
 * Intercepted `XMLHttpRequest`: a known route reopens the native request on
 * it; otherwise the exchange goes over the comm behind the native accessors.
 */

import { concat, exact } from "./protocol.js";
import { desc, xsrf } from "./routing.js";

/** @typedef {import("./intercept.js").Interceptor} Interceptor */
/** @typedef {import("./intercept.js").Target} Target */
/** @typedef {import("./intercept.js").Win} Win */
/** @typedef {import("./routing.js").Routes} Routes */

/**
 * One XMLHttpRequest answered over the comm: what the native object would
 * hold, kept beside it (the native object stays UNSENT underneath).
 */
export class XhrExchange {
  /** @param {string} method @param {Target} target */
  constructor(method, target) {
    this.method = method.toUpperCase();
    this.target = target;
    /** @type {[string, string][]} */
    this.headers = [];
    this.readyState = 1;
    this.sent = false;
    this.status = 0;
    this.statusText = "";
    /** @type {Headers | null} */
    this.responseHeaders = null;
    /** @type {Uint8Array[]} */
    this.parts = [];
    /** @type {Uint8Array | null} */
    this.body = null;
    /** @type {string | null} */
    this.mime = null;
    this.controller = new AbortController();
    /** @type {{type: string, value: any} | null} */
    this.cached = null;
  }

  /** The response's MIME type, as overrideMimeType and Content-Type say. */
  contentType() {
    return this.mime ?? this.responseHeaders?.get("content-type") ?? "";
  }

  text() {
    const bytes = this.body ?? concat(this.parts.length ? this.parts : [new Uint8Array(0)]);
    const charset = /;\s*charset="?([^";\s]+)/i.exec(this.contentType())?.[1] ?? "utf-8";
    try {
      return new TextDecoder(charset).decode(bytes);
    } catch {
      return new TextDecoder().decode(bytes);
    }
  }

  /** @param {Win} win @param {"document" | ""} kind @returns {Document | null} */
  document(win, kind) {
    const mime = this.contentType().split(";")[0].trim().toLowerCase();
    const xml = mime === "text/xml" || mime === "application/xml" || mime.endsWith("+xml");
    if (!xml && !(kind === "document" && mime === "text/html")) return null;
    const parsed = new win.DOMParser().parseFromString(this.text(), xml ? "application/xml" : "text/html");
    return xml && parsed.querySelector("parsererror") ? null : parsed;
  }

  /** `xhr.response` for `type` once DONE. @param {Win} win @param {XMLHttpRequestResponseType} type */
  response(win, type) {
    if (type === "" || type === "text") return this.readyState >= 3 ? this.text() : "";
    if (this.readyState !== 4 || this.status === 0) return null;
    if (this.cached?.type === type) return this.cached.value;
    const body = /** @type {Uint8Array} */ (this.body);
    /** @type {any} */
    let value = null;
    if (type === "arraybuffer") value = exact(body.slice());
    else if (type === "blob") value = new Blob([exact(body)], { type: this.contentType() });
    else if (type === "document") value = this.document(win, "document");
    else if (type === "json") {
      try {
        value = JSON.parse(new TextDecoder().decode(body));
      } catch {
        value = null;
      }
    }
    this.cached = { type, value };
    return value;
  }
}

/**
 * `XMLHttpRequest`: a route known at `open` reopens the native request on the
 * route (the browser does the rest); otherwise the exchange goes over the comm
 * and the patched accessors answer from an XhrExchange, with the native
 * events (readystatechange, loadstart, progress, load, error, abort,
 * timeout, loadend) and `on…` handlers. Synchronous requests over the comm
 * are impossible; they are left to the browser.
 * @param {Win} win @param {Interceptor} ic @param {Routes} routes
 */
export function patchXhr(win, ic, routes) {
  const proto = win.XMLHttpRequest.prototype;
  /** @type {WeakMap<XMLHttpRequest, XhrExchange>} */
  const exchanges = new WeakMap();
  const native = {
    open: proto.open,
    send: proto.send,
    setRequestHeader: proto.setRequestHeader,
    abort: proto.abort,
    getResponseHeader: proto.getResponseHeader,
    getAllResponseHeaders: proto.getAllResponseHeaders,
    overrideMimeType: proto.overrideMimeType,
  };
  const invalid = (/** @type {string} */ message) => new DOMException(message, "InvalidStateError");

  /** @param {XMLHttpRequest} xhr @param {string} type @param {number} [loaded] @param {number} [total] */
  const fire = (xhr, type, loaded = 0, total = 0) => {
    const init = { lengthComputable: total > 0, loaded, total };
    xhr.dispatchEvent(type === "readystatechange" ? new Event(type) : new ProgressEvent(type, init));
  };
  /**
   * The native request-error steps: DONE, then the event, then loadend.
   * @param {XMLHttpRequest} xhr @param {XhrExchange} x @param {string} type
   */
  const fail = (xhr, x, type) => {
    x.controller.abort();
    x.readyState = 4;
    x.status = 0;
    x.statusText = "";
    x.responseHeaders = null;
    x.parts = [];
    fire(xhr, "readystatechange");
    fire(xhr, type);
    fire(xhr, "loadend");
  };

  /** @param {XMLHttpRequest} xhr @param {XhrExchange} x @param {Document | XMLHttpRequestBodyInit | null} [body] */
  const run = async (xhr, x, body) => {
    const payload =
      x.method === "GET" || x.method === "HEAD" || body == null
        ? undefined
        : body instanceof win.Document
          ? new win.XMLSerializer().serializeToString(body)
          : body;
    const { signal } = x.controller;
    const late = () => exchanges.get(xhr) === x && !signal.aborted && fail(xhr, x, "timeout");
    const timer = xhr.timeout > 0 ? setTimeout(late, xhr.timeout) : undefined;
    try {
      const response = await routes.fetch(x.target, { method: x.method, headers: x.headers, body: payload, signal });
      if (x.controller.signal.aborted) return void response.body?.cancel();
      x.status = response.status;
      x.statusText = response.statusText;
      x.responseHeaders = response.headers;
      x.readyState = 2;
      fire(xhr, "readystatechange");
      const total = Number(response.headers.get("content-length")) || 0;
      let loaded = 0;
      const reader = response.body?.getReader();
      for (;;) {
        const chunk = reader ? await reader.read() : { done: true, value: undefined };
        if (x.controller.signal.aborted) return void reader?.cancel();
        if (chunk.done || !chunk.value) break;
        x.parts.push(chunk.value);
        loaded += chunk.value.byteLength;
        x.readyState = 3;
        fire(xhr, "readystatechange");
        fire(xhr, "progress", loaded, total);
      }
      x.body = concat(x.parts.length ? x.parts : [new Uint8Array(0)]);
      x.readyState = 4;
      fire(xhr, "readystatechange");
      fire(xhr, "load", loaded, total);
      fire(xhr, "loadend", loaded, total);
    } catch {
      if (!x.controller.signal.aborted) fail(xhr, x, "error");
    } finally {
      clearTimeout(timer);
    }
  };

  Object.assign(proto, {
    /** @this {XMLHttpRequest} @param {string} method @param {string | URL} url @param {any[]} rest */
    open(method, url, ...rest) {
      const old = exchanges.get(this);
      if (old) old.controller.abort();
      exchanges.delete(this);
      const target = ic.match(url, routes.base());
      const sync = rest.length > 0 && !rest[0];
      const way = target && ic.known(target);
      if (target?.loopback && way === "route") url = ic.routed(target, routes.base());
      if (!target || way === "route" || sync) {
        native.open.call(this, method, String(url), .../** @type {[boolean]} */ (rest.length ? rest : [true]));
        const token = way === "route" ? xsrf(win, method) : null;
        if (token) native.setRequestHeader.call(this, "X-XSRFToken", token);
        return;
      }
      exchanges.set(this, new XhrExchange(String(method), target));
      fire(this, "readystatechange");
    },
    /** @this {XMLHttpRequest} @param {Document | XMLHttpRequestBodyInit | null} [body] */
    send(body) {
      const x = exchanges.get(this);
      if (!x) return native.send.call(this, body);
      if (x.readyState !== 1 || x.sent) throw invalid("send() needs an opened, unsent request.");
      x.sent = true;
      fire(this, "loadstart");
      run(this, x, body);
    },
    /** @this {XMLHttpRequest} @param {string} name @param {string} value */
    setRequestHeader(name, value) {
      const x = exchanges.get(this);
      if (!x) return native.setRequestHeader.call(this, name, value);
      if (x.readyState !== 1 || x.sent) throw invalid("setRequestHeader() needs an opened, unsent request.");
      x.headers.push([String(name), String(value)]);
    },
    /** @this {XMLHttpRequest} */
    abort() {
      const x = exchanges.get(this);
      if (!x) return native.abort.call(this);
      if ((x.readyState === 1 && x.sent) || x.readyState === 2 || x.readyState === 3) fail(this, x, "abort");
      x.controller.abort();
      x.readyState = 0;
    },
    /** @this {XMLHttpRequest} @param {string} name */
    getResponseHeader(name) {
      const x = exchanges.get(this);
      if (!x) return native.getResponseHeader.call(this, name);
      return x.responseHeaders?.get(name) ?? null;
    },
    /** @this {XMLHttpRequest} */
    getAllResponseHeaders() {
      const x = exchanges.get(this);
      if (!x) return native.getAllResponseHeaders.call(this);
      return [...(x.responseHeaders ?? [])].map(([name, value]) => `${name}: ${value}\r\n`).join("");
    },
    /** @this {XMLHttpRequest} @param {string} mime */
    overrideMimeType(mime) {
      const x = exchanges.get(this);
      if (!x) return native.overrideMimeType.call(this, mime);
      if (x.readyState >= 3) throw invalid("overrideMimeType() comes before the response.");
      x.mime = String(mime);
    },
  });

  /** @type {Record<string, (xhr: XMLHttpRequest, x: XhrExchange) => any>} */
  const getters = {
    readyState: (_, x) => x.readyState,
    status: (_, x) => x.status,
    statusText: (_, x) => x.statusText,
    responseURL: (_, x) => (x.readyState >= 2 && x.status ? x.target.url.href.replace(/#.*/, "") : ""),
    response: (xhr, x) => x.response(win, xhr.responseType),
    responseText: (xhr, x) => {
      if (xhr.responseType !== "" && xhr.responseType !== "text")
        throw invalid(`responseText needs responseType "" or "text".`);
      return x.response(win, "text");
    },
    responseXML: (xhr, x) => {
      if (xhr.responseType !== "" && xhr.responseType !== "document")
        throw invalid(`responseXML needs responseType "" or "document".`);
      return x.readyState === 4 && x.status ? x.document(win, xhr.responseType) : null;
    },
  };
  for (const [name, answer] of Object.entries(getters)) {
    const d = desc(proto, name);
    Object.defineProperty(proto, name, {
      ...d,
      /** @this {XMLHttpRequest} */
      get() {
        const x = exchanges.get(this);
        return x ? answer(this, x) : /** @type {() => any} */ (d.get).call(this);
      },
    });
  }
}
