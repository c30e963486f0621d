"""Settings live in one place: every ACCELBOOK_* variable is named in accelbook.config, spelled nowhere else
in the package, and listed in README.md's settings table; --quick and ACCELBOOK_QUICK select one profile."""

import ast
import re

from accelbook import config
from bookfacts import ROOT

PACKAGE = ROOT / "src" / "accelbook"
NAME = re.compile(r"ACCELBOOK_[A-Z_]+")


def spelled_names(path) -> set[str]:
    """ACCELBOOK_* names a module uses as a whole string or a keyword argument (not in prose)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and NAME.fullmatch(node.value):
            found.add(node.value)
        elif isinstance(node, ast.keyword) and node.arg and NAME.fullmatch(node.arg):
            found.add(node.arg)
    return found


def test_no_module_but_config_spells_a_variable_name():
    spelled = {path.name: spelled_names(path) for path in PACKAGE.glob("*.py") if path.name != "config.py"}
    assert not {name: names for name, names in spelled.items() if names}


def test_every_variable_named_anywhere_is_defined_in_config():
    mentioned = set()
    for path in PACKAGE.glob("*.py"):
        mentioned |= set(NAME.findall(path.read_text(encoding="utf-8")))
    assert mentioned <= set(config.ENV_NAMES), mentioned - set(config.ENV_NAMES)


def test_the_readme_lists_every_variable():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = {m.group(1) for m in re.finditer(r"^\|\s*`(ACCELBOOK_[A-Z_]+)", readme, flags=re.M)}
    assert set(config.ENV_NAMES) <= rows, set(config.ENV_NAMES) - rows


def test_quick_flag_and_variable_select_one_profile(monkeypatch):
    monkeypatch.delenv(config.QUICK_ENV, raising=False)
    assert config.profile() is config.FULL and config.profile(True) is config.QUICK
    monkeypatch.setenv(config.QUICK_ENV, "1")
    assert config.profile() is config.QUICK and config.profile(False) is config.QUICK
    assert config.QUICK.images == 4000 and config.FULL.images is None
