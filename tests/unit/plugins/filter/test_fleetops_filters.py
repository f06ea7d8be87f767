"""fleetops.mcp filters."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.fleetops.mcp.plugins.filter.fleetops import (
    FilterModule,
    changed_keys,
    docker_ulimits,
    docker_volume_spec,
    mcp_fleet,
    mcp_fleet_errors,
    mcp_host_ports,
    mcp_lb_backends,
    mcp_lb_routes,
)


def test_filters_are_registered():
    assert set(FilterModule().filters()) == {
        "changed_keys", "docker_ulimits", "docker_volume_spec", "mcp_fleet", "mcp_fleet_errors", "mcp_host_ports",
        "mcp_lb_backends", "mcp_lb_routes", "mcp_lb_client_errors", "mcp_lb_clients", "mcp_scrape_targets", "mcp_backup_items",
        "mcp_failover_active", "mcp_failover_routes", "mcp_failover_agent_config", "mcp_failover_daemon_config",
        "fleet_firewall_errors", "fleet_firewall_rules", "fleet_firewall_lockout",
        "fleet_address", "fleet_local_address", "fleet_plan", "fleet_plan_errors", "mcp_gateway_routes",
        "mcp_probe_targets", "mcp_lb_affinity", "fleet_listen_address", "fleet_endpoint", "fleet_listen_errors",
        "fleet_prometheus_url", "mcp_lb_oauth", "mcp_lb_oauth_errors",
    }


def test_the_affinity_filter_turns_a_short_key_into_a_filter_error_without_the_key():
    filters = FilterModule().filters()
    routes = filters["mcp_lb_routes"]([{"name": "r", "image": "r:1", "host_port": 18080}],
                                      [{"host": "dh-1", "address": "10.0.0.11"}])
    with pytest.raises(AnsibleFilterError, match="nginx_lb_affinity_key must be a string of at least 32") as info:
        filters["mcp_lb_affinity"](routes, ["agent"], "secret-but-short")
    assert "secret-but-short" not in str(info.value)
    model = filters["mcp_lb_affinity"](routes, ["agent"], "k" * 32)
    assert [p["client"] for p in model["pins"]["r"]] == ["agent"]


def test_failover_filters_turn_bad_input_into_filter_errors():
    filters = FilterModule().filters()
    servers = [{"name": "memory", "image": "m:1", "host_port": 18300,
                "failover": {"primary": "dh-1", "standby": "dh-2"}}]
    with pytest.raises(AnsibleFilterError, match="cannot work out the failover routes: .*failover host dh-2"):
        filters["mcp_failover_routes"](servers, [{"host": "dh-1", "address": "10.0.0.1"}])
    with pytest.raises(AnsibleFilterError, match="cannot work out the failover daemon configuration"):
        filters["mcp_failover_daemon_config"](servers, [], [], {})
    assert filters["mcp_failover_active"](servers, None) == {"memory": "dh-1"}


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ({}, {}, []),
        (None, {"a": 1}, ["a"]),
        ({"a": 1, "b": {"x": 1}}, {"a": 1, "b": {"x": 1}}, []),
        ({"a": 1, "b": {"x": 1}}, {"a": 1, "b": {"x": 2}}, ["b"]),
        ({"a": 1, "gone": True}, {"a": 1, "new": False}, ["gone", "new"]),
        ({"z": 1, "a": 1}, {"z": 2, "a": 2}, ["a", "z"]),
    ],
)
def test_changed_keys(old, new, expected):
    assert changed_keys(old, new) == expected


def test_changed_keys_rejects_non_dicts():
    with pytest.raises(AnsibleFilterError, match="two dictionaries"):
        changed_keys(["a"], {})


def test_docker_ulimits_converts_to_daemon_json_form():
    assert docker_ulimits({"nofile": {"soft": "1024", "hard": 2048}}) == {
        "nofile": {"Name": "nofile", "Soft": 1024, "Hard": 2048}
    }
    assert docker_ulimits(None) == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"nofile": {"soft": 1}}, "exactly the keys soft and hard"),
        ({"nofile": {"soft": "lots", "hard": 2}}, "whole numbers"),
        ({"nofile": 5}, "exactly the keys soft and hard"),
        ("nofile", "expects a dictionary"),
    ],
)
def test_docker_ulimits_rejects_bad_shapes(value, message):
    with pytest.raises(AnsibleFilterError, match=message):
        docker_ulimits(value)


def test_docker_volume_spec():
    assert docker_volume_spec({"source": "data", "target": "/data"}) == "data:/data:ro"
    assert docker_volume_spec({"source": "/srv/x", "target": "/x", "writable": True}) == "/srv/x:/x:rw"
    with pytest.raises(AnsibleFilterError, match="source and target"):
        docker_volume_spec({"target": "/x"})


def test_fleet_filters_wrap_the_model():
    servers = [{"name": "a", "image": "a:1", "host_port": 9000, "replicas": 2}]
    assert mcp_fleet_errors(servers) == []
    assert mcp_fleet(servers)[0]["containers"][1]["name"] == "mcp-a-2"
    assert mcp_host_ports(servers) == [9000, 9001]
    with pytest.raises(AnsibleFilterError, match="invalid MCP server declaration: mcp server 'a': transport"):
        mcp_fleet([dict(servers[0], transport="grpc")])


def test_lb_routes_filter_names_the_problem():
    servers = [{"name": "a", "image": "a:1", "host_port": 9000}]
    assert mcp_lb_routes(servers, [{"host": "h", "address": "10.1.1.1"}])[0]["members"][0]["port"] == 9000
    with pytest.raises(AnsibleFilterError, match="cannot route the MCP servers: backends must be"):
        mcp_lb_routes(servers, [{"host": "h"}])


def test_lb_backends_prefer_explicit_address_then_facts():
    hostvars = {
        "a": {"fleetops_address": "10.9.9.9", "ansible_facts": {"default_ipv4": {"address": "10.0.0.1"}}},
        "b": {"ansible_facts": {"default_ipv4": {"address": "10.0.0.2"}}, "ansible_host": "b.example"},
        "c": {"ansible_host": "c.example"},
        "d": {},
    }
    assert mcp_lb_backends(["a", "b", "c", "d"], hostvars) == [
        {"host": "a", "address": "10.9.9.9"}, {"host": "b", "address": "10.0.0.2"},
        {"host": "c", "address": "c.example"}, {"host": "d", "address": "d"}]


def test_lb_client_filters_name_the_client_and_raise_filter_errors():
    filters = FilterModule().filters()
    assert filters["mcp_lb_client_errors"]([{"name": "a"}]) == ["client 'a': set exactly one of token_sha256 and token"]
    with pytest.raises(AnsibleFilterError, match="invalid load balancer clients: client 'a'"):
        filters["mcp_lb_clients"]([{"name": "a"}])
    model = filters["mcp_lb_clients"]([{"name": "a", "token": "sYoVFw0tePR6eehhy3IQmG54LGp3Um5n"}])
    assert model["clients"][0]["rate_per_minute"] == 50 and model["conn_zones"][0]["max_connections"] == 20


def test_fleet_address_is_the_collections_one_address_rule():
    from ansible_collections.fleetops.mcp.plugins.filter.fleetops import fleet_address

    hostvars = {"a": {"fleetops_address": "10.0.0.1", "ansible_facts": {"default_ipv4": {"address": "10.9.9.9"}}},
                "b": {"ansible_facts": {"default_ipv4": {"address": "10.0.0.2"}}, "ansible_host": "b.example"},
                "c": {"ansible_host": "c.example"}, "d": {}}
    assert [fleet_address(h, hostvars) for h in "abcd"] == ["10.0.0.1", "10.0.0.2", "c.example", "d"]
    assert mcp_lb_backends(["b", "d"], hostvars) == [{"host": "b", "address": "10.0.0.2"}, {"host": "d", "address": "d"}]
