"""Pytest fixtures and helpers around the Vault API test double (NOT HashiCorp Vault).

Import the fixtures into a test module (``from ...pytest_fixtures import vault_double  # noqa: F401``).
The module-level :func:`isolated_vault_env` fixture is autouse: importing it
removes ``VAULT_*`` and proxy variables from the environment of every test in
that module, so nothing on the developer's machine leaks into a test and no
request leaves the loopback interface.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .vault_api_double import VaultAPIDouble

VAULT_ENV = (
    "VAULT_ADDR",
    "VAULT_TOKEN",
    "VAULT_NAMESPACE",
    "VAULT_CACERT",
    "VAULT_CAPATH",
    "VAULT_SKIP_VERIFY",
    "VAULT_CLIENT_CERT",
    "VAULT_CLIENT_KEY",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
)
PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


class ModuleExit(Exception):
    """exit_json() was called."""


class ModuleFail(Exception):
    """fail_json() was called."""


@pytest.fixture(autouse=True)
def isolated_vault_env(monkeypatch, tmp_path):
    """No VAULT_* or proxy settings from the outside; HOME points at an empty directory (no ~/.vault-token)."""
    for name in VAULT_ENV + PROXY_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))


@pytest.fixture
def vault_double():
    """A fresh, started Vault API test double on plain HTTP; stopped afterwards."""
    double = VaultAPIDouble().start()
    try:
        yield double
    finally:
        double.stop()


@pytest.fixture
def vault_tls_double(tls_material):
    """A fresh Vault API test double behind TLS with the self-signed ``tls_material`` certificate."""
    double = VaultAPIDouble(tls_cert=str(tls_material.cert_path), tls_key=str(tls_material.key_path)).start()
    try:
        yield double
    finally:
        double.stop()


# closed_port and silent_port come from tests/unit/conftest.py.
@pytest.fixture
def closed_vault_url(closed_port):
    """A loopback Vault URL where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{closed_port}"


@pytest.fixture
def silent_vault_url(silent_port):
    """A loopback Vault URL that accepts connections but never answers (timeouts)."""
    return f"http://127.0.0.1:{silent_port}"


def make_module_runner(monkeypatch, main):
    """``run(check_mode=False, diff=False, no_log=False, **args)`` -> result dict of ``main()``.

    exit_json/fail_json are intercepted, so the result is what the module handed
    to them *before* AnsibleModule's own no_log masking: a secret found in it is
    a real leak of the module code.
    """
    from ansible.module_utils import _internal as module_internal
    from ansible.module_utils import basic
    from ansible.module_utils.common import warnings as module_warnings
    from ansible.module_utils.testing import patch_module_args

    # Other tests may have loaded controller code in this process; modules must still record their
    # warnings for the result instead of printing them through the controller's Display.
    monkeypatch.setattr(module_internal, "is_controller", False)

    def exit_json(self, **kwargs):
        kwargs["warnings"] = list(module_warnings.get_warning_messages())
        raise ModuleExit(kwargs)

    def fail_json(self, msg, **kwargs):
        kwargs.update(failed=True, msg=msg, warnings=list(module_warnings.get_warning_messages()))
        raise ModuleFail(kwargs)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)

    def run(check_mode: bool = False, diff: bool = False, no_log: bool = False, **args):
        args = {key: value for key, value in args.items() if value is not None}
        args.update(_ansible_check_mode=check_mode, _ansible_diff=diff, _ansible_no_log=no_log)
        module_warnings._global_warnings.clear()
        with patch_module_args(args):
            try:
                main()
            except (ModuleExit, ModuleFail) as outcome:
                return outcome.args[0]
        raise AssertionError("module returned without exit_json/fail_json")

    return run


def assert_no_secrets(result, *secrets: str) -> None:
    """None of ``secrets`` occurs anywhere in the JSON form of ``result``."""
    text = json.dumps(result, default=str)
    for secret in secrets:
        assert secret, "empty secret given to assert_no_secrets"
        assert (
            secret not in text
        ), f"a secret leaked into the result: ...{text[max(0, text.find(secret) - 60):][:160]}..."


def run_module_subprocess(module: str, args: dict, collections_root: Path, tmp_path: Path, block_hvac: bool = False):
    """Run ``fleetops.mcp.<module>`` in a fresh interpreter through AnsibleModule's real output path.

    ``block_hvac`` makes ``import hvac`` fail in that interpreter. Returns
    ``(returncode, stdout, stderr)``.
    """
    args_file = tmp_path / f"{module}-args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    code = (
        "import runpy, sys\n"
        + ("sys.modules['hvac'] = None\n" if block_hvac else "")
        + f"runpy.run_module('ansible_collections.fleetops.mcp.plugins.modules.{module}', run_name='__main__')\n"
    )
    env = {key: value for key, value in os.environ.items() if key not in VAULT_ENV + PROXY_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(collections_root), *sys.path])
    proc = subprocess.run(
        [sys.executable, "-c", code, str(args_file)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


def ansible_env(tmp_path: Path, collections_root: Path | None = None) -> dict:
    """Environment for ansible-playbook/ansible-doc subprocesses, isolated from the developer's settings."""
    config = tmp_path / "ansible.cfg"
    config.write_text("[defaults]\nnocows = true\nretry_files_enabled = false\n")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in VAULT_ENV + PROXY_ENV and not key.startswith("ANSIBLE_")
    }
    env.update(
        ANSIBLE_CONFIG=str(config),
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
        ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-remote-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        NO_PROXY="127.0.0.1,localhost",
    )
    if collections_root is not None:
        env["ANSIBLE_COLLECTIONS_PATH"] = str(collections_root)
    return env


def ansible_bin(name: str) -> str:
    """Path of an ansible CLI next to the running interpreter."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.skip(f"{name} is not installed next to {sys.executable}")
    return str(path)
