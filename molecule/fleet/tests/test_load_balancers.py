"""Behaviour of fleetops.mcp.nginx_lb: routing, TLS, tokens, limits, session affinity across load
balancers, streaming, passive health, safe reloads. Every request goes over TLS with a client token."""

from __future__ import annotations

import collections
import http.client
import json
import time

import pytest

from fleetops_testlib import container_host, run_playbook, run_playbooks, wait_healthy
from lbha import (
    LBS, VIP, lb_host, nginx_master_pid, raw, raw_session, sdk_call, session,
    tls_context, token, url, whoami,
)

ROUTES = [("reference", "whoami"), ("reference-stateless", "whoami"), ("time", "get_current_time")]
STATELESS = "/mcp/reference-stateless"


@pytest.mark.parametrize("lb", LBS)
@pytest.mark.parametrize("protocol", ["handshake", "sessionless"])
@pytest.mark.parametrize(("server", "tool"), ROUTES, ids=[r[0] for r in ROUTES])
def test_every_server_answers_through_each_load_balancer(lb, protocol, server, tool):
    arguments = {"timezone": "UTC"} if tool == "get_current_time" else {}
    result = sdk_call(lb, server, tool, arguments, protocol=protocol, timeout=15)
    assert result["isError"] is False


def test_session_id_is_tagged_and_fifty_calls_land_on_one_backend():
    c = session()
    assert c.session_id.startswith("b") and c.session_id[11] == "."
    answers = collections.Counter(whoami(c) for _ in range(50))
    assert len(answers) == 1, answers
    c.close()


def test_new_sessions_spread_over_backends():
    seen = set()
    for _ in range(12):
        c = session("lb-1")
        seen.add(whoami(c))
        c.close()
    assert len(seen) >= 3, seen  # four sessioned replicas in all


def test_a_session_continues_through_the_other_load_balancer():
    c = session("lb-1")
    backend = whoami(c)
    # The same session, its requests now sent to the other load balancer: what a client sees after the
    # VIP moves.
    c.via(url("lb-2"))
    assert {whoami(c) for _ in range(20)} == {backend}
    assert c.last_status == 200


def test_progress_events_stream_before_the_tool_finishes():
    conn = http.client.HTTPSConnection(VIP, 443, timeout=30, context=tls_context())
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "Authorization": f"Bearer {token()}"}
    conn.request("POST", "/mcp/reference", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}), headers)
    response = conn.getresponse()
    headers.update({"Mcp-Session-Id": response.getheader("Mcp-Session-Id"), "MCP-Protocol-Version": "2025-11-25"})
    response.read()
    conn.request("POST", "/mcp/reference", json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}), headers)
    conn.getresponse().read()
    start = time.monotonic()
    conn.request("POST", "/mcp/reference", json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "slow_count", "arguments": {"steps": 3, "delay": 1}, "_meta": {"progressToken": "p"}}}), headers)
    response = conn.getresponse()
    arrivals = []
    while True:
        line = response.fp.readline().decode()
        if not line:
            break
        if line.startswith("data:"):
            message = json.loads(line[5:])
            arrivals.append((message.get("method", "result"), time.monotonic() - start))
            if "result" in message:
                break
    progress = [t for kind, t in arrivals if kind == "notifications/progress"]
    result_at = arrivals[-1][1]
    assert len(progress) == 3 and arrivals[-1][0] == "result"
    # The first event arrives about two seconds before the result: not buffered.
    assert result_at - progress[0] > 1.5, arrivals


def test_a_get_event_stream_stays_open_through_the_vip():
    # A session opened by hand: a client's own GET stream would be the session's one stream.
    carried = raw_session()
    conn = http.client.HTTPSConnection(VIP, 443, timeout=10, context=tls_context())
    conn.request("GET", "/mcp/reference", headers={"Accept": "text/event-stream", **carried})
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
    # The stream stays open (no early close) for the 3 s we listen.
    conn.sock.settimeout(3)
    start = time.monotonic()
    try:
        while time.monotonic() - start < 3:
            assert response.fp.read1(1024), "the event stream was closed"
    except TimeoutError:
        pass
    assert time.monotonic() - start >= 2.9
    conn.close()
    # The session is still fine.
    status, _, body = raw("POST", "/mcp/reference", {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                                     "params": {"name": "whoami", "arguments": {}}}, carried)
    assert status == 200 and b"/mcp-reference-" in body, (status, body[:300])


def test_a_session_on_a_stopped_backend_gets_404_and_a_new_session_works():
    c = session("lb-1")
    backend = whoami(c)  # "<docker host>/<container>"
    host, container = backend.split("/")
    docker = container_host(host)
    assert docker.run(f"docker stop -t 1 {container}").rc == 0
    try:
        start = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017 - the SDK's error; the status below is the check
            whoami(c)
        assert c.last_status == 404
        assert time.monotonic() - start < 2
        fresh = session("lb-2")
        assert whoami(fresh) != backend
    finally:
        assert docker.run(f"docker start {container}").rc == 0
    wait_healthy(docker, container)


def test_access_log_is_json_with_request_id_client_upstream_and_session_never_the_token():
    c = session("lb-1")
    whoami(c)
    log = lb_host("lb-1").run("tail -n 20 /var/log/nginx/mcp-access.json").stdout
    records = [json.loads(line) for line in log.strip().splitlines()]
    mine = [r for r in records if r["mcp_session"] == c.session_id]
    assert mine, records[-3:]
    assert all(len(r["request_id"]) == 32 and r["upstream"] and r["client_id"] == "bulk-agent" for r in mine)
    assert {r["tls"] for r in mine} <= {"TLSv1.2", "TLSv1.3"}
    full = lb_host("lb-1").run("cat /var/log/nginx/mcp-access.json /var/log/nginx/error.log").stdout
    assert token() not in full


def test_the_access_log_is_rotated_past_its_size_and_nginx_writes_to_the_new_file():
    lb, log = lb_host("lb-2"), "/var/log/nginx/mcp-access.json"
    # logrotate runs hourly (log_rotation's timer drop-in), not Debian's daily.
    assert "OnCalendar=*-*-* *:00:00" in lb.run("systemctl show -p TimersCalendar logrotate.timer").stdout
    # Past nginx_lb_access_log_max_size (100M): 101 MiB more, as a hole (no disk written).
    assert lb.run(f"truncate -s +101M {log}").rc == 0
    pid = nginx_master_pid("lb-2")
    # What the timer starts, Debian's own unit: every rule in /etc/logrotate.d.
    result = lb.run("systemctl start logrotate.service")
    assert result.rc == 0, result.stderr
    assert lb.file(f"{log}.1").size > 101 * 1024 * 1024
    assert lb.file(log).size < 1024 * 1024 and lb.file(log).user == "www-data"
    # nginx reopened its log (USR1), not restarted: the next request is in the new file.
    c = session("lb-2")
    whoami(c)
    deadline = time.monotonic() + 10
    while c.session_id not in lb.file(log).content_string:
        assert time.monotonic() < deadline, "the request never reached the new access log"
        time.sleep(0.5)
    assert lb.run(f"grep -c {c.session_id} {log}.1").stdout.strip() == "0"
    assert nginx_master_pid("lb-2") == pid
    # keepalived's state log has its rule in the same run (its notify script opens the file per line).
    debug = lb.run("logrotate --debug /etc/logrotate.conf")
    assert "considering log /var/log/fleetops/keepalived-state.json" in debug.stdout + debug.stderr


# Each bad setting: the value and the message that must name it. Every run fails in the preflight
# checks, before any change, so the runs are made side by side (three at a time) by the fixture below
# and each test reads its own; each run is limited to lb-1 (the checks are the same on every load
# balancer, and lb-1's files are the ones compared).
BAD_SETTINGS = [
    ({"nginx_lb_read_timeout": 0}, "nginx_lb_read_timeout must be a whole number from 1 to 86400; got 0"),
    ({"nginx_lb_listen_port": 70000}, "nginx_lb_listen_port must be a whole number from 1 to 65535; got 70000"),
    ({"nginx_lb_status_listen": "localhost"}, "nginx_lb_status_listen must be address:port"),
    ({"nginx_lb_backend_group": "nope"}, "nginx_lb_backend_group 'nope' is not an inventory group with hosts"),
    ({"fleetops_mcp_servers": [{"name": "a", "image": "x:1", "host_port": 9000, "transport": "smoke-signal"}]},
     "mcp server 'a': transport 'smoke-signal' is not one of"),
    ({"nginx_lb_clients": [{"name": "x", "token_sha256": "nothex"}]},
     "client 'x': token_sha256 must be 64 lower-case hex digits"),
    ({"nginx_lb_clients": []}, "nginx_lb_auth is on but nginx_lb_clients is empty"),
    ({"nginx_lb_affinity_key": "too-short-affinity-key"},
     "nginx_lb_affinity_key must be a secret of at least 32 characters"),
    ({"nginx_lb_unauthenticated_burst": -1},
     "nginx_lb_unauthenticated_burst must be a whole number from 0 to 100000; got -1"),
    ({"nginx_lb_tls_source": "files"}, "nginx_lb_tls_certificate_src and nginx_lb_tls_key_src must name files"),
    ({"nginx_lb_tls_subject_alt_names": ["mcp.example.com"]}, "nginx_lb_tls_subject_alt_names entries must look like"),
    ({"nginx_lb_tls_port": 80}, "nginx_lb_tls_port and nginx_lb_listen_port are both 80"),
    ({"keepalived_auth_pass": "far-too-long"}, "keepalived_auth_pass must be 1 to 8 printable characters"),
    ({"keepalived_virtual_ipaddress": "172.30.214.300/24"}, "keepalived_virtual_ipaddress must be an IPv4 address"),
    ({"keepalived_priority": 255}, "keepalived_priority must be a whole number from 1 to 254; got 255"),
    ({"nginx_lb_audit_log": "/var/log/nginx/mcp-access.json"}, "nginx_lb_audit_log must be an absolute file path"),
    ({"nginx_lb_clients": [{"name": "x", "token_sha256": "a" * 64, "tools": {"nope": ["*"]}}]},
     "nginx_lb_clients: tools names the server(s) nope, which fleetops_mcp_servers does not declare"),
    ({"nginx_lb_oauth_issuers": [{"name": "test-issuer", "issuer": "http://issuer.fleetops.test",
                                  "jwks_uri": "https://127.0.0.1:9443/jwks.json"}]},
     "nginx_lb_oauth_issuers[test-issuer]: issuer must be an https:// URL"),
    ({"nginx_lb_oauth_issuers": [{"name": "test-issuer", "issuer": "https://issuer.fleetops.test",
                                  "jwks_uri": "https://127.0.0.1:9443/jwks.json", "algorithms": ["HS256"]}]},
     ("value of algorithms must be one or more of: RS256, RS384, RS512, ES256, ES384. Got no match for: HS256 "
      "found in nginx_lb_oauth_issuers")),
    ({"fleetops_mcp_servers": [{"name": "t", "image": "x:1", "host_port": 18100,
                                "oauth": {"issuers": ["test-issuer"], "audience": "time-server"}}]},
     "mcp server 't': oauth.audience must be an https:// URL"),
    # (time and reference-stateless: the demo clients' tool rules name them)
    ({"fleetops_mcp_servers": [{"name": "time", "image": "x:1", "host_port": 18100, "oauth": {"issuers": ["corp"]}},
                               {"name": "reference-stateless", "image": "x:1", "host_port": 18090, "stateless": True}]},
     "mcp server 'time': oauth.issuers names 'corp', which nginx_lb_oauth_issuers does not declare"),
]
BAD_SETTING_IDS = ["read-timeout-zero", "port-70000", "status-listen-no-port", "unknown-backend-group", "bad-fleet",
                   "bad-client-hash", "auth-without-clients", "short-affinity-key", "unauthenticated-burst",
                   "tls-files-missing", "bad-san", "same-ports",
                   "vrrp-pass-too-long", "bad-vip", "priority-255", "audit-log-is-access-log", "tools-unknown-server",
                   "oauth-issuer-http", "oauth-hs256", "oauth-audience-not-url", "oauth-unknown-issuer"]
LB_FILES = ["/etc/nginx/nginx.conf", "/etc/keepalived/keepalived.conf"]


@pytest.fixture(scope="module")
def bad_setting_runs():
    """The digests of the load balancers' files before, and each bad setting's playbook run."""
    digests = {f: lb_host("lb-1").file(f).sha256sum for f in LB_FILES}
    return digests, run_playbooks({
        case_id: {"playbook": "../../playbooks/load_balancers.yml", "limit": "lb-1", "extra_vars": extra_vars}
        for case_id, (extra_vars, _) in zip(BAD_SETTING_IDS, BAD_SETTINGS, strict=True)})


@pytest.mark.parametrize(("case_id", "message"),
                         [(i, m) for i, (_, m) in zip(BAD_SETTING_IDS, BAD_SETTINGS, strict=True)], ids=BAD_SETTING_IDS)
def test_bad_settings_fail_naming_the_variable_before_any_change(bad_setting_runs, case_id, message):
    digests, results = bad_setting_runs
    result = results[case_id]
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output, output[-3000:]
    assert {f: lb_host("lb-1").file(f).sha256sum for f in LB_FILES} == digests
    assert "demo-vip" not in output and "far-too-long" not in output and "too-short-affinity-key" not in output


def test_a_bad_config_fails_with_the_old_one_serving():
    pid = nginx_master_pid("lb-1")
    digest = lb_host("lb-1").file("/etc/nginx/nginx.conf").sha256sum
    # Limited to the load balancer looked at, as a change tried on one first is.
    result = run_playbook("../../playbooks/load_balancers.yml", limit="lb-1",
                          extra_vars={"nginx_lb_status_listen": "127.0.0.1:99999"})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "nginx" in output and ("invalid port" in output or "emerg" in output), output[-3000:]
    assert lb_host("lb-1").file("/etc/nginx/nginx.conf").sha256sum == digest
    assert nginx_master_pid("lb-1") == pid
    assert whoami(session("lb-1"))


def test_a_config_change_is_applied_by_reload_not_restart():
    pid = nginx_master_pid("lb-2")
    result = run_playbook("../../playbooks/load_balancers.yml", limit="lb-2", extra_vars={"nginx_lb_read_timeout": 1234})
    assert result.returncode == 0, result.stdout[-3000:]
    try:
        assert "proxy_read_timeout 1234s;" in lb_host("lb-2").file("/etc/nginx/nginx.conf").content_string
        assert nginx_master_pid("lb-2") == pid
        assert whoami(session("lb-2"))
    finally:
        assert run_playbook("../../playbooks/load_balancers.yml", limit="lb-2").returncode == 0
