"""The fleet_plan role run by ansible-playbook on this host: the plan it sets, and bad settings refused
with the variable named, before any role that reads the plan runs."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
PLAYBOOK = """
- name: The fleet plan, then a role that reads it
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Check keepalived's inputs (keepalived depends on fleet_plan)
      ansible.builtin.include_role:
        name: fleetops.mcp.keepalived
        tasks_from: preflight
    - name: Keep the plan for the test
      ansible.builtin.copy:
        content: "{{ fleetops_plan | to_json }}"
        dest: "{{ plan_file }}"
        mode: "0600"
"""
GOOD = {"keepalived_virtual_ipaddress": "192.0.2.10/24", "keepalived_auth_pass": "s3cret", "keepalived_unicast": False,
        "ansible_python_interpreter": sys.executable}


def run(tmp_path, **overrides) -> subprocess.CompletedProcess:
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    (tmp_path / "vars.json").write_text(json.dumps({**GOOD, "plan_file": str(tmp_path / "plan.json"), **overrides}))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    bin_dir = pathlib.Path(sys.executable).parent
    return subprocess.run([str(bin_dir / "ansible-playbook"), "-i", "localhost,", str(tmp_path / "play.yml"),
                           "-e", f"@{tmp_path / 'vars.json'}"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)


def test_a_role_that_reads_the_plan_gets_it_compiled_first(tmp_path):
    result = run(tmp_path, fleet_plan_status_listen="127.0.0.1:9181", keepalived_virtual_ipaddress="192.0.2.10/24")
    assert result.returncode == 0, result.stdout[-3000:]
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["status"] == {"listen": "127.0.0.1:9181", "url": "http://127.0.0.1:9181"}
    assert plan["host"] == "localhost" and plan["kinds"] == [] and plan["groups"]["docker_hosts"] == "docker_hosts"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"fleet_plan_textfile_dir": "var/lib/textfiles"}, "fleet_plan_textfile_dir must be an absolute directory path"),
    ({"fleet_plan_status_listen": "127.0.0.1"}, "fleet_plan_status_listen must be address:port"),
    ({"fleet_plan_groups": {"docker_hosts": "mcp-nodes"}}, "fleet_plan_groups.docker_hosts must be an inventory group name"),
])
def test_a_bad_setting_fails_naming_the_variable_before_the_reading_role_runs(tmp_path, overrides, message):
    result = run(tmp_path, **overrides)
    assert result.returncode != 0
    assert message in result.stdout, result.stdout[-3000:]
    assert "Check keepalived_virtual_ipaddress" not in result.stdout  # the reading role's own tasks never ran
