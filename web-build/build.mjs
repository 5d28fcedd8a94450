// Bundles entry.js and the pinned packages (package-lock.json) into one minified ES module,
// duely/web/static/vendor/codemirror.js, headed by the versions it was built from. Run through
// build.sh, which installs exactly the locked versions first.
import { readFileSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "duely", "web", "static", "vendor", "codemirror.js");
const lock = JSON.parse(readFileSync(join(here, "package-lock.json"), "utf8"));

const esbuildVersion = lock.packages["node_modules/esbuild"].version;
const options = {
  entryPoints: [join(here, "entry.js")],
  bundle: true,
  format: "esm",
  minify: true,
  target: "es2020",
  legalComments: "none",
  write: false,
  metafile: true,
};

// The packages that end up in the bundle (esbuild's list of inputs), at their locked versions.
const probe = await esbuild.build(options);
const names = new Set(Object.keys(probe.metafile.inputs)
  .map((path) => path.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//)?.[1])
  .filter(Boolean));
const bundled = [...names].sort().map((name) => `${name}@${lock.packages[`node_modules/${name}`].version}`);

const banner = [
  "// CodeMirror 6 for the Duely web page: ONE generated file, do not edit by hand.",
  "// Rebuild: web-build/build.sh (or `make editor`): npm ci of web-build/package-lock.json,",
  `// then esbuild ${esbuildVersion} bundles web-build/entry.js (the names it exports), minified.`,
  "// Packages (MIT licensed; https://codemirror.net, https://lezer.codemirror.net):",
  ...bundled.map((name) => `//   ${name}`),
].join("\n");
const result = await esbuild.build({ ...options, metafile: false, banner: { js: banner } });
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, result.outputFiles[0].contents);
console.log(`wrote ${out} (${result.outputFiles[0].contents.length} bytes)`);
