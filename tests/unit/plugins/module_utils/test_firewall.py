"""The firewall's rules: who may reach what on each kind of host, from the fleet plan."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import pytest
import yaml
from ansible.template import Templar, trust_as_template

from ansible_collections.fleetops.mcp.plugins.filter import fleetops as filters
from ansible_collections.fleetops.mcp.plugins.module_utils import _firewall, _fleet, _plan

ROOT = pathlib.Path(__file__).resolve().parents[4]
GROUPS = {kind: kind for kind in _plan.KINDS}
HOSTVARS = {
    "dh-1": {"fleetops_address": "10.0.0.11"},
    "dh-2": {"fleetops_address": "10.0.0.12"},
    "lb-1": {"fleetops_address": "10.0.0.21"},
    "lb-2": {"fleetops_address": "10.0.0.22"},
    "mon-1": {"fleetops_address": "10.0.0.31", "grafana_install": False},
    "bk-1": {"fleetops_address": "10.0.0.41"},
}
INVENTORY = {"docker_hosts": ["dh-1", "dh-2"], "load_balancers": ["lb-1", "lb-2"], "monitors": ["mon-1"],
             "backup_hosts": ["bk-1"], "vault_servers": []}
SERVERS = [{"name": "reference", "image": "r:1", "host_port": 18080, "replicas": 2}]
# A fleet with a failover server: its controller (the first monitor unless mcp_failover_controller says
# otherwise) probes the MCP ports and drives the agents over SSH.
FAILOVER = SERVERS + [{"name": "memory", "image": "m:1", "host_port": 18300, "hosts": ["dh-1", "dh-2"],
                       "failover": {"primary": "dh-1", "standby": "dh-2"}}]
OPERATORS = ["192.0.2.0/24", "2001:db8::/64"]


def plan(host, hostvars=HOSTVARS):
    return _plan.compile_plan(host, INVENTORY, hostvars, GROUPS, "/var/lib/prometheus/node-exporter",
                              "127.0.0.1:8081")


def rules(host, ssh_sources=(), hostvars=HOSTVARS, extra=None):
    return {r["name"]: r for r in _firewall.rules(plan(host, hostvars), hostvars, OPERATORS, list(ssh_sources),
                                                  _fleet.host_ports(SERVERS, host), 22, extra)}


def with_failover(controller=None):
    extra = {"fleetops_mcp_servers": FAILOVER, **({"mcp_failover_controller": controller} if controller else {})}
    return {host: dict(v, **extra) for host, v in HOSTVARS.items()}


def test_mcp_host_ports_admit_the_load_balancers_monitors_and_controller_only():
    mcp = rules("dh-1")["mcp-servers"]
    assert mcp["forward"] is True and mcp["any"] is False
    assert mcp["ports"] == [18080, 18081]
    assert mcp["v4"] == ["10.0.0.21/32", "10.0.0.22/32", "10.0.0.31/32"] and mcp["v6"] == []
    # A controller outside the monitors is admitted too, where a server fails over.
    assert plan("dh-1")["failover_controllers"] == []
    assert plan("dh-1", with_failover())["failover_controllers"] == ["mon-1"]
    assert "10.0.0.41/32" in rules("dh-1", hostvars=with_failover("bk-1"))["mcp-servers"]["v4"]
    assert "10.0.0.41/32" not in rules("dh-1", hostvars=dict(
        HOSTVARS, **{h: dict(v, mcp_failover_controller="bk-1") for h, v in HOSTVARS.items()}))["mcp-servers"]["v4"]
    # A Docker host without MCP servers has no MCP rule; other hosts never do.
    assert "mcp-servers" not in rules("dh-2") or rules("dh-2")["mcp-servers"]["ports"]
    assert "mcp-servers" not in rules("lb-1")


def test_exporters_admit_only_the_monitors():
    for host in HOSTVARS:
        node = rules(host)["node-exporter"]
        assert (node["ports"], node["v4"], node["any"]) == ([9100], ["10.0.0.31/32"], False), host
    assert rules("lb-1")["nginx-exporter"]["v4"] == ["10.0.0.31/32"]
    gateway = rules("lb-1")["gateway-metrics"]
    assert (gateway["ports"], gateway["v4"], gateway["any"]) == ([3903], ["10.0.0.31/32"], False)
    assert "gateway-metrics" not in rules("dh-1")


def test_the_gateway_admits_anyone_and_vrrp_only_the_peers():
    r = rules("lb-1")
    assert r["mcp-gateway"]["any"] is True and r["mcp-gateway"]["ports"] == [80, 443]
    assert r["vrrp"]["proto"] == "vrrp" and r["vrrp"]["v4"] == ["10.0.0.21/32", "10.0.0.22/32"]


def test_monitoring_uis_admit_the_operators_and_monitors_and_grafana_only_where_installed():
    r = rules("mon-1")
    for name, port in (("prometheus", 9090), ("alertmanager", 9093), ("blackbox-exporter", 9115)):
        assert r[name]["ports"] == [port]
        assert r[name]["v4"] == ["10.0.0.31/32", "192.0.2.0/24"] and r[name]["v6"] == ["2001:db8::/64"]
    assert "grafana" not in r
    with_grafana = dict(HOSTVARS, **{"mon-1": {"fleetops_address": "10.0.0.31", "grafana_http_port": 3300}})
    assert rules("mon-1", hostvars=with_grafana)["grafana"]["ports"] == [3300]
    # Without operator networks, only the monitors.
    alone = _firewall.rules(plan("mon-1"), HOSTVARS, [], [], [], 22)
    assert next(x for x in alone if x["name"] == "prometheus")["v4"] == ["10.0.0.31/32"]


def test_ssh_is_open_when_no_sources_are_set_and_otherwise_admits_the_fleets_own_ssh():
    assert all(rules(h)["ssh"]["any"] for h in HOSTVARS)
    ssh = ["198.51.100.7/32"]
    assert rules("bk-1", ssh)["ssh"]["v4"] == ["10.0.0.11/32", "10.0.0.12/32", "10.0.0.21/32", "10.0.0.22/32",
                                              "10.0.0.31/32", "10.0.0.41/32", "198.51.100.7/32"]
    assert rules("dh-1", ssh)["ssh"]["v4"] == ["10.0.0.11/32", "10.0.0.12/32", "198.51.100.7/32"]
    assert rules("lb-1", ssh)["ssh"]["v4"] == ["198.51.100.7/32"]
    # The failover controller drives the agents on the Docker hosts and load balancers over SSH.
    failover = with_failover()
    assert rules("dh-1", ssh, failover)["ssh"]["v4"] == ["10.0.0.11/32", "10.0.0.12/32", "10.0.0.31/32",
                                                         "198.51.100.7/32"]
    assert rules("lb-1", ssh, failover)["ssh"]["v4"] == ["10.0.0.31/32", "198.51.100.7/32"]
    assert rules("mon-1", ssh)["ssh"]["v4"] == ["198.51.100.7/32"]


def test_a_source_host_without_an_address_is_refused_naming_it():
    hostvars = dict(HOSTVARS, **{"lb-2": {"ansible_host": "lb-2.example"}})
    with pytest.raises(ValueError, match="host lb-2 has no IP address to admit .*'lb-2.example'.*fleetops_address"):
        rules("dh-1", hostvars=hostvars)


def test_extra_rules_follow_the_plans_and_bad_ones_name_the_entry_and_field():
    r = rules("bk-1", extra=[{"name": "rsyncd", "ports": [873], "sources": ["10.1.0.0/16"]},
                             {"name": "syslog", "proto": "udp", "ports": [514]}])
    assert (r["rsyncd"]["proto"], r["rsyncd"]["v4"], r["rsyncd"]["any"]) == ("tcp", ["10.1.0.0/16"], False)
    assert (r["syslog"]["proto"], r["syslog"]["any"]) == ("udp", True)
    errors = _firewall.input_errors(["10.0.0.0/33"], "10.0.0.0/8", "ssh", [
        {"name": "Bad Name", "proto": "icmp", "ports": [0], "sources": ["nowhere"], "from": []}], "lb-1")
    assert errors == [
        "firewall_operator_cidrs must hold IPv4 or IPv6 addresses or CIDRs; got '10.0.0.0/33'",
        "firewall_ssh_sources must be a list of IPv4 or IPv6 addresses or CIDRs; got '10.0.0.0/8'",
        "firewall_ssh_port must be a port number from 1 to 65535; got 'ssh'",
        "firewall_extra_rules[0] has unknown keys from",
        "firewall_extra_rules[0].name must be lower-case letters, digits and - (at most 41); got 'Bad Name'",
        "firewall_extra_rules[0].proto must be tcp or udp; got 'icmp'",
        "firewall_extra_rules[0].ports must be a non-empty list of port numbers from 1 to 65535; got [0]",
        "firewall_extra_rules[0].sources must hold IPv4 or IPv6 addresses or CIDRs; got 'nowhere'",
        "firewall_controller_address must be an IP address; got 'lb-1'",
    ]
    assert _firewall.input_errors([], [], 22, [], "") == []


def test_a_rule_set_that_would_cut_the_controllers_ssh_session_is_named():
    open_ssh = list(rules("mon-1").values())
    assert _firewall.lockout("203.0.113.9", open_ssh, 22) is None
    closed = list(rules("mon-1", ["198.51.100.0/24"]).values())
    assert _firewall.lockout("198.51.100.20", closed, 22) is None
    assert _firewall.lockout("", closed, 22) is None  # not an SSH connection: nothing to check
    why = _firewall.lockout("203.0.113.9", closed, 22)
    assert why.startswith("firewall_ssh_sources would cut off the controller's own SSH session from 203.0.113.9 "
                          "to port 22")
    # A session on another port than firewall_ssh_port is cut whoever it comes from.
    assert _firewall.lockout("198.51.100.20", closed, 2222) is not None
    assert _firewall.lockout("203.0.113.9", open_ssh, 2222) is not None
    assert filters.fleet_firewall_lockout(closed, "198.51.100.20", 22) == ""


def test_the_plans_port_fallbacks_are_the_owning_roles_defaults():
    owners = {"monitoring_agent": ["monitoring_agent_node_exporter_port", "monitoring_agent_nginx_exporter_port",
                                   "monitoring_agent_gateway_metrics_port"],
              "nginx_lb": ["nginx_lb_listen_port", "nginx_lb_tls_port"],
              "monitoring": ["monitoring_prometheus_port", "monitoring_alertmanager_port", "monitoring_blackbox_port"],
              "grafana": ["grafana_install", "grafana_http_port"],
              "vault_server": ["vault_server_port", "vault_server_cluster_port"]}
    assert sorted(n for names in owners.values() for n in names) == sorted(_plan.PORT_DEFAULTS)
    for role, names in owners.items():
        defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())
        for name in names:
            assert defaults[name] == _plan.PORT_DEFAULTS[name], name


def render(host, ssh_sources=()):
    source = (ROOT / "roles" / "firewall" / "templates" / "fleetops-firewall.nft.j2").read_text()
    templar = Templar(variables={"ansible_managed": "Ansible managed",
                                 "_firewall_rules": list(rules(host, ssh_sources).values())})
    return templar.template(trust_as_template(source))


@pytest.mark.parametrize("host", sorted(HOSTVARS))
def test_the_rendered_table_is_valid_nftables(host, tmp_path):
    text = render(host, ["198.51.100.0/24"])
    assert 'comment "dropped: not admitted"' in text
    # Protocols by number or nft's own keywords only: a host without netbase has no /etc/protocols.
    for protocols in re.findall(r"meta l4proto (\{[^}]*\}|\S+)", text):
        assert re.fullmatch(r"\{? ?(tcp|udp|[0-9]+)(, (tcp|udp|[0-9]+))* ?\}?", protocols), protocols
    if host == "dh-1":
        assert ("ct status dnat ip saddr { 10.0.0.21/32, 10.0.0.22/32, 10.0.0.31/32 } meta l4proto tcp "
                "ct original proto-dst { 18080, 18081 } accept") in text
        # The same sources on the input hook: a stopped container's port refuses them at once.
        assert ("ip saddr { 10.0.0.21/32, 10.0.0.22/32, 10.0.0.31/32 } tcp dport { 18080, 18081 } accept "
                'comment "mcp-servers') in text
    if host == "lb-1":
        assert "ip saddr { 10.0.0.21/32, 10.0.0.22/32 } meta l4proto 112 accept" in text
        assert 'tcp dport { 80, 443 } accept comment "mcp-gateway from anywhere"' in text
    if host == "mon-1":
        assert "ip6 saddr { 2001:db8::/64 } tcp dport { 9090 } accept" in text
    nft = shutil.which("nft") or "/usr/sbin/nft"
    path = tmp_path / "fleetops.nft"
    path.write_text(text)
    # nft -c parses and checks the table against the kernel without loading it (the harness installs nftables).
    result = subprocess.run([nft, "-c", "-f", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr + text
