"""The book's reference apparatus: exercises with folded, checked solutions in every chapter; a FAQ whose
answers link into the chapters; a glossary whose terms the chapters use."""

from __future__ import annotations

import re

import nbformat
import pytest

from bookfacts import ROOT, toc_files

CHAPTERS = [f for f in toc_files() if f.startswith("notebooks/")]
TERM = re.compile(r"\{term\}`(?:[^`<]*<([^>`]+)>|([^`]+))`")


def solution_cells(path):
    """The code cells after a chapter's Exercises heading that check something (hold an assert)."""
    nb = nbformat.read(path, as_version=4)
    start = [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and re.search(r"^## Exercises?$", c.source, re.M)]
    assert start, f"{path.name} has no '## Exercises' section"
    return [c for c in nb.cells[start[-1]:] if c.cell_type == "code" and re.search(r"\bassert\b", c.source)]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.split("/")[-1] for c in CHAPTERS])
def test_every_chapter_ends_with_checked_folded_solutions(chapter):
    cells = solution_cells(ROOT / f"{chapter}.ipynb")
    assert cells, "at least one exercise has a solution cell that asserts its answer (nbval runs it)"
    for cell in cells:
        assert "hide-cell" in cell.metadata.get("tags", []), f"fold the solution on the site:\n{cell.source[:200]}"
        assert not any(o.get("output_type") == "error" for o in cell.get("outputs", [])), "a solution failed"


def test_faq_has_at_least_twelve_answered_questions_linked_to_chapters():
    text = (ROOT / "book" / "faq.md").read_text(encoding="utf-8")
    entries = re.split(r"^\*\*(.+?)\*\*$", text, flags=re.M)[1:]
    questions, answers = entries[0::2], entries[1::2]
    assert len(questions) >= 12, questions
    for q, a in zip(questions, answers, strict=True):
        body = a.split("\n## ")[0]
        assert len(body.split()) >= 15, f"answer too short: {q}"
        assert "{doc}`" in body or "{ref}`" in body, f"the answer to {q!r} links to no chapter or erratum"


def glossary_terms() -> set[str]:
    """The terms defined in book/glossary.md's glossary directive (unindented lines inside it)."""
    text = (ROOT / "book" / "glossary.md").read_text(encoding="utf-8")
    block = text.split("```{glossary}")[1].split("```")[0]
    return {line.strip() for line in block.splitlines() if line.strip() and not line.startswith(" ")}


def test_glossary_terms_are_used_and_links_resolve():
    terms = glossary_terms()
    used = set()
    for chapter in CHAPTERS:
        nb = nbformat.read(ROOT / f"{chapter}.ipynb", as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                used |= {(a or b).strip() for a, b in TERM.findall(cell.source)}
    lower = {t.lower() for t in terms}
    assert {u for u in used if u.lower() not in lower} == set(), "links to terms the glossary lacks"
    unused = {t for t in terms if t.lower() not in {u.lower() for u in used}} - {"epoch"}
    assert not unused, f"glossary terms no chapter links: {sorted(unused)}"
