"""Helpers for the lb_ha scenario: TLS with the demo CA, client tokens, the VIP."""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import ssl

from fleetops_testlib import SdkSession, container_host, container_ip, main_pid, sdk_probe

CACHE = pathlib.Path(os.environ["FLEETOPS_CACHE"])
CA = str(CACHE / "pki" / "ca.crt")
VIP = "172.30.214.100"
LBS = ["lb-1", "lb-2"]
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def token(client: str = "bulk-agent") -> str:
    return (CACHE / "demo-tokens" / client).read_text().strip()


def tls_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=CA)


def url(where: str = VIP, server: str = "reference") -> str:
    address = where if where[0].isdigit() else container_ip(where)
    return f"https://{address}/mcp/{server}"


def sdk_call(where: str = VIP, server: str = "reference", tool: str = "whoami", arguments: dict | None = None,
             protocol: str = "sessionless", agent: str = "bulk-agent", timeout: float = 10) -> dict:
    """One ``tools/call`` through ``where`` with the official SDK client (TLS, the agent's token), on a new
    connection; the tool result as the wire shows it (``content``, ``isError``). Raises on any failure."""
    return sdk_probe(url(where, server), protocol, call_tool=tool, tool_arguments=arguments or {}, timeout=timeout,
                     verify=tls_context(), headers={"Authorization": f"Bearer {token(agent)}"})["tool_result"]


# The sessions opened by session(); the fixture in conftest.py closes them after each test.
OPEN_SESSIONS: list[SdkSession] = []


def session(where: str = VIP, server: str = "reference", agent: str = "bulk-agent", timeout: float = 10) -> SdkSession:
    """A 2025-era session (``initialize``, ``Mcp-Session-Id``) through ``where`` with the official SDK
    client (TLS, the agent's token), kept open across calls."""
    c = SdkSession(url(where, server), "handshake", timeout=timeout, verify=tls_context(),
                   headers={"Authorization": f"Bearer {token(agent)}"})
    OPEN_SESSIONS.append(c)
    return c


def close_sessions():
    while OPEN_SESSIONS:
        OPEN_SESSIONS.pop().close()


def whoami(c: SdkSession) -> str:
    """The backend that answers ``c``: ``<docker host>/<container>``."""
    return c.call_tool("whoami")["content"][0]["text"]


def raw_session(where: str = VIP, server: str = "reference", agent: str = "bulk-agent") -> dict:
    """A 2025-era session opened by hand (``initialize``, then ``notifications/initialized``), for tests
    that need its headers without a client's own streams. The headers that carry it."""
    status, headers, _ = raw("POST", f"/mcp/{server}", {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "lb-ha-test", "version": "1"}}},
        {"Authorization": f"Bearer {token(agent)}"}, where)
    assert status == 200 and headers.get("mcp-session-id"), (status, headers)
    carried = {"Authorization": f"Bearer {token(agent)}", "Mcp-Session-Id": headers["mcp-session-id"],
               "MCP-Protocol-Version": "2025-11-25"}
    status, _, _ = raw("POST", f"/mcp/{server}", {"jsonrpc": "2.0", "method": "notifications/initialized"}, carried, where)
    assert status == 202, status
    return carried


def raw(method: str, path: str, body=None, headers=None, where: str = VIP, timeout: float = 10):
    """One HTTPS exchange: (status, lower-cased headers, body bytes)."""
    conn = http.client.HTTPSConnection(where, 443, timeout=timeout, context=tls_context())
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body), headers={**JSON_HEADERS, **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def discover_body(request_id: int = 1) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "method": "server/discover", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "lb-ha-test", "version": "1"}}}}


def discover_headers(agent: str | None = "bulk-agent") -> dict:
    headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "server/discover"}
    if agent:
        headers["Authorization"] = f"Bearer {token(agent)}"
    return headers


def lb_host(name: str):
    return container_host(name)


def vip_state_changes() -> list[str]:
    """Every VRRP state change the load balancers logged (keepalived role), oldest first per host."""
    lines = []
    for lb in LBS:
        log = lb_host(lb).run("cat /var/log/fleetops/keepalived-state.json 2>/dev/null").stdout
        lines += [line for line in log.splitlines() if line.strip()]
    return lines


def nginx_master_pid(lb: str) -> int:
    return main_pid(lb_host(lb), "nginx")


def vip_holders() -> list[str]:
    return [lb for lb in LBS if f" {VIP}/" in lb_host(lb).run("ip -o -4 addr show").stdout]
