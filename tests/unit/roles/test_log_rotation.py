"""The log_rotation role's rule, rendered from its template and run by the real logrotate: a log past
its size is rotated, the daemon's reopen command runs, a small log is left alone; bad inputs are refused
naming the variable before anything is installed."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "log_rotation"
LOGROTATE = shutil.which("logrotate") or "/usr/sbin/logrotate"
needs_logrotate = pytest.mark.skipif(not os.path.exists(LOGROTATE), reason="logrotate is not installed "
                                     "(tests/harness/setup-host.sh installs it)")


def render(**options) -> str:
    from ansible.template import Templar, trust_as_template

    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    templar = Templar(variables={**defaults, "ansible_managed": "Ansible managed", **options})
    return templar.template(trust_as_template((ROLE / "templates" / "logrotate-rule.j2").read_text()))


def rotate(conf: pathlib.Path, state: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run([LOGROTATE, "--state", str(state), str(conf)], capture_output=True, text=True,
                          timeout=60, check=False)


@needs_logrotate
def test_a_log_past_its_size_is_rotated_and_the_reopen_command_runs_once(tmp_path):
    log, marker = tmp_path / "access.json", tmp_path / "reopened"
    conf = tmp_path / "rule"
    conf.write_text(render(log_rotation_name="t", log_rotation_paths=[str(log)], log_rotation_max_size="1k",
                           log_rotation_keep=2, log_rotation_postrotate=f"echo x >> {marker}"))
    conf.chmod(0o644)
    state = tmp_path / "state"
    log.write_text('{"n": 1}\n' * 200)  # 1800 bytes: past 1k
    result = rotate(conf, state)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "access.json.1").read_text() == '{"n": 1}\n' * 200
    assert log.exists() and log.stat().st_size == 0  # created anew, for the writer to reopen
    assert marker.read_text() == "x\n"  # once, after the rotation

    # Under the size, and already rotated today: left alone, no reopen.
    log.write_text('{"n": 2}\n')
    result = rotate(conf, state)
    assert result.returncode == 0, result.stderr
    assert log.read_text() == '{"n": 2}\n' and marker.read_text() == "x\n"

    # Past the size again: the older copy is compressed (delaycompress), at most two kept.
    for n in (3, 4):
        log.write_text(f'{{"n": {n}}}\n' * 200)
        assert rotate(conf, state).returncode == 0
    names = sorted(p.name for p in tmp_path.glob("access.json*"))
    assert names == ["access.json", "access.json.1", "access.json.2.gz"], names
    assert marker.read_text() == "x\nx\nx\n"


@needs_logrotate
@pytest.mark.parametrize("caller", ["nginx_lb", "keepalived", "mcp_failover"])
def test_each_callers_rule_passes_logrotates_own_check(tmp_path, caller):
    tasks = yaml.safe_load((ROOT / "roles" / caller / "tasks" / ("controller_key.yml" if caller == "mcp_failover"
                                                                   else "configure.yml")).read_text())
    (call,) = [t for t in tasks if t.get("ansible.builtin.include_role", {}).get("name") == "fleetops.mcp.log_rotation"]
    options = {k: v for k, v in call["vars"].items() if "{{" not in str(v)}
    conf = tmp_path / "rule"
    conf.write_text(render(**{**options, "log_rotation_paths": [str(tmp_path / "some.log")]}))
    conf.chmod(0o644)
    result = subprocess.run([LOGROTATE, "--debug", "--state", str(tmp_path / "state"), str(conf)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and "error" not in result.stderr.lower(), result.stderr
    assert call["vars"]["log_rotation_name"] in {"nginx-lb", "keepalived", "failover"}


PLAYBOOK = """
- name: The rule entry point with bad inputs
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: A rule
      ansible.builtin.include_role:
        name: fleetops.mcp.log_rotation
        tasks_from: rule
"""


@pytest.mark.parametrize(("overrides", "message"), [
    ({"log_rotation_name": "My Rule"}, "log_rotation_name must be lower-case letters, digits and -"),
    ({"log_rotation_paths": ["var/log/x.log"]}, "log_rotation_paths must be a list of absolute file paths"),
    ({"log_rotation_paths": ["/var/log/*.log"]}, "log_rotation_paths must be a list of absolute file paths"),
    ({"log_rotation_max_size": "100 MB"}, "log_rotation_max_size must be a size such as 100M"),
    ({"log_rotation_keep": 0}, "log_rotation_keep must be a whole number from 1 to 1000"),
    ({"log_rotation_create": "rw-r----- root"}, "log_rotation_create must be empty or 'mode owner group'"),
])
def test_a_bad_rule_is_refused_naming_the_variable_before_anything_is_installed(tmp_path, overrides, message):
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    good = {"log_rotation_name": "t", "log_rotation_paths": ["/var/log/t.log"], "ansible_python_interpreter": sys.executable}
    (tmp_path / "vars.json").write_text(json.dumps({**good, **overrides}))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    result = subprocess.run([str(pathlib.Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
                             str(tmp_path / "play.yml"), "-e", f"@{tmp_path / 'vars.json'}"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    assert result.returncode != 0
    assert message in result.stdout, result.stdout[-3000:]
    assert "Install logrotate" not in result.stdout
