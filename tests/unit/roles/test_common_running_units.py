"""The common role's one look at systemd a run (tasks_from: installed): common_running_units holds the
services and timers that are both active and enabled, read from systemctl's real output format, and is
empty (every "keep it running" task then runs) where systemctl fails. systemctl here is a stand-in
script on PATH printing what systemd 252 prints (list-units, then show for the active units only); the
Molecule scenarios run the real one."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]

ACTIVE = """\
dbus.service                       loaded active running D-Bus System Message Bus
nftables.service                   loaded active exited  nftables
nginx.service                      loaded active running A high performance web server
logrotate.timer                    loaded active waiting Daily rotation of log files
transient-only.service             loaded active running started by hand, not enabled
"""
# UnitFileState of each unit as systemd has it (keepalived: enabled, but not active, so never asked).
STATES = {"dbus.service": "static", "nftables.service": "enabled", "nginx.service": "enabled",
          "logrotate.timer": "enabled", "transient-only.service": "", "keepalived.service": "enabled"}

PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: fleetops.mcp.common
        tasks_from: installed
    - ansible.builtin.copy:
        content: "{{ common_running_units | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
      check_mode: false
"""


def running_units(tmp_path: pathlib.Path, systemctl: str, check: bool = False) -> list[str]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "systemctl").write_text(systemctl)
    (bindir / "systemctl").chmod(0o755)
    (tmp_path / "active").write_text(ACTIVE)
    # What `systemctl show --property=Id,UnitFileState -- UNIT...` prints: a block a unit, in the order asked.
    for unit, state in STATES.items():
        (tmp_path / f"{unit}.show").write_text(f"Id={unit}\nUnitFileState={state}\n")
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    out = tmp_path / "units.json"
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".cache" / "collections")}
    result = subprocess.run(
        [sys.executable, "-m", "ansible", "playbook", "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml"),
         "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"out={out}", *(["--check"] if check else [])],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(out.read_text())


def fake_systemctl(tmp_path: pathlib.Path) -> str:
    return f"""#!/bin/sh
case "$*" in
  "list-units --type=service,timer --state=active --no-legend --plain") cat {tmp_path}/active ;;
  "show --property=Id,UnitFileState -- "*)
    shift 3; echo "$*" > {tmp_path}/asked; first=1
    for unit in "$@"; do [ $first = 1 ] || echo; first=0; cat "{tmp_path}/$unit.show" || exit 1; done ;;
  *) echo "unexpected: $*" >&2; exit 3 ;;
esac
"""


@pytest.mark.parametrize("check", [False, True], ids=["run", "check-mode"])
def test_units_both_active_and_enabled_are_running(tmp_path, check):
    units = running_units(tmp_path, fake_systemctl(tmp_path), check=check)
    # Active but not enabled, and enabled but not active, are not: their tasks run.
    assert sorted(units) == ["logrotate.timer", "nftables.service", "nginx.service"]
    # The enabled state is asked of the active units only, not of every unit file.
    assert (tmp_path / "asked").read_text().split() == [
        "dbus.service", "nftables.service", "nginx.service", "logrotate.timer", "transient-only.service"]


def test_no_units_where_systemctl_fails(tmp_path):
    units = running_units(tmp_path, "#!/bin/sh\necho 'System has not been booted with systemd' >&2\nexit 1\n")
    assert units == []


def test_no_units_where_nothing_is_active(tmp_path):
    script = fake_systemctl(tmp_path).replace(f"cat {tmp_path}/active", "true")
    assert running_units(tmp_path, script) == []


def test_no_units_where_systemctl_show_fails(tmp_path):
    script = fake_systemctl(tmp_path).replace('cat "{0}/$unit.show" || exit 1'.format(tmp_path), "exit 1")
    assert running_units(tmp_path, script) == []
