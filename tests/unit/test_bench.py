"""The benchmark's and the demo summary's reading of ansible-playbook output."""

from __future__ import annotations

from pathlib import Path

from script_loader import load_script

ROOT = Path(__file__).resolve().parents[2]
fleet_bench = load_script(ROOT / "bench" / "fleet_bench.py", "fleet_bench")

# Molecule 25 prints the recap in a box, coloured even without a terminal.
MOLECULE_RECAP = """
TASK [fleetops.mcp.backup : Install the service and the timer] *****************
changed: [ms-1]
PLAY RECAP *********************************************************************
  \x1b[2m\u2502\x1b[0m bk-1                       : ok=60   changed=0    unreachable=0    failed=0
  \x1b[2m\u2502\x1b[0m   skipped=20   rescued=0    ignored=0
  \x1b[2m\u2502\x1b[0m ms-1                       : ok=180  changed=4    unreachable=0    failed=0
  \x1b[2m\u2502\x1b[0m mon-1.example.internal     : ok=82   changed=2    unreachable=0    failed=0
"""

PLAIN_RECAPS = """
PLAY RECAP *********************************************************************
localhost                  : ok=8    changed=4    unreachable=0    failed=0    skipped=0
PLAY RECAP *********************************************************************
lb-1                       : ok=101  changed=0    unreachable=0    failed=0    skipped=33
lb-2                       : ok=101  changed=1    unreachable=0    failed=0    skipped=33
"""


def test_changed_sums_the_last_recap_through_colour_codes_and_box_characters():
    assert fleet_bench.changed(MOLECULE_RECAP) == (6, 3)


def test_changed_reads_only_the_last_recap():
    assert fleet_bench.changed(PLAIN_RECAPS) == (1, 2)


def test_changed_hosts_names_only_the_hosts_that_changed_in_the_last_recap():
    assert fleet_bench.changed_hosts(PLAIN_RECAPS) == ["lb-2"]
    assert fleet_bench.changed_hosts(MOLECULE_RECAP) == ["mon-1.example.internal", "ms-1"]
    assert fleet_bench.changed_hosts("no recap here") == []


def test_changed_without_a_recap_is_zero_on_no_hosts():
    assert fleet_bench.changed("no recap here") == (0, 0)
