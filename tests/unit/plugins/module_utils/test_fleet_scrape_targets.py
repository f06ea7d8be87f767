"""Scrape targets for the MCP servers' own /metrics: one per replica, none for bridged stdio servers."""

from __future__ import annotations

import pytest

from ansible_collections.fleetops.mcp.plugins.module_utils import _fleet

BACKENDS = [{"host": "dh-1", "address": "10.0.0.11"}, {"host": "dh-2", "address": "10.0.0.12"}]


def test_every_replica_on_every_host_is_a_target():
    servers = [{"name": "reference", "image": "r:1", "host_port": 18080, "replicas": 2}]
    targets = _fleet.scrape_targets(servers, BACKENDS)
    assert [(t["host"], t["target"], t["replica"]) for t in targets] == [
        ("dh-1", "10.0.0.11:18080", 1), ("dh-1", "10.0.0.11:18081", 2),
        ("dh-2", "10.0.0.12:18080", 1), ("dh-2", "10.0.0.12:18081", 2)]
    assert {t["metrics_path"] for t in targets} == {"/metrics"}
    assert targets[1]["container"] == "mcp-reference-2" and targets[1]["server"] == "reference"


def test_stdio_servers_have_none_unless_declared_and_empty_turns_it_off():
    servers = [
        {"name": "time", "image": "t:1", "host_port": 18100, "transport": "stdio", "stdio_command": ["x"]},
        {"name": "bridged", "image": "b:1", "host_port": 18200, "transport": "stdio", "stdio_command": ["x"],
         "metrics_path": "/bridge/metrics", "hosts": ["dh-2"]},
        {"name": "quiet", "image": "q:1", "host_port": 18300, "metrics_path": ""},
    ]
    targets = _fleet.scrape_targets(servers, BACKENDS)
    assert [(t["server"], t["target"], t["metrics_path"]) for t in targets] == [
        ("bridged", "10.0.0.12:18200", "/bridge/metrics")]


@pytest.mark.parametrize("value", ["metrics", 5, ["/metrics"]])
def test_a_bad_metrics_path_is_named(value):
    servers = [{"name": "reference", "image": "r:1", "host_port": 18080, "metrics_path": value}]
    errors = _fleet.validate(servers)
    assert any("reference" in e and "metrics_path" in e for e in errors), errors
    with pytest.raises(ValueError, match="metrics_path"):
        _fleet.scrape_targets(servers, BACKENDS)
