"""The shipped alert rules pass `promtool check rules` and their `promtool test rules` unit tests.

promtool is Debian's (unpacked into .cache/bin by tests/harness/setup-host.sh
promtool; `make test` and `make unit` run that step).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "roles/monitoring/files/rules"


def promtool() -> str:
    local = ROOT / ".cache/bin/promtool"
    found = str(local) if local.exists() else shutil.which("promtool")
    if not found:
        pytest.fail("promtool is missing: run tests/harness/setup-host.sh promtool (make unit does)")
    return found


def test_rules_are_valid():
    out = subprocess.run([promtool(), "check", "rules", *map(str, sorted(RULES.glob("*.yml")))],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("case", sorted((RULES / "tests").glob("*.yml")), ids=lambda p: p.name)
def test_rule_unit_tests_pass(case):
    out = subprocess.run([promtool(), "test", "rules", case.name], cwd=case.parent, capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_test_severity_and_summary():
    alerts = [r for g in yaml.safe_load((RULES / "fleetops.rules.yml").read_text())["groups"]
              for r in g["rules"] if "alert" in r]
    tested = {t["alertname"] for f in (RULES / "tests").glob("*.yml")
              for case in yaml.safe_load(f.read_text())["tests"] for t in case.get("alert_rule_test", [])
              if t.get("exp_alerts")}
    for alert in alerts:
        assert alert["labels"]["severity"] in ("critical", "warning"), alert["alert"]
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], alert["alert"]
    assert {a["alert"] for a in alerts} - tested == set(), "alerts no test ever sees firing"
    wanted = {"InstanceDown", "McpServerDown", "McpProbeFailing", "McpErrorRateHigh", "McpLatencyHigh", "VipNotHeld",
              "VipHeldTwice", "BackupStale", "BackupFailed", "DiskAlmostFull", "CertificateExpiringSoon",
              "ContainerRestarting"}
    assert wanted <= {a["alert"] for a in alerts}
