#!/usr/bin/env python3
"""Load balancer benchmark for the running demo (`make demo`, the fleet topology); bench/fleet_bench.py
uses its parts.

Prints, from one run:
  1. tools/call latency (p50, p95) and throughput through the VIP (TLS, token,
     nginx) and straight to one backend, at the same concurrency, and their
     ratios;
  2. the VIP failover under steady load: nginx is stopped on the load balancer
     holding the VIP; the time until calls succeed again and the count of
     failed calls; then nginx is started and the VIP moves back.

Each worker keeps one persistent connection (reopened after an error) and
sends sessionless (2026-07-28) tools/call requests, one HTTP POST per call.
Only the demo's own containers are contacted.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import pathlib
import ssl
import subprocess
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
CACHE = pathlib.Path(os.environ.get("FLEETOPS_CACHE", ROOT / ".cache"))
META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "fleetops-bench", "version": "1"},
}


class Target:
    """Where calls go and which call: by default a sessionless echo; ``handshake`` opens a 2025-11-25
    session per worker connection and calls in it."""

    def __init__(self, scheme: str, host: str, port: int, path: str, token: str | None, ca: str | None,
                 tool: str = "echo", arguments: dict | None = None, expect: bytes = b"bench", handshake: bool = False):
        self.scheme, self.host, self.port, self.path, self.token = scheme, host, port, path, token
        self.context = ssl.create_default_context(cafile=ca) if scheme == "https" else None
        self.tool, self.expect, self.handshake = tool, expect, handshake
        self.arguments = {"text": "bench"} if arguments is None else arguments

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


def _headers(target: Target, session: str | None = None) -> dict:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if target.token:
        headers["Authorization"] = f"Bearer {target.token}"
    if session:
        headers.update({"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"})
    return headers


def open_session(conn: http.client.HTTPConnection, target: Target) -> str:
    """initialize + notifications/initialized; return the session id."""
    conn.request("POST", target.path, headers=_headers(target), body=json.dumps({
        "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "lb_bench", "version": "1"}}}))
    response = conn.getresponse()
    data = response.read()
    session = response.getheader("Mcp-Session-Id")
    if response.status != 200 or not session:
        raise RuntimeError(f"initialize: HTTP {response.status}: {data[:120]!r}")
    conn.request("POST", target.path, headers=_headers(target, session),
                 body=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    conn.getresponse().read()
    return session


def close_session(conn: http.client.HTTPConnection, target: Target, session: str) -> None:
    try:
        conn.request("DELETE", target.path, headers=_headers(target, session))
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        pass


def call(conn: http.client.HTTPConnection, target: Target, request_id: int, session: str | None = None) -> None:
    params = {"name": target.tool, "arguments": target.arguments}
    headers = _headers(target, session)
    if session is None:
        params["_meta"] = META
        headers.update({"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": target.tool})
    conn.request("POST", target.path, headers=headers,
                 body=json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}))
    response = conn.getresponse()
    data = response.read()
    if response.status != 200 or b'"result"' not in data or target.expect not in data or b'"isError":true' in data:
        raise RuntimeError(f"HTTP {response.status}: {data[:120]!r}")


def run_load(target: Target, concurrency: int, duration: float, timeout: float = 2.0, events=None, until=None):
    """Run ``concurrency`` workers for ``duration`` s (or, given the threading.Event ``until``, until
    it is set); ``events`` are (seconds after the start, action) run in order meanwhile.
    Return [(start, latency, ok)]."""
    results: list[tuple[float, float, bool]] = []
    lock = threading.Lock()
    clock = {"stop_at": float("inf") if target.handshake else time.monotonic() + duration}
    # Handshake workers open their sessions first (starting a stdio server's process takes a while);
    # the clock starts when every worker has one, as a client's session would be open before it calls.
    opened = threading.Barrier(concurrency + 1) if target.handshake else None

    def going() -> bool:
        return not until.is_set() if until is not None else time.monotonic() < clock["stop_at"]

    def worker(index: int) -> None:
        conn = session = None
        n = 0
        if target.handshake:
            try:
                conn = target.connect(max(timeout, 60.0))
                session = open_session(conn, target)
                conn.sock.settimeout(timeout)
            except Exception:  # noqa: BLE001 - measured as failed calls below
                conn = session = None
            opened.wait()
        while going():
            n += 1
            start = time.monotonic()
            try:
                if conn is None:
                    conn = target.connect(timeout)
                if target.handshake and session is None:
                    session = open_session(conn, target)
                call(conn, target, index * 1_000_000 + n, session)
                ok = True
            except Exception:  # noqa: BLE001 - a failed call is a data point
                ok = False
                if conn is not None:
                    conn.close()
                conn = session = None
            with lock:
                results.append((start, time.monotonic() - start, ok))
            if not ok:
                time.sleep(0.02)
        if conn is not None:
            if session:
                close_session(conn, target, session)
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    if opened is not None:
        opened.wait()
        clock["stop_at"] = time.monotonic() + duration
    started = clock["stop_at"] - duration
    for at, action in events or []:
        time.sleep(max(0.0, at - (time.monotonic() - started)))
        action()
    for t in threads:
        t.join()
    return sorted(results)


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def summarize(results, duration: float) -> dict:
    ok = [latency for _, latency, good in results if good]
    if not ok:
        return {"calls": len(results), "failed": len(results), "p50_ms": float("nan"), "p95_ms": float("nan"), "rps": 0.0}
    return {"calls": len(results), "failed": len(results) - len(ok), "p50_ms": percentile(ok, 50) * 1000,
            "p95_ms": percentile(ok, 95) * 1000, "rps": len(ok) / duration}


def docker_exec(container: str, *command: str) -> None:
    subprocess.run(["docker", "exec", container, *command], check=True, capture_output=True)


def vip_holder(vip: str) -> str | None:
    for lb in ("lb-1", "lb-2"):
        # A load balancer that cannot be asked (its container is down) does not hold the VIP: no check.
        out = subprocess.run(["docker", "exec", lb, "ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                             check=False).stdout
        if f" {vip}/" in out:
            return lb
    return None


def settled_holder(vip: str, wait: float = 10.0) -> str | None:
    """The VIP's holder once one holds it: right after a preempt, for a moment, none does."""
    deadline = time.monotonic() + wait
    while (holder := vip_holder(vip)) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return holder


def measure_paths(vip: Target, direct: Target, concurrency: int, duration: float) -> dict:
    """Latency and throughput straight to one backend and through the VIP, same load."""
    run_load(direct, 2, 2.0)  # warm-up
    run_load(vip, 2, 2.0)
    return {name: summarize(run_load(target, concurrency, duration), duration)
            for name, target in (("direct", direct), ("vip", vip))}


def measure_vip_failover(vip: Target, address: str, concurrency: int, duration: float) -> dict | None:
    """Stop nginx on the VIP holder under load, start it again half-way; None without a holder."""
    master = vip_holder(address)
    if master is None:
        return None
    stop_at, start_at = 5.0, 5.0 + duration / 2
    marks = {}

    def stop():
        marks["stop"] = time.monotonic()
        docker_exec(master, "systemctl", "stop", "nginx")

    def start():
        marks["start"] = time.monotonic()
        docker_exec(master, "systemctl", "start", "nginx")

    results = run_load(vip, concurrency, duration, timeout=1.0, events=[(stop_at, stop), (start_at, start)])
    after_stop = [r for r in results if marks["stop"] <= r[0] < marks["start"]]
    # The outage: the longest stretch after nginx stopped in which no call
    # completed successfully (calls that hang while no node holds the VIP
    # count, not only the ones that fail).
    done = sorted(s + lat for s, lat, ok in results if ok and marks["stop"] <= s + lat <= marks["start"])
    points = [marks["stop"]] + done
    outage = max((b - a for a, b in itertools.pairwise(points)), default=marks["start"] - marks["stop"])
    return {"master": master, "workers": concurrency, "stop_at": stop_at, "start_at": start_at,
            "outage_s": outage, "failed_stop": sum(1 for _, _, ok in after_stop if not ok),
            "failed_back": sum(1 for r in results if r[0] >= marks["start"] and not r[2]),
            "back_on": settled_holder(address), "calls": len(results)}


# The failover daemon runs on both load balancers; the one holding the VIP acts.
FAILOVER_CONTROLLERS = ["lb-1", "lb-2"]
FAILOVER_VIP = "172.30.214.100"
FAILOVER_STATE = "/var/lib/fleetops/failover/state.json"
FAILOVER_EVENTS = "/var/log/fleetops/failover.jsonl"


def acting_controller() -> str:
    """The failover controller that acts now: the load balancer holding the VIP."""
    for lb in FAILOVER_CONTROLLERS:
        out = subprocess.run(["docker", "exec", lb, "ip", "-o", "-4", "addr", "show"], capture_output=True,
                             text=True, check=False).stdout
        if f" {FAILOVER_VIP}/" in out:
            return lb
    raise RuntimeError("no load balancer holds the VIP: no failover controller acts")


def failover_state(server: str) -> dict:
    """The newest record of ``server`` among the controllers' states (highest generation, then claim)."""
    records = []
    for lb in FAILOVER_CONTROLLERS:
        out = subprocess.run(["docker", "exec", lb, "cat", FAILOVER_STATE], capture_output=True, text=True,
                             check=False).stdout
        if out.strip():
            records.append(json.loads(out)["servers"][server])
    return max(records, key=lambda r: (r.get("generation", 0), r.get("claimed", 0)))


def failover_events(since: float, controllers: list[str] | None = None) -> list[dict]:
    events = []
    for lb in controllers or FAILOVER_CONTROLLERS:
        out = subprocess.run(["docker", "exec", lb, "cat", FAILOVER_EVENTS], capture_output=True,
                             text=True, check=False).stdout
        events += [json.loads(line) for line in out.splitlines() if line.strip()]
    return sorted((e for e in events if e.get("ts", 0) >= since), key=lambda e: e["ts"])


def measure_controller_takeover(server: str, limit: float = 90.0) -> dict:
    """The acting controller's host frozen (docker pause: its keepalived, nginx and daemon stop at once): the
    seconds until the other controller's daemon has taken ``server`` over (its took_over event), then, after
    it is thawed, until the first one has taken it back (the VIP returns: preempt)."""
    first = acting_controller()
    other = next(lb for lb in FAILOVER_CONTROLLERS if lb != first)

    def took_over(lb, since):
        return [e for e in failover_events(since, [lb]) if e["event"] == "took_over" and e.get("server") == server]

    frozen = time.time()
    subprocess.run(["docker", "pause", first], check=True, capture_output=True)
    try:
        while not took_over(other, frozen) and time.time() - frozen < limit:
            time.sleep(0.2)
    finally:
        subprocess.run(["docker", "unpause", first], check=False, capture_output=True)
    thawed = time.time()
    while not took_over(first, thawed) and time.time() - thawed < limit:
        time.sleep(0.2)
    away, back = took_over(other, frozen), took_over(first, thawed)
    return {"from": first, "to": other,
            "takeover_s": (away[0]["ts"] - frozen) if away else None,
            "back_s": (back[0]["ts"] - thawed) if back else None}


def _outage(results, since: float, until: float) -> float:
    """The longest stretch after ``since`` in which no call completed successfully."""
    done = sorted(s + lat for s, lat, ok in results if ok and since <= s + lat <= until)
    points = [since] + done
    return max((b - a for a, b in itertools.pairwise(points)), default=until - since)


def measure_stateful_failover(target: Target, server: str, container: str, concurrency: int,
                              duration: float) -> dict:
    """A failover server under load: its active host's container stopped (the daemon fails it over), then,
    under the same load, moved back by a planned switchover (playbooks/failback.yml's request)."""
    before = failover_state(server)
    marks = {}

    def stop():
        marks["stop"], marks["stop_wall"] = time.monotonic(), time.time()
        docker_exec(before["active"], "docker", "stop", "-t", "5", container)

    failed = run_load(target, concurrency, duration, timeout=5.0, events=[(5.0, stop)])
    after = failover_state(server)
    started = [e for e in failover_events(marks["stop_wall"] - 1)
               if e.get("server") == server and e["event"] == "failover_started"]
    end = max(s + lat for s, lat, _ in failed)
    figures = {"from": before["active"], "to": after["active"], "calls": len(failed),
               "failed": sum(1 for s, _, ok in failed if s >= marks["stop"] and not ok),
               "outage_s": _outage(failed, marks["stop"], end),
               "detected_s": (started[0]["ts"] - marks["stop_wall"]) if started else None}

    def switch_back():
        marks["back"] = time.monotonic()
        subprocess.run(["docker", "exec", acting_controller(), "/usr/local/sbin/fleetops-failover", "switchover",
                        server, before["active"], "120"], capture_output=True, check=False)
        marks["back_done"] = time.monotonic()

    back = run_load(target, concurrency, duration, timeout=5.0, events=[(3.0, switch_back)])
    end = max(s + lat for s, lat, _ in back)
    figures.update({"back_on": failover_state(server)["active"], "back_calls": len(back),
                    "back_failed": sum(1 for s, _, ok in back if s >= marks["back"] and not ok),
                    "back_outage_s": _outage(back, marks["back"], end),
                    "back_took_s": marks["back_done"] - marks["back"]})
    return figures


def targets(args) -> tuple[Target, Target]:
    token = (CACHE / "demo-tokens" / args.client).read_text().strip()
    ca = str(CACHE / "pki" / "ca.crt")
    host, port = args.backend.split(":")
    return (Target("https", args.vip, 443, f"/mcp/{args.server}", token, ca),
            Target("http", host, int(port), "/mcp", None, None))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vip", default="172.30.214.100")
    parser.add_argument("--backend", default="172.30.214.11:18090", help="one backend, host:port")
    parser.add_argument("--server", default="reference-stateless")
    parser.add_argument("--client", default="bench-agent", help="demo client whose token to use")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--failover-duration", type=float, default=20.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args()
    vip, direct = targets(args)
    print(f"fleetops.mcp load balancer bench: {args.concurrency} workers, {args.duration:.0f} s per target,"
          f" tools/call echo on {args.server}")
    figures = measure_paths(vip, direct, args.concurrency, args.duration)
    print(f"\n{'path':10}{'calls':>8}{'failed':>8}{'p50 ms':>9}{'p95 ms':>9}{'calls/s':>9}")
    for name, f in figures.items():
        label = "VIP (TLS)" if name == "vip" else "direct"
        print(f"{label:10}{f['calls']:>8}{f['failed']:>8}{f['p50_ms']:>9.2f}{f['p95_ms']:>9.2f}{f['rps']:>9.1f}")
    d, v = figures["direct"], figures["vip"]
    print(f"ratios VIP/direct: p50 {v['p50_ms'] / d['p50_ms']:.2f}x  p95 {v['p95_ms'] / d['p95_ms']:.2f}x  "
          f"throughput {v['rps'] / d['rps']:.2f}x")
    failover = measure_vip_failover(vip, args.vip, max(1, args.concurrency // 2), args.failover_duration)
    if failover is None:
        print("\nno load balancer holds the VIP; failover part skipped")
        return 1
    print(f"\nVIP failover under load ({failover['workers']} workers, nginx stopped on {failover['master']} at"
          f" {failover['stop_at']:.0f} s, started at {failover['start_at']:.0f} s):")
    print(f"  longest stretch without a successful call: {failover['outage_s']:.2f} s;"
          f" failed calls: {failover['failed_stop']}")
    print(f"  VIP back on {failover['back_on']} after nginx started (preempt); failed calls then:"
          f" {failover['failed_back']}")
    print(f"  total calls {failover['calls']}, failed {failover['failed_stop'] + failover['failed_back']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
