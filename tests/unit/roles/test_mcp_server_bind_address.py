"""Where the mcp_server role publishes a replica's ports and where it probes it (CIS Docker 5.13), from the role's
own vars/main.yml, rendered by ansible-playbook on this host."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
PLAYBOOK = """
- name: The mcp_server role's address expressions
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Read the role's internal vars
      ansible.builtin.include_vars:
        file: "{{ role_vars }}"
    - name: Render them for every replica
      ansible.builtin.set_fact:
        pairs: "{{ pairs | default([]) + [[_mcp_server_publish_host, _mcp_server_probe_host]] }}"
      loop: "{{ _mcp_server_fleet_declared | subelements('containers') }}"
      loop_control:
        loop_var: _mcp_server_item
    - name: Write them out
      ansible.builtin.copy:
        dest: "{{ out }}"
        mode: "0600"
        content: "{{ {'bind': _mcp_server_fleet_declared | map(attribute='bind_address') | list, 'publish': pairs} | to_json }}"
"""
SERVER = {"name": "reference", "image": "fleetops/mcp-reference:1.0.0", "host_port": 18080}


def render(tmp_path, servers, **extra_vars):
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    out = tmp_path / "out.json"
    extra = {"ansible_python_interpreter": sys.executable, "mcp_server_servers": servers, "mcp_server_only": [],
             "role_vars": str(ROOT / "roles/mcp_server/vars/main.yml"), "out": str(out),
             **extra_vars}
    (tmp_path / "vars.json").write_text(json.dumps(extra))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    bin_dir = pathlib.Path(sys.executable).parent
    result = subprocess.run([str(bin_dir / "ansible-playbook"), "-i", "localhost,", str(tmp_path / "play.yml"),
                             "-e", f"@{tmp_path / 'vars.json'}"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    return result, (json.loads(out.read_text()) if result.returncode == 0 else None)


@pytest.mark.parametrize(("bind", "address", "publish", "probe"), [
    (None, "10.0.0.5", "10.0.0.5", "10.0.0.5"),
    ("0.0.0.0", "10.0.0.5", "0.0.0.0", "127.0.0.1"),
    ("192.0.2.9", "10.0.0.5", "192.0.2.9", "192.0.2.9"),
    (None, "fd00::5", "[fd00::5]", "[fd00::5]"),
    ("::", "10.0.0.5", "[::]", "127.0.0.1"),
])
def test_replicas_publish_on_the_hosts_fleet_address_and_are_probed_there(tmp_path, bind, address, publish, probe):
    server = dict(SERVER, **({"bind_address": bind} if bind else {}))
    result, out = render(tmp_path, [server], fleetops_address=address)
    assert result.returncode == 0, result.stdout[-3000:]
    assert out["bind"] == [bind or address]
    assert out["publish"] == [[publish, probe]]


def test_a_host_without_an_ip_address_is_refused_naming_fleetops_address(tmp_path):
    result, _ = render(tmp_path, [SERVER], ansible_host="srv-1.example")
    output = " ".join(result.stdout.split())
    assert result.returncode != 0
    expected = ("bind_address is unset and the host's fleet address 'srv-1.example' is not an IP address; "
                "set fleetops_address")
    assert expected in output, output[-3000:]
