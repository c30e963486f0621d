"""Facts the book's tests read from _config.yml and _toc.yml: the one repository URL and what derives
from it, and the pages in reading order."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"


def book_config() -> dict:
    """The parsed _config.yml."""
    return yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))


def toc_files() -> list[str]:
    """Every file of _toc.yml in reading order (root first), as written there: no suffix."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(node: dict) -> None:
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key, []) or []:
                if "file" in child:
                    files.append(child["file"])
                walk(child)

    walk(toc)
    return files


def source_of(docname: str) -> Path:
    """The source file of a _toc.yml entry (.ipynb or .md)."""
    for suffix in (".ipynb", ".md"):
        path = ROOT / f"{docname}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"{docname} of _toc.yml has no .ipynb or .md source")


def colab_url(path: str) -> str:
    """The Colab address of a file of the repository, derived from _config.yml's one repository URL."""
    cfg = book_config()
    repo = cfg["repository"]
    owner_name = repo["url"].removeprefix("https://github.com/").strip("/")
    colab = cfg["launch_buttons"]["colab_url"].rstrip("/")
    prefix = (repo.get("path_to_book") or "").strip("/")
    full = f"{prefix}/{path}" if prefix else path
    return f"{colab}/github/{owner_name}/blob/{repo.get('branch', 'main')}/{full}"


def stored_glue(stem: str) -> dict[str, str]:
    """The text each code cell of notebooks/<stem>.ipynb's stored run glued, by name."""
    nb = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text(encoding="utf-8"))
    return {out["metadata"]["scrapbook"]["name"]:
            ast.literal_eval(out["data"][out["metadata"]["scrapbook"]["mime_prefix"] + "text/plain"])
            for cell in nb["cells"] if cell["cell_type"] == "code" for out in cell.get("outputs", [])
            if "scrapbook" in out.get("metadata", {})}
