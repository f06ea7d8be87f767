"""Failover configuration from the fleet: the route texts the load balancers and the agent share, the
recorded active, the agent's and the daemon's configuration."""

from __future__ import annotations

import pytest

from ansible_collections.fleetops.mcp.plugins.module_utils import _failover

SERVERS = [
    {"name": "memory", "image": "fleetops/mcp-memory:1", "host_port": 18300, "transport": "stdio",
     "stdio_command": ["mcp-server-memory"], "stop_grace_period": 7,
     "failover": {"primary": "dh-1", "standby": "dh-2", "sync_interval": 10},
     "volumes": [{"source": "memory-data", "target": "/data", "writable": True},
                 {"source": "/srv/ro", "target": "/ro"}]},
    {"name": "reference", "image": "fleetops/mcp-reference:1", "host_port": 18080, "replicas": 2},
]
BACKENDS = [{"host": "dh-1", "address": "10.0.0.11"}, {"host": "dh-2", "address": "10.0.0.12"}]
LBS = [{"host": "lb-1", "address": "10.0.0.21"}]


def test_route_texts_name_one_member_per_host():
    routes = _failover.route_files(SERVERS, BACKENDS, 2, 5)
    assert list(routes) == ["memory"]
    assert "server 10.0.0.12:18300 max_fails=2 fail_timeout=5s;  # dh-2 mcp-memory-1\n" in routes["memory"]["dh-2"]
    assert "10.0.0.11" not in routes["memory"]["dh-2"]


def test_the_active_is_the_recorded_one_only_for_the_declared_pair():
    assert _failover.active_hosts(SERVERS) == {"memory": "dh-1"}
    state = {"servers": {"memory": {"active": "dh-2", "standby": "dh-1"}}}
    assert _failover.active_hosts(SERVERS, state) == {"memory": "dh-2"}
    stale = {"servers": {"memory": {"active": "dh-9", "standby": "dh-1"}}}
    assert _failover.active_hosts(SERVERS, stale) == {"memory": "dh-1"}


def test_with_two_controllers_the_newest_record_names_the_active():
    took_over = {"servers": {"memory": {"active": "dh-2", "standby": "dh-1", "generation": 3, "claimed": 4}}}
    stood_by = {"servers": {"memory": {"active": "dh-1", "standby": "dh-2", "generation": 1, "claimed": 1}}}
    assert _failover.active_hosts(SERVERS, [stood_by, took_over]) == {"memory": "dh-2"}
    assert _failover.active_hosts(SERVERS, [took_over, stood_by, None]) == {"memory": "dh-2"}
    assert _failover.active_hosts(SERVERS, [None, {}]) == {"memory": "dh-1"}


@pytest.mark.parametrize(("bind", "url"), [("0.0.0.0", "http://127.0.0.1:18300/mcp"),
                                           ("::", "http://127.0.0.1:18300/mcp"),
                                           ("192.0.2.7", "http://192.0.2.7:18300/mcp"),
                                           ("fd00::12", "http://[fd00::12]:18300/mcp")])
def test_the_agent_probes_where_the_replica_is_published(bind, url):
    servers = [dict(SERVERS[0], bind_address=bind)]
    assert _failover.agent_config(servers, "dh-1", BACKENDS)["servers"]["memory"]["probe_url"] == url


def test_an_agent_host_without_an_address_is_refused():
    with pytest.raises(ValueError, match="failover host dh-1 has no address"):
        _failover.agent_config(SERVERS, "dh-1", BACKENDS[1:])


def test_agent_config_lists_the_peer_and_the_writable_volumes_only():
    config = _failover.agent_config(SERVERS, "dh-2", BACKENDS, ssh={"user": "root"})
    memory = config["servers"]["memory"]
    assert memory["peer"] == "10.0.0.11" and memory["peer_host"] == "dh-1"
    # The replica is published on the host's own fleet address (CIS Docker 5.13), so the agent probes it there.
    assert memory["probe_url"] == "http://10.0.0.12:18300/mcp" and memory["stop_timeout"] == 7
    # The promote's first-session budget: mcp_failover_session_open_timeout, 10 s unless set.
    assert memory["session_open_timeout"] == 10
    slow = _failover.agent_config(SERVERS, "dh-2", BACKENDS, session_open_timeout="30")
    assert slow["servers"]["memory"]["session_open_timeout"] == 30
    assert memory["volumes"] == [{"source": "/var/lib/docker/volumes/memory-data/_data", "replica": "memory/memory-data"}]
    assert _failover.agent_config(SERVERS, "dh-3", BACKENDS)["servers"] == {}
    moved = _failover.agent_config(SERVERS, "dh-2", BACKENDS, docker_data_root="/srv/docker")
    assert moved["servers"]["memory"]["volumes"] == [
        {"source": "/srv/docker/volumes/memory-data/_data", "replica": "memory/memory-data"}]
    with pytest.raises(ValueError, match="failover host dh-1 has no address"):
        _failover.agent_config(SERVERS, "dh-2", BACKENDS[1:])


def test_each_server_pushes_with_its_own_key_confined_to_its_own_replica_root():
    two = SERVERS + [{"name": "notes", "image": "fleetops/mcp-notes:1", "host_port": 18301, "transport": "stdio",
                      "stdio_command": ["mcp-notes"], "failover": {"primary": "dh-2", "standby": "dh-1", "sync_interval": 30},
                      "volumes": [{"source": "notes-data", "target": "/data", "writable": True}]}]
    config = _failover.agent_config(two, "dh-2", BACKENDS, ssh={"key": "/root/.ssh/fleetops_failover_sync"})
    memory, notes = config["servers"]["memory"], config["servers"]["notes"]
    assert (memory["sync_key"], notes["sync_key"]) == ("/root/.ssh/fleetops_failover_sync_memory",
                                                       "/root/.ssh/fleetops_failover_sync_notes")
    # The peer accepts each key only from this host (dh-2), with rrsync confined to that server's root.
    assert memory["sync_key_options"] == (
        'command="/usr/bin/rrsync -wo -munge /var/lib/fleetops/failover/replica/memory",restrict,from="10.0.0.12"')
    assert notes["sync_key_options"] == (
        'command="/usr/bin/rrsync -wo -munge /var/lib/fleetops/failover/replica/notes",restrict,from="10.0.0.12"')
    unrestricted = _failover.agent_config(two, "dh-2", BACKENDS, ssh={"key": "/k", "restrict_from": False})
    assert unrestricted["servers"]["notes"]["sync_key_options"] == (
        'command="/usr/bin/rrsync -wo -munge /var/lib/fleetops/failover/replica/notes",restrict')
    with pytest.raises(ValueError, match="failover host dh-2 has no address"):
        _failover.agent_config(two, "dh-2", BACKENDS[:1] + [{"host": "dh-9", "address": "10.0.0.19"}],
                               ssh={"key": "/k"})


def test_daemon_config_probes_each_host_directly_and_knows_every_agent():
    config = _failover.daemon_config(SERVERS, BACKENDS, LBS, {"interval": 2})
    assert config["interval"] == 2 and config["load_balancers"] == ["lb-1"]
    assert config["hosts"] == {"lb-1": "10.0.0.21", "dh-1": "10.0.0.11", "dh-2": "10.0.0.12"}
    assert config["servers"][0]["probe_urls"] == {"dh-1": "http://10.0.0.11:18300/mcp", "dh-2": "http://10.0.0.12:18300/mcp"}
    with pytest.raises(ValueError, match="failover host dh-2 is not a Docker host"):
        _failover.daemon_config(SERVERS, BACKENDS[:1], LBS, {})
