"""A chapter's results, printed for the notebook reader and glued for its summary on the site.

`results({"name": value, ...})` prints one line per result and stores each under its name as
MyST-NB does with `myst_nb.glue` (display data with `scrapbook` metadata), so a summary cell can say
{glue:text}`name` and the site shows the value of the stored run. It needs only IPython, so it runs
on Colab, where myst_nb is not installed.
"""

from __future__ import annotations

# The prefix MyST-NB gives the mime types of a value glued without being shown (myst_nb.ext.glue).
HIDDEN = "application/papermill.record/"


def glue(name: str, text: str) -> None:
    """Store `text` under `name` for MyST-NB's {glue:text} role, without showing it."""
    from IPython.display import display

    display({HIDDEN + "text/plain": repr(str(text))}, raw=True,
            metadata={"scrapbook": {"name": name, "mime_prefix": HIDDEN}})


WIDTH = 88  # the book's widest printed line


def results(values: dict[str, object]) -> None:
    """Print each `name  value` on its own line (one block; a long value wrapped within WIDTH, indented
    under its start), then glue each value's text, whole, under its name."""
    import textwrap

    if not values:
        raise ValueError("results() needs at least one named value")
    width = max(len(name) for name in values)
    print("\n".join(textwrap.fill(f"{name:<{width}}  {value}", WIDTH, subsequent_indent=" " * (width + 2))
                    for name, value in values.items()))
    for name, value in values.items():
        glue(name, str(value))
