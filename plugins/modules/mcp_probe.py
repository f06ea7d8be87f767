#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleetops.mcp contributors
# Apache License 2.0 (see LICENSE)
# SPDX-License-Identifier: Apache-2.0
"""Ansible module: probe an MCP server with a real MCP exchange."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mcp_probe
short_description: Health-check an MCP server with a real Model Context Protocol exchange
version_added: "0.1.0"
description:
  - Connects to an MCP (Model Context Protocol) server over Streamable HTTP and performs a real
    protocol exchange, not a plain HTTP GET.
  - With O(protocol=handshake) it runs the 2025-era sessioned flow, C(initialize), then
    C(notifications/initialized), then C(tools/list), optionally C(tools/call), and finally
    an HTTP C(DELETE) that ends the session. Every request after C(initialize) carries the
    C(Mcp-Session-Id) (when the server issued one) and C(MCP-Protocol-Version) headers.
  - With O(protocol=sessionless) it runs the 2026-07-28 flow. It sends C(server/discover), then
    C(tools/list), and optionally C(tools/call). Each request is self-contained, carries the
    C(MCP-Protocol-Version) and C(Mcp-Method) headers (plus C(Mcp-Name) for C(tools/call)) and a
    C(params._meta) envelope, and uses no session.
  - With O(protocol=auto) (the default) it tries the sessionless C(server/discover) first. When the
    server answers like a handshake-only server (a JSON-RPC error, no shared sessionless version, or
    an HTTP 4xx rejection), it falls back to the handshake. Connection, TLS, timeout and
    authentication failures never cause a fallback.
  - Both C(application/json) and C(text/event-stream) (SSE) responses are understood. Progress
    notifications streamed before a tool result are collected.
  - The module only reads, so it never reports a change.
  - It fails with a specific message for each failure class. The classes are connection refused,
    TLS failure, timeout, an endpoint that is not an MCP server, a JSON-RPC error, HTTP 401/403,
    an unknown session (HTTP 404), a protocol version mismatch, and missing expected tools.
author:
  - FleetOps contributors (@fleetops)
extends_documentation_fragment:
  - fleetops.mcp.attributes
  - fleetops.mcp.attributes.action_group_mcp
requirements:
  - Python 3.8 or newer on the managed host. Only the Python standard library is used.
options:
  url:
    description:
      - Full URL of the MCP Streamable HTTP endpoint, for example V(https://mcp.example.com/mcp).
      - Only C(http) and C(https) URLs are accepted. Redirects are not followed.
    type: str
    required: true
  protocol:
    description:
      - Which MCP protocol generation to speak.
      - V(handshake) is the 2025-era sessioned protocol (C(initialize) handshake, C(Mcp-Session-Id), C(DELETE)).
        Protocol versions 2024-11-05 to 2025-11-25 belong to it.
      - V(sessionless) is the 2026-07-28 protocol (C(server/discover), per-request C(_meta) envelope, no session).
      - V(auto) tries V(sessionless) first and falls back to V(handshake).
    type: str
    choices: [auto, handshake, sessionless]
    default: auto
  protocol_version:
    description:
      - Protocol version to propose.
      - The default is V(2025-11-25) for O(protocol=handshake) and V(2026-07-28) for O(protocol=sessionless).
      - With O(protocol=handshake) the server may answer with an older version. The negotiated version is
        returned as RV(protocol_version).
      - With O(protocol=auto), a version of V(2026-07-28) or later is used for the sessionless attempt and an
        earlier version for the handshake fallback.
    type: str
  call_tool:
    description:
      - Name of a tool to call after listing tools. When omitted, no tool is called.
      - In check mode the tool is called only if the server annotates it with C(readOnlyHint=true).
        Otherwise the call is skipped and RV(tool_result.skipped) is V(true).
    type: str
  tool_arguments:
    description:
      - Arguments for O(call_tool), passed as the C(arguments) object of C(tools/call).
    type: dict
    default: {}
  fail_on_tool_error:
    description:
      - Fail the task when the called tool reports C(isError=true).
      - By default a tool error is only reported in RV(tool_result.is_error). It is a valid MCP answer.
    type: bool
    default: false
  expected_tools:
    description:
      - Tool names the server must list. The task fails when any of them is missing.
    type: list
    elements: str
    default: []
  bearer_token:
    description:
      - "Token sent as C(Authorization: Bearer <token>) on every request."
      - The token is never included in results or error messages.
    type: str
  ca_path:
    description:
      - CA bundle file (PEM) or directory of hashed CA certificates used to verify the server certificate.
      - The system trust store is used when omitted.
    type: path
  client_cert:
    description:
      - PEM client certificate for mutual TLS. It may also contain the private key.
    type: path
  client_key:
    description:
      - PEM private key for O(client_cert) when the key is not in the certificate file.
    type: path
  validate_certs:
    description:
      - Verify the server's TLS certificate and host name.
      - Set to V(false) only for testing. This is insecure.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for each HTTP request, from connect to the last byte of the response.
      - A slow tool must finish within this time.
    type: float
    default: 10
  headers:
    description:
      - Extra HTTP headers sent with every request, for example routing headers for a gateway.
      - MCP protocol headers and C(Authorization) set by this module take precedence.
      - Values are treated as secrets (they may carry API keys) and are never logged.
    type: dict
    default: {}
notes:
  - Check mode is supported. The probe only reads, with the O(call_tool) restriction described above.
  - One TCP/TLS connection is opened per HTTP request. Cookies set by the server, such as load-balancer
    affinity cookies, are replayed for the rest of the probe.
  - HTTP proxies (C(HTTP_PROXY)/C(HTTPS_PROXY)) are not used. The module connects directly.
attributes:
  check_mode:
    support: full
    details: The probe only reads. In check mode O(call_tool) is called only when the server marks the tool C(readOnlyHint=true).
  diff_mode:
    support: none
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Probe an MCP server, letting the module pick the protocol generation
  fleetops.mcp.mcp_probe:
    url: https://mcp.example.com/mcp
    bearer_token: "{{ mcp_token }}"
    ca_path: /etc/pki/fleetops/ca.pem
    expected_tools: [echo, whoami]
  register: probe

- name: Force the 2025-era sessioned handshake and call a tool
  fleetops.mcp.mcp_probe:
    url: http://127.0.0.1:8080/mcp
    protocol: handshake
    protocol_version: "2025-06-18"
    call_tool: echo
    tool_arguments:
      text: hello
  register: echo_probe

- name: Assert the tool answered
  ansible.builtin.assert:
    that:
      - not echo_probe.tool_result.is_error
      - echo_probe.tool_result.text == 'hello'

- name: Use the sessionless 2026-07-28 protocol and prove which instance answered
  fleetops.mcp.mcp_probe:
    url: https://lb.example.com/mcp
    protocol: sessionless
    call_tool: whoami
  register: who

- name: Wait until a freshly deployed server answers MCP
  fleetops.mcp.mcp_probe:
    url: "http://{{ inventory_hostname }}:8080/mcp"
    timeout: 5
  register: ready
  until: ready is succeeded
  retries: 30
  delay: 2
"""

RETURN = r"""
url:
  description: The probed URL without credentials, query string or fragment.
  returned: always
  type: str
  sample: https://mcp.example.com/mcp
protocol:
  description: Protocol generation actually used, V(handshake) or V(sessionless).
  returned: success
  type: str
  sample: sessionless
protocol_version:
  description: The negotiated (handshake) or requested and supported (sessionless) protocol version.
  returned: success
  type: str
  sample: "2026-07-28"
supported_versions:
  description: Versions the server advertised in C(server/discover), or the negotiated version for handshake.
  returned: success
  type: list
  elements: str
  sample: ["2026-07-28"]
server_name:
  description: Server name from C(serverInfo). For sessionless, it comes from the C(_meta) C(serverInfo) stamp.
  returned: success
  type: str
  sample: fleetops-reference
server_version:
  description: Server version from C(serverInfo).
  returned: success
  type: str
  sample: 1.0.0
server_title:
  description: Optional human-readable server title.
  returned: success
  type: str
instructions:
  description: Server instructions, if the server sent any.
  returned: success
  type: str
capabilities:
  description: Server capabilities object as sent by the server.
  returned: success
  type: dict
  sample: {"tools": {"listChanged": false}}
tools:
  description: Names of the tools the server listed.
  returned: success
  type: list
  elements: str
  sample: [echo, add, whoami, slow_count, fail]
missing_tools:
  description: Entries of O(expected_tools) the server did not list.
  returned: when O(expected_tools) is set
  type: list
  elements: str
  sample: []
tool_result:
  description: Outcome of O(call_tool).
  returned: when O(call_tool) is set and the probe got that far
  type: dict
  contains:
    name:
      description: Called tool.
      type: str
      returned: always
    skipped:
      description: V(true) when the call was skipped in check mode.
      type: bool
      returned: always
    skip_reason:
      description: Why the call was skipped.
      type: str
      returned: when skipped
    is_error:
      description: The tool's C(isError) flag. A tool error is a valid MCP answer, not a protocol failure.
      type: bool
      returned: when not skipped
    content:
      description: The tool's C(content) blocks, unchanged.
      type: list
      elements: dict
      returned: when not skipped
    structured_content:
      description: The tool's C(structuredContent), if any.
      type: raw
      returned: when not skipped
    text:
      description: All text content blocks joined with newlines.
      type: str
      returned: when not skipped
    result_type:
      description: The 2026-07-28 C(resultType) of the result (V(complete) normally).
      type: str
      returned: when not skipped
    stream_events:
      description: Order of JSON-RPC messages on the response stream, for example V([notification, response]).
      type: list
      elements: str
      returned: when not skipped
progress:
  description: Progress notifications (C(progress), C(total), C(message)) received before the tool result.
  returned: success
  type: list
  elements: dict
  sample: [{"progress": 1, "total": 2, "message": "step 1/2"}]
session_id_seen:
  description: Whether the server issued an C(Mcp-Session-Id). The ID itself is not returned.
  returned: success
  type: bool
session_terminated:
  description: >-
    Whether the session C(DELETE) was acknowledged. The value is V(null) when there was no session
    to end.
  returned: success
  type: bool
response_modes:
  description: For each JSON-RPC method, whether the server answered with V(json) or V(sse).
  returned: success
  type: dict
  sample: {"initialize": "sse", "tools/list": "sse", "tools/call": "sse"}
latency_ms:
  description: Wall time of the whole MCP exchange in milliseconds.
  returned: success
  type: float
  sample: 12.7
timings_ms:
  description: Milliseconds spent in each step of the exchange.
  returned: success
  type: dict
  sample: {"server/discover": 1.4, "tools/list": 1.3}
fallback_reason:
  description: With O(protocol=auto), why the sessionless attempt was abandoned for the handshake.
  returned: success
  type: str
error_class:
  description: >-
    Failure class on failure. The value is one of V(connection), V(tls), V(timeout),
    V(non_mcp_response), V(jsonrpc_error), V(authentication), V(session_not_found),
    V(protocol_version), V(configuration), V(missing_tools) or V(tool_error).
  returned: failure
  type: str
  sample: tls
http_status:
  description: HTTP status of the failing response, when there was one.
  returned: failure, when known
  type: int
rpc_code:
  description: JSON-RPC error code, for V(jsonrpc_error) failures.
  returned: failure, when known
  type: int
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetops.mcp.plugins.module_utils._mcp_client import (
    PROTOCOLS,
    MCPClient,
    MCPClientError,
    redact_url,
)

ARGUMENT_SPEC = dict(
    url=dict(type="str", required=True),
    protocol=dict(type="str", default="auto", choices=list(PROTOCOLS)),
    protocol_version=dict(type="str"),
    call_tool=dict(type="str"),
    tool_arguments=dict(type="dict", default={}),
    fail_on_tool_error=dict(type="bool", default=False),
    expected_tools=dict(type="list", elements="str", default=[]),
    bearer_token=dict(type="str", no_log=True),
    ca_path=dict(type="path"),
    client_cert=dict(type="path"),
    client_key=dict(type="path", no_log=False),
    validate_certs=dict(type="bool", default=True),
    timeout=dict(type="float", default=10.0),
    # Extra headers may carry credentials (API keys): never logged.
    headers=dict(type="dict", default={}, no_log=True),
)


def build_client(params):
    """Create an MCPClient from module parameters."""
    return MCPClient(
        params["url"],
        bearer_token=params["bearer_token"],
        ca_path=params["ca_path"],
        validate_certs=params["validate_certs"],
        client_cert=params["client_cert"],
        client_key=params["client_key"],
        timeout=params["timeout"],
        headers=dict((str(k), str(v)) for k, v in (params["headers"] or {}).items()),
    )


def run_probe(module):
    """Run the probe; returns the result dict or calls fail_json."""
    params = module.params
    try:
        client = build_client(params)
        probe = client.probe(
            protocol=params["protocol"],
            protocol_version=params["protocol_version"],
            call_tool=params["call_tool"],
            tool_arguments=params["tool_arguments"],
            require_read_only=module.check_mode,
        )
    except MCPClientError as exc:
        details = {"url": redact_url(params["url"])}
        details.update(_failure_details(exc))
        module.fail_json(msg=str(exc), changed=False, error_class=exc.kind, **details)
    result = probe.as_dict()
    result["changed"] = False
    check_expectations(module, params, result)
    return result


def _failure_details(exc):
    """Secret-free structured context of a client error for the task result."""
    allowed = ("url", "http_status", "rpc_code", "content_type", "supported_versions")
    return dict((k, v) for k, v in exc.details.items() if k in allowed)


def check_expectations(module, params, result):
    """Fail when expected tools are missing or (optionally) the tool reported an error."""
    expected = params["expected_tools"] or []
    if expected:
        missing = [name for name in expected if name not in result["tools"]]
        result["missing_tools"] = missing
        if missing:
            module.fail_json(
                msg="MCP server at %s does not offer the expected tool(s): %s (it lists: %s)"
                % (result["url"], ", ".join(missing), ", ".join(result["tools"]) or "no tools"),
                error_class="missing_tools",
                **result
            )
    tool_result = result.get("tool_result") or {}
    if params["fail_on_tool_error"] and tool_result.get("is_error"):
        module.fail_json(
            msg="MCP tool %r on %s reported an error: %s"
            % (tool_result.get("name"), result["url"], tool_result.get("text") or "(no text content)"),
            error_class="tool_error",
            **result
        )


def main():
    """Module entry point."""
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    result = run_probe(module)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
