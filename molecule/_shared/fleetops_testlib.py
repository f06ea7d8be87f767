"""Helpers for the testinfra verifiers of the fleetops.mcp Molecule scenarios.

Tests run on the controller (this machine). They reach test hosts through the
Docker connection (testinfra) and through the scenario network, which only
joins this machine and the scenario's own containers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile

import yaml

SCENARIO_DIR = os.environ.get("MOLECULE_SCENARIO_DIRECTORY", "")


def inventory_hosts(group: str = "all") -> list[str]:
    """Names of the inventory hosts in ``group`` (Molecule's inventory)."""
    out = subprocess.run(
        ["ansible-inventory", "--list", "-i", os.environ["MOLECULE_INVENTORY_FILE"]],
        check=True, capture_output=True, text=True,
    ).stdout
    data = json.loads(out)
    if group == "all":
        return sorted(data.get("_meta", {}).get("hostvars", {}))
    return sorted(data.get(group, {}).get("hosts", []))


def container_ip(name: str) -> str:
    """The first network address of a test host container."""
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", name],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    assert out, f"container {name} has no network address"
    return out[0]


def tcp_outcome(address: str, port: int, timeout: float = 2.0) -> str:
    """Try a TCP connection; return 'open', 'refused' or 'timeout'.

    A firewall drop shows as a timeout; a closed port as refused.
    """
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "timeout"


def http_get(address: str, port: int, timeout: float = 3.0) -> bytes:
    """A plain HTTP GET / over a raw socket; returns the whole response."""
    with socket.create_connection((address, port), timeout=timeout) as sock:
        sock.sendall(f"GET / HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def run_playbook(playbook: str, limit: str | None = None, extra_vars: dict | None = None,
                 extra_args: list[str] | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run ansible-playbook against the scenario's inventory; never raises on failure.

    ``playbook`` is relative to the scenario directory. Extra vars go through a
    temporary JSON file so that types (ints, dicts) survive.
    """
    cmd = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"],
           os.path.join(SCENARIO_DIR, playbook)]
    if limit:
        cmd += ["--limit", limit]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(extra_vars or {}, handle)
        vars_file = handle.name
    try:
        cmd += ["-e", f"@{vars_file}"] + (extra_args or [])
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    finally:
        os.unlink(vars_file)


def run_playbooks(runs: dict[str, dict], workers: int = 3) -> dict[str, subprocess.CompletedProcess]:
    """Several ``run_playbook`` calls side by side (``workers`` at a time): ``runs`` maps a name to the
    keyword arguments of one call; the answer maps each name to its result.

    Only for runs that change nothing (bad inputs refused by the preflight checks): nothing orders them.
    """
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {name: pool.submit(run_playbook, **kwargs) for name, kwargs in runs.items()}
        return {name: future.result() for name, future in futures.items()}


def load_yaml(path: str):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def container_host(name: str):
    """A testinfra host for a test container, reached with docker exec."""
    import testinfra

    return testinfra.get_host(f"docker://{name}")


def docker_inspect(host, name: str) -> dict:
    """``docker inspect`` of a container on a Docker test host."""
    result = host.run(f"docker inspect {name}")
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)[0]


def main_pid(host, unit: str) -> int:
    """The main PID systemd reports for ``unit`` (changes when the unit restarts)."""
    return int(host.run(f"systemctl show -p MainPID --value {unit}").stdout.strip())


# How sdk_probe's protocols map to the official SDK client's modes.
SDK_MODES = {"handshake": "legacy", "sessionless": "2026-07-28", "auto": "auto"}


def sdk_probe(url: str, protocol: str = "auto", call_tool: str | None = None, tool_arguments: dict | None = None,
              timeout: float = 10, verify=True, headers: dict | None = None) -> dict:
    """MCP at ``url`` through the official ``mcp`` SDK client, not the collection's own.

    ``protocol``: ``handshake`` (the SDK's ``legacy`` mode, 2025-era ``initialize``),
    ``sessionless`` (pinned to 2026-07-28) or ``auto`` (the SDK's default: 2026-07-28 with a fall
    back to the handshake). Returns ``{"protocol_version", "tools", "tool_result"}``, the tool
    result as the wire shows it (camelCase keys), and raises on any failure.
    """
    import anyio
    import httpx2
    from mcp.client import Client
    from mcp.client.streamable_http import streamable_http_client

    async def run():
        with anyio.fail_after(timeout * 3):
            http = httpx2.AsyncClient(timeout=httpx2.Timeout(timeout), verify=verify, headers=headers or {})
            async with http, Client(streamable_http_client(url, http_client=http), mode=SDK_MODES[protocol]) as sdk:
                out = {"protocol_version": sdk.protocol_version,
                       "tools": [tool.name for tool in (await sdk.list_tools()).tools]}
                if call_tool:
                    result = await sdk.call_tool(call_tool, tool_arguments or {})
                    out["tool_result"] = result.model_dump(by_alias=True, exclude_none=True)
                return out

    return anyio.run(run)


class SdkSession:
    """One MCP session kept across calls, through the official ``mcp`` SDK client, for synchronous tests.

    ``protocol`` as for ``sdk_probe`` (default ``handshake``: an ``initialize`` session with an
    ``Mcp-Session-Id``). The SDK runs on an event loop in a thread of its own (an anyio blocking portal).
    What the server sent is read from the HTTP responses themselves, not from the SDK's internals:
    ``session_id`` (the ``Mcp-Session-Id`` header), ``protocol_version`` and ``last_status`` (the HTTP
    status of the newest POST). ``via(url)`` sends the session's next requests to another origin with the
    same path: what a client sees when the VIP moves to the other load balancer. ``close()`` ends the
    session (the SDK sends DELETE).
    """

    def __init__(self, url: str, protocol: str = "handshake", timeout: float = 10, verify=True,
                 headers: dict | None = None):
        import contextlib

        import anyio.from_thread

        self.url = url
        self.session_id = None
        self.protocol_version = None
        self.last_status = None
        self._origin = None
        self.close_error = None
        self._timeout = timeout
        self._stack = contextlib.ExitStack()
        try:
            self._portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal())
            self._sdk = self._stack.enter_context(
                self._portal.wrap_async_context_manager(self._open(url, protocol, verify, headers or {})))
            self.protocol_version = self._sdk.protocol_version
        except BaseException:
            self._stack.close()
            raise

    def _open(self, url, protocol, verify, headers):
        import contextlib

        import httpx2
        from mcp.client import Client
        from mcp.client.streamable_http import streamable_http_client

        @contextlib.asynccontextmanager
        async def opened():
            http = httpx2.AsyncClient(timeout=httpx2.Timeout(self._timeout), verify=verify, headers=headers,
                                      event_hooks={"request": [self._on_request], "response": [self._on_response]})
            async with http, Client(streamable_http_client(url, http_client=http), mode=SDK_MODES[protocol]) as sdk:
                yield sdk

        return opened()

    async def _on_request(self, request):
        if self._origin is not None:
            request.url = request.url.copy_with(scheme=self._origin.scheme, host=self._origin.host,
                                                port=self._origin.port)
            request.headers["Host"] = request.url.netloc.decode()

    async def _on_response(self, response):
        if response.request.method == "POST":
            self.last_status = response.status_code
        if response.headers.get("mcp-session-id"):
            self.session_id = response.headers["mcp-session-id"]

    def via(self, url: str) -> "SdkSession":
        """Send this session's next requests to ``url``'s origin (scheme, host, port)."""
        import httpx2

        self._origin = httpx2.URL(url)
        return self

    def call_tool(self, name: str, arguments: dict | None = None) -> dict:
        """``tools/call`` in this session; the result as the wire shows it (camelCase keys). Raises on an
        error response."""
        import anyio

        async def call():
            with anyio.fail_after(self._timeout * 3):
                return await self._sdk.call_tool(name, arguments or {})

        return self._portal.call(call).model_dump(by_alias=True, exclude_none=True)

    def close(self):
        """End the session. A transport that already failed (what a test provoked) does not raise here."""
        try:
            self._stack.close()
        except Exception as exc:  # noqa: BLE001 - teardown of a session whose transport failed
            self.close_error = exc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def wait_for(what: str, check, deadline_s: float, every: float = 0.5):
    """Call ``check`` every ``every`` s until it returns something true, and return that; fail naming ``what``
    and the last answer after ``deadline_s``."""
    import time

    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {deadline_s} s (last: {last!r})")


def wait_healthy(host, container: str, deadline_s: float = 60) -> None:
    """Wait until Docker reports ``container`` on the test host ``host`` healthy: its health check made an MCP
    call to the server inside (for hosts whose published ports the firewall keeps from this machine)."""
    import time

    end = time.monotonic() + deadline_s
    status = ""
    while time.monotonic() < end:
        status = host.run(f"docker inspect -f '{{{{.State.Health.Status}}}}' {container}").stdout.strip()
        if status == "healthy":
            return
        time.sleep(1)
    raise AssertionError(f"{container} is {status or 'not running'} after {deadline_s} s")


def wait_for_mcp(url: str, deadline_s: float = 60):
    """Wait until ``url`` completes an MCP handshake (official SDK client); return the probe result."""
    import time

    end = time.monotonic() + deadline_s
    while True:
        try:
            return sdk_probe(url, "handshake")
        except Exception:  # noqa: BLE001 - any failure means not ready yet
            if time.monotonic() > end:
                raise
            time.sleep(1)
