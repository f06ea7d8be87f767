#!/usr/bin/env python3
"""The fleet benchmark (`make bench`): every figure from one run, printed as one table.

1. Converge time of playbooks/site.yml on the demo topology (inventories/local,
   Molecule scenario `fleet`) from bare containers, and the idempotent re-run
   with its changed count and its share of the first converge (target <= 25%).
   The containers are destroyed and created first, and the build inputs
   prepared (not timed: that is the machine, not the fleet). Then a token
   change: site.yml --tags load_balancers with one more client (a fresh
   token), which hosts changed and how long it took (target <= 30 s, only
   the load balancers), and the same run back without it.
2. `tools/call` latency and throughput through the VIP (TLS, token, nginx, two
   Docker hosts) versus straight to one backend, same concurrency (lb_bench);
   then the same load on every server, through the VIP and on one replica: the
   reference HTTP server beside the third-party stdio servers (mcp-server-time,
   server-everything) behind fleetops-stdio-bridge, sessionless and in sessions.
   Then OAuth: the same calls on `time` through the VIP with a JWT access token
   (RS256 and ES256, minted with the demo test issuer's keys) and with a static
   token, and the JWT / static p50 ratio.
3. VIP failover under load: nginx stopped on the load balancer holding the VIP;
   the longest stretch without a successful call and the failed calls (lb_bench).
4. Failed calls during a rolling update of the reference server
   (playbooks/rolling_update.yml, host by host) under steady load through the
   VIP, and during the rollout back to the declared image.
5. Failover of the stateful server `memory` (server-memory behind the stdio
   bridge, in sessions) under load through the VIP: its active container
   stopped, the daemon's detection time, the longest stretch without a
   successful call and the failed calls; then the planned failback
   (fleetops-failover switchover, as playbooks/failback.yml asks it) under
   the same load. Then the failover controller's takeover: the acting one's
   host (the load balancer holding the VIP) frozen with docker pause, the
   seconds until the other one's daemon has taken over (its took_over event),
   and, thawed, until the first one acts again.

Only the demo's own containers are contacted. --skip-converge measures a
running demo (parts 2 to 4) without rebuilding it; --converge-only stops
after part 1.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import re
import secrets
import subprocess
import sys
import threading
import time

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "oauth_test_issuer"))
import fleetops_test_issuer  # noqa: E402
import lb_bench  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCENARIO = "fleet"


def environment() -> dict:
    env = dict(os.environ)
    env.setdefault("FLEETOPS_CACHE", str(ROOT / ".cache"))
    env.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
    env.setdefault("ANSIBLE_VAULT_PASSWORD_FILE", str(ROOT / "inventories/local/demo-vault-password"))
    env["PATH"] = f"{ROOT / '.venv/bin'}:{env.get('PATH', '')}"
    env["ANSIBLE_NOCOLOR"] = "1"
    env["NO_COLOR"] = "1"
    return env


def run(argv: list[str], log: pathlib.Path) -> tuple[float, str]:
    """Run ``argv`` in the repository; return (wall seconds, output). Fails loudly."""
    began = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, env=environment(), capture_output=True, text=True, check=False)
    wall = time.monotonic() - began
    output = done.stdout + done.stderr
    log.write_text(output)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed (exit {done.returncode}); output in {log}:\n{output[-3000:]}")
    return wall, output


def changed(output: str) -> tuple[int, int]:
    """(changed task results, hosts) summed over every PLAY RECAP in ``output``."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", output)
    recap = text[text.rfind("PLAY RECAP"):] if "PLAY RECAP" in text else ""
    rows = re.findall(r"(?:^|\s)([\w.-]+)\s+:\s+ok=\d+\s+changed=(\d+)", recap)
    return sum(int(n) for _, n in rows), len({host for host, _ in rows})


def changed_hosts(output: str) -> list[str]:
    """The hosts with changed > 0 in the last PLAY RECAP of ``output``."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", output)
    recap = text[text.rfind("PLAY RECAP"):] if "PLAY RECAP" in text else ""
    return sorted(host for host, n in re.findall(r"(?:^|\s)([\w.-]+)\s+:\s+ok=\d+\s+changed=(\d+)", recap) if int(n))


def token_change_rows(logs: pathlib.Path) -> list[tuple[str, str]]:
    """site.yml --tags load_balancers with one client more (a fresh token), then back without it."""
    clients = yaml.safe_load((ROOT / "inventories/local/group_vars/load_balancers.yml").read_text())["nginx_lb_clients"]
    clients.append({"name": "bench-token-change", "token": secrets.token_urlsafe(30), "rate_per_minute": 600, "burst": 50})
    extra = logs / "token-change.yml"
    extra.touch(mode=0o600)
    extra.write_text(yaml.safe_dump({"nginx_lb_clients": clients}))
    tagged = ["ansible-playbook", "-i", "inventories/local/hosts.yml", "playbooks/site.yml", "--tags", "load_balancers"]
    rows = []
    try:
        for label, argv, log in (("a token added", tagged + ["-e", f"@{extra}"], "tags-token-added.log"),
                                 ("the token removed again", tagged, "tags-token-removed.log")):
            print(f"bench: site.yml --tags load_balancers, {label} ...", flush=True)
            wall, output = run(argv, logs / log)
            hosts = changed_hosts(output)
            rows.append((f"site.yml --tags load_balancers, {label}",
                         f"{wall:.0f} s (target <= 30 s), changed on {', '.join(hosts) or 'no host'}"))
    finally:
        extra.unlink()
    return rows


def machine() -> str:
    cpus = os.cpu_count()
    memory = 0
    with open("/proc/meminfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) // 1024 // 1024
    return f"{cpus} CPUs, {memory} GiB RAM, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def rollout(image: str, log: pathlib.Path) -> float:
    context = ROOT / ".cache" / "mcp-images" / "reference"
    wall, _ = run(["ansible-playbook", "-i", "inventories/local/hosts.yml", "playbooks/rolling_update.yml",
                   "-e", "rollout_server=reference", "-e", f"rollout_image={image}",
                   "-e", f"rollout_build_context={context}"], log)
    return wall


def admit_this_machine(backend_address: str) -> None:
    """Let this machine reach the MCP host ports of the Docker host at ``backend_address`` for the
    direct-to-backend rows. The firewall role admits only the load balancers, monitors and failover
    controllers there; this one rule, inserted first in the forward chain, lasts until nftables is
    reloaded (the next converge that changes the firewall)."""
    host = next(name for name in ("ms-1", "ms-2") if subprocess.run(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name],
        capture_output=True, text=True, check=True).stdout.strip() == backend_address)
    subprocess.run(["docker", "exec", host, "nft", "insert", "rule", "inet", "fleetops", "forward", "ct", "status",
                    "dnat", "ip", "saddr", "172.30.214.1", "accept", "comment", '"bench: this machine, direct rows"'],
                   check=True, capture_output=True, text=True)


def under_load(target: lb_bench.Target, workers: int, action) -> tuple[list, float]:
    """Steady load through ``target`` while ``action`` runs (plus 2 s either side)."""
    until, took = threading.Event(), {}

    def act():
        took["s"] = action()
        time.sleep(2.0)
        until.set()

    results = lb_bench.run_load(target, workers, 0.0, timeout=5.0, events=[(2.0, act)], until=until)
    return results, took["s"]


def oauth_token(kid: str, lifetime: int = 3600) -> str:
    """A JWT access token for the demo's `time` server (audience https://<VIP>/mcp/time, scope mcp:tools), signed
    with the demo test issuer's key ``kid`` (made by molecule/fleet/prepare.yml)."""
    keys = lb_bench.CACHE / "test-issuer"
    claims = fleetops_test_issuer.claims("https://issuer.fleetops.test", "https://172.30.214.100/mcp/time",
                                         "bench-agent", "mcp:tools", lifetime=lifetime)
    return fleetops_test_issuer.mint(fleetops_test_issuer.load_private_key(str(keys / f"{kid}.pem")), kid, claims)


def oauth_rows(args, static_token: str, ca: str) -> list[tuple[str, str]]:
    """OAuth resource-server mode: the demo's `time` server takes JWTs (njs checks signature, claims and scopes at
    the gateway) beside static tokens; the same load with each, in this one run."""
    rows = []
    auth_figures = {}
    for label, bearer in (("static token", static_token), ("JWT RS256", oauth_token("rsa-1")),
                          ("JWT ES256", oauth_token("ec-1"))):
        target = lb_bench.Target("https", args.vip, 443, "/mcp/time", bearer, ca, "get_current_time",
                                 {"timezone": "UTC"}, b"datetime")
        print(f"bench: time sessionless get_current_time via VIP with a {label}, {args.concurrency} workers ...",
              flush=True)
        f = lb_bench.summarize(lb_bench.run_load(target, args.concurrency, args.duration, timeout=30.0), args.duration)
        auth_figures[label] = f
        rows.append((f"time (sessionless) tools/call get_current_time, VIP, {label}",
                     f"p50 {f['p50_ms']:.2f} ms, p95 {f['p95_ms']:.2f} ms, {f['rps']:.0f} calls/s, {f['failed']} failed"))
    static = auth_figures["static token"]
    for label in ("JWT RS256", "JWT ES256"):
        rows.append((f"{label} / static token, time through the VIP",
                     f"p50 {auth_figures[label]['p50_ms'] / static['p50_ms']:.2f}x (target <= 1.10x)"))
    return rows


def stateful_rows(args, token: str, ca: str) -> list[tuple[str, str]]:
    """The stateful server (memory: third-party, stdio, sessioned; the demo's only failover server): its
    active container stopped under load, then the planned failback under the same load."""
    print("bench: memory failover and failback under load ...", flush=True)
    memory = lb_bench.Target("https", args.vip, 443, "/mcp/memory", token, ca, "read_graph", {}, b"entities",
                             handshake=True)
    f = lb_bench.measure_stateful_failover(memory, "memory", "mcp-memory-1", 2, args.failover_duration + 10)
    detected = f"detected after {f['detected_s']:.1f} s, " if f["detected_s"] is not None else "no failover seen, "
    label = f"memory (third-party, stdio, sessions) failover {f['from']} -> {f['to']}, container stopped (2 workers)"
    return [
        (label, (f"{detected}{f['outage_s']:.1f} s without a successful call, {f['failed']} failed of "
                 f"{f['calls']} calls")),
        (f"memory failback to {f['back_on']} (planned switchover, nothing lost)",
         (f"{f['back_outage_s']:.1f} s without a successful call, {f['back_failed']} failed of "
          f"{f['back_calls']} calls, switchover {f['back_took_s']:.1f} s")),
    ] + takeover_rows()


def takeover_rows() -> list[tuple[str, str]]:
    """The acting failover controller's host frozen: how long until the other one acts, and the way back."""
    print("bench: failover controller takeover ...", flush=True)
    t = lb_bench.measure_controller_takeover("memory")

    def seconds(value):
        return f"{value:.1f} s" if value is not None else "not seen within 90 s"

    return [(f"failover controller takeover, {t['from']} frozen -> {t['to']} acts",
             f"{seconds(t['takeover_s'])} (VIP move, then the agents read; the frozen one not waited for)"),
            (f"failover controller back on {t['from']} when thawed (preempt)", seconds(t["back_s"]))]


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(f"\nfleetops.mcp fleet bench, one run on: {machine()}\n")
    print(f"| {'figure':{width}} | value |")
    print(f"| {'-' * width} | --- |")
    for name, value in rows:
        print(f"| {name:{width}} | {value} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    lb_bench.add_arguments(parser)
    parser.add_argument("--skip-converge", action="store_true", help="measure the running demo only")
    parser.add_argument("--converge-only", action="store_true",
                        help="only part 1: converge from bare containers, re-run, token change")
    parser.add_argument("--rollout-workers", type=int, default=4)
    parser.add_argument("--oauth-only", action="store_true",
                        help="only the JWT / static token comparison, on the running demo")
    parser.add_argument("--failover-only", action="store_true",
                        help="only the stateful server's failover and failback (part 5), on the running demo")
    args = parser.parse_args()
    if args.failover_only:
        token, _ = lb_bench.targets(args)
        print_table(stateful_rows(args, token.token, str(lb_bench.CACHE / "pki" / "ca.crt")))
        return 0
    if args.oauth_only:
        token, _ = lb_bench.targets(args)
        print_table(oauth_rows(args, token.token, str(lb_bench.CACHE / "pki" / "ca.crt")))
        return 0
    logs = ROOT / ".cache" / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str]] = []

    if not args.skip_converge:
        print("bench: destroying and re-creating the demo containers ...", flush=True)
        run(["molecule", "destroy", "-s", SCENARIO], logs / "destroy.log")
        run(["molecule", "create", "-s", SCENARIO], logs / "create.log")
        run(["molecule", "prepare", "-s", SCENARIO, "--force"], logs / "prepare.log")
        print("bench: site.yml from bare containers ...", flush=True)
        first_wall, output = run(["molecule", "converge", "-s", SCENARIO], logs / "converge.log")
        first, hosts = changed(output)
        rows.append(("site.yml converge from bare containers", f"{first_wall:.0f} s, {first} changed on {hosts} hosts"))
        print("bench: site.yml again ...", flush=True)
        wall, output = run(["molecule", "converge", "-s", SCENARIO], logs / "reconverge.log")
        again, hosts = changed(output)
        rows.append(("site.yml idempotent re-run",
                     (f"{wall:.0f} s, {again} changed on {hosts} hosts, {100 * wall / first_wall:.0f}% of the first "
                      "converge (target <= 25%)")))
        rows.extend(token_change_rows(logs))
    if args.converge_only:
        print_table(rows)
        return 0

    admit_this_machine(args.backend.split(":")[0])
    vip, direct = lb_bench.targets(args)
    print(f"bench: tools/call echo on {args.server}, {args.concurrency} workers, {args.duration:.0f} s per path ...",
          flush=True)
    paths = lb_bench.measure_paths(vip, direct, args.concurrency, args.duration)
    d, v = paths["direct"], paths["vip"]
    for name, f in (("direct to one backend", d), ("through the VIP (TLS, token)", v)):
        rows.append((f"tools/call {name}",
                     f"p50 {f['p50_ms']:.2f} ms, p95 {f['p95_ms']:.2f} ms, {f['rps']:.0f} calls/s, {f['failed']} failed"))
    rows.append(("ratio VIP / direct", (f"p50 {v['p50_ms'] / d['p50_ms']:.2f}x, p95 {v['p95_ms'] / d['p95_ms']:.2f}x, "
                                        f"throughput {v['rps'] / d['rps']:.2f}x")))

    # The same load on every server through the VIP, and on one replica each, in this one run: the
    # third-party stdio servers (behind fleetops-stdio-bridge) beside the reference HTTP server.
    ca = str(lb_bench.CACHE / "pki" / "ca.crt")
    host = args.backend.split(":")[0]
    stdio_paths = [
        ("reference-stateless", 18090, "sessionless", "echo", {"text": "bench"}, b"bench"),
        ("reference", 18080, "handshake", "echo", {"text": "bench"}, b"bench"),
        ("time", 18100, "sessionless", "get_current_time", {"timezone": "UTC"}, b"datetime"),
        ("time", 18100, "handshake", "get_current_time", {"timezone": "UTC"}, b"datetime"),
        ("everything", 18110, "handshake", "echo", {"message": "bench"}, b"bench"),
    ]
    figures = {}
    for server, port, protocol, tool, arguments, expect in stdio_paths:
        for where, target in (
                ("VIP", lb_bench.Target("https", args.vip, 443, f"/mcp/{server}", vip.token, ca, tool, arguments,
                                        expect, protocol == "handshake")),
                ("one replica", lb_bench.Target("http", host, port, "/mcp", None, None, tool, arguments, expect,
                                                protocol == "handshake"))):
            print(f"bench: {server} {protocol} {tool} via {where}, {args.concurrency} workers ...", flush=True)
            f = lb_bench.summarize(lb_bench.run_load(target, args.concurrency, args.duration, timeout=30.0),
                                   args.duration)
            figures[(server, protocol, where)] = f
            rows.append((f"{server} ({protocol}) tools/call {tool}, {where}",
                         (f"p50 {f['p50_ms']:.2f} ms, p95 {f['p95_ms']:.2f} ms, {f['rps']:.0f} calls/s, "
                          f"{f['failed']} failed")))
    ref_vip, time_vip = figures[("reference-stateless", "sessionless", "VIP")], figures[("time", "sessionless", "VIP")]
    rows.append(("stdio time / reference HTTP, sessionless through the VIP",
                 f"p50 {time_vip['p50_ms'] / ref_vip['p50_ms']:.2f}x (target <= 2x), {time_vip['failed']} failed"))
    ref_one, time_one = (figures[("reference-stateless", "sessionless", "one replica")],
                         figures[("time", "sessionless", "one replica")])
    rows.append(("one stdio time replica / one reference replica (both 1 CPU), throughput",
                 f"{100 * time_one['rps'] / ref_one['rps']:.0f}% (target >= 50%)"))

    rows.extend(oauth_rows(args, vip.token, ca))

    print("bench: VIP failover under load ...", flush=True)
    workers = max(1, args.concurrency // 2)
    failover = lb_bench.measure_vip_failover(vip, args.vip, workers, args.failover_duration)
    if failover is None:
        rows.append(("VIP failover", "no load balancer held the VIP: not measured"))
    else:
        rows.append((f"VIP failover, nginx stopped on {failover['master']} ({workers} workers)",
                     f"{failover['outage_s']:.2f} s without a successful call, {failover['failed_stop']} failed calls"))
        rows.append((f"VIP moving back to {failover['back_on']} (preempt)", f"{failover['failed_back']} failed calls"))

    reference = lb_bench.Target("https", args.vip, 443, "/mcp/reference", vip.token, str(lb_bench.CACHE / "pki" / "ca.crt"))
    for image, label in (("fleetops/mcp-reference:1.1.0", "rolling update to a new image"),
                         ("fleetops/mcp-reference:1.0.0", "rolling update back to the declared image")):
        print(f"bench: {label} under load ...", flush=True)
        results, took = under_load(reference, args.rollout_workers,
                                   lambda image=image: rollout(image, logs / f"rollout-{image.rsplit(':', 1)[1]}.log"))
        failed = sum(1 for _, _, ok in results if not ok)
        rows.append((f"{label} ({args.rollout_workers} workers, sessionless tools/call on reference)",
                     f"{failed} failed of {len(results)} calls, rollout {took:.0f} s"))

    rows.extend(stateful_rows(args, vip.token, ca))
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
