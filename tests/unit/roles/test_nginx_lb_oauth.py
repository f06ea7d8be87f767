"""OAuth 2.1 resource-server mode at the gateway (issue 19 item 2), in a real nginx with njs.

The role's templates are rendered by ansible-playbook (the render helper of test_nginx_lb_gateway.py) for three
servers: ``reference`` (sessioned, OAuth with required scope ``mcp:use``, scope-based tool rules, static tokens
also accepted), ``reference-stateless`` (OAuth only, no scope required) and ``plain`` (static tokens only).
Tokens are minted by the test issuer (tests/oauth_test_issuer, a test issuer, not an authorization server)
with an RSA and an EC key whose public halves are written where the refresher (fleetops-jwks-sync) writes
them, in its format. Skipped where nginx, njs or root is missing, as the gateway tests are.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ansible_collections.fleetops.mcp.plugins.module_utils import _oauth

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "oauth_test_issuer"))

import fleetops_test_issuer as issuer  # noqa: E402
from test_nginx_lb_gateway import (  # noqa: E402
    KEY, TOKENS, _free_port, _shared_free_port, render, running_nginx, start_backends,
)

ISSUER = "https://issuer.test.example"
# A second issuer whose clients have a tight budget (6 a minute, burst 2).
TIGHT = "https://tight.test.example"
BASE = "https://mcp.example.test"
SCOPES_RULES = {"mcp:use": ["echo"], "mcp:admin": ["*"]}


def _spki(key) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def _write_keys(keys_dir: pathlib.Path, keys, name="test", url=ISSUER):
    """The refresher's file for issuer ``name``: [(key, kid, alg)]."""
    document = {"issuer": url, "jwks_uri": url + "/jwks.json", "changed_at": int(time.time()),
                "keys": [{"kid": kid, "alg": alg, "spki": _spki(key)} for key, kid, alg in keys]}
    tmp = keys_dir / f"{name}.json.tmp"
    tmp.write_text(json.dumps(document))
    tmp.chmod(0o644)
    tmp.replace(keys_dir / f"{name}.json")


@pytest.fixture(scope="module")
def oauth_gw(tmp_path_factory):
    if not shutil.which("nginx"):
        pytest.skip("nginx is not installed here")
    if not pathlib.Path("/usr/lib/nginx/modules/ngx_http_js_module.so").exists():
        pytest.skip("nginx's njs module (libnginx-mod-http-js) is not installed here")
    if os.geteuid() != 0:
        pytest.skip("running nginx with `user www-data` needs root")
    out_dir = tmp_path_factory.mktemp("oauth")
    # nginx's workers (www-data) read the keys on each request: a directory they can reach.
    keys_dir = pathlib.Path(tempfile.mkdtemp(prefix="fleetops-oauth-keys-", dir="/tmp"))
    keys_dir.chmod(0o755)
    # Where the workers record verified signatures: theirs alone, as the role makes it.
    verified_dir = pathlib.Path(tempfile.mkdtemp(prefix="fleetops-oauth-verified-", dir="/tmp"))
    shutil.chown(verified_dir, "www-data", "www-data")
    verified_dir.chmod(0o700)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    _write_keys(keys_dir, [(rsa_key, "rsa-1", "RS256"), (ec_key, "ec-1", "ES256")])
    _write_keys(keys_dir, [(rsa_key, "rsa-1", "RS256")], "tight", TIGHT)
    port = _shared_free_port()
    backends = start_backends([port, port + 1, port + 2])
    listen, status = _free_port(), _free_port()
    servers = [
        {"name": "reference", "image": "r:1", "host_port": port,
         "oauth": {"issuers": ["test"], "scopes": ["mcp:use"], "tools_by_scope": SCOPES_RULES, "static_tokens": True}},
        {"name": "reference-stateless", "image": "s:1", "host_port": port + 1, "stateless": True,
         "oauth": {"issuers": ["test", "tight"]}},
        {"name": "plain", "image": "p:1", "host_port": port + 2, "stateless": True},
    ]
    clients = [{"name": name, "token": token, "rate_per_minute": 6000, "burst": 500} for name, token in TOKENS.items()]
    issuers = [{"name": "test", "issuer": ISSUER, "jwks_uri": ISSUER + "/jwks.json", "algorithms": ["RS256", "ES256"],
                "rate_per_minute": 6000, "burst": 500},
               {"name": "tight", "issuer": TIGHT, "jwks_uri": TIGHT + "/jwks.json", "algorithms": ["RS256"],
                "rate_per_minute": 6, "burst": 2, "max_connections": 5}]
    conf = render(out_dir, backend_port=port, nginx_lb_listen_port=listen, nginx_lb_status_listen=f"127.0.0.1:{status}",
                  nginx_lb_mcp_servers=servers, nginx_lb_clients=clients,
                  nginx_lb_oauth_issuers=issuers, nginx_lb_oauth_resource_base_url=BASE,
                  _nginx_lb_oauth_keys_dir=str(keys_dir), _nginx_lb_oauth_verified_dir=str(verified_dir),
                  nginx_lb_ip_rate_per_minute=6000, nginx_lb_ip_burst=500)
    try:
        with running_nginx(out_dir, conf, listen, backends):
            yield {"port": listen, "dir": out_dir, "keys_dir": keys_dir, "verified_dir": verified_dir,
                   "backends": backends, "rsa": rsa_key,
                   "ec": ec_key, "backend_port": port, "tag_key": _oauth.tag_key(KEY), "conf": conf}
    finally:
        shutil.rmtree(keys_dir, ignore_errors=True)
        shutil.rmtree(verified_dir, ignore_errors=True)


def _token(gw, server="reference", subject="alice", scope="mcp:use", key="rsa", **extra):
    claims = issuer.claims(ISSUER, f"{BASE}/mcp/{server}", subject, scope, **extra)
    kid = {"rsa": "rsa-1", "ec": "ec-1"}[key]
    return issuer.mint(gw[key], kid, claims)


def _call(gw, path, token=None, body=None, sid=None, method="POST", source="127.0.0.1"):
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if sid:
        headers["Mcp-Session-Id"] = sid
    conn = http.client.HTTPConnection("127.0.0.1", gw["port"], timeout=10, source_address=(source, 0))
    try:
        data = None if method == "GET" else json.dumps(body if body is not None else {}).encode()
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _tool_call(name, rid=1):
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": name, "arguments": {}}}


def _metadata_url(server):
    return f"{BASE}/.well-known/oauth-protected-resource/mcp/{server}"


# ---- accepted ---------------------------------------------------------------


@pytest.mark.parametrize("key", ["rsa", "ec"])
def test_a_valid_token_gets_through_and_the_backend_sees_the_subject_never_the_token(oauth_gw, key):
    token = _token(oauth_gw, "reference-stateless", subject="svc-" + key, scope="", key=key)
    for server in oauth_gw["backends"]:
        server.seen.clear()
    status, _, body = _call(oauth_gw, "/mcp/reference-stateless", token)
    assert status == 200, body
    assert json.loads(body)["client"] == f"svc-{key}@test"
    seen = [h for server in oauth_gw["backends"] for h in server.seen]
    assert len(seen) == 1 and "Authorization" not in seen[0] and token not in json.dumps(seen)


def test_client_id_names_the_client_when_the_token_has_no_sub(oauth_gw):
    claims = issuer.claims(ISSUER, f"{BASE}/mcp/reference-stateless", "ignored", "")
    del claims["sub"]
    claims["client_id"] = "batch-job"
    status, _, body = _call(oauth_gw, "/mcp/reference-stateless", issuer.mint(oauth_gw["rsa"], "rsa-1", claims))
    assert status == 200 and json.loads(body)["client"] == "batch-job@test"


def test_an_audience_list_holding_the_resource_is_accepted(oauth_gw):
    token = issuer.mint(oauth_gw["rsa"], "rsa-1", issuer.claims(
        ISSUER, ["https://other.example", f"{BASE}/mcp/reference-stateless"], "carol", ""))
    assert _call(oauth_gw, "/mcp/reference-stateless", token)[0] == 200


# ---- refused: 401 with the resource metadata ----------------------------------


def test_no_token_gets_401_naming_the_resource_metadata_and_scope(oauth_gw):
    status, headers, body = _call(oauth_gw, "/mcp/reference")
    assert status == 401 and json.loads(body)["error"]["message"] == "Unauthorized"
    assert headers["www-authenticate"] == (
        f'Bearer realm="fleetops-mcp", resource_metadata="{_metadata_url("reference")}", scope="mcp:use"')


def _forged(gw):
    """Tokens that must each get 401 invalid_token on /mcp/reference-stateless: (the reason the gateway gives, token)."""
    aud = f"{BASE}/mcp/reference-stateless"
    good = issuer.claims(ISSUER, aud, "mallory", "")
    head, payload, signature = issuer.mint(gw["rsa"], "rsa-1", good).split(".")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = gw["rsa"].public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)
    tampered = issuer.b64url(json.dumps({**good, "sub": "admin"}).encode())
    return [
        ("expired", issuer.mint(gw["rsa"], "rsa-1", issuer.claims(ISSUER, aud, "m", "", now=time.time() - 3600))),
        ("not yet valid", issuer.mint(gw["rsa"], "rsa-1", {**good, "nbf": int(time.time()) + 3600})),
        ("wrong audience", issuer.mint(gw["rsa"], "rsa-1", issuer.claims(ISSUER, f"{BASE}/mcp/plain", "m", ""))),
        ("unknown issuer", issuer.mint(gw["rsa"], "rsa-1", issuer.claims("https://evil.example", aud, "m", ""))),
        ("bad signature", f"{head}.{tampered}.{signature}"),
        ("bad signature", issuer.mint(other, "rsa-1", good)),  # another key under the same kid
        ("no matching key", issuer.mint(gw["rsa"], "rsa-9", good)),  # an unknown kid
        ("algorithm not accepted", issuer.mint_none(good, kid="rsa-1")),
        ("algorithm not accepted", issuer.mint_hs256(public_pem, good, kid="rsa-1")),  # the public key as secret
        ("no matching key", issuer.mint(gw["rsa"], "ec-1", good)),  # RS256 under the EC key's kid
        ("no exp claim", issuer.mint(gw["rsa"], "rsa-1", {k: v for k, v in good.items() if k != "exp"})),
        ("not a JWT access token", "opaque-token-0123456789abcdef"),
    ]


def test_each_forged_or_invalid_token_gets_401_invalid_token(oauth_gw):
    failures = []
    for reason, token in _forged(oauth_gw):
        status, headers, _ = _call(oauth_gw, "/mcp/reference-stateless", token)
        challenge = headers.get("www-authenticate", "")
        if status != 401 or challenge != (
                f'Bearer realm="fleetops-mcp", error="invalid_token", error_description="{reason}", '
                f'resource_metadata="{_metadata_url("reference-stateless")}"'):
            failures.append((reason, status, challenge))
    assert not failures, failures


def test_a_static_token_is_refused_where_the_server_takes_oauth_only(oauth_gw):
    status, headers, _ = _call(oauth_gw, "/mcp/reference-stateless", TOKENS["alice"])
    assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"]
    # ... and accepted where the server takes both.
    assert _call(oauth_gw, "/mcp/reference", TOKENS["alice"])[0] == 200


def test_a_jwt_opens_nothing_on_a_server_without_oauth(oauth_gw):
    token = _token(oauth_gw, "plain", scope="")
    status, headers, _ = _call(oauth_gw, "/mcp/plain", token)
    assert status == 401 and headers["www-authenticate"] == 'Bearer realm="fleetops-mcp", error="invalid_token"'
    assert _call(oauth_gw, "/mcp/plain", TOKENS["bob"])[0] == 200


# ---- scopes -----------------------------------------------------------------


def test_a_token_without_the_required_scope_gets_403_insufficient_scope(oauth_gw):
    status, headers, body = _call(oauth_gw, "/mcp/reference", _token(oauth_gw, scope="mcp:other"))
    assert status == 403
    assert headers["www-authenticate"] == (
        'Bearer realm="fleetops-mcp", error="insufficient_scope", error_description="the token lacks a required '
        f'scope", resource_metadata="{_metadata_url("reference")}", scope="mcp:use"')
    assert json.loads(body)["error"] == {"code": -32003, "message": "Forbidden: insufficient scope"}


def test_tools_follow_the_tokens_scopes(oauth_gw):
    user = _token(oauth_gw, scope="mcp:use")
    status, _, body = _call(oauth_gw, "/mcp/reference", user, _tool_call("echo", 7))
    assert status == 200 and json.loads(body)["result"]["isError"] is False
    status, _, body = _call(oauth_gw, "/mcp/reference", user, _tool_call("broken", 8))
    assert status == 403 and json.loads(body)["error"]["code"] == -32003 and json.loads(body)["id"] == 8
    admin = _token(oauth_gw, subject="root", scope="mcp:use mcp:admin")
    assert _call(oauth_gw, "/mcp/reference", admin, _tool_call("broken", 9))[0] == 200
    # A static client without rules is not bound by the scopes.
    assert _call(oauth_gw, "/mcp/reference", TOKENS["bob"], _tool_call("broken", 10))[0] == 200


def test_the_audit_log_names_the_subject_and_holds_no_token(oauth_gw):
    token = _token(oauth_gw, subject="auditor", scope="mcp:use")
    assert _call(oauth_gw, "/mcp/reference", token, _tool_call("echo", "a-1"))[0] == 200
    time.sleep(0.2)
    text = (oauth_gw["dir"] / "audit.json").read_text()
    lines = [json.loads(line) for line in text.splitlines() if '"a-1' in line]
    assert len(lines) == 1 and lines[0]["client_id"] == "auditor@test" and lines[0]["outcome"] == "ok", lines
    assert token not in text and token.split(".")[2] not in (oauth_gw["dir"] / "access.json").read_text()


# ---- limits -----------------------------------------------------------------


def test_each_oauth_subject_has_its_own_budget_from_its_issuer(oauth_gw):
    def tight(subject):
        return issuer.mint(oauth_gw["rsa"], "rsa-1", issuer.claims(TIGHT, f"{BASE}/mcp/reference-stateless", subject, ""))

    statuses = [_call(oauth_gw, "/mcp/reference-stateless", tight("busy"))[0] for _ in range(6)]
    # Burst 2 at 6 a minute: three answers, then 429.
    assert statuses[:3] == [200] * 3 and statuses[-1] == 429, statuses
    # Another subject of the same issuer, and the first issuer's clients, have budgets of their own.
    assert _call(oauth_gw, "/mcp/reference-stateless", tight("idle"))[0] == 200
    assert _call(oauth_gw, "/mcp/reference-stateless", _token(oauth_gw, "reference-stateless", "busy", ""))[0] == 200


# ---- metadata ---------------------------------------------------------------


def test_protected_resource_metadata_is_served_for_each_server_and_the_gateway(oauth_gw):
    status, headers, body = _call(oauth_gw, "/.well-known/oauth-protected-resource/mcp/reference", method="GET")
    assert status == 200 and headers["access-control-allow-origin"] == "*"
    assert json.loads(body) == {
        "resource": f"{BASE}/mcp/reference", "authorization_servers": [ISSUER],
        "bearer_methods_supported": ["header"], "resource_name": "MCP server reference",
        "scopes_supported": ["mcp:admin", "mcp:use"]}
    status, _, body = _call(oauth_gw, "/.well-known/oauth-protected-resource", method="GET")
    assert status == 200 and json.loads(body)["authorization_servers"] == [ISSUER, TIGHT]
    assert _call(oauth_gw, "/.well-known/oauth-protected-resource/mcp/plain", method="GET")[0] == 404


# ---- keys -------------------------------------------------------------------


def test_a_rotated_key_is_used_at_once_without_a_reload_and_a_removed_one_is_refused(oauth_gw):
    new = ec.generate_private_key(ec.SECP256R1())
    claims = issuer.claims(ISSUER, f"{BASE}/mcp/reference-stateless", "rotor", "")
    rotated = issuer.mint(new, "ec-2", claims)
    old = issuer.mint(oauth_gw["ec"], "ec-1", claims)
    try:
        # The old key's token is accepted (its signature recorded as verified) until its key goes.
        assert _call(oauth_gw, "/mcp/reference-stateless", old)[0] == 200
        assert _call(oauth_gw, "/mcp/reference-stateless", rotated)[0] == 401
        _write_keys(oauth_gw["keys_dir"], [(oauth_gw["rsa"], "rsa-1", "RS256"), (new, "ec-2", "ES256")])
        assert _call(oauth_gw, "/mcp/reference-stateless", rotated)[0] == 200
        assert _call(oauth_gw, "/mcp/reference-stateless", old)[0] == 401
    finally:
        _write_keys(oauth_gw["keys_dir"], [(oauth_gw["rsa"], "rsa-1", "RS256"), (oauth_gw["ec"], "ec-1", "ES256")])


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_a_signature_is_verified_once_and_its_record_holds_no_token(oauth_gw):
    token = _token(oauth_gw, "reference-stateless", subject="once", scope="", key="ec")
    record = oauth_gw["verified_dir"] / _sha256(token)
    assert not record.exists()
    assert _call(oauth_gw, "/mcp/reference-stateless", token)[0] == 200
    assert record.stat().st_mode & 0o777 == 0o600
    written = record.read_text()
    entry = json.loads(written)
    assert entry["kid"] == "ec-1" and entry["alg"] == "ES256" and isinstance(entry["exp"], int)
    header, claims, signature = token.split(".")
    assert signature not in written and claims not in written and "once" not in written
    stamp = record.stat().st_mtime_ns
    # Recorded, it is not verified (nor written) again; its claims still are, on each request.
    assert _call(oauth_gw, "/mcp/reference-stateless", token)[0] == 200
    assert record.stat().st_mtime_ns == stamp
    elsewhere = _call(oauth_gw, "/mcp/reference", token)
    assert elsewhere[0] == 401 and 'error_description="wrong audience"' in elsewhere[1]["www-authenticate"]
    # A recording that names a key the issuer's keys do not hold (here: another key under the same kid)
    # is not trusted: the token is verified against the keys there are, and refused.
    other = ec.generate_private_key(ec.SECP256R1())
    try:
        _write_keys(oauth_gw["keys_dir"], [(oauth_gw["rsa"], "rsa-1", "RS256"), (other, "ec-1", "ES256")])
        refused = _call(oauth_gw, "/mcp/reference-stateless", token)
        assert refused[0] == 401 and 'error_description="bad signature"' in refused[1]["www-authenticate"]
    finally:
        _write_keys(oauth_gw["keys_dir"], [(oauth_gw["rsa"], "rsa-1", "RS256"), (oauth_gw["ec"], "ec-1", "ES256")])
    assert _call(oauth_gw, "/mcp/reference-stateless", token)[0] == 200


def test_a_forged_token_leaves_no_record(oauth_gw):
    forged = issuer.mint(ec.generate_private_key(ec.SECP256R1()), "ec-1",
                         issuer.claims(ISSUER, f"{BASE}/mcp/reference-stateless", "forger", ""))
    assert _call(oauth_gw, "/mcp/reference-stateless", forged)[0] == 401
    assert not (oauth_gw["verified_dir"] / _sha256(forged)).exists()


# ---- sessions ---------------------------------------------------------------


def test_an_oauth_clients_session_is_pinned_and_bound_to_its_subject(oauth_gw):
    alice = _token(oauth_gw, subject="alice")
    status, headers, body = _call(oauth_gw, "/mcp/reference", alice)
    assert status == 200, body
    first = json.loads(body)
    client_sid = headers["mcp-session-id"]
    tag, backend_sid = client_sid.split(".", 1)
    assert backend_sid == first["sid"]
    assert tag == _oauth.oauth_tag(oauth_gw["tag_key"], "alice@test", first["backend"])
    for _ in range(4):
        status, _, body = _call(oauth_gw, "/mcp/reference", alice, sid=client_sid)
        assert status == 200 and json.loads(body)["backend"] == first["backend"]
    # Another subject (or a static client) with Alice's session id: not routed.
    status, _, body = _call(oauth_gw, "/mcp/reference", _token(oauth_gw, subject="bob"), sid=client_sid)
    assert status == 404 and json.loads(body)["error"]["message"] == "Session not found"
    assert _call(oauth_gw, "/mcp/reference", TOKENS["bob"], sid=client_sid)[0] == 404
    # A forged token naming Alice does not reach her session either: the token check runs first.
    forged = issuer.mint(rsa.generate_private_key(public_exponent=65537, key_size=2048), "rsa-1",
                         issuer.claims(ISSUER, f"{BASE}/mcp/reference", "alice", "mcp:use"))
    assert _call(oauth_gw, "/mcp/reference", forged, sid=client_sid)[0] == 401


def test_the_configuration_passes_nginx_t_and_holds_no_affinity_key(oauth_gw):
    assert KEY not in oauth_gw["conf"]
    auth_js = (oauth_gw["dir"] / "auth.js").read_text()
    assert KEY not in auth_js and oauth_gw["tag_key"] in auth_js


def test_no_request_left_a_js_exception_or_an_uninitialized_variable_in_the_error_log(oauth_gw):
    # Runs last in this module: every request above went through njs.
    assert _call(oauth_gw, "/elsewhere", method="GET")[0] == 404
    text = (oauth_gw["dir"] / "error.log").read_text()
    assert "js exception" not in text and "uninitialized" not in text, \
        [line for line in text.splitlines() if "js exception" in line or "uninitialized" in line][:5]
