# Copyright: fleetops.mcp contributors
# Apache License 2.0 (see LICENSE)
# SPDX-License-Identifier: Apache-2.0
"""OAuth 2.1 resource-server mode at the load balancers (MCP authorization; RFC 9728, RFC 8707).

Two inputs: the issuers the gateway trusts (``nginx_lb_oauth_issuers``) and, per MCP server, an ``oauth``
block (``fleetops_mcp_servers[].oauth``, checked for shape in ``_fleet.py``) naming some of them. This module
checks the issuers, resolves each OAuth server's canonical resource URL (its audience) and builds what the
templates render: the Protected Resource Metadata documents, the njs verifier's per-route table and the
configuration of the JWKS refresher (``fleetops-jwks-sync``). See docs/design/gateway.md.
"""

from __future__ import annotations

import hashlib
import hmac
import re

# What njs (0.7 and later, WebCrypto) verifies: RSASSA-PKCS1-v1_5 and ECDSA on P-256 and P-384.
ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384")
ISSUER_FIELDS = {"name", "issuer", "jwks_uri", "algorithms", "ca_file", "rate_per_minute", "burst", "max_connections"}
# Each OAuth client's budget (per issuer): the same bounds as a static client's (nginx_lb_clients).
LIMITS = {"rate_per_minute": (1, 60000), "burst": (0, 100000), "max_connections": (1, 100000)}
ISSUER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
# An https URL with a host and no fragment, no user info, no spaces or quotes.
HTTPS_URL = re.compile(r"^https://(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?"
                       r"(?P<path>/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?(?:\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?\Z")
BASE_URL = re.compile(r"^https://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?\Z")
WELL_KNOWN = "/.well-known/oauth-protected-resource"
# The key of the session tags of OAuth clients (njs computes them; the inventory key stays on the controller).
TAG_KEY_LABEL = b"fleetops.mcp oauth session tags"


def https_url_error(value, what):
    """Why ``value`` is not an https URL with a host (None when it is one)."""
    if not isinstance(value, str) or not value:
        return "%s must be an https:// URL; got %r" % (what, value)
    match = HTTPS_URL.match(value)
    if not match:
        return "%s must be an https:// URL (a host, an optional port and path, no spaces or fragment); got %r" % (what, value)
    if match.group("port") is not None and not 1 <= int(match.group("port")) <= 65535:
        return "%s has a port out of range; got %r" % (what, value)
    return None


def issuer_errors(issuers):
    """Problems in ``nginx_lb_oauth_issuers``, each naming the issuer and the field."""
    errors = []
    if not isinstance(issuers, list):
        return ["nginx_lb_oauth_issuers must be a list of {name, issuer, jwks_uri, algorithms?, ca_file?}"]
    seen = set()
    for index, entry in enumerate(issuers):
        where = "nginx_lb_oauth_issuers[%d]" % index
        if not isinstance(entry, dict):
            errors.append("%s must be a mapping" % where)
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not ISSUER_NAME.match(name):
            errors.append("%s: name must be lower-case letters, digits and '-' (up to 63); got %r" % (where, name))
        else:
            where = "nginx_lb_oauth_issuers[%s]" % name
            if name in seen:
                errors.append("%s: name is declared twice" % where)
            seen.add(name)
        unknown = sorted(set(entry) - ISSUER_FIELDS, key=str)
        if unknown:
            known = ", ".join(sorted(ISSUER_FIELDS))
            errors.append("%s: unknown field(s) %s (known: %s)" % (where, ", ".join(map(str, unknown)), known))
        for field in ("issuer", "jwks_uri"):
            problem = https_url_error(entry.get(field), "%s: %s" % (where, field))
            if problem:
                errors.append(problem)
        algorithms = entry.get("algorithms", ["RS256", "ES256"])
        if not isinstance(algorithms, list) or not algorithms:
            errors.append("%s: algorithms must be a non-empty list of %s" % (where, ", ".join(ALGORITHMS)))
        else:
            bad = [a for a in algorithms if a not in ALGORITHMS]
            if bad:
                errors.append("%s: algorithms %s unknown; the gateway verifies %s (never none or HS*)"
                              % (where, ", ".join(map(repr, bad)), ", ".join(ALGORITHMS)))
        for field, (low, high) in LIMITS.items():
            value = entry.get(field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
                errors.append("%s: %s must be a whole number from %d to %d; got %r" % (where, field, low, high, value))
        ca_file = entry.get("ca_file", "")
        if ca_file not in ("", None) and (not isinstance(ca_file, str) or not re.match(r"^/[A-Za-z0-9._/-]+\Z", ca_file)):
            errors.append("%s: ca_file must be an absolute path on the load balancer (or empty: the system's CAs); "
                          "got %r" % (where, ca_file))
    return errors


def errors(routes, issuers, base_url, auth):
    """Problems in the OAuth settings of ``routes`` (``mcp_gateway_routes``) against the issuers and
    ``nginx_lb_oauth_resource_base_url``, each naming the field."""
    problems = issuer_errors(issuers)
    oauth_routes = [r for r in routes if r.get("oauth")]
    if not oauth_routes:
        return problems
    if not auth:
        problems.append("fleetops_mcp_servers: %s use oauth, which needs nginx_lb_auth: true"
                        % ", ".join(r["name"] for r in oauth_routes))
    if not isinstance(base_url, str) or not BASE_URL.match(base_url):
        problems.append("nginx_lb_oauth_resource_base_url must be the gateway's public https:// origin (no path), the "
                        "base of each OAuth server's resource URL and token audience; got %r" % (base_url,))
    known = {i.get("name") for i in issuers if isinstance(i, dict)} if isinstance(issuers, list) else set()
    for route in oauth_routes:
        for name in route["oauth"]["issuers"]:
            if name not in known:
                problems.append("mcp server %r: oauth.issuers names %r, which nginx_lb_oauth_issuers does not declare "
                                "(declared: %s)" % (route["name"], name, ", ".join(sorted(map(str, known))) or "none"))
    return problems


def tag_key(affinity_key):
    """The key of OAuth clients' session tags, derived from ``nginx_lb_affinity_key`` (which stays on the controller)."""
    return hmac.new(str(affinity_key).encode("utf-8"), TAG_KEY_LABEL, hashlib.sha256).hexdigest()


def model(routes, issuers, base_url, affinity_key, keys_dir, defaults=None):
    """What the templates render for OAuth: ``{"routes": {name: {...}}, "root_metadata": {...} or None, "sync":
    {...}, "limits": [...], "tag_key": hex}``. ``defaults``: the budget of an OAuth client whose issuer sets none
    (``{rate_per_minute, burst, max_connections}``, the static clients' defaults). Call only after ``errors``
    returned nothing."""
    defaults = dict({"rate_per_minute": 50, "burst": 10, "max_connections": 20}, **(defaults or {}))
    by_name = {i["name"]: i for i in issuers or []}
    base = (base_url or "").rstrip("/")
    out = {}
    used = []
    for route in routes:
        oauth = route.get("oauth")
        if not oauth:
            continue
        resource = base + route["public_path"]
        audience = oauth.get("audience") or resource
        route_issuers = []
        for name in oauth["issuers"]:
            issuer = by_name[name]
            if name not in used:
                used.append(name)
            route_issuers.append({"name": name, "issuer": issuer["issuer"], "zone": _zone(name),
                                  "algorithms": list(issuer.get("algorithms") or ["RS256", "ES256"])})
        metadata = {
            "resource": resource,
            "authorization_servers": [i["issuer"] for i in route_issuers],
            "bearer_methods_supported": ["header"],
            "resource_name": "MCP server %s" % route["name"],
        }
        scopes = sorted(set(oauth.get("scopes") or []) | set(oauth.get("tools_by_scope") or {}))
        if scopes:
            metadata["scopes_supported"] = scopes
        out[route["name"]] = {
            "resource": resource,
            "audience": audience,
            "metadata_url": base + WELL_KNOWN + route["public_path"],
            "metadata_path": WELL_KNOWN + route["public_path"],
            "metadata": metadata,
            "issuers": route_issuers,
            "scopes": list(oauth.get("scopes") or []),
            "tools_by_scope": dict(oauth.get("tools_by_scope") or {}),
            "static_tokens": bool(oauth.get("static_tokens")),
            "members": [{"backend": "%s:%s" % (m["address"], m["port"]), "upstream": m["upstream"]}
                        for m in route["members"]] if not route["stateless"] else [],
        }
    root = None
    if out:
        root = {
            "resource": base,
            "authorization_servers": sorted({i["issuer"] for r in out.values() for i in r["issuers"]}),
            "bearer_methods_supported": ["header"],
            "scopes_supported": sorted({s for r in out.values() for s in r["metadata"].get("scopes_supported", [])}),
        }
    sync = {
        "keys_dir": keys_dir,
        "issuers": [{"name": n, "issuer": by_name[n]["issuer"], "jwks_uri": by_name[n]["jwks_uri"],
                     "algorithms": list(by_name[n].get("algorithms") or ["RS256", "ES256"]),
                     "ca_file": by_name[n].get("ca_file") or ""} for n in used],
    }
    limits = [{"issuer": n, "zone": _zone(n),
               **{field: int(by_name[n].get(field) if by_name[n].get(field) is not None else defaults[field])
                  for field in LIMITS}} for n in used]
    return {"routes": out, "root_metadata": root, "sync": sync, "limits": limits,
            "tag_key": tag_key(affinity_key) if out else ""}


def _zone(issuer_name):
    """The limit zones (and key variable) of one issuer's OAuth clients."""
    return "fleetops_oauth_" + issuer_name.replace("-", "_")


def oauth_tag(tag_key, identity, backend):
    """The session tag njs gives an OAuth client ``identity`` (``sub@issuer``) on ``backend``: ``b`` + 10 hex
    digits of HMAC-SHA256(tag key, "<identity>\\n<backend>") (the static clients' form, another key)."""
    message = ("%s\n%s" % (identity, backend)).encode("utf-8")
    return "b" + hmac.new(tag_key.encode("utf-8"), message, hashlib.sha256).hexdigest()[:10]
