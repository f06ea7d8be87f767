"""Helpers for the lb_ha scenario: TLS with the demo CA, client tokens, the VIP."""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import ssl
import threading
import time

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


class SteadyLoad:
    """Workers sending sessionless (2026-07-28) tools/call requests through the VIP, one POST each.

    By default the reference server's ``echo``; ``server``, ``tool``, ``arguments`` and ``expect`` (bytes
    the answer must hold) name another call. Counts calls that succeeded and failed, and keeps the
    monotonic time of every success (``ok_times``) to measure a gap without a successful call."""

    def __init__(self, workers: int = 3, server: str = "reference", tool: str = "echo", arguments: dict | None = None,
                 expect: bytes | None = None, timeout: float = 10, protocol: str = "sessionless"):
        self.path, self.token = f"/mcp/{server}", token("bench-agent")
        self.tool, self.arguments, self.expect, self.timeout = tool, arguments, expect, timeout
        # "handshake": each worker keeps a 2025-era session, and opens a new one after any failure.
        self.protocol, self.sessions = protocol, {}
        self.stop, self.lock = threading.Event(), threading.Lock()
        self.ok, self.failed, self.ok_times = 0, [], []
        self.threads = [threading.Thread(target=self.work, args=(i,)) for i in range(workers)]

    def post(self, conn, message: dict, headers: dict):
        conn.request("POST", self.path, body=json.dumps(message), headers={
            "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
            "Authorization": f"Bearer {self.token}", **headers})
        response = conn.getresponse()
        return response.status, response.getheader("Mcp-Session-Id"), response.read()

    def session_headers(self, conn, index: int) -> dict:
        """A 2025-era session for worker ``index``: initialize, then notifications/initialized."""
        if index not in self.sessions:
            status, sid, data = self.post(conn, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "fleet-test", "version": "1"}}}, {})
            if status != 200 or not sid:
                raise RuntimeError(f"initialize: HTTP {status}: {data[:160]!r}")
            carried = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
            status, _, data = self.post(conn, {"jsonrpc": "2.0", "method": "notifications/initialized"}, carried)
            if status != 202:
                raise RuntimeError(f"notifications/initialized: HTTP {status}: {data[:160]!r}")
            self.sessions[index] = carried
        return self.sessions[index]

    def call(self, conn, n: int, index: int = 0) -> None:
        text = f"steady {n}"
        arguments = {"text": text} if self.arguments is None else self.arguments
        expect = text.encode() if self.expect is None else self.expect
        params = {"name": self.tool, "arguments": arguments}
        if self.protocol == "handshake":
            headers = self.session_headers(conn, index)
        else:
            params["_meta"] = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                               "io.modelcontextprotocol/clientCapabilities": {},
                               "io.modelcontextprotocol/clientInfo": {"name": "fleet-test", "version": "1"}}
            headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": self.tool}
        status, _, data = self.post(conn, {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": params}, headers)
        if status != 200 or expect not in data or b'"isError":true' in data.replace(b" ", b""):
            raise RuntimeError(f"HTTP {status}: {data[:160]!r}")

    def work(self, index: int) -> None:
        conn, n = None, 0
        while not self.stop.is_set():
            n += 1
            try:
                if conn is None:
                    conn = http.client.HTTPSConnection(VIP, 443, timeout=self.timeout, context=tls_context())
                self.call(conn, index * 1_000_000 + n, index)
                with self.lock:
                    self.ok += 1
                    self.ok_times.append(time.monotonic())
            except Exception as exc:  # noqa: BLE001 (a failed call is what this counts)
                with self.lock:
                    self.failed.append(f"{time.strftime('%H:%M:%S')} {exc!r}")
                self.sessions.pop(index, None)
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(0.05)

    def longest_gap(self, since: float) -> float:
        """The longest time after ``since`` (monotonic) without a successful call, up to the last success."""
        with self.lock:
            times = sorted(t for t in self.ok_times if t >= since)
        edges = [since] + times
        return max((b - a for a, b in zip(edges, edges[1:])), default=float("inf"))

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        for thread in self.threads:
            thread.join()
        # End the sessions still open (DELETE), so that the server keeps no process for them.
        for carried in self.sessions.values():
            conn = http.client.HTTPSConnection(VIP, 443, timeout=self.timeout, context=tls_context())
            try:
                conn.request("DELETE", self.path, headers={"Authorization": f"Bearer {self.token}", **carried})
                conn.getresponse().read()
            except OSError:
                pass
            finally:
                conn.close()
        self.sessions.clear()
