"""The load balancer's nginx.conf, rendered by ansible-playbook from the role's own template (issue 18 items 9
and 11): per-address limits before the token check, session ids bound to the client.

The render tests need only Ansible. The gateway tests run the rendered configuration in a real nginx (Debian's,
with the njs module the role installs) on loopback ports against two small HTTP backends, for a few seconds;
they are skipped where nginx or njs is missing or the tests do not run as root (nginx.conf says ``user www-data``).
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from ansible_collections.fleetops.mcp.plugins.module_utils import _failover, _lb_clients

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "nginx_lb"
KEY = "0123456789abcdef" * 4
# Fixed random test tokens (the role refuses guessable ones).
TOKENS = {"alice": "aL1c3-Xq7vRm2ZtK9pWn4YbHs8JdFg", "bob": "b0B-Tr5kQz8NwLc3VyMx6PhGj2SdRf"}
BACKEND_ADDRESSES = ["127.0.0.2", "127.0.0.3"]
# A client with per-tool rules in the gateway fixture: echo on the stateless server, everything on the
# sessioned one, nothing elsewhere.
CAROL = "c4r0L-Wm8Tq2VzNx5KjPr7HdYs3BfGk"
CAROL_TOOLS = {"reference-stateless": ["echo"], "reference": ["*"]}
# The one browser origin the gateway fixture's `reference` server admits.
ORIGIN = "https://app.example.com"
PLAYBOOK = """
- name: Render the load balancer's configuration from the role's templates
  hosts: all
  connection: local
  gather_facts: false
  vars_files:
    - {role}/defaults/main.yml
    - {role}/vars/main.yml
  tasks:
    - name: Write nginx.conf
      ansible.builtin.template:
        src: {role}/templates/nginx.conf.j2
        dest: "{{{{ out_dir }}}}/nginx.conf"
        mode: "0600"
    - name: Write the token verifier
      ansible.builtin.template:
        src: {role}/templates/auth.js.j2
        dest: "{{{{ out_dir }}}}/auth.js"
        mode: "0600"
"""


def _free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _shared_free_port() -> int:
    """A port free on every backend address (one server, one host_port on every Docker host)."""
    for _ in range(50):
        port = _free_port(BACKEND_ADDRESSES[0])
        try:
            for address in BACKEND_ADDRESSES[1:]:
                with socket.socket() as sock:
                    sock.bind((address, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free on every backend address")


def render(out_dir: pathlib.Path, host: str = "lb-1", **overrides) -> str:
    """nginx.conf as the role writes it for ``host`` (and auth.js beside it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    playbook = out_dir / "render.yml"
    playbook.write_text(PLAYBOOK.format(role=ROLE))
    backend_port = overrides.pop("backend_port", 18080)
    variables = {
        "out_dir": str(out_dir),
        "ansible_python_interpreter": sys.executable,
        "fleetops_plan": {"groups": {"docker_hosts": "docker_hosts", "load_balancers": "load_balancers"},
                          "status": {"listen": "127.0.0.1:8081", "url": "http://127.0.0.1:8081"},
                          "failover_dir": str(out_dir / "failover")},
        "nginx_lb_mcp_servers": [
            {"name": "reference", "image": "r:1", "host_port": backend_port},
            {"name": "reference-stateless", "image": "s:1", "host_port": backend_port + 1, "stateless": True},
        ],
        "_nginx_lb_backends": [{"host": "ms-%d" % (i + 1), "address": a} for i, a in enumerate(BACKEND_ADDRESSES)],
        "_nginx_lb_conf_dir": str(out_dir),
        "nginx_lb_tls": False,
        "nginx_lb_access_log": str(out_dir / "access.json"),
        "nginx_lb_audit_log": str(out_dir / "audit.json"),
        "nginx_lb_clients": [{"name": name, "token": token, "rate_per_minute": 6000, "burst": 500}
                             for name, token in TOKENS.items()],
        "nginx_lb_affinity_key": KEY,
        **overrides,
    }
    extra = out_dir / "vars.json"
    extra.write_text(json.dumps(variables))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    bin_dir = pathlib.Path(sys.executable).parent
    result = subprocess.run([str(bin_dir / "ansible-playbook"), "-i", f"{host},", str(playbook), "-e", f"@{extra}"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=180, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return (out_dir / "nginx.conf").read_text()


def _map_body(conf: str, variable: str) -> str:
    match = re.search(r"\n    map [^\n]* \$%s \{\n(.*?)\n    \}" % re.escape(variable), conf, re.S)
    assert match, variable
    return match.group(1)


def _location(conf: str, path: str) -> str:
    match = re.search(r"\n        location = %s \{\n(.*?)\n        \}\n" % re.escape(path), conf, re.S)
    assert match, path
    return match.group(1)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> str:
    return render(tmp_path_factory.mktemp("lb-1"))


# ---- rendered configuration -------------------------------------------------


def test_both_load_balancers_render_the_same_routing(tmp_path):
    # The tags depend only on the inventory: lb-2's configuration is lb-1's.
    confs = [render(tmp_path / host, host=host).replace(str(tmp_path / host), "DIR") for host in ("lb-1", "lb-2")]
    assert confs[0] == confs[1]


def _upstream_of(conf: str, address: str) -> str:
    """The single-server upstream of the reference server's backend at ``address``."""
    return re.search(r"upstream (mcp_reference_b[0-9a-f]{10}) \{\n\s+server %s:18080;" % re.escape(address),
                     conf).group(1)


def test_the_pin_map_routes_each_client_only_with_its_own_tags(rendered):
    body = _map_body(rendered, "fleetops_mcp_pin_reference")
    pairs = re.findall(r'^\s+"([^":~]*):(b[0-9a-f]{10})" (\S+);$', body, re.M)
    expected = {(client, _lb_clients.affinity_tag(KEY, client, f"{address}:18080"), _upstream_of(rendered, address))
                for client in TOKENS for address in BACKEND_ADDRESSES}
    assert set(pairs) == expected and len(pairs) == len(TOKENS) * len(BACKEND_ADDRESSES)
    # The key stays on the controller.
    assert KEY not in rendered


def test_the_answer_tag_is_the_clients_tag_for_the_backend_that_answered(rendered):
    answers = dict(re.findall(r'^\s+"(\S+ b[0-9a-f]{10})" (b[0-9a-f]{10});$',
                              _map_body(rendered, "fleetops_mcp_answer_tag"), re.M))
    backend_ids = dict(re.findall(r'"~\(\^\|\\s\)(\S+):18080\$" (b[0-9a-f]{10});',
                                  _map_body(rendered, "fleetops_mcp_answer_backend")))
    for address in BACKEND_ADDRESSES:
        backend = backend_ids[re.escape(address)]
        for client in TOKENS:
            assert answers[f"{client} {backend}"] == _lb_clients.affinity_tag(KEY, client, f"{address}:18080")


def test_limits_come_before_the_token_check_in_every_route(rendered):
    for path in ("/mcp/reference", "/_fleetops/pinned/mcp/reference", "/mcp/reference-stateless"):
        location = _location(rendered, path)
        # No 401 answered in the rewrite phase, which runs before limit_req.
        assert "return 401" not in location, path
        assert "limit_req zone=fleetops_ip " in location and "limit_conn fleetops_ip_conn " in location, path
        assert "limit_req zone=fleetops_unauthenticated " in location, path
        assert location.index("limit_req zone=fleetops_unauthenticated") < location.index("auth_request"), path
    assert "limit_req_zone $fleetops_unauthenticated_key zone=fleetops_unauthenticated:10m rate=30r/m;" in rendered


def test_without_authentication_sessions_are_bound_to_the_empty_client(tmp_path):
    conf = render(tmp_path, nginx_lb_auth=False)
    body = _map_body(conf, "fleetops_mcp_pin_reference")
    assert '"~^:" "";' not in body  # an unknown tag is gone, not the pool
    tag = _lb_clients.affinity_tag(KEY, "", f"{BACKEND_ADDRESSES[0]}:18080")
    assert f'":{tag}" ' in body
    assert "auth_request" not in conf and "fleetops_unauthenticated" not in conf


def test_the_map_hash_grows_with_clients_times_backends(tmp_path):
    clients = [{"name": f"agent-{i}", "token": f"tok{i:04d}-Xq7vRm2ZtK9pWn4YbHs8JdFgLc3VyM"} for i in range(600)]
    conf = render(tmp_path, nginx_lb_clients=clients)
    # 600 clients x 4 backends (2 hosts, 2 servers) answer tags.
    assert "map_hash_max_size 4800;" in conf
    _nginx_t(tmp_path, conf)


def _nginx_t(out_dir: pathlib.Path, conf: str):
    if not shutil.which("nginx") or not pathlib.Path("/etc/nginx/mime.types").exists():
        pytest.skip("nginx is not installed here")
    if not pathlib.Path("/usr/lib/nginx/modules/ngx_http_js_module.so").exists():
        pytest.skip("nginx's njs module (libnginx-mod-http-js) is not installed here")
    if os.geteuid() != 0:
        pytest.skip("nginx -t of a configuration with `user www-data` needs root")
    test_conf = out_dir / "nginx-t.conf"
    test_conf.write_text(_runnable(conf, out_dir))
    result = subprocess.run(["nginx", "-t", "-q", "-c", str(test_conf), "-e", str(out_dir / "error.log")],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr


def _runnable(conf: str, out_dir: pathlib.Path) -> str:
    """The configuration with its pid file and error log in ``out_dir`` (the host's are not touched)."""
    conf = conf.replace("pid /run/nginx.pid;", f"pid {out_dir}/nginx.pid;")
    return conf.replace("error_log /var/log/nginx/error.log warn;", f"error_log {out_dir}/error.log info;")


def test_nginx_accepts_the_rendered_configuration(rendered, tmp_path):
    (tmp_path / "auth.js").write_text((pathlib.Path(re.search(r"js_import fleetops_auth from (\S+);",
                                                              rendered).group(1))).read_text())
    _nginx_t(tmp_path, rendered)


def test_a_failover_servers_sessions_are_pinned_to_its_pool_and_nginx_accepts_every_route_the_agent_writes(tmp_path):
    # A sessioned failover server: its pool lists the active host only (the failover include), and a session
    # opened on either host is pinned to that pool, never to a host of its own (a fenced or unrouted old
    # active would otherwise keep its sessions behind the failover's back).
    servers = [{"name": "memory", "image": "m:1", "host_port": 18300,
                "failover": {"primary": "ms-1", "standby": "ms-2"}}]
    conf = render(tmp_path / "lb", nginx_lb_mcp_servers=servers)
    assert "include %s/memory.conf;" % (tmp_path / "lb" / "failover") in conf
    assert not re.search(r"upstream mcp_memory_b[0-9a-f]{10} \{", conf)
    pins = re.findall(r'^\s+"[^":~]*:b[0-9a-f]{10}" (\S+);$', _map_body(conf, "fleetops_mcp_pin_memory"), re.M)
    assert pins and set(pins) == {"mcp_memory"} and len(pins) == len(TOKENS) * len(BACKEND_ADDRESSES)
    (tmp_path / "auth.js").write_text(pathlib.Path(re.search(r"js_import fleetops_auth from (\S+);", conf).group(1))
                                      .read_text())
    # Every text the failover agent may write there: each host's route (routes.json), and no host at all.
    from script_loader import load_script

    agent = load_script(ROOT / "roles/mcp_failover/files/fleetops-failover", "fleetops_failover")
    backends = [{"host": "ms-%d" % (i + 1), "address": a} for i, a in enumerate(BACKEND_ADDRESSES)]
    routes = _failover.route_files(servers, backends)["memory"]
    assert sorted(routes) == ["ms-1", "ms-2"]
    (tmp_path / "lb" / "failover").mkdir(exist_ok=True)
    for text in [*routes.values(), agent.unrouted_text("memory")]:
        (tmp_path / "lb" / "failover" / "memory.conf").write_text(text)
        _nginx_t(tmp_path, conf)


# ---- a running gateway ------------------------------------------------------


class _Backend(http.server.BaseHTTPRequestHandler):
    """A sessionful server in miniature: a request without a session id opens one; a known id continues it;
    an unknown one gets 404, as an MCP server answers. The body names the backend and what it received."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append(dict(self.headers.items()))
        try:
            message = json.loads(body)
        except ValueError:
            message = {}
        if isinstance(message, dict) and message.get("method") == "tools/call":
            return self._tool_call(message)
        name = "%s:%d" % self.server.server_address
        sid = self.headers.get("Mcp-Session-Id")
        headers = {}
        if sid is None:
            sid = uuid.uuid4().hex
            self.server.sessions.add(sid)
            headers["Mcp-Session-Id"] = sid
        elif sid not in self.server.sessions:
            return self._answer(404, {"backend": name, "error": "unknown session"}, {})
        return self._answer(200, {"backend": name, "sid": sid, "client": self.headers.get("X-Fleetops-Client")},
                            headers)

    def _tool_call(self, message):
        """A JSON-RPC answer by tool name: ok, tool_error, an unknown tool (-32602), or ok over an event stream
        (a progress notification first, the result split over two writes)."""
        rid, name = message.get("id"), message["params"]["name"]
        if name == "missing":
            return self._answer(200, {"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": "Unknown tool"}}, {})
        result = {"content": [{"type": "text", "text": "done"}], "isError": name == "broken"}
        if name != "streamed":
            return self._answer(200, {"jsonrpc": "2.0", "id": rid, "result": result}, {})
        progress = json.dumps({"jsonrpc": "2.0", "method": "notifications/progress",
                               "params": {"progressToken": 1, "progress": 1, "message": '"error":{"code":-1}'}})
        final = json.dumps({"jsonrpc": "2.0", "id": rid, "result": result})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for chunk in (f"event: message\ndata: {progress}\n\n", f"event: message\ndata: {final[:20]}", f"{final[20:]}\n\n"):
            self.wfile.write(chunk.encode())
            self.wfile.flush()
            time.sleep(0.05)
        self.close_connection = True
        return None

    def _answer(self, status, body, headers):
        data = json.dumps(body).encode()
        self.send_response(status)
        for key, value in {**headers, "Content-Type": "application/json", "Content-Length": str(len(data))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def start_backends(ports) -> list:
    """A _Backend on each backend address and port, serving in threads."""
    backends = []
    for address in BACKEND_ADDRESSES:
        for p in ports:
            server = http.server.ThreadingHTTPServer((address, p), _Backend)
            server.sessions, server.seen = set(), []
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            backends.append(server)
    return backends


@contextlib.contextmanager
def running_nginx(out_dir: pathlib.Path, conf: str, listen: int, backends: list):
    """nginx running ``conf`` (pid file and logs in ``out_dir``) until the block ends; then it and ``backends``
    are stopped."""
    (out_dir / "run.conf").write_text(_runnable(conf, out_dir))
    nginx = subprocess.Popen(["nginx", "-c", str(out_dir / "run.conf"), "-e", str(out_dir / "error.log"),
                              "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", listen), timeout=0.2).close()
                break
            except OSError:
                if nginx.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("nginx did not start: %s" % nginx.stderr.read().decode()[-2000:]) from None
                time.sleep(0.05)
        yield nginx
    finally:
        nginx.send_signal(signal.SIGTERM)
        try:
            nginx.wait(timeout=10)
        except subprocess.TimeoutExpired:
            nginx.kill()
        for server in backends:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    if not shutil.which("nginx"):
        pytest.skip("nginx is not installed here")
    if not pathlib.Path("/usr/lib/nginx/modules/ngx_http_js_module.so").exists():
        pytest.skip("nginx's njs module (libnginx-mod-http-js) is not installed here")
    if os.geteuid() != 0:
        pytest.skip("running nginx with `user www-data` needs root")
    out_dir = tmp_path_factory.mktemp("gateway")
    port = _shared_free_port()
    backends = start_backends([port, port + 1])
    listen, status = _free_port(), _free_port()
    servers = [
        {"name": "reference", "image": "r:1", "host_port": port, "allowed_origins": [ORIGIN]},
        {"name": "reference-stateless", "image": "s:1", "host_port": port + 1, "stateless": True},
    ]
    clients = [{"name": name, "token": token, "rate_per_minute": 6000, "burst": 500} for name, token in TOKENS.items()]
    clients.append({"name": "carol", "token": CAROL, "rate_per_minute": 6000, "burst": 500, "tools": CAROL_TOOLS})
    conf = render(out_dir, backend_port=port, nginx_lb_listen_port=listen, nginx_lb_status_listen=f"127.0.0.1:{status}",
                  nginx_lb_mcp_servers=servers, nginx_lb_clients=clients,
                  nginx_lb_ip_rate_per_minute=600, nginx_lb_ip_burst=40, nginx_lb_ip_max_connections=50,
                  nginx_lb_unauthenticated_rate_per_minute=30, nginx_lb_unauthenticated_burst=10)
    with running_nginx(out_dir, conf, listen, backends):
        yield {"port": listen, "backend_port": port, "dir": out_dir, "backends": backends}


def _post(gw, path, token=None, sid=None, source="127.0.0.1", origin=None, method="POST", extra=None):
    headers = {"Content-Type": "application/json", **(extra or {})}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if sid:
        headers["Mcp-Session-Id"] = sid
    if origin:
        headers["Origin"] = origin
    conn = http.client.HTTPConnection("127.0.0.1", gw["port"], timeout=10, source_address=(source, 0))
    try:
        conn.request(method, path, body=b"{}" if method == "POST" else None, headers=headers)
        response = conn.getresponse()
        body = response.read()
        names = [k.lower() for k, _ in response.getheaders()]
        assert names.count("www-authenticate") <= 1 and names.count("mcp-session-id") <= 1, names
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def test_a_flood_of_wrong_tokens_gets_429_after_a_bounded_number_of_401s(gateway):
    source = "127.0.0.7"
    statuses = [_post(gateway, "/mcp/reference-stateless", "guess-%04d-0123456789abcdef" % i, source=source)[0]
                for i in range(60)]
    assert set(statuses) <= {401, 429}, statuses
    # Burst 10 at 30 a minute: 11 answers, one more for each 2 s the loop took.
    assert 10 <= statuses.count(401) <= 13, statuses
    assert statuses.count(429) >= 47 and statuses[-1] == 429, statuses
    # A known token from the same address is not locked out, and other addresses still get their 401.
    assert _post(gateway, "/mcp/reference-stateless", TOKENS["alice"], source=source)[0] == 200
    status, headers, body = _post(gateway, "/mcp/reference-stateless", "guess-0123456789abcdef", source="127.0.0.8")
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="fleetops-mcp", error="invalid_token"'
    assert json.loads(body)["error"]["message"] == "Unauthorized"
    status, headers, _ = _post(gateway, "/mcp/reference-stateless", source="127.0.0.8")
    assert status == 401 and headers["www-authenticate"] == 'Bearer realm="fleetops-mcp"'


def test_every_address_has_a_budget_even_with_a_known_token(gateway):
    statuses = [_post(gateway, "/mcp/reference-stateless", TOKENS["bob"], source="127.0.0.9")[0] for _ in range(60)]
    # Burst 40 at 600 a minute; bob's own budget (burst 500) is not what stops it.
    assert statuses[:41] == [200] * 41 and 429 in statuses, statuses


def test_a_session_is_pinned_and_bound_to_its_client(gateway):
    status, headers, body = _post(gateway, "/mcp/reference", TOKENS["alice"])
    assert status == 200, body
    first = json.loads(body)
    client_sid = headers["mcp-session-id"]
    tag, backend_sid = client_sid.split(".", 1)
    assert backend_sid == first["sid"] and first["client"] == "alice"
    assert tag == _lb_clients.affinity_tag(KEY, "alice", first["backend"])
    for _ in range(5):
        status, _, body = _post(gateway, "/mcp/reference", TOKENS["alice"], client_sid)
        assert status == 200 and json.loads(body)["backend"] == first["backend"]
        assert json.loads(body)["sid"] == backend_sid  # the backend sees its own id, untagged
    # Bob with Alice's session id: not routed, whatever backend it is on.
    status, _, body = _post(gateway, "/mcp/reference", TOKENS["bob"], client_sid)
    assert status == 404 and json.loads(body)["error"]["message"] == "Session not found"
    # Alice's session goes on.
    status, _, body = _post(gateway, "/mcp/reference", TOKENS["alice"], client_sid)
    assert status == 200 and json.loads(body)["sid"] == backend_sid
    # No token at all with a session id: the token check answers first.
    assert _post(gateway, "/mcp/reference", None, client_sid, source="127.0.0.10")[0] == 401


def test_bobs_tag_for_the_same_backend_differs_and_forged_tags_are_gone(gateway):
    tags = {}
    for _ in range(10):
        for client in ("alice", "bob"):
            status, headers, body = _post(gateway, "/mcp/reference", TOKENS[client])
            assert status == 200
            tags.setdefault(json.loads(body)["backend"], {})[client] = headers["mcp-session-id"].split(".")[0]
    for backend, by_client in tags.items():
        if len(by_client) == 2:
            assert by_client["alice"] != by_client["bob"], backend
    assert _post(gateway, "/mcp/reference", TOKENS["alice"], "b0123456789.whatever")[0] == 404
    assert _post(gateway, "/mcp/reference", TOKENS["alice"], "not-tagged")[0] == 404


def test_sessionless_requests_are_balanced_over_the_pool(gateway):
    seen = set()
    for _ in range(8):
        status, _, body = _post(gateway, "/mcp/reference", TOKENS["alice"])
        assert status == 200
        seen.add(json.loads(body)["backend"])
    assert len(seen) == 2, seen


def _backend_requests(gw) -> int:
    return sum(len(server.seen) for server in gw["backends"])


@pytest.mark.parametrize("path", ["/mcp/reference", "/mcp/reference-stateless"])
def test_a_browser_origin_the_server_does_not_admit_gets_403_before_the_token_is_checked(gateway, path):
    before = _backend_requests(gateway)
    for token in (TOKENS["alice"], None, "guess-0123456789abcdef"):
        status, headers, body = _post(gateway, path, token, origin="https://evil.example", source="127.0.0.11")
        assert status == 403, body
        error = json.loads(body)
        assert error["error"]["code"] == -32600 and "Origin" in error["error"]["message"]
        assert "id" not in error  # the transport spec: a JSON-RPC error response that has no id
        assert "www-authenticate" not in headers and "access-control-allow-origin" not in headers
    # `reference-stateless` admits no browser origin, not even the one `reference` admits; a lookalike is no match.
    denied = [ORIGIN + ".evil.example", "http://app.example.com", ORIGIN + ":8443", "null"]
    if path == "/mcp/reference-stateless":
        denied.append(ORIGIN)
    for origin in denied:
        assert _post(gateway, path, TOKENS["alice"], origin=origin, source="127.0.0.11")[0] == 403, origin
    assert _backend_requests(gateway) == before  # nothing reached a backend


def test_an_admitted_origin_gets_cors_headers_and_its_preflight_answered_without_a_token(gateway):
    before = _backend_requests(gateway)
    status, headers, _ = _post(gateway, "/mcp/reference", origin=ORIGIN, method="OPTIONS", source="127.0.0.12", extra={
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, mcp-protocol-version, mcp-method"})
    assert status == 204
    assert headers["access-control-allow-origin"] == ORIGIN
    assert headers["access-control-allow-methods"] == "GET, POST, DELETE"
    assert headers["access-control-allow-headers"] == "authorization, content-type, mcp-protocol-version, mcp-method"
    assert _backend_requests(gateway) == before
    # The call itself: the token is still needed, and the browser may read the 401's challenge.
    status, headers, _ = _post(gateway, "/mcp/reference", origin=ORIGIN, source="127.0.0.12")
    assert status == 401 and headers.get("access-control-allow-origin") == ORIGIN, headers
    assert "WWW-Authenticate" in headers["access-control-expose-headers"]
    status, headers, body = _post(gateway, "/mcp/reference", TOKENS["alice"], origin=ORIGIN, source="127.0.0.12")
    assert status == 200, body
    assert headers["access-control-allow-origin"] == ORIGIN and "Mcp-Session-Id" in headers["access-control-expose-headers"]
    # The session goes on from the browser too (the pinned route keeps the CORS headers).
    status, headers, _ = _post(gateway, "/mcp/reference", TOKENS["alice"], headers["mcp-session-id"], origin=ORIGIN,
                               source="127.0.0.12")
    assert status == 200 and headers["access-control-allow-origin"] == ORIGIN
    # Native clients send no Origin: no CORS headers, answered as ever.
    status, headers, _ = _post(gateway, "/mcp/reference", TOKENS["alice"], source="127.0.0.12")
    assert status == 200 and not any(h.startswith("access-control-") for h in headers)


def test_the_clients_token_never_reaches_a_backend(gateway):
    for server in gateway["backends"]:
        server.seen.clear()
    for path in ("/mcp/reference", "/mcp/reference-stateless"):
        for _ in range(4):
            assert _post(gateway, path, TOKENS["bob"], source="127.0.0.13")[0] == 200
    seen = [headers for server in gateway["backends"] for headers in server.seen]
    assert len(seen) == 8
    for headers in seen:
        names = {name.lower() for name in headers}
        assert "authorization" not in names, headers
        assert TOKENS["bob"] not in json.dumps(headers)
        assert headers["X-Fleetops-Client"] == "bob"


def _audit(gw) -> list[dict]:
    path = gw["dir"] / "audit.json"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _call(gw, path, tool, token, rid, arguments=None, protocol=None, source="127.0.0.14", headers=None, method=None):
    """A tools/call (or ``method``); with ``protocol`` a 2026-07-28 request: the version in the body's _meta and the
    three headers mirrored from the body, then ``headers`` over them (None removes one)."""
    body = {"jsonrpc": "2.0", "id": rid, "method": method or "tools/call",
            "params": {"name": tool, "arguments": arguments or {}}}
    sent = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    if protocol:
        body["params"]["_meta"] = {"io.modelcontextprotocol/protocolVersion": protocol,
                                   "io.modelcontextprotocol/clientCapabilities": {}}
        sent.update({"MCP-Protocol-Version": protocol, "Mcp-Method": body["method"], "Mcp-Name": tool})
    for name, value in (headers or {}).items():
        if value is None:
            sent.pop(name, None)
        else:
            sent[name] = value
    headers = sent
    conn = http.client.HTTPConnection("127.0.0.1", gw["port"], timeout=10, source_address=(source, 0))
    try:
        conn.request("POST", path, body=json.dumps(body), headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _wait_for_audit(gw, count, timeout=5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        lines = _audit(gw)
        if len(lines) >= count or time.monotonic() > deadline:
            return lines


def test_the_audit_log_has_one_line_per_tool_call_with_its_outcome_and_never_the_arguments_or_token(gateway):
    before = len(_audit(gateway))
    secret = "arg-s3cr3t-7f1c"
    calls = [("/mcp/reference-stateless", "echo", 11, None, "ok"),
             ("/mcp/reference-stateless", "broken", "req-12", None, "tool_error"),
             ("/mcp/reference-stateless", "missing", 13, None, "error:-32602"),
             ("/mcp/reference-stateless", "streamed", 14, None, "ok"),
             ("/mcp/reference", "echo", 15, "2026-07-28", "ok"),
             # The same server by an encoded or doubled path: nginx routes it there, and it is audited there.
             ("/mcp/reference%2Dstateless", "echo", 16, None, "ok"),
             ("//mcp/reference-stateless", "echo", 17, None, "ok")]
    for path, tool, rid, protocol, _ in calls:
        status, body = _call(gateway, path, tool, TOKENS["alice"], rid, {"text": secret}, protocol)
        assert status == 200, body
        if tool == "streamed":
            assert b"notifications/progress" in body and b'"result"' in body  # the stream reached the client whole
    # Other methods and requests refused before their body is read (401) are not tool calls to audit, whatever
    # their headers claim.
    assert _post(gateway, "/mcp/reference-stateless", TOKENS["alice"], source="127.0.0.14")[0] == 200
    for protocol in (None, "2026-07-28"):
        assert _call(gateway, "/mcp/reference-stateless", "echo", None, 18, protocol=protocol)[0] == 401
    # A body the gateway cannot parse (a BOM a Python server would accept) is audited as such, and a call the
    # gateway refuses itself (header mismatch) with the error it answered.
    bom = b"\xef\xbb\xbf" + json.dumps({"jsonrpc": "2.0", "id": 19, "method": "tools/call",
                                         "params": {"name": "echo", "arguments": {"text": secret}}}).encode()
    _raw_post(gateway, "/mcp/reference-stateless", TOKENS["alice"], bom, source="127.0.0.14")
    status, _ = _call(gateway, "/mcp/reference-stateless", "echo", TOKENS["alice"], 20, protocol="2026-07-28",
                      headers={"Mcp-Name": "add"})
    assert status == 400
    lines = _wait_for_audit(gateway, before + len(calls) + 2)[before:]
    assert len(lines) == len(calls) + 2, lines
    # Matched by JSON-RPC id, not by order: nginx writes a line after the answer has gone out, so two
    # workers may write consecutive requests' lines in either order.
    by_id = {}
    for line in lines:
        by_id.setdefault(line["rpc_id"], []).append(line)
    assert all(len(same) == 1 for same in by_id.values()), lines
    for path, tool, rid, protocol, outcome in calls:
        line = by_id.pop(json.dumps(rid), [None])[0]
        assert line is not None, (rid, lines)
        assert line["server"] == path.rsplit("/", 1)[1].replace("%2D", "-") and line["tool"] == tool, line
        assert line["rpc_id"] == json.dumps(rid) and line["outcome"] == outcome, line
        assert line["client_id"] == "alice" and line["status"] == 200 and line["upstream"], line
        assert line["protocol_version"] == (protocol or "") and line["remote_addr"] == "127.0.0.14"
        assert isinstance(line["duration"], float) and re.match(r"^[0-9a-f]{32}$", line["request_id"])
    mismatch = by_id.pop("20", [None])[0]
    assert mismatch is not None and len(by_id) == 1, lines
    unparsed = next(iter(by_id.values()))[0]
    assert (unparsed["server"], unparsed["tool"], unparsed["client_id"]) == ("reference-stateless", "<unparsed>",
                                                                            "alice")
    assert (mismatch["tool"], mismatch["rpc_id"], mismatch["status"], mismatch["outcome"]) == (
        "echo", "20", 400, "error:-32020")
    text = (gateway["dir"] / "audit.json").read_text()
    assert secret not in text and all(token not in text for token in TOKENS.values())


def _b64(text: str) -> str:
    import base64
    return "=?base64?" + base64.b64encode(text.encode()).decode() + "?="


@pytest.mark.parametrize(
    ("headers", "method", "message"),
    [
        ({"Mcp-Method": "tools/list"}, None, "Mcp-Method header does not match the request body's method"),
        ({"Mcp-Method": None}, None, "Mcp-Method header does not match"),
        ({"Mcp-Name": "add"}, None, "Mcp-Name header does not match the request body's name"),
        ({"Mcp-Name": None}, None, "Mcp-Name header does not match"),
        ({"Mcp-Name": _b64("add")}, None, "Mcp-Name header does not match"),
        ({"Mcp-Name": "=?base64?ZWNobw?=", }, None, "Mcp-Name header does not match"),  # not canonical: no padding
        ({"MCP-Protocol-Version": "2025-11-25"}, None, "MCP-Protocol-Version header does not match"),
        ({"MCP-Protocol-Version": None}, None, "MCP-Protocol-Version header does not match"),
        ({"Mcp-Name": None, "Mcp-Method": "prompts/get"}, "prompts/get", "Mcp-Name header does not match"),
    ],
    ids=["method-differs", "method-missing", "name-differs", "name-missing-on-tools-call", "base64-name-differs",
         "base64-not-canonical", "version-differs", "version-missing", "name-missing-on-prompts-get"],
)
def test_a_2026_request_whose_headers_disagree_with_its_body_gets_400_header_mismatch(gateway, headers, method, message):
    before = _backend_requests(gateway)
    status, body = _call(gateway, "/mcp/reference-stateless", "echo", TOKENS["alice"], 41, protocol="2026-07-28",
                         headers=headers, method=method, source="127.0.0.15")
    assert status == 400, body
    answer = json.loads(body)
    assert answer["id"] == 41 and answer["error"]["code"] == -32020 and message in answer["error"]["message"], answer
    assert _backend_requests(gateway) == before  # refused at the gateway


def test_matching_headers_plain_or_base64_pass_and_2025_requests_and_param_headers_are_untouched(gateway):
    for server in gateway["backends"]:
        server.seen.clear()
    ok = [
        _call(gateway, "/mcp/reference-stateless", "echo", TOKENS["alice"], 51, protocol="2026-07-28",
              source="127.0.0.16"),
        _call(gateway, "/mcp/reference-stateless", "echo", TOKENS["alice"], 52, protocol="2026-07-28",
              headers={"Mcp-Name": _b64("echo"), "Mcp-Param-Region": "=?base64?IHBhZGRlZCA=?="}, source="127.0.0.16"),
        # A non-ASCII tool name, as a client must send it.
        _call(gateway, "/mcp/reference-stateless", "wetter-für-köln", TOKENS["alice"], 53, protocol="2026-07-28",
              headers={"Mcp-Name": _b64("wetter-für-köln")}, source="127.0.0.16"),
        # 2025-era: no envelope, no headers; the server answers it.
        _call(gateway, "/mcp/reference-stateless", "echo", TOKENS["alice"], 54, source="127.0.0.16"),
        # The sessioned server, pinned or not, is checked the same way.
        _call(gateway, "/mcp/reference", "echo", TOKENS["alice"], 55, protocol="2026-07-28", source="127.0.0.16"),
    ]
    assert [status for status, _ in ok] == [200] * 5, ok
    seen = [headers for server in gateway["backends"] for headers in server.seen]
    assert len(seen) == 5
    assert any(h.get("Mcp-Param-Region") == "=?base64?IHBhZGRlZCA=?=" for h in seen), seen
    sid = _post(gateway, "/mcp/reference", TOKENS["alice"], source="127.0.0.16")[1]["mcp-session-id"]
    status, body = _call(gateway, "/mcp/reference", "echo", TOKENS["alice"], 56, protocol="2026-07-28",
                         headers={"Mcp-Session-Id": sid, "Mcp-Name": "add"}, source="127.0.0.16")
    assert status == 400 and json.loads(body)["error"]["code"] == -32020, body


def _raw_post(gw, path, token, data: bytes, source="127.0.0.17", extra=None):
    conn = http.client.HTTPConnection("127.0.0.1", gw["port"], timeout=10, source_address=(source, 0))
    try:
        conn.request("POST", path, body=data, headers={"Content-Type": "application/json",
                                                       "Authorization": f"Bearer {token}", **(extra or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_a_client_with_tool_rules_calls_only_the_tools_listed_for_each_server(gateway):
    before = _backend_requests(gateway)
    # Allowed: echo on the stateless server (both protocol generations), any tool on the sessioned one.
    for protocol in (None, "2026-07-28"):
        assert _call(gateway, "/mcp/reference-stateless", "echo", CAROL, 61, protocol=protocol,
                     source="127.0.0.17")[0] == 200
    assert _call(gateway, "/mcp/reference", "anything", CAROL, 62, source="127.0.0.17")[0] == 200
    allowed = _backend_requests(gateway)
    assert allowed == before + 3
    # Refused at the gateway with a JSON-RPC error naming the tool, for either protocol generation.
    for protocol in (None, "2026-07-28"):
        status, body = _call(gateway, "/mcp/reference-stateless", "missing", CAROL, 63, protocol=protocol,
                             source="127.0.0.17")
        answer = json.loads(body)
        assert status == 403 and answer["id"] == 63 and answer["error"]["code"] == -32003, body
        assert '"missing"' in answer["error"]["message"]
    # A batch hiding a forbidden call, a body the gateway cannot parse (a BOM a Python server would accept),
    # and one past the in-memory buffer: refused, never passed on unchecked.
    batch = json.dumps([{"jsonrpc": "2.0", "id": 64, "method": "tools/call", "params": {"name": "echo"}},
                        {"jsonrpc": "2.0", "id": 65, "method": "tools/call", "params": {"name": "missing"}}])
    status, body = _raw_post(gateway, "/mcp/reference-stateless", CAROL, batch.encode())
    assert status == 403 and json.loads(body)["id"] == 65, body
    bom = b"\xef\xbb\xbf" + json.dumps({"jsonrpc": "2.0", "id": 66, "method": "tools/call",
                                         "params": {"name": "missing"}}).encode()
    status, body = _raw_post(gateway, "/mcp/reference-stateless", CAROL, bom)
    assert status == 400 and json.loads(body)["error"]["code"] == -32700, body
    # Bodies up to 1m are read whole in memory (client_body_buffer_size) and checked like any other.
    status, body = _call(gateway, "/mcp/reference-stateless", "echo", CAROL, 68, {"text": "y" * 40_000},
                         source="127.0.0.17")
    assert status == 200, body
    allowed += 1
    padded = json.dumps({"jsonrpc": "2.0", "id": 67, "method": "tools/call",
                         "params": {"name": "missing", "arguments": {"pad": "x" * 600_000}}}).encode()
    status, body = _raw_post(gateway, "/mcp/reference-stateless", CAROL, padded)
    assert status == 403 and json.loads(body)["id"] == 67, body
    # Past 1m: nginx's own 413, for every client.
    huge = json.dumps({"jsonrpc": "2.0", "id": 69, "method": "tools/call",
                       "params": {"name": "echo", "arguments": {"pad": "x" * 1_100_000}}}).encode()
    for who in (CAROL, TOKENS["alice"]):
        assert _raw_post(gateway, "/mcp/reference-stateless", who, huge)[0] == 413
    assert _backend_requests(gateway) == allowed
    # Clients without rules are not affected.
    status, _ = _raw_post(gateway, "/mcp/reference-stateless", TOKENS["alice"], padded)
    assert status == 200
