#!/usr/bin/env python3
"""Print what `make demo` left running, and prove it with real MCP calls.

Reads the demo inventory (inventories/local), finds each Docker host's
address, and for every declared MCP server replica runs a real MCP exchange
(initialize or server/discover, tools/list); it calls one tool on each server,
directly, through each load balancer and through the VIP. Then it prints the
VIP URL, a client token, the Prometheus and Alertmanager URLs and the changed
count of the converge that `make demo` just ran.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".cache" / "collections"))
from ansible_collections.fleetops.mcp.plugins.module_utils._fleet import normalize  # noqa: E402
from ansible_collections.fleetops.mcp.plugins.module_utils._mcp_client import MCPClient  # noqa: E402
sys.path.insert(0, str(ROOT / "bench"))
from fleet_bench import changed  # noqa: E402  (the bench reads PLAY RECAPs the same way)

CALLS = {"reference": ("whoami", {}), "time": ("get_current_time", {"timezone": "UTC"}),
         "everything": ("echo", {"message": "hello from the demo"})}
CACHE = pathlib.Path(os.environ.get("FLEETOPS_CACHE", ROOT / ".cache"))
CA = CACHE / "pki" / "ca.crt"
TOKEN_FILE = CACHE / "demo-tokens" / "demo-agent"


def address(container: str) -> str:
    out = subprocess.run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", container],
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0]


def report(url: str, server_name: str, note: str = "", **client) -> bool:
    """Run a real MCP exchange (and one tool call) against ``url``; print one line."""
    call = CALLS.get(server_name.split("-")[0])
    try:
        result = MCPClient(url, timeout=15, **client).probe(
            protocol="auto", call_tool=call[0] if call else None,
            tool_arguments=call[1] if call else None).as_dict()
    except Exception as exc:  # noqa: BLE001 - report every failure, keep going
        print(f"  {url:42} FAILED: {exc}")
        return False
    text = ""
    if result.get("tool_result"):
        text = result["tool_result"]["content"][0].get("text", "").replace("\n", " ")[:60]
        text = f" | {call[0]} -> {text}"
    print(f"  {url:42} {result['protocol_version']:10}{note} tools={','.join(result['tools'])}{text}")
    return True


def converge_changes(log: pathlib.Path) -> str:
    """The changed count of the converge whose output `make demo` kept in ``log``."""
    if not log.exists():
        return "unknown (no converge log)"
    total, hosts = changed(log.read_text(errors="replace"))
    return f"{total} changed task results on {hosts} hosts" if hosts else "unknown (no PLAY RECAP)"


def main() -> int:
    inventory = yaml.safe_load((ROOT / "inventories/local/hosts.yml").read_text())
    groups = inventory["all"]["children"]
    hosts = sorted(groups["docker_hosts"]["hosts"])
    lbs = sorted(groups.get("load_balancers", {}).get("hosts", {}))
    declared = yaml.safe_load((ROOT / "inventories/local/group_vars/all/mcp_servers.yml").read_text())
    servers = declared["fleetops_demo_servers"] + declared.get("fleetops_demo_failover_servers", [])
    results = []
    print("\nfleetops.mcp demo: MCP servers on local systemd Docker hosts, behind nginx load balancers\n")
    for host in hosts:
        ip = address(host)
        for server in normalize(servers, host):
            if server["failover"]:
                continue  # one of two hosts runs it (the failover daemon's choice): asked through the VIP below
            for replica in server["containers"]:
                results.append(report(f"http://{ip}:{replica['host_port']}{server['path']}", server["name"]))
    lb_vars = yaml.safe_load((ROOT / "inventories/local/group_vars/load_balancers.yml").read_text())
    vip = lb_vars.get("keepalived_virtual_ipaddress", "").split("/")[0]
    client = {"ca_path": str(CA), "bearer_token": TOKEN_FILE.read_text().strip()} if lbs else {}
    for lb, ip in [(lb, address(lb)) for lb in lbs] + ([("the VIP", vip)] if vip else []):
        for server in normalize(servers):
            results.append(report(f"https://{ip}/mcp/{server['name']}", server["name"], f" via {lb}", **client))
    if lbs:
        target = f"https://{vip or address(lbs[0])}/mcp/reference"
        print("\nTry it (TLS with the demo CA, a demo client's token, through the VIP):\n"
              "  .venv/bin/python -c \"import json,sys; sys.path.insert(0,'.cache/collections'); "
              "from ansible_collections.fleetops.mcp.plugins.module_utils._mcp_client import MCPClient; "
              f"c=MCPClient('{target}', ca_path='{CA}', bearer_token=open('{TOKEN_FILE}').read().strip()); "
              "print(json.dumps(c.probe(call_tool='whoami').as_dict(), indent=1))\"")
    monitors = sorted(groups.get("monitors", {}).get("hosts", {}))
    print("\nThe fleet:")
    if vip:
        print(f"  MCP endpoint (VIP)  https://{vip}/mcp/<server>   servers: {', '.join(s['name'] for s in servers)}")
        print(f"  TLS CA              {CA}")
        print(f"  client token        {TOKEN_FILE.read_text().strip()}   (demo-agent, also in {TOKEN_FILE})")
    for mon in monitors:
        ip = address(mon)
        print(f"  Prometheus          http://{ip}:9090")
        print(f"  Alertmanager        http://{ip}:9093")
    web_password = CACHE / "demo-tokens" / "prometheus-web"
    if monitors and web_password.exists():
        print(f"  their basic auth    fleetops-demo / {web_password.read_text().strip()}   (test-only; also in {web_password})")
    print(f"  this converge       {converge_changes(CACHE / 'demo-converge.log')}")
    print("\nRemove it all with: make demo-destroy\n")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
