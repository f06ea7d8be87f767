"""Behaviour of fleetops.mcp.vault_secrets: secrets from the embedded backend (ansible-vault) and
from the Vault API TEST DOUBLE (NOT HashiCorp Vault) reach the containers, never the output, and
rotate by restarting exactly the containers that use them."""

from __future__ import annotations

import json
import os
import pathlib
import urllib.request

import pytest

from fleetops_testlib import container_host, docker_inspect, run_playbook

HOST = "vs-1"
STATE = pathlib.Path(os.environ["FLEETOPS_CACHE"]) / "vault-double"
SEED = json.loads((pathlib.Path(__file__).parents[1] / "vault-double-seed.json").read_text())
EMBEDDED = {"embedded-demo": {"api_key": "embedded-api-key-51e0b3"}}  # in the encrypted group_vars/all/secrets.yml
CONTAINERS = {
    "embedded-demo": ["mcp-embedded-demo-1"],
    "vaulted": ["mcp-vaulted-1", "mcp-vaulted-2"],
    "other-vaulted": ["mcp-other-vaulted-1"],
    "plain": ["mcp-plain-1"],
}


def host():
    return container_host(HOST)


def credentials() -> dict:
    return json.loads((STATE / "credentials.json").read_text())


def vault_value(server: str, key: str) -> str:
    """The double's current value, read through its documented KV v2 API with the root token."""
    creds = credentials()
    request = urllib.request.Request(f"{creds['url']}/v1/secret/data/mcp/{server}",
                                     headers={"X-Vault-Token": creds["root_token"]})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)["data"]["data"][key]


def write_vault(server: str, data: dict) -> None:
    creds = credentials()
    body = json.dumps({"data": data}).encode()
    request = urllib.request.Request(f"{creds['url']}/v1/secret/data/mcp/{server}", data=body, method="POST",
                                     headers={"X-Vault-Token": creds["root_token"], "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def started_at() -> dict:
    return {c: docker_inspect(host(), c)["State"]["StartedAt"] for cs in CONTAINERS.values() for c in cs}


def all_values() -> list[str]:
    values = [v for server in EMBEDDED.values() for v in server.values()]
    for server in ("vaulted", "other-vaulted"):
        values += list(SEED["kv"][f"mcp/{server}"].values())
        values += [vault_value(server, k) for k in SEED["kv"][f"mcp/{server}"]]
    # The credentials are secrets too.
    values += [credentials()["approles"]["fleetops-mcp"]["secret_id"], credentials()["root_token"]]
    return sorted(set(values))


@pytest.mark.parametrize(
    ("server", "key"),
    [("embedded-demo", "api_key"), ("vaulted", "db_password"), ("vaulted", "api_token"), ("other-vaulted", "db_password")],
)
def test_each_secret_reaches_every_container_of_its_server_as_its_user(server, key):
    expected = EMBEDDED[server][key] if server in EMBEDDED else vault_value(server, key)
    for container in CONTAINERS[server]:
        result = host().run(f"docker exec {container} cat /run/secrets/{key}")
        assert result.rc == 0 and result.stdout == expected, (container, result.stderr)
        # Another user in the same container cannot read it.
        assert host().run(f"docker exec -u 10002 {container} cat /run/secrets/{key}").rc != 0
        env = docker_inspect(host(), container)["Config"]["Env"]
        assert not any(expected in e for e in env)


def test_files_are_root_owned_private_and_on_a_tmpfs():
    top = host().file("/etc/fleetops/secrets")
    assert top.user == "root" and top.mode == 0o711
    assert "tmpfs" in host().run("findmnt -n -o FSTYPE /etc/fleetops/secrets").stdout
    for server, keys in (("vaulted", ["db_password", "api_token"]), ("embedded-demo", ["api_key"])):
        directory = host().file(f"/etc/fleetops/secrets/{server}")
        assert directory.mode == 0o500 and directory.uid == 10001
        for key in keys:
            f = host().file(f"/etc/fleetops/secrets/{server}/{key}")
            assert f.mode == 0o400 and f.uid == 10001
    assert not host().file("/etc/fleetops/secrets/plain").exists


def test_no_secret_value_in_the_full_vvv_output_of_a_converge():
    result = run_playbook("converge.yml", extra_args=["-vvv"])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert len(output) > 100_000  # the -vvv output really is there
    leaked = [v for v in all_values() if v in output]
    assert not leaked, f"{len(leaked)} secret value(s) in the -vvv output"
    facts = host().run("ls /etc/ansible/facts.d 2>/dev/null").stdout
    assert facts.strip() == ""


@pytest.mark.parametrize(
    ("extra_vars", "message"),
    [
        ({"vault_secrets_vault_secret_id": "not-the-secret-id"}, "invalid role or secret ID"),
        ({"vault_secrets_vault_url": "http://127.0.0.1:18299"}, "Connection refused"),
        ({"vault_secrets_sources": {"vaulted": {"backend": "vault", "path": "mcp/no-such-server"},
                                    "other-vaulted": {"backend": "vault"}}},
         "Invalid or missing path ['mcp/no-such-server']"),
        ({"vault_secrets_sources": {"vaulted": {"backend": "vault", "path": "mcp/other-vaulted"},
                                    "other-vaulted": {"backend": "vault"}}},
         "mcp server 'vaulted': secret 'api_token' is not a key of the Vault KV secret 'secret/mcp/other-vaulted'"),
        ({"vault_secrets_embedded": {}}, "mcp server 'embedded-demo': secret 'api_key' is not in vault_secrets_embedded"),
        ({"vault_secrets_vault_role_id": ""}, "read secrets from Vault, so vault_secrets_vault_url"),
    ],
    ids=["wrong-credentials", "vault-unreachable", "missing-path", "missing-key", "embedded-missing", "no-role-id"],
)
def test_bad_credentials_or_paths_fail_clearly_and_touch_no_container(extra_vars, message):
    before = started_at()
    digests = {p: host().file(p).sha256sum for p in
               ("/etc/fleetops/secrets/vaulted/db_password", "/etc/fleetops/secrets/embedded-demo/api_key")}
    result = run_playbook("servers.yml", extra_vars=extra_vars)
    output = result.stdout + result.stderr
    # The YAML callback folds long messages and doubles single quotes.
    flat = " ".join(output.replace("''", "'").split())
    assert result.returncode != 0
    assert message in flat, output[-3000:]
    if "vault_secrets_vault_secret_id" in extra_vars or "Invalid or missing path" in message:
        # Vault's own answer comes with the servers and the Vault address.
        assert "could not read the secrets of mcp server(s) vaulted, other-vaulted from Vault at http://127.0.0.1:18200" in flat
    assert started_at() == before
    assert {p: host().file(p).sha256sum for p in digests} == digests
    assert not [v for v in all_values() if v in output]


def test_rotating_one_secret_restarts_exactly_the_running_containers_that_use_it():
    # mcp-vaulted-2 stopped, as a failover server's standby is: the rotation must not start it.
    assert host().run("docker stop mcp-vaulted-2").rc == 0
    before = started_at()
    rotated = "vaulted-db-pw-rotated-" + os.urandom(4).hex()
    write_vault("vaulted", {"db_password": rotated, "api_token": vault_value("vaulted", "api_token")})
    result = run_playbook("servers.yml", extra_args=["--tags", "secrets"])
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    after = started_at()
    restarted = sorted(c for c in before if after[c] != before[c])
    assert restarted == ["mcp-vaulted-1"], restarted
    assert host().run("docker inspect -f '{{.State.Running}}' mcp-vaulted-2").stdout.strip() == "false"
    assert host().run("docker exec mcp-vaulted-1 cat /run/secrets/db_password").stdout == rotated
    # The whole stage starts the stopped replica again, and it reads the new value.
    result = run_playbook("servers.yml")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    after = started_at()
    for container in CONTAINERS["vaulted"]:
        assert host().run(f"docker exec {container} cat /run/secrets/db_password").stdout == rotated
    # Nothing changes on a second run.
    again = run_playbook("servers.yml")
    assert again.returncode == 0 and started_at() == after
