"""stdio MCP servers behind fleetops-stdio-bridge, in the shape users run them: through the VIP with TLS
and a token. mcp-server-time (PyPI) speaks both protocol generations; @modelcontextprotocol/server-everything
(npm) only the handshake, with progress notifications and sampling."""

from __future__ import annotations

import http.client
import json
import time

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from fleetops_testlib import container_host, docker_inspect
from lbha import VIP, tls_context, token, url

DHS = ["ms-1", "ms-2"]


@pytest.mark.parametrize(("server", "tool", "arguments", "version"), [
    ("time", "get_current_time", {"timezone": "UTC"}, "2026-07-28"),
    # A handshake-only server: the bridge tells a 2026 client so, and the SDK falls back.
    ("everything", "echo", {"message": "through the VIP"}, "2025-11-25"),
], ids=["time", "everything"])
def test_the_official_sdk_in_auto_mode_reaches_each_stdio_server_through_the_vip(server, tool, arguments, version):
    async def run():
        http = httpx2.AsyncClient(verify=tls_context(), headers={"Authorization": f"Bearer {token()}"},
                                  timeout=httpx2.Timeout(15.0, read=30.0))
        async with http, Client(streamable_http_client(url(VIP, server), http_client=http), mode="auto") as sdk:
            return sdk.protocol_version, [await sdk.call_tool(tool, arguments) for _ in range(10)]

    before = children_started(server)
    negotiated, results = anyio.run(run)
    assert negotiated == version
    assert all(not r.is_error and r.content[0].text for r in results)
    # Ten calls, no new server process for 2026-07-28 (the shared one answers), one for a handshake session.
    assert children_started(server) - before == (0 if version == "2026-07-28" else 1)


def children_started(server: str) -> int:
    """Server processes the bridges of every replica of `server` have started so far."""
    total = 0
    for name in DHS:
        total += json.loads(container_host(name).check_output(
            "docker exec mcp-%s-1 python3 -c 'import urllib.request; print(urllib.request.urlopen("
            "\"http://127.0.0.1:8080/health\", timeout=5).read().decode())'" % server))["children_started"]
    return total


def _sse_post(conn, body, headers):
    """POST, then yield (seconds since sent, message) for each SSE frame as it arrives."""
    started = time.monotonic()
    conn.request("POST", "/mcp/everything", json.dumps(body), headers)
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
    while True:
        line = response.readline()
        if not line:
            return
        if line.startswith(b"data:"):
            yield time.monotonic() - started, json.loads(line[5:])


def test_progress_from_a_stdio_server_streams_through_the_vip_before_the_result():
    conn = http.client.HTTPSConnection(VIP, 443, timeout=30, context=tls_context())
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "Authorization": f"Bearer {token()}"}
    conn.request("POST", "/mcp/everything", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}), headers)
    response = conn.getresponse()
    assert response.status == 200
    headers.update({"Mcp-Session-Id": response.getheader("Mcp-Session-Id"), "MCP-Protocol-Version": "2025-11-25"})
    response.read()
    conn.request("POST", "/mcp/everything", json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                 headers)
    conn.getresponse().read()
    frames = list(_sse_post(conn, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "trigger-long-running-operation", "arguments": {"duration": 2, "steps": 4},
        "_meta": {"progressToken": "vip-progress"}}}, headers))
    conn.request("DELETE", "/mcp/everything", headers=headers)
    assert conn.getresponse().status == 200
    progress = [(t, m) for t, m in frames if m.get("method") == "notifications/progress"]
    result_at, result = frames[-1]
    assert result["id"] == 2 and "completed" in result["result"]["content"][0]["text"]
    assert [m["params"]["progress"] for _t, m in progress] == [1, 2, 3, 4]
    assert {m["params"]["progressToken"] for _t, m in progress} == {"vip-progress"}
    # Streamed as they happen, not buffered until the end: the first one comes a second or more before the result.
    assert progress[0][0] < result_at - 1.0, frames


# Run inside a container (its own python3; the bridge is on 127.0.0.1:8080 there).
KILL_AND_WATCH = r"""
import json, os, signal, time, urllib.request, urllib.error
def health():
    try:
        with urllib.request.urlopen("http://127.0.0.1:8080/health", timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)
before = health()[1]
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit()
              and b"mcp-server-time" in open("/proc/%s/cmdline" % p, "rb").read()
              and b"fleetops-stdio-bridge" not in open("/proc/%s/cmdline" % p, "rb").read())
os.kill(pids[0], signal.SIGKILL)
seen, started = [], time.monotonic()
while time.monotonic() - started < 30:
    status, body = health()
    seen.append(status)
    if status == 200 and 503 in seen:
        break
    time.sleep(0.1)
print(json.dumps({"killed": pids[0], "seen": sorted(set(seen)), "recovered_s": time.monotonic() - started,
                  "restarts_before": before["restarts"], "restarts_after": body["restarts"]}))
"""


def test_a_killed_stdio_server_process_is_reported_down_and_comes_back():
    dh = container_host("ms-1")
    out = dh.check_output("docker exec -i mcp-time-1 python3 - <<'EOF'\n%s\nEOF" % KILL_AND_WATCH)
    report = json.loads(out.splitlines()[-1])
    assert report["seen"] == [200, 503] or report["seen"] == [503, 200], report
    assert report["restarts_after"] == report["restarts_before"] + 1, report
    # The container itself never restarted: the bridge brought its server process back.
    assert docker_inspect(dh, "mcp-time-1")["RestartCount"] == 0
    # And a 2026-07-28 call through the VIP answers again.
    async def call():
        http = httpx2.AsyncClient(verify=tls_context(), headers={"Authorization": f"Bearer {token()}"})
        async with http, Client(streamable_http_client(url(VIP, "time"), http_client=http), mode="auto") as sdk:
            return await sdk.call_tool("get_current_time", {"timezone": "UTC"})
    assert not anyio.run(call).is_error


CAP = r"""
import json, urllib.request, urllib.error
def post(body, sid=None, method="POST"):
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if sid:
        headers["Mcp-Session-Id"] = sid
    req = urllib.request.Request("http://127.0.0.1:8080/mcp", data=json.dumps(body).encode() if body else None,
                                 headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()
def health():
    with urllib.request.urlopen("http://127.0.0.1:8080/health", timeout=5) as r:
        return json.load(r)
init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "cap", "version": "1"}}}
before = health()["sessions"]
opened, refused = [], None
for _ in range(64):
    status, headers, body = post(init)
    if status != 200:
        refused = (status, headers.get("Retry-After"), json.loads(body))
        break
    opened.append(headers["Mcp-Session-Id"])
during = health()
for sid in opened:
    post(None, sid, "DELETE")
print(json.dumps({"before": before, "opened": len(opened), "refused": refused, "during": during,
                  "after": health()["sessions"]}))
"""


def test_the_session_cap_of_a_stdio_server_answers_503_with_a_jsonrpc_error():
    dh = container_host("ms-2")
    report = json.loads(dh.check_output("docker exec -i mcp-everything-1 python3 - <<'EOF'\n%s\nEOF" % CAP)
                        .splitlines()[-1])
    assert report["before"] + report["opened"] == 5, report        # max_sessions: 5 in the demo inventory
    status, retry_after, body = report["refused"]
    assert (status, retry_after) == (503, "5"), report
    assert body["id"] == 1 and body["error"]["data"] == {"maxSessions": 5}, body
    assert report["during"]["status"] == "ok" and report["after"] == report["before"], report
    state = docker_inspect(dh, "mcp-everything-1")
    assert (state["State"]["OOMKilled"], state["RestartCount"]) == (False, 0), state["State"]


@pytest.mark.parametrize("name", DHS)
def test_stdio_containers_are_healthy_by_a_check_that_reaches_the_server_process(name):
    dh = container_host(name)
    for container in ("mcp-time-1", "mcp-everything-1"):
        state = docker_inspect(dh, container)
        assert state["State"]["Health"]["Status"] == "healthy", (container, state["State"]["Health"])
        # Healthy is the engine's verdict over the last checks; one of them may have missed under load.
        assert any(entry["ExitCode"] == 0 for entry in state["State"]["Health"]["Log"]), state["State"]["Health"]
        health = json.loads(dh.check_output(
            "docker exec %s python3 -c 'import urllib.request; print(urllib.request.urlopen("
            "\"http://127.0.0.1:8080/health\", timeout=5).read().decode())'" % container))
        # The check is answered by the server process (server/discover or ping), not by the bridge alone.
        assert health["status"] == "ok" and health["protocol"] in ("2026-07-28", "2025-11-25"), health
