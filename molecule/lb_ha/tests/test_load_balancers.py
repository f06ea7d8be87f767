"""Behaviour of fleetops.mcp.nginx_lb: routing, session affinity across load balancers, streaming, safe reloads."""

from __future__ import annotations

import collections
import http.client
import json
import time

import pytest

from fleetops_testlib import container_ip, main_pid, mcp_client_class, container_host, run_playbook, wait_for_mcp

MCPClient = mcp_client_class()
from ansible_collections.fleetops.mcp.plugins.module_utils._mcp_client import MCPSessionNotFoundError  # noqa: E402

LBS = ["lb-1", "lb-2"]
ROUTES = [("reference", "whoami"), ("reference-stateless", "whoami"), ("time", "get_current_time")]


def url(lb, server="reference"):
    return f"http://{container_ip(lb)}/mcp/{server}"


def whoami(client):
    return client.request("tools/call", {"name": "whoami", "arguments": {}}).result["content"][0]["text"]


def session(lb):
    client = MCPClient(url(lb), timeout=10)
    client.connect_handshake()
    return client


def lb_host(name):
    return container_host(name)


def nginx_master_pid(lb):
    return main_pid(lb_host(lb), "nginx")


@pytest.mark.parametrize("lb", LBS)
@pytest.mark.parametrize("protocol", ["handshake", "sessionless"])
@pytest.mark.parametrize(("server", "tool"), ROUTES, ids=[r[0] for r in ROUTES])
def test_every_server_answers_through_each_load_balancer(lb, protocol, server, tool):
    client = MCPClient(url(lb, server), timeout=15)
    arguments = {"timezone": "UTC"} if tool == "get_current_time" else {}
    run = client.run_handshake if protocol == "handshake" else client.run_sessionless
    result = run(call_tool=tool, tool_arguments=arguments).as_dict()
    assert result["tool_result"]["is_error"] is False


def test_session_id_is_tagged_and_fifty_calls_land_on_one_backend():
    client = session("lb-1")
    assert client.session_id.startswith("b") and client.session_id[11] == "."
    answers = collections.Counter(whoami(client) for _ in range(50))
    assert len(answers) == 1, answers
    client.terminate_session()


def test_new_sessions_spread_over_backends():
    seen = set()
    for _ in range(12):
        client = session("lb-1")
        seen.add(whoami(client))
        client.terminate_session()
    assert len(seen) >= 3, seen  # four sessioned replicas in all


def test_a_session_continues_through_the_other_load_balancer():
    client = session("lb-1")
    backend = whoami(client)
    # Same session id, other load balancer: what a client sees after the VIP moves.
    other = MCPClient(url("lb-2"), timeout=10)
    other.session_id = client.session_id
    other.protocol_version = client.protocol_version
    assert {whoami(other) for _ in range(20)} == {backend}


def test_progress_events_stream_before_the_tool_finishes():
    address = container_ip("lb-2")
    conn = http.client.HTTPConnection(address, 80, timeout=30)
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    conn.request("POST", "/mcp/reference", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}), headers)
    response = conn.getresponse()
    headers.update({"Mcp-Session-Id": response.getheader("Mcp-Session-Id"), "MCP-Protocol-Version": "2025-11-25"})
    response.read()
    conn.request("POST", "/mcp/reference", json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}), headers)
    conn.getresponse().read()
    start = time.monotonic()
    conn.request("POST", "/mcp/reference", json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "slow_count", "arguments": {"steps": 3, "delay": 1}, "_meta": {"progressToken": "p"}}}), headers)
    response = conn.getresponse()
    arrivals = []
    while True:
        line = response.fp.readline().decode()
        if not line:
            break
        if line.startswith("data:"):
            message = json.loads(line[5:])
            arrivals.append((message.get("method", "result"), time.monotonic() - start))
            if "result" in message:
                break
    progress = [t for kind, t in arrivals if kind == "notifications/progress"]
    result_at = arrivals[-1][1]
    assert len(progress) == 3 and arrivals[-1][0] == "result"
    # The first event arrives about two seconds before the result: not buffered.
    assert result_at - progress[0] > 1.5, arrivals


def test_a_session_on_a_stopped_backend_gets_404_and_a_new_session_works():
    client = session("lb-1")
    backend = whoami(client)  # "<docker host>/<container>"
    host, container = backend.split("/")
    docker = container_host(host)
    assert docker.run(f"docker stop -t 1 {container}").rc == 0
    try:
        start = time.monotonic()
        with pytest.raises(MCPSessionNotFoundError):
            whoami(client)
        assert time.monotonic() - start < 2
        fresh = session("lb-2")
        assert whoami(fresh) != backend
    finally:
        assert docker.run(f"docker start {container}").rc == 0
    port = 18080 if container.endswith("-1") else 18081
    wait_for_mcp(f"http://{container_ip(host)}:{port}/mcp")


def test_access_log_is_json_with_request_id_upstream_and_session():
    client = session("lb-1")
    whoami(client)
    lines = lb_host("lb-1").run("tail -n 20 /var/log/nginx/mcp-access.json").stdout.strip().splitlines()
    records = [json.loads(line) for line in lines]
    mine = [r for r in records if r["mcp_session"] == client.session_id]
    assert mine, records[-3:]
    assert all(len(r["request_id"]) == 32 and r["upstream"] for r in mine)


@pytest.mark.parametrize(
    ("extra_vars", "message"),
    [
        ({"nginx_lb_read_timeout": 0}, "nginx_lb_read_timeout must be a whole number from 1 to 86400; got 0"),
        ({"nginx_lb_listen_port": 70000}, "nginx_lb_listen_port must be a whole number from 1 to 65535; got 70000"),
        ({"nginx_lb_status_listen": "localhost"}, "nginx_lb_status_listen must be address:port"),
        ({"nginx_lb_backend_group": "nope"}, "nginx_lb_backend_group 'nope' is not an inventory group with hosts"),
        ({"fleetops_mcp_servers": [{"name": "a", "image": "x:1", "host_port": 9000, "transport": "smoke-signal"}]},
         "mcp server 'a': transport 'smoke-signal' is not one of"),
    ],
    ids=["read-timeout-zero", "port-70000", "status-listen-no-port", "unknown-backend-group", "bad-fleet"],
)
def test_bad_settings_fail_naming_the_variable_before_any_change(extra_vars, message):
    digest = lb_host("lb-1").file("/etc/nginx/nginx.conf").sha256sum
    result = run_playbook("../../playbooks/load_balancers.yml", limit="lb-1,ms-1,ms-2", extra_vars=extra_vars)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output, output[-3000:]
    assert lb_host("lb-1").file("/etc/nginx/nginx.conf").sha256sum == digest


def test_a_bad_config_fails_with_the_old_one_serving():
    pid = nginx_master_pid("lb-1")
    digest = lb_host("lb-1").file("/etc/nginx/nginx.conf").sha256sum
    result = run_playbook("../../playbooks/load_balancers.yml", limit="lb-1,ms-1,ms-2",
                          extra_vars={"nginx_lb_status_listen": "127.0.0.1:99999"})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "nginx" in output and ("invalid port" in output or "emerg" in output), output[-3000:]
    assert lb_host("lb-1").file("/etc/nginx/nginx.conf").sha256sum == digest
    assert nginx_master_pid("lb-1") == pid
    assert whoami(session("lb-1"))


def test_a_config_change_is_applied_by_reload_not_restart():
    pid = nginx_master_pid("lb-2")
    result = run_playbook("../../playbooks/load_balancers.yml", limit="lb-2,ms-1,ms-2",
                          extra_vars={"nginx_lb_read_timeout": 1234})
    assert result.returncode == 0, result.stdout[-3000:]
    try:
        assert "proxy_read_timeout 1234s;" in lb_host("lb-2").file("/etc/nginx/nginx.conf").content_string
        assert nginx_master_pid("lb-2") == pid
        assert whoami(session("lb-2"))
    finally:
        assert run_playbook("../../playbooks/load_balancers.yml", limit="lb-2,ms-1,ms-2").returncode == 0
