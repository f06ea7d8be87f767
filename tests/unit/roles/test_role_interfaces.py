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


def _tasks(items, path, found):
    for task in items or []:
        if not isinstance(task, dict):
            continue
        for key in ("block", "rescue", "always", "tasks", "handlers"):
            _tasks(task.get(key), path, found)
        for module in ("ansible.builtin.set_fact", "set_fact"):
            if isinstance(task.get(module), dict):
                found["set"].update((name, path) for name in task[module] if name != "cacheable")
        if task.get("register"):
            found["set"].add((task["register"], path))
        if isinstance(task.get("vars"), dict):
            found["vars"].update((name, f"{path}: {task.get('name')}") for name in task["vars"])


def test_no_task_var_is_shadowed_by_a_fact_or_a_registered_result():
    # A fact (set_fact) or a registered result outranks a task's vars of the same name, so such a
    # task var is silently ignored: mcp_server's "Remove containers no longer declared" once looped
    # over the images fact of the same name and never removed a container.
    found = {"set": set(), "vars": set()}
    for path in sorted((ROOT / "roles").glob("*/tasks/*.yml")) + sorted((ROOT / "roles").glob("*/handlers/*.yml")) \
            + sorted((ROOT / "playbooks").glob("*.yml")):
        _tasks(load(path) if isinstance(load(path), list) else [], str(path.relative_to(ROOT)), found)
    facts = {name for name, _ in found["set"]}
    shadowed = sorted(where for name, where in found["vars"] if name in facts)
    assert not shadowed, shadowed
