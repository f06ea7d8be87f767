"""Collection-wide rules for the plugins' documentation.

* Every ``version_added`` (of a plugin, an option, an attribute) is a version
  the collection has released or is about to release: galaxy.yml's ``version``
  or one in changelogs/changelog.yaml, never a later one.
* Every module extends the shared ``fleetops.mcp.attributes`` fragment and
  declares check mode and diff mode support that matches its code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
GALAXY_VERSION = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
RELEASED = set((yaml.safe_load((ROOT / "changelogs" / "changelog.yaml").read_text()).get("releases") or {}))
MODULES = sorted((ROOT / "plugins" / "modules").glob("*.py"))


def _python_docs(path: Path) -> dict[str, str]:
    """The ``DOCUMENTATION``-like raw strings of a module or doc fragment, by name."""
    source = path.read_text()
    return dict(re.findall(r'^\s*([A-Z_]+) = r"""\n(.*?)^"""', source, re.M | re.S))


def _documents():
    for path in MODULES:
        yield path, yaml.safe_load(_python_docs(path)["DOCUMENTATION"])
    for path in sorted((ROOT / "plugins" / "doc_fragments").glob("*.py")):
        for name, text in _python_docs(path).items():
            yield path.with_name(f"{path.name}:{name}"), yaml.safe_load(text)
    for path in sorted((ROOT / "plugins" / "filter").glob("*.yml")):
        yield path, yaml.safe_load(path.read_text())["DOCUMENTATION"]


def _versions_added(node, where):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "version_added":
                yield where, value
            else:
                yield from _versions_added(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _versions_added(value, f"{where}[{index}]")


def test_every_version_added_is_released_or_this_version():
    allowed = RELEASED | {GALAXY_VERSION}
    found = [(f"{path.relative_to(ROOT)}{where}", str(version))
             for path, doc in _documents() for where, version in _versions_added(doc, "")]
    assert found, "no version_added found at all"
    assert [(where, version) for where, version in found if version not in allowed] == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_module_attributes_match_the_code(path):
    doc = yaml.safe_load(_python_docs(path)["DOCUMENTATION"])
    source = path.read_text()
    assert "fleetops.mcp.attributes" in doc["extends_documentation_fragment"]
    attributes = doc["attributes"]
    assert set(attributes) >= {"check_mode", "diff_mode", "platform"}
    assert attributes["platform"]["platforms"] == "posix"
    check_mode = "supports_check_mode=True" in source
    assert (attributes["check_mode"]["support"] != "none") == check_mode
    assert (attributes["diff_mode"]["support"] != "none") == ("module._diff" in source)
