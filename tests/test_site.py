"""The site builds with warnings as errors (the same command as `bash scripts/book.sh site`) and
references no CDN: everything a page loads is served by the site itself."""

import re

from bookfacts import toc_files

# Hosts that serve shared front-end files; a page that loads from them is blank offline.
CDN = re.compile(r"cdn\.|jsdelivr|unpkg\.com|cdnjs|googleapis\.com|gstatic\.com|bootstrapcdn|polyfill\.io|fontawesome\.com/")
# Attributes that make the browser fetch something (links to other sites in <a href> are fine).
FETCHED = re.compile(r"<(?:script|link|img|iframe|source|video|audio|embed|object)\b[^>]*?\b(?:src|href|data)=\"([^\"]+)\"", re.I)


def test_site_builds_without_warnings(built_site):
    assert (built_site / "index.html").is_file()
    for docname in toc_files():
        assert (built_site / f"{docname}.html").is_file(), f"{docname} of _toc.yml was not built"


def test_no_page_references_a_cdn(built_site):
    pages = sorted(built_site.rglob("*.html"))
    assert pages
    problems = []
    for page in pages:
        html = page.read_text(encoding="utf-8")
        name = page.relative_to(built_site)
        problems += [f"{name}: mentions {m.group(0)!r}" for m in CDN.finditer(html)]
        problems += [f"{name}: loads {url}" for url in FETCHED.findall(html) if re.match(r"([a-z]+:)?//", url, re.I)]
    assert not problems, "\n".join(problems)
