"""Tests for the reference MCP server: wire protocol (raw HTTP + the official SDK client),
health, metrics, access logs and SIGTERM draining. Every test talks to a real subprocess."""

from __future__ import annotations

import http.client
import json
import pathlib
import re
import signal
import socket
import threading
import time
import uuid

import anyio
import pytest
from mcp.client import Client

from ansible_collections.fleetops.mcp.plugins.module_utils._mcp_client import (
    MCPClient,
    MCPJSONRPCError,
)

MODERN = "2026-07-28"
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "pytest-raw", "version": "0"},
}
ALL_TOOLS = {"echo", "add", "whoami", "slow_count", "fail"}
# The reference server's own DRAIN_LINGER.
SERVER_SOURCE = (pathlib.Path(__file__).resolve().parents[3]
                 / "roles/mcp_server/files/reference_server/fleetops_reference_server.py")
DRAIN_LINGER = float(re.search(r"^DRAIN_LINGER = ([0-9.]+)$", SERVER_SOURCE.read_text(), re.M).group(1))


# --------------------------------------------------------------------------- #
# Raw HTTP helpers
# --------------------------------------------------------------------------- #


def raw_post(server, payload, headers=None, http_method="POST"):
    """One raw HTTP exchange; returns (status, lower-cased headers, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        all_headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        all_headers.update(headers or {})
        body = None if payload is None else json.dumps(payload)
        conn.request(http_method, "/mcp", body=body, headers=all_headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def sse_messages(body: bytes) -> list[dict]:
    """JSON-RPC messages carried in an SSE body (one per ``event: message``)."""
    messages = []
    for block in body.decode().replace("\r\n", "\n").split("\n\n"):
        lines = block.split("\n")
        data = [line[len("data:") :].strip() for line in lines if line.startswith("data:")]
        if data and any(data):
            assert "event: message" in lines, block
            messages.append(json.loads("\n".join(data)))
    return messages


def metric_value(text: str, name: str, **labels) -> float:
    """Value of one Prometheus sample (0.0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        match = re.match(r"^(\S+?)(\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(4))
    return 0.0


# --------------------------------------------------------------------------- #
# 2025-era wire protocol, raw
# --------------------------------------------------------------------------- #


def test_raw_2025_sessioned_handshake_over_sse(sessioned_server):
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
    }
    status, headers, body = raw_post(sessioned_server, init)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    session = headers["mcp-session-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", session)
    (reply,) = sse_messages(body)
    assert reply["id"] == 1
    assert reply["result"]["protocolVersion"] == "2025-06-18"
    assert reply["result"]["serverInfo"] == {"name": "fleetops-reference", "version": "1.0.0"}

    after = {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-06-18"}
    status, _, body = raw_post(sessioned_server, {"jsonrpc": "2.0", "method": "notifications/initialized"}, after)
    assert status == 202 and body == b""

    status, _, body = raw_post(
        sessioned_server,
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "slow_count", "arguments": {"steps": 2, "delay": 0.01}, "_meta": {"progressToken": "t"}},
        },
        after,
    )
    messages = sse_messages(body)
    assert [m.get("method") for m in messages] == ["notifications/progress", "notifications/progress", None]
    assert messages[0]["params"] == {"progressToken": "t", "progress": 1, "total": 2, "message": "step 1/2"}
    assert messages[-1]["id"] == 2 and messages[-1]["result"]["content"][0]["text"] == "counted to 2"

    status, _, _ = raw_post(sessioned_server, None, after, http_method="DELETE")
    assert status == 200
    status, _, body = raw_post(sessioned_server, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, after)
    assert status == 404
    assert json.loads(body)["error"]["message"] == "Session not found"


def test_raw_2025_request_without_session_is_rejected(sessioned_server):
    status, _, body = raw_post(
        sessioned_server, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, {"Mcp-Session-Id": "f" * 32}
    )
    assert status == 404 and json.loads(body)["error"]["code"] == -32600


def test_raw_2025_json_response_mode(json_server):
    init = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
    }
    status, headers, body = raw_post(json_server, init)
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body)["result"]["protocolVersion"] == "2025-11-25"
    raw_post(json_server, None, {"Mcp-Session-Id": headers["mcp-session-id"]}, http_method="DELETE")


def test_raw_2025_stateless_mode_issues_no_session(stateless_server):
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
    }
    status, headers, _ = raw_post(stateless_server, init)
    assert status == 200 and "mcp-session-id" not in headers
    status, _, body = raw_post(
        stateless_server,
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"MCP-Protocol-Version": "2025-06-18"},
    )
    assert status == 200
    assert {t["name"] for t in sse_messages(body)[0]["result"]["tools"]} == ALL_TOOLS


# --------------------------------------------------------------------------- #
# 2026-07-28 wire protocol, raw
# --------------------------------------------------------------------------- #


def modern_headers(method: str, name: str | None = None) -> dict:
    headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if name:
        headers["Mcp-Name"] = name
    return headers


@pytest.mark.parametrize("server_name", ["sessioned", "stateless", "json"])
def test_raw_2026_discover(request, server_name):
    server = request.getfixturevalue(f"{server_name}_server")
    status, headers, body = raw_post(
        server,
        {"jsonrpc": "2.0", "id": "d1", "method": "server/discover", "params": {"_meta": ENVELOPE}},
        modern_headers("server/discover"),
    )
    assert status == 200 and headers["content-type"] == "application/json"
    assert "mcp-session-id" not in headers
    result = json.loads(body)["result"]
    assert result["supportedVersions"] == [MODERN]
    assert result["resultType"] == "complete"
    assert "tools" in result["capabilities"]
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "fleetops-reference"


def test_raw_2026_tools_call_streams_progress(sessioned_server):
    params = {
        "name": "slow_count",
        "arguments": {"steps": 2, "delay": 0.01},
        "_meta": dict(ENVELOPE, progressToken=99),
    }
    status, headers, body = raw_post(
        sessioned_server,
        {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": params},
        modern_headers("tools/call", "slow_count"),
    )
    assert status == 200 and headers["content-type"] == "text/event-stream"
    messages = sse_messages(body)
    assert [m.get("method") for m in messages[:2]] == ["notifications/progress"] * 2
    assert messages[0]["params"]["progressToken"] == 99
    assert messages[-1]["result"]["structuredContent"] == {"result": "counted to 2"}


def test_raw_2026_whoami_and_fail(sessioned_server):
    for tool, expect_error in (("whoami", False), ("fail", True)):
        status, _, body = raw_post(
            sessioned_server,
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "_meta": ENVELOPE}},
            modern_headers("tools/call", tool),
        )
        result = json.loads(body)["result"]
        assert status == 200 and result["isError"] is expect_error
        if tool == "whoami":
            assert result["content"][0]["text"] == sessioned_server.instance


def test_raw_2026_routing_rejections(sessioned_server):
    list_req = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": ENVELOPE}}
    status, _, body = raw_post(sessioned_server, list_req, modern_headers("tools/call"))
    assert status == 400 and json.loads(body)["error"]["code"] == -32020  # header mismatch
    status, _, body = raw_post(
        sessioned_server,
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}},
        modern_headers("tools/list"),
    )
    assert status == 400 and json.loads(body)["error"]["code"] == -32602  # missing envelope
    status, _, body = raw_post(
        sessioned_server,
        {"jsonrpc": "2.0", "id": 3, "method": "nope", "params": {"_meta": ENVELOPE}},
        modern_headers("nope"),
    )
    assert status == 404 and json.loads(body)["error"]["code"] == -32601


# --------------------------------------------------------------------------- #
# The official SDK client, both generations
# --------------------------------------------------------------------------- #


async def _sdk_session(url: str, mode: str) -> dict:
    progress = []

    async def on_progress(value, total, message):
        progress.append((value, total, message))

    async with Client(url, mode=mode) as client:
        tools = await client.list_tools()
        slow = await client.call_tool("slow_count", {"steps": 3, "delay": 0.02}, progress_callback=on_progress)
        failed = await client.call_tool("fail", {"message": "sdk boom"})
        who = await client.call_tool("whoami", {})
        return {
            "version": client.protocol_version,
            "server": client.server_info.name if client.server_info else None,
            "tools": {t.name for t in tools.tools},
            "slow": slow.content[0].text,
            "progress": progress,
            "failed": (failed.is_error, failed.content[0].text),
            "who": who.content[0].text,
        }


@pytest.mark.parametrize(
    "mode, version, server_known",
    [("legacy", "2025-11-25", True), ("auto", MODERN, True), (MODERN, MODERN, False)],
)
@pytest.mark.parametrize("server_name", ["sessioned", "stateless", "json"])
def test_official_sdk_client(request, server_name, mode, version, server_known):
    server = request.getfixturevalue(f"{server_name}_server")
    outcome = anyio.run(_sdk_session, server.mcp_url, mode)
    assert outcome["version"] == version
    if server_known:  # a pinned-version client skips discover, so it has no serverInfo
        assert outcome["server"] == "fleetops-reference"
    assert outcome["tools"] == ALL_TOOLS
    assert outcome["slow"] == "counted to 3"
    assert outcome["failed"][0] is True and "sdk boom" in outcome["failed"][1]
    assert outcome["who"] == server.instance
    if server_name != "json":  # JSON-response mode has no stream to carry progress
        assert [p[0] for p in outcome["progress"]] == [1, 2, 3]


# --------------------------------------------------------------------------- #
# Health, metrics, auth, logs
# --------------------------------------------------------------------------- #


def test_health_reports_instance_and_sessions(sessioned_server):
    status, body = sessioned_server.health()
    assert status == 200
    assert body["status"] == "ok" and body["draining"] is False
    assert body["instance"] == sessioned_server.instance
    assert body["mode"] == "sessioned" and body["response_mode"] == "sse"
    before = body["active_sessions"]

    client = MCPClient(sessioned_server.mcp_url)
    client.connect_handshake()
    assert sessioned_server.health()[1]["active_sessions"] == before + 1
    client.terminate_session()
    assert sessioned_server.health()[1]["active_sessions"] == before


def test_metrics_change_after_calls(sessioned_server):
    before = sessioned_server.metrics()
    assert "# TYPE fleetops_mcp_requests_total counter" in before
    assert "# TYPE fleetops_mcp_request_duration_seconds histogram" in before
    assert "# TYPE fleetops_mcp_active_sessions gauge" in before
    echo = dict(rpc_method="tools/call", tool="echo")
    fail = dict(rpc_method="tools/call", tool="fail")

    MCPClient(sessioned_server.mcp_url).run_handshake(call_tool="echo", tool_arguments={"text": "x"})
    MCPClient(sessioned_server.mcp_url).run_sessionless(call_tool="fail")
    MCPClient(sessioned_server.mcp_url).run_sessionless(call_tool="slow_count", tool_arguments={"steps": 2, "delay": 0})
    after = sessioned_server.metrics()

    def delta(name, **labels):
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("fleetops_mcp_requests_total", outcome="ok", **echo) == 1
    assert delta("fleetops_mcp_requests_total", outcome="tool_error", **fail) == 1
    assert delta("fleetops_mcp_errors_total", kind="tool_error", **fail) == 1
    assert delta("fleetops_mcp_requests_total", outcome="ok", rpc_method="initialize", tool="-") == 1
    assert delta("fleetops_mcp_requests_total", outcome="ok", rpc_method="server/discover", tool="-") == 2
    assert delta("fleetops_mcp_request_duration_seconds_count", **echo) == 1
    assert delta("fleetops_mcp_progress_notifications_total") == 2
    assert metric_value(after, "fleetops_mcp_server_info", instance=sessioned_server.instance) == 1


def test_metrics_label_cardinality_is_bounded(sessioned_server):
    client = MCPClient(sessioned_server.mcp_url)
    client.discover()
    with pytest.raises(MCPJSONRPCError):
        client.request("random/" + uuid.uuid4().hex, client.envelope_params(), client.envelope_headers("x"))
    text = sessioned_server.metrics()
    assert "random/" not in text
    assert metric_value(text, "fleetops_mcp_errors_total", rpc_method="other", kind="rpc_error") >= 1


def test_bearer_token_required_on_mcp_path_only(secure_server, tls_material, mcp_token):
    import ssl

    context = ssl.create_default_context(cafile=str(tls_material.cert_path))
    conn = http.client.HTTPSConnection("127.0.0.1", secure_server.port, context=context, timeout=5)
    conn.request("POST", "/mcp", body="{}", headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 401
    assert response.getheader("WWW-Authenticate", "").startswith("Bearer")
    assert mcp_token not in response.read().decode()
    conn.close()
    assert secure_server.health()[0] == 200  # probes stay unauthenticated


def test_access_log_json_lines_with_request_id(sessioned_server):
    request_id = "req-" + uuid.uuid4().hex
    params = {"name": "echo", "arguments": {"text": "log me"}, "_meta": ENVELOPE}
    status, headers, _ = raw_post(
        sessioned_server,
        {"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": params},
        dict(modern_headers("tools/call", "echo"), **{"X-Request-Id": request_id}),
    )
    assert status == 200 and headers["x-request-id"] == request_id
    status, headers, _ = raw_post(
        sessioned_server,
        {"jsonrpc": "2.0", "id": 12, "method": "tools/call", "params": dict(params, name="fail")},
        modern_headers("tools/call", "fail"),
    )
    generated = headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)

    # The server writes the line before the last response byte, so it is already there.
    lines = sessioned_server.access_log()  # every stdout line is JSON, or this raises
    (mine,) = [line for line in lines if line["request_id"] == request_id]
    assert mine["event"] == "http_request"
    assert mine["method"] == "tools/call" and mine["tool"] == "echo"
    assert mine["status"] == 200 and mine["outcome"] == "ok"
    assert mine["era"] == "2026" and mine["protocol_version"] == MODERN
    assert isinstance(mine["duration_ms"], float) and mine["duration_ms"] >= 0
    assert mine["instance"] == sessioned_server.instance
    (generated_line,) = [line for line in lines if line["request_id"] == generated]
    assert generated_line["tool"] == "fail" and generated_line["outcome"] == "tool_error"


def test_diagnostics_on_stderr_are_json(sessioned_server):
    lines = [line for line in sessioned_server.stderr().splitlines() if line.strip()]
    assert lines, "expected at least the startup line"
    records = [json.loads(line) for line in lines]
    assert any(r.get("event") == "starting" and r.get("instance") == sessioned_server.instance for r in records)


# --------------------------------------------------------------------------- #
# SIGTERM drain
# --------------------------------------------------------------------------- #


def _wait_for(predicate, timeout=5.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def _pooled(server) -> http.client.HTTPConnection:
    """A keep-alive connection opened before the drain, as a load balancer's pool holds one."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/health")
    response = conn.getresponse()
    response.read()
    assert response.status == 200 and response.getheader("Connection", "").lower() != "close"
    return conn


def _exchange(conn, payload, headers):
    conn.request("POST", "/mcp", body=json.dumps(payload), headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers})
    response = conn.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_closes_the_listener_serves_open_connections_and_drains(server_factory):
    server = server_factory("--grace-period", "15", name="drain")
    client = MCPClient(server.mcp_url, timeout=20)
    client.connect_handshake()
    for_discover, for_initialize = _pooled(server), _pooled(server)
    outcome = {}

    def slow_call():
        try:
            reply = client.request(
                "tools/call",
                {"name": "slow_count", "arguments": {"steps": 10, "delay": 0.15}, "_meta": {"progressToken": 1}},
            )
            outcome["reply"] = reply
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertions below
            outcome["error"] = exc

    worker = threading.Thread(target=slow_call)
    worker.start()
    assert _wait_for(lambda: server.health()[1]["inflight_requests"] == 1), "slow call never started"

    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    # New connections are refused at once: nothing was sent, so a load balancer
    # tries another backend, even for a POST.
    assert _wait_for(lambda: _refused(server.port)), "the listener stayed open"

    # What arrives on an open keep-alive connection is served, and the connection ends after it.
    status, headers, body = _exchange(for_discover, {
        "jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": ENVELOPE}},
        {"MCP-Protocol-Version": MODERN, "Mcp-Method": "server/discover"})
    assert status == 200 and b"supportedVersions" in body, body
    assert headers["connection"].lower() == "close"
    # Except a new session: it would end with the process.
    status, headers, body = _exchange(for_initialize, {
        "jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "late", "version": "0"}}}, {})
    assert status == 503 and b"draining" in body and headers["connection"].lower() == "close", body
    assert server.proc.poll() is None, "server exited while a call was still in flight"

    worker.join(timeout=15)
    assert "error" not in outcome, outcome.get("error")
    reply = outcome["reply"]
    assert reply.result["content"][0]["text"] == "counted to 10"
    assert len(reply.notifications) == 10 and reply.events[-1] == "response"

    assert server.proc.wait(timeout=15) == 0
    assert time.monotonic() - signalled >= DRAIN_LINGER
    events = [json.loads(line).get("event") for line in server.stderr().splitlines() if line.strip()]
    assert "drain_started" in events and "drain_finished" in events
    refused_lines = [line for line in server.access_log() if line["outcome"] == "refused"]
    assert [line["method"] for line in refused_lines] == ["initialize"]
    assert all(line["status"] == 503 for line in refused_lines)


def test_sigterm_on_idle_server_exits_zero_after_the_linger(server_factory):
    server = server_factory("--stateless", "--grace-period", "120", name="idle")
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0
    # At least the linger (idle keep-alive connections are closed by the load balancer first), and far below the
    # grace period: an idle server does not wait for it. (The bound is the grace period's half, not a speed: on
    # a loaded machine the exit took 10.4 s once, against a 5 s linger.)
    assert DRAIN_LINGER <= time.monotonic() - started < 60


def test_grace_period_bounds_the_drain(server_factory):
    server = server_factory("--grace-period", "0.5", name="grace")
    client = MCPClient(server.mcp_url, timeout=20)
    client.discover()
    errors = []

    def very_slow():
        try:
            client.request(
                "tools/call",
                dict(client.envelope_params(), name="slow_count", arguments={"steps": 900, "delay": 0.1}),
                dict(client.envelope_headers("tools/call"), **{"Mcp-Name": "slow_count"}),
            )
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    worker = threading.Thread(target=very_slow)
    worker.start()
    assert _wait_for(lambda: server.health()[1]["inflight_requests"] == 1)
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0
    # The call would run 90 s; the server gave up on it after its 0.5 s grace period (plus the linger). The
    # bound is a third of the call, not a speed: on a loaded machine the exit took 8.3 s once.
    assert time.monotonic() - started < 30
    worker.join(timeout=30)
    assert errors, "the abandoned call should have failed on the client side"
    finished = [json.loads(line) for line in server.stderr().splitlines() if '"drain_finished"' in line]
    assert finished and finished[0]["abandoned_requests"] == 1
