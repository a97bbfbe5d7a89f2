// Bundle the comm bridge's ES modules, comm_bridge/js/, into the one file
// anywidget loads, comm_bridge/static/bridge.js (a widget's `_esm` is one
// module text: relative imports cannot work there). The bundle is committed;
// tests/js/bundle.test.mjs fails when it is not what these sources give.
//
//     node tools/bundle_js.mjs            # write comm_bridge/static/bridge.js (`make js`)
//     node tools/bundle_js.mjs --check    # exit 1 if it is out of date
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
export const ENTRY = "comm_bridge/js/widget.js";
export const BUNDLE = "comm_bridge/static/bridge.js";
const BANNER = [
  "// Generated from comm_bridge/js/ by `make js` (tools/bundle_js.mjs): edit those files, not this one.",
  "// Its JSDoc and types are there; `npm run typecheck` checks them.",
].join("\n");

/** The bundle the sources give now: ESM, readable (not minified), one module per section. */
export async function bundle() {
  const result = await build({
    absWorkingDir: ROOT,
    entryPoints: [ENTRY],
    bundle: true,
    format: "esm",
    target: "es2022",
    banner: { js: BANNER },
    write: false,
    logLevel: "silent",
  });
  return result.outputFiles[0].text;
}

/** The committed bundle, or "" when there is none. */
export function committed() {
  try {
    return readFileSync(new URL(`../${BUNDLE}`, import.meta.url), "utf8");
  } catch {
    return "";
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const fresh = await bundle();
  if (process.argv.includes("--check")) {
    if (fresh !== committed()) {
      console.error(`${BUNDLE} is out of date: run make js (or node tools/bundle_js.mjs)`);
      process.exit(1);
    }
  } else {
    writeFileSync(new URL(`../${BUNDLE}`, import.meta.url), fresh);
  }
}
