"""The site as readers get it, opened in a real browser (headless Chromium driven by Playwright).

The built site is served on 127.0.0.1 and every page of _toc.yml is opened with nothing outside that
address reachable: a request to any other host fails the test, as do failed requests, HTTP errors,
console errors and uncaught exceptions. On each page: math is typeset, images are loaded, saved
widgets are rendered, every link into the site resolves (file and #anchor), every Chinese (Han)
character shown is drawn with the site's own Noto Sans SC, judged on the page as loaded and settled,
without changing it (document.fonts.check per weight, and Chromium's account of the fonts that drew
each element's text: a machine without CJK fonts would otherwise draw empty boxes), the previous/next
links follow _toc.yml, the download button returns the page's source and, on chapters, the Colab
launch button points at the chapter, every image has alt text that says what it shows (not a file name), and
axe-core finds no critical or serious accessibility violation (or one listed, with why, in AXE_ACCEPTED).
Search finds pages, and its Chinese excerpts are drawn in the site's font. On the article page, the font's woff2
subsets are fetched from the site itself and load, and its Chinese quotes name the font.

Chromium: $ACCELBOOK_CHROMIUM, else chromium / chromium-browser / google-chrome on PATH (.ci/run
installs Debian's `chromium`). Without one the tests are skipped, unless ACCELBOOK_REQUIRE_BROWSER=1
(set by .ci/run), where that is a failure.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import posixpath
import re
import shutil
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest

from bookfacts import ROOT, book_config, colab_url, source_of, toc_files

playwright_api = pytest.importorskip("playwright.sync_api")

PAGES = toc_files()
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
]
TIMEOUT_MS = 30_000
WIDGET_VIEW = 'script[type="application/vnd.jupyter.widget-view+json"]'
CJK_FONT = "Noto Sans SC"  # the family of the @font-face rules that vendor-assets.mjs writes
CJK_FONT_FILES = "_static/vendor/fonts/noto-sans-sc/files/"
# Han characters: CJK unified ideographs, extension A, compatibility ideographs (a JS regex class).
HAN = r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
# axe-core, the accessibility checker, installed by `npm ci` (package.json) like the site's assets; it is
# loaded into each page as an init script (no element added) and run once the page has settled.
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
AXE_FAILS = ("critical", "serious")
# The critical or serious violations that stay, each with why: (rule, a class of the element) -> why.
AXE_ACCEPTED = {
    ("label-content-name-mismatch", "theme-switch-button"):
        "the theme's colour-mode button shows only icons, whose title tooltips (Light, Dark, System "
        "Settings) axe counts as text; its name 'Color mode' is the tooltip a sighted reader sees",
}


def fail_on(problems: list[str], where: str) -> None:
    if problems:
        pytest.fail(f"{where}:\n  " + "\n  ".join(problems), pytrace=False)


def find_chromium() -> str | None:
    named = os.environ.get("ACCELBOOK_CHROMIUM")
    if named:
        return named
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the built site, plus in-memory pages (`extra`) that exercise its assets."""

    extra: dict[str, bytes] = {}

    def do_GET(self):
        body = self.extra.get(urlsplit(self.path).path)
        if body is None:
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # the test reports what matters itself
        pass


def offline_assets_page() -> bytes:
    """A page with math and saved widgets that loads exactly the assets _config.yml names for them (and the
    site's own scripts), so the self-hosted MathJax and widget manager are tested on their own."""
    import ipywidgets
    from ipywidgets.embed import embed_data

    config = book_config()["sphinx"]["config"]
    scripts = [config["mathjax_path"], *config["nb_ipywidgets_js"], *config.get("html_js_files", [])]
    box = ipywidgets.VBox([ipywidgets.IntSlider(value=3, description="$n^2$"), ipywidgets.Label("saved state")])
    data = embed_data(views=[box])
    tags = "\n".join(f'<script src="_static/{src}"{" defer" if src == config["mathjax_path"] else ""}></script>'
                      for src in scripts)
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>offline assets</title>
<link rel="icon" href="data:,">
{tags}
<script type="application/vnd.jupyter.widget-state+json">{json.dumps(data["manager_state"])}</script>
</head><body><p>Inline <span class="math notranslate nohighlight">\\(E = mc^2\\)</span>.</p>
<div class="math notranslate nohighlight">\\[\\int_0^1 x\\,dx = \\tfrac12\\]</div>
<div><script type="application/vnd.jupyter.widget-view+json">{json.dumps(data["view_specs"][0])}</script></div>
</body></html>""".encode()


@pytest.fixture(scope="module")
def site_url(built_site):
    """The built site served over HTTP on 127.0.0.1 (an ephemeral port) while the module runs."""
    QuietHandler.extra = {"/__offline_assets__.html": offline_assets_page()}
    handler = functools.partial(QuietHandler, directory=str(built_site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    path = find_chromium()
    if path is None:
        message = "no Chromium found (install Debian's `chromium`, or set ACCELBOOK_CHROMIUM)"
        if os.environ.get("ACCELBOOK_REQUIRE_BROWSER") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS, headless=True)
        yield chromium
        chromium.close()


class Visit:
    """One page opened in a fresh browser context, with every problem it shows recorded."""

    def __init__(self, browser, site_url: str, path: str, color_scheme: str = "light"):
        self.site_url = site_url
        self.problems: list[str] = []
        self.responses: list = []  # every response the page received, in order
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block",
                                           color_scheme=color_scheme)
        self.context.route("**/*", self._only_the_site)
        if AXE.is_file():
            self.context.add_init_script(path=str(AXE))
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        page = self.page
        page.on("console", lambda m: m.type == "error" and self.problems.append(f"console error: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"uncaught exception: {e}"))
        page.on("requestfailed", lambda r: self._request_failed(r))
        page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))
        page.on("response", lambda r: self.responses.append(r))
        self.response = page.goto(urljoin(site_url, path), wait_until="load")

    def _only_the_site(self, route):
        url = route.request.url
        if url.startswith(self.site_url) or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.problems.append(f"request outside the site: {url}")
            route.abort("blockedbyclient")

    def _request_failed(self, request):
        if request.url.startswith(self.site_url):
            self.problems.append(f"failed request: {request.url} ({request.failure})")

    def close(self):
        self.context.close()


@pytest.fixture
def visit(browser, site_url):
    opened = []

    def open_page(path: str, color_scheme: str = "light") -> Visit:
        v = Visit(browser, site_url, path, color_scheme)
        opened.append(v)
        return v

    yield open_page
    for v in opened:
        v.close()


class Anchors(HTMLParser):
    """The id and name attributes of an HTML file: the targets a #fragment may name."""

    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("id", "name") and value:
                self.names.add(value)


@functools.cache
def anchors_of(file: Path) -> frozenset[str]:
    parser = Anchors()
    parser.feed(file.read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.names)


def broken_internal_links(hrefs: list[str], site_url: str, site: Path) -> list[str]:
    """The links into the site that name a missing file or a missing #anchor."""
    broken = []
    for href in sorted(set(hrefs)):
        if not href.startswith(site_url):
            continue  # other sites (GitHub, Colab, DOIs) are links for the reader, never loaded here
        parts = urlsplit(href)
        rel = posixpath.normpath(unquote(parts.path)).lstrip("/")
        target = site / rel if rel not in ("", ".") else site
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            broken.append(f"{href}: no file {rel}")
        elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in anchors_of(target):
            broken.append(f"{href}: no anchor #{parts.fragment} in {rel}")
    return broken


# The visible elements whose own text (their text-node children) holds Han characters: read-only.
HAN_ELEMENTS_JS = """han => {
    const one = new RegExp(han, "g"), found = [];
    for (const el of document.body.querySelectorAll("*")) {
        if (el.closest("script, style, template") || !el.checkVisibility()) continue;
        let text = "";
        for (const c of el.childNodes) if (c.nodeType === Node.TEXT_NODE) text += c.data;
        if (one.test(text)) found.push(el);
        one.lastIndex = 0;
    }
    return found;
}"""
# For one element (`this`): its own Han characters and the weight and style it asks the font for.
HAN_OF_ELEMENT_JS = """function (han, cjk) {
    let text = "";
    for (const c of this.childNodes) if (c.nodeType === Node.TEXT_NODE) text += c.data;
    const style = getComputedStyle(this);
    return {han: (text.match(new RegExp(han, "g")) || []).join(""), text: text.trim().slice(0, 60),
            cjk: (text.match(new RegExp(cjk, "gu")) || []).length,
            weight: style.fontWeight, style: style.fontStyle, tag: this.tagName.toLowerCase()};
}"""
# What the site's font covers: the CJK blocks that scripts/vendor-assets.mjs keeps (CJK_BLOCKS there).
CJK = r"[\u2e80-\ua4cf\uf900-\ufaff\ufe10-\ufe1f\ufe30-\ufe4f\uff00-\uffef\u{20000}-\u{3ffff}]"


def settle(v: Visit) -> None:
    """Wait as a reader does: network idle, `document.fonts.ready`, then a moment for layout."""
    v.page.wait_for_load_state("networkidle")
    v.page.evaluate("() => document.fonts.ready.then(() => null)")
    v.page.wait_for_timeout(1000)


def han_drawn_in_other_fonts(v: Visit) -> tuple[int, list[str]]:
    """Whether the page's Chinese, as loaded and laid out, is drawn with the site's Noto Sans SC, judged
    without changing the page (no node added, moved or restyled):
    - for each weight and style that Chinese text asks for, the faces of Noto Sans SC holding its
      characters are loaded (`document.fonts.check`), and no face failed;
    - each visible element's own Han characters were drawn by Noto Sans SC, as Chromium reports the
      fonts of the element's laid-out text (DevTools protocol, CSS.getPlatformFontsForNode): at least as
      many glyphs from the web font as the element has characters in the font's CJK ranges (Han,
      CJK punctuation, full-width forms), so that no Han character fell to another font. (Chromium names a font by its
      file's own name table, which for @fontsource's subsets reads "Noto Sans SC Thin" at every weight;
      a web font of that name can only be the site's.)
    Returns the number of Han characters checked and the problems found."""
    settle(v)
    cdp = v.context.new_cdp_session(v.page)
    try:
        cdp.send("DOM.enable")
        cdp.send("CSS.enable")
        cdp.send("DOM.getDocument", {"depth": 0})
        found = cdp.send("Runtime.evaluate", {"expression": f"({HAN_ELEMENTS_JS})({json.dumps(HAN)})"})
        handles = cdp.send("Runtime.getProperties", {"objectId": found["result"]["objectId"],
                                                     "ownProperties": True})["result"]
        elements = [h["value"]["objectId"] for h in handles if h["name"].isdigit()]
        checked, wrong, by_weight = 0, {}, {}
        for element in elements:
            own = cdp.send("Runtime.callFunctionOn", {
                "objectId": element, "functionDeclaration": HAN_OF_ELEMENT_JS,
                "arguments": [{"value": HAN}, {"value": CJK}], "returnByValue": True})["result"]["value"]
            node = cdp.send("DOM.requestNode", {"objectId": element})["nodeId"]
            fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
            checked += len(own["han"])
            key = f"{own['style']} {own['weight']}"
            by_weight[key] = by_weight.get(key, "") + own["han"]
            web = sum(f["glyphCount"] for f in fonts if f["isCustomFont"] and f["familyName"].startswith(CJK_FONT))
            if web < own["cjk"]:
                used = " + ".join(sorted({f"{f['familyName']} ({'web' if f['isCustomFont'] else 'system'} font)"
                                          for f in fonts})) or "no font"
                wrong.setdefault(used, []).append(f"<{own['tag']}> {own['weight']} {own['text']!r}")
    finally:
        cdp.detach()
    state = v.page.evaluate("""([family, groups]) => ({
        failed: [...document.fonts].filter(f => f.family.replace(/["']/g, "") === family && f.status === "error").length,
        unready: Object.entries(groups).filter(([w, chars]) => !document.fonts.check(`${w} 16px "${family}"`, chars))
                       .map(([w]) => w),
    })""", [CJK_FONT, by_weight])
    problems = [f"Chinese drawn with {used}, not the web font {CJK_FONT}: {len(where)} elements, e.g. "
                + "; ".join(where[:3]) for used, where in wrong.items()]
    problems += [f"{CJK_FONT}: document.fonts.check is false for the Chinese at {w}" for w in state["unready"]]
    if state["failed"]:
        problems.append(f"{CJK_FONT}: {state['failed']} font faces failed to load")
    return checked, problems


def meaningful_alt(alt: str | None, src: str) -> bool:
    """True when an image's alt text is a description: three words or more, not its file's name."""
    if not alt:
        return False
    name = posixpath.basename(urlsplit(src).path)
    return len(alt.split()) >= 3 and posixpath.splitext(name)[0] not in alt and not re.search(r"\.(png|jpe?g|svg|gif)\b", alt)


def axe_violations(v: Visit) -> list[str]:
    """axe-core's critical and serious violations on the page as it stands, less those in AXE_ACCEPTED
    (each listed there with why it stays)."""
    if not AXE.is_file():
        return [f"axe-core is missing ({AXE.relative_to(ROOT)}): run `npm ci`"]
    found = v.page.evaluate("""fails => axe.run(document, {resultTypes: ["violations"]}).then(r =>
        r.violations.filter(x => fails.includes(x.impact)).flatMap(x => x.nodes.map(n => ({
            rule: x.id, impact: x.impact, help: x.help, target: n.target.join(" "),
            classes: (n.html.match(/class="([^"]*)"/) || ["", ""])[1].split(/\\s+/)}))))""", list(AXE_FAILS))
    return [f"axe {f['impact']} {f['rule']} ({f['help']}): {f['target']}" for f in found
            if not any((f["rule"], c) in AXE_ACCEPTED for c in f["classes"])]


def page_checks(v: Visit, docname: str, site: Path) -> list[str]:
    """Everything one page of the book must show; returns the problems found."""
    page = v.page
    problems = []
    assert v.response is not None and v.response.ok, f"{docname}: HTTP {v.response and v.response.status}"

    # Math: wherever Sphinx wrote math, MathJax (served by the site) has typeset all of it, cleanly.
    n_math = page.locator(".math").count()
    if page.locator('script[src*="mathjax"]').count():
        page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
        page.evaluate("() => MathJax.startup.promise")
    if n_math:
        typeset = page.locator(".math mjx-container, mjx-container.MathJax").count()
        if typeset < n_math:
            problems.append(f"math: {typeset} of {n_math} formulas typeset")
        if page.locator("mjx-merror").count():
            problems.append("math: MathJax reports an error in a formula")

    # Figures and every other image: loaded, with real pixels.
    page.evaluate("""() => Promise.all(Array.from(document.images).map(img => {
        img.loading = "eager";
        return img.complete ? null : new Promise(done => { img.onload = img.onerror = done; });
    }))""")
    unloaded = page.evaluate(
        "() => Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
    problems += [f"image not loaded: {src}" for src in unloaded]
    # Every image in the page's content says what it shows: alt text of a few words, not a file name.
    alts = page.eval_on_selector_all(
        "article img:not([role=presentation])", "els => els.map(i => [i.getAttribute('alt'), i.src])")
    problems += [f"image without meaningful alt text ({alt!r}): {src[:100]}" for alt, src in alts
                 if not meaningful_alt(alt, src)]

    # Widgets saved in the notebook: each view rendered by the site's own widget manager.
    n_views = page.locator(WIDGET_VIEW).count()
    if n_views:
        try:
            page.wait_for_function(
                """sel => Array.from(document.querySelectorAll(sel))
                       .every(s => s.parentElement.querySelector('.jupyter-widgets:not(script)'))""",
                arg=WIDGET_VIEW)
        except playwright_api.TimeoutError:
            problems.append(f"widgets: not all of {n_views} saved widget views rendered")
        if page.locator(".jupyter-widgets.widget-error, .widget-error").count():
            problems.append("widgets: a widget rendered as an error")

    # Links into the site resolve, anchors included.
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(a => a.href)")
    problems += broken_internal_links(hrefs, v.site_url, site)

    # Chinese: every Han character shown is drawn with the site's own font, on the page as loaded.
    problems += han_drawn_in_other_fonts(v)[1]
    # Accessibility: axe-core finds no critical or serious violation (or one listed in AXE_ACCEPTED).
    problems += axe_violations(v)
    return problems


@pytest.mark.parametrize("index", range(len(PAGES)), ids=PAGES)
def test_page(index, visit, built_site):
    docname = PAGES[index]
    v = visit(f"{docname}.html")
    problems = page_checks(v, docname, built_site)
    page = v.page

    # Previous / next follow the reading order of _toc.yml.
    here = page.url
    for selector, neighbour in (("a.left-prev", index - 1), ("a.right-next", index + 1)):
        link = page.locator(f".prev-next-area {selector}")
        if 0 <= neighbour < len(PAGES):
            if link.count() != 1:
                problems.append(f"no {selector} link")
            else:
                got = urljoin(here, link.get_attribute("href")).split("#")[0]
                want = urljoin(v.site_url, f"{PAGES[neighbour]}.html")
                if got != want:
                    problems.append(f"{selector} goes to {got}, not {want}")
        elif link.count():
            problems.append(f"unexpected {selector} link on the {'first' if neighbour < 0 else 'last'} page")

    # The download button offers the page's own source, and it downloads.
    source = source_of(docname)
    want_source = urljoin(v.site_url, f"_sources/{docname}{source.suffix}")
    downloads = [urljoin(here, h) for h in page.eval_on_selector_all(
        ".dropdown-download-buttons a[href]", "els => els.map(a => a.getAttribute('href'))")]
    if want_source not in downloads:
        problems.append(f"download button lacks {want_source} (has {downloads})")
    else:
        body = v.context.request.get(want_source)
        if not body.ok:
            problems.append(f"download of {want_source}: HTTP {body.status}")
        elif source.suffix == ".ipynb" and "cells" not in json.loads(body.text()):
            problems.append(f"download of {want_source} is not a notebook")

    # Chapters: the Colab launch button opens this notebook.
    if source.suffix == ".ipynb":
        colab = page.locator(".dropdown-launch-buttons a[href*='colab.research.google.com']")
        hrefs = [colab.nth(i).get_attribute("href") for i in range(colab.count())]
        want = colab_url(f"{docname}.ipynb")
        if hrefs != [want]:
            problems.append(f"Colab launch button: {hrefs}, expected [{want}]")

    fail_on(problems + v.problems, docname)


def test_table_of_contents_lists_every_page(visit, built_site):
    v = visit(f"{PAGES[0]}.html")
    hrefs = v.page.eval_on_selector_all("nav.bd-docs-nav a.reference.internal, .navbar-brand", "els => els.map(a => a.href)")
    listed = {h.split("#")[0] for h in hrefs}
    missing = [d for d in PAGES[1:] if urljoin(v.site_url, f"{d}.html") not in listed]
    fail_on([f"the sidebar lacks {d}" for d in missing] + v.problems, "table of contents")


def test_landing_page_redirects_to_the_book(visit):
    v = visit("index.html")
    v.page.wait_for_url(f"**/{PAGES[0]}.html")
    fail_on(v.problems, "index.html")


@pytest.mark.parametrize("query", ["MNIST", "A1200"])
def test_search_finds_pages(query, visit, built_site):
    """Search finds pages; its results, Chinese excerpts included (A1200), are drawn in the site's font
    and pass axe."""
    v = visit(f"search.html?q={query}")
    results = v.page.locator("#search-results ul.search li a")
    results.first.wait_for()
    hrefs = results.evaluate_all("els => els.map(a => a.href)")
    assert hrefs, "search returned nothing"
    problems = broken_internal_links(hrefs, v.site_url, built_site)
    checked, drawn = han_drawn_in_other_fonts(v)
    if query == "A1200" and not checked:
        problems.append("no Chinese in the search results for A1200 (the article's excerpts)")
    fail_on(problems + drawn + axe_violations(v) + v.problems, f"search for {query}")


def test_general_index_opens(visit, built_site):
    v = visit("genindex.html")
    fail_on(page_checks(v, "genindex", built_site) + v.problems, "genindex")


@pytest.mark.parametrize("docname", ["book/article", "notebooks/06_optimization"])
def test_dark_mode_passes_axe(docname, visit):
    """The theme follows the reader's dark setting (html_context default_mode: auto): its colours pass axe too
    (contrast above all), and the Chinese is drawn in the site's font there as well."""
    v = visit(f"{docname}.html", color_scheme="dark")
    mode = v.page.evaluate("() => document.documentElement.dataset.theme")
    problems = [] if mode == "dark" else [f"the page did not switch to the dark theme ({mode!r})"]
    fail_on(problems + han_drawn_in_other_fonts(v)[1] + axe_violations(v) + v.problems, f"{docname}, dark mode")


def test_self_hosted_math_and_widgets_work(visit, built_site):
    """MathJax and the widget manager, as _config.yml serves them, typeset and render a test page.
    (The widget's label asks ipywidgets to typeset it through MathJax 2's API, which would throw
    under MathJax 3 without widgets-offline.js.)"""
    v = visit("__offline_assets__.html")
    problems = page_checks(v, "offline assets", built_site)
    v.page.wait_for_selector(".widget-slider")
    v.page.wait_for_timeout(500)  # let the manager's typeset calls run
    if v.page.locator(".math mjx-container").count() != 2:
        problems.append("math not typeset")
    fail_on(problems + v.problems, "offline assets page")


def test_article_chinese_in_self_hosted_font(visit, built_site):
    """The article's Chinese, as the site serves it: the Noto Sans SC woff2 subsets are fetched from
    the site itself and load (nothing outside is reachable here), the font is ready for the article's
    title, its Chinese quotes name the font, and every Han character of the page is drawn with it."""
    v = visit("book/article.html")
    page = v.page
    problems = []
    state = page.evaluate("""async ([family, han]) => {
        await document.fonts.ready;
        const faces = [...document.fonts].filter(f => f.family.replace(/["']/g, "") === family);
        const quote = Array.from(document.querySelectorAll("article blockquote p"))
            .find(p => new RegExp(han).test(p.textContent));
        return {
            ready: document.fonts.check(`16px "${family}"`, "模型加速"),
            loaded: faces.filter(f => f.status === "loaded").length,
            failed: faces.filter(f => f.status === "error").length,
            faces: faces.length,
            quoteFont: quote ? getComputedStyle(quote).fontFamily : null,
        };
    }""", [CJK_FONT, HAN])
    if not state["faces"]:
        problems.append(f"no @font-face rules for {CJK_FONT} (is noto-sans-sc.css in html_css_files?)")
    if not state["loaded"] or state["failed"]:
        problems.append(f"{CJK_FONT}: {state['loaded']} font faces loaded, {state['failed']} failed")
    if not state["ready"]:
        problems.append(f"document.fonts.check('16px \"{CJK_FONT}\"', '模型加速') is false")
    if state["quoteFont"] is None:
        problems.append("no Chinese quote (blockquote p) in the article")
    elif CJK_FONT not in state["quoteFont"]:
        problems.append(f"a Chinese quote's font-family lacks {CJK_FONT}: {state['quoteFont']}")

    fonts_dir = urljoin(v.site_url, CJK_FONT_FILES)
    fetched = [r for r in v.responses if r.url.startswith(fonts_dir)]
    if not fetched:
        problems.append(f"no woff2 of {CJK_FONT} was requested from {fonts_dir}")
    problems += [f"{r.url}: HTTP {r.status}, {r.request.resource_type}" for r in fetched
                 if not (r.ok and r.request.resource_type == "font" and r.url.endswith(".woff2"))]

    checked, drawn = han_drawn_in_other_fonts(v)
    if checked < 100:
        problems.append(f"only {checked} Han characters found on the article page")
    fail_on(problems + drawn + v.problems, "the article's Chinese")
