"""The keepalived role's input checks, run by ansible-playbook on this host (they only assert)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
PLAYBOOK = """
- name: The keepalived role's preflight only
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Check the inputs
      ansible.builtin.include_role:
        name: fleetops.mcp.keepalived
        tasks_from: preflight
"""
GOOD = {"keepalived_virtual_ipaddress": "192.0.2.10/24", "keepalived_auth_pass": "s3cret", "keepalived_unicast": False,
        "ansible_python_interpreter": sys.executable}


def preflight(tmp_path, **overrides) -> subprocess.CompletedProcess:
    playbook = tmp_path / "preflight.yml"
    playbook.write_text(PLAYBOOK)
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({**GOOD, **overrides}))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    bin_dir = pathlib.Path(sys.executable).parent
    return subprocess.run([str(bin_dir / "ansible-playbook"), "-i", "localhost,", str(playbook), "-e", f"@{extra}"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)


def test_the_default_check_url_passes(tmp_path):
    result = preflight(tmp_path)
    assert result.returncode == 0, result.stdout[-2000:]


@pytest.mark.parametrize("url", ["https://127.0.0.1:8081/healthz", "http://user:pw@127.0.0.1/", "http://127.0.0.1/a b",
                                 "127.0.0.1:8081"])
def test_a_check_url_the_scripts_cannot_use_is_refused_naming_the_variable(tmp_path, url):
    result = preflight(tmp_path, keepalived_check_url=url)
    output = " ".join(result.stdout.split())
    assert result.returncode != 0
    assert "keepalived_check_url must be an http:// URL of a host or address on this load balancer" in output, output[-2000:]
    assert f"got '{url}'" in output
