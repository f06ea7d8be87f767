"""Tests for plugins/module_utils/_vault.py against the Vault API test double (not Vault) on loopback."""

from __future__ import annotations

import importlib.util
import sys

import hvac.exceptions
import pytest

from ansible_collections.fleetops.mcp.plugins.module_utils import _vault
from ansible_collections.fleetops.mcp.plugins.module_utils._urls import redact_url
from ansible_collections.fleetops.mcp.plugins.module_utils._vault import (
    VAULT_ARGUMENT_SPEC,
    VaultClient,
    VaultModuleError,
    duration_to_seconds,
    path_segment,
    vault_argument_spec,
    vault_module_kwargs,
)
from ansible_collections.fleetops.mcp.tests.vault_double.pytest_fixtures import (  # noqa: F401 (fixtures)
    assert_no_secrets,
    closed_vault_url,
    isolated_vault_env,
    silent_vault_url,
    vault_double,
    vault_tls_double,
)


def params(**overrides):
    """Module params as AnsibleModule would build them from the shared spec."""
    values = {name: spec.get("default") for name, spec in VAULT_ARGUMENT_SPEC.items()}
    values.update(overrides)
    return values


def connect(**overrides):
    learned = []
    client = VaultClient(params(**overrides), on_secret=learned.append)
    client.authenticate()
    return client, learned


# --------------------------------------------------------------------------- #
# Pure helpers
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "value, seconds",
    [
        (3600, 3600),
        ("3600", 3600),
        ("1h", 3600),
        ("1h30m", 5400),
        ("90s", 90),
        ("7d", 604800),
        ("1.5h", 5400),
        ("1500ms", 1),
        ("", 0),
        (0, 0),
        (" 30M ", 1800),
    ],
)
def test_duration_to_seconds(value, seconds):
    assert duration_to_seconds(value) == seconds


@pytest.mark.parametrize("value", ["1x", "h", "-5", "1h-30m", True, -1, "one hour"])
def test_invalid_durations(value):
    with pytest.raises(VaultModuleError) as caught:
        duration_to_seconds(value, "token_ttl")
    assert caught.value.error_class == "configuration" and "token_ttl" in str(caught.value)


def test_vault_messages_redact_urls_with_the_shared_helper():
    assert redact_url("https://admin:pw@vault.example.com:8200/v1?token=x#f") == "https://vault.example.com:8200/v1"


def test_path_segment():
    assert path_segment("my role") == "my%20role"
    for bad in ("", "  ", "a/b", None):
        with pytest.raises(VaultModuleError):
            path_segment(bad)


def test_argument_spec_and_module_kwargs():
    spec = vault_argument_spec(name=dict(type="str", required=True))
    assert spec["name"] == dict(type="str", required=True) and "url" in spec
    for secret in ("token", "secret_id", "secret_id_wrapping_token"):
        assert spec[secret]["no_log"] is True
    assert spec["url"]["fallback"][1] == ["VAULT_ADDR"]
    assert spec["token"]["fallback"][1] == ["VAULT_TOKEN"]
    assert spec["namespace"]["fallback"][1] == ["VAULT_NAMESPACE"]
    assert spec["ca_cert"]["fallback"][1] == ["VAULT_CACERT"]
    kwargs = vault_module_kwargs(required_if=[("state", "present", ("policy",))])
    assert ("auth_method", "approle", ("role_id",)) in kwargs["required_if"]
    assert ("state", "present", ("policy",)) in kwargs["required_if"]
    assert len(_vault.VAULT_MODULE_KWARGS["required_if"]) == 1  # the shared default is not mutated


# --------------------------------------------------------------------------- #
# Token and AppRole authentication
# --------------------------------------------------------------------------- #


def test_token_auth_read_write_delete(vault_double):
    client, learned = connect(url=vault_double.url, token=vault_double.root_token)
    assert client.write("secret/data/mcp/github", {"data": {"token": "ghp_value"}})["data"]["version"] == 1
    assert client.read("secret/data/mcp/github")["data"]["data"] == {"token": "ghp_value"}
    assert client.read("secret/data/mcp/absent") is None
    assert client.delete("secret/metadata/mcp/github") is None
    assert vault_double.kv_secret("mcp/github") is None
    assert learned == [vault_double.root_token]
    assert {req.token for req in vault_double.requests} == {vault_double.root_token}
    client.close()


def test_vault_warnings_are_collected(vault_double):
    client, _ = connect(url=vault_double.url, token=vault_double.root_token)
    client.write("auth/approle/role/r1", {"token_ttl": 60, "no_such_field": 1}, action="writing AppRole 'r1'")
    assert client.warnings == [
        (
            "Vault warning for writing AppRole 'r1' at Vault path 'auth/approle/role/r1': "
            "Endpoint ignored these unrecognized parameters: ['no_such_field']"
        )
    ]


def test_approle_login_with_secret_id(vault_double):
    vault_double.seed_policy("kv-reader", 'path "secret/data/*" {\n  capabilities = ["read"]\n}\n')
    role_id = vault_double.seed_approle("reader", token_policies=["kv-reader"])
    secret_id, _ = vault_double.issue_secret_id("reader")
    vault_double.seed_kv("mcp/github", {"token": "ghp_value"})
    client, learned = connect(url=vault_double.url, auth_method="approle", role_id=role_id, secret_id=secret_id)
    assert client.read("secret/data/mcp/github")["data"]["data"]["token"] == "ghp_value"
    login_token = vault_double.requests_for("secret/data/mcp/github")[0].token
    assert login_token.startswith("double-token-") and login_token in learned and secret_id in learned
    assert vault_double.requests_for("auth/approle/login")[0].token is None  # no token sent to log in


def test_approle_login_with_wrapped_secret_id_and_namespace(vault_double):
    role_id = vault_double.seed_approle("reader", token_policies=["default"])
    wrapping_token, _ = vault_double.issue_secret_id("reader", wrap_ttl=60)
    secret_id = next(iter(vault_double.approle("reader").secret_ids))
    client, learned = connect(
        url=vault_double.url,
        auth_method="approle",
        role_id=role_id,
        secret_id_wrapping_token=wrapping_token,
        namespace="team-a",
    )
    assert secret_id in learned and wrapping_token in learned
    assert client.read("auth/token/lookup-self")["data"]["meta"] == {"role_name": "reader"}
    assert [req.path for req in vault_double.requests] == [
        "sys/wrapping/unwrap",
        "auth/approle/login",
        "auth/token/lookup-self",
    ]
    assert {req.namespace for req in vault_double.requests} == {"team-a"}


def test_wrapping_token_that_wraps_something_else(vault_double):
    wrapping_token = vault_double.wrap({"data": {"password": "not-a-secret-id"}})
    with pytest.raises(VaultModuleError) as caught:
        connect(url=vault_double.url, auth_method="approle", role_id="r", secret_id_wrapping_token=wrapping_token)
    assert caught.value.error_class == "invalid_credentials"
    assert "did not wrap an AppRole secret_id" in str(caught.value)
    assert "not-a-secret-id" not in str(caught.value) and wrapping_token not in str(caught.value)


def test_approle_without_secret_id_gets_a_hint(vault_double):
    role_id = vault_double.seed_approle("reader")
    with pytest.raises(VaultModuleError) as caught:
        connect(url=vault_double.url, auth_method="approle", role_id=role_id)
    assert caught.value.error_class == "invalid_credentials"
    assert "No secret_id was given" in str(caught.value) and "missing secret_id" in str(caught.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(url=None, token="t-1234"), "VAULT_ADDR"),
        (dict(url="vault.example.com:8200", token="t-1234"), "must start with http:// or https://"),
        (dict(url="http://127.0.0.1:1", token=None), "VAULT_TOKEN"),
    ],
)
def test_configuration_errors(overrides, message):
    with pytest.raises(VaultModuleError) as caught:
        connect(**overrides)
    assert caught.value.error_class == "configuration" and message in str(caught.value)


def test_client_certificate_is_passed_to_the_session(tmp_path, tls_material):
    client, _ = connect(
        url="https://127.0.0.1:1",
        token="t-1234",
        client_cert=str(tls_material.cert_path),
        client_key=str(tls_material.key_path),
        ca_cert=str(tls_material.cert_path),
        timeout=7,
    )
    kwargs = client._client.adapter._kwargs
    assert kwargs["cert"] == (str(tls_material.cert_path), str(tls_material.key_path))
    assert kwargs["verify"] == str(tls_material.cert_path) and kwargs["timeout"] == 7


# --------------------------------------------------------------------------- #
# Error translation: every class names the path, none contains a secret
# --------------------------------------------------------------------------- #


def test_forbidden_not_found_sealed(vault_double):
    limited = vault_double.add_token(paths=["secret/"])
    client, _ = connect(url=vault_double.url, token=limited)
    with pytest.raises(VaultModuleError) as denied:
        client.write("sys/policies/acl/p", {"policy": 'path "a" {}'}, action="writing ACL policy 'p'")
    assert denied.value.details() == dict(
        error_class="permission_denied", vault_path="sys/policies/acl/p", http_status=403
    )
    assert str(denied.value).startswith("Permission denied (HTTP 403) while writing ACL policy 'p' at Vault path")

    with pytest.raises(VaultModuleError) as missing:
        client.write("secret/nothing-mounted-here", {})
    assert missing.value.error_class == "not_found" and missing.value.http_status == 404

    vault_double.sealed = True
    with pytest.raises(VaultModuleError) as sealed:
        client.read("secret/data/x")
    assert sealed.value.error_class == "sealed" and "Vault is sealed" in str(sealed.value)
    for caught in (denied, missing, sealed):
        assert limited not in str(caught.value)


@pytest.mark.parametrize(
    "exception, error_class, status",
    [
        (hvac.exceptions.InvalidRequest, "invalid_request", 400),
        (hvac.exceptions.Unauthorized, "unexpected", 401),
        (hvac.exceptions.RateLimitExceeded, "rate_limited", 429),
        (hvac.exceptions.InternalServerError, "server_error", 500),
        (hvac.exceptions.VaultNotInitialized, "uninitialized", 501),
        (hvac.exceptions.BadGateway, "server_error", 502),
    ],
)
def test_other_statuses_are_classified_and_redacted(exception, error_class, status):
    client = VaultClient(params(url="http://127.0.0.1:1", token="s.sup3r-s3cret-token"))
    error = client._translate(exception(errors=["token s.sup3r-s3cret-token is bad"]), "sys/x", "testing")
    assert error.error_class == error_class and error.http_status == status
    assert "s.sup3r-s3cret-token" not in str(error) and "sys/x" in str(error)


def test_connection_refused(closed_vault_url):
    client, _ = connect(url=closed_vault_url, token="t-closed-port")
    with pytest.raises(VaultModuleError) as caught:
        client.read("sys/policies/acl/p", action="reading ACL policy 'p'")
    assert caught.value.error_class == "connection"
    assert "connection refused" in str(caught.value) and "sys/policies/acl/p" in str(caught.value)


def test_timeout(silent_vault_url):
    client, _ = connect(url=silent_vault_url, token="t-silent", timeout=1)
    with pytest.raises(VaultModuleError) as caught:
        client.read("sys/policies/acl/p")
    assert caught.value.error_class == "timeout" and "Timed out after 1s" in str(caught.value)


def test_tls_without_and_with_ca(vault_tls_double, tls_material):
    token = vault_tls_double.root_token
    client, _ = connect(url=vault_tls_double.url, token=token)
    with pytest.raises(VaultModuleError) as caught:
        client.read("sys/policies/acl/default")
    assert caught.value.error_class == "tls"
    assert "certificate verify failed: self-signed certificate" in str(caught.value)
    assert "Set ca_cert (or VAULT_CACERT)" in str(caught.value) and token not in str(caught.value)

    client, _ = connect(url=vault_tls_double.url, token=token, ca_cert=str(tls_material.cert_path))
    assert "path" in client.read("sys/policies/acl/default")["data"]["policy"]

    client, _ = connect(url=vault_tls_double.url, token=token, validate_certs=False)
    assert client.read("sys/policies/acl/default") is not None
    assert any("validate_certs=false" in warning for warning in client.warnings)


def test_https_url_for_a_plain_http_listener(vault_double):
    client, _ = connect(url=vault_double.url.replace("http://", "https://"), token="t-1234")
    with pytest.raises(VaultModuleError) as caught:
        client.read("sys/policies/acl/default")
    assert caught.value.error_class == "tls" and "did not answer TLS" in str(caught.value)


def test_plain_http_url_for_a_tls_listener(vault_tls_double):
    client, _ = connect(url=vault_tls_double.url.replace("https://", "http://"), token="t-1234")
    with pytest.raises(VaultModuleError) as caught:
        client.read("sys/policies/acl/default")
    assert caught.value.error_class == "connection" and "https:// listener addressed with http://" in str(caught.value)


# --------------------------------------------------------------------------- #
# Missing hvac
# --------------------------------------------------------------------------- #


def test_missing_hvac_uses_missing_required_lib(monkeypatch):
    """Load a private copy of _vault.py while ``import hvac`` is blocked; the real module stays untouched."""
    monkeypatch.setitem(sys.modules, "hvac", None)
    spec = importlib.util.spec_from_file_location("fleetops_vault_without_hvac", _vault.__file__)
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    assert copy.HAS_HVAC is False and "hvac" in copy.HVAC_IMPORT_ERROR

    class FakeModule:
        def fail_json(self, **kwargs):
            raise RuntimeError(kwargs)

    with pytest.raises(RuntimeError) as caught:
        copy.require_hvac(FakeModule())
    failure = caught.value.args[0]
    assert failure["msg"].startswith("Failed to import the required Python library (hvac)")
    assert failure["error_class"] == "configuration"
    assert _vault.HAS_HVAC is True
