"""OAuth resource-server settings (issue 19 item 2): a server's ``oauth`` block (module_utils/_fleet.py), the
issuers and the resource base URL (module_utils/_oauth.py). Each bad input is refused with a message naming the
field; the model gives each server its resource URL, audience and metadata."""

from __future__ import annotations

import pytest

from ansible_collections.fleetops.mcp.plugins.module_utils import _fleet, _oauth

ISSUERS = [{"name": "corp", "issuer": "https://idp.example.com", "jwks_uri": "https://idp.example.com/jwks.json"},
           {"name": "partner", "issuer": "https://login.partner.example/tenant-1", "algorithms": ["ES256"],
            "jwks_uri": "https://login.partner.example/tenant-1/keys", "ca_file": "/etc/ssl/partner-ca.pem"}]
BASE = "https://mcp.example.com"
BACKENDS = [{"host": "ms-1", "address": "10.0.0.11"}, {"host": "ms-2", "address": "10.0.0.12"}]


def server(**oauth):
    return {"name": "notes", "image": "fleetops/notes:1", "host_port": 18200, "oauth": oauth or {"issuers": ["corp"]}}


def routes(*servers):
    return _fleet.gateway_routes(list(servers), BACKENDS)


def fleet_messages(**oauth):
    return " | ".join(_fleet.validate([server(**oauth)]))


def test_a_good_oauth_server_passes_and_gets_its_resource_url_audience_and_metadata():
    good = server(issuers=["corp", "partner"], scopes=["notes:read"], tools_by_scope={"notes:write": ["add_note"]},
                  static_tokens=True)
    assert _fleet.validate([good]) == []
    rs = routes(good)
    assert _oauth.errors(rs, ISSUERS, BASE, True) == []
    model = _oauth.model(rs, ISSUERS, BASE, "k" * 32, "/var/lib/fleetops/oauth")
    notes = model["routes"]["notes"]
    assert notes["resource"] == notes["audience"] == "https://mcp.example.com/mcp/notes"
    assert notes["metadata_url"] == "https://mcp.example.com/.well-known/oauth-protected-resource/mcp/notes"
    assert notes["metadata"] == {
        "resource": "https://mcp.example.com/mcp/notes",
        "authorization_servers": ["https://idp.example.com", "https://login.partner.example/tenant-1"],
        "bearer_methods_supported": ["header"], "resource_name": "MCP server notes",
        "scopes_supported": ["notes:read", "notes:write"]}
    assert [i["algorithms"] for i in notes["issuers"]] == [["RS256", "ES256"], ["ES256"]]
    assert [m["backend"] for m in notes["members"]] == ["10.0.0.11:18200", "10.0.0.12:18200"]
    assert model["sync"]["issuers"][1] == {"name": "partner", "issuer": "https://login.partner.example/tenant-1",
                                           "jwks_uri": "https://login.partner.example/tenant-1/keys",
                                           "algorithms": ["ES256"], "ca_file": "/etc/ssl/partner-ca.pem"}
    # Each issuer's clients get its budget, or the static clients' defaults.
    assert model["limits"] == [
        {"issuer": "corp", "zone": "fleetops_oauth_corp", "rate_per_minute": 50, "burst": 10, "max_connections": 20},
        {"issuer": "partner", "zone": "fleetops_oauth_partner", "rate_per_minute": 50, "burst": 10, "max_connections": 20}]
    # The inventory's affinity key never leaves the controller: njs gets a key derived from it.
    assert "k" * 32 not in str(model) and len(model["tag_key"]) == 64


def test_an_audience_override_is_the_audience_and_the_resource_stays_the_url():
    model = _oauth.model(routes(server(issuers=["corp"], audience="https://api.example.com/notes")), ISSUERS, BASE,
                         "k" * 32, "/k")
    assert model["routes"]["notes"]["audience"] == "https://api.example.com/notes"
    assert model["routes"]["notes"]["resource"] == "https://mcp.example.com/mcp/notes"


def test_without_oauth_servers_nothing_is_rendered():
    plain = {"name": "plain", "image": "p:1", "host_port": 1}
    model = _oauth.model(routes(plain), [], "", "k" * 32, "/k")
    assert model == {"routes": {}, "root_metadata": None, "sync": {"keys_dir": "/k", "issuers": []}, "limits": [],
                     "tag_key": ""}
    assert _oauth.errors(routes(plain), [], "", True) == []


@pytest.mark.parametrize(("oauth", "message"), [
    ({"scopes": []}, "oauth.issuers must be a non-empty list of issuer names"),
    ({"issuers": "corp"}, "oauth.issuers must be a non-empty list"),
    ({"issuers": ["corp"], "audience": "notes"}, "mcp server 'notes': oauth.audience must be an https:// URL"),
    ({"issuers": ["corp"], "audience": "http://mcp.example.com/mcp/notes"}, "oauth.audience must be an https:// URL"),
    ({"issuers": ["corp"], "scopes": ["has space"]}, "oauth.scopes must be a list of scope names"),
    ({"issuers": ["corp"], "scopes": ['quo"te']}, "oauth.scopes must be a list of scope names"),
    ({"issuers": ["corp"], "tools_by_scope": {"s": ["bad tool"]}}, "oauth.tools_by_scope[s] must be a non-empty list"),
    ({"issuers": ["corp"], "tools_by_scope": ["x"]}, "oauth.tools_by_scope must map a scope"),
    ({"issuers": ["corp"], "static_tokens": "yes"}, "oauth.static_tokens must be true or false"),
    ({"issuers": ["corp"], "issuer": "corp"}, "oauth has unknown field(s) issuer"),
], ids=["no-issuers", "issuers-string", "audience-not-url", "audience-http", "scope-space", "scope-quote", "tool-name",
        "rules-list", "static-tokens-string", "unknown-field"])
def test_a_bad_oauth_block_is_refused_naming_the_field(oauth, message):
    assert message in fleet_messages(**oauth)


@pytest.mark.parametrize(("change", "message"), [
    ({"issuer": "http://idp.example.com"}, "nginx_lb_oauth_issuers[corp]: issuer must be an https:// URL"),
    ({"jwks_uri": "idp.example.com/jwks"}, "nginx_lb_oauth_issuers[corp]: jwks_uri must be an https:// URL"),
    ({"algorithms": ["RS256", "HS256"]}, "nginx_lb_oauth_issuers[corp]: algorithms 'HS256' unknown"),
    ({"algorithms": ["none"]}, "algorithms 'none' unknown; the gateway verifies RS256, RS384, RS512, ES256, ES384"),
    ({"algorithms": []}, "nginx_lb_oauth_issuers[corp]: algorithms must be a non-empty list"),
    ({"name": "Corp"}, "nginx_lb_oauth_issuers[0]: name must be lower-case letters"),
    ({"ca_file": "ca.pem"}, "nginx_lb_oauth_issuers[corp]: ca_file must be an absolute path"),
    ({"jwks": "x"}, "nginx_lb_oauth_issuers[corp]: unknown field(s) jwks"),
    ({"rate_per_minute": 0}, "nginx_lb_oauth_issuers[corp]: rate_per_minute must be a whole number from 1 to 60000"),
    ({"burst": "10"}, "nginx_lb_oauth_issuers[corp]: burst must be a whole number from 0 to 100000"),
], ids=["issuer-http", "jwks-no-scheme", "hs256", "alg-none", "no-algorithms", "name-case", "ca-relative",
        "unknown-field", "rate-zero", "burst-string"])
def test_a_bad_issuer_is_refused_naming_the_field(change, message):
    issuers = [{**ISSUERS[0], **change}]
    assert message in " | ".join(_oauth.errors(routes(server()), issuers, BASE, True))


def test_a_server_naming_an_undeclared_issuer_is_refused():
    problems = _oauth.errors(routes(server(issuers=["corp", "nope"])), ISSUERS, BASE, True)
    assert problems == [("mcp server 'notes': oauth.issuers names 'nope', which nginx_lb_oauth_issuers does not "
                         "declare (declared: corp, partner)")]


@pytest.mark.parametrize("base", ["", "http://mcp.example.com", "https://mcp.example.com/gateway", "mcp.example.com"])
def test_the_resource_base_url_must_be_an_https_origin(base):
    assert "nginx_lb_oauth_resource_base_url must be the gateway's public https:// origin" in \
        " | ".join(_oauth.errors(routes(server()), ISSUERS, base, True))


def test_oauth_needs_authentication_on():
    assert "fleetops_mcp_servers: notes use oauth, which needs nginx_lb_auth: true" in \
        _oauth.errors(routes(server()), ISSUERS, BASE, False)


def test_two_issuers_with_one_name_are_refused():
    assert "nginx_lb_oauth_issuers[corp]: name is declared twice" in _oauth.errors([], [ISSUERS[0], ISSUERS[0]], BASE, True)


def test_oauth_session_tags_differ_per_subject_and_backend():
    tags = {_oauth.oauth_tag("k" * 64, who, backend) for who in ("alice@corp", "bob@corp")
            for backend in ("10.0.0.11:18200", "10.0.0.12:18200")}
    assert len(tags) == 4 and all(t.startswith("b") and len(t) == 11 for t in tags)
