"""The fleet plan: one place for group names and shared settings; renamed groups plan the same fleet."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from ansible_collections.fleetops.mcp.plugins.filter import fleetops as filters
from ansible_collections.fleetops.mcp.plugins.module_utils import _backup, _firewall, _fleet, _plan

ROOT = pathlib.Path(__file__).resolve().parents[4]
DEFAULT_GROUPS = {kind: kind for kind in _plan.KINDS}
RENAMED = {"docker_hosts": "mcp_nodes", "load_balancers": "edge", "monitors": "observers",
           "backup_hosts": "archive", "vault_servers": "vaults"}
SERVERS = [
    {"name": "reference", "image": "r:1", "host_port": 18080, "replicas": 2},
    {"name": "notes", "image": "n:1", "host_port": 18200, "hosts": ["dh-1"],
     "volumes": [{"source": "notes-data", "target": "/data", "writable": True}]},
    {"name": "time-tools", "image": "t:1", "host_port": 18100, "transport": "stdio",
     "stdio_command": ["mcp-server-time"], "stateless": True, "hosts": ["dh-2"]},
]
HOSTVARS = {
    "dh-1": {"fleetops_address": "10.0.0.11"},
    "dh-2": {"fleetops_address": "10.0.0.12"},
    "lb-1": {"fleetops_address": "10.0.0.21", "keepalived_virtual_ipaddress": "10.0.0.100/24"},
    "lb-2": {"fleetops_address": "10.0.0.22", "keepalived_virtual_ipaddress": "10.0.0.100/24"},
    "mon-1": {"fleetops_address": "10.0.0.31", "monitoring_prometheus_admin_api": True},
    "bk-1": {"fleetops_address": "10.0.0.41"},
}
MEMBERS = {"docker_hosts": ["dh-1", "dh-2"], "load_balancers": ["lb-1", "lb-2"], "monitors": ["mon-1"],
           "backup_hosts": ["bk-1"], "vault_servers": []}


def inventory(names):
    groups = {names[kind]: hosts for kind, hosts in MEMBERS.items()}
    groups["all"] = sorted(HOSTVARS)
    return groups


def plan(host, names=DEFAULT_GROUPS, hostvars=HOSTVARS, textfile="/var/lib/prometheus/node-exporter",
         listen="127.0.0.1:8081"):
    return _plan.compile_plan(host, inventory(names), hostvars, names, textfile, listen)


def fleet(names):
    """What the roles derive from the plan: routes, scrape targets, backup items, VRRP peers."""
    groups = inventory(names)
    out = {}
    for host in HOSTVARS:
        p = plan(host, names)
        backends = filters.mcp_lb_backends(groups[p["groups"]["docker_hosts"]], HOSTVARS)
        out[host] = {
            "kinds": p["kinds"],
            "routes": _fleet.lb_routes(SERVERS, backends),
            "targets": _fleet.scrape_targets(SERVERS, backends),
            "backup": _backup.items(SERVERS, host, p["kinds"], prometheus_url=_plan.prometheus_url(p, HOSTVARS)
                                    if p["prometheus"]["snapshot"] else None),
            "peers": sorted(set(groups[p["groups"]["load_balancers"]]) - {host}),
            "controller": p["members"]["monitors"][0],
            "vip": p["vip"],
            "firewall": _firewall.rules(p, HOSTVARS, ["192.0.2.0/24"], ["198.51.100.0/24"],
                                        _fleet.host_ports(SERVERS, host)),
        }
    return out


def test_renamed_groups_plan_the_same_routes_targets_backups_and_peers():
    default, renamed = fleet(DEFAULT_GROUPS), fleet(RENAMED)
    assert renamed == default
    assert default["lb-1"]["peers"] == ["lb-2"] and default["dh-1"]["kinds"] == ["docker_hosts"]
    assert [i["name"] for i in default["dh-1"]["backup"]] == ["docker-host-config", "volume-notes-notes-data"]
    # Prometheus listens on the monitor's fleet address (issue 14), so the snapshot goes there.
    assert default["mon-1"]["backup"][-1]["prometheus_snapshot"] == "http://10.0.0.31:9090"
    # The firewall sources are the renamed groups' members all the same.
    mcp = next(r for r in default["dh-1"]["firewall"] if r["name"] == "mcp-servers")
    assert mcp["v4"] == ["10.0.0.21/32", "10.0.0.22/32", "10.0.0.31/32"] and mcp["ports"] == [18080, 18081, 18200]
    assert plan("dh-1", RENAMED)["groups"]["docker_hosts"] == "mcp_nodes"


def test_the_roles_group_variables_default_to_the_plans_group_names():
    from ansible.template import Templar, trust_as_template

    wanted = {
        ("nginx_lb", "nginx_lb_backend_group"): "mcp_nodes",
        ("keepalived", "keepalived_peer_group"): "edge",
        ("monitoring", "monitoring_docker_host_group"): "mcp_nodes",
        ("monitoring", "monitoring_load_balancer_group"): "edge",
        ("mcp_failover", "mcp_failover_docker_group"): "mcp_nodes",
        ("mcp_failover", "mcp_failover_lb_group"): "edge",
        ("mcp_failover", "mcp_failover_controllers"): "['lb-1', 'lb-2']",
        ("vault_server", "vault_server_group"): "vaults",
        ("monitoring_agent", "monitoring_agent_textfile_dir"): "/srv/textfiles",
        ("monitoring_agent", "monitoring_agent_nginx_stub_status_url"): "http://127.0.0.1:9181/stub_status",
        ("keepalived", "keepalived_check_url"): "http://127.0.0.1:9181/healthz",
        ("nginx_lb", "nginx_lb_status_listen"): "127.0.0.1:9181",
        ("backup", "backup_prometheus_data_dir"): "/var/lib/prometheus/metrics2",
        ("vault_secrets", "vault_secrets_dir"): "/srv/secrets",
        ("mcp_server", "mcp_server_secrets_dir"): "/srv/secrets",
    }
    # SERVERS' notes server fails over: the plan names a controller only then.
    failing_over = [dict(SERVERS[1], hosts=["dh-1", "dh-2"], failover={"primary": "dh-1", "standby": "dh-2"})]
    hostvars = dict(HOSTVARS, **{"mon-1": dict(HOSTVARS["mon-1"], fleetops_mcp_servers=failing_over)})
    fleetops_plan = _plan.compile_plan("mon-1", inventory(RENAMED), hostvars, RENAMED, "/srv/textfiles/",
                                       "127.0.0.1:9181", "/srv/secrets")
    for (role, name), value in wanted.items():
        defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())
        templar = Templar(variables={"fleetops_plan": fleetops_plan})
        assert str(templar.template(trust_as_template(defaults[name]))) == value, f"{role}: {name}"
    assert fleetops_plan["prometheus"]["snapshot"] is True
    # Where the monitor reaches its own Prometheus: resolved when used (a filter, which this Templar does not
    # load; test_monitoring_binding.py renders it through ansible-playbook), its fleet address by default.
    for role, name in (("backup", "backup_prometheus_url"), ("grafana", "grafana_prometheus_url")):
        defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())
        assert defaults[name] == "{{ fleetops_plan | fleetops.mcp.fleet_prometheus_url(hostvars) }}", role
    assert filters.fleet_prometheus_url(fleetops_plan, hostvars) == "http://10.0.0.31:9090"


def test_only_monitors_with_the_admin_api_take_snapshots_and_the_url_follows_the_listen_address():
    hostvars = dict(HOSTVARS, **{"mon-1": {"monitoring_prometheus_admin_api": "false"},
                                 "lb-1": dict(HOSTVARS["lb-1"], monitoring_prometheus_admin_api=True)})
    assert plan("mon-1", hostvars=hostvars)["prometheus"]["snapshot"] is False
    assert plan("lb-1", hostvars=hostvars)["prometheus"]["snapshot"] is False  # not a monitor
    hostvars["mon-1"] = {"monitoring_prometheus_admin_api": "yes", "monitoring_prometheus_listen_address": "10.0.0.31",
                         "monitoring_prometheus_port": 9999, "monitoring_prometheus_data_dir": "/srv/tsdb"}
    assert plan("mon-1", hostvars=hostvars)["prometheus"] == {"snapshot": True, "listen_address": "10.0.0.31",
                                                              "port": 9999, "scrape_interval": "15s",
                                                              "data_dir": "/srv/tsdb",
                                                              "auth_file": "/etc/prometheus/web-client.auth"}
    assert _plan.prometheus_url(plan("mon-1", hostvars=hostvars), hostvars) == "http://10.0.0.31:9999"
    # The backup role snapshots below the monitor's own data directory, as the plan says.
    items = _backup.items([], "mon-1", ["monitors"], prometheus_url="http://10.0.0.31:9999",
                          prometheus_data_dir=plan("mon-1", hostvars=hostvars)["prometheus"]["data_dir"])
    assert items[-1]["prometheus_data_dir"] == "/srv/tsdb"


def test_the_vip_loses_its_prefix_and_two_different_vips_are_refused():
    assert plan("mon-1")["vip"] == "10.0.0.100"
    assert plan("mon-1", hostvars=dict(HOSTVARS, **{"lb-1": {}, "lb-2": {}}))["vip"] == ""
    split = dict(HOSTVARS, **{"lb-2": {"keepalived_virtual_ipaddress": "10.0.0.101/24"}})
    with pytest.raises(ValueError, match=r"keepalived_virtual_ipaddress\): 10.0.0.100, 10.0.0.101"):
        plan("mon-1", hostvars=split)


def test_a_host_in_no_fleet_group_has_no_kinds_and_missing_groups_have_no_members():
    assert plan("elsewhere")["kinds"] == []
    p = _plan.compile_plan("dh-1", {"docker_hosts": ["dh-1"]}, HOSTVARS, DEFAULT_GROUPS, "/t", "127.0.0.1:1")
    assert p["members"]["load_balancers"] == [] and p["kinds"] == ["docker_hosts"] and p["vip"] == ""


@pytest.mark.parametrize(("groups", "textfile", "listen", "message"), [
    (dict(DEFAULT_GROUPS, edge="edge"), "/t", "127.0.0.1:8081", "fleet_plan_groups has unknown kinds edge"),
    (dict(DEFAULT_GROUPS, monitors="obs-1"), "/t", "127.0.0.1:8081",
     "fleet_plan_groups.monitors must be an inventory group name (letters, digits, _); got 'obs-1'"),
    ({k: v for k, v in DEFAULT_GROUPS.items() if k != "backup_hosts"}, "/t", "127.0.0.1:8081",
     "fleet_plan_groups.backup_hosts must be an inventory group name"),
    (dict(DEFAULT_GROUPS, monitors="docker_hosts"), "/t", "127.0.0.1:8081",
     "fleet_plan_groups gives two kinds the same group: docker_hosts"),
    (["docker_hosts"], "/t", "127.0.0.1:8081", "fleet_plan_groups must be a mapping"),
    (DEFAULT_GROUPS, "var/lib/textfiles", "127.0.0.1:8081",
     "fleet_plan_textfile_dir must be an absolute directory path; got 'var/lib/textfiles'"),
    (DEFAULT_GROUPS, "/", "127.0.0.1:8081", "fleet_plan_textfile_dir must be an absolute directory path"),
    (DEFAULT_GROUPS, "/t", "127.0.0.1:99999", "fleet_plan_status_listen must be address:port with a port 1-65535"),
    (DEFAULT_GROUPS, "/t", "localhost", "fleet_plan_status_listen must be address:port"),
])
def test_bad_settings_are_refused_naming_the_variable(groups, textfile, listen, message):
    assert any(message in e for e in _plan.errors(groups, textfile, listen)), _plan.errors(groups, textfile, listen)
    with pytest.raises(ValueError, match="fleet_plan_"):
        _plan.compile_plan("dh-1", inventory(DEFAULT_GROUPS), HOSTVARS, groups, textfile, listen)


def test_the_default_settings_are_valid_and_match_the_role_defaults():
    defaults = yaml.safe_load((ROOT / "roles" / "fleet_plan" / "defaults" / "main.yml").read_text())
    assert defaults["fleet_plan_groups"] == DEFAULT_GROUPS
    assert _plan.errors(defaults["fleet_plan_groups"], defaults["fleet_plan_textfile_dir"],
                        defaults["fleet_plan_status_listen"], defaults["fleet_plan_secrets_dir"],
                        defaults["fleet_plan_failover_dir"]) == []
    assert plan("dh-1")["secrets_dir"] == defaults["fleet_plan_secrets_dir"] == _plan.SECRETS_DIR
    assert plan("dh-1")["failover_dir"] == defaults["fleet_plan_failover_dir"] == _plan.FAILOVER_DIR


@pytest.mark.parametrize("secrets_dir", ["etc/secrets", "/etc/secrets/", "/etc/my secrets", None])
def test_a_secrets_dir_the_mounts_cannot_use_is_refused_naming_the_variable(secrets_dir):
    problems = _plan.errors(DEFAULT_GROUPS, "/t", "127.0.0.1:8081", secrets_dir)
    assert problems and problems[0].startswith("fleet_plan_secrets_dir must be an absolute directory path"), problems


def test_the_plans_fallbacks_for_prometheus_are_the_monitoring_roles_defaults():
    import yaml

    defaults = yaml.safe_load((ROOT / "roles" / "monitoring" / "defaults" / "main.yml").read_text())
    assert {name: defaults[name] for name in _plan.MONITORING_DEFAULTS} == _plan.MONITORING_DEFAULTS


@pytest.mark.parametrize(("listen", "fleet", "bound", "local"), [
    ("", "10.0.0.5", "10.0.0.5", "10.0.0.5"),  # the default: the host's fleet address
    (None, "10.0.0.5", "10.0.0.5", "10.0.0.5"),
    ("10.0.0.6", "10.0.0.5", "10.0.0.6", "10.0.0.6"),  # an explicit address is kept
    ("0.0.0.0", "10.0.0.5", "0.0.0.0", "127.0.0.1"),  # the opt-out: every address, consumers on loopback
    ("::", "10.0.0.5", "::", "127.0.0.1"),
    ("[::]", "10.0.0.5", "[::]", "127.0.0.1"),
    ("", "2001:db8::5", "2001:db8::5", "2001:db8::5"),
])
def test_one_rule_finds_where_a_hosts_service_listens_and_where_the_host_reaches_it(listen, fleet, bound, local):
    hostvars = {"mon": {"fleetops_address": fleet, "monitoring_prometheus_listen_address": listen}}
    assert _plan.listen_address(listen, fleet) == bound
    assert filters.fleet_listen_address(listen, "mon", hostvars) == bound
    assert _plan.local_address(bound) == local
    assert filters.fleet_local_address(bound) == local
    plan = _plan.compile_plan("mon", {"monitors": ["mon"]}, hostvars,
                              {kind: kind for kind in _plan.KINDS}, "/t", "127.0.0.1:8081")
    url = "http://%s:9090" % ("[%s]" % local if ":" in local else local)
    assert filters.fleet_prometheus_url(plan, hostvars) == url
    # The monitoring role finds its own Prometheus and Alertmanager through the same filters (its Molecule
    # runs check that it reaches them).
    role_vars = yaml.safe_load((ROOT / "roles" / "monitoring" / "vars" / "main.yml").read_text())
    for name in ("_monitoring_prometheus_local", "_monitoring_alertmanager_local"):
        assert "| fleetops.mcp.fleet_local_address | fleetops.mcp.fleet_endpoint(" in role_vars[name], name
    for name in ("_monitoring_prometheus_listen", "_monitoring_alertmanager_listen"):
        assert "| fleetops.mcp.fleet_listen_address(inventory_hostname, hostvars) }}" in role_vars[name], name


def test_the_fleet_address_follows_facts_learnt_after_the_plan():
    """The plan is compiled without facts (playbooks/plan.yml); the URL is resolved when used."""
    hostvars = {"mon": {"ansible_host": "mon.example"}}
    plan = _plan.compile_plan("mon", {"monitors": ["mon"]}, hostvars,
                              {kind: kind for kind in _plan.KINDS}, "/t", "127.0.0.1:8081")
    hostvars["mon"]["ansible_facts"] = {"default_ipv4": {"address": "192.0.2.7"}}
    assert filters.fleet_prometheus_url(plan, hostvars) == "http://192.0.2.7:9090"


@pytest.mark.parametrize(("address", "port", "out"), [("10.0.0.5", 9090, "10.0.0.5:9090"),
                                                      ("2001:db8::5", 9100, "[2001:db8::5]:9100"),
                                                      ("::", 9093, "[::]:9093"), ("[::1]", 3000, "[::1]:3000")])
def test_endpoints_put_ipv6_in_brackets(address, port, out):
    assert filters.fleet_endpoint(address, port) == out


FACTS = {"all_ipv4_addresses": ["10.0.0.5", "172.17.0.1"], "all_ipv6_addresses": ["2001:db8::5"]}


@pytest.mark.parametrize(("hostvars", "value"), [
    ({"fleetops_address": "10.0.0.5"}, ""),
    ({"ansible_facts": dict(FACTS, default_ipv4={"address": "10.0.0.5"})}, ""),  # no fleetops_address: the default IPv4
    ({"fleetops_address": "2001:db8::5"}, ""),
    ({"fleetops_address": "203.0.113.9"}, "0.0.0.0"),  # the opt-out binds whatever the fleet address
    ({"fleetops_address": "203.0.113.9"}, "::"),
    ({"fleetops_address": "203.0.113.9"}, "127.0.0.1"),
    ({"fleetops_address": "203.0.113.9"}, "172.17.0.1"),
    ({"fleetops_address": "2001:DB8:0::5"}, ""),  # compared as addresses, not strings
])
def test_an_address_of_the_host_is_accepted(hostvars, value):
    hostvars = {"h": {"ansible_facts": FACTS, **hostvars}}
    assert filters.fleet_listen_errors([{"name": "monitoring_prometheus_listen_address", "value": value}],
                                       "h", hostvars) == []


@pytest.mark.parametrize(("hostvars", "value", "message"), [
    ({"fleetops_address": "203.0.113.9"}, "",  # NAT: where clients reach the host, not one of its addresses
     ("monitoring_prometheus_listen_address is empty, for the host's fleet address, but 203.0.113.9 "
     "(fleetops_address, else the default IPv4) is not an address of this host (NAT?); set fleetops_address to "
     "one of its addresses, or set monitoring_prometheus_listen_address")),
    ({"ansible_host": "mon.example"}, "",
     ("monitoring_prometheus_listen_address is empty, for the host's fleet address, but that is 'mon.example', "
     "not an IP address; set fleetops_address")),
    ({"fleetops_address": "10.0.0.5"}, "10.0.0.99",
     "monitoring_prometheus_listen_address 10.0.0.99 is not an address of this host; its addresses are"),
    ({"fleetops_address": "10.0.0.5"}, "mon.example",
     "monitoring_prometheus_listen_address must be an IP address (0.0.0.0 or :: for every address); got 'mon.example'"),
])
def test_an_address_the_host_cannot_bind_is_refused_naming_both_variables(hostvars, value, message):
    facts = dict(FACTS, default_ipv4={"address": "10.0.0.5"}) if "fleetops_address" in hostvars else {
        "all_ipv4_addresses": ["10.0.0.5"]}
    hostvars = {"h": {"ansible_facts": facts, **hostvars}}
    problems = filters.fleet_listen_errors([{"name": "monitoring_prometheus_listen_address", "value": value}],
                                           "h", hostvars)
    assert len(problems) == 1 and problems[0].startswith(message), problems


def test_without_facts_the_hosts_addresses_are_not_checked():
    listens = [{"name": "grafana_http_address", "value": ""}]
    assert filters.fleet_listen_errors(listens, "h", {"h": {"fleetops_address": "203.0.113.9"}}) == []


@pytest.mark.parametrize("failover_dir", ["etc/nginx/failover", "/etc/nginx/failover/", "/etc/my failover", None])
def test_a_failover_dir_nginx_cannot_include_is_refused_naming_the_variable(failover_dir):
    problems = _plan.errors(DEFAULT_GROUPS, "/t", "127.0.0.1:8081", _plan.SECRETS_DIR, failover_dir)
    assert problems and problems[0].startswith("fleet_plan_failover_dir must be an absolute directory path"), problems


def test_nginx_lb_and_the_failover_agent_take_the_include_directory_from_the_plan():
    from ansible.template import Templar, trust_as_template

    fleetops_plan = _plan.compile_plan("lb-1", inventory(DEFAULT_GROUPS), HOSTVARS, DEFAULT_GROUPS, "/t",
                                       "127.0.0.1:8081", _plan.SECRETS_DIR, "/srv/failover")
    templar = Templar(variables={"fleetops_plan": fleetops_plan})
    for role, name in (("nginx_lb", "_nginx_lb_failover_dir"), ("mcp_failover", "_mcp_failover_include_dir")):
        role_vars = yaml.safe_load((ROOT / "roles" / role / "vars" / "main.yml").read_text())
        assert templar.template(trust_as_template(role_vars[name])) == "/srv/failover", role


def test_the_failover_controllers_are_the_load_balancers_sharing_a_vip_unless_the_inventory_names_them():
    members = {"load_balancers": ["lb-1", "lb-2"], "monitors": ["mon-1", "mon-2"]}
    assert _plan.failover_controllers({}, members, ["10.0.0.100"]) == ["lb-1", "lb-2"]
    # No shared VIP (or one load balancer): the first monitor, as before.
    assert _plan.failover_controllers({}, members, []) == ["mon-1"]
    assert _plan.failover_controllers({}, dict(members, load_balancers=["lb-1"]), ["10.0.0.100"]) == ["mon-1"]
    # The inventory's choice wins: one host, or a list.
    assert _plan.failover_controllers({"mcp_failover_controller": " bk-1 "}, members, ["10.0.0.100"]) == ["bk-1"]
    assert _plan.failover_controllers({"mcp_failover_controllers": ["lb-2", "lb-1"], "mcp_failover_controller": "x"},
                                      members, []) == ["lb-2", "lb-1"]
    assert _plan.failover_controllers({}, dict(members, monitors=[]), []) == []
