// @ts-check
/**
 * Server-sent events for an intercepted `EventSource`: the `text/event-stream`
 * parser and an EventSource over a fetch of the URL.
 */

import { HandlerTarget, readyStates } from "./handler_target.js";

/**
 * The `text/event-stream` parser of the HTML standard (§9.2.6): `push` text as
 * it arrives, get the events it completes. An event cut off by the end of the
 * stream is never returned.
 */
export class EventStream {
  constructor() {
    this.buffer = "";
    this.started = false;
    this.afterCR = false;
    /** @type {string[]} */
    this.data = [];
    this.type = "";
    this.lastEventId = "";
    /** @type {number | null} */
    this.retry = null;
  }

  /** @param {string} text @returns {{type: string, data: string, lastEventId: string}[]} */
  push(text) {
    if (!this.started && text) {
      this.started = true;
      if (text.startsWith("\ufeff")) text = text.slice(1);
    }
    if (this.afterCR && text.startsWith("\n")) text = text.slice(1);
    if (text) this.afterCR = false;
    this.buffer += text;
    /** @type {{type: string, data: string, lastEventId: string}[]} */
    const events = [];
    const lines = this.buffer.split(/\r\n|\r|\n/);
    this.buffer = /** @type {string} */ (lines.pop());
    if (this.buffer === "" && text.endsWith("\r")) this.afterCR = true;
    for (const line of lines) {
      if (line === "") {
        const { type, data, lastEventId } = this;
        if (data.length) events.push({ type: type || "message", data: data.join("\n"), lastEventId });
        this.data = [];
        this.type = "";
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") this.data.push(value);
      else if (field === "event") this.type = value;
      else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
      else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
    }
    return events;
  }
}

/**
 * An EventSource over a fetch of the intercepted URL (the comm, or the route
 * once the probe has answered): the browser's events, states and
 * reconnection with `Last-Event-ID`.
 */
export class BridgeEventSource extends HandlerTarget {
  /**
   * @param {string} url @param {boolean} withCredentials
   * @param {(init: RequestInit) => Promise<Response>} fetchTarget
   */
  constructor(url, withCredentials, fetchTarget) {
    super();
    this.url = url;
    this.withCredentials = withCredentials;
    this.readyState = 0;
    /** @type {((event: Event) => void) | null} */
    this.onopen = null;
    /** @type {((event: MessageEvent) => void) | null} */
    this.onmessage = null;
    /** @type {((event: Event) => void) | null} */
    this.onerror = null;
    this._fetch = fetchTarget;
    this._retry = 3000;
    this._lastEventId = "";
    /** @type {AbortController | null} */
    this._controller = null;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._timer = undefined;
    queueMicrotask(() => this._connect());
  }

  close() {
    this.readyState = 2;
    clearTimeout(this._timer);
    this._controller?.abort();
  }

  async _connect() {
    if (this.readyState === 2) return;
    const controller = (this._controller = new AbortController());
    /** @type {Record<string, string>} */
    const headers = { accept: "text/event-stream", "cache-control": "no-cache" };
    if (this._lastEventId) headers["last-event-id"] = this._lastEventId;
    try {
      const response = await this._fetch({ headers, signal: controller.signal, cache: "no-store" });
      const type = (response.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
      if (response.status !== 200 || type !== "text/event-stream" || !response.body) {
        await response.body?.cancel();
        if (this.readyState === 2) return;
        this.readyState = 2;
        return this._fire(new Event("error"));
      }
      if (this.readyState === 2) return void response.body.cancel();
      this.readyState = 1;
      this._fire(new Event("open"));
      const stream = new EventStream();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const origin = new URL(this.url).origin;
      for (;;) {
        const { done, value } = await reader.read();
        if (done || this.readyState === 2) break;
        for (const event of stream.push(value)) {
          this._lastEventId = event.lastEventId;
          if (this.readyState === 2) break;
          this._fire(new MessageEvent(event.type, { data: event.data, lastEventId: event.lastEventId, origin }));
        }
        this._lastEventId = stream.lastEventId;
        if (stream.retry !== null) this._retry = stream.retry;
      }
    } catch {
      // A dropped connection: reconnect below, as the browser would.
    }
    if (this.readyState === 2) return;
    this.readyState = 0;
    this._fire(new Event("error"));
    if (this.readyState !== 2) this._timer = setTimeout(() => this._connect(), this._retry);
  }
}
readyStates(BridgeEventSource, ["CONNECTING", "OPEN", "CLOSED"]);
