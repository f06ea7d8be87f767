"""Every role documents exactly the inputs its defaults define."""

from __future__ import annotations

import pathlib

import pytest
import yaml
from script_loader import load_script

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if (p / "tasks" / "main.yml").exists() and not p.name.startswith("_"))


def load(path: pathlib.Path):
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def role_docs():
    return load_script(ROOT / "tests" / "harness" / "role_docs.py", "role_docs")


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_argument_specs_match_defaults(role):
    # Every default is an input of some entry point, and every entry point
    # documents an input the same way (same default) as the others do.
    entries = load(role / "meta" / "argument_specs.yml")["argument_specs"]
    options = {}
    for entry, spec in entries.items():
        for name, option in spec.get("options", {}).items():
            if name in options and "default" in option:
                assert options[name].get("default") == option["default"], f"{name}: entry point {entry} differs"
            options.setdefault(name, option)
    defaults = load(role / "defaults" / "main.yml")
    assert sorted(options) == sorted(defaults), "argument_specs and defaults/main.yml name different variables"
    for name, value in defaults.items():
        if options[name].get("required"):
            continue
        assert options[name].get("default") == value, f"{name}: spec default differs from defaults/main.yml"
        assert options[name].get("description"), f"{name} has no description"
        assert name.startswith(role.name + "_"), f"{name} is not prefixed with the role name"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_readme_variable_table_is_current(role):
    current, wanted = role_docs().expected_readme(role)
    assert current == wanted, f"run tests/harness/role_docs.py --write to refresh {role.name}/README.md"
