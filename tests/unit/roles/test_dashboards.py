"""The grafana role's dashboards: generated, current, and wired to the provisioned datasource.

Every query is run against a live Prometheus by the monitoring scenario; here
the files themselves are checked.
"""

from __future__ import annotations

import json
import pathlib

import pytest
from script_loader import load_script

ROOT = pathlib.Path(__file__).resolve().parents[3]
BOARDS = ROOT / "roles/grafana/files/dashboards"


def generator():
    return load_script(ROOT / "tests/harness/dashboards.py", "dashboards")


def test_committed_dashboards_are_the_generated_ones():
    rendered = generator().render()
    assert {f"{uid}.json" for uid in rendered} == {p.name for p in BOARDS.glob("*.json")}
    for uid, text in rendered.items():
        assert (BOARDS / f"{uid}.json").read_text() == text, f"run tests/harness/dashboards.py --write ({uid})"


def test_the_role_installs_every_dashboard():
    import yaml

    listed = yaml.safe_load((ROOT / "roles/grafana/vars/main.yml").read_text())["_grafana_dashboards"]
    assert sorted(f"{name}.json" for name in listed) == sorted(p.name for p in BOARDS.glob("*.json"))


@pytest.mark.parametrize("path", sorted(BOARDS.glob("*.json")), ids=lambda p: p.stem)
def test_panels_are_laid_out_and_use_the_provisioned_datasource(path):
    board = json.loads(path.read_text())
    assert board["uid"] == path.stem and board["title"].startswith("fleetops: ")
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "fleetops-prometheus"
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        cell = (grid["x"], grid["y"])
        assert cell not in cells, f"{panel['title']} overlaps another panel"
        cells.add(cell)
    uses_server = any("$server" in t["expr"] for p in board["panels"] for t in p["targets"])
    declared = {v["name"] for v in board["templating"]["list"]}
    assert ("server" in declared) == uses_server
