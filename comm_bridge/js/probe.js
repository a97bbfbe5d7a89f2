// @ts-check
/**
 * The route probe: whether a registered prefix's same-origin route works.
 * `<prefix>/__probe__` answering 2xx means the route; anything else, a
 * network error or no answer within PROBE_TIMEOUT_MS means the comm.
 */

export const PROBE_TIMEOUT_MS = 5000;

/**
 * @typedef {"route" | "comm"} Way
 * @typedef {{way: Way | null, ready: Promise<Way>}} Probe
 */

/**
 * Ask `<prefix>/__probe__` once, with the page's unpatched `fetch` (a probe
 * must not be intercepted; none at all means the comm). `way` is null until
 * `ready` resolves.
 * @param {typeof fetch | null} native @param {string} prefix @returns {Probe}
 */
export function probeRoute(native, prefix) {
  /** @type {Promise<Way>} */
  const asked = native
    ? native(`${prefix}/__probe__`, {
        cache: "no-store",
        credentials: "same-origin",
        signal: AbortSignal.timeout(PROBE_TIMEOUT_MS),
      }).then(
        (response) => (response.ok ? "route" : "comm"),
        () => "comm",
      )
    : Promise.resolve("comm");
  /** @type {Probe} */
  const probe = { way: null, ready: asked.then((way) => (probe.way = way)) };
  return probe;
}
