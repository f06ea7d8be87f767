"""Tests for the fleetops.mcp.mcp_probe module, run through main() against real loopback servers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

from ansible_collections.fleetops.mcp.plugins.modules import mcp_probe


class AnsibleExitJson(Exception):
    """exit_json() was called."""


class AnsibleFailJson(Exception):
    """fail_json() was called."""


@pytest.fixture
def run_module(monkeypatch):
    """Run mcp_probe.main() with the given args; return the result dict (``failed`` set on failure)."""

    def exit_json(self, **kwargs):
        raise AnsibleExitJson(kwargs)

    def fail_json(self, msg, **kwargs):
        kwargs.update(failed=True, msg=msg)
        raise AnsibleFailJson(kwargs)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)

    def run(check_mode: bool = False, **args):
        if check_mode:
            args["_ansible_check_mode"] = True
        with patch_module_args(args):
            try:
                mcp_probe.main()
            except (AnsibleExitJson, AnsibleFailJson) as outcome:
                return outcome.args[0]
        raise AssertionError("module returned without exit_json/fail_json")

    return run


# --------------------------------------------------------------------------- #
# Success
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("protocol", ["handshake", "sessionless", "auto"])
def test_probe_success_returns_documented_values(run_module, sessioned_server, protocol):
    result = run_module(
        url=sessioned_server.mcp_url,
        protocol=protocol,
        call_tool="echo",
        tool_arguments={"text": "ping"},
        expected_tools=["echo", "whoami"],
    )
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is False
    assert result["server_name"] == "fleetops-reference"
    assert result["server_version"] == "1.0.0"
    assert {"echo", "add", "whoami", "slow_count", "fail"} <= set(result["tools"])
    assert result["missing_tools"] == []
    assert result["tool_result"]["is_error"] is False
    assert result["tool_result"]["content"] == [{"type": "text", "text": "ping"}]
    assert result["latency_ms"] > 0
    if protocol == "handshake":
        assert result["protocol"] == "handshake"
        assert result["protocol_version"] == "2025-11-25"
        assert result["session_id_seen"] is True and result["session_terminated"] is True
    else:
        assert result["protocol"] == "sessionless"
        assert result["protocol_version"] == "2026-07-28"
        assert result["session_id_seen"] is False
    # The session id itself is never returned.
    assert "session_id" not in result


def test_protocol_version_option_is_negotiated(run_module, stateless_server):
    result = run_module(url=stateless_server.mcp_url, protocol="handshake", protocol_version="2025-06-18")
    assert result["protocol_version"] == "2025-06-18"
    assert result["session_id_seen"] is False and result["session_terminated"] is None


@pytest.mark.parametrize("protocol", ["handshake", "sessionless"])
def test_slow_tool_progress_over_sse(run_module, sessioned_server, protocol):
    result = run_module(
        url=sessioned_server.mcp_url,
        protocol=protocol,
        call_tool="slow_count",
        tool_arguments={"steps": 4, "delay": 0.05},
    )
    assert [p["progress"] for p in result["progress"]] == [1, 2, 3, 4]
    assert result["tool_result"]["stream_events"] == ["notification"] * 4 + ["response"]
    assert result["response_modes"]["tools/call"] == "sse"
    assert result["tool_result"]["text"] == "counted to 4"


def test_json_response_server(run_module, json_server):
    result = run_module(url=json_server.mcp_url, protocol="handshake", call_tool="whoami")
    assert set(result["response_modes"].values()) == {"json"}
    assert result["tool_result"]["text"] == json_server.instance


def test_failing_tool_is_reported_not_failed(run_module, sessioned_server):
    result = run_module(url=sessioned_server.mcp_url, call_tool="fail")
    assert not result.get("failed")
    assert result["tool_result"]["is_error"] is True


def test_fail_on_tool_error(run_module, sessioned_server):
    result = run_module(url=sessioned_server.mcp_url, call_tool="fail", fail_on_tool_error=True)
    assert result["failed"] is True
    assert result["error_class"] == "tool_error"
    assert "MCP tool 'fail'" in result["msg"] and "this tool always fails" in result["msg"]


def test_missing_expected_tools_fail(run_module, sessioned_server):
    result = run_module(url=sessioned_server.mcp_url, expected_tools=["echo", "deploy", "rollback"])
    assert result["failed"] is True
    assert result["error_class"] == "missing_tools"
    assert result["missing_tools"] == ["deploy", "rollback"]
    assert "deploy, rollback" in result["msg"]


def test_check_mode_runs_read_only_tools_and_skips_others(run_module, sessioned_server):
    result = run_module(check_mode=True, url=sessioned_server.mcp_url, call_tool="whoami")
    assert result["changed"] is False and result["tool_result"]["skipped"] is False
    result = run_module(check_mode=True, url=sessioned_server.mcp_url, call_tool="not_listed")
    assert result["tool_result"]["skipped"] is True
    assert "check mode" in result["tool_result"]["skip_reason"]


def test_bearer_token_and_ca_path(run_module, secure_server, tls_material, mcp_token):
    result = run_module(
        url=secure_server.mcp_url, bearer_token=mcp_token, ca_path=str(tls_material.cert_path), call_tool="whoami"
    )
    assert not result.get("failed"), result.get("msg")
    assert result["tool_result"]["text"] == secure_server.instance
    assert mcp_token not in json.dumps(result)


def test_extra_headers_are_sent(run_module, sessioned_server):
    result = run_module(
        url=sessioned_server.mcp_url, protocol="sessionless", headers={"X-Request-Id": "probe-header-check"}
    )
    assert not result.get("failed")
    lines = [line for line in sessioned_server.access_log() if line.get("request_id") == "probe-header-check"]
    assert {line["method"] for line in lines} == {"server/discover", "tools/list"}


# --------------------------------------------------------------------------- #
# Failure classes
# --------------------------------------------------------------------------- #


def test_connection_refused(run_module, closed_port_url):
    result = run_module(url=closed_port_url)
    assert result["failed"] and result["error_class"] == "connection"
    assert "Connection refused" in result["msg"]
    assert result["changed"] is False


def test_tls_verification_failure(run_module, secure_server, mcp_token):
    result = run_module(url=secure_server.mcp_url, bearer_token=mcp_token)
    assert result["failed"] and result["error_class"] == "tls"
    assert "certificate verification failed" in result["msg"]
    assert mcp_token not in json.dumps(result)


def test_timeout(run_module, silent_server_url):
    result = run_module(url=silent_server_url, timeout=0.5)
    assert result["failed"] and result["error_class"] == "timeout"
    assert "Timed out after 0.5s" in result["msg"]


@pytest.mark.parametrize("path", ["/html", "/notfound", "/error", "/json"])
def test_non_mcp_endpoint(run_module, non_mcp_server, path):
    result = run_module(url=non_mcp_server + path)
    assert result["failed"] and result["error_class"] == "non_mcp_response"
    assert "MCP" in result["msg"]
    assert result["http_status"] in (200, 404, 500)


def test_jsonrpc_error(run_module, sessioned_server):
    result = run_module(url=sessioned_server.mcp_url, protocol="sessionless", protocol_version="2099-01-01")
    assert result["failed"] and result["error_class"] == "jsonrpc_error"
    assert result["rpc_code"] == -32022
    assert "JSON-RPC error -32022 (Unsupported protocol version)" in result["msg"]


def test_unauthorized_mentions_token_but_never_echoes_it(run_module, secure_server, tls_material):
    wrong = "wrong-token-never-echo"
    result = run_module(url=secure_server.mcp_url, ca_path=str(tls_material.cert_path), bearer_token=wrong)
    assert result["failed"] and result["error_class"] == "authentication"
    assert result["http_status"] == 401
    assert "bearer token was rejected" in result["msg"]
    assert wrong not in json.dumps(result)


def test_unknown_session_behind_non_affine_load_balancer(run_module, round_robin_proxy):
    result = run_module(url=round_robin_proxy, protocol="handshake")
    assert result["failed"] and result["error_class"] == "session_not_found"
    assert result["http_status"] == 404
    assert "session affinity" in result["msg"]


def test_invalid_url_is_configuration_error(run_module):
    result = run_module(url="ftp://example.com/mcp")
    assert result["failed"] and result["error_class"] == "configuration"
    assert result["url"] == "ftp://example.com/mcp"


def test_module_as_subprocess_masks_token(tmp_path, secure_server, tls_material, collections_root):
    """End to end through AnsibleModule's real JSON output path (no patched exit/fail)."""
    token = "subprocess-secret-token"
    args_file = tmp_path / "args.json"
    args_file.write_text(
        json.dumps(
            {
                "ANSIBLE_MODULE_ARGS": {
                    "url": secure_server.mcp_url,
                    "bearer_token": token,
                    "ca_path": str(tls_material.cert_path),
                }
            }
        )
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(collections_root), *sys.path]))
    proc = subprocess.run(
        [sys.executable, "-m", "ansible_collections.fleetops.mcp.plugins.modules.mcp_probe", str(args_file)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert token not in proc.stdout and token not in proc.stderr
    result = json.loads(proc.stdout)
    assert result["failed"] is True
    assert result["error_class"] == "authentication"
    assert proc.returncode == 1


# --------------------------------------------------------------------------- #
# Documentation
# --------------------------------------------------------------------------- #


def _strings_only(node, where="DOCUMENTATION"):
    """Every description must be a string or list of strings (what ansible-doc requires)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description":
                items = value if isinstance(value, list) else [value]
                assert all(isinstance(item, str) for item in items), f"{where}.{key} is not text: {value!r}"
            else:
                _strings_only(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _strings_only(value, f"{where}[{index}]")


def test_documentation_matches_argument_spec():
    doc = yaml.safe_load(mcp_probe.DOCUMENTATION)
    assert doc["module"] == "mcp_probe"
    _strings_only(doc)
    options = doc["options"]
    spec = mcp_probe.ARGUMENT_SPEC
    assert set(options) == set(spec)
    for name, opt in options.items():
        assert opt["type"] == spec[name].get("type", "str"), name
        assert opt.get("required", False) == spec[name].get("required", False), name
        assert opt.get("default") == spec[name].get("default"), name
        assert opt.get("choices") == spec[name].get("choices"), name
        assert opt.get("elements") == spec[name].get("elements"), name
    assert spec["bearer_token"]["no_log"] is True


def test_examples_and_return_parse():
    examples = yaml.safe_load(mcp_probe.EXAMPLES)
    assert all("fleetops.mcp.mcp_probe" in task or "ansible.builtin.assert" in task for task in examples)
    returned = yaml.safe_load(mcp_probe.RETURN)
    _strings_only(returned, "RETURN")
    for key in ("server_name", "server_version", "protocol_version", "tools", "latency_ms", "tool_result"):
        assert key in returned


def test_ansible_doc_renders(tmp_path, collections_root):
    """ansible-doc must be able to load and render the module's docs."""
    ansible_doc = shutil.which("ansible-doc") or os.path.join(os.path.dirname(sys.executable), "ansible-doc")
    if not os.path.exists(ansible_doc):
        pytest.skip("ansible-doc not installed")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections_root), ANSIBLE_LOCAL_TEMP=str(tmp_path))
    proc = subprocess.run(
        [ansible_doc, "--json", "fleetops.mcp.mcp_probe"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)["fleetops.mcp.mcp_probe"]["doc"]
    assert set(doc["options"]) == set(mcp_probe.ARGUMENT_SPEC)
