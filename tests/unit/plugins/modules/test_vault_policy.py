"""Tests for fleetops.mcp.vault_policy, run through main() against the Vault API test double (not Vault)."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from ansible_collections.fleetops.mcp.plugins.modules import vault_policy
from ansible_collections.fleetops.mcp.tests.vault_double.pytest_fixtures import (  # noqa: F401 (fixtures)
    ansible_bin,
    ansible_env,
    assert_no_secrets,
    closed_vault_url,
    isolated_vault_env,
    make_module_runner,
    run_module_subprocess,
    vault_double,
    vault_tls_double,
)

READER = """\
path "secret/data/mcp/*" {
  capabilities = ["read"]
}
"""
READER_REFORMATTED = "\r\n\r\n" + READER.replace("\n", "   \r\n") + "\r\n\r\n"
WRITER = READER + """path "secret/metadata/mcp/*" {
  capabilities = ["list"]
}
"""
# A token that may manage policies and nothing else, plus one that may do nothing.
POLICY_ADMIN = 'path "sys/policies/acl/*" {\n  capabilities = ["create", "read", "update", "delete", "list"]\n}\n'


@pytest.fixture
def run(monkeypatch):
    return make_module_runner(monkeypatch, vault_policy.main)


@pytest.fixture
def admin(vault_double):
    """Connection options with a token limited to sys/policies/acl/ on the double."""
    token = vault_double.add_token(paths=["sys/policies/acl/"])
    return dict(url=vault_double.url, token=token)


def policy_writes(double, name):
    return [req for req in double.requests if req.path == f"sys/policies/acl/{name}" and req.method in ("PUT", "POST")]


# --------------------------------------------------------------------------- #
# Idempotent lifecycle
# --------------------------------------------------------------------------- #


def test_create_then_second_run_is_unchanged(run, vault_double, admin):
    first = run(name="mcp-reader", policy=READER, **admin)
    assert not first.get("failed"), first.get("msg")
    assert first["changed"] is True
    assert first["name"] == "mcp-reader" and first["vault_path"] == "sys/policies/acl/mcp-reader"
    assert first["policy"] == READER
    assert vault_double.policy("mcp-reader") == READER

    second = run(name="mcp-reader", policy=READER, **admin)
    assert second["changed"] is False
    assert len(policy_writes(vault_double, "mcp-reader")) == 1


def test_whitespace_and_line_endings_do_not_count_as_changes(run, vault_double, admin):
    vault_double.seed_policy("mcp-reader", READER)
    result = run(name="mcp-reader", policy=READER_REFORMATTED, **admin)
    assert result["changed"] is False
    assert policy_writes(vault_double, "mcp-reader") == []


def test_update_with_diff(run, vault_double, admin):
    vault_double.seed_policy("mcp-reader", READER)
    result = run(diff=True, name="mcp-reader", policy=WRITER, **admin)
    assert result["changed"] is True
    assert vault_double.policy("mcp-reader") == WRITER
    diff = result["diff"]
    assert diff["before"] == READER and diff["after"] == WRITER
    assert diff["before_header"] == "sys/policies/acl/mcp-reader (in Vault)"


def test_check_mode_predicts_but_changes_nothing(run, vault_double, admin):
    result = run(check_mode=True, diff=True, name="mcp-reader", policy=READER, **admin)
    assert result["changed"] is True
    assert result["diff"]["before"] == "" and result["diff"]["after"] == READER
    assert vault_double.policy("mcp-reader") is None
    assert policy_writes(vault_double, "mcp-reader") == []

    vault_double.seed_policy("mcp-reader", READER)
    result = run(check_mode=True, name="mcp-reader", state="absent", **admin)
    assert result["changed"] is True
    assert vault_double.policy("mcp-reader") == READER
    assert not [req for req in vault_double.requests if req.method == "DELETE"]


def test_delete_and_delete_again(run, vault_double, admin):
    vault_double.seed_policy("mcp-reader", READER)
    result = run(diff=True, name="mcp-reader", state="absent", **admin)
    assert result["changed"] is True and "policy" not in result
    assert result["diff"]["before"] == READER and result["diff"]["after"] == ""
    assert vault_double.policy("mcp-reader") is None
    assert run(name="mcp-reader", state="absent", **admin)["changed"] is False


def test_names_are_lower_cased(run, vault_double, admin):
    result = run(name="MCP-Reader", policy=READER, **admin)
    assert result["name"] == "mcp-reader"
    assert vault_double.policy("mcp-reader") == READER
    assert run(name="mcp-READER", policy=READER, **admin)["changed"] is False


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(name="root", policy=READER), "'root' policy cannot be created, changed or deleted"),
        (dict(name="default", state="absent"), "'default' policy cannot be deleted"),
        (dict(name="a/b", policy=READER), "must not contain '/'"),
        (dict(name="empty", policy=" \n "), "policy option is empty"),
    ],
)
def test_invalid_requests_fail_before_contacting_vault(run, vault_double, admin, args, message):
    result = run(**args, **admin)
    assert result["failed"] and result["error_class"] == "configuration"
    assert message in result["msg"]
    assert vault_double.requests == []


def test_state_present_requires_policy(run, admin):
    result = run(name="mcp-reader", **admin)
    assert result["failed"] and "policy" in result["msg"]


def test_environment_fallbacks(run, vault_double, admin, monkeypatch):
    monkeypatch.setenv("VAULT_ADDR", admin["url"])
    monkeypatch.setenv("VAULT_TOKEN", admin["token"])
    monkeypatch.setenv("VAULT_NAMESPACE", "team-mcp")
    result = run(name="from-env", policy=READER)
    assert result["changed"] is True
    assert {req.namespace for req in vault_double.requests} == {"team-mcp"}
    assert_no_secrets(result, admin["token"])


def test_namespace_header_on_every_request(run, vault_double, admin):
    run(name="mcp-reader", policy=READER, namespace="platform/mcp", **admin)
    assert vault_double.requests
    assert all(req.namespace == "platform/mcp" for req in vault_double.requests)


# --------------------------------------------------------------------------- #
# AppRole authentication
# --------------------------------------------------------------------------- #


def test_approle_login_with_wrapped_secret_id(run, vault_double):
    vault_double.seed_policy("policy-admin", POLICY_ADMIN)
    role_id = vault_double.seed_approle("deployer", token_policies=["policy-admin"])
    wrapping_token, _accessor = vault_double.issue_secret_id("deployer", wrap_ttl=120)
    secret_id = next(iter(vault_double.approle("deployer").secret_ids))
    args = dict(url=vault_double.url, auth_method="approle", role_id=role_id, secret_id_wrapping_token=wrapping_token)

    result = run(name="mcp-reader", policy=READER, **args)
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True and vault_double.policy("mcp-reader") == READER
    login = vault_double.requests_for("auth/approle/login")[0]
    assert login.json() == {"role_id": role_id, "secret_id": secret_id}
    unwrap = vault_double.requests_for("sys/wrapping/unwrap")[0]
    assert unwrap.token == wrapping_token and not unwrap.json()  # wrapping token only in the header
    for secret in (wrapping_token, secret_id):
        assert not [line for line in vault_double.access_log if secret in line]  # never in a URL
    assert_no_secrets(result, wrapping_token, secret_id)

    # A wrapping token works once: reusing it is reported as a possible compromise.
    again = run(name="mcp-reader", policy=READER, **args)
    assert again["failed"] and again["error_class"] == "invalid_credentials"
    assert again["vault_path"] == "sys/wrapping/unwrap"
    assert "already unwrapped" in again["msg"] and "compromised" in again["msg"]
    assert_no_secrets(again, wrapping_token, secret_id)


def test_approle_login_with_plain_secret_id_and_bad_secret_id(run, vault_double):
    vault_double.seed_policy("policy-admin", POLICY_ADMIN)
    role_id = vault_double.seed_approle("deployer", token_policies=["policy-admin"])
    secret_id, _ = vault_double.issue_secret_id("deployer")
    ok = run(
        name="p1", policy=READER, url=vault_double.url, auth_method="approle", role_id=role_id, secret_id=secret_id
    )
    assert ok["changed"] is True

    wrong = "00000000-wrong-secret-id"
    bad = run(name="p1", policy=READER, url=vault_double.url, auth_method="approle", role_id=role_id, secret_id=wrong)
    assert bad["failed"] and bad["error_class"] == "invalid_credentials"
    assert bad["vault_path"] == "auth/approle/login" and bad["http_status"] == 400
    assert "invalid role or secret ID" in bad["msg"]
    assert_no_secrets(bad, wrong, secret_id)


def test_approle_requires_role_id_and_rejects_two_secret_sources(run, vault_double):
    result = run(name="p", policy=READER, url=vault_double.url, auth_method="approle", secret_id="x")
    assert result["failed"] and "role_id" in result["msg"]
    result = run(
        name="p",
        policy=READER,
        url=vault_double.url,
        auth_method="approle",
        role_id="r",
        secret_id="s-123456",
        secret_id_wrapping_token="w-123456",
    )
    assert result["failed"] and "mutually exclusive" in result["msg"]


# --------------------------------------------------------------------------- #
# Failure classes (no secret in any message)
# --------------------------------------------------------------------------- #


def test_wrong_token_is_permission_denied(run, vault_double):
    wrong = "wrong-token-never-echoed"
    result = run(name="mcp-reader", policy=READER, url=vault_double.url, token=wrong)
    assert result["failed"] and result["error_class"] == "permission_denied"
    assert result["http_status"] == 403 and result["vault_path"] == "sys/policies/acl/mcp-reader"
    assert "Permission denied (HTTP 403) while reading ACL policy 'mcp-reader'" in result["msg"]
    assert_no_secrets(result, wrong)


def test_token_without_capability_is_permission_denied(run, vault_double):
    reader_only = vault_double.add_token(paths=["secret/"])
    result = run(name="mcp-reader", policy=READER, url=vault_double.url, token=reader_only)
    assert result["error_class"] == "permission_denied"
    assert_no_secrets(result, reader_only)


def test_unreachable_vault(run, closed_vault_url):
    token = "token-for-a-closed-port"
    result = run(name="mcp-reader", policy=READER, url=closed_vault_url, token=token)
    assert result["failed"] and result["error_class"] == "connection"
    assert "Cannot connect to Vault at %s" % closed_vault_url in result["msg"]
    assert "connection refused" in result["msg"]
    assert_no_secrets(result, token)


def test_sealed_vault(run, vault_double, admin):
    vault_double.sealed = True
    result = run(name="mcp-reader", policy=READER, **admin)
    assert result["failed"] and result["error_class"] == "sealed" and result["http_status"] == 503
    assert "Vault is sealed or unavailable (HTTP 503) while reading ACL policy 'mcp-reader'" in result["msg"]
    assert "Vault is sealed" in result["msg"]
    assert_no_secrets(result, admin["token"])


def test_tls_needs_the_ca(run, vault_tls_double, tls_material):
    token = vault_tls_double.add_token(paths=["sys/policies/acl/"])
    result = run(name="mcp-reader", policy=READER, url=vault_tls_double.url, token=token)
    assert result["failed"] and result["error_class"] == "tls"
    assert "certificate verify failed" in result["msg"] and "ca_cert" in result["msg"]
    assert_no_secrets(result, token)

    result = run(
        name="mcp-reader", policy=READER, url=vault_tls_double.url, token=token, ca_cert=str(tls_material.cert_path)
    )
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True

    result = run(name="mcp-reader", policy=READER, url=vault_tls_double.url, token=token, validate_certs=False)
    assert result["changed"] is False
    assert any("validate_certs=false" in warning for warning in result["warnings"])


def test_missing_ca_file_is_a_configuration_error(run, vault_tls_double, tmp_path):
    result = run(
        name="p", policy=READER, url=vault_tls_double.url, token="t-123456", ca_cert=str(tmp_path / "nope.pem")
    )
    assert result["failed"] and result["error_class"] == "configuration"
    assert "ca_cert file" in result["msg"]


def test_missing_url_and_token(run, vault_double):
    result = run(name="p", policy=READER, token="t-123456")
    assert result["failed"] and result["error_class"] == "configuration" and "VAULT_ADDR" in result["msg"]
    result = run(name="p", policy=READER, url=vault_double.url)
    assert result["failed"] and result["error_class"] == "configuration" and "VAULT_TOKEN" in result["msg"]


# --------------------------------------------------------------------------- #
# Real module process: JSON output path, missing hvac
# --------------------------------------------------------------------------- #


def test_real_output_masks_the_token(vault_double, admin, collections_root, tmp_path):
    code, stdout, stderr = run_module_subprocess(
        "vault_policy", dict(name="mcp-reader", policy=READER, **admin), collections_root, tmp_path
    )
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["changed"] is True
    assert result["invocation"]["module_args"]["token"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    assert admin["token"] not in stdout and admin["token"] not in stderr


def test_missing_hvac_is_reported_with_missing_required_lib(vault_double, admin, collections_root, tmp_path):
    code, stdout, stderr = run_module_subprocess(
        "vault_policy", dict(name="mcp-reader", policy=READER, **admin), collections_root, tmp_path, block_hvac=True
    )
    assert code == 1
    result = json.loads(stdout)
    assert result["failed"] is True and result["error_class"] == "configuration"
    assert "Failed to import the required Python library (hvac)" in result["msg"]
    assert admin["token"] not in stdout and admin["token"] not in stderr
    assert vault_double.requests == []


# --------------------------------------------------------------------------- #
# Documentation
# --------------------------------------------------------------------------- #


def test_examples_and_return_parse():
    examples = yaml.safe_load(vault_policy.EXAMPLES)
    assert all("fleetops.mcp.vault_policy" in task for task in examples)
    returned = yaml.safe_load(vault_policy.RETURN)
    assert {"name", "state", "vault_path", "policy", "error_class", "http_status"} <= set(returned)


def test_ansible_doc_renders_and_matches_argument_spec(tmp_path, collections_root):
    proc = subprocess.run(
        [ansible_bin("ansible-doc"), "--json", "-t", "module", "fleetops.mcp.vault_policy"],
        capture_output=True,
        text=True,
        env=ansible_env(tmp_path, collections_root),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)["fleetops.mcp.vault_policy"]["doc"]
    assert doc["version_added"] == "0.1.0"
    assert doc["author"] == ["fleetops.mcp contributors (@fleetops)"]
    options = doc["options"]
    spec = vault_policy.ARGUMENT_SPEC
    assert set(options) == set(spec)
    for name, opt in options.items():
        assert opt["type"] == spec[name].get("type", "str"), name
        assert opt.get("default") == spec[name].get("default"), name
        assert opt.get("choices") == spec[name].get("choices"), name
        assert opt.get("required", False) == spec[name].get("required", False), name
    for secret in ("token", "secret_id", "secret_id_wrapping_token"):
        assert spec[secret]["no_log"] is True
