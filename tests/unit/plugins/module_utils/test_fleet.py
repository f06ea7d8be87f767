"""The fleet model: every class of bad MCP server declaration is named precisely."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.fleetops.mcp.plugins.module_utils import _fleet

GOOD = [
    {"name": "reference", "image": "fleetops/mcp-reference:1.0.0", "host_port": 18080, "replicas": 2},
    {"name": "time", "image": "fleetops/mcp-time:1.0.0", "transport": "stdio", "host_port": 18090,
     "stdio_command": ["mcp-server-time"]},
]


def with_change(index, **change):
    servers = copy.deepcopy(GOOD)
    servers[index].update(change)
    return servers


def test_good_fleet_has_no_errors():
    assert _fleet.validate(GOOD) == []
    assert _fleet.validate(None) == []


def test_normalize_fills_defaults_and_lists_containers():
    fleet = _fleet.normalize(GOOD)
    ref, time = fleet
    assert ref["transport"] == "streamable-http" and ref["path"] == "/mcp"
    assert ref["resources"] == {"memory": "256m", "cpus": 1.0, "pids": 256}
    assert [c["name"] for c in ref["containers"]] == ["mcp-reference-1", "mcp-reference-2"]
    assert [c["host_port"] for c in ref["containers"]] == [18080, 18081]
    assert time["user"] == "10001:10001"
    assert _fleet.host_ports(GOOD) == [18080, 18081, 18090]


def test_partial_nested_values_merge_with_defaults():
    fleet = _fleet.normalize(with_change(0, resources={"memory": "1g"}, healthcheck={"retries": 5}))
    assert fleet[0]["resources"] == {"memory": "1g", "cpus": 1.0, "pids": 256}
    assert fleet[0]["healthcheck"]["retries"] == 5 and fleet[0]["healthcheck"]["path"] == "/health"


def test_hosts_restrict_where_a_server_runs():
    servers = with_change(1, hosts=["dh-1"])
    assert [s["name"] for s in _fleet.normalize(servers, "dh-2")] == ["reference"]
    assert _fleet.host_ports(servers, "dh-1") == [18080, 18081, 18090]


@pytest.mark.parametrize(
    ("servers", "expected"),
    [
        (with_change(1, name="reference"), "mcp server 'reference': name is declared twice (entries 1 and 2)"),
        (with_change(1, host_port=18081),
         "mcp server 'time': host_port 18081-18081 overlaps mcp server 'reference' (18080-18081)"),
        (with_change(0, resources={"memory": "lots"}), "mcp server 'reference': resources.memory 'lots' is not a size"),
        (with_change(0, transport="grpc"), "mcp server 'reference': transport 'grpc' is not one of streamable-http, sse, stdio"),
        (with_change(0, image="fleetops/mcp-reference"),
         "mcp server 'reference': image 'fleetops/mcp-reference' has no tag or digest"),
        (with_change(0, image="Not An Image:1"), "mcp server 'reference': image 'Not An Image:1' is not a valid image reference"),
        (with_change(0, port=70000), "mcp server 'reference': port 70000 must be a whole number from 1 to 65535"),
        (with_change(0, host_port="x"), "mcp server 'reference': host_port 'x' must be a whole number"),
        (with_change(0, replicas=0), "mcp server 'reference': replicas 0 must be a whole number from 1 to 64"),
        (with_change(0, user="root"), "mcp server 'reference': user 'root' is root"),
        (with_change(0, user="0:0"), "mcp server 'reference': user '0:0' is root"),
        (with_change(0, user="00"), "mcp server 'reference': user '00' is root"),
        (with_change(0, user="+0"), "mcp server 'reference': user '+0' is root"),
        (with_change(0, user="0000:0"), "mcp server 'reference': user '0000:0' is root"),
        (with_change(0, user="mcp", secrets=["token"]), "user 'mcp' must be a numeric uid[:gid] when secrets are mounted"),
        (with_change(1, stdio_command=None), "mcp server 'time': stdio_command is required with transport stdio"),
        (with_change(0, image_source="build"), "mcp server 'reference': build_context is required"),
        (with_change(0, image_source="ftp"), "mcp server 'reference': image_source 'ftp' is not one of"),
        (with_change(0, env={"BAD-NAME": "1"}), "mcp server 'reference': env name 'BAD-NAME' is not a valid variable name"),
        (with_change(0, secrets=["../etc/passwd"]), "mcp server 'reference': secret name '../etc/passwd'"),
        (with_change(0, volumes=[{"source": "data", "target": "relative"}]),
         "volumes[0].target 'relative' must be an absolute path"),
        (with_change(0, volumes=[{"target": "/data"}]), "mcp server 'reference': volumes[0] needs source and target"),
        (with_change(0, healthcheck={"interval": "often"}), "healthcheck.interval 'often' is not a duration"),
        (with_change(0, resources={"cpus": "fast"}), "resources.cpus 'fast' must be a number above 0"),
        (with_change(0, stop_grace_period=0), "stop_grace_period 0 must be whole seconds"),
        (with_change(1, max_sessions=0), "mcp server 'time': max_sessions 0 must be a whole number from 1 to 1024"),
        (with_change(1, max_sessions="many"), "mcp server 'time': max_sessions 'many' must be a whole number"),
        (with_change(0, max_sessions=4), "mcp server 'reference': max_sessions applies to transport stdio only"),
        (with_change(0, colour="blue"), "mcp server 'reference': colour is not a known field"),
        (with_change(0, allowed_origins="https://app.example.com"), "mcp server 'reference': allowed_origins must be a list"),
        (with_change(0, allowed_origins=["*"]), "allowed_origins entry '*' is not an origin"),
        (with_change(0, allowed_origins=["https://app.example.com/mcp"]), "entry 'https://app.example.com/mcp' is not an origin"),
        (with_change(0, allowed_origins=["null"]), "allowed_origins entry 'null' is not an origin"),
        (with_change(0, allowed_origins=["ftp://files.example.com"]), "entry 'ftp://files.example.com' is not an origin"),
        (with_change(0, allowed_origins=['https://a.example" ; return 200']), "is not an origin"),
        (with_change(0, allowed_origins=["https://a.example:70000"]), "entry 'https://a.example:70000' is not an origin"),
        (with_change(0, name="Bad_Name"), "name 'Bad_Name' must be 1-40 lower-case letters"),
        ([{"name": "x", "host_port": 1}], "mcp server 'x': image is required"),
        ([{"name": "x", "image": "a:1"}], "mcp server 'x': host_port is required"),
        (["just-a-string"], "mcp server #1: each server must be a mapping"),
        ({"name": "x"}, "mcp servers must be a list"),
    ],
)
def test_bad_declarations_are_named(servers, expected):
    errors = _fleet.validate(servers)
    assert any(expected in e for e in errors), errors


def test_stdio_servers_get_a_session_cap():
    fleet = {s["name"]: s for s in _fleet.normalize(with_change(1, max_sessions=3))}
    assert fleet["time"]["max_sessions"] == 3
    assert {s["name"]: s["max_sessions"] for s in _fleet.normalize(GOOD)}["time"] == 16


def test_allowed_origins_are_kept_as_browsers_send_them():
    fleet = {s["name"]: s for s in _fleet.normalize(with_change(
        0, allowed_origins=["HTTPS://App.Example.com:443", "http://localhost:6274", "https://app.example.com",
                            "http://[::1]:80"]))}
    assert fleet["reference"]["allowed_origins"] == ["http://[::1]", "http://localhost:6274", "https://app.example.com"]
    assert fleet["time"]["allowed_origins"] == []  # default: no browser origin


def test_port_overlap_only_matters_on_shared_hosts():
    servers = with_change(1, host_port=18081, hosts=["dh-9"])
    servers[0]["hosts"] = ["dh-1"]
    assert _fleet.validate(servers) == []


def test_normalize_refuses_invalid_declarations():
    with pytest.raises(ValueError, match="transport 'grpc'"):
        _fleet.normalize(with_change(0, transport="grpc"))


FAILOVER = {"primary": "dh-1", "standby": "dh-2", "sync_interval": 30}


def test_failover_places_the_server_on_its_two_hosts():
    servers = with_change(0, replicas=1, failover=dict(FAILOVER))
    ref = _fleet.normalize(servers)[0]
    assert ref["hosts"] == ["dh-1", "dh-2"]
    assert ref["failover"] == FAILOVER
    assert [s["name"] for s in _fleet.normalize(servers, "dh-3")] == ["time"]
    paired = _fleet.normalize(with_change(0, replicas=1, failover={"primary": "a", "standby": "b"}))
    assert paired[0]["failover"]["sync_interval"] == 60
    routes = _fleet.lb_routes(servers, [{"host": "dh-1", "address": "10.0.0.1"}, {"host": "dh-2", "address": "10.0.0.2"},
                                         {"host": "dh-3", "address": "10.0.0.3"}])
    assert [m["host"] for m in routes[0]["members"]] == ["dh-1", "dh-2"]
    assert routes[0]["failover"] == FAILOVER and routes[1]["failover"] is None


def test_failover_hosts_must_be_backends():
    servers = with_change(0, replicas=1, failover=dict(FAILOVER))
    with pytest.raises(ValueError, match="failover host dh-2 is not a Docker host in the backends"):
        _fleet.lb_routes(servers, [{"host": "dh-1", "address": "10.0.0.1"}])


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"failover": "dh-1"}, "failover must be a mapping of primary, standby and sync_interval"),
        ({"failover": {"primary": "dh-1"}}, "failover.standby is required"),
        ({"failover": {"primary": "dh-1", "standby": "dh-1"}},
         "failover.primary and failover.standby must be two different hosts"),
        ({"failover": dict(FAILOVER, sync_interval=1)}, "failover.sync_interval 1 must be whole seconds from 5 to 86400"),
        ({"failover": dict(FAILOVER, witness="x")}, "failover.witness is not a known field"),
        ({"failover": dict(FAILOVER), "replicas": 2}, "replicas must be 1 with failover"),
        ({"failover": dict(FAILOVER), "hosts": ["dh-1"]}, "hosts and failover exclude each other"),
        ({"failover": dict(FAILOVER), "transport": "sse"}, "failover needs an HTTP transport"),
    ],
)
def test_bad_failover_declarations_are_named(change, expected):
    errors = _fleet.validate(with_change(0, **dict({"replicas": 1}, **change)))
    assert any(expected in e for e in errors), errors


def test_failover_ports_conflict_on_its_hosts():
    servers = with_change(0, replicas=1, failover=dict(FAILOVER))
    servers[1].update(host_port=18080, hosts=["dh-2"])
    assert any("overlaps" in e for e in _fleet.validate(servers))
    servers[1]["hosts"] = ["dh-3"]
    assert _fleet.validate(servers) == []
