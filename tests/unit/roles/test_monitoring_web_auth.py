"""The monitoring role's basic auth (issue 14): when it is on, what its templates and Grafana's datasource render.

The role's templates are rendered by ansible-playbook on this host with the role's defaults and vars (no
Prometheus runs here); the web config and prometheus.yml are then checked with Debian's promtool (unpacked
into .cache/bin by tests/harness/setup-host.sh promtool).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import warnings

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "monitoring"
PLAYBOOK = """
- name: Render the monitoring role's web surface
  hosts: mon-1
  connection: local
  gather_facts: false
  tasks:
    - name: Load the role's defaults and vars (extra vars still win)
      ansible.builtin.include_vars: "{{ item }}"
      loop: ["%(role)s/defaults/main.yml", "%(role)s/vars/main.yml"]
    - name: Render
      ansible.builtin.template:
        src: "%(role)s/templates/{{ item }}"
        dest: "{{ out }}/{{ item | regex_replace('\\\\.j2$', '') }}"
        mode: "0600"
      loop: [web-config.yml.j2, prometheus.yml.j2, prometheus.default.j2, prometheus-alertmanager.default.j2]
    - name: Record the decision
      ansible.builtin.copy:
        content: "{{ {'auth': monitoring_web_auth | bool} | to_json }}"
        dest: "{{ out }}/decision.json"
        mode: "0600"
"""
INVENTORY = """
all:
  children:
    monitors:
      hosts:
        mon-1: {fleetops_address: 10.0.0.31}
        mon-2: {fleetops_address: 10.0.0.32}
"""
PLAN = {"groups": {"monitors": "monitors", "load_balancers": "load_balancers", "docker_hosts": "docker_hosts"},
        "vip": "", "prometheus": {"auth_file": "/etc/prometheus/web-client.auth"}}
USERS = [{"name": "grafana", "password": "first-user-password"}, {"name": "ops", "password": "second-user-password"}]


def bcrypt(password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt as _crypt
        return _crypt.crypt(password, _crypt.mksalt(_crypt.METHOD_BLOWFISH, rounds=1024))


def promtool() -> str:
    local = ROOT / ".cache/bin/promtool"
    found = str(local) if local.exists() else shutil.which("promtool")
    if not found:
        pytest.fail("promtool is missing: run tests/harness/setup-host.sh promtool (make unit does)")
    return found


def render(tmp_path, **extra):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "play.yml").write_text(PLAYBOOK % {"role": ROLE})
    (tmp_path / "hosts.yml").write_text(INVENTORY)
    variables = {"out": str(out), "fleetops_plan": PLAN, "ansible_python_interpreter": sys.executable,
                 "monitoring_mcp_probe_enabled": False, **extra}
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    bin_dir = pathlib.Path(sys.executable).parent
    result = subprocess.run([str(bin_dir / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"),
                             str(tmp_path / "play.yml"), "-e", f"@{tmp_path / 'vars.json'}"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=180, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return out, json.loads((out / "decision.json").read_text())["auth"]


@pytest.mark.parametrize(("cidrs", "auth"), [
    ([], False),
    (["10.0.0.31/32", "10.0.0.32"], False),  # the monitors themselves only
    (["10.0.0.31/32", "10.20.100.0/24"], True),  # an operators' network as well
    (["10.0.0.0/24"], True),  # a network around the monitors admits more than them
])
def test_basic_auth_is_on_by_default_when_the_firewall_admits_more_than_the_monitors(tmp_path, cidrs, auth):
    out, decided = render(tmp_path, firewall_operator_cidrs=cidrs, monitoring_web_users=USERS)
    assert decided is auth
    for daemon in ("prometheus", "prometheus-alertmanager"):
        flags = (out / f"{daemon}.default").read_text()
        assert ("--web.config.file=/etc/prometheus/web-config.yml" in flags) is auth, flags
    assert ("basic_auth" in (out / "prometheus.yml").read_text()) is auth


def test_the_web_config_holds_every_users_hash_and_promtool_accepts_it(tmp_path):
    hashes = {"grafana": bcrypt("first-user-password"), "ops": bcrypt("second-user-password"), "gone": bcrypt("x" * 12)}
    out, decided = render(tmp_path, monitoring_web_auth=True, monitoring_web_users=USERS,
                          _monitoring_web_hashes=hashes)
    assert decided is True
    web = out / "web-config.yml"
    # Only the listed users, never a password in clear.
    assert yaml.safe_load(web.read_text()) == {"basic_auth_users": {"grafana": hashes["grafana"], "ops": hashes["ops"]}}
    assert "user-password" not in web.read_text()
    check = subprocess.run([promtool(), "check", "web-config", str(web)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_web_config_without_a_hash_is_refused_by_promtool(tmp_path):
    """The role's validate step can fail: a user whose hash is missing renders an empty one."""
    out, _ = render(tmp_path, monitoring_web_auth=True, monitoring_web_users=USERS, _monitoring_web_hashes={})
    check = subprocess.run([promtool(), "check", "web-config", str(out / "web-config.yml")],
                           capture_output=True, text=True, check=False)
    assert check.returncode != 0


def test_prometheus_authenticates_its_own_scrapes_and_alerting_as_the_first_user(tmp_path):
    out, _ = render(tmp_path, monitoring_web_auth=True, monitoring_web_users=USERS,
                    _monitoring_web_hashes={u["name"]: bcrypt(u["password"]) for u in USERS})
    text = (out / "prometheus.yml").read_text()
    config = yaml.safe_load(text)
    auth = {"username": "grafana", "password_file": "/etc/prometheus/web-client.password"}
    assert config["alerting"]["alertmanagers"][0]["basic_auth"] == auth
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["prometheus"]["basic_auth"] == auth
    assert jobs["alertmanager"]["basic_auth"] == auth
    assert "basic_auth" not in jobs["blackbox"] and "basic_auth" not in jobs["node"]
    assert "first-user-password" not in text
    # promtool accepts it (the password file need not exist here; the rule glob matches nothing).
    check = subprocess.run([promtool(), "check", "config", "--syntax-only", str(out / "prometheus.yml")],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


GRAFANA_PLAYBOOK = """
- name: Render Grafana's datasource
  hosts: mon-1
  connection: local
  gather_facts: false
  tasks:
    - name: Load the role's defaults and vars (extra vars still win)
      ansible.builtin.include_vars: "{{ item }}"
      loop: ["%(role)s/defaults/main.yml", "%(role)s/vars/main.yml"]
    - name: Render
      ansible.builtin.template:
        src: "%(role)s/templates/datasource.yml.j2"
        dest: "{{ out }}/datasource.yml"
        mode: "0600"
"""


def grafana_datasource(tmp_path, **extra) -> dict:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "play.yml").write_text(GRAFANA_PLAYBOOK % {"role": ROOT / "roles" / "grafana"})
    (tmp_path / "hosts.yml").write_text(INVENTORY)
    plan = dict(PLAN, prometheus=dict(PLAN["prometheus"], listen_address="0.0.0.0", port=9090,
                                           scrape_interval="15s"), host="mon-1")
    (tmp_path / "vars.json").write_text(json.dumps({"out": str(out), "fleetops_plan": plan,
                                                    "ansible_python_interpreter": sys.executable, **extra}))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    result = subprocess.run([str(pathlib.Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"),
                             str(tmp_path / "play.yml"), "-e", f"@{tmp_path / 'vars.json'}"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=180, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return yaml.safe_load((out / "datasource.yml").read_text())["datasources"][0]


def test_grafanas_datasource_authenticates_as_the_monitors_first_web_user(tmp_path):
    source = grafana_datasource(tmp_path, monitoring_web_users=USERS)
    assert (source["basicAuth"], source["basicAuthUser"]) == (True, "grafana")
    assert source["secureJsonData"] == {"basicAuthPassword": "first-user-password"}


def test_grafanas_datasource_has_no_auth_without_web_users(tmp_path):
    source = grafana_datasource(tmp_path)
    assert "basicAuth" not in source and "secureJsonData" not in source
