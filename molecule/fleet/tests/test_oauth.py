"""OAuth 2.1 resource-server mode through the VIP over TLS (issue 19 item 2): the `time` server
(mcp-server-time, third-party, sessioned behind its bridge) takes JWT access tokens from the demo's
TEST issuer beside the static tokens.

The test issuer (tests/oauth_test_issuer, named as such: it is not an authorization server) serves a
JWKS on each load balancer's loopback; its signing keys were made with community.crypto by
prepare.yml in $FLEETOPS_CACHE/test-issuer, and these tests mint tokens with them. The load balancers
fetch the JWKS with fleetops-jwks-sync on their timer (every 15 s in the demo inventory).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pathlib
import sys
import time
import uuid

import anyio
import httpx2
import pytest

from fleetops_testlib import container_host, container_ip, sdk_probe
from lbha import LBS, VIP, discover_body, lb_host, raw, tls_context, token, url

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "tests" / "oauth_test_issuer"))
import fleetops_test_issuer as issuer  # noqa: E402

KEYS = pathlib.Path(os.environ["FLEETOPS_CACHE"]) / "test-issuer"
ISSUER = "https://issuer.fleetops.test"
RESOURCE = f"https://{VIP}/mcp/time"
METADATA = f"https://{VIP}/.well-known/oauth-protected-resource/mcp/time"
AUDIT_LOG = "/var/log/nginx/mcp-audit.json"
VERIFIED_DIR = "/run/fleetops-oauth-verified"
JWKS_ON_LB = "/var/lib/fleetops-test-issuer/www/jwks.json"
# The demo's refresh interval (nginx_lb_oauth_jwks_refresh).
REFRESH_S = 15


def _key(kid: str):
    return issuer.load_private_key(str(KEYS / f"{kid}.pem"))


def jwt(subject: str = "agent-7", scope: str = "mcp:tools", kid: str = "rsa-1", **changes) -> str:
    claims = issuer.claims(ISSUER, RESOURCE, subject, scope)
    claims.update(changes)
    return issuer.mint(_key(kid), kid, claims)


def _call(token_value: str | None, tool: str = "get_current_time", request_id: int = 1, where: str = VIP):
    """One sessionless (2026-07-28) tools/call on `time`: the sessioned server answers it without initialize."""
    headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": tool}
    if token_value:
        headers["Authorization"] = f"Bearer {token_value}"
    body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {
        "name": tool, "arguments": {"timezone": "UTC"}, "_meta": discover_body()["params"]["_meta"]}}
    return raw("POST", "/mcp/time", body, headers, where)


@pytest.mark.parametrize("protocol", ["handshake", "sessionless"])
@pytest.mark.parametrize("kid", ["rsa-1", "ec-1"])
def test_the_official_sdk_calls_the_time_server_through_the_vip_with_a_jwt(protocol, kid):
    result = sdk_probe(url(VIP, "time"), protocol, call_tool="get_current_time", tool_arguments={"timezone": "UTC"},
                       verify=tls_context(), headers={"Authorization": f"Bearer {jwt(kid=kid)}"})
    assert "get_current_time" in result["tools"]
    assert "UTC" in result["tool_result"]["content"][0]["text"] and not result["tool_result"].get("isError")


def test_the_official_sdk_discovers_the_protected_resource_metadata_from_a_401():
    from mcp.client.auth.utils import (
        build_protected_resource_metadata_discovery_urls, extract_resource_metadata_from_www_auth,
        extract_scope_from_www_auth,
    )
    from mcp.shared.auth import ProtectedResourceMetadata

    async def run():
        async with httpx2.AsyncClient(verify=tls_context(), timeout=10) as http:
            refused = await http.post(url(VIP, "time"), json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                      headers={"Accept": "application/json, text/event-stream"})
            found = extract_resource_metadata_from_www_auth(refused)
            scope = extract_scope_from_www_auth(refused)
            urls = build_protected_resource_metadata_discovery_urls(found, url(VIP, "time"))
            document = await http.get(urls[0])
            return refused.status_code, found, scope, urls, document.status_code, document.text

    status, found, scope, urls, doc_status, text = anyio.run(run)
    assert status == 401 and found == METADATA and scope == "mcp:tools" and urls[0] == METADATA
    assert doc_status == 200
    metadata = ProtectedResourceMetadata.model_validate_json(text)
    assert str(metadata.resource).rstrip("/") == RESOURCE
    assert [str(a).rstrip("/") for a in metadata.authorization_servers] == [ISSUER]
    assert metadata.scopes_supported == ["mcp:admin", "mcp:tools"]
    # The path-less form, for clients that try it second, names the same issuer.
    status, _, body = raw("GET", "/.well-known/oauth-protected-resource")
    assert status == 200 and json.loads(body)["authorization_servers"] == [ISSUER]


def _challenge(error: str, description: str) -> str:
    return (f'Bearer realm="fleetops-mcp", error="{error}", error_description="{description}", '
            f'resource_metadata="{METADATA}"')


def test_each_bad_token_gets_the_specified_status_and_challenge_through_the_vip():
    public_pem = (KEYS / "rsa-1.pem").read_bytes()  # the HS256 attack needs only the public half; the PEM is worse
    now = int(time.time())
    cases = [
        ("expired", 401, _challenge("invalid_token", "expired"), jwt(exp=now - 3600, iat=now - 3900, nbf=now - 3900)),
        ("wrong audience", 401, _challenge("invalid_token", "wrong audience"), jwt(aud=f"https://{VIP}/mcp/reference")),
        ("wrong issuer", 401, _challenge("invalid_token", "unknown issuer"), jwt(iss="https://evil.example")),
        ("bad signature", 401, _challenge("invalid_token", "bad signature"),
         ".".join(jwt().split(".")[:2] + [jwt(subject="other").split(".")[2]])),
        ("alg none", 401, _challenge("invalid_token", "algorithm not accepted"),
         issuer.mint_none(issuer.claims(ISSUER, RESOURCE, "agent-7", "mcp:tools"), kid="rsa-1")),
        ("HS256", 401, _challenge("invalid_token", "algorithm not accepted"),
         issuer.mint_hs256(public_pem, issuer.claims(ISSUER, RESOURCE, "agent-7", "mcp:tools"), kid="rsa-1")),
        ("missing scope", 403, _challenge("insufficient_scope", "the token lacks a required scope")
         + ', scope="mcp:tools"', jwt(scope="mcp:other")),
    ]
    failures = []
    for case, status, challenge, value in cases:
        got, headers, body = _call(value)
        if (got, headers.get("www-authenticate")) != (status, challenge) or "error" not in json.loads(body):
            failures.append((case, got, headers.get("www-authenticate"), body[:200]))
    assert not failures, failures


def test_a_tool_the_tokens_scopes_do_not_list_gets_a_json_rpc_error():
    status, _, body = _call(jwt(scope="mcp:tools"), tool="convert_time", request_id=41)
    assert status == 403
    assert json.loads(body) == {"jsonrpc": "2.0", "id": 41, "error": {
        "code": -32003, "message": 'Forbidden: tool "convert_time" is not allowed for this client'}}
    # mcp:admin lists every tool: the server itself answers (its own error for the missing arguments).
    status, _, body = _call(jwt(scope="mcp:tools mcp:admin"), tool="convert_time", request_id=42)
    assert status == 200 and "-32003" not in body.decode()


def test_each_call_is_one_audit_line_naming_the_subject_never_the_token():
    subject = f"audit-{uuid.uuid4().hex[:8]}"
    value = jwt(subject=subject)
    address = container_ip("lb-1")
    status, _, _ = _call(value, request_id=77, where=address)
    assert status == 200
    lb = lb_host("lb-1")
    deadline = time.monotonic() + 5
    while subject not in lb.file(AUDIT_LOG).content_string and time.monotonic() < deadline:
        time.sleep(0.2)
    text = lb.file(AUDIT_LOG).content_string
    lines = [json.loads(line) for line in text.splitlines() if subject in line]
    assert [(x["client_id"], x["server"], x["tool"], x["rpc_id"], x["outcome"]) for x in lines] == [
        (f"{subject}@test-issuer", "time", "get_current_time", "77", "ok")], lines
    signature = value.split(".")[2]
    assert signature not in text and signature not in lb.file("/var/log/nginx/mcp-access.json").content_string
    # Its signature was recorded as verified under the token's SHA-256: the workers' own directory, no token there.
    verified = lb.file(VERIFIED_DIR)
    assert (verified.user, verified.group, verified.mode) == ("www-data", "www-data", 0o700)
    record = lb.file(f"{VERIFIED_DIR}/{hashlib.sha256(value.encode()).hexdigest()}")
    assert record.is_file and record.mode == 0o600 and json.loads(record.content_string)["kid"] == "rsa-1"
    assert lb.run(f"grep -rqF -e {signature} -e {subject} {VERIFIED_DIR}").rc == 1


def _write(host, path: str, data: bytes, mode: str = "0644") -> None:
    encoded = base64.b64encode(data).decode()
    result = host.run(f"echo {encoded} | base64 -d > {path}.tmp && chmod {mode} {path}.tmp && mv {path}.tmp {path}")
    assert result.rc == 0, result.stderr


def test_a_backend_receives_the_client_name_and_never_a_credential():
    """What reaches the `time` backends (port 18100 on the Docker hosts), read off the wire there: the
    gateway's X-Fleetops-Client, never the client's Authorization, for a JWT and for a static token."""
    capture = pathlib.Path(__file__).resolve().parents[1] / "files" / "request-capture.py"
    unit = f"fleetops-capture-{uuid.uuid4().hex[:8]}"
    hosts = {name: container_host(name) for name in ("ms-1", "ms-2")}
    for host in hosts.values():
        _write(host, "/tmp/request-capture.py", capture.read_bytes(), "0755")
        started = host.run(f"systemd-run --unit {unit} --property=StandardOutput=file:/tmp/{unit}.out "
                           f"/usr/bin/python3 /tmp/request-capture.py 18100 60")
        assert started.rc == 0, started.stderr
    for host in hosts.values():
        deadline = time.monotonic() + 5
        while "capturing" not in host.run(f"cat /tmp/{unit}.out").stdout:
            assert time.monotonic() < deadline, "the capture did not start"
            time.sleep(0.2)
    subject = f"wire-{uuid.uuid4().hex[:8]}"
    value = jwt(subject=subject)
    for _ in range(4):  # both Docker hosts' backends get some
        assert _call(value)[0] == 200
        assert _call(token("bulk-agent"))[0] == 200
    time.sleep(1)  # the last packets reach the capture
    for host in hosts.values():
        host.run(f"systemctl stop {unit}")
    seen = "".join(host.run(f"cat /tmp/{unit}.out").stdout for host in hosts.values())
    assert f"X-Fleetops-Client: {subject}@test-issuer" in seen and "X-Fleetops-Client: bulk-agent" in seen, seen[-2000:]
    assert "authorization:" not in seen.lower()
    assert value.split(".")[2] not in seen and token("bulk-agent") not in seen


def _publish_jwks(kids: list[str]) -> None:
    document = json.dumps(issuer.jwks([(_key(kid), kid) for kid in kids]), indent=2).encode()
    for name in LBS:
        _write(lb_host(name), JWKS_ON_LB, document)


# The nginx master's children (its workers), read from /proc: a reload replaces them.
WORKERS = ("python3 -c 'import os\nmaster = open(\"/run/nginx.pid\").read().split()[0]\nfor p in os.listdir(\"/proc\"):\n"
           "    try:\n        stat = open(\"/proc/%s/stat\" % p).read()\n    except OSError:\n        continue\n"
           "    if stat.rsplit(\")\", 1)[1].split()[1] == master:\n        print(p)'")


def _workers(name: str) -> set[str]:
    result = lb_host(name).run(WORKERS)
    assert result.rc == 0 and result.stdout.split(), result.stderr
    return set(result.stdout.split())


def _accepted_everywhere(value: str, deadline_s: float) -> float:
    start = time.monotonic()
    pending = {name: container_ip(name) for name in LBS}
    while pending:
        for name, address in list(pending.items()):
            if _call(value, where=address)[0] == 200:
                del pending[name]
        if pending:
            assert time.monotonic() - start < deadline_s, f"not accepted on {sorted(pending)} in {deadline_s} s"
            time.sleep(1)
    return time.monotonic() - start


def test_a_rotated_issuer_key_is_accepted_within_the_refresh_interval_without_a_reload():
    workers = {name: _workers(name) for name in LBS}
    rotated = jwt(subject="rotor", kid="ec-2")
    assert _call(rotated)[0] == 401
    # A token of the key to be dropped, accepted (its signature recorded as verified on lb-1) before.
    dropped = jwt(subject="dropped", kid="ec-1")
    assert _call(dropped, where=container_ip("lb-1"))[0] == 200
    try:
        _publish_jwks(["rsa-1", "ec-2"])
        took = _accepted_everywhere(rotated, REFRESH_S + 15)
        print(f"rotated key accepted on both load balancers after {took:.1f} s (refresh interval {REFRESH_S} s)")
        # The key the issuer dropped is refused as soon, for a new token and for the one already seen.
        assert _call(jwt(kid="ec-1"), where=container_ip("lb-1"))[0] == 401
        assert _call(dropped, where=container_ip("lb-1"))[0] == 401
    finally:
        _publish_jwks(["rsa-1", "ec-1"])
        _accepted_everywhere(jwt(kid="ec-1"), REFRESH_S + 15)
    # No reload: the same nginx workers served before, during and after.
    assert {name: _workers(name) for name in LBS} == workers
