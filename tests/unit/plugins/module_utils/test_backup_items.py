"""Backup items from the inventory: configuration by group, writable volumes made consistent, a TSDB snapshot."""

from __future__ import annotations

import pytest

from ansible_collections.fleetops.mcp.plugins.module_utils import _backup, _fleet

SERVERS = [
    {"name": "notes", "image": "n:1", "host_port": 18200, "replicas": 2, "hosts": ["dh-1"],
     "volumes": [{"source": "notes-data", "target": "/data", "writable": True},
                 {"source": "/srv/readonly", "target": "/ro"}]},
    {"name": "tickets", "image": "t:1", "host_port": 18300, "hosts": ["dh-1"],
     "backup_command": ["tickets-dump", "--to", "/data/dump.sql"],
     "volumes": [{"source": "/srv/tickets", "target": "/data", "writable": True}]},
    {"name": "reference", "image": "r:1", "host_port": 18080},
]


def test_a_docker_host_backs_up_its_config_and_each_writable_volume():
    items = _backup.items(SERVERS, "dh-1", ["docker_hosts"])
    by_name = {i["name"]: i for i in items}
    assert list(by_name) == ["docker-host-config", "volume-notes-notes-data", "volume-tickets-srv-tickets"]
    assert "/etc/fleetops/mcp-servers.json" in by_name["docker-host-config"]["paths"]
    notes = by_name["volume-notes-notes-data"]
    assert notes["paths"] == ["/var/lib/docker/volumes/notes-data/_data"]
    assert notes["hook"] == {"pause": ["mcp-notes-1", "mcp-notes-2"]}
    assert notes["restart"] == {"containers": ["mcp-notes-1", "mcp-notes-2"]}
    tickets = by_name["volume-tickets-srv-tickets"]
    assert tickets["paths"] == ["/srv/tickets"]
    assert tickets["hook"] == {"commands": [["docker", "exec", "mcp-tickets-1", "tickets-dump", "--to", "/data/dump.sql"]]}


def test_named_volumes_are_found_under_the_hosts_own_docker_data_root():
    items = {i["name"]: i for i in _backup.items(SERVERS, "dh-1", ["docker_hosts"], docker_data_root="/srv/docker/")}
    assert items["volume-notes-notes-data"]["paths"] == ["/srv/docker/volumes/notes-data/_data"]
    # A host path is the same whatever the data root.
    assert items["volume-tickets-srv-tickets"]["paths"] == ["/srv/tickets"]
    with pytest.raises(ValueError, match="data root must be an absolute path; got 'srv/docker'"):
        _backup.items(SERVERS, "dh-1", ["docker_hosts"], docker_data_root="srv/docker")


def test_other_hosts_get_their_roles_configuration_and_the_monitor_a_snapshot():
    assert [i["name"] for i in _backup.items(SERVERS, "dh-2", ["docker_hosts"])] == ["docker-host-config"]
    lb = _backup.items(SERVERS, "lb-1", ["load_balancers"], extra_paths=["/etc/ssl/private/mcp.key"])
    assert [i["name"] for i in lb] == ["load-balancer-config", "extra"]
    assert lb[0]["restart"] == {"reload": ["nginx", "keepalived"]} and lb[0]["optional"] is True
    mon = _backup.items(SERVERS, "mon", ["monitors"], prometheus_url="http://127.0.0.1:9090")
    assert mon[-1] == {"name": "prometheus-tsdb", "prometheus_snapshot": "http://127.0.0.1:9090",
                       "prometheus_data_dir": "/var/lib/prometheus/metrics2",
                       # Basic auth credentials, where the monitoring role has written them.
                       "prometheus_auth_file": "/etc/prometheus/web-client.auth",
                       "restart": {"stop": ["prometheus"]}}


def test_a_bad_backup_command_is_named():
    servers = [dict(SERVERS[1], backup_command="tickets-dump")]
    assert any("'tickets'" in e and "backup_command must be a non-empty list of strings" in e for e in _fleet.validate(servers))
    with pytest.raises(ValueError, match="backup_command"):
        _backup.items(servers, "dh-1", ["docker_hosts"])
