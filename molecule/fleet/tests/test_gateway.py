"""The gateway through the virtual IP: TLS, bearer tokens, per-client limits, a real SDK client,
and passive backend health (a dead backend costs no call and returns when it is back)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from fleetops_testlib import container_host, container_ip, wait_healthy
from lbha import CA, VIP, discover_body, discover_headers, lb_host, raw, sdk_call, tls_context, token, url, vip_state_changes

STATELESS = "/mcp/reference-stateless"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_the_official_sdk_calls_a_tool_through_the_vip_over_tls_with_a_token(mode):
    async def run():
        http = httpx2.AsyncClient(verify=tls_context(), headers={"Authorization": f"Bearer {token()}"},
                                  timeout=httpx2.Timeout(15.0, read=30.0))
        async with http, Client(streamable_http_client(url(VIP, "reference"), http_client=http), mode=mode) as sdk:
            tools = await sdk.list_tools()
            result = await sdk.call_tool("echo", {"text": "through the VIP"})
            return sdk.protocol_version, {t.name for t in tools.tools}, result.content[0].text

    version, tools, text = anyio.run(run)
    assert "whoami" in tools and "through the VIP" in text
    assert version == ("2025-11-25" if mode == "legacy" else "2026-07-28")


@pytest.mark.parametrize(
    ("authorization", "challenge"),
    [
        (None, 'Bearer realm="fleetops-mcp"'),
        ("Bearer not-a-known-token-0123456789", 'Bearer realm="fleetops-mcp", error="invalid_token"'),
        ("Basic dXNlcjpwYXNz", 'Bearer realm="fleetops-mcp", error="invalid_token"'),
    ],
    ids=["no-token", "wrong-token", "not-bearer"],
)
def test_a_missing_or_wrong_token_gets_401_with_www_authenticate(authorization, challenge):
    headers = discover_headers(agent=None)
    if authorization:
        headers["Authorization"] = authorization
    status, response_headers, body = raw("POST", STATELESS, discover_body(), headers)
    assert status == 401
    assert response_headers["www-authenticate"] == challenge
    assert json.loads(body)["error"]["message"] == "Unauthorized"
    assert response_headers["strict-transport-security"].startswith("max-age=")


# The demo inventory admits this browser origin for `reference` only (allowed_origins).
CONSOLE = "https://console.fleet.example"


def test_a_browser_origin_is_checked_at_the_vip_before_the_token():
    evil = {"Origin": "https://evil.example"}
    for path in ("/mcp/reference", STATELESS, "/mcp/time"):
        for headers in (discover_headers(), discover_headers(agent=None)):
            status, response_headers, body = raw("POST", path, discover_body(), {**headers, **evil})
            assert status == 403, (path, body)
            error = json.loads(body)
            assert error["error"]["code"] == -32600 and "id" not in error, body
            assert "www-authenticate" not in response_headers
    # The origin `reference` admits is its own: the other servers refuse it.
    for path in (STATELESS, "/mcp/time"):
        assert raw("POST", path, discover_body(), {**discover_headers(), "Origin": CONSOLE})[0] == 403, path
    status, headers, body = raw("POST", "/mcp/reference", discover_body(), {**discover_headers(), "Origin": CONSOLE})
    assert status == 200, body
    assert headers["access-control-allow-origin"] == CONSOLE
    assert b'"result"' in body  # JSON or an event stream, as the server chooses
    # Its preflight is answered at the gateway, without a token.
    status, headers, _ = raw("OPTIONS", "/mcp/reference", None, {
        "Origin": CONSOLE, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, mcp-protocol-version, mcp-method"})
    assert status == 204 and headers["access-control-allow-origin"] == CONSOLE
    # Native clients send no Origin and get no CORS headers.
    status, headers, _ = raw("POST", "/mcp/reference", discover_body(), discover_headers())
    assert status == 200 and "access-control-allow-origin" not in headers


AUDIT_LOG = "/var/log/nginx/mcp-audit.json"


def _vip_holder() -> str:
    return "lb-1" if f" {VIP}/" in lb_host("lb-1").run("ip -o -4 addr show").stdout else "lb-2"


@pytest.mark.parametrize("protocol", ["sessionless", "handshake"])
def test_each_tool_call_through_the_vip_is_one_audit_line_without_its_arguments_or_token(protocol):
    holder = _vip_holder()
    since = int(lb_host(holder).run(f"cat {AUDIT_LOG} 2>/dev/null | wc -l").stdout.strip())
    # The third-party stdio server and ours; an argument value to look for in the log.
    result = sdk_call(VIP, "time", "get_current_time", {"timezone": "Pacific/Chatham"}, protocol=protocol)
    assert "Pacific/Chatham" in result["content"][0]["text"] and not result.get("isError")
    assert sdk_call(VIP, "reference-stateless", "fail", {"message": "audit-probe-arg"}, protocol=protocol)["isError"]
    deadline = time.monotonic() + 5
    while True:
        text = lb_host(holder).run(f"tail -n +{since + 1} {AUDIT_LOG}").stdout
        lines = [json.loads(line) for line in text.splitlines()]
        if len(lines) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [(x["server"], x["tool"], x["outcome"]) for x in lines] == [
        ("time", "get_current_time", "ok"), ("reference-stateless", "fail", "tool_error")], lines
    for line in lines:
        assert line["client_id"] == "bulk-agent" and line["status"] == 200 and line["upstream"], line
    assert "Pacific/Chatham" not in text and "audit-probe-arg" not in text and token() not in text
    audit = lb_host(holder).file(AUDIT_LOG)
    assert (audit.user, audit.group, audit.mode) == ("www-data", "adm", 0o640)


def _tool_call_2026(tool: str, arguments: dict, request_id: int = 7) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {
        "name": tool, "arguments": arguments, "_meta": discover_body()["params"]["_meta"]}}


def _headers_2026(name: str) -> dict:
    return {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": name,
            "Authorization": f"Bearer {token()}"}


def test_the_2026_headers_are_checked_against_the_body_at_the_vip():
    import base64
    # Disagreeing or missing headers: 400 HeaderMismatch from the gateway, for our server and a third-party one.
    for path, tool, arguments in ((STATELESS, "echo", {"text": "hi"}),
                                  ("/mcp/time", "get_current_time", {"timezone": "UTC"})):
        for change in ({"Mcp-Name": "add"}, {"Mcp-Method": "tools/list"}, {"MCP-Protocol-Version": "2025-11-25"}):
            status, _, body = raw("POST", path, _tool_call_2026(tool, arguments), {**_headers_2026(tool), **change})
            answer = json.loads(body)
            assert status == 400 and answer["error"]["code"] == -32020 and answer["id"] == 7, (path, change, body)
        headers = _headers_2026(tool)
        del headers["Mcp-Name"]
        status, _, body = raw("POST", path, _tool_call_2026(tool, arguments), headers)
        assert status == 400 and "Mcp-Name" in json.loads(body)["error"]["message"], body
    # A base64-encoded Mcp-Name is decoded before it is compared, and the call goes through.
    encoded = "=?base64?" + base64.b64encode(b"echo").decode() + "?="
    status, _, body = raw("POST", STATELESS, _tool_call_2026("echo", {"text": "through"}), _headers_2026(encoded))
    assert status == 200 and b"through" in body, body
    # Matching plain headers reach the third-party server.
    status, _, body = raw("POST", "/mcp/time", _tool_call_2026("get_current_time", {"timezone": "UTC"}),
                          _headers_2026("get_current_time"))
    assert status == 200 and b"UTC" in body, body


def _all_messages(exc: BaseException) -> str:
    """The text of an exception and of everything inside it (exception groups, causes)."""
    seen, out, todo = set(), [], [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        out.append(f"{type(e).__name__}: {e}")
        todo.extend(getattr(e, "exceptions", ()))
        todo.extend((e.__cause__, e.__context__))
    return " | ".join(out)


@pytest.mark.parametrize("protocol", ["sessionless", "handshake"])
def test_a_client_with_tool_rules_calls_only_its_tools_through_the_vip(protocol):
    result = sdk_call(VIP, "time", "get_current_time", {"timezone": "UTC"}, protocol=protocol, agent="time-agent")
    assert "UTC" in result["content"][0]["text"]
    assert sdk_call(VIP, "reference-stateless", "echo", {"text": "ok"}, protocol=protocol,
                    agent="time-agent")["content"][0]["text"] == "ok"
    # Another tool of the same server, and a server it has no rules for: refused by the gateway.
    for server, tool, arguments in (("time", "convert_time", {"source_timezone": "UTC", "time": "12:00",
                                                              "target_timezone": "Europe/Paris"}),
                                    ("reference-stateless", "add", {"a": 1, "b": 2}),
                                    ("reference", "echo", {"text": "no"})):
        with pytest.raises(Exception) as refused:  # noqa: PT011 - the SDK's error type differs by mode
            sdk_call(VIP, server, tool, arguments, protocol=protocol, agent="time-agent")
        said = _all_messages(refused.value)
        assert "403" in said or "not allowed" in said, (server, tool, said)
    # The raw answer: HTTP 403 with the JSON-RPC error and the request's id.
    status, _, body = raw("POST", STATELESS, _tool_call_2026("add", {"a": 1, "b": 2}, 9),
                          {**_headers_2026("add"), "Authorization": f"Bearer {token('time-agent')}"})
    answer = json.loads(body)
    assert status == 403 and answer["id"] == 9 and answer["error"]["code"] == -32003, body


# A second, independent MCP client: the MCP Inspector's CLI (npm; the TypeScript SDK), installed on first use.
INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"


@pytest.fixture(scope="module")
def inspector():
    from lbha import CACHE
    prefix = CACHE / "mcp-inspector"
    binary = prefix / "node_modules" / ".bin" / "mcp-inspector"
    if not binary.exists():
        result = subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", INSPECTOR],
                                capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, result.stderr[-2000:]

    def run(server: str, *args: str, agent: str | None = "bulk-agent") -> subprocess.CompletedProcess:
        headers = ["--header", f"Authorization: Bearer {token(agent)}"] if agent else []
        return subprocess.run([str(binary), "--cli", url(VIP, server), "--transport", "http", *headers, *args],
                              capture_output=True, text=True, timeout=60, check=False,
                              env={**os.environ, "NODE_EXTRA_CA_CERTS": CA, "NO_COLOR": "1"})
    return run


def test_the_mcp_inspector_cli_lists_and_calls_tools_through_the_vip_with_a_token(inspector):
    listed = inspector("reference", "--method", "tools/list")
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert {"echo", "whoami"} <= {t["name"] for t in json.loads(listed.stdout)["tools"]}
    called = inspector("reference", "--method", "tools/call", "--tool-name", "echo", "--tool-arg", "text=inspected")
    assert called.returncode == 0, called.stderr[-2000:]
    assert json.loads(called.stdout)["content"][0]["text"] == "inspected"
    # The third-party stdio server behind its bridge, the same way.
    called = inspector("time", "--method", "tools/call", "--tool-name", "get_current_time", "--tool-arg",
                       "timezone=UTC")
    assert called.returncode == 0, called.stderr[-2000:]
    assert "UTC" in json.loads(called.stdout)["content"][0]["text"]
    # Without a token the gateway turns it away (401: the Inspector asks for authorization and gives up, no TTY).
    refused = inspector("reference", "--method", "tools/list", agent=None)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "auth" in said.lower() and "tools" not in refused.stdout, said


def test_a_known_token_is_not_passed_on_to_the_backend():
    status, headers, body = raw("POST", STATELESS, discover_body(), discover_headers())
    assert status == 200 and headers["strict-transport-security"] == "max-age=63072000"
    for host in ("ms-1", "ms-2"):
        logs = container_host(host).run("docker logs --tail 200 mcp-reference-stateless-1 2>&1").stdout
        assert token() not in logs


def test_a_client_over_its_rate_gets_429():
    # throttled-agent: 6 a minute with a burst of 2, so at most 3 at once.
    statuses = [raw("POST", STATELESS, discover_body(i), discover_headers("throttled-agent"))[0] for i in range(6)]
    assert statuses[:3] == [200, 200, 200], statuses
    assert statuses[3:] == [429, 429, 429], statuses
    # Another client is not affected.
    assert raw("POST", STATELESS, discover_body(), discover_headers("bulk-agent"))[0] == 200


def test_a_client_over_its_connection_limit_gets_429():
    # single-agent may have one request open; a slow tool call holds it.
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "slow_count", "arguments": {"steps": 3, "delay": 1},
        "_meta": discover_body()["params"]["_meta"]}}
    headers = {**discover_headers("single-agent"), "Mcp-Method": "tools/call", "Mcp-Name": "slow_count"}
    held = {}

    def hold():
        try:
            held["result"] = raw("POST", STATELESS, body, headers, timeout=20)
        except OSError as exc:
            held["error"] = repr(exc)

    before = set(vip_state_changes())
    slow = threading.Thread(target=hold)
    slow.start()
    time.sleep(1.0)
    second = raw("POST", STATELESS, discover_body(), discover_headers("single-agent"))[0]
    slow.join()
    assert second == 429
    # A VIP that moved meanwhile cuts the held connection: say so if it did.
    moved = [change for change in vip_state_changes() if change not in before]
    assert "result" in held, f"the held call failed ({held.get('error')}); VRRP state changes meanwhile: {moved}"
    assert held["result"][0] == 200 and b'"result"' in held["result"][2]
    assert raw("POST", STATELESS, discover_body(), discover_headers("single-agent"))[0] == 200


def test_plain_http_is_redirected_to_https_keeping_the_method():
    import http.client
    conn = http.client.HTTPConnection(VIP, 80, timeout=5)
    conn.request("POST", "/mcp/reference?x=1", body="{}", headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 308
    assert response.getheader("Location") == f"https://{VIP}/mcp/reference?x=1"


@pytest.mark.parametrize(("flag", "accepted"), [("-tls1_1", False), ("-tls1_2", True), ("-tls1_3", True)])
def test_only_tls_1_2_and_1_3_are_accepted(flag, accepted):
    # SECLEVEL=0 lets this client offer TLS 1.1, so a refusal is the server's.
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"{VIP}:443", flag, "-cipher", "DEFAULT:@SECLEVEL=0",
         "-CAfile", CA, "-verify_return_error", "-servername", "mcp.fleetops.test"],
        input="", capture_output=True, text=True, timeout=15)
    output = result.stdout + result.stderr
    if accepted:
        assert result.returncode == 0 and "Verify return code: 0 (ok)" in output, output[-1500:]
    else:
        assert result.returncode != 0 and "protocol version" in output, output[-1500:]


def test_the_certificate_names_the_vip_and_is_signed_by_the_private_ca():
    import socket
    import ssl
    context = ssl.create_default_context(cafile=CA)
    with socket.create_connection((VIP, 443), timeout=5) as sock, context.wrap_socket(sock, server_hostname=VIP) as tls:
        cert = tls.getpeercert()
    assert ("IP Address", VIP) in cert["subjectAltName"]
    assert ("DNS", "mcp.fleetops.test") in cert["subjectAltName"]
    # The CA key stays on the controller.
    for lb in ("lb-1", "lb-2"):
        assert not lb_host(lb).file("/etc/nginx/tls/ca.key").exists
        key = lb_host(lb).file("/etc/nginx/tls/fleetops.key")
        assert key.mode == 0o600 and key.user == "root"


ACCESS_LOG = "/var/log/nginx/mcp-access.json"


def _log_lines(lb: str) -> int:
    return int(lb_host(lb).run(f"wc -l < {ACCESS_LOG}").stdout.strip())


def _records_after(lb: str, line: int) -> list[dict]:
    log = lb_host(lb).run(f"tail -n +{line + 1} {ACCESS_LOG}").stdout.splitlines()
    return [r for r in map(json.loads, log) if r["uri"] == STATELESS]


def test_a_killed_backend_costs_no_call_and_returns_when_restarted():
    holder = "lb-1" if f" {VIP}/" in lb_host("lb-1").run("ip -o -4 addr show").stdout else "lb-2"
    docker = container_host("ms-1")
    dead = f"{container_ip('ms-1')}:18090"
    since = _log_lines(holder)
    errors_since = int(lb_host(holder).run("wc -l < /var/log/nginx/error.log").stdout.strip())
    assert docker.run("docker kill mcp-reference-stateless-1").rc == 0
    try:
        started = time.monotonic()
        texts, failed = [], []
        while time.monotonic() - started < 8:  # more than one fail_timeout (5 s)
            # The official SDK client, sessionless: tools/list, then tools/call, on a new connection.
            # At most 20 calls (40 requests) a second: bulk-agent's own limit is 100 requests a second
            # (burst 200), and a loop without a pause went past it (429s, not the dead backend).
            began = time.monotonic()
            try:
                texts.append(sdk_call(VIP, "reference-stateless")["content"][0]["text"])
            except Exception as exc:  # noqa: BLE001 - reported below with what the gateway logged
                failed.append(f"{time.monotonic() - started:.2f} s: {exc!r}")
            time.sleep(max(0.0, 0.05 - (time.monotonic() - began)))
        records = _records_after(holder, since)
        errors = lb_host(holder).run(f"tail -n +{errors_since + 1} /var/log/nginx/error.log").stdout
        refused = [r for r in records if r["status"] >= 400]
        assert not failed, {"failed": failed[:5], "gateway answered": refused[:5], "error log": errors[-3000:]}
        assert texts and all(t.startswith("ms-2/") for t in texts), texts
        tried_dead = [r["upstream"] for r in records if dead in r["upstream"]]
        # Each try of the dead backend moved on at once to the live one; the
        # workers share its failure (upstream zone), so it is tried again only
        # after fail_timeout (5 s): at most twice in 8 s.
        assert all(u.startswith(dead + ", ") for u in tried_dead), tried_dead
        assert 1 <= len(tried_dead) <= 2, tried_dead
    finally:
        assert docker.run("docker start mcp-reference-stateless-1").rc == 0
    wait_healthy(docker, "mcp-reference-stateless-1")
    back = time.monotonic()
    seen = set()
    while "ms-1" not in seen and time.monotonic() - back < 15:
        seen.add(sdk_call(VIP, "reference-stateless")["content"][0]["text"].split("/")[0])
        time.sleep(0.05)
    assert "ms-1" in seen, f"ms-1 not back in rotation after {time.monotonic() - back:.1f} s"
    print(f"restarted backend back in rotation {time.monotonic() - back:.1f} s after it answered MCP again")


def _served_certificate(address: str) -> dict:
    import socket
    import ssl
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((address, 443), timeout=5) as sock, context.wrap_socket(sock) as tls:
        der = tls.getpeercert(binary_form=True)
    return subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject"], input=der,
                          capture_output=True, check=True).stdout.decode()


def test_a_certificate_from_controller_files_is_served_and_its_key_kept_private(tmp_path):
    from fleetops_testlib import run_playbook
    key, cert = tmp_path / "lb.key", tmp_path / "lb.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=files-source.fleetops.test"],
                   check=True, capture_output=True)
    lb2 = container_ip("lb-2")
    try:
        # lb-2 only (the one looked at): the VIP's holder keeps serving the private CA's certificate.
        result = run_playbook("../../playbooks/load_balancers.yml", limit="lb-2", extra_vars={
            "nginx_lb_tls_source": "files", "nginx_lb_tls_certificate_src": str(cert), "nginx_lb_tls_key_src": str(key)})
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        assert "files-source.fleetops.test" in _served_certificate(lb2)
        assert key.read_text().splitlines()[1] not in output  # the key never shows
        served_key = lb_host("lb-2").file("/etc/nginx/tls/fleetops.key")
        assert served_key.mode == 0o600 and served_key.user == "root"
    finally:
        assert run_playbook("../../playbooks/load_balancers.yml", limit="lb-2").returncode == 0
    assert "files-source" not in _served_certificate(lb2)
    assert raw("POST", STATELESS, discover_body(), discover_headers())[0] == 200


def _unauthenticated_status() -> int:
    return raw("POST", STATELESS, discover_body(), discover_headers(agent=None))[0]


def test_a_flood_of_wrong_tokens_gets_429_after_a_bounded_number_of_401s():
    # Requests without a known token: 30 a minute with a burst of 10 per source address (the role's
    # defaults), checked before the token, so a guesser gets a few 401s, then 429s.
    began = time.monotonic()
    statuses = []
    for i in range(60):
        headers = {**discover_headers(agent=None), "Authorization": f"Bearer guess-{i:04d}-0123456789abcdefghij"}
        statuses.append(raw("POST", STATELESS, discover_body(i), headers)[0])
    took = time.monotonic() - began
    assert set(statuses) <= {401, 429}, statuses
    # Burst 10 plus the one request the bucket admits every 2 s (the loop took `took` s); earlier
    # tests' 401s only lower the count.
    assert statuses.count(401) <= 11 + int(took / 2) + 1, (took, statuses)
    assert statuses.count(429) >= 60 - (12 + int(took / 2)) and statuses[-1] == 429, (took, statuses)
    # A known token from the same address is not affected.
    assert raw("POST", STATELESS, discover_body(), discover_headers())[0] == 200
    # After a pause (the bucket drains at one request every 2 s) a missing token gets its 401 again,
    # so the tests after this one see the usual answers.
    deadline = time.monotonic() + 30
    while _unauthenticated_status() != 401:
        assert time.monotonic() < deadline, "the per-address budget for requests without a token did not recover"
        time.sleep(2)
    status, _, body = raw("POST", STATELESS, discover_body(), discover_headers())
    assert status == 200 and b'"result"' in body


def test_a_session_id_used_with_another_clients_token_gets_404_while_its_owner_continues():
    import re

    from lbha import LBS, raw_session
    carried = raw_session(agent="bulk-agent")
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}
    status, _, body = raw("POST", "/mcp/reference", call, carried)
    backend = re.search(rb"ms-[0-9]/mcp-reference-[0-9]", body)
    assert status == 200 and backend, (status, body[:300])
    # The same session id with demo-agent's token, through the VIP and through each load balancer:
    # its tag is bulk-agent's, which demo-agent does not have.
    copied = {**carried, "Authorization": f"Bearer {token('demo-agent')}"}
    for where in [VIP] + [container_ip(lb) for lb in LBS]:
        status, _, body = raw("POST", "/mcp/reference", call, copied, where)
        assert status == 404, (where, status, body[:300])
        assert json.loads(body)["error"]["message"] == "Session not found"
    # The owner's session goes on, on the same backend.
    status, _, body = raw("POST", "/mcp/reference", call, carried)
    assert status == 200 and backend.group(0) in body, (status, body[:300])
