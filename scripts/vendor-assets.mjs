// Copy the browser assets the pages load from node_modules into book/_static/vendor/, so the site
// references no CDN. Runs after `npm ci` (package.json "postinstall"); _config.yml points
// mathjax_path and nb_ipywidgets_js at the copies. The copies are build outputs (git-ignored).
import { cpSync, existsSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const modules = join(root, "node_modules");
const vendor = join(root, "book", "_static", "vendor");

// [source under node_modules, destination under vendor/]
const copies = [
  // MathJax 3: the combined TeX/MathML + CommonHTML component, plus what it loads on demand
  // (TeX extensions via autoload, the menu, accessibility and speech, the CommonHTML fonts).
  ["mathjax/es5/tex-mml-chtml.js", "mathjax/tex-mml-chtml.js"],
  ["mathjax/es5/input", "mathjax/input"],
  ["mathjax/es5/output/chtml", "mathjax/output/chtml"],
  ["mathjax/es5/ui", "mathjax/ui"],
  ["mathjax/es5/a11y", "mathjax/a11y"],
  ["mathjax/es5/sre", "mathjax/sre"],
  ["mathjax/es5/adaptors", "mathjax/adaptors"],
  ["mathjax/LICENSE", "mathjax/LICENSE"],
  // RequireJS, which the widget manager's AMD bundle needs.
  ["requirejs/require.js", "requirejs/require.js"],
  // The ipywidgets 8 HTML manager (AMD bundle with @jupyter-widgets/base and controls built in)
  // and the icon fonts it references next to itself.
  ["@jupyter-widgets/html-manager/dist", "html-manager"],
];
const skip = /\.map$|^(embed\.js|libembed-amd\.js)$/;

rmSync(vendor, { recursive: true, force: true });
for (const [from, to] of copies) {
  const src = join(modules, from);
  if (!existsSync(src)) {
    console.error(`vendor-assets: ${src} is missing; run \`npm ci\` first`);
    process.exit(1);
  }
  const dest = join(vendor, to);
  mkdirSync(dirname(dest), { recursive: true });
  cpSync(src, dest, {
    recursive: true,
    filter: (path) => !skip.test(path.split("/").pop()),
  });
}
console.log(`vendor-assets: copied ${copies.length} assets into ${vendor}`);
