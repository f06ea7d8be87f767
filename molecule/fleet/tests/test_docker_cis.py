"""CIS Docker Benchmark checks against the fleet's live Docker hosts and every container on them.

docker-bench-security is not packaged for Debian, so the checks the fleet is
held to are written here, each named by its CIS number. CIS 5.13: the MCP
servers publish their ports on the host's own fleet address (bind_address
unset), never on 0.0.0.0 or ::; the firewall role still admits them by
source (tests/test_firewall.py).
"""

from __future__ import annotations

import json

import pytest

from fleetops_testlib import container_host, container_ip

DOCKER_HOSTS = ["ms-1", "ms-2"]


def run(host, command: str) -> str:
    result = host.run(command)
    assert result.rc == 0, f"{command!r}: {result.stderr}"
    return result.stdout


@pytest.mark.parametrize("name", DOCKER_HOSTS)
def test_the_daemon_passes_the_cis_host_checks(name):
    host = container_host(name)
    daemon = json.loads(host.file("/etc/docker/daemon.json").content_string)
    info = json.loads(run(host, "docker info --format '{{json .}}'"))
    bridge = json.loads(run(host, "docker network inspect bridge --format '{{json .Options}}'"))
    failures = []
    if daemon.get("icc") is not False or bridge.get("com.docker.network.bridge.enable_icc") != "false":
        failures.append("2.2 inter-container traffic on the default bridge is not off")
    if info.get("LiveRestoreEnabled") is not True:
        failures.append("2.14 live-restore is off")
    if daemon.get("userland-proxy") is not False or host.run("pgrep -x docker-proxy").rc == 0:
        failures.append("2.15 the userland proxy is on")
    if daemon.get("no-new-privileges") is not True:
        failures.append("2.18 no-new-privileges is not the daemon's default")
    assert failures == []


@pytest.mark.parametrize("name", DOCKER_HOSTS)
def test_every_container_passes_the_cis_container_checks(name):
    host = container_host(name)
    ids = run(host, "docker ps -q").split()
    assert ids, f"no containers run on {name}"
    failures = []
    for c in json.loads(run(host, "docker inspect " + " ".join(ids))):
        who, config, hc = c["Name"].lstrip("/"), c["Config"], c["HostConfig"]
        user = (config.get("User") or "").split(":")[0]
        if user in ("", "root") or (user.isdigit() and int(user) == 0):
            failures.append(f"{who}: 4.1 runs as root (User={config.get('User')!r})")
        if hc.get("Privileged"):
            failures.append(f"{who}: 5.4 privileged")
        if not hc.get("Memory"):
            failures.append(f"{who}: 5.10 no memory limit")
        if not (hc.get("NanoCpus") or hc.get("CpuQuota") or hc.get("CpuShares")):
            failures.append(f"{who}: 5.11 no CPU limit")
        if not hc.get("ReadonlyRootfs"):
            failures.append(f"{who}: 5.12 writable root filesystem")
        if ((config.get("Healthcheck") or {}).get("Test") or ["NONE"])[0] == "NONE":
            failures.append(f"{who}: 5.26 no health check")
        if not (hc.get("PidsLimit") or 0) > 0:
            failures.append(f"{who}: 5.28 no PIDs limit")
        if any("docker.sock" in (m.get("Source") or "") for m in c.get("Mounts", [])):
            failures.append(f"{who}: 5.31 the Docker socket is mounted")
        if "no-new-privileges:true" not in (hc.get("SecurityOpt") or []):
            failures.append(f"{who}: 5.25 may gain new privileges")
        for port, bindings in sorted((hc.get("PortBindings") or {}).items()):
            for binding in bindings or []:
                if (binding.get("HostIp") or "") in ("", "0.0.0.0", "::", "[::]"):
                    failures.append(f"{who}: 5.13 publishes {port} on every address ({binding.get('HostIp')!r})")
                elif binding["HostIp"] != container_ip(name):
                    failures.append(f"{who}: 5.13 publishes {port} on {binding['HostIp']}, not the host's fleet address")
    assert failures == []


@pytest.mark.parametrize("name", DOCKER_HOSTS)
def test_no_published_port_listens_on_every_address(name):
    """CIS 5.13 from the host's side: nothing Docker publishes answers on loopback or another address."""
    host = container_host(name)
    ports = sorted({int(b["HostPort"]) for c in json.loads(run(host, "docker inspect $(docker ps -q)"))
                    for bindings in (c["HostConfig"].get("PortBindings") or {}).values() for b in bindings or []})
    assert ports, f"no published ports on {name}"
    address = container_ip(name)
    for port in ports:
        assert host.run(f"timeout 3 bash -c 'exec 3<>/dev/tcp/{address}/{port}'").rc == 0, f"{address}:{port}"
        assert host.run(f"timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}'").rc != 0, f"127.0.0.1:{port}"
