"""mcp_failover's timing checks (tasks/preflight.yml, "Check the timing"), the task itself run by
ansible-playbook on this host with the role's defaults and one input changed."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles/mcp_failover"


def timing_task() -> dict:
    tasks = yaml.safe_load((ROLE / "tasks/preflight.yml").read_text())
    return next(t for t in tasks if t.get("name") == "Check the timing")


def run(tmp_path, **overrides) -> subprocess.CompletedProcess:
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    names = {"mcp_failover_interval", "mcp_failover_failures", "mcp_failover_probe_timeout",
             "mcp_failover_session_open_timeout", "mcp_failover_ready_timeout", "mcp_failover_ssh_connect_timeout"}
    play = [{"name": "mcp_failover's timing checks", "hosts": "localhost", "connection": "local",
             "gather_facts": False, "vars": {k: defaults[k] for k in names}, "tasks": [timing_task()]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    (tmp_path / "vars.json").write_text(json.dumps({**overrides, "ansible_python_interpreter": sys.executable}))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    return subprocess.run([str(pathlib.Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
                           str(tmp_path / "play.yml"), "-e", f"@{tmp_path / 'vars.json'}"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)


def test_the_defaults_pass(tmp_path):
    result = run(tmp_path)
    assert result.returncode == 0, result.stdout[-2000:]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"mcp_failover_session_open_timeout": 2},
     "mcp_failover_session_open_timeout must be a whole number from 3 to 300; got 2."),
    ({"mcp_failover_probe_timeout": 12, "mcp_failover_session_open_timeout": 10},
     "mcp_failover_session_open_timeout must be a whole number from 12 to 300; got 10."),
    ({"mcp_failover_session_open_timeout": 301},
     "mcp_failover_session_open_timeout must be a whole number from 3 to 300; got 301."),
    ({"mcp_failover_probe_timeout": 0}, "mcp_failover_probe_timeout must be a whole number from 1 to 60; got 0."),
], ids=["below-the-probe-timeout", "below-a-raised-probe-timeout", "too-long", "probe-timeout-zero"])
def test_a_bad_timing_is_refused_naming_the_variable(tmp_path, overrides, message):
    result = run(tmp_path, **overrides)
    assert result.returncode != 0
    assert message in " ".join(result.stdout.split()), result.stdout[-2000:]


def test_the_agent_configuration_carries_the_session_open_timeout(tmp_path):
    """The role's own vars (vars/main.yml) hand mcp_failover_session_open_timeout to the agent's
    configuration, so a promote gives a slow server's first session what the daemon's probe gives it."""
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    servers = [{"name": "memory", "image": "fleetops/mcp-memory:1", "host_port": 18300,
                "stdio_command": ["mcp-server-memory"], "transport": "stdio",
                "failover": {"primary": "dh-1", "standby": "dh-2", "sync_interval": 10},
                "volumes": [{"source": "memory-data", "target": "/data", "writable": True}]}]
    play = [{"name": "mcp_failover's agent configuration", "hosts": "dh-2", "connection": "local",
             "gather_facts": False,
             "vars_files": [str(ROLE / "defaults/main.yml"), str(ROLE / "vars/main.yml")],
             "vars": {"fleetops_plan": {"groups": {"docker_hosts": "docker_hosts", "load_balancers": "lbs"},
                                        "failover_dir": "/etc/nginx/fleetops-failover", "vip": "",
                                        "textfile_dir": "/var/lib/node_exporter", "failover_controllers": []},
                      "fleetops_mcp_servers": servers},
             "tasks": [{"name": "Write it", "ansible.builtin.copy": {
                 "content": "{{ _mcp_failover_agent | to_json }}", "dest": str(tmp_path / "agent.json"),
                 "mode": "0600"}}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"docker_hosts": {"hosts": {
        "dh-1": {"fleetops_address": "10.0.0.11"}, "dh-2": {"fleetops_address": "10.0.0.12"}}}, "lbs": {}}}}))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    assert defaults["mcp_failover_session_open_timeout"] == 10
    for value in (None, 42):
        extra = {"ansible_python_interpreter": sys.executable}
        if value is not None:
            extra["mcp_failover_session_open_timeout"] = value
        (tmp_path / "vars.json").write_text(json.dumps(extra))
        result = subprocess.run([str(pathlib.Path(sys.executable).parent / "ansible-playbook"), "-i",
                                 str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml"),
                                 "-e", f"@{tmp_path / 'vars.json'}"],
                                capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
        assert result.returncode == 0, result.stdout[-3000:]
        agent = json.loads((tmp_path / "agent.json").read_text())
        assert agent["servers"]["memory"]["session_open_timeout"] == (value or 10), agent
