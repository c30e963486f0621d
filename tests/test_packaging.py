"""Packaging has one source, pyproject.toml; everything that restates part of it is checked against it here.

- the version: written once, in accelbook/__init__.py, and read by pyproject.toml (dynamic);
- the dependencies: pyproject's dependencies and extras; constraints.txt (the frozen environment) pins each
  of them within its range, environment.yml installs what scripts/book.sh installs, refresh.NEEDS is the
  `refresh` extra, and the README names the pins and floors that these files hold;
- the linter: ruff, in the `book` extra, pinned, and run by `bash scripts/book.sh test` before pytest.
"""

from __future__ import annotations

import re
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

import accelbook
from accelbook import refresh

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
NAME = canonicalize_name(PROJECT["name"])
# pip freeze leaves these out of constraints.txt (the installer's own tools, and the package itself)
UNPINNED = {NAME, "pip", "setuptools", "wheel"}


def requirements(extras: tuple[str, ...] = ()) -> dict[str, Requirement]:
    """The package's requirements with `extras` (self-references such as accelbook[notebooks] expanded)."""
    found: dict[str, Requirement] = {}
    todo, seen = [*PROJECT["dependencies"]], set()
    for extra in extras:
        todo += PROJECT["optional-dependencies"][extra]
        seen.add(extra)
    while todo:
        req = Requirement(todo.pop(0))
        if canonicalize_name(req.name) == NAME:
            for extra in sorted(req.extras - seen):
                todo += PROJECT["optional-dependencies"][extra]
                seen.add(extra)
            continue
        name = canonicalize_name(req.name)
        if name in found:  # named twice: both ranges apply
            req = Requirement(f"{req.name}{found[name].specifier & req.specifier}")
        found[name] = req
    return found


def pins() -> dict[str, Version]:
    """constraints.txt as {name: pinned version}; every line must be an exact pin."""
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"constraints.txt: {line!r} is not an exact pin"
        name = canonicalize_name(req.name)
        assert name not in pinned, f"constraints.txt pins {req.name} twice"
        pinned[name] = Version(specs[0].version)
    return pinned


def book_sh_install() -> tuple[str, set[str]]:
    """(constraints file, extras) of the package install in scripts/book.sh's setup."""
    text = (ROOT / "scripts" / "book.sh").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if "pip install" in line and " -e " in line]
    assert len(lines) == 1, lines
    constraint = re.search(r"--constraint[ =](\S+)", lines[0])
    extras = re.search(r"-e \"?\.\[([\w,-]+)\]\"?", lines[0])
    assert constraint and extras, lines[0]
    return constraint.group(1), set(extras.group(1).split(","))


def environment_yml() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))


def test_the_version_is_written_once():
    assert "version" not in PROJECT and "version" in PROJECT.get("dynamic", []), \
        "pyproject.toml writes a version: read it from accelbook.__version__ instead"
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "accelbook.__version__"}
    Version(accelbook.__version__)  # a valid PEP 440 version
    try:
        installed = metadata.version(PROJECT["name"])
    except metadata.PackageNotFoundError:
        pytest.skip("the package is not installed here, so there is no metadata to compare")
    assert installed == accelbook.__version__, "reinstall the package: its metadata is older than the source"


def test_torch_floor_is_2_6_with_the_matching_torchvision():
    reqs = requirements()
    torch_floor = min(Version(s.version) for s in reqs["torch"].specifier if s.operator == ">=")
    vision_floor = min(Version(s.version) for s in reqs["torchvision"].specifier if s.operator == ">=")
    assert torch_floor >= Version("2.6"), "accelbook.device uses torch.accelerator, which came with torch 2.6"
    # torchvision 0.N is released with torch 2.(N - 15): 0.21 with 2.6, 0.29 with 2.14
    assert (vision_floor.major, vision_floor.minor) == (0, torch_floor.minor + 15), (torch_floor, vision_floor)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"`torch>={torch_floor}`" in readme and f"`torchvision>={vision_floor}`" in readme, \
        "the README states other floors than pyproject.toml's"


def test_constraints_pin_every_requirement_within_its_range():
    pinned = pins()
    everything = requirements(tuple(PROJECT["optional-dependencies"]))
    unpinned = sorted(set(everything) - set(pinned))
    assert not unpinned, f"pyproject.toml requires {unpinned}, which constraints.txt does not pin"
    outside = [f"{name}=={pinned[name]} (pyproject: {req})" for name, req in everything.items()
               if not req.specifier.contains(pinned[name], prereleases=True)]
    assert not outside, f"constraints.txt pins versions that pyproject.toml excludes: {outside}"


def test_torch_and_torchvision_pins_are_a_pair_and_the_readme_names_them():
    pinned = pins()
    torch_pin, vision_pin = pinned["torch"], pinned["torchvision"]
    assert vision_pin.minor == torch_pin.minor + 15, (torch_pin, vision_pin)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"`torch=={torch_pin}`" in readme and f"`torchvision=={vision_pin}`" in readme, \
        "the README names other pins than constraints.txt's"


def test_environment_yml_installs_what_book_sh_installs():
    constraint, extras = book_sh_install()
    deps = environment_yml()["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert f"--constraint {constraint}" in pip, f"environment.yml's pip step is not under {constraint}: {pip}"
    editable = [line for line in pip if line.startswith("-e ")]
    assert len(editable) == 1 and len(pip) == 2, f"environment.yml installs more than book.sh: {pip}"
    match = re.fullmatch(r"-e \"?\.\[([\w,-]+)\]\"?", editable[0])
    assert match and set(match.group(1).split(",")) == extras, (editable[0], extras)
    assert extras <= set(PROJECT["optional-dependencies"])


def test_environment_yml_python_is_the_one_constraints_were_frozen_with():
    python = next(d for d in environment_yml()["dependencies"] if isinstance(d, str) and d.startswith("python="))
    version = python.split("=", 1)[1]
    assert SpecifierSet(PROJECT["requires-python"]).contains(version + ".0"), (version, PROJECT["requires-python"])
    header = (ROOT / "constraints.txt").read_text(encoding="utf-8").split("\n\n")[0]
    assert f"Python {version}" in header, f"constraints.txt was not frozen on Python {version}: {header!r}"


def test_refresh_needs_is_the_refresh_extra():
    extra = {canonicalize_name(Requirement(r).name) for r in PROJECT["optional-dependencies"]["refresh"]}
    assert {canonicalize_name(pip) for pip in refresh.NEEDS.values()} == extra, \
        "refresh.NEEDS and pyproject.toml's `refresh` extra name different packages"
    _, extras = book_sh_install()
    assert extra <= set(requirements(tuple(extras))), "the book's environment lacks what refresh needs"


def test_ruff_is_installed_pinned_and_run_before_pytest():
    _, extras = book_sh_install()
    assert "ruff" in requirements(tuple(extras)) and "ruff" in pins()
    lint = PYPROJECT["tool"]["ruff"]
    assert lint["line-length"] == 100 and set(lint["lint"]["select"]) >= {"E", "F", "W", "I", "B", "UP"}
    text = (ROOT / "scripts" / "book.sh").read_text(encoding="utf-8")
    test_branch = text.split("    test)", 1)[1].split(";;", 1)[0]
    ruff = test_branch.find("ruff\" check src tests scripts")
    pytest_at = test_branch.find("-m pytest")
    assert 0 <= ruff < pytest_at, f"book.sh test must run ruff before pytest:\n{test_branch}"


def test_parallel_tests_keep_each_notebook_whole_on_one_worker():
    """book.sh test runs pytest-xdist workers; nbval's cells share one kernel, so a chapter must not be split."""
    _, extras = book_sh_install()
    assert "pytest-xdist" in requirements(tuple(extras)) and "pytest-xdist" in pins()
    text = (ROOT / "scripts" / "book.sh").read_text(encoding="utf-8")
    test_branch = text.split("    test)", 1)[1].split(";;", 1)[0]
    assert "workers=(--numprocesses \"$jobs\" --dist loadfile)" in test_branch, test_branch
    assert "-m pytest --nbval \"${workers[@]}\"" in test_branch, test_branch


@pytest.mark.skipif(not (Path(sys.prefix) / ".accelbook-installed").is_file(),
                    reason="not an environment that scripts/book.sh set up from constraints.txt")
def test_this_environment_is_what_constraints_txt_pins():
    """In an environment book.sh built, constraints.txt is the freeze of it: same packages, same versions."""
    pinned = pins()
    # Only what is installed in the environment's site-packages: setuptools puts its vendored copies
    # (setuptools/_vendor/*.dist-info: older packaging, zipp, ...) on sys.path once something imports it.
    site = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    installed = {canonicalize_name(d.metadata["Name"]): Version(d.version) for d in metadata.distributions()
                 if Path(d.locate_file("")).resolve() in site}
    differ = [f"{n}: installed {installed[n]}, pinned {pinned[n]}" for n in sorted(set(pinned) & set(installed))
              if installed[n].public != pinned[n].public]  # 2.14.0+cu130 is the pinned 2.14.0
    assert not differ, differ
    assert not sorted(set(pinned) - set(installed)), "pinned but not installed"
    assert not sorted(set(installed) - set(pinned) - UNPINNED), "installed but not pinned"
