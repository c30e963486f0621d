"""What each chapter tells a reader before they run it, checked against its source.

- Run times: each chapter's opening states the full profile's time (within 10 % of the stored execution's
  own per-cell timing), the quick profile's (within 10 % of notebooks/quick-times.json, a timed
  `pytest --nbval` run) and, until a GPU ran the chapter, "on a GPU: not yet measured"; README's table too.
- One repository address: every mention of the book's repository (badges, install cells, README,
  accelbook.records.RESULTS_URL, environment.yml) is _config.yml's repository.url.
- The Colab install cell fails with one sentence, not a pip traceback, when the address cannot be installed.
- Every figure has a caption and alt text that says what it shows.
- Plain `pytest --nbval` runs the quick profile; ACCELBOOK_QUICK=0 the full one.
scripts/polish_chapters.py writes all of these; the checks here recompute each source on their own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import nbformat
import pytest

from bookfacts import ROOT, book_config, colab_url

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]
QUICK_TIMES = ROOT / "notebooks" / "quick-times.json"
RUNTIME = re.compile(r"^\*\*Run time:\*\* full profile (?P<full>[\dhmins ]+?) on (?P<device>.+?) \(the run stored on "
                     r"this page\); quick profile (?P<quick>[\dhmins ]+?) on .+? \(plain `pytest --nbval`, "
                     r"\d{4}-\d{2}-\d{2}\)(?P<gpu>; on a GPU: not yet measured)?\.$", re.M)


def read(path: Path):
    return nbformat.read(path, as_version=4)


def seconds(text: str) -> float:
    """Seconds of a stated duration: '45 s', '3 min 20 s', '48 min', '1 h 05 min'."""
    parts = dict((unit, int(n)) for n, unit in re.findall(r"(\d+) (h|min|s)\b", text))
    assert parts and re.fullmatch(r"(\d+ (h|min|s) ?)+", text.strip()), f"not a duration: {text!r}"
    return 3600 * parts.get("h", 0) + 60 * parts.get("min", 0) + parts.get("s", 0)


def stored_wall_seconds(nb) -> float:
    """The stored execution's time: the sum of its code cells' times, each from input to reply (record_timing).

    A sum, not first start to last reply, so a cell re-executed alone later (one that prints source) counts
    its own seconds, not the days between the two runs."""
    total = 0.0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            timing = cell.metadata.get("execution", {})
            assert {"iopub.execute_input", "shell.execute_reply"} <= timing.keys(), (
                f"code cell {i} has no timing: execute the chapter with record_timing (see TEAM/README)")
            start, end = (datetime.fromisoformat(timing[k].replace("Z", "+00:00"))
                          for k in ("iopub.execute_input", "shell.execute_reply"))
            total += (end - start).total_seconds()
    return total


def within(stated: float, source: float, where: str) -> None:
    assert abs(stated - source) <= 0.10 * source, f"{where}: states {stated:.0f} s, its source says {source:.0f} s"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_chapter_states_its_run_times(path):
    nb = read(path)
    opening = next(c for c in nb.cells if c.cell_type == "markdown").source
    match = RUNTIME.search(opening)
    assert match, ("the opening cell lacks the run-time statement (full, quick, GPU): "
                   "run `python scripts/polish_chapters.py --measure-quick " + str(path.relative_to(ROOT)) + "`")
    within(seconds(match["full"]), stored_wall_seconds(nb), f"{path.stem}, full profile")
    quick = json.loads(QUICK_TIMES.read_text(encoding="utf-8"))["chapters"]
    assert path.stem in quick, f"{QUICK_TIMES.name} has no quick-profile time for {path.stem}"
    within(seconds(match["quick"]), quick[path.stem]["seconds"], f"{path.stem}, quick profile")
    setup = next(c for c in nb.cells if c.cell_type == "code")
    report = "".join(o.get("text", "") for o in setup.get("outputs", []) if o.get("output_type") == "stream")
    on_gpu = re.search(r"^\s*device: cuda", report, re.M) is not None
    assert bool(match["gpu"]) != on_gpu, "a GPU time only from a GPU run; else 'on a GPU: not yet measured'"
    assert f"device_name: {match['device']}" in report, "the stated device is the stored run's"


def test_readme_table_of_run_times():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = json.loads(QUICK_TIMES.read_text(encoding="utf-8"))["chapters"]
    rows = dict((m[1], (m[2], m[3])) for m in re.finditer(r"^\| (\d\d_\w+|all chapters) \| ([^|]+) \| ([^|]+) \|$",
                                                            readme, re.M))
    total_full = total_quick = 0.0
    for path in NOTEBOOKS:
        assert path.stem in rows, f"README's run-time table lacks {path.stem}"
        full = stored_wall_seconds(read(path))
        total_full += full
        total_quick += quick[path.stem]["seconds"]
        within(seconds(rows[path.stem][0]), full, f"README, {path.stem}, full")
        within(seconds(rows[path.stem][1]), quick[path.stem]["seconds"], f"README, {path.stem}, quick")
    within(seconds(rows["all chapters"][0]), total_full, "README, all chapters, full")
    within(seconds(rows["all chapters"][1]), total_quick, "README, all chapters, quick")


# A mention of the book's own repository: its name is accelbook (other projects' links are citations).
OWN_REPOSITORY = re.compile(r"github\.com/(?:[\w.-]+/accelbook|accelbook/[\w.-]+)\b")


def repository_mentions() -> list[tuple[str, str]]:
    """(file, text around it) of every mention of the book's repository outside _config.yml."""
    files = [ROOT / "README.md", ROOT / "environment.yml", ROOT / "pyproject.toml", *NOTEBOOKS,
             *sorted((ROOT / "book").glob("*.md")), *sorted((ROOT / "src" / "accelbook").glob("*.py"))]
    found = []
    for file in files:
        text = file.read_text(encoding="utf-8")
        if file.suffix == ".ipynb":  # sources only: stored outputs are the run's
            text = "\n".join(c.source for c in read(file).cells)
        found += [(file.relative_to(ROOT).as_posix(), text[max(m.start() - 60, 0):m.end() + 80])
                  for m in OWN_REPOSITORY.finditer(text)]
    return found


def test_one_repository_address():
    cfg = book_config()["repository"]
    url, branch = cfg["url"].rstrip("/"), cfg.get("branch", "main")
    owner_name = url.removeprefix("https://github.com/")
    mentions = repository_mentions()
    assert mentions, "no mention of the repository found (the badges and install cells name it)"
    wrong = [f"{file}: …{around}…" for file, around in mentions
             if f"github.com/{owner_name}" not in around and f"github/{owner_name}/" not in around]
    assert not wrong, f"mentions other than _config.yml's {url}:\n" + "\n".join(wrong)
    from accelbook import records
    assert records.RESULTS_URL == f"{url}/tree/{branch}/results"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f'"accelbook @ git+{url}"' in readme
    assert "the one line a publisher changes" in readme and "scripts/polish_chapters.py" in readme


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_badge_and_install_cell_follow_the_repository(path):
    nb = read(path)
    url = book_config()["repository"]["url"].rstrip("/")
    opening = next(c for c in nb.cells if c.cell_type == "markdown").source
    assert f"[Open in Colab]({colab_url(path.relative_to(ROOT).as_posix())})" in opening
    setup = next(c for c in nb.cells if c.cell_type == "code").source
    assert f'REPOSITORY = "{url}"' in setup and not re.search(r"^\s*%pip", setup, re.M)
    assert setup.index("%xmode Minimal") < setup.index("google.colab"), "%xmode Minimal first: a failure is one line"


class CurrentEnvKernels:
    """Kernels of the Python running the tests (as nbval's --nbval-current-env)."""

    @staticmethod
    def manager():
        import ipykernel.kernelspec
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import KernelManager

        class Specs(KernelSpecManager):
            def get_kernel_spec(self, kernel_name):
                return self.kernel_spec_class(resource_dir=ipykernel.kernelspec.RESOURCES,
                                              **ipykernel.kernelspec.get_kernel_dict())

        return KernelManager(kernel_name="python3", kernel_spec_manager=Specs())


def install_cases() -> list[Path]:
    """The first chapter of each kind of Colab install (the package, or the package with extras)."""
    cases: dict[str, Path] = {}
    for path in NOTEBOOKS:
        setup = next(c for c in read(path).cells if c.cell_type == "code").source
        kind = re.search(r"accelbook(\[[\w,]+\])? @ git", setup)
        cases.setdefault(kind[0] if kind else "none", path)
    return list(cases.values())


@pytest.mark.parametrize("path", install_cases(), ids=lambda p: p.stem)
def test_install_cell_fails_with_one_sentence(path, tmp_path):
    """The setup cell, run as on Colab where the repository cannot be installed (git fetches from a
    folder that does not exist, so nothing leaves this machine): one line, RuntimeError naming the
    address, and none of pip's output."""
    from nbclient import NotebookClient

    setup = next(c for c in read(path).cells if c.cell_type == "code").source
    url = book_config()["repository"]["url"].rstrip("/")
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text(f'[url "file://{tmp_path}/nowhere/"]\n\tinsteadOf = https://github.com/\n')
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(GIT_CONFIG_GLOBAL=str(gitconfig), GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0",
               PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('import sys, types\nsys.modules["google.colab"] = types.ModuleType("google.colab")'),
        nbformat.v4.new_code_cell(setup)])
    NotebookClient(nb, km=CurrentEnvKernels.manager(), timeout=300, allow_errors=True).execute(
        cwd=str(tmp_path), env=env)
    outputs = nb.cells[1].outputs
    errors = [o for o in outputs if o.output_type == "error"]
    assert len(errors) == 1, outputs
    error = errors[0]
    assert error.ename == "RuntimeError"
    assert error.evalue.startswith(f"could not install the companion package from {url} (pip exit status "), error.evalue
    assert "\n" not in error.evalue and error.evalue.count(". ") == 0, error.evalue  # one sentence
    shown = [re.sub(r"\x1b\[[\d;]*m", "", line) for line in error.traceback]
    assert len("\n".join(shown).strip().splitlines()) == 1, shown  # %xmode Minimal: no traceback
    streams = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert streams.strip() == "Exception reporting mode: Minimal", streams  # nothing from pip


def meaningful(alt: str, caption: str) -> bool:
    """Alt text that describes: at least eight words, not a file name, not the caption again."""
    return len(alt.split()) >= 8 and not re.search(r"\.(png|jpe?g|svg)\b", alt) and alt.strip() != caption.strip()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_figure_has_a_caption_and_alt_text(path):
    problems = []
    for i, cell in enumerate(read(path).cells):
        if cell.cell_type != "code" or not any("image/png" in o.get("data", {}) for o in cell.get("outputs", [])):
            continue
        mystnb = cell.metadata.get("mystnb", {})
        caption = mystnb.get("figure", {}).get("caption", "")
        alt = mystnb.get("image", {}).get("alt", "")
        if len(caption.split()) < 4:
            problems.append(f"cell {i} ({cell.get('id')}): no caption (mystnb.figure.caption)")
        if not meaningful(alt, caption):
            problems.append(f"cell {i} ({cell.get('id')}): no alt text that says what it shows (mystnb.image.alt)")
    assert not problems, problems


@pytest.fixture(scope="module")
def profile_probe():
    """A notebook, inside the repository (so the root conftest.py applies, as to notebooks/), whose stored
    output is the quick profile's answer to accelbook.config.quick()."""
    folder = ROOT / "_build" / "profile-probe"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "probe.ipynb"
    cell = nbformat.v4.new_code_cell("from accelbook.config import quick\nprint(quick())", execution_count=1,
                                     outputs=[nbformat.v4.new_output("stream", name="stdout", text="True\n")])
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), path)
    yield path
    shutil.rmtree(folder, ignore_errors=True)


def run_plain_nbval(path: Path, **extra: str) -> subprocess.CompletedProcess:
    """`pytest --nbval PATH` as a reader types it: from the repository root, ACCELBOOK_QUICK unset."""
    env = {k: v for k, v in os.environ.items() if k not in {"ACCELBOOK_QUICK", "PYTEST_ADDOPTS"}}
    env.update(extra)
    return subprocess.run([sys.executable, "-m", "pytest", "--nbval", "-q", "-p", "no:cacheprovider",
                           str(path.relative_to(ROOT))], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_plain_pytest_nbval_runs_the_quick_profile(profile_probe):
    done = run_plain_nbval(profile_probe)
    assert done.returncode == 0, textwrap.shorten(done.stdout + done.stderr, 3000)


def test_accelbook_quick_0_asks_for_the_full_profile(profile_probe):
    done = run_plain_nbval(profile_probe, ACCELBOOK_QUICK="0")
    assert done.returncode != 0 and "False" in done.stdout, textwrap.shorten(done.stdout + done.stderr, 3000)
