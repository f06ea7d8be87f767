"""The host firewall (fleetops.mcp.firewall) on the whole fleet, with real nftables.

A client container that is no host of the fleet joins the fleet's network (the
hostile neighbour); every port behind the gateway must be dropped for it,
while the gateway answers it. The fleet's own hosts reach what they need.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from fleetops_testlib import container_host, container_ip, run_playbook
from lbha import CA, VIP, token

NETWORK = "fleetops-fleet"
CLIENT_IP = "172.30.214.51"
DOCKER_HOSTS = ["ms-1", "ms-2"]

# Connects to each (address, port) at once (threads), prints {"address:port": "open|refused|timeout"}.
PROBE = r"""
import json, socket, sys, concurrent.futures as cf
def one(target):
    address, port = target.rsplit(":", 1)
    try:
        socket.create_connection((address, int(port)), timeout=3).close()
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return "timeout" if isinstance(exc, TimeoutError) else "error: %r" % exc
targets = sys.argv[1:]
with cf.ThreadPoolExecutor(len(targets)) as pool:
    print(json.dumps(dict(zip(targets, pool.map(one, targets)))))
"""


def outcomes(container: str, targets: list[str]) -> dict:
    """What a TCP connection from ``container`` to each ``address:port`` meets."""
    result = subprocess.run(["docker", "exec", container, "python3", "-c", PROBE, *targets],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def mcp_host_ports(host: str) -> list[int]:
    """The host ports the MCP containers on a Docker host publish (docker's own view)."""
    out = container_host(host).run("docker ps --filter name=^mcp- --format '{{.Ports}}'").stdout
    ports = set()
    for mapping in out.replace(",", "\n").split():
        if "->" in mapping:
            ports.add(int(mapping.split("->")[0].rsplit(":", 1)[1]))
    assert ports, f"no published MCP ports on {host}: {out!r}"
    return sorted(ports)


@pytest.fixture(scope="module")
def client():
    """A container on the fleet's network that is none of its hosts (a neighbour, not an operator)."""
    name = f"fleetops-client-{uuid.uuid4().hex[:6]}"
    # The test hosts' own image (it has python3), with no init: only the probes run in it.
    subprocess.run(["docker", "run", "-d", "--rm", "--name", name, "--network", NETWORK, "--ip", CLIENT_IP,
                    "--entrypoint", "sleep", "fleetops/debian:bookworm", "900"],
                   check=True, capture_output=True, timeout=60)
    try:
        subprocess.run(["docker", "cp", CA, f"{name}:/tmp/ca.crt"], check=True, capture_output=True, timeout=30)
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60, check=False)


def behind_the_gateway() -> list[str]:
    """Every port of the fleet that only some hosts may reach (address:port)."""
    ip = {h: container_ip(h) for h in ("ms-1", "ms-2", "lb-1", "lb-2", "mon-1", "bk-1")}
    targets = [f"{ip[h]}:{p}" for h in DOCKER_HOSTS for p in mcp_host_ports(h)]
    targets += [f"{ip[h]}:9100" for h in ip]  # node_exporter everywhere
    targets += [f"{ip[h]}:{p}" for h in ("lb-1", "lb-2") for p in (9113, 3903)]  # nginx exporter, gateway metrics
    targets += [f"{ip['mon-1']}:{p}" for p in (9090, 9093, 9115)]  # Prometheus, Alertmanager, blackbox
    targets += [f"{ip['bk-1']}:22"]  # the backup host's SSH (rrsync)
    targets += [f"{ip[h]}:22" for h in ("ms-1", "ms-2", "lb-1", "lb-2")]  # the failover agents' SSH
    return targets


def test_a_neighbour_reaches_nothing_behind_the_gateway_but_the_gateway_answers_it(client):
    targets = behind_the_gateway()
    seen = outcomes(client, targets + [f"{VIP}:443"])
    # Dropped, not refused: the neighbour learns nothing, not even that a port is closed.
    assert {t: seen[t] for t in targets} == {t: "timeout" for t in targets}
    assert seen[f"{VIP}:443"] == "open"
    # The same neighbour's MCP call through the VIP, with a token, answers.
    call = (
        "import json, ssl, sys, urllib.request\n"
        "req = urllib.request.Request(sys.argv[1], data=json.dumps({'jsonrpc': '2.0', 'id': 1,"
        " 'method': 'initialize', 'params': {'protocolVersion': '2025-06-18', 'capabilities': {},"
        " 'clientInfo': {'name': 'neighbour', 'version': '1'}}}).encode(), headers={"
        "'Authorization': 'Bearer ' + sys.argv[2], 'Content-Type': 'application/json',"
        " 'Accept': 'application/json, text/event-stream'})\n"
        "with urllib.request.urlopen(req, context=ssl.create_default_context(cafile='/tmp/ca.crt'), timeout=10) as r:\n"
        "    print(r.status, r.read().decode())\n"
    )
    result = subprocess.run(["docker", "exec", client, "python3", "-c", call, f"https://{VIP}/mcp/reference",
                             token()], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("200 ") and '"serverInfo"' in result.stdout, result.stdout[:500]


def test_the_fleets_own_hosts_reach_what_they_need():
    ip = {h: container_ip(h) for h in ("ms-1", "ms-2", "lb-1", "lb-2", "mon-1", "bk-1")}
    mcp = [f"{ip[h]}:{p}" for h in DOCKER_HOSTS for p in mcp_host_ports(h)]
    # The load balancers reach every MCP host port.
    for lb in ("lb-1", "lb-2"):
        assert set(outcomes(lb, mcp).values()) == {"open"}, lb
    # The monitor reaches every exporter and every MCP host port (scrapes, failover probes).
    exporters = [f"{ip[h]}:9100" for h in ip] + [f"{ip[h]}:{p}" for h in ("lb-1", "lb-2") for p in (9113, 3903)]
    assert set(outcomes("mon-1", exporters + mcp).values()) == {"open"}
    # A Docker host reaches the backup host's SSH (its archives), but not a neighbour's MCP port.
    seen = outcomes("ms-1", [f"{ip['bk-1']}:22", f"{ip['ms-2']}:{mcp_host_ports('ms-2')[0]}"])
    assert seen == {f"{ip['bk-1']}:22": "open", f"{ip['ms-2']}:{mcp_host_ports('ms-2')[0]}": "timeout"}
    # A load balancer does not reach Prometheus.
    assert outcomes("lb-1", [f"{ip['mon-1']}:9090"]) == {f"{ip['mon-1']}:9090": "timeout"}
    # The failover controllers (both load balancers) reach the agents' SSH on the Docker hosts and on the load
    # balancers; the monitor, which is no controller, reaches none of them.
    agents = [f"{ip[h]}:22" for h in ("ms-1", "ms-2", "lb-1", "lb-2")]
    for lb in ("lb-1", "lb-2"):
        assert set(outcomes(lb, agents).values()) == {"open"}, lb
    assert set(outcomes("mon-1", agents).values()) == {"timeout"}


def test_a_stopped_replicas_port_refuses_the_load_balancer_at_once_and_still_drops_a_neighbour(client):
    from fleetops_testlib import wait_healthy

    ms = container_host("ms-1")
    port = int(ms.run("docker port mcp-reference-2 8080/tcp").stdout.split(":")[-1])
    target = f"{container_ip('ms-1')}:{port}"
    assert ms.run("docker stop -t 1 mcp-reference-2").rc == 0
    try:
        # Docker has no DNAT for a stopped container: the host itself answers, refusing whom it admits
        # (nginx moves on to the next replica at once) and dropping anyone else.
        assert outcomes("lb-1", [target]) == {target: "refused"}
        assert outcomes(client, [target]) == {target: "timeout"}
    finally:
        assert ms.run("docker start mcp-reference-2").rc == 0
    wait_healthy(ms, "mcp-reference-2")
    assert outcomes("lb-1", [target]) == {target: "open"}


def test_an_nftables_reload_keeps_dockers_rules_and_the_filter():
    ms = container_host("ms-1")
    assert ms.run("systemctl reload nftables").rc == 0
    ruleset = ms.run("nft list ruleset").stdout
    assert "DOCKER" in ruleset and "table inet fleetops" in ruleset
    port = mcp_host_ports("ms-1")[0]
    target = f"{container_ip('ms-1')}:{port}"
    # Docker's DNAT survived (the load balancer still reaches the container) and so did the filter.
    assert outcomes("lb-1", [target]) == {target: "open"}
    assert outcomes("bk-1", [target]) == {target: "timeout"}


def fleet_rules(host: str) -> str:
    return container_host(host).file("/etc/nftables.d/50-fleetops.nft").content_string


def test_a_rule_set_that_would_cut_the_controllers_ssh_session_is_refused_before_any_change():
    before = fleet_rules("bk-1")
    result = run_playbook("../../playbooks/firewall.yml", limit="bk-1",
                          extra_vars={"firewall_controller_address": "172.30.214.1",
                                      "firewall_ssh_sources": ["10.99.0.0/24"]})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert ("firewall_ssh_sources would cut off the controller's own SSH session from 172.30.214.1 to port 22: add "
            "that address (or its network) to firewall_ssh_sources") in " ".join(output.split()), output[-3000:]
    assert "changed=0" in output
    assert fleet_rules("bk-1") == before


@pytest.mark.parametrize(
    ("extra_vars", "message"),
    [
        ({"firewall_operator_cidrs": ["172.30.214.0/33"]},
         "firewall_operator_cidrs must hold IPv4 or IPv6 addresses or CIDRs; got '172.30.214.0/33'"),
        ({"firewall_extra_rules": [{"name": "syslog", "proto": "icmp", "ports": [514]}]},
         "firewall_extra_rules[0].proto must be tcp or udp; got 'icmp'"),
    ],
    ids=["operator-cidr", "extra-rule-proto"],
)
def test_bad_inputs_fail_naming_the_variable_and_change_nothing(extra_vars, message):
    before = fleet_rules("lb-1")
    result = run_playbook("../../playbooks/firewall.yml", limit="lb-1", extra_vars=extra_vars)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output, output[-3000:]
    assert "changed=0" in output
    assert fleet_rules("lb-1") == before


def test_ssh_left_open_to_anywhere_is_warned_about():
    before = fleet_rules("lb-1")
    result = run_playbook("../../playbooks/firewall.yml", limit="lb-1", extra_vars={"firewall_ssh_sources": []},
                          extra_args=["--check"])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    # (The YAML callback doubles the apostrophe of "operators' networks".)
    assert ("WARNING: lb-1 admits SSH (port 22) from anywhere: set firewall_ssh_sources to the "
            "operators") in " ".join(output.split()), output[-3000:]
    assert fleet_rules("lb-1") == before
