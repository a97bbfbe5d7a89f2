// @ts-check
/** What the bridge's WebSocket and EventSource share with the browser's: events and ready states. */

/** An EventTarget whose `on<type>` handler runs before the listeners, as the browser's objects do. */
export class HandlerTarget extends EventTarget {
  /** @param {Event} event */
  _fire(event) {
    const handler = /** @type {any} */ (this)[`on${event.type}`];
    if (typeof handler === "function") handler.call(this, event);
    this.dispatchEvent(event);
  }
}

/**
 * The ready-state constants, `names[i]` being `i`, on the class and its
 * prototype, read-only, where the browser's WebSocket and EventSource have them.
 * @param {{prototype: object}} cls @param {string[]} names
 */
export function readyStates(cls, names) {
  const constants = Object.fromEntries(names.map((name, value) => [name, { value, enumerable: true }]));
  Object.defineProperties(cls, constants);
  Object.defineProperties(cls.prototype, constants);
}
