"""Load balancer routes: tags every load balancer computes alike, stable as the fleet changes."""

from __future__ import annotations

import pytest

from ansible_collections.fleetops.mcp.plugins.module_utils import _fleet

SERVERS = [
    {"name": "reference", "image": "r:1", "host_port": 18080, "replicas": 2},
    {"name": "time-tools", "image": "t:1", "host_port": 18100, "transport": "stdio",
     "stdio_command": ["mcp-server-time"], "stateless": True, "hosts": ["dh-2"]},
]
BACKENDS = [{"host": "dh-1", "address": "10.0.0.11"}, {"host": "dh-2", "address": "10.0.0.12"}]


def test_routes_list_every_replica_on_every_host():
    reference, time_tools = _fleet.lb_routes(SERVERS, BACKENDS)
    assert reference["public_path"] == "/mcp/reference" and reference["backend_path"] == "/mcp"
    assert reference["upstream"] == "mcp_reference" and reference["stateless"] is False
    assert [(m["address"], m["port"]) for m in reference["members"]] == [
        ("10.0.0.11", 18080), ("10.0.0.11", 18081), ("10.0.0.12", 18080), ("10.0.0.12", 18081)]
    assert [m["container"] for m in reference["members"]][:2] == ["mcp-reference-1", "mcp-reference-2"]
    # hosts: restricts the members; names become safe nginx variable names.
    assert [m["host"] for m in time_tools["members"]] == ["dh-2"]
    assert time_tools["var"] == "time_tools" and time_tools["upstream"] == "mcp_time_tools"


def test_tags_are_deterministic_unique_and_name_their_upstream():
    first = _fleet.lb_routes(SERVERS, BACKENDS)
    second = _fleet.lb_routes(SERVERS, list(BACKENDS))  # another load balancer, same inventory
    assert first == second
    tags = [m["tag"] for r in first for m in r["members"]]
    assert len(set(tags)) == len(tags)
    assert all(t.startswith("b") and len(t) == 11 for t in tags)
    member = first[0]["members"][0]
    assert member["upstream"] == "mcp_reference_" + member["tag"]
    assert member["tag"] == _fleet.backend_tag("10.0.0.11", 18080)


def test_adding_a_backend_keeps_existing_tags():
    before = {(m["address"], m["port"]): m["tag"] for m in _fleet.lb_routes(SERVERS, BACKENDS)[0]["members"]}
    grown = BACKENDS + [{"host": "dh-3", "address": "10.0.0.13"}]
    after = {(m["address"], m["port"]): m["tag"] for m in _fleet.lb_routes(SERVERS, grown)[0]["members"]}
    assert {k: after[k] for k in before} == before
    assert len(after) == len(before) + 2


@pytest.mark.parametrize(
    ("servers", "backends", "message"),
    [
        (SERVERS, [{"host": "dh-1"}], "backends must be a list of {host, address}"),
        (SERVERS, "dh-1", "backends must be a list"),
        ([dict(SERVERS[1], hosts=["nowhere"])], BACKENDS, "mcp server 'time-tools': no Docker host in the backends runs it"),
        (SERVERS, [{"host": "a", "address": "10.0.0.1"}, {"host": "b", "address": "10.0.0.1"}],
         "mcp server 'reference': two backends share an address and port"),
        ([dict(SERVERS[0], transport="grpc")], BACKENDS, "transport 'grpc'"),
    ],
)
def test_bad_inputs_are_named(servers, backends, message):
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        _fleet.lb_routes(servers, backends)


def test_the_gateway_serves_every_server_but_legacy_sse_ones_and_probes_each_at_its_public_path():
    servers = SERVERS + [{"name": "legacy", "image": "l:1", "host_port": 18400, "transport": "sse"}]
    assert [r["name"] for r in _fleet.lb_routes(servers, BACKENDS)] == ["reference", "time-tools", "legacy"]
    assert [r["name"] for r in _fleet.gateway_routes(servers, BACKENDS)] == ["reference", "time-tools"]
    assert _fleet.probe_targets(servers, BACKENDS, "https://10.0.0.100/") == [
        {"server": "reference", "url": "https://10.0.0.100/mcp/reference"},
        {"server": "time-tools", "url": "https://10.0.0.100/mcp/time-tools"}]
    with pytest.raises(ValueError, match="no Docker host in the backends runs it"):
        _fleet.probe_targets(servers, [{"host": "dh-9", "address": "10.0.0.19"}], "https://x")
