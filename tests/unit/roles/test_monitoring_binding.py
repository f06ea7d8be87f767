"""Every web UI and API on the address the firewall admits (issue 14): what the roles render and refuse.

Prometheus, Alertmanager, Grafana and the exporters listen on the host's fleet address by default
(``fleetops_address``, else its default IPv4), the host's own consumers (prometheus.yml's self-scrape and
alerting targets, Grafana's datasource, the backup's snapshot URL) follow it, and 0.0.0.0 stays an opt-out
that sends them to loopback. The templates and the preflight asserts are run by ansible-playbook on this
host (connection local, nothing installed or started; every file written goes under pytest's tmp_path).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
INVENTORY = """
all:
  children:
    monitors:
      hosts:
        mon-1: %s
"""
PLAN = {"host": "mon-1", "groups": {"monitors": "monitors", "load_balancers": "load_balancers",
                                    "docker_hosts": "docker_hosts"},
        "kinds": ["monitors"], "vip": "", "status": {"url": "http://127.0.0.1:8081"},
        "textfile_dir": "/var/lib/prometheus/node-exporter",
        "prometheus": {"auth_file": "/etc/prometheus/web-client.auth", "scrape_interval": "15s", "port": 9090,
                       "listen_address": ""}}
RENDER = """
- name: Render {role}'s templates
  hosts: mon-1
  connection: local
  gather_facts: false
  tasks:
    - name: Load the role's defaults and vars (extra vars still win)
      ansible.builtin.include_vars: "{{{{ item }}}}"
      loop: ["{path}/defaults/main.yml", "{path}/vars/main.yml"]
    - name: Render
      ansible.builtin.template:
        src: "{path}/templates/{{{{ item }}}}"
        dest: "{{{{ out }}}}/{{{{ item | regex_replace('\\\\.j2$', '') }}}}"
        mode: "0600"
      loop: {templates}
    - name: Record the values the tasks use
      ansible.builtin.copy:
        content: "{{{{ record | to_json }}}}"
        dest: "{{{{ out }}}}/record.json"
        mode: "0600"
"""
RECORD = {
    "monitoring": {},
    "monitoring_agent": {},
    # The value roles/grafana/tasks/install.yml writes as http_addr, and the datasource URL.
    "grafana": {"http_addr": "{{ grafana_http_address | fleetops.mcp.fleet_listen_address(inventory_hostname, hostvars) }}",
                "url": "{{ grafana_prometheus_url }}"},
}
TEMPLATES = {
    "monitoring": ["prometheus.default.j2", "prometheus-alertmanager.default.j2", "prometheus.yml.j2"],
    "monitoring_agent": ["prometheus-node-exporter.default.j2", "prometheus-nginx-exporter.default.j2",
                         "mtail.default.j2"],
    "grafana": ["datasource.yml.j2"],
}


def playbook(tmp_path, play, host_vars, extra):
    (tmp_path / "play.yml").write_text(play)
    (tmp_path / "hosts.yml").write_text(INVENTORY % json.dumps(host_vars))
    variables = {"fleetops_plan": PLAN, "ansible_python_interpreter": sys.executable, **extra}
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    return subprocess.run([str(pathlib.Path(sys.executable).parent / "ansible-playbook"), "-i",
                           str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml"), "-e", f"@{tmp_path / 'vars.json'}"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=180, check=False)


def render(tmp_path, role, host_vars=None, **extra):
    out = tmp_path / "out"
    out.mkdir()
    play = RENDER.format(role=role, path=ROOT / "roles" / role, templates=json.dumps(TEMPLATES[role]))
    result = playbook(tmp_path, play, host_vars or {"fleetops_address": "10.0.0.31"},
                      {"out": str(out), "record": RECORD[role], "monitoring_mcp_probe_enabled": False, **extra})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    files = {p.name: p.read_text() for p in out.iterdir()}
    return files, json.loads(files["record.json"])


def flag(text, name):
    return next(a.split("=", 1)[1] for a in text.replace('"', " ").split() if a.startswith(name + "="))


@pytest.mark.parametrize(("extra", "bound", "local"), [
    ({}, "10.0.0.31", "10.0.0.31"),  # the default: the fleet address
    ({"monitoring_prometheus_listen_address": "10.0.0.99", "monitoring_alertmanager_listen_address": "10.0.0.98"},
     None, None),
    ({"monitoring_prometheus_listen_address": "0.0.0.0", "monitoring_alertmanager_listen_address": "0.0.0.0"},
     "0.0.0.0", "127.0.0.1"),  # the opt-out: consumers on loopback
])
def test_prometheus_and_alertmanager_listen_where_the_firewall_admits_and_target_themselves_there(
        tmp_path, extra, bound, local):
    files, _ = render(tmp_path, "monitoring", **extra)
    prometheus = bound or "10.0.0.99"
    alertmanager = bound or "10.0.0.98"
    assert flag(files["prometheus.default"], "--web.listen-address") == f"{prometheus}:9090"
    assert flag(files["prometheus-alertmanager.default"], "--web.listen-address") == f"{alertmanager}:9093"
    config = yaml.safe_load(files["prometheus.yml"])
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
            if job.get("static_configs")}
    assert jobs["prometheus"] == [f"{local or prometheus}:9090"]
    assert jobs["alertmanager"] == [f"{local or alertmanager}:9093"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [f"{local or alertmanager}:9093"]
    assert "0.0.0.0:" not in files["prometheus.yml"]


def test_an_ipv6_fleet_address_is_bracketed_in_the_flags_and_targets(tmp_path):
    files, _ = render(tmp_path, "monitoring", host_vars={"fleetops_address": "2001:db8::31"})
    assert flag(files["prometheus.default"], "--web.listen-address") == "[2001:db8::31]:9090"
    assert '"[2001:db8::31]:9093"' in files["prometheus.yml"]


@pytest.mark.parametrize(("extra", "bound"), [({}, "10.0.0.31"), ({"monitoring_agent_listen_address": "0.0.0.0"}, "0.0.0.0")])
def test_the_exporters_listen_on_the_fleet_address(tmp_path, extra, bound):
    files, _ = render(tmp_path, "monitoring_agent", **extra)
    assert flag(files["prometheus-node-exporter.default"], "--web.listen-address") == f"{bound}:9100"
    assert flag(files["prometheus-nginx-exporter.default"], "--web.listen-address") == f"{bound}:9113"
    mtail = dict(line.split("=", 1) for line in files["mtail.default"].splitlines() if "=" in line and line[0] != "#")
    assert (mtail["HOST"], mtail["PORT"], mtail["LOGS"]) == (bound, "3903", "/var/log/nginx/mcp-audit.json")


@pytest.mark.parametrize(("extra", "addr", "url"), [
    ({}, "10.0.0.31", "http://10.0.0.31:9090"),
    ({"grafana_http_address": "0.0.0.0", "fleetops_plan": dict(PLAN, prometheus=dict(PLAN["prometheus"],
                                                                                       listen_address="0.0.0.0"))},
     "0.0.0.0", "http://127.0.0.1:9090"),
])
def test_grafana_listens_on_the_fleet_address_and_reaches_prometheus_where_it_listens(tmp_path, extra, addr, url):
    files, record = render(tmp_path, "grafana", **extra)
    assert record == {"http_addr": addr, "url": url}
    assert yaml.safe_load(files["datasource.yml"])["datasources"][0]["url"] == url


# --- preflight: a fleet address the host cannot bind fails before any change ---------------------------
PREFLIGHT = """
- name: The listen address checks of {role}'s preflight
  hosts: mon-1
  connection: local
  gather_facts: true
  gather_subset: [network]
  tasks:
    - name: Load the role's defaults and vars (extra vars still win)
      ansible.builtin.include_vars: "{{{{ item }}}}"
      loop: ["{path}/defaults/main.yml", "{path}/vars/main.yml"]
{tasks}
"""
CHECKS = {"monitoring": ("Check where Prometheus and Alertmanager listen", "monitoring_prometheus_listen_address"),
          "monitoring_agent": ("Check where the exporters listen", "monitoring_agent_listen_address"),
          "grafana": ("Check where Grafana listens", "grafana_http_address")}


def preflight(tmp_path, role, host_vars, **extra):
    path = ROOT / "roles" / role
    task = next(t for t in yaml.safe_load((path / "tasks" / "preflight.yml").read_text())
                if t["name"] == CHECKS[role][0])
    tasks = "\n".join("    " + line for line in yaml.safe_dump([task], sort_keys=False).splitlines())
    return playbook(tmp_path, PREFLIGHT.format(role=role, path=path, tasks=tasks), host_vars, extra)


@pytest.mark.parametrize("role", sorted(CHECKS))
def test_a_nat_fleet_address_fails_the_preflight_naming_fleetops_address_and_the_variable(tmp_path, role):
    result = preflight(tmp_path, role, {"fleetops_address": "203.0.113.9"})
    output = " ".join(result.stdout.split())
    assert result.returncode != 0, output[-2000:]
    assert (f"{CHECKS[role][1]} is empty, for the host's fleet address, but 203.0.113.9 (fleetops_address, else the "
            "default IPv4) is not an address of this host (NAT?)") in output, output[-3000:]


@pytest.mark.parametrize("role", sorted(CHECKS))
def test_an_address_of_the_host_or_the_opt_out_passes_the_preflight(tmp_path, role):
    own = {"fleetops_address": "{{ ansible_facts.all_ipv4_addresses | first | default('127.0.0.1') }}"}
    result = preflight(tmp_path, role, own)
    assert result.returncode == 0, result.stdout[-3000:]
    every = {name: "0.0.0.0" for name in ("monitoring_prometheus_listen_address", "monitoring_alertmanager_listen_address",
                                          "monitoring_agent_listen_address", "grafana_http_address")}
    result = preflight(tmp_path, role, {"fleetops_address": "203.0.113.9"}, **every)
    assert result.returncode == 0, result.stdout[-3000:]
