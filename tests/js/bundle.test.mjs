// The committed bundle, comm_bridge/static/bridge.js (what anywidget loads),
// is what esbuild makes of comm_bridge/js/ now: `make js` after editing them.
import assert from "node:assert/strict";
import { test } from "node:test";

import { BUNDLE, bundle, committed } from "../../tools/bundle_js.mjs";

test("the committed bundle is a fresh build of comm_bridge/js/", async () => {
  const fresh = await bundle();
  assert.ok(fresh === committed(), `${BUNDLE} is out of date: run make js`);
});

test("the bundle renames no function or class: their names stay what the page sees", async () => {
  // esbuild renames a binding that would shadow another name of the bundle;
  // for a named function expression or class that changes its `.name`.
  const renamed = (await bundle()).match(/\b(?:function\*?|class) [A-Za-z_$]+\d+\b/g);
  assert.deepEqual(renamed, null);
});
