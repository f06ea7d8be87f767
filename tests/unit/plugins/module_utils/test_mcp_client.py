"""Tests for the stdlib MCP client against real servers on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from ansible_collections.fleetops.mcp.plugins.module_utils import _mcp_client as mc
from ansible_collections.fleetops.mcp.plugins.module_utils._mcp_client import (
    MCPAuthenticationError,
    MCPClient,
    MCPConfigurationError,
    MCPConnectionError,
    MCPJSONRPCError,
    MCPNonMCPResponseError,
    MCPSessionNotFoundError,
    MCPTimeoutError,
    MCPTLSError,
)

ALL_TOOLS = {"echo", "add", "whoami", "slow_count", "fail"}
PROTOCOLS = ["handshake", "sessionless", "auto"]


@pytest.fixture(params=["sessioned", "stateless", "json"])
def any_server(request):
    """Each plain-HTTP reference server variant in turn."""
    return request.getfixturevalue(f"{request.param}_server")


# --------------------------------------------------------------------------- #
# Happy paths: both generations, all server variants
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_probe_lists_and_calls_tools(any_server, protocol):
    probe = MCPClient(any_server.mcp_url, timeout=10).probe(
        protocol, call_tool="echo", tool_arguments={"text": "héllo fleet"}
    )
    expected_protocol = "handshake" if protocol == "handshake" else "sessionless"
    assert probe.protocol == expected_protocol
    assert probe.server_name == "fleetops-reference"
    assert probe.server_version == "1.0.0"
    assert ALL_TOOLS <= set(probe.tool_names)
    assert probe.tool_result["is_error"] is False
    assert probe.tool_result["text"] == "héllo fleet"
    assert probe.latency_ms > 0 and "tools/list" in probe.timings_ms
    assert probe.fallback_reason is None
    if expected_protocol == "handshake":
        assert probe.protocol_version == mc.DEFAULT_HANDSHAKE_VERSION
        sessioned = any_server.name != "stateless"
        assert probe.session_id_seen is sessioned
        assert probe.session_terminated is (True if sessioned else None)
    else:
        assert probe.protocol_version == "2026-07-28"
        assert probe.supported_versions == ["2026-07-28"]
        assert probe.session_id_seen is False


def test_handshake_negotiates_requested_older_version(sessioned_server):
    probe = MCPClient(sessioned_server.mcp_url).run_handshake("2025-06-18")
    assert probe.protocol_version == "2025-06-18"


def test_json_response_mode_is_used_for_every_message(json_server):
    for protocol in ("handshake", "sessionless"):
        probe = MCPClient(json_server.mcp_url).probe(protocol, call_tool="add", tool_arguments={"a": 2, "b": 40})
        assert set(probe.response_modes.values()) == {"json"}, probe.response_modes
        assert probe.tool_result["text"] == "42"
        assert probe.tool_result["structured_content"] == {"result": 42}


def test_sse_response_mode_in_sessioned_handshake(sessioned_server):
    probe = MCPClient(sessioned_server.mcp_url).run_handshake(call_tool="whoami")
    assert set(probe.response_modes.values()) == {"sse"}
    assert probe.tool_result["text"] == sessioned_server.instance


@pytest.mark.parametrize("protocol", ["handshake", "sessionless"])
@pytest.mark.parametrize("server_name", ["sessioned", "stateless"])
def test_progress_notifications_arrive_before_result(request, server_name, protocol):
    server = request.getfixturevalue(f"{server_name}_server")
    probe = MCPClient(server.mcp_url).probe(
        protocol, call_tool="slow_count", tool_arguments={"steps": 3, "delay": 0.05}
    )
    assert probe.response_modes["tools/call"] == "sse"
    assert probe.tool_result["stream_events"] == ["notification", "notification", "notification", "response"]
    assert [p["progress"] for p in probe.progress] == [1, 2, 3]
    assert probe.progress[-1] == {"progress": 3, "total": 3, "message": "step 3/3"}
    assert probe.tool_result["text"] == "counted to 3"


@pytest.mark.parametrize("protocol", ["handshake", "sessionless"])
def test_failing_tool_is_reported_as_tool_error(sessioned_server, protocol):
    probe = MCPClient(sessioned_server.mcp_url).probe(protocol, call_tool="fail", tool_arguments={"message": "boom"})
    assert probe.tool_result["is_error"] is True
    assert "boom" in probe.tool_result["text"]


def test_whoami_differs_per_instance(sessioned_server, json_server):
    first = MCPClient(sessioned_server.mcp_url).probe("sessionless", call_tool="whoami")
    second = MCPClient(json_server.mcp_url).probe("sessionless", call_tool="whoami")
    assert first.tool_result["text"] == sessioned_server.instance
    assert second.tool_result["text"] == json_server.instance


def test_check_mode_skips_tools_not_annotated_read_only(sessioned_server):
    probe = MCPClient(sessioned_server.mcp_url).probe("handshake", call_tool="no_such_tool", require_read_only=True)
    assert probe.tool_result["skipped"] is True
    probe = MCPClient(sessioned_server.mcp_url).probe("handshake", call_tool="whoami", require_read_only=True)
    assert probe.tool_result["skipped"] is False


# --------------------------------------------------------------------------- #
# Auth and TLS
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bearer_token_over_verified_tls(secure_server, tls_material, mcp_token, protocol):
    client = MCPClient(secure_server.mcp_url, bearer_token=mcp_token, ca_path=str(tls_material.cert_path))
    probe = client.probe(protocol, call_tool="whoami")
    assert probe.tool_result["text"] == secure_server.instance


def test_missing_token_is_http_401(secure_server, tls_material):
    with pytest.raises(MCPAuthenticationError) as err:
        MCPClient(secure_server.mcp_url, ca_path=str(tls_material.cert_path)).probe("handshake")
    assert err.value.kind == "authentication"
    assert err.value.details["http_status"] == 401
    assert "401" in str(err.value) and "no bearer token was sent; set bearer_token" in str(err.value)


def test_wrong_token_is_rejected_without_echoing_it(secure_server, tls_material):
    wrong = "definitely-wrong-token-value"
    with pytest.raises(MCPAuthenticationError) as err:
        MCPClient(secure_server.mcp_url, bearer_token=wrong, ca_path=str(tls_material.cert_path)).probe("auto")
    assert "bearer token was rejected" in str(err.value)
    assert wrong not in str(err.value) and wrong not in json.dumps(err.value.details)


def test_self_signed_certificate_fails_verification(secure_server, mcp_token):
    with pytest.raises(MCPTLSError) as err:
        MCPClient(secure_server.mcp_url, bearer_token=mcp_token).probe("handshake")
    message = str(err.value)
    assert "certificate verification failed" in message and "self-signed" in message
    assert "ca_path" in message
    assert mcp_token not in message


def test_validate_certs_false_accepts_self_signed(secure_server, mcp_token):
    probe = MCPClient(secure_server.mcp_url, bearer_token=mcp_token, validate_certs=False).probe("sessionless")
    assert probe.server_name == "fleetops-reference"


def test_https_against_plain_http_port_is_tls_error(sessioned_server):
    url = sessioned_server.mcp_url.replace("http://", "https://")
    with pytest.raises(MCPTLSError) as err:
        MCPClient(url).probe("handshake")
    assert "plain HTTP" in str(err.value)


def test_plain_http_against_tls_port_is_connection_error(secure_server):
    url = secure_server.mcp_url.replace("https://", "http://")
    with pytest.raises((MCPConnectionError, MCPNonMCPResponseError)) as err:
        MCPClient(url, timeout=3).probe("handshake")
    assert "https" in str(err.value).lower() or "HTTP" in str(err.value)


# --------------------------------------------------------------------------- #
# Transport failure classes
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_connection_refused(closed_port_url, protocol):
    with pytest.raises(MCPConnectionError) as err:
        MCPClient(closed_port_url).probe(protocol)
    assert err.value.kind == "connection"
    assert "Connection refused" in str(err.value)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_timeout_when_server_never_answers(silent_server_url, protocol):
    started = time.monotonic()
    with pytest.raises(MCPTimeoutError) as err:
        MCPClient(silent_server_url, timeout=0.5).probe(protocol)
    assert time.monotonic() - started < 3
    assert err.value.kind == "timeout"
    assert "Timed out after 0.5s" in str(err.value)


def test_timeout_while_tool_streams_progress(sessioned_server):
    with pytest.raises(MCPTimeoutError) as err:
        MCPClient(sessioned_server.mcp_url, timeout=0.6).probe(
            "sessionless", call_tool="slow_count", tool_arguments={"steps": 20, "delay": 0.1}
        )
    assert "'tools/call'" in str(err.value)


# --------------------------------------------------------------------------- #
# Non-MCP endpoints
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/html", "HTML page"),
        ("/notfound", "HTTP 404"),
        ("/error", "HTTP 500"),
        ("/badgateway", "HTTP 502"),
        ("/json", "not a JSON-RPC 2.0 response"),
        ("/notjson", "not valid JSON"),
        ("/octets", "application/octet-stream"),
        ("/redirect", "redirect"),
    ],
)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_non_mcp_http_responses(non_mcp_server, path, expected, protocol):
    with pytest.raises(MCPNonMCPResponseError) as err:
        MCPClient(non_mcp_server + path).probe(protocol)
    assert err.value.kind == "non_mcp_response"
    assert expected in str(err.value)
    assert "token=zzz" not in str(err.value)


# --------------------------------------------------------------------------- #
# JSON-RPC errors and sessions
# --------------------------------------------------------------------------- #


def test_jsonrpc_error_in_handshake_session(sessioned_server):
    client = MCPClient(sessioned_server.mcp_url)
    client.connect_handshake()
    try:
        with pytest.raises(MCPJSONRPCError) as err:
            client.request("nope/nope")
    finally:
        assert client.terminate_session() is True
    assert err.value.code == -32601
    assert "JSON-RPC error -32601 (Method not found)" in str(err.value)


def test_jsonrpc_error_sessionless_carries_http_404(sessioned_server):
    client = MCPClient(sessioned_server.mcp_url)
    client.discover()
    with pytest.raises(MCPJSONRPCError) as err:
        client.request("nope/nope", client.envelope_params(), client.envelope_headers("nope/nope"))
    assert err.value.code == -32601
    assert err.value.details["http_status"] == 404


def test_unsupported_sessionless_version_is_jsonrpc_error(sessioned_server):
    with pytest.raises(MCPJSONRPCError) as err:
        MCPClient(sessioned_server.mcp_url).probe("sessionless", protocol_version="2099-01-01")
    assert err.value.code == mc.UNSUPPORTED_PROTOCOL_VERSION
    assert "Unsupported protocol version" in str(err.value)
    assert err.value.data["supported"] == ["2026-07-28"]


def test_sessionless_header_mismatch_is_jsonrpc_error(sessioned_server):
    client = MCPClient(sessioned_server.mcp_url)
    client.discover()
    with pytest.raises(MCPJSONRPCError) as err:
        client.request("tools/list", client.envelope_params(), client.envelope_headers("tools/call"))
    assert err.value.code == -32020


def test_stale_session_is_session_not_found(sessioned_server):
    client = MCPClient(sessioned_server.mcp_url)
    client.connect_handshake()
    stale = client.session_id
    assert client.terminate_session() is True
    client.session_id = stale
    with pytest.raises(MCPSessionNotFoundError) as err:
        client.request("tools/list")
    assert err.value.kind == "session_not_found"
    assert stale not in str(err.value)  # only a prefix is shown
    assert stale[:8] in str(err.value)


def test_load_balancer_without_affinity_loses_the_session(round_robin_proxy):
    with pytest.raises(MCPSessionNotFoundError) as err:
        MCPClient(round_robin_proxy).probe("handshake")
    assert "session affinity" in str(err.value)


def test_sessionless_protocol_survives_load_balancer_without_affinity(round_robin_proxy, sessioned_server, json_server):
    seen = set()
    for _ in range(2):
        probe = MCPClient(round_robin_proxy).probe("sessionless", call_tool="whoami")
        seen.add(probe.tool_result["text"])
    assert seen <= {sessioned_server.instance, json_server.instance}


# --------------------------------------------------------------------------- #
# auto falls back to the handshake on a handshake-only server
# --------------------------------------------------------------------------- #


class _HandshakeOnlyHandler(http.server.BaseHTTPRequestHandler):
    """A minimal 2025-era-only MCP endpoint (rejects 2026 requests as older SDKs do)."""

    protocol_version = "HTTP/1.1"

    def _json(self, status, payload, headers=None):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        msg = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        version = self.headers.get("MCP-Protocol-Version")
        if msg.get("method") == "initialize":
            result = {
                "protocolVersion": "2025-06-18",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "legacy-only", "version": "0.9"},
            }
            return self._json(200, {"jsonrpc": "2.0", "id": msg["id"], "result": result}, {"Mcp-Session-Id": "legacy1"})
        if version not in mc.HANDSHAKE_VERSIONS:
            err = {"code": -32600, "message": "Bad Request: Unsupported protocol version: %s" % version}
            return self._json(400, {"jsonrpc": "2.0", "id": None, "error": err})
        if "id" not in msg:
            self.send_response(202)
            self.send_header("Content-Length", "0")
            return self.end_headers()
        tools = [{"name": "legacy_tool", "inputSchema": {"type": "object"}}]
        return self._json(200, {"jsonrpc": "2.0", "id": msg["id"], "result": {"tools": tools}})

    def do_DELETE(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def handshake_only_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HandshakeOnlyHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/mcp"
    server.shutdown()
    server.server_close()


def test_auto_falls_back_to_handshake(handshake_only_server):
    probe = MCPClient(handshake_only_server).probe("auto")
    assert probe.protocol == "handshake"
    assert probe.protocol_version == "2025-06-18"
    assert probe.tool_names == ["legacy_tool"]
    assert probe.session_terminated is True
    assert "server/discover failed (jsonrpc_error)" in probe.fallback_reason
    assert "server/discover" in probe.timings_ms


def test_auto_prefers_sessionless_on_dual_stack_server(sessioned_server):
    probe = MCPClient(sessioned_server.mcp_url).probe("auto", protocol_version="2025-06-18")
    assert probe.protocol == "sessionless" and probe.fallback_reason is None


# --------------------------------------------------------------------------- #
# Pure helpers and configuration
# --------------------------------------------------------------------------- #


def test_redact_url_drops_credentials_query_and_fragment():
    assert mc.redact_url("https://user:pw@example.com:8443/mcp?token=x#frag") == "https://example.com:8443/mcp"


def test_credentials_in_url_never_reach_messages(closed_port_url):
    url = closed_port_url.replace("http://", "http://admin:hunter2@")
    with pytest.raises(MCPConnectionError) as err:
        MCPClient(url).probe("handshake")
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize("url", ["ftp://example.com/mcp", "not a url", "http:///mcp", "http://host:99999/mcp"])
def test_invalid_urls_are_configuration_errors(url):
    with pytest.raises(MCPConfigurationError):
        MCPClient(url)


def test_unreadable_ca_path_is_configuration_error(tmp_path):
    with pytest.raises(MCPConfigurationError) as err:
        MCPClient("https://127.0.0.1:1/mcp", ca_path=str(tmp_path / "missing.pem"))
    assert "ca_path" in str(err.value)


def test_header_value_encoding():
    assert mc.encode_header_value("slow_count") == "slow_count"
    assert mc.encode_header_value(" padded") == "=?base64?IHBhZGRlZA==?="
    assert mc.encode_header_value("héllo").startswith("=?base64?")


def test_mcp_param_headers_follow_x_mcp_header_annotations():
    schema = {
        "type": "object",
        "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "dry_run": {"type": "boolean", "x-mcp-header": "DryRun"},
            "nested": {"type": "object", "properties": {"tenant": {"type": "string", "x-mcp-header": "Tenant"}}},
            "plain": {"type": "string"},
        },
    }
    headers = mc.mcp_param_headers(schema, {"region": "eu-west", "dry_run": True, "nested": {"tenant": "ä"}})
    assert headers == {
        "Mcp-Param-Region": "eu-west",
        "Mcp-Param-DryRun": "true",
        "Mcp-Param-Tenant": "=?base64?w6Q=?=",
    }


def test_tls_handshake_timeout_is_timeout_error(silent_server_url):
    url = silent_server_url.replace("http://", "https://")
    with pytest.raises(MCPTimeoutError) as err:
        MCPClient(url, timeout=0.5).probe("handshake")
    assert "TLS handshake" in str(err.value)


def test_invalid_header_value_is_configuration_error(sessioned_server):
    with pytest.raises(MCPConfigurationError) as err:
        MCPClient(sessioned_server.mcp_url, headers={"X-Bad": "a\r\nInjected: yes"}).probe("handshake")
    assert "check headers" in str(err.value)
