// @ts-check
/**
 * Where an intercepted request goes, for one window: through the same-origin
 * route (with Jupyter's XSRF token) or over the comm, as the probe chose.
 */

/** @typedef {import("./intercept.js").Interceptor} Interceptor */
/** @typedef {import("./intercept.js").Target} Target */
/** @typedef {import("./intercept.js").Win} Win */

const UNSAFE_METHODS = /^(?!GET$|HEAD$|OPTIONS$|TRACE$)/i;

/**
 * The token Jupyter wants with an unsafe method on a same-origin route (its
 * XSRF check), read from the `_xsrf` cookie as JupyterLab's own requests do.
 * @param {Win} win @param {string} method @returns {string | null}
 */
export function xsrf(win, method) {
  const cookie = /(?:^|;\s*)_xsrf=([^;]*)/.exec(win.document.cookie);
  return cookie && UNSAFE_METHODS.test(method) ? decodeURIComponent(cookie[1]) : null;
}

/**
 * The two ways a request can go, for one window: `native` is the window's
 * unpatched fetch, `fetch(target, init)` resolves the upstream's Response
 * through the way the probe chose.
 * @param {Win} win @param {Interceptor} ic
 */
export function routing(win, ic) {
  const native = win.fetch.bind(win);
  const base = () => win.document.baseURI;
  /**
   * @param {Target} target @param {RequestInit} init
   * @returns {Promise<Response>}
   */
  const fetchTarget = async (target, init) => {
    if ((await ic.decide(target)) === "route") {
      const headers = new Headers(init.headers);
      const token = xsrf(win, init.method || "GET");
      if (token && !headers.has("x-xsrftoken")) headers.set("x-xsrftoken", token);
      const credentials = init.credentials === "include" ? "include" : "same-origin";
      return native(ic.routed(target, base()), { ...init, headers, credentials });
    }
    const response = await ic.shared.fetch(target.port, target.path, init);
    Object.defineProperty(response, "url", { value: target.url.href.replace(/#.*/, "") });
    return response;
  };
  return { native, base, fetch: fetchTarget };
}

/** @typedef {ReturnType<typeof routing>} Routes */

/**
 * The unpatched property that a patch keeps and calls.
 * @param {object} proto @param {string} name @returns {PropertyDescriptor}
 */
export function desc(proto, name) {
  return /** @type {PropertyDescriptor} */ (Object.getOwnPropertyDescriptor(proto, name));
}
