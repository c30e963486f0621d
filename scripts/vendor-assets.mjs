// Copy the browser assets the pages load from node_modules into book/_static/vendor/, so the site
// references no CDN. Runs after `npm ci` (package.json "postinstall"); _config.yml points
// mathjax_path and nb_ipywidgets_js at the copies, and lists the Chinese font's stylesheet
// (vendor/fonts/noto-sans-sc/noto-sans-sc.css, written here) with book/_static/cjk.css in
// html_css_files. The copies are build outputs (git-ignored).
//
// The font: Noto Sans SC from @fontsource/noto-sans-sc, weights 400 (text, and the theme's 500 and
// 600 headings and contents entries, which the browser maps to it) and 700 (bold, table headers),
// woff2 only. Each weight is ~100 subsets, each with its unicode-range, so a browser fetches only the
// few subsets whose characters a page shows. All CJK subsets are copied, not only those of the
// characters the book uses today: subsets picked from today's text would silently miss a character
// added tomorrow, as nothing re-runs this script when a page changes.
//
// Each face's unicode-range is cut down to CJK code points (CJK_BLOCKS), and faces left with none are
// dropped, so that cjk.css can name "Noto Sans SC" FIRST in the theme's font stacks without touching
// Latin text. It must come first: as the last family of a stack, the Han characters reached it only
// through Chromium's fallback, which drew them in a system font (DejaVu Sans: empty boxes) while their
// subset was not yet loaded, and some of that text (bold titles, table headers, contents entries) was
// never laid out again when the subset arrived. As a stack's first family, the loading web font is the
// characters' own font, and the browser redraws them with it when it arrives (tests/test_browser.py).
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
// CJK radicals to Yi radicals (U+2E80-A4CF: punctuation 、。《》, kana, bopomofo, ideographs and
// extension A), compatibility ideographs, vertical and compatibility forms, full- and half-width forms
// (：，（）), and the supplementary ideograph planes.
const CJK_BLOCKS = [[0x2e80, 0xa4cf], [0xf900, 0xfaff], [0xfe10, 0xfe1f], [0xfe30, 0xfe4f],
  [0xff00, 0xffef], [0x20000, 0x3ffff]];

function cjkRanges(range) {
  /** The parts of a unicode-range value ("U+4e00-4e0f,U+ff1a") that fall in CJK_BLOCKS. */
  const kept = [];
  for (const part of range.split(",")) {
    const [lo, hi = lo] = part.trim().replace(/^U\+/i, "").split("-").map((h) => parseInt(h, 16));
    for (const [a, b] of CJK_BLOCKS) {
      const from = Math.max(lo, a), to = Math.min(hi, b);
      if (from <= to) kept.push(from === to ? `U+${from.toString(16)}` : `U+${from.toString(16)}-${to.toString(16)}`);
    }
  }
  return kept.join(",");
}

function cjkOnly(css) {
  /** A fontsource stylesheet with each face's unicode-range cut to CJK, and faces without CJK left out. */
  const faces = css.split(/(?=\/\* noto-sans-sc-)/).filter((rule) => rule.includes("@font-face"));
  return faces.map((rule) => {
    const range = /unicode-range: ([^;]+);/.exec(rule);
    if (!range) throw new Error(`vendor-assets: a face without unicode-range: ${rule.slice(0, 80)}`);
    const kept = cjkRanges(range[1]);
    return kept ? rule.replace(range[0], `unicode-range: ${kept};`).trim() : null;
  }).filter(Boolean).join("\n\n");
}

const rules = [];
let fontFiles = 0;
mkdirSync(join(fontDest, "files"), { recursive: true });
for (const weight of fontWeights) {
  const src = join(fontPackage, `${weight}.css`);
  if (!existsSync(src)) {
    console.error(`vendor-assets: ${src} is missing; run \`npm ci\` first`);
    process.exit(1);
  }
  const css = cjkOnly(readFileSync(src, "utf8").replace(woffFallback, ""));
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
  + `${fontWeights.join(", ")}, woff2, CJK code points only: written by scripts/vendor-assets.mjs. */`;
writeFileSync(join(fontDest, "noto-sans-sc.css"), [header, ...rules].join("\n\n") + "\n");
console.log(`vendor-assets: copied ${copies.length} assets and Noto Sans SC `
  + `(${fontFiles} woff2 files) into ${vendor}`);
