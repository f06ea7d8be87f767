"""Behaviour of fleetops.mcp.mcp_server: MCP answered, hardening, bridge, restarts, rollouts."""

from __future__ import annotations

import json
import os
import time

import pytest

from fleetops_testlib import container_ip, docker_inspect, run_playbook, sdk_probe, wait_for_mcp
from fleetops_testlib import container_host as docker_host

HOSTS = ["srv-1", "srv-2"]
# (container, published port, path, expected tool)
REPLICAS = [
    ("mcp-reference-1", 18080, "/mcp", "whoami"),
    ("mcp-reference-2", 18081, "/mcp", "whoami"),
    ("mcp-reference-stateless-1", 18090, "/mcp", "whoami"),
    ("mcp-time-1", 18100, "/mcp", "get_current_time"),
]
# server-everything speaks only the handshake: 2026-07-28 requests are told so (-32022), clients fall back.
HANDSHAKE_ONLY = [("mcp-everything-1", 18110, "/mcp", "trigger-long-running-operation")]


inspect = docker_inspect


def probe(address, port, path, protocol, **call):
    """MCP through the official SDK client (fleetops_testlib.sdk_probe)."""
    return sdk_probe(f"http://{address}:{port}{path}", protocol, **call)


@pytest.mark.parametrize("name", HOSTS)
@pytest.mark.parametrize("protocol", ["handshake", "sessionless"])
@pytest.mark.parametrize(("container", "port", "path", "tool"), REPLICAS, ids=[r[0] for r in REPLICAS])
def test_every_replica_answers_tools_list_over_the_network(name, protocol, container, port, path, tool):
    result = probe(container_ip(name), port, path, protocol)
    assert tool in result["tools"]
    assert result["protocol_version"] == ("2026-07-28" if protocol == "sessionless" else "2025-11-25")


@pytest.mark.parametrize("name", HOSTS)
@pytest.mark.parametrize(("container", "port", "path", "tool"), HANDSHAKE_ONLY, ids=[r[0] for r in HANDSHAKE_ONLY])
def test_a_handshake_only_stdio_server_answers_and_auto_falls_back(name, container, port, path, tool):
    assert tool in probe(container_ip(name), port, path, "handshake")["tools"]
    result = probe(container_ip(name), port, path, "auto")
    assert result["protocol_version"] == "2025-11-25", result


@pytest.mark.parametrize("name", HOSTS)
@pytest.mark.parametrize("protocol", ["handshake", "sessionless"])
def test_third_party_stdio_server_answers_tools_call_through_the_bridge(name, protocol):
    result = probe(container_ip(name), 18100, "/mcp", protocol,
                   call_tool="get_current_time", tool_arguments={"timezone": "Europe/Paris"})
    call = result["tool_result"]
    assert call["isError"] is False
    assert json.loads(call["content"][0]["text"])["timezone"] == "Europe/Paris"


@pytest.mark.parametrize("name", HOSTS)
def test_replicas_are_distinct_instances(name):
    address = container_ip(name)
    seen = {json.dumps(probe(address, port, "/mcp", "handshake", call_tool="whoami")["tool_result"]["content"])
            for port in (18080, 18081)}
    assert len(seen) == 2


@pytest.mark.parametrize("name", HOSTS)
@pytest.mark.parametrize("container", [r[0] for r in REPLICAS])
def test_containers_are_hardened(name, container):
    info = inspect(docker_host(name), container)
    config, host_config = info["Config"], info["HostConfig"]
    assert config["User"] == "10001:10001"
    assert host_config["ReadonlyRootfs"] is True
    assert host_config["CapDrop"] == ["ALL"]
    assert not host_config.get("CapAdd")
    assert "no-new-privileges:true" in host_config["SecurityOpt"]
    assert host_config["Privileged"] is False
    assert host_config["Memory"] > 0 and host_config["MemorySwap"] == host_config["Memory"]
    assert host_config["NanoCpus"] > 0
    assert host_config["PidsLimit"] > 0
    assert host_config["RestartPolicy"]["Name"] == "unless-stopped"
    assert host_config["Init"] is True  # tini reaps orphans (see the monitoring scenario's zombie test)
    assert "/tmp" in host_config["Tmpfs"]
    assert host_config["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "3", "max-size": "10m"}}
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert config["Labels"]["org.fleetops.mcp.managed"] == "true"
    assert info["State"]["Health"]["Status"] in ("healthy", "starting")


@pytest.mark.parametrize("name", HOSTS)
def test_secret_is_a_read_only_file_only_the_container_user_reads(name):
    host = docker_host(name)
    assert host.run("docker exec mcp-reference-stateless-1 cat /run/secrets/api_key").stdout == "demo-api-key-7d1f2c"  # inventories/local secrets.vault.yml
    # Read-only mount, and not readable by another uid inside the container.
    assert host.run("docker exec mcp-reference-stateless-1 sh -c 'echo x > /run/secrets/api_key'").rc != 0
    assert host.run("docker exec -u 10002 mcp-reference-stateless-1 cat /run/secrets/api_key").rc != 0
    # Nor is it in the container's environment or image.
    env = inspect(host, "mcp-reference-stateless-1")["Config"]["Env"]
    assert not any("demo-api-key" in e for e in env)
    secret_dir = host.file("/etc/fleetops/secrets/reference-stateless")
    assert secret_dir.mode == 0o500 and secret_dir.uid == 10001
    assert host.file("/etc/fleetops/secrets/reference-stateless/api_key").mode == 0o400


@pytest.mark.parametrize("name", HOSTS)
def test_archived_image_was_loaded_not_built(name):
    info = inspect(docker_host(name), "mcp-reference-stateless-1")
    assert info["Config"]["Image"] == "fleetops/mcp-reference-archived:1.0.0"
    assert docker_host(name).run(
        "test -f /var/lib/fleetops/mcp/archives/fleetops_mcp-reference-archived_1.0.0.tar").rc == 0


def test_declared_limits_and_labels_reach_the_container():
    info = inspect(docker_host("srv-1"), "mcp-reference-1")
    assert info["HostConfig"]["Memory"] == 128 * 1024 * 1024
    assert info["HostConfig"]["NanoCpus"] == 500_000_000
    assert info["HostConfig"]["PidsLimit"] == 64
    assert info["Config"]["Labels"]["team"] == "platform"
    assert info["Config"]["StopTimeout"] == 10


@pytest.mark.parametrize("name", HOSTS)
def test_processes_in_containers_run_unprivileged(name):
    host = docker_host(name)
    status = host.run("docker exec mcp-reference-1 cat /proc/1/status").stdout
    assert "NoNewPrivs:\t1" in status
    assert "CapEff:\t0000000000000000" in status
    assert host.run("docker exec mcp-reference-1 touch /opt/x").rc != 0  # read-only root


@pytest.mark.parametrize("name", HOSTS)
def test_killed_main_process_comes_back_by_restart_policy(name):
    host = docker_host(name)
    before = inspect(host, "mcp-reference-2")
    assert host.run(f"kill -9 {before['State']['Pid']}").rc == 0
    end = time.monotonic() + 60
    while True:
        after = inspect(host, "mcp-reference-2")
        if after["RestartCount"] > before["RestartCount"] and after["State"]["Running"]:
            break
        assert time.monotonic() < end, "the container did not come back"
        time.sleep(1)
    assert "whoami" in wait_for_mcp(f"http://{container_ip(name)}:18081/mcp")["tools"]


def test_a_container_no_longer_declared_is_removed_and_others_are_left_alone():
    """A container the role labelled as its own but no server declares any more is removed by the next
    run; a container without the label, and the declared ones, are left as they are."""
    host = docker_host("srv-2")
    image = inspect(host, "mcp-reference-1")["Config"]["Image"]
    declared = {name: inspect(host, name)["Id"] for name in ("mcp-reference-1", "mcp-time-1")}
    strays = {"mcp-retired-1": "--label org.fleetops.mcp.managed=true", "not-fleetops-1": ""}
    try:
        for name, label in strays.items():
            host.run(f"docker rm -f {name}")
            created = host.run(f"docker create --name {name} {label} {image}")
            assert created.rc == 0, created.stderr
        result = run_playbook("../../playbooks/mcp_servers.yml", limit="srv-2")
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        assert host.run("docker inspect mcp-retired-1").rc != 0, "the undeclared fleetops container is still there"
        assert host.run("docker inspect not-fleetops-1").rc == 0, "a container fleetops does not manage was removed"
        assert {name: inspect(host, name)["Id"] for name in declared} == declared
    finally:
        host.run("docker rm -f mcp-retired-1 not-fleetops-1")


@pytest.mark.parametrize(
    ("fleet", "message"),
    [
        ([{"name": "a", "image": "x:1", "host_port": 1}, {"name": "a", "image": "x:1", "host_port": 2}],
         "mcp server 'a': name is declared twice"),
        ([{"name": "a", "image": "x:1", "host_port": 9000}, {"name": "b", "image": "x:1", "host_port": 9000}],
         "mcp server 'b': host_port 9000-9000 overlaps mcp server 'a'"),
        ([{"name": "a", "image": "x:1", "host_port": 9000, "resources": {"memory": "lots"}}],
         "mcp server 'a': resources.memory 'lots' is not a size"),
        ([{"name": "a", "image": "x:1", "host_port": 9000, "transport": "carrier-pigeon"}],
         "mcp server 'a': transport 'carrier-pigeon' is not one of"),
        ([{"name": "a", "image": "x:1", "host_port": 9000, "volumes": [{"source": "/var/run/docker.sock", "target": "/s"}]}],
         "mcp server 'a': volumes[0].source '/var/run/docker.sock' is a system directory or the engine's socket"),
        ([{"name": "a", "image": "x:1", "host_port": 9000, "path": "/mcp;return 200"}],
         "mcp server 'a': path '/mcp;return 200' must start with / and hold only letters, digits and - . _ ~ /"),
        ([{"name": "a", "image": "x:1", "host_port": 9000, "failover": {"primary": "srv-1", "standby": "lb-9"}}],
         "mcp server 'a': failover.standby names 'lb-9', which is not a Docker host (the docker_hosts group)"),
    ],
    ids=["duplicate-name", "port-clash", "memory-lots", "unknown-transport", "docker-socket", "path-injection",
         "failover-stranger"],
)
def test_bad_fleet_fails_first_naming_server_and_field(fleet, message):
    result = run_playbook("bad_input.yml", extra_vars={"fleetops_mcp_servers": fleet})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output, output
    # It failed in the first task: nothing was deployed or changed.
    assert "changed=0" in output and "Check the MCP server declarations" in output


@pytest.mark.parametrize(
    ("extra_vars", "message"),
    [
        ({"mcp_server_only": ["nope"]}, "mcp_server_only names nope, which no entry of mcp_server_servers declares"),
        ({"mcp_server_log_max_size": "lots"}, "mcp_server_log_max_size must be a whole number followed by k, m or g"),
        ({"mcp_server_preload_images": [{"name": "no-tag"}]}, "mcp_server_preload_images entries need name (repository:tag) and archive"),
        ({"mcp_server_probe_retries": 0}, "mcp_server_probe_retries, mcp_server_probe_delay, mcp_server_log_max_file and "
                                          "mcp_server_stdio_session_timeout must be at least 1"),
        ({"mcp_server_stdio_session_timeout": 0}, "mcp_server_probe_retries, mcp_server_probe_delay, mcp_server_log_max_file and "
                                                  "mcp_server_stdio_session_timeout must be at least 1"),
    ],
    ids=["only-undeclared", "log-size-lots", "preload-no-archive", "probe-retries-zero", "session-timeout-zero"],
)
def test_bad_role_settings_fail_naming_the_variable(extra_vars, message):
    before = started_at("srv-1")
    result = run_playbook("bad_input.yml", limit="srv-1", extra_vars=extra_vars)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert message in output, output[-3000:]
    assert started_at("srv-1") == before


def test_rolling_update_without_an_image_is_refused():
    result = run_playbook("../../playbooks/rolling_update.yml", extra_vars={"rollout_server": "reference"})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert ("Set rollout_server to one of reference, reference-stateless, time, everything and rollout_image"
            in output), output[-3000:]


def test_undelivered_secret_fails_naming_server_and_secret():
    fleet = [{"name": "reference", "image": "fleetops/mcp-reference:1.0.0", "host_port": 18080,
              "replicas": 2, "secrets": ["db_password"]}]
    before = started_at("srv-1")
    result = run_playbook("bad_input.yml", limit="srv-1", extra_vars={"fleetops_mcp_servers": fleet})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "mcp server \"reference\": secret \"db_password\" is missing at /etc/fleetops/secrets/reference/db_password" in output, output
    # No container was replaced.
    assert started_at("srv-1") == before


def images_of(name, server="reference"):
    host = docker_host(name)
    return {c: inspect(host, c)["Config"]["Image"] for c in (f"mcp-{server}-1", f"mcp-{server}-2")}


def started_at(name):
    host = docker_host(name)
    return {c: inspect(host, c)["State"]["StartedAt"] for c in ("mcp-reference-1", "mcp-reference-2")}


def test_rolling_update_to_a_new_tag_completes_on_every_host():
    context = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], ".cache", "mcp-images", "reference")
    result = run_playbook("../../playbooks/rolling_update.yml", extra_vars={
        "rollout_server": "reference", "rollout_image": "fleetops/mcp-reference:1.1.0",
        "rollout_build_context": context})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    for name in HOSTS:
        assert set(images_of(name).values()) == {"fleetops/mcp-reference:1.1.0"}
        for port in (18080, 18081):
            assert "whoami" in probe(container_ip(name), port, "/mcp", "handshake")["tools"]
    # Only the rolled-out server was touched.
    assert inspect(docker_host("srv-1"), "mcp-time-1")["Config"]["Image"] == "fleetops/mcp-time:2026.10.19"


def test_rolling_update_to_a_broken_image_stops_with_the_old_version_serving():
    context = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], ".cache", "mcp-images", "broken")
    untouched = started_at("srv-2")
    before = {name: images_of(name) for name in HOSTS}
    result = run_playbook(
        "../../playbooks/rolling_update.yml",
        extra_vars={"rollout_server": "reference", "rollout_image": "fleetops/mcp-reference:broken",
                    "rollout_build_context": context, "mcp_server_probe_retries": 8})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Rollout of reference to fleetops/mcp-reference:broken failed on srv-1" in output, output[-4000:]
    # The first host was rolled back to what it ran before, and serves again ...
    assert images_of("srv-1") == before["srv-1"]
    for port in (18080, 18081):
        assert "whoami" in wait_for_mcp(f"http://{container_ip('srv-1')}:{port}/mcp")["tools"]
    # ... and the second host was never touched.
    assert started_at("srv-2") == untouched
    assert images_of("srv-2") == before["srv-2"]
    for port in (18080, 18081):
        assert "whoami" in probe(container_ip("srv-2"), port, "/mcp", "handshake")["tools"]
