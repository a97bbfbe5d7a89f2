// @ts-check
/**
 * Intercepted images: `<img src>`, `srcset`, `setAttribute` and parsed HTML
 * (innerHTML and the like, or whatever a MutationObserver sees), routed or
 * fetched over the comm into object URLs.
 */

import { desc } from "./routing.js";

/** @typedef {import("./intercept.js").Interceptor} Interceptor */
/** @typedef {import("./intercept.js").Target} Target */
/** @typedef {import("./intercept.js").Win} Win */
/** @typedef {import("./routing.js").Routes} Routes */

/**
 * Candidates of a `srcset` attribute, as the HTML parser splits them.
 * @param {string} text @returns {{url: string, descriptor: string}[]}
 */
export function parseSrcset(text) {
  /** @type {{url: string, descriptor: string}[]} */
  const out = [];
  let at = 0;
  while (at < text.length) {
    while (at < text.length && /[\s,]/.test(text[at])) at++;
    if (at >= text.length) break;
    const start = at;
    while (at < text.length && !/\s/.test(text[at])) at++;
    let url = text.slice(start, at);
    let descriptor = "";
    if (url.endsWith(",")) url = url.replace(/,+$/, "");
    else {
      const from = at;
      let depth = 0;
      while (at < text.length && (text[at] !== "," || depth > 0)) {
        if (text[at] === "(") depth++;
        else if (text[at] === ")") depth = Math.max(0, depth - 1);
        at++;
      }
      descriptor = text.slice(from, at).trim();
    }
    out.push({ url, descriptor });
  }
  return out;
}

/** @param {{url: string, descriptor: string}[]} candidates */
export function serializeSrcset(candidates) {
  return candidates.map((c) => (c.descriptor ? `${c.url} ${c.descriptor}` : c.url)).join(", ");
}

/**
 * Routes the image URLs of `<img src>`, `<img srcset>` and `<source srcset>`.
 * A routed URL is set at once when the probe has answered; comm answers
 * become object URLs, each revoked once its image has loaded or failed, or
 * when the element's URL is replaced first.
 */
export class ImageRouter {
  /**
   * @param {Win} win @param {Interceptor} ic @param {Routes} routes
   * @param {(win: Win) => void} patchFrame patches a same-origin iframe's window
   */
  constructor(win, ic, routes, patchFrame) {
    this.win = win;
    this.ic = ic;
    this.routes = routes;
    this.patchFrame = patchFrame;
    const img = win.HTMLImageElement.prototype;
    const source = win.HTMLSourceElement.prototype;
    /** The unpatched accessors, by prototype and attribute. @type {Map<object, Record<string, PropertyDescriptor>>} */
    this.natives = new Map();
    this.natives.set(img, { src: desc(img, "src"), srcset: desc(img, "srcset") });
    this.natives.set(source, { srcset: desc(source, "srcset") });
    this.removeAttribute = win.Element.prototype.removeAttribute;
    /** @type {WeakMap<Element, {urls: string[], pending: Record<string, string>, seq: number}>} */
    this.states = new WeakMap();
    /** @type {WeakSet<HTMLIFrameElement>} */
    this.frames = new WeakSet();
  }

  /** Whether `attr` of `el` carries image URLs. @param {Element} el @param {string} attr */
  carries(el, attr) {
    const { HTMLImageElement, HTMLSourceElement } = this.win;
    const img = el instanceof HTMLImageElement;
    return (attr === "src" && img) || (attr === "srcset" && (img || el instanceof HTMLSourceElement));
  }

  /**
   * Route `value` for `attr` of `el`; false when it is not ours (the caller
   * sets it natively). `parsed`: the attribute already holds the value.
   * @param {Element} el @param {string} attr @param {string} value @param {boolean} [parsed]
   */
  route(el, attr, value, parsed = false) {
    const base = this.routes.base();
    const candidates = attr === "src" ? [{ url: value, descriptor: "" }] : parseSrcset(value);
    const targets = candidates.map((c) => this.ic.match(c.url.trim(), base));
    const ours = targets.some(Boolean);
    if (parsed && (!ours || this.states.get(el)?.pending[attr] === value)) return false;
    if (!ours) {
      const state = this.states.get(el);
      if (state) this.forget(state, attr);
      return false;
    }
    const state = this.stateOf(el);
    this.forget(state, attr);
    const seq = state.seq;
    /** @param {string[]} urls */
    const rewrite = (urls) =>
      attr === "src" ? urls[0] : serializeSrcset(candidates.map((c, i) => ({ ...c, url: urls[i] })));
    if (targets.every((t) => !t || this.ic.known(t) === "route")) {
      // Known routes only: set now, with no round trip. Same-origin URLs
      // under a working route stay as they are (and parsed ones are loading).
      if (parsed && !targets.some((t) => t?.loopback)) return true;
      this.set(el, attr, rewrite(candidates.map((c, i) => this.routedOr(targets[i], c.url, base))));
      return true;
    }
    state.pending[attr] = value;
    // Parsed HTML already holds the URL: take it away until the answer is
    // here, or the browser asks the port itself (with no attribute it asks
    // nothing and fires no error).
    if (parsed) this.removeAttribute.call(el, attr);
    /** @type {string[]} */
    const created = [];
    const settle = async (/** @type {Target | null} */ target, /** @type {string} */ url) => {
      if (!target || (await this.ic.decide(target)) === "route") return this.routedOr(target, url, base);
      const response = await this.routes.fetch(target, {});
      if (!response.ok) throw new TypeError(`${target.url.href} answered ${response.status}.`);
      const objectUrl = URL.createObjectURL(await response.blob());
      created.push(objectUrl);
      return objectUrl;
    };
    Promise.all(candidates.map((c, i) => settle(targets[i], c.url))).then(
      (urls) => {
        if (state.seq !== seq) return void created.forEach((u) => URL.revokeObjectURL(u));
        delete state.pending[attr];
        state.urls.push(...created);
        this.set(el, attr, rewrite(urls));
      },
      (err) => {
        created.forEach((u) => URL.revokeObjectURL(u));
        if (state.seq !== seq) return;
        delete state.pending[attr];
        console.warn("comm_bridge: could not load an intercepted image:", err);
        el.dispatchEvent(new Event("error"));
      },
    );
    return true;
  }

  /** Route the image attributes `el` already holds (parsed HTML). @param {Element} el */
  check(el) {
    for (const attr of ["src", "srcset"]) {
      const value = el.getAttribute(attr);
      if (value !== null && this.carries(el, attr)) this.route(el, attr, value, true);
    }
  }

  /** `check` `node` and every image element under it; patch the same-origin iframes there. @param {Node} node */
  scan(node) {
    if (!(node instanceof this.win.Element)) return;
    this.check(node);
    for (const el of node.querySelectorAll("img[src], img[srcset], source[srcset]")) this.check(el);
    for (const frame of [node, ...node.querySelectorAll("iframe")])
      if (frame instanceof this.win.HTMLIFrameElement) this.frame(frame);
  }

  /**
   * Patch a same-origin iframe's window now, before its `srcdoc` runs (folium
   * and other HTML outputs draw their maps in one), and its new document on
   * each load. A cross-origin iframe is left alone.
   * @param {HTMLIFrameElement} frame
   */
  frame(frame) {
    const enter = () => {
      try {
        const win = /** @type {Win | null} */ (frame.contentWindow);
        if (win?.document) this.patchFrame(win);
      } catch {
        // Another origin: its requests are its own.
      }
    };
    if (!this.frames.has(frame)) {
      this.frames.add(frame);
      frame.addEventListener("load", enter);
    }
    enter();
  }

  /** @param {Target | null} target @param {string} url @param {string} base */
  routedOr(target, url, base) {
    return target?.loopback ? this.ic.routed(target, base) : url;
  }

  /** @param {Element} el @param {string} attr @param {string} value */
  set(el, attr, value) {
    const { HTMLImageElement, HTMLSourceElement } = this.win;
    const proto = el instanceof HTMLImageElement ? HTMLImageElement.prototype : HTMLSourceElement.prototype;
    const d = /** @type {Record<string, PropertyDescriptor>} */ (this.natives.get(proto))[attr];
    /** @type {(v: string) => void} */ (d.set).call(el, value);
  }

  /**
   * A new URL replaces the last: its object URLs go, its answer in flight is dropped.
   * @param {{urls: string[], pending: Record<string, string>, seq: number}} state @param {string} attr
   */
  forget(state, attr) {
    for (const url of state.urls.splice(0)) URL.revokeObjectURL(url);
    delete state.pending[attr];
    state.seq++;
  }

  /**
   * The element's state, created with the listeners that revoke its object
   * URLs once the image they fed has loaded or failed. A `<source>` is
   * watched through its `<picture>`'s `<img>`, which loads for it.
   * @param {Element} el
   */
  stateOf(el) {
    let state = this.states.get(el);
    if (state) return state;
    state = { urls: [], pending: {}, seq: 0 };
    this.states.set(el, state);
    if (el instanceof this.win.HTMLImageElement) {
      const done = () => {
        const picture = el.parentElement instanceof this.win.HTMLPictureElement ? [...el.parentElement.children] : [];
        for (const each of [el, ...picture]) {
          const s = this.states.get(each);
          if (s?.urls.includes(el.currentSrc)) s.urls.splice(0).forEach((u) => URL.revokeObjectURL(u));
        }
      };
      el.addEventListener("load", done);
      el.addEventListener("error", done);
    } else {
      const img = el.parentElement?.querySelector(":scope > img");
      if (img) this.stateOf(img);
    }
    return state;
  }
}

/** `<img src>`, `srcset` and `setAttribute` on them. @param {Win} win @param {ImageRouter} images */
export function patchImages(win, images) {
  for (const [proto, attrs] of images.natives) {
    for (const [attr, d] of Object.entries(attrs)) {
      Object.defineProperty(proto, attr, {
        ...d,
        /** @this {Element} @param {string} value */
        set(value) {
          if (!images.route(this, attr, String(value))) /** @type {(v: string) => void} */ (d.set).call(this, value);
        },
      });
    }
  }
  const setAttribute = win.Element.prototype.setAttribute;
  /** @this {Element} @param {string} name @param {string} value */
  win.Element.prototype.setAttribute = function (name, value) {
    const attr = String(name).toLowerCase();
    if (!images.carries(this, attr) || !images.route(this, attr, String(value))) setAttribute.call(this, name, value);
  };
}

/**
 * Images in parsed HTML. What `innerHTML`, `outerHTML`, `insertAdjacentHTML`
 * and `createContextualFragment` parse is routed before the browser's image
 * loading (a microtask later) asks for it; `observeDocument` catches what
 * other parsers (`document.write`, `DOMParser` + `importNode`) add, late.
 * @param {Win} win @param {ImageRouter} images
 */
export function patchParsedHtml(win, images) {
  const element = win.Element.prototype;
  for (const name of ["innerHTML", "outerHTML"]) {
    const d = desc(element, name);
    Object.defineProperty(element, name, {
      ...d,
      /** @this {Element} @param {string} html */
      set(html) {
        const parent = this.parentElement;
        /** @type {(v: string) => void} */ (d.set).call(this, html);
        images.scan(name === "innerHTML" ? this : (parent ?? this));
      },
    });
  }
  const adjacent = element.insertAdjacentHTML;
  /** @this {Element} @param {InsertPosition} position @param {string} html */
  element.insertAdjacentHTML = function (position, html) {
    adjacent.call(this, position, html);
    images.scan(this.parentElement ?? this);
  };
  const contextual = win.Range.prototype.createContextualFragment;
  /** @this {Range} @param {string} html */
  win.Range.prototype.createContextualFragment = function (html) {
    const fragment = contextual.call(this, html);
    for (const child of fragment.children) images.scan(child);
    return fragment;
  };
}

/**
 * Watch `win`'s current document, once, for image URLs and iframes no patched
 * parser saw; route what it already holds.
 * @param {Win} win @param {ImageRouter} images
 */
export function observeDocument(win, images) {
  const doc = win.document;
  if (images.ic.observed.has(doc)) return;
  images.ic.observed.add(doc);
  const observer = new win.MutationObserver((records) => {
    for (const record of records) {
      if (record.type === "attributes") images.check(/** @type {Element} */ (record.target));
      else record.addedNodes.forEach((node) => images.scan(node));
    }
  });
  const attributeFilter = ["src", "srcset"];
  observer.observe(doc, { subtree: true, childList: true, attributes: true, attributeFilter });
  images.scan(doc.documentElement);
}
