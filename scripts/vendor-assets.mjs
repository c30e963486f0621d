// Copy the browser assets the pages load from node_modules into book/_static/vendor/, so the site
// references no CDN. Runs after `npm ci` (package.json "postinstall"); _config.yml points
// mathjax_path and nb_ipywidgets_js at the copies, and lists the Chinese font's stylesheet
// (vendor/fonts/noto-sans-sc/noto-sans-sc.css, written here) with book/_static/cjk.css in
// html_css_files. The copies are build outputs (git-ignored).
//
// The font: Noto Sans SC from @fontsource/noto-sans-sc, weights 400 (text) and 700 (headings from
// h3 on and bold, which are Chinese too), woff2 only. Each weight is ~100 subsets, each with its
// unicode-range, so a browser fetches only the few subsets whose characters a page shows. All
// subsets are copied (2.4 MB a weight, 5.1 MB in all), not only those of the characters the book
// uses today: subsets picked from today's text would silently miss a character added tomorrow, as
// nothing re-runs this script when a page changes.
import {
  copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync,
} from "node:fs";
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

// Noto Sans SC: one stylesheet with the @font-face rules of the weights, their woff2 files beside
// it in files/, and the font's licence (SIL OFL 1.1, which asks for it to travel with the font).
const fontPackage = join(modules, "@fontsource", "noto-sans-sc");
const fontWeights = [400, 700];
const fontDest = join(vendor, "fonts", "noto-sans-sc");
const woff2 = /url\(\.\/files\/([\w.-]+\.woff2)\) format\('woff2'\)/g;
// Every browser that reads unicode-range reads woff2: the woff fallbacks are left out.
const woffFallback = /, url\(\.\/files\/[\w.-]+\.woff\) format\('woff'\)/g;
const rules = [];
let fontFiles = 0;
mkdirSync(join(fontDest, "files"), { recursive: true });
for (const weight of fontWeights) {
  const src = join(fontPackage, `${weight}.css`);
  if (!existsSync(src)) {
    console.error(`vendor-assets: ${src} is missing; run \`npm ci\` first`);
    process.exit(1);
  }
  const css = readFileSync(src, "utf8").replace(woffFallback, "");
  const names = [...css.matchAll(woff2)].map((m) => m[1]);
  if (!names.length || /\.woff\)/.test(css) || /url\((?!\.\/files\/)/.test(css)) {
    console.error(`vendor-assets: ${src} no longer reads url(./files/NAME.woff2) format('woff2')`);
    process.exit(1);
  }
  for (const name of names) {
    copyFileSync(join(fontPackage, "files", name), join(fontDest, "files", name));
  }
  fontFiles += names.length;
  rules.push(css.trim());
}
copyFileSync(join(fontPackage, "LICENSE"), join(fontDest, "LICENSE"));
const { version } = JSON.parse(readFileSync(join(fontPackage, "package.json"), "utf8"));
const header = `/* Noto Sans SC ${version} (@fontsource/noto-sans-sc), weights `
  + `${fontWeights.join(", ")}, woff2: written by scripts/vendor-assets.mjs. */`;
writeFileSync(join(fontDest, "noto-sans-sc.css"), [header, ...rules].join("\n\n") + "\n");
console.log(`vendor-assets: copied ${copies.length} assets and Noto Sans SC `
  + `(${fontFiles} woff2 files) into ${vendor}`);
