"""The gateway metrics (issue 19 item 6): the monitoring_agent role's mtail program, run by Debian's mtail on audit
log lines in nginx_lb's format, serves per-server tool calls by outcome and a Prometheus histogram of their
durations that the alert rules can read. Skipped where mtail is not installed (tests/harness/setup-host.sh
installs it)."""

from __future__ import annotations

import json
import pathlib
import shutil
import socket
import subprocess
import time
import urllib.request

import jinja2
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
PROGRAM = ROOT / "roles" / "monitoring_agent" / "templates" / "fleetops_gateway.mtail.j2"


def program() -> str:
    source = PROGRAM.read_text().replace("{{ ansible_managed | comment }}", "# managed")
    return jinja2.Template(source, keep_trailing_newline=True).render()


def line(server, tool, outcome, status=200, duration=0.01, rpc_id='"a"'):
    """An audit line as nginx_lb's log_format writes it (escape=json)."""
    record = {"time": "2026-12-05T12:00:00+00:00", "request_id": "0" * 32, "client_id": "agent",
              "remote_addr": "10.0.0.9", "server": server, "tool": tool, "rpc_id": rpc_id, "outcome": outcome,
              "status": status, "duration": duration, "upstream": "10.0.0.11:18080", "protocol_version": ""}
    body = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    # nginx writes the duration with three decimals and the status unquoted, as json.dumps does for numbers.
    return body.replace(f'"duration":{duration}', '"duration":%.3f' % duration)


@pytest.fixture(scope="module")
def mtail(tmp_path_factory):
    if not shutil.which("mtail"):
        pytest.skip("mtail is not installed here")
    work = tmp_path_factory.mktemp("mtail")
    (work / "progs").mkdir()
    (work / "progs" / "fleetops_gateway.mtail").write_text(program())
    log = work / "audit.json"
    log.write_text("")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(["mtail", "--progs", str(work / "progs"), "--logs", str(log), "--address", "127.0.0.1",
                                "--port", str(port), "--emit_prog_label=false", "--logtostderr"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mtail did not start: %s" % process.stderr.read().decode()[-2000:]) from None
                time.sleep(0.1)
        yield {"log": log, "url": f"http://127.0.0.1:{port}/metrics"}
    finally:
        process.terminate()
        process.wait(timeout=10)


def metrics(url: str) -> dict:
    out = {}
    for text in urllib.request.urlopen(url, timeout=5).read().decode().splitlines():
        if text.startswith("fleetops_gateway_"):
            name, value = text.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_the_program_compiles(tmp_path):
    if not shutil.which("mtail"):
        pytest.skip("mtail is not installed here")
    (tmp_path / "fleetops_gateway.mtail").write_text(program())
    result = subprocess.run(["mtail", "--compile_only", "--progs", str(tmp_path / "fleetops_gateway.mtail")],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    # A broken program is refused the same way (the role's validate: runs this check).
    (tmp_path / "fleetops_gateway.mtail").write_text(program().replace("counter ", "kounter ", 1))
    result = subprocess.run(["mtail", "--compile_only", "--progs", str(tmp_path / "fleetops_gateway.mtail")],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode != 0


def test_calls_are_counted_by_server_tool_and_outcome_with_a_histogram_of_their_durations(mtail):
    lines = [line("time", "get_current_time", "ok", duration=0.02),
             line("time", "get_current_time", "tool_error", duration=0.03),
             line("time", "no-such-tool", "error:-32602", duration=0.01),
             line("time", "made-up-by-a-client", "error:-32003", status=403, duration=0.0),
             line("everything", "trigger-long-running-operation", "ok", duration=3.2),
             line("everything", 'we"ird', "unknown", duration=0.5),
             line("everything", "echo", "", status=502, duration=1.5)]
    with mtail["log"].open("a") as handle:
        handle.write("\n".join(lines) + "\n")
        handle.write("not json at all\n")  # ignored
    deadline = time.monotonic() + 10
    while True:
        got = metrics(mtail["url"])
        if got.get('fleetops_gateway_tool_call_duration_seconds_count{server="everything"}') == 3 or \
                time.monotonic() > deadline:
            break
        time.sleep(0.2)
    calls = {k: v for k, v in got.items() if k.startswith("fleetops_gateway_tool_calls_total")}
    assert calls == {
        'fleetops_gateway_tool_calls_total{outcome="ok",server="time",tool="get_current_time"}': 1,
        'fleetops_gateway_tool_calls_total{outcome="tool_error",server="time",tool="get_current_time"}': 1,
        # Calls no server answered are not named: a client cannot grow the series with made-up tools.
        'fleetops_gateway_tool_calls_total{outcome="error",server="time",tool="-"}': 2,
        'fleetops_gateway_tool_calls_total{outcome="ok",server="everything",tool="trigger-long-running-operation"}': 1,
        'fleetops_gateway_tool_calls_total{outcome="unknown",server="everything",tool="-"}': 2,
    }, calls
    bucket = 'fleetops_gateway_tool_call_duration_seconds_bucket{le="%s",server="everything"}'
    # Cumulative buckets, every one present from the first call on (histogram_quantile needs them all).
    assert [got[bucket % le] for le in ("0.05", "0.1", "0.25", "0.5", "1", "2", "5", "10", "30", "+Inf")] == \
        [0, 0, 0, 1, 1, 2, 3, 3, 3, 3]
    assert got['fleetops_gateway_tool_call_duration_seconds_count{server="time"}'] == 4
    assert got['fleetops_gateway_tool_call_duration_seconds_sum{server="everything"}'] == pytest.approx(5.2)
