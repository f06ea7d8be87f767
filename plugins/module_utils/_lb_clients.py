# Copyright: fleetops.mcp contributors
# Apache License 2.0 (see LICENSE)
# SPDX-License-Identifier: Apache-2.0
"""The load balancers' bearer-token clients: validation and normalisation.

A client is ``{name, token_sha256 | token, rate_per_minute?, burst?,
max_connections?, tools?}``; ``tools`` maps server names to the tool names
(or ``*``) the client may call there (absent: every tool everywhere). Only the SHA-256 of a token ever reaches a load
balancer; a plaintext ``token`` (from Vault or ansible-vault) is hashed here.
No message below ever contains a token or a hash.

Session affinity tags bound to the client are made here too
(:func:`affinity`): see docs/design/lb-session-affinity.md.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re

from ansible_collections.fleetops.mcp.plugins.module_utils._fleet import _int_in

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
# RFC 6750 b64token: the characters nginx's verifier accepts as a token.
TOKEN_RE = re.compile(r"^[A-Za-z0-9\-._~+/]+=*\Z")
LIMITS = {
    "rate_per_minute": (1, 60000),
    "burst": (0, 100000),
    "max_connections": (1, 100000),
}
KNOWN = {"name", "token", "token_sha256", "tools"} | set(LIMITS)
# Server names (as in fleetops_mcp_servers) and tool names in a client's allow-list. Tool names: the
# MCP specification's SHOULD (1-128 of letters, digits, '_', '-', '.'), or '*' for every tool.
SERVER_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?\Z")
TOOL_RE = re.compile(r"^(?:\*|[A-Za-z0-9_.-]{1,128})\Z")
# A plaintext token must carry at least this many bits by token_bits().
MIN_TOKEN_BITS = 96
# Longest run of characters stepping by +1 or -1 (abcdef, 654321) a token may hold.
MAX_SEQUENCE = 7


def token_bits(token):
    """Estimated entropy of a token in bits: its length times the Shannon entropy of its own characters.

    Counts each character by how often it appears in the token, so repeated characters and small
    alphabets weigh little (sixteen ``a``: 0 bits; ``0123456789abcdef``: 64 bits; 32 random hex
    digits: about 120; ``secrets.token_urlsafe(32)``: about 210). A token made of one repeated unit
    (``abab...``, ``0123456789abcdef`` twice) or with a run of more than MAX_SEQUENCE stepping
    characters counts as 0.
    """
    length = len(token)
    if not length:
        return 0.0
    for period in range(1, length // 2 + 1):
        if length % period == 0 and token[:period] * (length // period) == token:
            return 0.0
    run, last_step = 1, 0
    for before, after in zip(token, token[1:]):
        step = ord(after) - ord(before)
        if abs(step) != 1:
            run = 1
        elif step == last_step:
            run += 1
        else:
            run = 2
        last_step = step
        if run > MAX_SEQUENCE:
            return 0.0
    counts = {}
    for char in token:
        counts[char] = counts.get(char, 0) + 1
    return -length * sum(n / length * math.log2(n / length) for n in counts.values())


def validate(clients):
    """Return one message per problem, each naming the client and the field."""
    if clients is None:
        return []
    if not isinstance(clients, list):
        return ["nginx_lb_clients must be a list of clients, got %s" % type(clients).__name__]
    errors = []
    names = {}
    hashes = {}
    for index, client in enumerate(clients):
        where = "nginx_lb_clients[%d]" % index
        if not isinstance(client, dict):
            errors.append("%s must be a dictionary, got %s" % (where, type(client).__name__))
            continue
        name = client.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            errors.append("%s: name must be 1-63 letters, digits, '.', '_' or '-'" % where)
        else:
            where = "client '%s'" % name
            if name in names:
                errors.append("%s: name is declared twice (entries %d and %d)" % (where, names[name], index))
            names.setdefault(name, index)
        unknown = sorted(set(client) - KNOWN)
        if unknown:
            errors.append("%s: unknown field(s) %s" % (where, ", ".join(unknown)))
        has_token = client.get("token") not in (None, "")
        has_hash = client.get("token_sha256") not in (None, "")
        if has_token == has_hash:
            errors.append("%s: set exactly one of token_sha256 and token" % where)
        elif has_hash and not (isinstance(client["token_sha256"], str) and SHA256_RE.match(client["token_sha256"])):
            errors.append("%s: token_sha256 must be 64 lower-case hex digits" % where)
        elif has_token and not (isinstance(client["token"], str) and TOKEN_RE.match(client["token"])):
            errors.append("%s: token must be a bearer token (letters, digits, -._~+/ and trailing =)" % where)
        elif has_token and len(client["token"]) < 16:
            errors.append("%s: token must be at least 16 characters long" % where)
        elif has_token and token_bits(client["token"]) < MIN_TOKEN_BITS:
            errors.append("%s: token is too guessable (under %d bits: repeated or sequential characters or too few "
                          "distinct ones); use a random one such as python3 -c 'import secrets; "
                          "print(secrets.token_urlsafe(32))'" % (where, MIN_TOKEN_BITS))
        digest = _digest(client) if has_token != has_hash else None
        if digest:
            if digest in hashes:
                errors.append("%s: has the same token as client entry %d" % (where, hashes[digest]))
            hashes.setdefault(digest, index)
        for field, (low, high) in LIMITS.items():
            if field in client and _int_in(client[field], low, high) is None:
                errors.append("%s: %s must be a whole number from %d to %d" % (where, field, low, high))
        if client.get("tools") is not None:
            errors.extend(_tools_errors(where, client["tools"]))
    return errors


def _tools_errors(where, tools):
    if not isinstance(tools, dict):
        return ["%s: tools must map server names to lists of tool names (or '*')" % where]
    errors = []
    for server, names in tools.items():
        if not isinstance(server, str) or not SERVER_RE.match(server):
            errors.append("%s: tools key %r is not a server name" % (where, server))
        elif not isinstance(names, list) or not all(isinstance(n, str) and TOOL_RE.match(n) for n in names):
            errors.append("%s: tools.%s must be a list of tool names (letters, digits, '_', '-', '.', up to 128) "
                          "or '*'" % (where, server))
    return errors


def _digest(client):
    token = client.get("token")
    if isinstance(token, str) and token:
        return hashlib.sha256(token.encode("utf-8")).hexdigest()
    value = client.get("token_sha256")
    return value if isinstance(value, str) and SHA256_RE.match(value) else None


def normalize(clients, rate_per_minute, burst, max_connections):
    """Clients with hashes and limits filled in, plus the limit groups nginx needs.

    nginx sets a rate and burst per ``limit_req`` zone and a count per
    ``limit_conn`` directive, so clients that share limits share a zone (each
    client still has its own bucket inside it, keyed by its name).
    """
    errors = validate(clients)
    if errors:
        raise ValueError("; ".join(errors))
    defaults = {"rate_per_minute": rate_per_minute, "burst": burst, "max_connections": max_connections}
    for field, (low, high) in LIMITS.items():
        value = _int_in(defaults[field], low, high)
        if value is None:
            raise ValueError("the default %s must be a whole number from %d to %d" % (field, low, high))
        defaults[field] = value
    out = []
    for client in clients or []:
        entry = {"name": client["name"], "sha256": _digest(client)}
        for field in LIMITS:
            entry[field] = _int_in(client[field], *LIMITS[field]) if field in client else defaults[field]
        # None: every tool on every server; else {server: sorted tool names, or ["*"]}.
        entry["tools"] = None if client.get("tools") is None else {
            server: (["*"] if "*" in names else sorted(set(names))) for server, names in sorted(client["tools"].items())}
        out.append(entry)
    rate_groups = {}
    conn_groups = {}
    for entry in out:
        rate_groups.setdefault((entry["rate_per_minute"], entry["burst"]), []).append(entry["name"])
        conn_groups.setdefault(entry["max_connections"], []).append(entry["name"])
    return {
        "clients": out,
        "rate_zones": [
            {"zone": "fleetops_rate_%d_%d" % key, "rate_per_minute": key[0], "burst": key[1], "clients": names}
            for key, names in sorted(rate_groups.items())
        ],
        "conn_zones": [
            {"zone": "fleetops_conn_%d" % key, "max_connections": key, "clients": names}
            for key, names in sorted(conn_groups.items())
        ],
    }


# The affinity key: at least this many characters (``openssl rand -hex 32``).
AFFINITY_KEY_MIN = 32


def affinity_tag(key, client, backend):
    """The session tag of ``client`` on ``backend`` (``address:port``): ``b`` + 10 hex digits of
    HMAC-SHA256(key, "<client>\\n<backend>"). It depends only on the inventory, so every load balancer
    computes the same one; without the key nobody can compute another client's tag."""
    message = ("%s\n%s" % (client, backend)).encode("utf-8")
    return "b" + hmac.new(key.encode("utf-8"), message, hashlib.sha256).hexdigest()[:10]


def affinity(routes, clients, key):
    """The client-bound session routing for ``routes`` (``fleetops.mcp.mcp_lb_routes``).

    ``clients`` are the client names (``[""]`` when the gateway has no
    authentication). Returns ``{"pins": {route name: [{client, tag,
    upstream}]}, "answers": [{client, backend, tag}], "entries": n}``:
    ``pins`` route a (client, tag) pair to the backend's own upstream (the
    sessionful routes only), ``answers`` tag the session id a backend
    (its route-independent ``backend`` id, ``m.tag``) hands to a client,
    and ``entries`` is the size of the largest map (clients x backends).
    """
    if not isinstance(key, str) or len(key) < AFFINITY_KEY_MIN:
        raise ValueError("nginx_lb_affinity_key must be a string of at least %d characters" % AFFINITY_KEY_MIN)
    names = list(clients or [])
    pins = {}
    answers = []
    for route in routes:
        for client in names:
            tags = {}
            for member in route["members"]:
                backend = "%s:%s" % (member["address"], member["port"])
                tag = affinity_tag(key, client, backend)
                if tag in tags and tags[tag] != backend:
                    raise ValueError("mcp server %r: two backends get the same session tag for client %r; "
                                     "change nginx_lb_affinity_key" % (route["name"], client))
                tags[tag] = backend
                answers.append({"client": client, "backend": member["tag"], "tag": tag})
                if not route["stateless"]:
                    pins.setdefault(route["name"], []).append(
                        {"client": client, "tag": tag, "upstream": member["upstream"]})
    # One answer per (client, backend): a backend serves one route.
    unique = {(a["client"], a["backend"]): a for a in answers}
    answers = list(unique.values())
    entries = max([len(answers)] + [len(p) for p in pins.values()])
    return {"pins": pins, "answers": answers, "entries": entries}
