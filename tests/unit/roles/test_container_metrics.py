"""monitoring_agent's container metrics collector, against a fake Docker Engine API on a unix socket."""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import threading
from pathlib import Path

import pytest
from script_loader import load_script

SCRIPT = Path(__file__).resolve().parents[3] / "roles/monitoring_agent/files/fleetops-container-metrics"


cm = load_script(SCRIPT, "fleetops_container_metrics")

RUNNING = {
    "Id": "aaa", "Name": "/mcp-reference-1", "RestartCount": 3,
    "Config": {"Image": "fleetops/mcp-reference:1.0.0",
               "Labels": {"org.fleetops.mcp.server": "reference", "org.fleetops.mcp.replica": "1"}},
    "State": {"Running": True, "OOMKilled": False, "StartedAt": "2026-12-01T10:00:00.5Z",
              "Health": {"Status": "healthy"}},
}
STOPPED = {
    "Id": "bbb", "Name": "/other", "RestartCount": 0, "Config": {"Image": "x:1", "Labels": None},
    "State": {"Running": False, "OOMKilled": True, "StartedAt": "0001-01-01T00:00:00Z"},
}
STATS = {"aaa": {"cpu_stats": {"cpu_usage": {"total_usage": 2_500_000_000}},
                 "memory_stats": {"usage": 50_000_000, "stats": {"inactive_file": 10_000_000}}}}


def samples(text):
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_render_reports_state_restarts_health_and_usage():
    got = samples(cm.render([STOPPED, RUNNING], STATS, 1000.0))
    ref = 'name="mcp-reference-1",image="fleetops/mcp-reference:1.0.0",mcp_server="reference",replica="1"'
    other = 'name="other",image="x:1",mcp_server="",replica=""'
    assert got["fleetops_container_running{%s}" % ref] == 1
    assert got["fleetops_container_running{%s}" % other] == 0
    assert got["fleetops_container_restarts_total{%s}" % ref] == 3
    assert got["fleetops_container_healthy{%s}" % ref] == 1
    assert "fleetops_container_healthy{%s}" % other not in got  # no health check, no series
    assert got["fleetops_container_oom_killed{%s}" % other] == 1
    assert got["fleetops_container_started_timestamp_seconds{%s}" % ref] == pytest.approx(1796119200.5)
    assert got["fleetops_container_started_timestamp_seconds{%s}" % other] == 0
    assert got["fleetops_container_cpu_seconds_total{%s}" % ref] == 2.5
    assert got["fleetops_container_memory_usage_bytes{%s}" % ref] == 40_000_000
    assert got["fleetops_container_metrics_timestamp_seconds"] == 1000


def test_label_values_are_escaped():
    odd = dict(RUNNING, Name='/we"ird\\name')
    text = cm.render([odd], {}, 1.0)
    assert 'name="we\\"ird\\\\name"' in text


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict = {}

    def do_GET(self):  # noqa: N802 - http.server's naming
        body = self.routes.get(self.path)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

    def address_string(self):
        return "unix"


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture()
def docker_api(tmp_path):
    path = str(tmp_path / "docker.sock")
    _Handler.routes = {
        "/containers/json?all=1": [{"Id": "aaa"}, {"Id": "bbb"}, {"Id": "gone"}],
        "/containers/aaa/json": RUNNING,
        "/containers/bbb/json": STOPPED,
        "/containers/aaa/stats?stream=false&one-shot=true": STATS["aaa"],
    }
    server = _UnixServer(path, _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()


def test_main_writes_the_textfile_atomically(docker_api, tmp_path):
    output = tmp_path / "fleetops_containers.prom"
    assert cm.main(["--socket", docker_api, "--output", str(output)]) == 0
    got = samples(output.read_text())
    assert sum(1 for k in got if k.startswith("fleetops_container_running{")) == 2  # "gone" vanished: skipped
    assert oct(os.stat(output).st_mode & 0o777) == "0o644"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".fleetops_containers.")]


def test_main_fails_without_docker_and_keeps_the_old_file(tmp_path, capsys):
    output = tmp_path / "fleetops_containers.prom"
    output.write_text("old\n")
    assert cm.main(["--socket", str(tmp_path / "none.sock"), "--output", str(output)]) == 1
    assert output.read_text() == "old\n"
    assert "cannot read the Docker API" in capsys.readouterr().err
