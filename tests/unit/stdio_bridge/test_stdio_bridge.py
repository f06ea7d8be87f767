"""fleetops-stdio-bridge against real stdio servers started as subprocesses.

Two servers: ``sdk_stdio_server.py`` (the official ``mcp`` SDK, both protocol
generations) and ``scripted_stdio_server.py`` (handshake only, like the
TypeScript SDK 1.x servers, with tools that misbehave on request). Every test
talks HTTP to a real bridge process on loopback.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
BRIDGE = REPO / "roles" / "mcp_server" / "files" / "stdio_bridge" / "fleetops_stdio_bridge.py"
HERE = Path(__file__).resolve().parent
SDK_SERVER = [sys.executable, str(HERE / "sdk_stdio_server.py")]
SCRIPTED = [sys.executable, str(HERE / "scripted_stdio_server.py")]
MODERN = "2026-07-28"
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "bridge-tests", "version": "1"}}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Bridge:
    def __init__(self, server, options):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".jsonl", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, str(BRIDGE), "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "debug",
             *options, "--", *server], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.health()[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("bridge did not become healthy: " + self.logs_text())

    def logs_text(self):
        return Path(self.log.name).read_text()

    def events(self, name):
        out = []
        for line in self.logs_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == name:
                out.append(record)
        return out

    def health(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", "/health")
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")

    def request(self, method="POST", body=None, headers=None, timeout=30, accept="application/json, text/event-stream"):
        """Return (status, headers, [JSON-RPC messages in arrival order])."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        all_headers = {"Accept": accept}
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        raw = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        conn.request(method, "/mcp", body=raw, headers=all_headers)
        resp = conn.getresponse()
        data = resp.read()
        ctype = resp.getheader("Content-Type", "")
        if ctype.startswith("text/event-stream"):
            messages = [json.loads(line[5:]) for line in data.decode().splitlines() if line.startswith("data:")]
        elif data and ctype.startswith("application/json"):
            messages = [json.loads(data)]
        else:
            messages = []
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, messages

    def modern(self, method, params=None, rpc_id=1, **kw):
        params = dict(params or {})
        params["_meta"] = dict(ENVELOPE, **params.get("_meta", {}))
        return self.request(body={"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": params},
                            headers={"MCP-Protocol-Version": MODERN, "Mcp-Method": method}, **kw)

    def initialize(self, capabilities=None):
        status, headers, messages = self.request(body={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": capabilities or {},
            "clientInfo": {"name": "bridge-tests", "version": "1"}}})
        assert status == 200, messages
        sid = headers.get("mcp-session-id")
        if sid:
            self.request(body={"jsonrpc": "2.0", "method": "notifications/initialized"},
                         headers={"Mcp-Session-Id": sid})
        return sid, messages[0]

    def legacy(self, method, params=None, sid=None, rpc_id=1, **kw):
        headers = {"MCP-Protocol-Version": "2025-11-25"}
        if sid:
            headers["Mcp-Session-Id"] = sid
        return self.request(body={"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": params or {}},
                            headers=headers, **kw)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.unlink(self.log.name)


@pytest.fixture
def start_bridge():
    started = []

    def start(server, *options):
        bridge = Bridge(server, list(options))
        started.append(bridge)
        return bridge
    yield start
    for bridge in started:
        bridge.stop()


def tool_text(message):
    assert "result" in message, message
    return message["result"]["content"][0]["text"]


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().split()[2] != "Z"
    except OSError:
        return False


def children_of(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry))
    return out


# --------------------------------------------------------------------------- #
# Shared children: one long-lived process, requests concurrent
# --------------------------------------------------------------------------- #


def test_modern_requests_share_one_child_and_run_concurrently(start_bridge):
    bridge = start_bridge(SDK_SERVER, "--stateless")
    pids = {tool_text(bridge.modern("tools/call", {"name": "pid", "arguments": {}}, rpc_id=i)[2][-1])
            for i in range(5)}
    assert len(pids) == 1, "every 2026-07-28 request must reach the same long-lived child"
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda i: bridge.modern(
            "tools/call", {"name": "slow", "arguments": {"seconds": 1.0}}, rpc_id=7), range(16)))
    elapsed = time.monotonic() - started
    assert all(status == 200 and tool_text(msgs[-1]) == "slept 1.0" for status, _h, msgs in replies)
    # Serialised on one lock these 16 calls would take 16 s.
    assert elapsed < 12, "16 one-second calls took %.1f s: requests are serialised" % elapsed
    assert {tool_text(bridge.modern("tools/call", {"name": "pid", "arguments": {}})[2][-1])} == pids


def test_same_client_ids_from_two_clients_get_their_own_answers(start_bridge):
    bridge = start_bridge(SDK_SERVER, "--stateless")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda text: bridge.modern(
            "tools/call", {"name": "echo", "arguments": {"text": text}}, rpc_id=1), ["alpha", "beta"])
    assert (a[2][-1]["id"], tool_text(a[2][-1])) == (1, "alpha")
    assert (b[2][-1]["id"], tool_text(b[2][-1])) == (1, "beta")


def test_stateless_handshake_clients_share_a_child_without_sessions(start_bridge):
    bridge = start_bridge(SDK_SERVER, "--stateless")
    sid, init = bridge.initialize()
    assert sid is None and init["result"]["serverInfo"]["name"] == "bridge-test-sdk"
    pids = {tool_text(bridge.legacy("tools/call", {"name": "pid", "arguments": {}}, rpc_id=i)[2][-1])
            for i in range(4)}
    assert len(pids) == 1
    assert bridge.request("GET", headers={"Accept": "text/event-stream"})[0] == 405


def test_a_dead_shared_child_fails_its_requests_reports_unhealthy_and_comes_back(start_bridge):
    bridge = start_bridge(SDK_SERVER, "--stateless")
    first = int(tool_text(bridge.modern("tools/call", {"name": "pid", "arguments": {}})[2][-1]))
    status, _h, messages = bridge.modern("tools/call", {"name": "crash", "arguments": {}}, rpc_id=9)
    assert messages[-1]["id"] == 9 and "exited" in messages[-1]["error"]["message"]
    assert bridge.health()[0] == 503, "the replica must report unhealthy while its child is down"
    deadline = time.monotonic() + 20
    while bridge.health()[0] != 200:
        assert time.monotonic() < deadline, "the shared child was not restarted"
        time.sleep(0.2)
    assert bridge.health()[1]["restarts"] == 1
    second = int(tool_text(bridge.modern("tools/call", {"name": "pid", "arguments": {}})[2][-1]))
    assert second != first and not pid_alive(first)


def test_health_fails_when_the_child_stops_answering(start_bridge):
    bridge = start_bridge(SDK_SERVER, "--health-timeout", "1")
    pid = int(tool_text(bridge.modern("tools/call", {"name": "pid", "arguments": {}})[2][-1]))
    os.kill(pid, signal.SIGSTOP)
    try:
        assert bridge.health()[0] == 503, "an open HTTP port is not health: the child must answer"
    finally:
        os.kill(pid, signal.SIGCONT)
    assert bridge.health()[0] == 200


def test_modern_progress_arrives_before_the_result_with_the_clients_token(start_bridge):
    bridge = start_bridge(SDK_SERVER, "--stateless")
    status, headers, messages = bridge.modern(
        "tools/call", {"name": "slow", "arguments": {"seconds": 0.6, "steps": 3}, "_meta": {"progressToken": "tok-a"}})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    progress = [m for m in messages if m.get("method") == "notifications/progress"]
    assert [m["params"]["progress"] for m in progress] == [1, 2, 3]
    assert {m["params"]["progressToken"] for m in progress} == {"tok-a"}
    assert messages[-1]["id"] == 1 and "result" in messages[-1]


# --------------------------------------------------------------------------- #
# Sessions: one child each, DELETE, idle timeout, cap
# --------------------------------------------------------------------------- #


def test_each_session_has_its_own_child_ended_by_delete(start_bridge):
    bridge = start_bridge(SDK_SERVER)
    sid_a, _ = bridge.initialize()
    sid_b, _ = bridge.initialize()
    assert sid_a and sid_b and sid_a != sid_b
    pid_a = int(tool_text(bridge.legacy("tools/call", {"name": "pid", "arguments": {}}, sid=sid_a)[2][-1]))
    pid_b = int(tool_text(bridge.legacy("tools/call", {"name": "pid", "arguments": {}}, sid=sid_b)[2][-1]))
    assert pid_a != pid_b
    status, _h, _m = bridge.request("DELETE", headers={"Mcp-Session-Id": sid_a})
    assert status == 200
    assert not pid_alive(pid_a) and pid_alive(pid_b)
    status, _h, messages = bridge.legacy("tools/call", {"name": "pid", "arguments": {}}, sid=sid_a)
    assert status == 404 and messages[0]["error"]["code"] == -32001


def test_an_idle_session_is_ended_with_its_child(start_bridge):
    bridge = start_bridge(SDK_SERVER, "--session-timeout", "1")
    sid, _ = bridge.initialize()
    pid = int(tool_text(bridge.legacy("tools/call", {"name": "pid", "arguments": {}}, sid=sid)[2][-1]))
    deadline = time.monotonic() + 10
    while pid_alive(pid):
        assert time.monotonic() < deadline, "the idle session's child is still running"
        time.sleep(0.2)
    assert bridge.legacy("tools/call", {"name": "pid", "arguments": {}}, sid=sid)[0] == 404
    assert [e["reason"] for e in bridge.events("session_closed")] == ["idle"]


def test_the_session_cap_answers_503_with_a_jsonrpc_error(start_bridge):
    bridge = start_bridge(SCRIPTED, "--max-sessions", "2")
    first, _ = bridge.initialize()
    bridge.initialize()
    status, headers, messages = bridge.request(body={"jsonrpc": "2.0", "id": 5, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}})
    assert status == 503 and headers.get("retry-after") == "5"
    assert messages[0]["id"] == 5 and messages[0]["error"]["data"] == {"maxSessions": 2}
    assert "at most 2 sessions" in messages[0]["error"]["message"]
    bridge.request("DELETE", headers={"Mcp-Session-Id": first})
    assert bridge.initialize()[0]


def test_sessions_opened_and_closed_leave_no_children(start_bridge):
    bridge = start_bridge(SCRIPTED, "--max-sessions", "4")
    baseline = set(children_of(bridge.proc.pid))
    for _ in range(40):
        sid, _ = bridge.initialize()
        assert tool_text(bridge.legacy("tools/call", {"name": "echo", "arguments": {"text": "x"}}, sid=sid)[2][-1]) == "x"
        assert bridge.request("DELETE", headers={"Mcp-Session-Id": sid})[0] == 200
    time.sleep(0.5)
    assert set(children_of(bridge.proc.pid)) == baseline
    assert bridge.health()[1]["sessions"] == 0


def test_session_progress_and_sampling_pass_through_on_the_post_stream(start_bridge):
    bridge = start_bridge(SCRIPTED)
    sid, _ = bridge.initialize({"sampling": {}})
    status, _h, messages = bridge.legacy(
        "tools/call", {"name": "slow", "arguments": {"seconds": 0.3, "steps": 2}, "_meta": {"progressToken": 42}},
        sid=sid, rpc_id=3)
    assert [m.get("method") for m in messages] == ["notifications/progress"] * 2 + [None]
    assert {m["params"]["progressToken"] for m in messages[:2]} == {42}

    # Sampling: the server's request arrives on the call's stream; the client's
    # answer (a POSTed response) reaches the server, which then finishes the call.
    conn = http.client.HTTPConnection("127.0.0.1", bridge.port, timeout=20)
    conn.request("POST", "/mcp", body=json.dumps({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                                                  "params": {"name": "sample", "arguments": {}}}),
                 headers={"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
                          "Mcp-Session-Id": sid})
    resp = conn.getresponse()
    assert resp.getheader("Content-Type").startswith("text/event-stream")
    line = b""
    while not line.startswith(b"data:"):
        line = resp.readline()
    server_request = json.loads(line[5:])
    assert server_request["method"] == "sampling/createMessage"
    answer = {"jsonrpc": "2.0", "id": server_request["id"],
              "result": {"role": "assistant", "content": {"type": "text", "text": "sampled"}, "model": "m"}}
    assert bridge.request(body=answer, headers={"Mcp-Session-Id": sid})[0] == 202
    rest = resp.read().decode()
    final = [json.loads(x[5:]) for x in rest.splitlines() if x.startswith("data:")][-1]
    assert final["id"] == 4 and "sampled" in tool_text(final)


def test_a_cancelled_request_ends_its_stream(start_bridge):
    bridge = start_bridge(SCRIPTED)
    sid, _ = bridge.initialize()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        call = pool.submit(bridge.legacy, "tools/call", {"name": "slow", "arguments": {"seconds": 5}}, sid=sid, rpc_id=8)
        time.sleep(0.5)
        bridge.request(body={"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 8}},
                       headers={"Mcp-Session-Id": sid})
        status, _h, messages = call.result(timeout=4)
    assert messages[-1]["id"] == 8 and messages[-1]["error"]["code"] == -32800


# --------------------------------------------------------------------------- #
# Handshake-only servers and the 2026-07-28 clients
# --------------------------------------------------------------------------- #


def test_a_handshake_only_child_is_told_apart_for_2026_clients(start_bridge):
    bridge = start_bridge(SCRIPTED)
    status, _h, messages = bridge.modern("server/discover")
    assert status == 200 and messages[0]["result"]["supportedVersions"] == ["2025-11-25"]
    status, _h, messages = bridge.modern("tools/call", {"name": "echo", "arguments": {"text": "x"}})
    assert status == 400 and messages[0]["error"]["code"] == -32022
    assert messages[0]["error"]["data"]["supported"] == ["2025-11-25"]
    assert bridge.health()[1]["protocol"] == "2025-11-25"


def test_the_official_sdk_client_in_both_modes(start_bridge):
    from mcp.client.client import Client

    async def run(url, mode):
        async with Client(url, mode=mode) as client:
            result = await client.call_tool("echo", {"text": "hello " + mode})
            return client.protocol_version, result.content[0].text

    sessioned = start_bridge(SDK_SERVER)
    handshake_only = start_bridge(SCRIPTED, "--stateless")
    url = "http://127.0.0.1:%d/mcp"
    assert asyncio.run(run(url % sessioned.port, "auto")) == (MODERN, "hello auto")
    assert asyncio.run(run(url % sessioned.port, "legacy")) == ("2025-11-25", "hello legacy")
    # A 2026 client falls back to the handshake on a server that has none of 2026-07-28.
    assert asyncio.run(run(url % handshake_only.port, "auto")) == ("2025-11-25", "hello auto")


# --------------------------------------------------------------------------- #
# A misbehaving child, hostile input
# --------------------------------------------------------------------------- #


def test_a_malformed_line_from_the_child_is_logged_and_skipped(start_bridge):
    bridge = start_bridge(SCRIPTED, "--stateless")
    bridge.initialize()
    status, _h, messages = bridge.legacy("tools/call", {"name": "garbage", "arguments": {}}, rpc_id=2)
    assert status == 200 and tool_text(messages[-1]) == "after garbage"
    bad = bridge.events("child_bad_line")
    assert [b["line"] for b in bad] == ["this is not json-rpc", "[1, 2]"]
    assert tool_text(bridge.legacy("tools/call", {"name": "echo", "arguments": {"text": "still"}})[2][-1]) == "still"


def test_child_stderr_is_logged_as_json_with_the_request_id(start_bridge):
    bridge = start_bridge(SCRIPTED, "--stateless")
    bridge.initialize()
    bridge.legacy("tools/call", {"name": "stderr", "arguments": {}}, rpc_id="req-77")
    lines = [e for e in bridge.events("child_stderr") if e["line"] == "diagnostic line from the child"]
    assert len(lines) == 1 and lines[0]["request_id"] == "req-77"


@pytest.mark.parametrize("body,headers,status,code", [
    (b"{not json", {}, 400, -32700),
    (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', {}, 400, -32600),
    (b'{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}', {}, 400, -32600),
    (b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}', {"Mcp-Session-Id": "nope"}, 404, -32001),
    (b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}', {}, 400, -32000),
    (b'{"jsonrpc":"2.0","id":1,"method":"ping"}', {"Content-Type": "text/plain"}, 415, -32000),
])
def test_bad_requests_get_a_clear_status_and_error(start_bridge, body, headers, status, code):
    bridge = start_bridge(SCRIPTED, "--max-body", "1024")
    got, _h, messages = bridge.request(body=body, headers=headers)
    assert (got, messages[0]["error"]["code"]) == (status, code)
    assert bridge.health()[0] == 200


def test_an_oversized_body_is_refused_and_the_bridge_goes_on(start_bridge):
    bridge = start_bridge(SCRIPTED, "--max-body", "1024")
    status, _h, _m = bridge.request(body=b"{" + b" " * 4096 + b"}")
    assert status == 413
    assert bridge.health()[0] == 200


def test_the_command_line_is_checked():
    missing = subprocess.run([sys.executable, str(BRIDGE), "--port", "1"], capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and "stdio server command is missing" in missing.stderr
    bad = subprocess.run([sys.executable, str(BRIDGE), "--max-sessions", "0", "--", "true"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "--max-sessions" in bad.stderr


def test_a_client_that_expects_100_continue_gets_it(start_bridge):
    bridge = start_bridge(SCRIPTED, "--stateless")
    body = json.dumps({"jsonrpc": "2.0", "id": 3, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "curl", "version": "1"}}}).encode()
    with socket.create_connection(("127.0.0.1", bridge.port), timeout=5) as sock:
        sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json\r\n"
                     b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        answer = b""
        while b'"serverInfo"' not in answer:
            chunk = sock.recv(4096)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 OK")
    deadline = time.monotonic() + 5  # the access line is written just after the answer
    while not [e for e in bridge.events("access") if e.get("rpc") == "initialize"]:
        assert time.monotonic() < deadline, "no access log line for the initialize"
        time.sleep(0.05)
    assert [e for e in bridge.events("access") if e.get("rpc") == "initialize"][-1]["status"] == 200


def test_session_logging_rides_the_call_stream_and_later_messages_the_get_stream(start_bridge):
    bridge = start_bridge(SCRIPTED)
    sid, _ = bridge.initialize()
    _status, _h, messages = bridge.legacy("tools/call", {"name": "log", "arguments": {}}, sid=sid, rpc_id=5)
    assert messages[0]["method"] == "notifications/message" and messages[0]["params"]["data"] == "working on it"
    assert messages[-1]["id"] == 5 and tool_text(messages[-1]) == "logged"

    conn = http.client.HTTPConnection("127.0.0.1", bridge.port, timeout=10)
    conn.request("GET", "/mcp", headers={"Accept": "text/event-stream", "Mcp-Session-Id": sid})
    stream = conn.getresponse()
    assert stream.status == 200
    assert bridge.request("GET", headers={"Accept": "text/event-stream", "Mcp-Session-Id": sid})[0] == 409
    assert tool_text(bridge.legacy("tools/call", {"name": "later", "arguments": {}}, sid=sid, rpc_id=6)[2][-1]) \
        == "see you later"
    line = b""
    while not line.startswith(b"data:"):
        line = stream.readline()
        assert line, "the GET stream ended without the notification"
    assert json.loads(line[5:])["method"] == "notifications/resources/list_changed"
    # DELETE ends the session, its child, and its GET stream.
    assert bridge.request("DELETE", headers={"Mcp-Session-Id": sid})[0] == 200
    started = time.monotonic()
    stream.read()  # returns at the stream's end; a stream left open would hit the 10 s socket timeout
    assert time.monotonic() - started < 5


def test_a_server_that_dies_at_start_is_retried_and_not_taken_for_a_handshake_only_one(start_bridge, tmp_path):
    # The first start dies before answering; the next ones run the SDK server.
    marker = tmp_path / "started-once"
    wrapper = tmp_path / "flaky.sh"
    wrapper.write_text("#!/bin/sh\nif [ ! -e %s ]; then touch %s; exit 7; fi\nexec %s\n" % (
        marker, marker, " ".join(SDK_SERVER)))
    wrapper.chmod(0o755)
    bridge = start_bridge([str(wrapper)])
    assert bridge.health()[1]["protocol"] == MODERN
    assert tool_text(bridge.modern("tools/call", {"name": "echo", "arguments": {"text": "up"}})[2][-1]) == "up"
    assert [e["code"] for e in bridge.events("child_exited")][:1] == [7]


def test_the_cap_holds_for_initializes_that_arrive_together(start_bridge):
    bridge = start_bridge(SDK_SERVER, "--max-sessions", "2")
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}}
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        statuses = sorted(r[0] for r in pool.map(lambda _i: bridge.request(body=body), range(6)))
    assert statuses == [200, 200, 503, 503, 503, 503]
    assert bridge.health()[1]["sessions"] == 2


def test_a_client_that_gives_up_during_initialize_leaves_no_session(start_bridge):
    bridge = start_bridge(SDK_SERVER)  # an SDK server takes about a second to start
    baseline = set(children_of(bridge.proc.pid))
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}}).encode()
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", bridge.port), timeout=5) as sock:
            sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Accept: application/json, text/event-stream\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            time.sleep(0.1)
    deadline = time.monotonic() + 20
    while len(bridge.events("session_abandoned")) < 3:
        assert time.monotonic() < deadline, bridge.logs_text()[-2000:]
        time.sleep(0.2)
    time.sleep(0.5)
    assert bridge.health()[1]["sessions"] == 0
    assert set(children_of(bridge.proc.pid)) == baseline


def test_a_sessionless_request_whose_client_goes_away_is_cancelled_in_the_child(start_bridge):
    bridge = start_bridge(SCRIPTED, "--stateless")
    bridge.initialize()
    body = json.dumps({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                       "params": {"name": "slow", "arguments": {"seconds": 10}}}).encode()
    with socket.create_connection(("127.0.0.1", bridge.port), timeout=5) as sock:
        sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Accept: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(0.3)
    deadline = time.monotonic() + 4  # the call itself would take 10 s
    while not [e for e in bridge.events("access") if e.get("rpc") == "tools/call"]:
        assert time.monotonic() < deadline, "the bridge kept waiting for a client that had gone"
        time.sleep(0.1)
