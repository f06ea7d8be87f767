#!/usr/bin/env python3
"""Keep each role's README variable table generated from meta/argument_specs.yml.

    tests/harness/role_docs.py --write     rewrite the tables
    tests/harness/role_docs.py --check     exit 1 when a README is stale

The table sits between the markers <!-- BEGIN ROLE VARIABLES --> and
<!-- END ROLE VARIABLES --> in roles/<role>/README.md.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
BEGIN = "<!-- BEGIN ROLE VARIABLES -->"
END = "<!-- END ROLE VARIABLES -->"
MARKUP = re.compile(r"\b[CIOV]\(([^)]*)\)")


def plain(text: str) -> str:
    """Ansible doc markup to Markdown: C(x), O(x), V(x) -> `x`."""
    return MARKUP.sub(lambda m: f"`{m.group(1)}`", text)


def cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render(specs: dict) -> str:
    lines = []
    for entry, spec in specs["argument_specs"].items():
        lines.append(f"Entry point `{entry}`:\n")
        lines.append("| Variable | Type | Default | Description |")
        lines.append("| --- | --- | --- | --- |")
        for name, opt in sorted(spec.get("options", {}).items()):
            kind = opt.get("type", "str")
            if kind == "list" and "elements" in opt:
                kind = f"list of {opt['elements']}"
            if opt.get("choices"):
                kind += " (" + ", ".join(f"`{c}`" for c in opt["choices"]) + ")"
            default = "required" if opt.get("required") else f"`{json.dumps(opt.get('default'))}`"
            desc = opt.get("description", "")
            desc = " ".join(desc) if isinstance(desc, list) else desc
            lines.append(f"| `{name}` | {cell(kind)} | {cell(default)} | {cell(plain(desc))} |")
        lines.append("")
    return "\n".join(lines)


def role_dirs():
    return sorted(p for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").exists())


def expected_readme(role: pathlib.Path) -> tuple[str, str]:
    readme = (role / "README.md").read_text(encoding="utf-8")
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"{role.name}/README.md lacks the {BEGIN} / {END} markers")
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text(encoding="utf-8"))
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return readme, f"{head}{BEGIN}\n{render(specs)}{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    stale = []
    for role in role_dirs():
        current, wanted = expected_readme(role)
        if current != wanted:
            if args.write:
                (role / "README.md").write_text(wanted, encoding="utf-8")
                print(f"rewrote {role.name}/README.md")
            else:
                stale.append(role.name)
    if stale:
        print("stale README variable tables (run tests/harness/role_docs.py --write): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
