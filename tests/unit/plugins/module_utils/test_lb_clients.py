"""The load balancers' bearer-token clients: each bad entry is named, tokens never leak."""

from __future__ import annotations

import hashlib
import secrets

import pytest

from ansible_collections.fleetops.mcp.plugins.module_utils import _lb_clients

TOKEN = "tok-Jq2xV9mZr7LwT4kHc8NbYe1PfG3sDu"
HASH = hashlib.sha256(b"other-token-0123456789").hexdigest()


def ok(name="agent", **extra):
    entry = {"name": name, "token_sha256": HASH}
    entry.update(extra)
    return entry


def test_a_valid_list_has_no_errors():
    assert _lb_clients.validate([ok(), {"name": "ci", "token": TOKEN, "rate_per_minute": 600}]) == []
    assert _lb_clients.validate([]) == [] and _lb_clients.validate(None) == []


@pytest.mark.parametrize(
    ("clients", "message"),
    [
        ("agent", "nginx_lb_clients must be a list"),
        (["agent"], "nginx_lb_clients[0] must be a dictionary"),
        ([{"name": "has space", "token_sha256": HASH}], "nginx_lb_clients[0]: name must be"),
        ([ok(), ok(token_sha256=hashlib.sha256(b"x" * 20).hexdigest())], "client 'agent': name is declared twice"),
        ([ok(colour="blue")], "client 'agent': unknown field(s) colour"),
        ([{"name": "agent"}], "client 'agent': set exactly one of token_sha256 and token"),
        ([ok(token=TOKEN)], "client 'agent': set exactly one of token_sha256 and token"),
        ([ok(token_sha256="ABC")], "client 'agent': token_sha256 must be 64 lower-case hex digits"),
        ([{"name": "agent", "token": "short"}], "client 'agent': token must be at least 16 characters"),
        ([{"name": "agent", "token": "has space in it 1234"}], "client 'agent': token must be a bearer token"),
        ([ok(), ok("twin")], "client 'twin': has the same token as client entry 0"),
        ([ok(rate_per_minute=0)], "client 'agent': rate_per_minute must be a whole number from 1 to 60000"),
        ([ok(burst="lots")], "client 'agent': burst must be a whole number from 0 to 100000"),
        ([ok(max_connections=True)], "client 'agent': max_connections must be a whole number from 1 to 100000"),
        ([ok(tools=["echo"])], "client 'agent': tools must map server names to lists of tool names"),
        ([ok(tools={"Reference": ["echo"]})], "client 'agent': tools key 'Reference' is not a server name"),
        ([ok(tools={"reference": "echo"})], "client 'agent': tools.reference must be a list of tool names"),
        ([ok(tools={"reference": ["echo; rm"]})], "client 'agent': tools.reference must be a list of tool names"),
        ([ok(tools={"reference": ["x" * 129]})], "client 'agent': tools.reference must be a list of tool names"),
    ],
    ids=["not-list", "not-dict", "bad-name", "duplicate", "unknown-field", "no-token", "both-tokens",
         "bad-hash", "short-token", "bad-token-chars", "same-token", "rate-zero", "burst-lots", "conn-bool",
         "tools-list", "tools-bad-server", "tools-string", "tools-bad-name", "tools-long-name"],
)
def test_each_bad_entry_is_named(clients, message):
    errors = _lb_clients.validate(clients)
    assert any(message in e for e in errors), errors


def test_messages_never_contain_a_token_or_hash():
    clients = [{"name": "a", "token": TOKEN + " x"}, {"name": "a", "token_sha256": HASH + "0"}]
    text = "; ".join(_lb_clients.validate(clients))
    assert TOKEN not in text and HASH not in text


def test_normalize_hashes_tokens_and_groups_limits():
    model = _lb_clients.normalize(
        [{"name": "ci", "token": TOKEN, "rate_per_minute": "600", "max_connections": 1}, ok(), ok("b", token_sha256="f" * 64)],
        50, 10, 20,
    )
    by_name = {c["name"]: c for c in model["clients"]}
    assert by_name["ci"] == {"name": "ci", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
                             "rate_per_minute": 600, "burst": 10, "max_connections": 1, "tools": None}
    assert "token" not in str(model).replace("token_sha256", "")
    assert TOKEN not in str(model)
    assert model["rate_zones"] == [
        {"zone": "fleetops_rate_50_10", "rate_per_minute": 50, "burst": 10, "clients": ["agent", "b"]},
        {"zone": "fleetops_rate_600_10", "rate_per_minute": 600, "burst": 10, "clients": ["ci"]},
    ]
    assert model["conn_zones"] == [
        {"zone": "fleetops_conn_1", "max_connections": 1, "clients": ["ci"]},
        {"zone": "fleetops_conn_20", "max_connections": 20, "clients": ["agent", "b"]},
    ]


def test_normalize_rejects_bad_input_and_bad_defaults():
    with pytest.raises(ValueError, match="client 'agent': burst"):
        _lb_clients.normalize([ok(burst=-1)], 50, 10, 20)
    with pytest.raises(ValueError, match="default rate_per_minute"):
        _lb_clients.normalize([ok()], 0, 10, 20)


@pytest.mark.parametrize("token", ["aaaaaaaaaaaaaaaa", "abababababababab", "ab" * 32, "0123456789abcdef",
                                   "0123456789abcdef" * 2, "tok-" + "a" * 28, "passwordpassword", "abcdefghijklmnop",
                                   "ABCDEFGHIJk2Z9qR", "1111111122222222"])
def test_guessable_tokens_are_refused_without_showing_them(token):
    errors = _lb_clients.validate([{"name": "agent", "token": token}])
    expected = ("client 'agent': token is too guessable (under 96 bits: repeated or sequential characters or "
                "too few distinct ones); use a random one such as python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'")
    assert errors == [expected]
    assert token not in errors[0]


def test_random_tokens_pass():
    for _ in range(500):
        assert _lb_clients.validate([{"name": "agent", "token": secrets.token_urlsafe(32)}]) == []
    # 40 letters and digits, as inventories/local's demo tokens (ansible.builtin.password, length=40).
    assert _lb_clients.validate([{"name": "agent", "token": "Wv3J0cQmN8tKx2LpRz5YhA7sGd9FbE1uT4oMiVe6"}]) == []


@pytest.mark.parametrize(("token", "low", "high"), [
    ("aaaaaaaaaaaaaaaa", 0, 0), ("0123456789abcdef", 0, 0), ("f0e1d2c3b4a59687", 63.9, 64.1),
    ("a83694816514aac6c2e6af564b0e57b1", 100, 130),
])
def test_the_estimate_is_length_times_the_tokens_own_shannon_entropy(token, low, high):
    assert low <= _lb_clients.token_bits(token) <= high


# ---- session ids bound to the client (issue 18 item 11) -------------------

from ansible_collections.fleetops.mcp.plugins.module_utils import _fleet  # noqa: E402

AFFINITY_KEY = "k" * 32
SERVERS = [
    {"name": "reference", "image": "r:1", "host_port": 18080, "replicas": 2},
    {"name": "stateless", "image": "s:1", "host_port": 18090, "stateless": True},
]
BACKENDS = [{"host": "dh-1", "address": "10.0.0.11"}, {"host": "dh-2", "address": "10.0.0.12"}]


def _routes(backends=None):
    return _fleet.lb_routes(SERVERS, backends or BACKENDS)


def test_affinity_tags_differ_per_client_and_per_backend():
    tags = {(c, b): _lb_clients.affinity_tag(AFFINITY_KEY, c, b)
            for c in ("alice", "bob") for b in ("10.0.0.11:18080", "10.0.0.12:18080")}
    assert len(set(tags.values())) == 4
    assert all(len(t) == 11 and t[0] == "b" and int(t[1:], 16) >= 0 for t in tags.values())
    # Another key, other tags: nobody without the key can compute a client's tag.
    assert _lb_clients.affinity_tag("x" * 32, "alice", "10.0.0.11:18080") != tags[("alice", "10.0.0.11:18080")]


def test_affinity_depends_only_on_the_inventory_so_both_load_balancers_agree():
    first = _lb_clients.affinity(_routes(), ["alice", "bob"], AFFINITY_KEY)
    second = _lb_clients.affinity(_routes(list(BACKENDS)), ["alice", "bob"], AFFINITY_KEY)
    assert first == second
    # Adding a backend never moves an existing session: the old pairs keep their tags.
    grown = _lb_clients.affinity(_routes(BACKENDS + [{"host": "dh-3", "address": "10.0.0.13"}]), ["alice", "bob"],
                                 AFFINITY_KEY)
    assert all(p in grown["pins"]["reference"] for p in first["pins"]["reference"])


def test_affinity_pins_each_client_tag_to_its_backend_and_only_sessionful_routes():
    routes = _routes()
    model = _lb_clients.affinity(routes, ["alice", "bob"], AFFINITY_KEY)
    assert set(model["pins"]) == {"reference"}  # stateless servers are never pinned
    members = routes[0]["members"]
    pins = model["pins"]["reference"]
    assert len(pins) == 2 * len(members)  # clients x backends
    for member in members:
        backend = "%s:%s" % (member["address"], member["port"])
        for client in ("alice", "bob"):
            assert {"client": client, "tag": _lb_clients.affinity_tag(AFFINITY_KEY, client, backend),
                    "upstream": member["upstream"]} in pins
    # Answers cover every backend of every route (stateless too), keyed by the backend id.
    assert len(model["answers"]) == 2 * sum(len(r["members"]) for r in routes)
    assert model["entries"] == len(model["answers"])
    alice = {a["backend"]: a["tag"] for a in model["answers"] if a["client"] == "alice"}
    bob = {a["backend"]: a["tag"] for a in model["answers"] if a["client"] == "bob"}
    assert set(alice) == set(bob) and all(alice[b] != bob[b] for b in alice)


def test_affinity_without_authentication_uses_the_empty_client():
    model = _lb_clients.affinity(_routes(), [""], AFFINITY_KEY)
    assert {p["client"] for p in model["pins"]["reference"]} == {""}


@pytest.mark.parametrize("key", ["", "short", None, 12345])
def test_affinity_needs_a_key_of_32_characters(key):
    with pytest.raises(ValueError, match="nginx_lb_affinity_key must be a string of at least 32 characters") as info:
        _lb_clients.affinity(_routes(), ["alice"], key)
    assert "short" not in str(info.value)


def test_tool_rules_are_kept_sorted_and_a_star_stands_alone():
    model = _lb_clients.normalize([ok(tools={"time": ["get_current_time", "convert_time", "convert_time"],
                                             "reference": ["echo", "*"]}), ok("b", token_sha256="e" * 64, tools={})],
                                  50, 10, 20)
    by_name = {c["name"]: c for c in model["clients"]}
    assert by_name["agent"]["tools"] == {"reference": ["*"], "time": ["convert_time", "get_current_time"]}
    assert by_name["b"]["tools"] == {}  # declared and empty: no tool anywhere
