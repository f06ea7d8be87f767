"""The docker_host role's check of docker_host_daemon_options (issue 18, item 8), run by ansible-playbook on this
host: the keys the role hardens are refused unless the documented override is set, ``hosts`` always."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
PLAYBOOK = """
- name: The docker_host role's daemon option check only
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Check the inputs
      ansible.builtin.include_role:
        name: fleetops.mcp.docker_host
        tasks_from: daemon_options
"""
OVERRIDE = "docker_host_daemon_options_override_security"


def check(tmp_path, **extra_vars) -> subprocess.CompletedProcess:
    playbook = tmp_path / "check.yml"
    playbook.write_text(PLAYBOOK)
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({"ansible_python_interpreter": sys.executable, **extra_vars}))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    bin_dir = pathlib.Path(sys.executable).parent
    return subprocess.run([str(bin_dir / "ansible-playbook"), "-i", "localhost,", str(playbook), "-e", f"@{extra}"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)


@pytest.mark.parametrize("options", [{}, {"debug": True, "registry-mirrors": ["https://mirror.example"]}])
def test_other_options_pass(tmp_path, options):
    result = check(tmp_path, docker_host_daemon_options=options)
    assert result.returncode == 0, result.stdout[-2000:]


@pytest.mark.parametrize(("options", "key"), [({"icc": True}, "icc"), ({"live-restore": False}, "live-restore"),
                                              ({"no-new-privileges": False}, "no-new-privileges"),
                                              ({"userland-proxy": True, "debug": True}, "userland-proxy")])
def test_security_keys_are_refused_naming_the_key_and_the_override(tmp_path, options, key):
    result = check(tmp_path, docker_host_daemon_options=options)
    output = " ".join(result.stdout.split())
    assert result.returncode != 0
    assert f"docker_host_daemon_options sets {key}, which the role hardens" in output, output[-2000:]
    assert f"set {OVERRIDE}: true to override them" in output
    allowed = check(tmp_path, docker_host_daemon_options=options, **{OVERRIDE: True})
    assert allowed.returncode == 0, allowed.stdout[-2000:]


@pytest.mark.parametrize("override", [False, True])
def test_hosts_is_always_refused(tmp_path, override):
    result = check(tmp_path, docker_host_daemon_options={"hosts": ["tcp://0.0.0.0:2375"]}, **{OVERRIDE: override})
    output = " ".join(result.stdout.split())
    assert result.returncode != 0
    assert "docker_host_daemon_options sets hosts, which Debian's docker.service already passes (-H fd://)" in output
