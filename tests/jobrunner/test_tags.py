"""jobrunner/tags.py is the one place a tag name is spelled: a second spelling elsewhere fails here."""

from __future__ import annotations

import ast
import importlib.util

import jobrunner.tags as tags
from tests.conftest import ROOT

NAMES = {k: v for k, v in vars(tags).items() if k.isupper() and isinstance(v, str)}
PACKAGES = ("jobrunner", "serve", "pipelines", "dashboards", "tests")


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def test_every_tag_is_a_distinct_jobrunner_name() -> None:
    assert all(v.startswith(tags.PREFIX) for v in NAMES.values())
    assert len(set(NAMES.values())) == len(NAMES), "two constants share one tag name"


def test_no_module_spells_a_tag_name_itself() -> None:
    # "jobrunner.notebook" is a tag and a module name: string literals naming a module are not tags
    values = {v for v in NAMES.values() if v != tags.PREFIX and not _is_module(v)}
    spelled = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "jobrunner" / "tags.py" or "fixtures" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    literal = node.value
                    if literal in values or any(literal.startswith(v) for v in values if v.endswith(".")):
                        spelled.append(f"{path.relative_to(ROOT)}:{node.lineno}: {literal!r}")
    assert not spelled, "use the constants of jobrunner/tags.py:\n" + "\n".join(spelled)
