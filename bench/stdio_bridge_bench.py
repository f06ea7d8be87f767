#!/usr/bin/env python3
"""Compare stdio-to-HTTP bridges on the same servers and the same load, in one run, on loopback.

Candidates: fleetops-stdio-bridge (this collection), supergateway 4.0.0 (npm; how the role ran stdio
servers before), mcp-proxy 0.13.0 (PyPI), and, as the yardstick, the reference HTTP server with no
bridge. Servers: mcp-server-time (PyPI, both protocol generations) and
@modelcontextprotocol/server-everything (npm, the handshake only).

Loads (each N workers for S seconds after a warm-up, every worker on its own keep-alive connection):
  sessionless  a 2026-07-28 tools/call per request (what the official SDK client sends by default)
  handshake    each worker opens a 2025-11-25 session, then calls tools/call in it
Memory: resident memory of each candidate's whole process tree (from /proc), idle and under load.
Then 1,000 sessions opened and closed against the fleetops bridge (server-everything): children left
and the bridge's own memory before and after.

Usage: python bench/stdio_bridge_bench.py [--seconds 8] [--workers 8] [--sessions 1000]
Installs what it needs into .cache/bench-stdio (PyPI and npm); prints one Markdown table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("FLEETOPS_CACHE", ROOT / ".cache")) / "bench-stdio"
BRIDGE = ROOT / "roles" / "mcp_server" / "files" / "stdio_bridge" / "fleetops_stdio_bridge.py"
REFERENCE = ROOT / "roles" / "mcp_server" / "files" / "reference_server" / "fleetops_reference_server.py"
TIME_REQS = ROOT / "tests" / "harness" / "mcp-images" / "time" / "requirements.txt"
NPM_PACKAGES = ["supergateway@4.0.0", "@modelcontextprotocol/server-everything@2026.8.31"]
MODERN = "2026-07-28"
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "stdio-bench", "version": "1"}}
TOOLS = {"time": ("get_current_time", {"timezone": "UTC"}), "everything": ("echo", {"message": "bench"}),
         "reference": ("echo", {"text": "bench"})}


# --------------------------------------------------------------------------- #
# Set-up
# --------------------------------------------------------------------------- #


def sh(*argv, cwd=None):
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def setup():
    CACHE.mkdir(parents=True, exist_ok=True)
    for name, reqs in (("time", ["-r", str(TIME_REQS)]), ("mcp-proxy", ["mcp-proxy==0.13.0"])):
        venv = CACHE / name
        if not (venv / ".done").exists():
            sh(sys.executable, "-m", "venv", "--clear", str(venv))
            sh(str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *reqs)
            (venv / ".done").write_text("ok")
    npm = CACHE / "npm"
    if not (npm / ".done").exists() or (npm / ".done").read_text() != " ".join(NPM_PACKAGES):
        npm.mkdir(exist_ok=True)
        (npm / "package.json").write_text('{"name": "stdio-bench", "private": true}')
        sh("npm", "install", "--no-audit", "--no-fund", "--loglevel=error", *NPM_PACKAGES, cwd=npm)
        (npm / ".done").write_text(" ".join(NPM_PACKAGES))


def server_command(server):
    if server == "time":
        return [str(CACHE / "time" / "bin" / "mcp-server-time"), "--local-timezone", "UTC"]
    return [str(CACHE / "npm" / "node_modules" / ".bin" / "mcp-server-everything"), "stdio"]


def candidates():
    """(label, version, argv builder(port, server)) for every bridge and the yardstick."""
    return [
        ("fleetops-stdio-bridge", "1.0.0", lambda port, server: [
            sys.executable, str(BRIDGE), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
            "--max-sessions", "64", "--", *server_command(server)]),
        ("supergateway", "4.0.0", lambda port, server: [
            "node", str(CACHE / "npm" / "node_modules" / "supergateway" / "dist" / "index.js"),
            "--stdio", shlex.join(server_command(server)), "--outputTransport", "streamableHttp",
            "--port", str(port), "--streamableHttpPath", "/mcp", "--stateful", "--sessionTimeout", "600000",
            "--logLevel", "none"]),
        ("mcp-proxy", "0.13.0", lambda port, server: [
            str(CACHE / "mcp-proxy" / "bin" / "mcp-proxy"), "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "WARNING", "--", *server_command(server)]),
    ]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- #
# Process-tree memory
# --------------------------------------------------------------------------- #


def _ppid_map():
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                out[int(entry)] = int(fields[1])
            except (OSError, IndexError):
                pass
    return out


def tree(pid):
    parents = _ppid_map()
    found, frontier = {pid}, [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parents.items():
            if parent == current and child not in found:
                found.add(child)
                frontier.append(child)
    return found


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_mib(pid):
    return sum(rss_kib(p) for p in tree(pid)) / 1024.0


# --------------------------------------------------------------------------- #
# Clients
# --------------------------------------------------------------------------- #


class Conn:
    def __init__(self, port, timeout=60):
        self.port, self.timeout = port, timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.sid = None

    def post(self, body, headers):
        all_headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        all_headers.update(headers)
        if self.sid:
            all_headers["Mcp-Session-Id"] = self.sid
        try:
            self.conn.request("POST", "/mcp", json.dumps(body), all_headers)
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            raise
        sid = resp.getheader("Mcp-Session-Id")
        if sid:
            self.sid = sid
        if resp.getheader("Content-Type", "").startswith("text/event-stream"):
            frames = [json.loads(x[5:]) for x in data.decode().splitlines() if x.startswith("data:")]
            return resp.status, (frames[-1] if frames else {})
        return resp.status, (json.loads(data) if data else {})

    def initialize(self):
        status, reply = self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "stdio-bench", "version": "1"}}},
            {})
        if status != 200 or "result" not in reply:
            raise RuntimeError("initialize: %s %s" % (status, reply))
        self.version = reply["result"].get("protocolVersion", "2025-11-25")
        self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, {"MCP-Protocol-Version": self.version})

    def delete(self):
        if self.sid:
            try:
                self.conn.request("DELETE", "/mcp", headers={"Mcp-Session-Id": self.sid})
                self.conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                pass
            self.sid = None

    def call(self, mode, tool, arguments, rpc_id):
        if mode == "sessionless":
            body = {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call",
                    "params": {"name": tool, "arguments": arguments, "_meta": ENVELOPE}}
            headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": tool}
        else:
            body = {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}
            headers = {"MCP-Protocol-Version": self.version}
        status, reply = self.post(body, headers)
        return status == 200 and "result" in reply and not reply["result"].get("isError")


def load(port, mode, server, workers, seconds, sampler_pid):
    """Run the load; returns latencies (ms), failures, calls/s, peak tree RSS (MiB)."""
    tool, arguments = TOOLS[server]
    latencies, failures, lock = [], [0], threading.Lock()
    # Every worker opens its session (a handshake load starts a server process per session with some
    # bridges) before the clock starts; then 1.5 s of warm-up, then `seconds` measured.
    opened = threading.Barrier(workers + 1)
    clock = {"start_at": float("inf"), "stop_at": float("inf")}
    peak = [0.0]

    def worker(n):
        conn = Conn(port)
        mine, bad, i = [], 0, 0
        try:
            try:
                if mode == "handshake":
                    conn.initialize()
            finally:
                opened.wait()
            while time.monotonic() < clock["stop_at"]:
                i += 1
                started = time.monotonic()
                try:
                    ok = conn.call(mode, tool, arguments, i)
                except (OSError, http.client.HTTPException, ValueError):
                    ok = False
                if started >= clock["start_at"]:
                    mine.append((time.monotonic() - started) * 1000.0)
                    bad += 0 if ok else 1
        except (OSError, RuntimeError, http.client.HTTPException):
            bad += 1
        finally:
            conn.delete()
        with lock:
            latencies.extend(mine)
            failures[0] += bad

    def sample():
        while time.monotonic() < clock["stop_at"]:
            peak[0] = max(peak[0], tree_rss_mib(sampler_pid))
            time.sleep(0.5)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    opened.wait()
    clock["start_at"] = time.monotonic() + 1.5
    clock["stop_at"] = clock["start_at"] + seconds
    sampler = threading.Thread(target=sample)
    sampler.start()
    for thread in threads + [sampler]:
        thread.join()
    return latencies, failures[0], len(latencies) / seconds, peak[0]


def pct(values, q):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def start(argv, port):
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.2)
    stop(proc)
    raise RuntimeError("did not listen: %s" % argv[:3])


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def first_call(port, mode, server):
    """One call, so that shared children exist before idle memory is read; False when unsupported."""
    conn = Conn(port)
    try:
        if mode == "handshake":
            conn.initialize()
        ok = conn.call(mode, *TOOLS[server], 1)
        conn.delete()
        return ok
    except (OSError, RuntimeError, http.client.HTTPException, ValueError):
        return False


def child_rss_mib(root):
    """The resident memory of the largest server process below the candidate's own process."""
    return max((rss_kib(p) for p in tree(root) if p != root), default=0) / 1024.0


# --------------------------------------------------------------------------- #
# Runs
# --------------------------------------------------------------------------- #


def measure(args):
    rows = []
    plan = [(label, version, build, server, mode)
            for server in ("time", "everything")
            for mode in ("sessionless", "handshake")
            for label, version, build in candidates()]
    plan.append(("reference HTTP server (no bridge)", "1.0.0", lambda port, _server: [
        sys.executable, str(REFERENCE), "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING"],
        "reference", "sessionless"))
    plan.append(plan[-1][:4] + ("handshake",))
    for label, version, build, server, mode in plan:
        port = free_port()
        proc = start(build(port, server), port)
        try:
            supported = first_call(port, mode, server)
            time.sleep(2)
            idle = tree_rss_mib(proc.pid)
            child = child_rss_mib(proc.pid)
            if not supported:
                rows.append(dict(candidate=label, version=version, server=server, load=mode, supported=False,
                                 idle_mib=idle))
                print("  %-34s %-10s %-11s not served (SDK clients fall back to the handshake)" % (label, server, mode),
                      flush=True)
                continue
            lat, failed, rate, peak = load(port, mode, server, args.workers, args.seconds, proc.pid)
            rows.append(dict(candidate=label, version=version, server=server, load=mode, supported=True,
                             p50=pct(lat, 0.5), p95=pct(lat, 0.95), rate=rate, calls=len(lat), failed=failed,
                             idle_mib=idle, peak_mib=peak, child_mib=child))
            print("  %-34s %-10s %-11s p50 %8.2f ms  %7.1f calls/s  %d failed" % (
                label, server, mode, pct(lat, 0.5), rate, failed), flush=True)
        finally:
            stop(proc)
    return rows


def stateless_idle():
    """One idle stateless replica of mcp-server-time: the bridge and its one shared child."""
    port = free_port()
    proc = start([sys.executable, str(BRIDGE), "--host", "127.0.0.1", "--port", str(port), "--stateless",
                  "--log-level", "warning", "--", *server_command("time")], port)
    try:
        first_call(port, "sessionless", "time")
        time.sleep(2)
        pids = tree(proc.pid) - {proc.pid}
        return {"tree_mib": tree_rss_mib(proc.pid), "child_mib": max(rss_kib(p) for p in pids) / 1024.0,
                "bridge_mib": rss_kib(proc.pid) / 1024.0}
    finally:
        stop(proc)


def session_churn(total, workers=4):
    """Open and close `total` sessions against the sessioned fleetops bridge (server-everything)."""
    port = free_port()
    proc = start([sys.executable, str(BRIDGE), "--host", "127.0.0.1", "--port", str(port), "--max-sessions", "64",
                  "--log-level", "warning", "--", *server_command("everything")], port)
    try:
        first_call(port, "sessionless", "everything")
        time.sleep(1)
        before = {"bridge_mib": rss_kib(proc.pid) / 1024.0, "children": len(tree(proc.pid)) - 1}
        counter, failures, lock = [0], [0], threading.Lock()
        started = time.monotonic()

        def worker():
            while True:
                with lock:
                    if counter[0] >= total:
                        return
                    counter[0] += 1
                conn = Conn(port)
                try:
                    conn.initialize()
                    if not conn.call("handshake", *TOOLS["everything"], 1):
                        raise RuntimeError("call failed")
                except (OSError, RuntimeError, http.client.HTTPException, ValueError):
                    with lock:
                        failures[0] += 1
                finally:
                    conn.delete()
                    conn.conn.close()
        threads = [threading.Thread(target=worker) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        time.sleep(3)
        after = {"bridge_mib": rss_kib(proc.pid) / 1024.0, "children": len(tree(proc.pid)) - 1}
        return {"sessions": total, "failed": failures[0], "seconds": elapsed, "before": before, "after": after}
    finally:
        stop(proc)


def table(rows, idle, churn, args):
    out = ["| candidate | server | load (%d workers) | p50 ms | p95 ms | calls/s | failed | tree RSS idle / under load MiB |"
           % args.workers, "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        name = "%s %s" % (r["candidate"], r["version"])
        if not r["supported"]:
            out.append("| %s | %s | %s | not served (clients fall back) | | | | %.0f / |" % (
                name, r["server"], r["load"], r["idle_mib"]))
            continue
        out.append("| %s | %s | %s | %.2f | %.2f | %.1f | %d | %.0f / %.0f |" % (
            name, r["server"], r["load"], r["p50"], r["p95"], r["rate"], r["failed"], r["idle_mib"], r["peak_mib"]))
    ours = {(r["server"], r["load"]): r for r in rows if r["candidate"] == "fleetops-stdio-bridge" and r["supported"]}
    ref = {r["load"]: r for r in rows if r["candidate"].startswith("reference") and r["supported"]}
    lines = ["", "| figure | value |", "| --- | --- |"]
    for load_name in ("sessionless", "handshake"):
        mine, yard = ours.get(("time", load_name)), ref.get(load_name)
        if mine and yard:
            lines.append("| mcp-server-time behind the bridge vs the reference HTTP server, %s "
                         "| p50 %.2fx, throughput %.0f%% |"
                         % (load_name, mine["p50"] / yard["p50"], 100.0 * mine["rate"] / yard["rate"]))
    hs = ours.get(("time", "handshake"))
    if hs:
        extra = (hs["peak_mib"] - hs["idle_mib"]) / args.workers
        lines.append("| each extra session (mcp-server-time) | %.0f MiB (one server process: %.0f MiB) |"
                     % (extra, hs["child_mib"]))
    lines.append("| idle stateless replica (mcp-server-time) "
                 "| %.0f MiB = bridge %.0f + child %.0f; bound 1.5 x child + 40 = %.0f |"
                 % (idle["tree_mib"], idle["bridge_mib"], idle["child_mib"], 1.5 * idle["child_mib"] + 40))
    lines.append("| %d sessions opened and closed (server-everything, 4 workers) "
                 "| %d failed, %.0f s; children %d before, %d after; bridge %.1f -> %.1f MiB |"
                 % (churn["sessions"], churn["failed"], churn["seconds"], churn["before"]["children"],
                    churn["after"]["children"], churn["before"]["bridge_mib"], churn["after"]["bridge_mib"]))
    return "\n".join(out + lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=1000)
    args = parser.parse_args()
    setup()
    print("machine: %d CPUs; every figure below from this one run" % os.cpu_count(), flush=True)
    rows = measure(args)
    idle = stateless_idle()
    churn = session_churn(args.sessions)
    result = table(rows, idle, churn, args)
    (CACHE / "results.json").write_text(json.dumps({"rows": rows, "idle": idle, "churn": churn}, indent=1))
    print()
    print(result)


if __name__ == "__main__":
    main()
