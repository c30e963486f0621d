"""No page names a chapter that is not in the table of contents: a chapter in preparation is not promised
as if it were there."""

import json
import re

from bookfacts import source_of, toc_files

# Chapters the book plans; a page may name one in quotes only once it is in _toc.yml.
PLANNED = ("Profiling", "The optimization ladder", "Scaling out", "Inference", "Robustness")
NAMED = re.compile(r'[Cc]hapters?\s+((?:"[^"]+"(?:,\s*|\s+and\s+)?)+)')


def page_text(docname: str) -> str:
    """The prose of a page: a Markdown file, or a notebook's Markdown cells."""
    path = source_of(docname)
    if path.suffix == ".md":
        return path.read_text(encoding="utf-8")
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def title(docname: str) -> str:
    """A page's title: its first level-one heading, without a subtitle after a colon."""
    heading = next(line for line in page_text(docname).splitlines() if line.startswith("# "))
    return heading[2:].split(":")[0].strip()


def chapter_names(text: str) -> set[str]:
    """Chapter titles a text names: `the chapter "X"`, `the chapters "X" and "Y"`, or a planned title in quotes."""
    names = {" ".join(name.split()) for group in NAMED.findall(text) for name in re.findall(r'"([^"]+)"', group)}
    return names | {t for t in PLANNED if f'"{t}"' in text}


def test_the_name_finder_sees_lists_and_planned_titles():
    text = 'the chapters "A b" and "C", then the chapter "D"; "Robustness" later'
    assert chapter_names(text) == {"A b", "C", "D", "Robustness"}


def test_every_named_chapter_is_in_the_toc():
    titles = {title(d) for d in toc_files()}
    missing = {d: sorted(chapter_names(page_text(d)) - titles) for d in toc_files()}
    missing = {d: names for d, names in missing.items() if names}
    assert not missing, f"pages name chapters that are not in _toc.yml: {missing}; titles: {sorted(titles)}"
