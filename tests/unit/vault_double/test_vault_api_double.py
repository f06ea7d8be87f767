"""The Vault API test double (not Vault) answers real clients the way HashiCorp documents Vault does.

Driven with hvac (the library the fleetops.mcp modules use) and, end to end,
with community.hashi_vault's own modules and lookups through ansible-playbook
(the client the roles use).
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import textwrap

import hvac
import hvac.exceptions
import pytest
import requests

from ansible_collections.fleetops.mcp.tests.vault_double.pytest_fixtures import (  # noqa: F401 (fixtures)
    ansible_bin,
    ansible_env,
    isolated_vault_env,
    vault_double,
    vault_tls_double,
)
from ansible_collections.fleetops.mcp.tests.vault_double.vault_api_double import VaultAPIDouble

KV_READER = 'path "secret/data/mcp/*" {\n  capabilities = ["read"]\n}\n'


def client(double, token=None, **kwargs):
    """An hvac client for the double (root token unless told otherwise)."""
    return hvac.Client(url=double.url, token=token if token is not None else double.root_token, **kwargs)


def health(double, query=""):
    return requests.get(f"{double.url}/v1/sys/health{query}", timeout=5)


# --------------------------------------------------------------------------- #
# sys/health
# --------------------------------------------------------------------------- #


def test_health_codes_and_query_parameters(vault_double):
    answer = health(vault_double)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
    body = answer.json()
    assert body["initialized"] is True and body["sealed"] is False and body["standby"] is False
    assert "double" in body["version"] and body["cluster_name"]
    assert client(vault_double).sys.read_health_status(method="GET")["sealed"] is False

    vault_double.standby = True
    assert health(vault_double).status_code == 429
    assert health(vault_double, "?standbyok=true").status_code == 200
    assert health(vault_double, "?standbycode=299").status_code == 299
    vault_double.standby = False

    vault_double.sealed = True
    sealed = health(vault_double)
    assert sealed.status_code == 503 and sealed.json()["sealed"] is True and "cluster_name" not in sealed.json()
    assert health(vault_double, "?sealedcode=200").status_code == 200

    vault_double.initialized = False
    assert health(vault_double).status_code == 501
    assert health(vault_double, "?uninitcode=200").status_code == 200
    assert health(vault_double, "?uninitcode=abc").status_code == 400

    head = requests.head(f"{vault_double.url}/v1/sys/health", timeout=5)
    assert head.status_code == 501 and head.content == b""


# --------------------------------------------------------------------------- #
# KV version 2
# --------------------------------------------------------------------------- #


def test_kv2_versions_cas_metadata_list_and_delete(vault_double):
    kv = client(vault_double).secrets.kv.v2
    assert kv.create_or_update_secret("mcp/github", {"token": "one"})["data"]["version"] == 1
    assert kv.create_or_update_secret("mcp/github", {"token": "two"}, cas=1)["data"]["version"] == 2
    with pytest.raises(hvac.exceptions.InvalidRequest, match="check-and-set parameter did not match"):
        kv.create_or_update_secret("mcp/github", {"token": "three"}, cas=1)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        kv.create_or_update_secret("mcp/github", {"token": "three"}, cas=0)

    latest = kv.read_secret_version("mcp/github", raise_on_deleted_version=True)["data"]
    assert latest["data"] == {"token": "two"} and latest["metadata"]["version"] == 2
    assert latest["metadata"]["deletion_time"] == "" and latest["metadata"]["destroyed"] is False
    first = kv.read_secret_version("mcp/github", version=1, raise_on_deleted_version=True)
    assert first["data"]["data"] == {"token": "one"}

    metadata = kv.read_secret_metadata("mcp/github")["data"]
    assert metadata["current_version"] == 2 and set(metadata["versions"]) == {"1", "2"}

    kv.create_or_update_secret("mcp/team/slack", {"token": "x"})
    assert kv.list_secrets("mcp")["data"]["keys"] == ["github", "team/"]
    assert client(vault_double).list("secret/metadata/mcp")["data"]["keys"] == ["github", "team/"]  # GET ?list=true
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.list_secrets("nothing-here")

    kv.delete_latest_version_of_secret("mcp/github")
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_version("mcp/github", raise_on_deleted_version=True)
    deleted = kv.read_secret_version("mcp/github", raise_on_deleted_version=False)
    assert deleted["data"]["data"] is None and deleted["data"]["metadata"]["deletion_time"]

    kv.delete_metadata_and_all_versions("mcp/github")
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_metadata("mcp/github")
    assert vault_double.kv_secret("mcp/team/slack") == {"token": "x"}


def test_kv2_cas_required_and_config(vault_double):
    kv = client(vault_double).secrets.kv.v2
    kv.create_or_update_secret("mcp/db", {"password": "p1"})
    kv.update_metadata("mcp/db", cas_required=True, custom_metadata={"owner": "fleet"})
    with pytest.raises(hvac.exceptions.InvalidRequest, match="check-and-set parameter required"):
        kv.create_or_update_secret("mcp/db", {"password": "p2"})
    assert kv.create_or_update_secret("mcp/db", {"password": "p2"}, cas=1)["data"]["custom_metadata"] == {
        "owner": "fleet"
    }
    assert kv.read_configuration()["data"]["max_versions"] == 0


# --------------------------------------------------------------------------- #
# ACL policies
# --------------------------------------------------------------------------- #


def test_acl_policies(vault_double):
    sys_api = client(vault_double).sys
    sys_api.create_or_update_acl_policy("MCP-Reader", KV_READER)
    read = sys_api.read_acl_policy("mcp-reader")
    assert read["data"] == {"name": "mcp-reader", "policy": KV_READER}
    assert read["policy"] == KV_READER  # the documented top-level shape is there too
    assert sys_api.list_acl_policies()["data"]["keys"] == ["default", "mcp-reader", "root"]

    encoded = base64.b64encode(KV_READER.encode()).decode()
    sys_api.create_or_update_acl_policy("encoded", encoded)
    assert vault_double.policy("encoded") == KV_READER

    for bad in (
        lambda: sys_api.create_or_update_acl_policy("root", KV_READER),
        lambda: sys_api.delete_acl_policy("default"),
        lambda: sys_api.create_or_update_acl_policy("broken", 'path "x" {'),
    ):
        with pytest.raises(hvac.exceptions.InvalidRequest):
            bad()

    sys_api.delete_acl_policy("mcp-reader")
    with pytest.raises(hvac.exceptions.InvalidPath):
        sys_api.read_acl_policy("mcp-reader")
    sys_api.delete_acl_policy("mcp-reader")  # deleting twice is fine, as in Vault


# --------------------------------------------------------------------------- #
# AppRole, response wrapping, token lookup
# --------------------------------------------------------------------------- #


def test_approle_roles_wrapped_secret_ids_and_login(vault_double):
    approle = client(vault_double).auth.approle
    approle.create_or_update_approle(
        "mcp-web01",
        token_policies=["MCP-Reader", "metrics", "mcp-reader"],
        token_ttl="1h",
        token_max_ttl="2h",
        secret_id_ttl="10m",
        secret_id_num_uses=2,
        token_bound_cidrs=["127.0.0.1/32"],
    )
    role = approle.read_role("mcp-web01")["data"]
    assert role["token_policies"] == ["mcp-reader", "metrics"]
    assert (role["token_ttl"], role["token_max_ttl"], role["secret_id_ttl"]) == (3600, 7200, 600)
    assert role["token_bound_cidrs"] == ["127.0.0.1"] and role["bind_secret_id"] is True
    assert approle.list_roles()["data"]["keys"] == ["mcp-web01"]
    role_id = approle.read_role_id("mcp-web01")["data"]["role_id"]

    wrapped = approle.generate_secret_id("mcp-web01", wrap_ttl="60s")
    assert wrapped["data"] is None
    info = wrapped["wrap_info"]
    assert info["ttl"] == 60 and info["creation_path"] == "auth/approle/role/mcp-web01/secret-id"
    assert info["wrapped_accessor"] and info["accessor"] and info["creation_time"].endswith("Z")
    assert vault_double.requests[-1].headers["x-vault-wrap-ttl"] == "60s"

    unwrapped = client(vault_double, token=info["token"]).sys.unwrap()
    secret_id = unwrapped["data"]["secret_id"]
    assert (
        unwrapped["data"]["secret_id_num_uses"] == 2
        and unwrapped["data"]["secret_id_accessor"] == info["wrapped_accessor"]
    )
    with pytest.raises(hvac.exceptions.InvalidRequest, match="wrapping token is not valid or does not exist"):
        client(vault_double, token=info["token"]).sys.unwrap()

    for _ in range(2):  # secret_id_num_uses=2
        login_client = client(vault_double, token="")
        login = login_client.auth.approle.login(role_id=role_id, secret_id=secret_id)
        assert login["auth"]["token_policies"] == ["default", "mcp-reader", "metrics"]
        assert login["auth"]["lease_duration"] == 3600 and login["auth"]["renewable"] is True
        me = login_client.auth.token.lookup_self()["data"]
        assert me["meta"] == {"role_name": "mcp-web01"} and me["path"] == "auth/approle/login"
    with pytest.raises(hvac.exceptions.InvalidRequest, match="invalid role or secret ID"):
        client(vault_double, token="").auth.approle.login(role_id=role_id, secret_id=secret_id)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="invalid role or secret ID"):
        client(vault_double, token="").auth.approle.login(role_id="no-such-role-id", secret_id=secret_id)

    approle.delete_role("mcp-web01")
    with pytest.raises(hvac.exceptions.InvalidPath):
        approle.read_role("mcp-web01")
    with pytest.raises(hvac.exceptions.InvalidPath):
        approle.list_roles()
    with pytest.raises(hvac.exceptions.InvalidRequest, match='role "mcp-web01" does not exist'):
        approle.generate_secret_id("mcp-web01")


def test_role_validation_and_unknown_parameters(vault_double):
    adapter = client(vault_double).adapter
    answer = adapter.post("/v1/auth/approle/role/r1", json={"token_ttl": 60, "no_such_field": True})
    assert answer["warnings"] == ["Endpoint ignored these unrecognized parameters: ['no_such_field']"]
    with pytest.raises(hvac.exceptions.InvalidRequest, match="'token_ttl' cannot be greater than 'token_max_ttl'"):
        adapter.post("/v1/auth/approle/role/r1", json={"token_ttl": "2h", "token_max_ttl": "1h"})
    with pytest.raises(hvac.exceptions.InvalidRequest, match="invalid CIDR"):
        adapter.post("/v1/auth/approle/role/r1", json={"secret_id_bound_cidrs": ["10.0.0.0/33"]})
    with pytest.raises(hvac.exceptions.InvalidRequest, match="time: invalid duration"):
        adapter.post("/v1/auth/approle/role/r1", json={"token_ttl": "1x"})


def test_secret_id_cidr_restrictions(vault_double):
    role_id = vault_double.seed_approle("r1", secret_id_bound_cidrs=["10.0.0.0/8"])
    secret_id, _ = vault_double.issue_secret_id("r1")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="unauthorized by CIDR restrictions"):
        client(vault_double, token="").auth.approle.login(role_id=role_id, secret_id=secret_id)


def test_unwrap_with_token_in_body_and_double_use(vault_double):
    root = client(vault_double)
    token = vault_double.wrap({"data": {"k": "v"}, "auth": None})
    assert root.sys.unwrap(token=token)["data"] == {"k": "v"}  # a different client token in the header

    burnt = vault_double.wrap({"data": {"k": "v"}})
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client(vault_double, token=burnt).sys.unwrap(token=burnt)  # the documented "do not use both" mistake
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client(vault_double, token=burnt).sys.unwrap()

    other = vault_double.wrap({"data": {"k": "v"}})
    with pytest.raises(hvac.exceptions.Forbidden):
        client(vault_double, token="").sys.unwrap(token=other)  # body token needs a valid client token


def test_login_responses_can_be_wrapped(vault_double):
    role_id = vault_double.seed_approle("r1")
    secret_id, _ = vault_double.issue_secret_id("r1")
    wrapped = client(vault_double, token="").adapter.post(
        "/v1/auth/approle/login", json={"role_id": role_id, "secret_id": secret_id}, wrap_ttl=30
    )
    assert wrapped["auth"] is None and wrapped["wrap_info"]["creation_path"] == "auth/approle/login"
    inner = client(vault_double, token=wrapped["wrap_info"]["token"]).sys.unwrap()
    assert inner["auth"]["accessor"] == wrapped["wrap_info"]["wrapped_accessor"]


# --------------------------------------------------------------------------- #
# Access control, sealing, routing: hvac's matching exception classes
# --------------------------------------------------------------------------- #


def test_tokens_prefixes_and_policies(vault_double):
    vault_double.seed_kv("mcp/github", {"token": "v"})
    vault_double.seed_kv("other/thing", {"token": "v"})
    for token in ("", "unknown-token"):
        with pytest.raises(hvac.exceptions.Forbidden, match="permission denied"):
            client(vault_double, token=token).secrets.kv.v2.read_secret_version(
                "mcp/github", raise_on_deleted_version=True
            )

    prefixed = client(vault_double, token=vault_double.add_token(paths=["secret/data/mcp/"])).secrets.kv.v2
    assert prefixed.read_secret_version("mcp/github", raise_on_deleted_version=True)["data"]["data"] == {"token": "v"}
    with pytest.raises(hvac.exceptions.Forbidden):
        prefixed.read_secret_version("other/thing", raise_on_deleted_version=True)

    vault_double.seed_policy(
        "mcp",
        KV_READER + 'path "secret/data/mcp/+/admin" {\n  capabilities = ["deny"]\n}\n'
        'path "secret/metadata/+" {\n  capabilities = ["list"]\n}\n',
    )
    vault_double.seed_kv("mcp/team/admin", {"token": "v"})
    policy_kv = client(vault_double, token=vault_double.add_token(policies=["mcp"])).secrets.kv.v2
    assert policy_kv.read_secret_version("mcp/github", raise_on_deleted_version=True)["data"]["data"]["token"] == "v"
    with pytest.raises(hvac.exceptions.Forbidden):
        policy_kv.create_or_update_secret("mcp/github", {"token": "w"})  # read-only
    with pytest.raises(hvac.exceptions.Forbidden):
        policy_kv.read_secret_version("mcp/team/admin", raise_on_deleted_version=True)  # deny wins
    assert policy_kv.list_secrets("mcp")["data"]["keys"] == ["github", "team/"]

    expiring = vault_double.add_token(paths=[""], ttl=60)
    vault_double.tokens[expiring].created -= 120
    with pytest.raises(hvac.exceptions.Forbidden):
        client(vault_double, token=expiring).secrets.kv.v2.read_secret_version(
            "mcp/github", raise_on_deleted_version=True
        )


def test_sealed_and_uninitialized_answer_503_except_health(vault_double):
    role_id = vault_double.seed_approle("r1")
    wrapping = vault_double.wrap({"data": {}})
    vault_double.sealed = True
    root = client(vault_double)
    for call in (
        lambda: root.secrets.kv.v2.read_secret_version("mcp/x", raise_on_deleted_version=True),
        lambda: root.sys.read_acl_policy("default"),
        lambda: client(vault_double, token="").auth.approle.login(role_id=role_id, secret_id="x"),
        lambda: client(vault_double, token=wrapping).sys.unwrap(),
    ):
        with pytest.raises(hvac.exceptions.VaultDown, match="Vault is sealed"):
            call()
    assert health(vault_double).status_code == 503
    vault_double.sealed, vault_double.initialized = False, False
    with pytest.raises(hvac.exceptions.VaultDown):
        root.sys.read_acl_policy("default")


def test_missing_objects_unknown_routes_and_bad_input(vault_double):
    root = client(vault_double)
    assert root.read("secret/data/absent") is None  # hvac maps 404 to None for generic reads
    with pytest.raises(hvac.exceptions.InvalidPath) as missing:
        root.adapter.get("/v1/secret/data/absent")
    assert missing.value.json == {"errors": []}
    with pytest.raises(hvac.exceptions.InvalidPath, match="no handler for route"):
        root.adapter.get("/v1/not-mounted/thing")
    bad = requests.post(
        f"{vault_double.url}/v1/sys/policies/acl/x",
        data="{not json",
        headers={"X-Vault-Token": vault_double.root_token},
        timeout=5,
    )
    assert bad.status_code == 400 and bad.json()["errors"][0].startswith("failed to parse JSON input")


# --------------------------------------------------------------------------- #
# Inspection, namespaces, TLS, lifecycle
# --------------------------------------------------------------------------- #


def test_namespaces_and_request_inspection(vault_double):
    kv = client(vault_double, namespace="team-a").secrets.kv.v2
    kv.create_or_update_secret("mcp/github", {"token": "ghp_secret_value"})
    request = vault_double.requests[-1]
    assert request.namespace == "team-a" and request.method == "POST" and request.path == "secret/data/mcp/github"
    assert request.json() == {"data": {"token": "ghp_secret_value"}, "options": {}}
    assert vault_double.access_log[-1].endswith("POST /v1/secret/data/mcp/github 200 ns=team-a")
    assert not [line for line in vault_double.access_log if "ghp_secret_value" in line]  # never in a URL
    assert vault_double.requests_containing("ghp_secret_value") == [request]  # only in that request's body
    vault_double.clear_requests()
    assert vault_double.requests == [] and vault_double.access_log == []


def test_tls_listener(vault_tls_double, tls_material):
    verified = client(vault_tls_double, verify=str(tls_material.cert_path))
    assert verified.sys.read_acl_policy("default")["data"]["name"] == "default"
    with pytest.raises(requests.exceptions.SSLError, match="certificate verify failed"):
        client(vault_tls_double, verify=True).sys.read_acl_policy("default")


def test_stop_closes_connections_port_and_thread():
    double = VaultAPIDouble().start()
    session = hvac.Client(url=double.url, token=double.root_token)
    session.sys.read_acl_policy("default")  # leaves a keep-alive connection open
    port, thread = double.port, double._thread
    double.stop()
    assert not thread.is_alive()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    double.stop()  # idempotent


# --------------------------------------------------------------------------- #
# community.hashi_vault (the client the roles use) against the double
# --------------------------------------------------------------------------- #


def test_community_hashi_vault_modules_and_lookups(vault_double, tmp_path):
    """Bundled community.hashi_vault plugins, run by ansible-playbook, read and write through the double."""
    vault_double.seed_kv("mcp/github", {"token": "ghp_from_double"})
    vault_double.seed_policy("mcp-reader", KV_READER)
    role_id = vault_double.seed_approle("mcp-web01", token_policies=["mcp-reader"])
    secret_id, _ = vault_double.issue_secret_id("mcp-web01")
    out = tmp_path / "result.json"
    playbook = tmp_path / "hashi_vault.yml"
    playbook.write_text(textwrap.dedent(f"""\
            - hosts: localhost
              gather_facts: false
              connection: local
              vars:
                vault_url: {vault_double.url}
              tasks:
                - name: Lookup with token auth, validated with lookup-self
                  ansible.builtin.set_fact:
                    via_lookup: "{{{{ lookup('community.hashi_vault.vault_kv2_get', 'mcp/github', url=vault_url,
                                     token='{vault_double.root_token}', token_validate=true) }}}}"
                  no_log: true

                - name: Module with AppRole auth
                  community.hashi_vault.vault_kv2_get:
                    url: "{{{{ vault_url }}}}"
                    auth_method: approle
                    role_id: {role_id}
                    secret_id: {secret_id}
                    path: mcp/github
                  register: via_module
                  no_log: true

                - name: Write a new secret
                  community.hashi_vault.vault_kv2_write:
                    url: "{{{{ vault_url }}}}"
                    token: {vault_double.root_token}
                    path: mcp/slack
                    data: {{token: xoxb-from-ansible}}
                    read_before_write: true
                  register: written

                - name: Write it again (read before write makes this idempotent)
                  community.hashi_vault.vault_kv2_write:
                    url: "{{{{ vault_url }}}}"
                    token: {vault_double.root_token}
                    path: mcp/slack
                    data: {{token: xoxb-from-ansible}}
                    read_before_write: true
                  register: written_again

                - name: A wrong token is refused
                  community.hashi_vault.vault_kv2_get:
                    url: "{{{{ vault_url }}}}"
                    token: not-a-valid-token
                    path: mcp/github
                  register: denied
                  ignore_errors: true

                - name: Save what the plugins saw
                  ansible.builtin.copy:
                    dest: {out}
                    mode: "0600"
                    content: "{{{{ {{'lookup': via_lookup.secret, 'module': via_module.secret,
                                 'module_version': via_module.metadata.version, 'written': written.changed,
                                 'written_again': written_again.changed, 'denied': denied.msg}} | to_json }}}}"
                  no_log: true
            """))
    proc = subprocess.run(
        [
            ansible_bin("ansible-playbook"),
            "-i",
            "localhost,",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            str(playbook),
        ],
        capture_output=True,
        text=True,
        env=ansible_env(tmp_path),  # no ANSIBLE_COLLECTIONS_PATH: the collections bundled with `ansible` are used
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = json.loads(out.read_text())
    assert seen["lookup"] == {"token": "ghp_from_double"}
    assert seen["module"] == {"token": "ghp_from_double"} and seen["module_version"] == 1
    assert seen["written"] is True and seen["written_again"] is False
    assert seen["denied"] == "Forbidden: Permission Denied to path ['mcp/github']."
    assert vault_double.kv_secret("mcp/slack") == {"token": "xoxb-from-ansible"}
    assert vault_double.requests_for("auth/token/lookup-self")  # token_validate really asked the double
    login = vault_double.requests_for("auth/approle/login")[0]
    assert login.json() == {"role_id": role_id, "secret_id": secret_id}
    assert "ghp_from_double" not in proc.stdout
