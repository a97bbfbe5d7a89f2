// @ts-check
/**
 * `fetch(port, path, init)` over the comm: one exchange per hop resolves a
 * Response whose body streams, acknowledged as the page reads it; same-upstream
 * redirects are followed here.
 */

import { ACK_BYTES, ACK_MESSAGES, Credit, upload } from "./flow.js";
import { CHUNK, NO_BRIDGE, WAIT_FOR_BRIDGE_MS, abortError, post } from "./protocol.js";

/** @typedef {import("./protocol.js").Model} Model */
/** @typedef {import("./registry.js").Registry} Registry */

const MAX_REDIRECTS = 20;
const NULL_BODY = new Set([101, 103, 204, 205, 304]);
const REDIRECT = new Set([301, 302, 303, 307, 308]);

/**
 * One HTTP exchange: resolves the Response once the head arrives; the body
 * streams, acknowledged as the page reads it, so a reader that stops stops
 * the kernel after `WINDOW` bytes.
 * @param {Registry} registry @param {Model} model @param {number} port @param {string} path
 * @param {string} method @param {[string, string][]} headers
 * @param {Uint8Array | ReadableStream<Uint8Array> | null} body @param {AbortSignal | undefined} signal
 * @returns {Promise<Response>}
 */
export function exchange(registry, model, port, path, method, headers, body, signal) {
  const id = registry.id();
  return new Promise((resolve, reject) => {
    /** @type {ReadableStreamDefaultController<Uint8Array> | null} */
    let controller = null;
    let settled = false;
    let finished = false;
    let delivered = 0;
    let ackedBytes = 0;
    let received = 0;
    let ackedMessages = 0;
    const credit = new Credit();
    const ack = () => {
      if (finished || !controller) return;
      const queued = Math.max(0, CHUNK - (controller.desiredSize ?? CHUNK));
      const size = delivered - queued - ackedBytes;
      const messages = received - ackedMessages;
      if (size < ACK_BYTES && messages < ACK_MESSAGES) return;
      ackedBytes += Math.max(0, size);
      ackedMessages += messages;
      post(model, { op: "ack", id, bytes: Math.max(0, size), messages });
    };
    /** @param {any} [reason] */
    const end = (reason) => {
      finished = true;
      registry.pending.delete(id);
      signal?.removeEventListener("abort", abort);
      credit.give(Infinity);
      if (reason !== undefined) post(model, { op: "cancel", id });
    };
    /** @param {Error} error */
    const fail = (error) => {
      if (finished) return;
      end();
      if (!settled) reject(error);
      else controller?.error(error);
      settled = true;
    };
    const abort = () => {
      if (finished) return;
      const error = abortError(/** @type {AbortSignal} */ (signal));
      fail(error);
      post(model, { op: "cancel", id });
    };
    /** @param {any} msg @param {Uint8Array[]} buffers */
    const handle = (msg, buffers) => {
      if (msg.op === "head") {
        const stream = new ReadableStream(
          {
            start: (c) => {
              controller = c;
            },
            pull: ack,
            cancel: (reason) => end(reason ?? "cancelled"),
          },
          new ByteLengthQueuingStrategy({ highWaterMark: CHUNK }),
        );
        const status = Number(msg.status);
        const statusText = /^[\t\x20-\x7e\x80-\xff]*$/.test(msg.reason) ? msg.reason : "";
        const head = new Headers();
        for (const [name, value] of msg.headers) {
          try {
            head.append(name, value);
          } catch {
            // A header the Fetch API cannot represent is left out, as a browser does.
          }
        }
        const nullBody = NULL_BODY.has(status) || method === "HEAD";
        try {
          resolve(new Response(nullBody ? null : stream, { status, statusText, headers: head }));
          settled = true;
        } catch (err) {
          fail(new TypeError(`The upstream answered status ${status}, which a Response cannot carry.`));
        }
      } else if (msg.op === "data") {
        received += 1;
        for (const chunk of buffers) {
          delivered += chunk.byteLength;
          controller?.enqueue(chunk);
        }
        if (msg.end) {
          end();
          controller?.close();
        } else ack();
      } else if (msg.op === "credit") {
        credit.give(Number(msg.bytes));
      } else if (msg.op === "error") {
        if (!settled && msg.status) {
          // Refusals answer like the sidecar: 400/403/502/504 with one sentence.
          end();
          settled = true;
          const headers = { "content-type": "text/plain; charset=utf-8", "x-jupyter-loopback-error": "1" };
          resolve(new Response(String(msg.message), { status: msg.status, headers }));
        } else fail(new TypeError(String(msg.message)));
      }
    };
    registry.pending.set(id, { model, handle, fail: (message) => fail(new TypeError(message)) });
    if (signal?.aborted) return abort();
    signal?.addEventListener("abort", abort, { once: true });
    post(model, { op: "fetch", id, port, path, method, headers, body: body !== null });
    if (body !== null) upload(model, id, body, credit, () => finished).catch((err) => fail(new TypeError(String(err))));
  });
}

/**
 * `fetch` to `http://127.0.0.1:<port><path>` in the kernel. Headers and body
 * are normalised as the browser's fetch does; same-upstream redirects are
 * followed unless `init.redirect` says otherwise. Rejects with a TypeError
 * only when the exchange breaks; refusals (port policy, nothing listening,
 * timeouts) resolve a 4xx/5xx Response as the sidecar would.
 * @param {Registry} registry @param {number} port @param {string} path @param {RequestInit} [init]
 * @returns {Promise<Response>}
 */
export async function bridgeFetch(registry, port, path, init = {}) {
  const signal = init.signal ?? undefined;
  if (signal?.aborted) throw abortError(signal);
  const streaming = typeof ReadableStream !== "undefined" && init.body instanceof ReadableStream;
  const probe = new Request("http://127.0.0.1/", {
    method: init.method,
    headers: init.headers,
    body: init.body,
    ...(streaming ? { duplex: "half" } : {}),
  });
  let method = probe.method;
  /** @type {[string, string][]} */
  let headers = [...probe.headers];
  /** @type {Uint8Array | ReadableStream<Uint8Array> | null} */
  let body = null;
  if (streaming) body = /** @type {ReadableStream<Uint8Array>} */ (probe.body);
  else if (probe.body) body = new Uint8Array(await probe.arrayBuffer());
  if (body instanceof Uint8Array) headers.push(["content-length", String(body.byteLength)]);
  const model = await registry.model(WAIT_FOR_BRIDGE_MS);
  if (!model) throw new TypeError(NO_BRIDGE);
  let current = path.startsWith("/") ? path : `/${path}`;
  for (let hop = 0; ; hop++) {
    const response = await exchange(registry, model, port, current, method, headers, body, signal);
    if (!REDIRECT.has(response.status) || init.redirect === "manual") return response;
    const location = response.headers.get("location");
    const next = location === null ? null : new URL(location, `http://upstream${current}`);
    if (next === null || next.origin !== "http://upstream") return response;
    if (init.redirect === "error") {
      await response.body?.cancel();
      throw new TypeError(`The server on port ${port} redirected and init.redirect is "error".`);
    }
    const toGet = response.status === 303 ? method !== "HEAD" : response.status <= 302 && method === "POST";
    if (!toGet && body !== null && !(body instanceof Uint8Array)) return response; // a stream cannot be replayed
    if (hop >= MAX_REDIRECTS) throw new TypeError(`Too many redirects from port ${port}.`);
    await response.body?.cancel();
    if (toGet) {
      method = "GET";
      body = null;
      headers = headers.filter(([name]) => !name.startsWith("content-"));
    }
    current = next.pathname + next.search;
  }
}
