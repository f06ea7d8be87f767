"""Tests for fleetops.mcp.vault_approle, run through main() against the Vault API test double (not Vault)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import hvac
import pytest
import yaml

from ansible_collections.fleetops.mcp.plugins.module_utils._vault import VaultModuleError
from ansible_collections.fleetops.mcp.plugins.modules import vault_approle
from ansible_collections.fleetops.mcp.tests.vault_double.pytest_fixtures import (  # noqa: F401 (fixtures)
    ansible_bin,
    ansible_env,
    assert_no_secrets,
    closed_vault_url,
    isolated_vault_env,
    make_module_runner,
    vault_double,
)

ROLE = "mcp-web01"
ROLE_PATH = f"auth/approle/role/{ROLE}"
FULL_SETTINGS = dict(
    token_policies=["MCP-Reader", "mcp-metrics"],
    token_ttl="1h",
    token_max_ttl="4h",
    token_bound_cidrs=["127.0.0.1"],
    secret_id_ttl="10m",
    secret_id_num_uses=1,
    secret_id_bound_cidrs=["127.0.0.0/8"],
)
# The same settings written the other ways Vault accepts them.
EQUIVALENT_SETTINGS = dict(
    token_policies=["mcp-metrics", "mcp-reader"],
    token_ttl=3600,
    token_max_ttl="240m",
    token_bound_cidrs=["127.0.0.1/32"],
    secret_id_ttl="600",
    secret_id_num_uses=1,
    secret_id_bound_cidrs=["127.0.0.0/8"],
)


@pytest.fixture
def run(monkeypatch):
    return make_module_runner(monkeypatch, vault_approle.main)


@pytest.fixture
def admin(vault_double):
    """Connection options with a token limited to the AppRole mount of the double."""
    return dict(url=vault_double.url, token=vault_double.add_token(paths=["auth/approle/role"]))


def role_writes(double, name=ROLE):
    return [req for req in double.requests if req.path == f"auth/approle/role/{name}" and req.method in ("PUT", "POST")]


def secret_id_requests(double, name=ROLE):
    return double.requests_for(f"auth/approle/role/{name}/secret-id")


# --------------------------------------------------------------------------- #
# Idempotent lifecycle
# --------------------------------------------------------------------------- #


def test_create_returns_role_id_and_equivalent_values_are_unchanged(run, vault_double, admin):
    created = run(name=ROLE, **FULL_SETTINGS, **admin)
    assert not created.get("failed"), created.get("msg")
    assert created["changed"] is True
    assert created["role_id"] == vault_double.approle(ROLE).role_id
    assert created["changed_fields"] == sorted(FULL_SETTINGS)
    assert created["vault_path"] == ROLE_PATH and created["mount_point"] == "approle"
    role = created["role"]
    assert role["token_ttl"] == 3600 and role["token_max_ttl"] == 14400 and role["secret_id_ttl"] == 600
    assert role["token_policies"] == ["mcp-metrics", "mcp-reader"]

    again = run(name=ROLE.upper(), **EQUIVALENT_SETTINGS, **admin)
    assert again["changed"] is False and again["changed_fields"] == []
    assert again["role_id"] == created["role_id"]
    assert len(role_writes(vault_double)) == 1


def test_only_the_options_set_are_compared_and_written(run, vault_double, admin):
    vault_double.seed_approle(ROLE, token_policies=["mcp-reader"], token_ttl=3600, secret_id_num_uses=5)
    unchanged = run(name=ROLE, token_policies=["mcp-reader"], **admin)
    assert unchanged["changed"] is False

    updated = run(diff=True, name=ROLE, token_policies=["mcp-reader"], token_ttl="2h", **admin)
    assert updated["changed"] is True and updated["changed_fields"] == ["token_ttl"]
    assert role_writes(vault_double)[-1].json() == {"token_ttl": 7200}
    assert vault_double.approle(ROLE).settings["secret_id_num_uses"] == 5
    assert updated["diff"]["before"] == {"token_policies": ["mcp-reader"], "token_ttl": 3600}
    assert updated["diff"]["after"] == {"token_policies": ["mcp-reader"], "token_ttl": 7200}


def test_check_mode_create_and_update_change_nothing(run, vault_double, admin):
    predicted = run(check_mode=True, diff=True, name=ROLE, **FULL_SETTINGS, **admin)
    assert predicted["changed"] is True and predicted["role_id"] is None
    assert predicted["diff"]["before"] == {}
    assert predicted["diff"]["after"]["token_ttl"] == 3600
    assert vault_double.approle(ROLE) is None and role_writes(vault_double) == []

    role_id = vault_double.seed_approle(ROLE, token_ttl=3600)
    predicted = run(check_mode=True, name=ROLE, token_ttl="30m", **admin)
    assert predicted["changed"] is True and predicted["role_id"] == role_id
    assert predicted["role"]["token_ttl"] == 1800
    assert vault_double.approle(ROLE).settings["token_ttl"] == 3600 and role_writes(vault_double) == []


def test_delete_delete_again_and_check_mode(run, vault_double, admin):
    vault_double.seed_approle(ROLE, token_ttl=60)
    predicted = run(check_mode=True, name=ROLE, state="absent", **admin)
    assert predicted["changed"] is True and vault_double.approle(ROLE) is not None

    deleted = run(diff=True, name=ROLE, state="absent", **admin)
    assert deleted["changed"] is True and vault_double.approle(ROLE) is None
    assert deleted["diff"]["before"]["token_ttl"] == 60 and deleted["diff"]["after"] == {}
    assert "role_id" not in deleted
    assert run(name=ROLE, state="absent", **admin)["changed"] is False


def test_custom_mount_point(run, vault_double, admin):
    vault_double.approles["approle-mcp"] = {}
    admin["token"] = vault_double.add_token(paths=["auth/approle-mcp/role"])
    result = run(name=ROLE, mount_point="approle-mcp", token_ttl=60, **admin)
    assert result["changed"] is True and result["vault_path"] == f"auth/approle-mcp/role/{ROLE}"
    assert vault_double.approle(ROLE, mount="approle-mcp").settings["token_ttl"] == 60


# --------------------------------------------------------------------------- #
# Issuing SecretIDs
# --------------------------------------------------------------------------- #


def test_issuing_requires_no_log_and_contacts_nothing_otherwise(run, vault_double, admin):
    vault_double.seed_approle(ROLE)
    for check_mode in (False, True):
        result = run(check_mode=check_mode, name=ROLE, issue_secret_id=True, **admin)
        assert result["failed"] and result["error_class"] == "configuration"
        assert "no_log: true" in result["msg"] and "Nothing was issued" in result["msg"]
    assert vault_double.requests == []
    assert vault_double.approle(ROLE).secret_ids == {}


def test_issue_plain_secret_id(run, vault_double, admin):
    role_id = vault_double.seed_approle(ROLE, token_policies=["mcp-reader"], secret_id_ttl=600)
    result = run(no_log=True, diff=True, name=ROLE, token_policies=["mcp-reader"], issue_secret_id=True, **admin)
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True and result["changed_fields"] == [] and result["secret_id_issued"] is True
    secret_id = result["secret_id"]
    stored = vault_double.approle(ROLE).secret_ids[secret_id]
    assert result["secret_id_accessor"] == stored.accessor and result["secret_id_ttl"] == 600
    assert "wrapping_token" not in result
    assert_no_secrets({k: v for k, v in result.items() if k != "secret_id"}, secret_id)
    assert "never shown" in result["diff"]["after"]["new_secret_id"]
    assert admin["token"] not in json.dumps(result)

    client = hvac.Client(url=vault_double.url)
    login = client.auth.approle.login(role_id=role_id, secret_id=secret_id)
    assert "mcp-reader" in login["auth"]["token_policies"]


def test_issue_wrapped_secret_id_returns_only_the_wrapping_token(run, vault_double, admin):
    role_id = vault_double.seed_approle(ROLE)
    result = run(
        no_log=True,
        name=ROLE,
        issue_secret_id=True,
        wrap_ttl="5m",
        secret_id_metadata={"host": "web01"},
        **admin,
    )
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True and "secret_id" not in result
    secret_id, stored = next(iter(vault_double.approle(ROLE).secret_ids.items()))
    assert stored.metadata == {"host": "web01"}
    assert_no_secrets(result, secret_id, admin["token"])
    assert result["wrap_info"]["ttl"] == 300
    assert result["wrap_info"]["creation_path"] == f"{ROLE_PATH}/secret-id"
    assert result["secret_id_accessor"] == result["wrap_info"]["wrapped_accessor"] == stored.accessor
    assert "token" not in result["wrap_info"]
    request = secret_id_requests(vault_double)[0]
    assert request.headers["x-vault-wrap-ttl"] == "300"

    unwrapper = hvac.Client(url=vault_double.url, token=result["wrapping_token"])
    assert unwrapper.sys.unwrap()["data"]["secret_id"] == secret_id
    login = hvac.Client(url=vault_double.url).auth.approle.login(role_id=role_id, secret_id=secret_id)
    assert login["auth"]["metadata"]["role_name"] == ROLE


def test_check_mode_skips_issuing_but_reports_the_change(run, vault_double, admin):
    vault_double.seed_approle(ROLE)
    result = run(check_mode=True, no_log=True, name=ROLE, issue_secret_id=True, wrap_ttl=60, **admin)
    assert result["changed"] is True and result["secret_id_issued"] is False
    assert "secret_id" not in result and "wrapping_token" not in result
    assert secret_id_requests(vault_double) == []


def test_unwrapped_answer_despite_wrap_ttl_is_refused_without_returning_the_secret():
    leaked = "4d1d4a3c-5ecr-e71d-0000-000000000000"
    answer = {"data": {"secret_id": leaked, "secret_id_accessor": "acc-123"}, "wrap_info": None}
    with pytest.raises(VaultModuleError) as caught:
        vault_approle._wrapped_result(answer, f"{ROLE_PATH}/secret-id")
    assert caught.value.error_class == "unexpected"
    assert "X-Vault-Wrap-TTL" in str(caught.value) and "acc-123" in str(caught.value)
    assert leaked not in str(caught.value)


# --------------------------------------------------------------------------- #
# Option validation and failure classes
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(token_ttl="1x"), "token_ttl: '1x' is not a duration"),
        (dict(token_ttl="2h", token_max_ttl="1h"), "token_ttl (7200s) must not be longer than token_max_ttl (3600s)"),
        (dict(token_bound_cidrs=["10.0.0.300/8"]), "not an IP address or CIDR block"),
        (dict(secret_id_num_uses=-1), "must not be negative"),
        (dict(name="bad/name"), "Invalid AppRole name"),
        (dict(wrap_ttl="5m"), "wrap_ttl applies only with issue_secret_id=true"),
        (dict(issue_secret_id=True, state="absent"), "issue_secret_id=true needs state=present"),
        (dict(issue_secret_id=True, wrap_ttl=0), "wrap_ttl must be longer than zero"),
    ],
)
def test_invalid_options_fail_before_contacting_vault(run, vault_double, admin, args, message):
    args = dict(dict(name=ROLE), **args)
    result = run(no_log=True, **args, **admin)
    assert result["failed"] and result["error_class"] == "configuration"
    assert message in result["msg"]
    assert vault_double.requests == []


def test_wrong_token_sealed_and_unreachable(run, vault_double, closed_vault_url):
    wrong = "wrong-token-never-echoed"
    denied = run(name=ROLE, token_ttl=60, url=vault_double.url, token=wrong)
    assert denied["error_class"] == "permission_denied" and denied["vault_path"] == ROLE_PATH
    assert f"Permission denied (HTTP 403) while reading AppRole '{ROLE}'" in denied["msg"]

    vault_double.sealed = True
    sealed = run(name=ROLE, token_ttl=60, url=vault_double.url, token=vault_double.root_token)
    assert sealed["error_class"] == "sealed" and sealed["http_status"] == 503

    unreachable = run(name=ROLE, token_ttl=60, url=closed_vault_url, token=wrong)
    assert unreachable["error_class"] == "connection" and "connection refused" in unreachable["msg"]
    for result in (denied, sealed, unreachable):
        assert result["failed"] is True
        assert_no_secrets(result, wrong, vault_double.root_token)


def test_module_authenticates_with_approle_itself(run, vault_double):
    vault_double.seed_policy(
        "approle-admin", 'path "auth/approle/role/*" {\n  capabilities = ["create", "read", "update", "delete"]\n}\n'
    )
    deployer_role_id = vault_double.seed_approle("deployer", token_policies=["approle-admin"])
    wrapping_token, _ = vault_double.issue_secret_id("deployer", wrap_ttl=60)
    result = run(
        name=ROLE,
        token_ttl="15m",
        url=vault_double.url,
        auth_method="approle",
        role_id=deployer_role_id,
        secret_id_wrapping_token=wrapping_token,
    )
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True and vault_double.approle(ROLE).settings["token_ttl"] == 900
    assert_no_secrets(result, wrapping_token, *vault_double.approle("deployer").secret_ids)


# --------------------------------------------------------------------------- #
# End to end through ansible-playbook: no_log keeps the SecretID out of the output
# --------------------------------------------------------------------------- #


def test_playbook_registers_the_secret_id_but_never_prints_it(vault_double, admin, tmp_path, collections_root):
    out = tmp_path / "out"
    out.mkdir()
    playbook = tmp_path / "approle.yml"
    playbook.write_text(textwrap.dedent(f"""\
            - hosts: localhost
              gather_facts: false
              connection: local
              module_defaults:
                group/fleetops.mcp.vault:
                  url: {admin["url"]}
                  token: {admin["token"]}
              tasks:
                - name: Issue a SecretID
                  fleetops.mcp.vault_approle:
                    name: {ROLE}
                    token_ttl: 1h
                    issue_secret_id: true
                  no_log: true
                  register: issued

                - name: Keep the SecretID in a private file
                  ansible.builtin.copy:
                    content: "{{{{ issued.secret_id }}}}"
                    dest: {out}/secret_id
                    mode: "0600"
                  no_log: true

                - name: Issuing without no_log is refused
                  fleetops.mcp.vault_approle:
                    name: {ROLE}
                    issue_secret_id: true
                  register: refused
                  ignore_errors: true

                - name: Record the refusal
                  ansible.builtin.copy:
                    content: "{{{{ refused.msg }}}}"
                    dest: {out}/refused
                    mode: "0600"
            """))
    proc = subprocess.run(
        [
            ansible_bin("ansible-playbook"),
            "-v",
            "-i",
            "localhost,",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            str(playbook),
        ],
        capture_output=True,
        text=True,
        env=ansible_env(tmp_path, collections_root),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    secret_id = (out / "secret_id").read_text()
    assert secret_id in vault_double.approle(ROLE).secret_ids
    assert secret_id not in proc.stdout and secret_id not in proc.stderr
    assert admin["token"] not in proc.stdout and admin["token"] not in proc.stderr
    assert "censored" in proc.stdout
    assert "no_log: true" in (out / "refused").read_text()
    assert len(secret_id_requests(vault_double)) == 1


# --------------------------------------------------------------------------- #
# Documentation
# --------------------------------------------------------------------------- #


def test_examples_and_return_parse():
    examples = yaml.safe_load(vault_approle.EXAMPLES)
    assert all(set(task) & {"fleetops.mcp.vault_approle", "ansible.builtin.copy"} for task in examples)
    for task in examples:
        if task.get("fleetops.mcp.vault_approle", {}).get("issue_secret_id"):
            assert task.get("no_log") is True
    returned = yaml.safe_load(vault_approle.RETURN)
    assert {"role_id", "secret_id", "wrapping_token", "wrap_info", "changed_fields", "error_class"} <= set(returned)


def test_ansible_doc_renders_and_matches_argument_spec(tmp_path, collections_root):
    proc = subprocess.run(
        [ansible_bin("ansible-doc"), "--json", "-t", "module", "fleetops.mcp.vault_approle"],
        capture_output=True,
        text=True,
        env=ansible_env(tmp_path, collections_root),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)["fleetops.mcp.vault_approle"]["doc"]
    assert doc["version_added"] == "0.1.0"
    options = doc["options"]
    spec = vault_approle.ARGUMENT_SPEC
    assert set(options) == set(spec)
    for name, opt in options.items():
        assert opt["type"] == spec[name].get("type", "str"), name
        assert opt.get("default") == spec[name].get("default"), name
        assert opt.get("choices") == spec[name].get("choices"), name
        assert opt.get("elements") == spec[name].get("elements"), name
        assert opt.get("aliases", []) == spec[name].get("aliases", []), name
