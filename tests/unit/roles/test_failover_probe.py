"""fleetops-failover's MCP probe (probe_mcp) on the collection's MCP client, against real
Streamable HTTP servers on loopback: the official ``mcp`` SDK served by uvicorn in a thread
(sessioned or stateless, optionally refusing the 2026-07-28 protocol like a 2025-only server),
with an ASGI spy that records every request, plus the shared reference servers of conftest.

Also runs the script outside Ansible: from the layout the role installs and from the checkout."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from mcp.server.mcpserver import MCPServer

from script_loader import load_script

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "roles/mcp_failover/files/fleetops-failover"
LIB_FILES = ("_mcp_client.py", "_urls.py")
SERVER_NAME = "failover-probe-test"

ff = load_script(SCRIPT, "fleetops_failover_probe")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def _no_kept_sessions():
    ff._SESSIONS.clear()
    yield
    ff._SESSIONS.clear()


# --------------------------------------------------------------------------- #
# A real SDK server with a request spy, restartable on the same port
# --------------------------------------------------------------------------- #


class SpyServer:
    """The SDK's Streamable HTTP app on 127.0.0.1:<port>/mcp, every request recorded in ``calls``.

    ``handshake_only``: requests of the 2026-07-28 protocol get what a 2025-only
    server answers (HTTP 400, "Unsupported protocol version"). ``restart()``
    starts a fresh app on the same port: every session is forgotten.
    """

    def __init__(self, stateless=False, json_response=False, handshake_only=False):
        self.stateless, self.json_response, self.handshake_only = stateless, json_response, handshake_only
        # Seconds the spy holds a JSON-RPC method before the app sees it (a slow start, a hung server).
        self.delays: dict[str, float] = {}
        self.port = free_port()
        self.url = "http://127.0.0.1:%d/mcp" % self.port
        self.calls: list[dict] = []
        self.server = self.thread = None

    # -- the app ----------------------------------------------------------- #

    def _app(self):
        sdk = MCPServer(name=SERVER_NAME, version="1.0.0")
        return self._spy(sdk.streamable_http_app(stateless_http=self.stateless, json_response=self.json_response))

    def _spy(self, app):
        async def spy(scope, receive, send):
            if scope["type"] != "http" or scope["path"] != "/mcp":
                return await app(scope, receive, send)
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            messages, body, more = [], b"", True
            while more:
                message = await receive()
                messages.append(message)
                body += message.get("body", b"")
                more = message.get("more_body", False)
            try:
                rpc = json.loads(body) if body else {}
            except ValueError:
                rpc = {}
            call = {
                "http": scope["method"],
                "method": rpc.get("method") if isinstance(rpc, dict) else None,
                "session": headers.get("mcp-session-id"),
                "version": headers.get("mcp-protocol-version"),
                "user_agent": headers.get("user-agent"),
                "authorization": headers.get("authorization"),
                "status": None,
                "new_session": None,
            }
            self.calls.append(call)
            if self.delays.get(call["method"]):
                await asyncio.sleep(self.delays[call["method"]])
            if self.handshake_only and headers.get("mcp-protocol-version", "") >= "2026-07-28":
                # What a 2025-era SDK server answers a version it does not know.
                call["status"] = 400
                payload = json.dumps({"jsonrpc": "2.0", "id": "server-error", "error": {
                    "code": -32600, "message": "Bad Request: Unsupported protocol version: %s" % call["version"]}})
                await send({"type": "http.response.start", "status": 400,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": payload.encode()})
                return None
            pending = list(messages)

            async def replay():
                return pending.pop(0) if pending else await receive()

            async def watch(message):
                if message["type"] == "http.response.start":
                    call["status"] = message["status"]
                    for key, value in message.get("headers", []):
                        if key.decode().lower() == "mcp-session-id":
                            call["new_session"] = value.decode()
                await send(message)

            return await app(scope, replay, watch)

        return spy

    # -- lifecycle --------------------------------------------------------- #

    def start(self):
        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="error",
                                lifespan="on", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the SDK server did not start"
            time.sleep(0.02)
        return self

    def stop(self):
        if self.server is not None:
            self.server.should_exit = True
            self.thread.join(timeout=10)
            self.server = None

    def restart(self):
        self.stop()
        return self.start()

    # -- observation ------------------------------------------------------- #

    def methods(self):
        return [c["method"] or c["http"] for c in self.calls]

    def count(self, method):
        return sum(1 for c in self.calls if c["method"] == method)


@pytest.fixture
def spy_server():
    started = []

    def start(**kwargs):
        server = SpyServer(**kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def probe(url, timeout=5.0, **kwargs):
    began = time.monotonic()
    ok, detail = ff.probe_mcp(url, timeout=timeout, **kwargs)
    return ok, detail, time.monotonic() - began


# --------------------------------------------------------------------------- #
# Sessionless: server/discover, no session
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("stateless", [False, True], ids=["sessioned", "stateless"])
@pytest.mark.parametrize("json_response", [False, True], ids=["sse", "json"])
def test_a_sessionless_server_is_probed_with_discover_and_no_session(spy_server, stateless, json_response):
    server = spy_server(stateless=stateless, json_response=json_response)
    for _ in range(2):
        ok, detail, _ = probe(server.url)
        assert (ok, detail) == (True, SERVER_NAME)
    assert server.methods() == ["server/discover", "server/discover"]
    assert all(c["version"] == "2026-07-28" and c["status"] == 200 for c in server.calls)
    assert not any(c["session"] or c["new_session"] for c in server.calls)
    assert all(c["user_agent"] == "fleetops-failover/1" for c in server.calls)
    assert ff._SESSIONS == {}


def test_the_reference_servers_are_probed_sessionless(sessioned_server, stateless_server, json_server):
    for server in (sessioned_server, stateless_server, json_server):
        assert ff.probe_mcp(server.mcp_url) == (True, "fleetops-reference")
        assert server.health()[1]["active_sessions"] == 0
    assert ff._SESSIONS == {}


# --------------------------------------------------------------------------- #
# Handshake-only: one 2025 session, kept
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("json_response", [False, True], ids=["sse", "json"])
def test_a_handshake_only_server_is_probed_over_one_kept_session(spy_server, json_response):
    server = spy_server(handshake_only=True, json_response=json_response)
    for _ in range(3):
        ok, detail, _ = probe(server.url)
        assert (ok, detail) == (True, SERVER_NAME)
    assert server.methods() == ["server/discover", "initialize", "notifications/initialized", "ping", "ping"]
    assert server.count("initialize") == 1
    session = server.calls[1]["new_session"]
    assert session and [c["session"] for c in server.calls[2:]] == [session] * 3
    assert all(c["status"] in (200, 202) for c in server.calls[1:])
    assert "DELETE" not in server.methods()


def test_a_forgotten_session_is_opened_again_and_a_down_server_fails_fast(spy_server):
    server = spy_server(handshake_only=True)
    assert probe(server.url)[:2] == (True, SERVER_NAME)
    first = server.calls[1]["new_session"]

    server.stop()
    ok, detail, took = probe(server.url, timeout=3.0)
    assert not ok and detail.startswith("no answer:") and "refused" in detail
    assert took < 2.5  # at once, not after the 3 s timeout (a bound, not a speed: loaded machines are slow)
    assert len(ff._SESSIONS) == 1  # a server that does not answer keeps its session

    server.restart()  # a new process: it knows no session
    del server.calls[:]
    assert probe(server.url)[:2] == (True, SERVER_NAME)
    ping = server.calls[0]
    assert (ping["method"], ping["session"], ping["status"]) == ("ping", first, 404)
    assert server.methods() == ["ping", "server/discover", "initialize", "notifications/initialized"]
    second = server.calls[2]["new_session"]
    assert second and second != first

    assert probe(server.url)[:2] == (True, SERVER_NAME)
    assert server.methods()[-1] == "ping" and server.calls[-1]["session"] == second
    assert server.count("initialize") == 1


def test_a_handshake_only_server_without_sessions_is_initialized_each_time(spy_server):
    server = spy_server(handshake_only=True, stateless=True)
    for _ in range(2):
        assert probe(server.url)[:2] == (True, SERVER_NAME)
    assert server.count("initialize") == 2 and "ping" not in server.methods()
    assert ff._SESSIONS == {}


def test_opening_a_session_may_take_the_open_timeout_and_pings_keep_the_probe_timeout(spy_server):
    # Behind the stdio bridge, initialize starts the server's process: slower than a ping.
    server = spy_server(handshake_only=True)
    server.delays["initialize"] = 1.2
    ok, detail, took = probe(server.url, timeout=0.5)
    assert not ok and "Timed out" in detail and took < 1.2  # without open_timeout: the probe's 0.5 s
    assert ff._SESSIONS == {}
    ok, detail, took = probe(server.url, timeout=0.5, open_timeout=5.0)
    assert (ok, detail) == (True, SERVER_NAME) and 1.2 <= took < 5.0, (detail, took)
    assert len(ff._SESSIONS) == 1
    # The kept session's pings have the probe's own timeout: a hung server is detected as fast as before.
    assert probe(server.url, timeout=0.5, open_timeout=5.0)[:2] == (True, SERVER_NAME)
    server.delays["ping"] = 3.0
    ok, detail, took = probe(server.url, timeout=0.5, open_timeout=5.0)
    assert not ok and "Timed out" in detail and took < 2.5, (detail, took)
    # server/discover too, on a server that speaks it.
    modern = spy_server()
    modern.delays["server/discover"] = 3.0
    ok, detail, took = probe(modern.url, timeout=0.5, open_timeout=5.0)
    assert not ok and "Timed out" in detail and took < 2.5, (detail, took)


def test_the_daemon_gives_the_configured_open_timeout_to_its_probes():
    seen = []
    actions = ff.SshActions({"probe_timeout": 3, "session_open_timeout": 12, "ssh": {}, "servers": [
        {"name": "memory", "probe_urls": {"ms-1": "http://ms-1:18300/mcp"}}]},
        probe=lambda url, timeout, open_timeout: seen.append((url, timeout, open_timeout)) or (True, "m"))
    assert actions.probe("memory", "ms-1") == (True, "m")
    assert seen == [("http://ms-1:18300/mcp", 3.0, 12.0)]


def test_the_kept_sessions_are_deleted_at_exit(spy_server):
    server = spy_server(handshake_only=True)
    assert probe(server.url)[0]
    session = server.calls[1]["new_session"]
    ff.close_mcp_sessions()
    assert (server.calls[-1]["http"], server.calls[-1]["session"]) == ("DELETE", session)
    assert server.calls[-1]["status"] == 200 and ff._SESSIONS == {}


# --------------------------------------------------------------------------- #
# Failures
# --------------------------------------------------------------------------- #


def test_nothing_listening_gives_false_at_once(closed_port_url):
    ok, detail, took = probe(closed_port_url, timeout=3.0)
    assert not ok and detail.startswith("no answer:") and took < 2.5  # before the 3 s timeout


def test_a_server_that_never_answers_fails_within_the_probe_timeout(silent_server_url):
    ok, detail, took = probe(silent_server_url, timeout=0.5)
    assert not ok and detail.startswith("no answer:") and "Timed out" in detail
    assert took < 2.5  # its own 0.5 s, not the default 3 s


@pytest.mark.parametrize("path", ["/html", "/json", "/notjson", "/octets", "/notfound", "/redirect"])
def test_an_http_answer_that_is_not_mcp_gives_false(non_mcp_server, path):
    ok, detail, _ = probe(non_mcp_server + path, timeout=3.0)
    assert not ok and detail.startswith("non_mcp_response:"), detail
    assert ff._SESSIONS == {}


def test_tls_with_the_ca_and_the_bearer_token(secure_server, mcp_token, tls_material):
    cafile = str(tls_material.cert_path)
    assert ff.probe_mcp(secure_server.mcp_url, token=mcp_token, cafile=cafile) == (True, "fleetops-reference")
    ok, detail = ff.probe_mcp(secure_server.mcp_url, token=mcp_token)
    assert not ok and detail.startswith("no answer:") and "certificate verification failed" in detail
    ok, detail = ff.probe_mcp(secure_server.mcp_url, token="wrong-token", cafile=cafile)
    assert not ok and detail.startswith("authentication:") and "wrong-token" not in detail


def test_the_bearer_token_goes_with_every_request_of_a_kept_session(spy_server):
    server = spy_server(handshake_only=True)
    for _ in range(2):
        assert ff.probe_mcp(server.url, token="t0ken")[0]
    assert server.calls and all(c["authorization"] == "Bearer t0ken" for c in server.calls)
    assert ff.probe_mcp(server.url)[0]  # another token (none): another session
    assert server.count("initialize") == 2


# --------------------------------------------------------------------------- #
# Outside Ansible
# --------------------------------------------------------------------------- #

PROBE_TWICE = """
import importlib.util, json, runpy, sys
ns = runpy.run_path(sys.argv[1])
print(json.dumps({"ansible": importlib.util.find_spec("ansible_collections") is not None,
                  "client": ns["mcp"].__file__,
                  "probes": [ns["probe_mcp"](sys.argv[2]), ns["probe_mcp"](sys.argv[2])]}))
"""


def _run_isolated(script: Path, url: str) -> dict:
    """The script in a python3 without site-packages (-I -S): no Ansible, no SDK."""
    done = subprocess.run([sys.executable, "-I", "-S", "-c", PROBE_TWICE, str(script), url],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_installed_layout_runs_without_ansible(spy_server, tmp_path):
    """The role's layout: the script in sbin, the client and _urls.py in ../lib/fleetops-failover."""
    (tmp_path / "sbin").mkdir()
    lib = tmp_path / "lib" / "fleetops-failover"
    lib.mkdir(parents=True)
    shutil.copy(SCRIPT, tmp_path / "sbin" / "fleetops-failover")
    for name in LIB_FILES:
        shutil.copy(REPO / "plugins/module_utils" / name, lib / name)
    server = spy_server(handshake_only=True)
    out = _run_isolated(tmp_path / "sbin" / "fleetops-failover", server.url)
    assert out["ansible"] is False and out["client"] == str(lib / "_mcp_client.py")
    assert out["probes"] == [[True, SERVER_NAME], [True, SERVER_NAME]]
    assert server.count("initialize") == 1 and server.methods()[-1] == "ping"


def test_the_script_in_the_checkout_uses_the_collections_client(spy_server):
    server = spy_server()
    out = _run_isolated(SCRIPT, server.url)
    assert out["ansible"] is False
    assert out["client"] == str(REPO / "plugins/module_utils/_mcp_client.py")
    assert out["probes"] == [[True, SERVER_NAME], [True, SERVER_NAME]]
    assert server.methods() == ["server/discover"] * 2


def test_the_role_installs_the_client_the_script_loads():
    tasks = (REPO / "roles/mcp_failover/tasks/tool.yml").read_text()
    for name in LIB_FILES:
        assert name in tasks
    assert "{{ role_path }}/../../plugins/module_utils/" in tasks
