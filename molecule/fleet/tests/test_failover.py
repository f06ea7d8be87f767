"""Failover of a stateful, sessioned MCP server in the whole fleet, seen as clients see it.

@modelcontextprotocol/server-memory (npm, behind fleetops-stdio-bridge) keeps its knowledge graph in
the memory-data volume. It runs on ms-1; ms-2 holds a copy pushed every 10 s. The failover daemon runs
on both load balancers: the VIP holder acts, the other stands by (inventories/local/group_vars/all/
failover.yml: a probe every 2 s, failover after 3 failures, a 3 s probe timeout). Clients reach it as
they reach every server here: through the VIP, both load balancers, TLS with the demo CA and a client
token.

These tests run in this order: the server's shape through the gateway, a failover under steady load
(the primary's container stopped), the status playbook, the failback to the primary with every write
of the outage, a partition between the acting controller and the primary while clients still reach it,
and the acting controller frozen (the other takes over and fails the server over again). The server
stays failed over afterwards: the later tests (a playbook re-run by tag changing nothing, the
dashboards' queries with data) run on a fleet that has failed over.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
import uuid

from fleetops_testlib import container_host, container_ip, run_playbook, wait_for
from lbha import LBS, VIP, SteadyLoad, discover_body, discover_headers, lb_host, raw, sdk_call, session, vip_holders

MS1, MS2 = "ms-1", "ms-2"
STATE = "/var/lib/fleetops/failover/state.json"
EVENTS = "/var/log/fleetops/failover.jsonl"
ROUTE = "/etc/nginx/fleetops-failover/memory.conf"
REPLICA_ROOT = "/var/lib/fleetops/failover/replica/memory"
CONTAINER = "mcp-memory-1"
PORT = 18300
# node_exporter's textfile collector directory (monitoring_agent, the fleet plan's textfile_dir).
TEXTFILES = "/var/lib/prometheus/node-exporter"
# inventories/local/group_vars/all/failover.yml: 3 probes 2 s apart, each with a 2 s timeout: the daemon
# decides at most this long after the active stops answering.
DETECTION = 3 * 2 + 3  # 3 probes 2 s apart, then the last one's 3 s timeout


def acting() -> str:
    """The acting failover controller: the load balancer that holds the VIP (exactly one)."""
    holders = vip_holders()
    assert len(holders) == 1, holders
    return holders[0]


def recorded() -> dict:
    """The newest record of memory among the controllers' states (the highest generation, then claim), as
    the roles read it."""
    records = []
    for lb in LBS:
        state = lb_host(lb).file(STATE)
        if state.exists:
            records.append(json.loads(state.content_string)["servers"]["memory"])
    return max(records, key=lambda r: (r.get("generation", 0), r.get("claimed", 0)))


def running(host: str) -> bool:
    out = container_host(host).run("docker inspect -f '{{.State.Running}}' " + CONTAINER)
    assert out.rc == 0, out.stderr
    return out.stdout.strip() == "true"


def routed_to() -> dict:
    """Each load balancer's failover route for memory: the address:port it sends clients to."""
    out = {}
    for lb in LBS:
        text = lb_host(lb).file(ROUTE).content_string
        out[lb] = sorted({word.rstrip(";") for line in text.splitlines() if line.strip().startswith("server ")
                          for word in line.split()[1:2]})
    return out


def events_since(ts: float, controller: str | None = None) -> list[dict]:
    """The controllers' events from ``ts`` on (each names its controller), time-ordered; one controller's
    with ``controller``."""
    events = []
    for lb in [controller] if controller else LBS:
        log = lb_host(lb).file(EVENTS)
        if log.exists:
            events += [e for e in map(json.loads, log.content_string.splitlines()) if e["ts"] >= ts]
    return sorted(events, key=lambda e: e["ts"])


def remember(name: str, fact: str) -> None:
    result = sdk_call(VIP, "memory", "create_entities",
                      {"entities": [{"name": name, "entityType": "test", "observations": [fact]}]}, protocol="handshake")
    assert not result.get("isError"), result


def recalled(protocol: str = "auto") -> dict:
    result = sdk_call(VIP, "memory", "read_graph", {}, protocol=protocol)
    assert not result.get("isError"), result
    graph = result.get("structuredContent") or json.loads(result["content"][0]["text"])
    return {e["name"]: e["observations"] for e in graph["entities"]}


def sync_now(host: str) -> None:
    """Replicate now, with every write made before this call: wait for a run under way (it may have read
    the data before the last write), then run the unit once."""
    unit = "fleetops-failover-sync-memory.service"
    deadline = time.time() + 60
    while container_host(host).run(f"systemctl show -P ActiveState {unit}").stdout.strip() in ("activating", "deactivating"):
        assert time.time() < deadline, f"{unit} stayed active on {host} for 60 s"
        time.sleep(0.5)
    result = container_host(host).run(f"systemctl start {unit}")
    assert result.rc == 0, container_host(host).run(f"journalctl -u {unit} -n 5 --no-pager").stdout


def test_the_stateful_server_runs_on_its_primary_only_behind_both_load_balancers_with_tls_and_tokens():
    state = recorded()
    assert (state["active"], state["standby"]) == (MS1, MS2)
    assert running(MS1) and not running(MS2)
    # Both load balancers route to the active host only.
    address = f"{container_ip(MS1)}:{PORT}"
    assert routed_to() == {lb: [address] for lb in LBS}
    # The gateway's checks hold for it as for every server: no token, no answer.
    status, _, _ = raw("POST", "/mcp/memory", discover_body(), discover_headers(None))
    assert status == 401
    # The server speaks the 2025 handshake only (the SDK's auto mode falls back to it): a session kept open
    # writes, a new one reads.
    with_session = session(VIP, "memory")
    name = f"shape-{uuid.uuid4().hex[:8]}"
    created = with_session.call_tool("create_entities", {"entities": [
        {"name": name, "entityType": "test", "observations": ["written in a session"]}]})
    assert not created.get("isError"), created
    assert recalled()[name] == ["written in a session"]


def test_the_acting_controller_asks_the_agents_over_one_ssh_connection_a_host():
    """After every probe (2 s here) the acting daemon asks the standby's agent for its status. The calls share
    one SSH connection a host (the daemon's service keeps it open), so the standby's sshd accepts no new
    connection from the controller for them: no key exchange and no new sshd process every 2 s. The answers
    still arrive: the record of the standby's copy follows the copies pushed every 10 s."""
    controller, standby = acting(), recorded()["standby"]
    address = container_ip(controller)
    before = recorded().get("standby_synced") or 0
    began = float(container_host(standby).run("date +%s.%N").stdout)
    wait_for("the standby's copy reported anew", lambda: (recorded().get("standby_synced") or 0) > before, 30)
    time.sleep(max(0.0, began + 12 - float(container_host(standby).run("date +%s.%N").stdout)))
    # From the whole second the window began in (rounding could start it up to half a second late).
    accepted = container_host(standby).run(f"journalctl -u ssh --since @{int(began)} -o cat --no-pager")
    assert accepted.rc == 0, accepted.stderr
    from_controller = [line for line in accepted.stdout.splitlines()
                       if line.startswith("Accepted ") and f" from {address} " in line]
    assert len(from_controller) <= 1, from_controller


def test_stopping_the_primary_under_steady_load_fails_over_with_the_synced_data_and_prints_the_times():
    before = recorded()
    marker = f"before-failover-{uuid.uuid4().hex[:8]}"
    remember(marker, "synced before the primary stopped")
    sync_now(MS1)
    began = time.time()
    with SteadyLoad(workers=2, server="memory", tool="read_graph", arguments={}, expect=b"entities",
                    protocol="handshake") as load:
        wait_for("steady calls through the VIP", lambda: load.ok >= 10, 30)
        assert load.failed == [], load.failed[:5]
        stop = container_host(MS1).run(f"docker stop -t 5 {CONTAINER}")
        assert stop.rc == 0, stop.stderr
        stopped, stopped_wall = time.monotonic(), time.time()
        # The first successful call after the stop is served by the standby (the primary is down).
        wait_for("a call answered after the primary stopped",
                 lambda: any(t > stopped for t in list(load.ok_times)), DETECTION + 5 + 30)
        time.sleep(2)
    first = min(t for t in load.ok_times if t > stopped)
    silent = load.longest_gap(min(load.ok_times))
    # Detection: from the stop to the daemon's decision (its failover_started event; the hosts share a clock).
    # Switched: both load balancers route to the standby, which answered MCP first (failover_done).
    mine = [e for e in events_since(began) if e.get("server") == "memory"]
    detected = next(e for e in mine if e["event"] == "failover_started")["ts"] - stopped_wall
    switched = next(e for e in mine if e["event"] == "failover_done")["ts"] - stopped_wall
    print(f"failover under load through the VIP: detected {detected:.1f} s after the primary's container stopped;"
          f" the load balancers routed to the started standby after {switched:.1f} s; the first call answered"
          f" after {first - stopped:.1f} s (sessions are new on the standby: 404, then initialize);"
          f" {silent:.1f} s without a successful call; {len(load.failed)} of {load.ok + len(load.failed)} calls failed")
    assert 0 < detected <= DETECTION + 2, detected
    # The target (the standby serves within detection time plus 5 s) is a figure, printed above and by
    # `bench/fleet_bench.py --failover-only`, not a timed assertion: it took 3.7 s here on one day and 5.7 s
    # on a day this machine ran 2.5 times slower. What is asserted is the order of things, with bounds
    # that only a hung step would pass: the switch after the decision, and no answer after the stop before
    # the decision (nothing serves until the standby does).
    assert detected < switched <= detected + 20, (switched, detected)
    assert detected < first - stopped <= switched + 20, (first - stopped, detected, switched, load.failed[-5:])
    # The daemon fenced the old active, promoted the standby, switched both load balancers.
    state = recorded()
    assert (state["active"], state["standby"], state["generation"], state["failovers"]) == (
        MS2, MS1, before["generation"] + 1, before["failovers"] + 1), state
    assert running(MS2) and not running(MS1)
    assert routed_to() == {lb: [f"{container_ip(MS2)}:{PORT}"] for lb in LBS}
    kinds = [e["event"] for e in events_since(began) if e.get("server") == "memory"]
    assert "failover_started" in kinds and kinds.index("failover_started") < kinds.index("failover_done"), kinds
    done = next(e for e in events_since(began) if e["event"] == "failover_done")
    assert done["active"] == MS2 and done["unrouted_load_balancers"] == []
    # The data of the last sync is there, read through the VIP from the new active.
    assert recalled()[marker] == ["synced before the primary stopped"]
    # The metrics say so: the acting controller's (node_exporter's textfile collector; the one standing by
    # publishes only that it stands by), and the replication's on the old primary (its runs succeed: the pushes
    # while it was active, nothing to do since).
    metrics = lb_host(acting()).file(f"{TEXTFILES}/fleetops_failover.prom").content_string
    assert f'fleetops_failover_active{{server="memory",host="{MS2}"}} 1' in metrics, metrics
    assert f'fleetops_failover_active{{server="memory",host="{MS1}"}} 0' in metrics
    assert f'fleetops_failover_total{{server="memory"}} {state["failovers"]}' in metrics
    assert "fleetops_failover_controller_acting 1" in metrics
    standing_by = next(lb for lb in LBS if lb != acting())
    assert lb_host(standing_by).file(f"{TEXTFILES}/fleetops_failover.prom").content_string.endswith(
        "fleetops_failover_controller_acting 0\n")
    synced = container_host(MS1).file(f"{TEXTFILES}/fleetops_failover_sync_memory.prom").content_string
    assert 'fleetops_failover_sync_success{server="memory"} 1' in synced, synced


def test_the_status_playbook_names_the_active_host_the_copy_age_and_the_last_failover():
    # The new active pushes to the old one within its sync interval (10 s), and the daemon learns the copy's
    # time from the standby's agent at its next probe.
    wait_for("the standby's copy reported", lambda: recorded().get("standby_synced"), 60)
    state = recorded()
    result = run_playbook("../../playbooks/failover_status.yml")
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 0, output[-3000:]
    assert (f"memory: active ms-2, standby ms-1 (generation {state['generation']}, acting controller {acting()})"
            in output), output[-3000:]
    age = float(output.split("standby copy ", 1)[1].split(" s old", 1)[0])
    assert 0 <= age <= 40, age
    last = output.split("last failover ", 1)[1]
    assert " UTC, " in last and f" s ago ({state['failovers']} by this controller)" in last, last[:200]
    assert "last probe of the active answered" in output
    # A server that does not fail over is named in the refusal.
    bad = run_playbook("../../playbooks/failover_status.yml", extra_vars={"failover_status_server": "reference"})
    assert bad.returncode != 0
    assert "failover_status_server reference is not a failover server of this fleet" in " ".join(
        (bad.stdout + bad.stderr).split())


def volume_file(host: str) -> str:
    """The memory graph's file on ``host``, in the volume the container mounts at /data."""
    out = container_host(host).run(
        "docker inspect -f '{{range .Mounts}}{{if eq .Destination \"/data\"}}{{.Source}}{{end}}{{end}}' " + CONTAINER)
    assert out.rc == 0 and out.stdout.strip(), out.stderr
    return out.stdout.strip() + "/memory.jsonl"


def sha256(host: str, path: str) -> str:
    out = container_host(host).run(f"sha256sum {path}")
    assert out.rc == 0, out.stderr
    return out.stdout.split()[0]


def test_failback_returns_the_role_to_the_primary_with_every_write_of_the_outage_byte_for_byte():
    before = recorded()
    assert before["active"] == MS2 and not running(MS1)
    # Writes during the outage, on ms-2 only: the last one a moment before the failback, after any sync.
    outage = [f"during-outage-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    for name in outage:
        remember(name, "written while the primary was down")
    # Check mode says what would move and moves nothing.
    check = run_playbook("../../playbooks/failback.yml", extra_vars={"failback_server": "memory"},
                         extra_args=["--check"])
    assert check.returncode == 0, (check.stdout + check.stderr)[-3000:]
    assert "memory: would move from ms-2 to ms-1." in " ".join(check.stdout.split())
    assert recorded()["active"] == MS2 and running(MS2)

    result = run_playbook("../../playbooks/failback.yml", extra_vars={"failback_server": "memory"})
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 0, output[-3000:]
    assert f"memory: moved from ms-2 to ms-1 (generation {before['generation'] + 1})" in output, output[-3000:]
    state = recorded()
    # A planned move: a new generation, not a failover.
    assert (state["active"], state["standby"], state["generation"], state["failovers"]) == (
        MS1, MS2, before["generation"] + 1, before["failovers"]), state
    assert running(MS1) and not running(MS2)
    assert routed_to() == {lb: [f"{container_ip(MS1)}:{PORT}"] for lb in LBS}
    # The data the primary serves now is, byte for byte, what the stopped ms-2 last wrote.
    assert sha256(MS1, volume_file(MS1)) == sha256(MS2, volume_file(MS2))
    graph = recalled()
    assert all(graph.get(name) == ["written while the primary was down"] for name in outage), sorted(graph)
    # Again: nothing to move, nothing changed.
    again = run_playbook("../../playbooks/failback.yml", extra_vars={"failback_server": "memory"})
    assert again.returncode == 0 and "memory: already active on ms-1, nothing moved." in " ".join(again.stdout.split())
    assert not re.search(r"changed=[1-9]", again.stdout), again.stdout[-2000:]
    # A name that is not a failover server, or a host not of its pair, is refused by name.
    for bad, message in (
            ({"failback_server": "reference"},
             "failback_server must name a failover server of this fleet (memory); got 'reference'"),
            ({"failback_server": "memory", "failback_to": "lb-1"},
             "failback_to must be empty (the primary) or one of the two hosts of memory (ms-1, ms-2); got 'lb-1'"),
            ({"failback_server": "memory", "failback_wait": 0}, "failback_wait must be a number of seconds above 0")):
        refused = run_playbook("../../playbooks/failback.yml", extra_vars=bad)
        assert refused.returncode != 0
        assert message in " ".join((refused.stdout + refused.stderr).split()), (refused.stdout + refused.stderr)[-2000:]
    assert recorded()["active"] == MS1 and running(MS1)


PARTITION = "fleetops_test_partition"


def partition(controller: str, peer: str, on: bool) -> None:
    """Cut the failover controller on ``controller`` (a load balancer) off ``peer``: every packet that root's
    processes there (the daemon: its MCP probes and its SSH to the agent) send to ``peer`` is dropped, while
    nginx's workers, which run as www-data, still reach it for clients (its own nftables table)."""
    if on:
        rules = (f"add table inet {PARTITION}; "
                 f"add chain inet {PARTITION} out {{ type filter hook output priority -300; policy accept; }}; "
                 f"add rule inet {PARTITION} out ip daddr {container_ip(peer)} meta skuid 0 drop")
        out = container_host(controller).run(f"nft '{rules}'")
    else:
        out = container_host(controller).run(f"nft delete table inet {PARTITION}")
    assert out.rc == 0, out.stderr


SAMPLES = "/run/fleetops-test-route-samples.log"


@contextlib.contextmanager
def route_samplers():
    """On each load balancer, its own failover route for memory every 50 ms with the time (the containers
    share the host's clock), kept in SAMPLES; yields a function that returns every sample, time-ordered:
    (time, load balancer, the host addresses routed)."""
    loop = (f"rm -f {SAMPLES}.stop {SAMPLES}; while [ ! -e {SAMPLES}.stop ]; do "
            f"echo \"$(date +%s.%N) $(grep -o '^server [^ ]*' {ROUTE} | cut -d' ' -f2 | tr '\\n' ' ')\" >> {SAMPLES}; "
            f"sleep 0.05; done")
    for lb in LBS:
        subprocess.run(["docker", "exec", "-d", lb, "bash", "-c", loop], check=True)

    def samples():
        out = []
        for lb in LBS:
            for line in lb_host(lb).file(SAMPLES).content_string.splitlines():
                words = line.split()
                if words:
                    out.append((float(words[0]), lb, {w.split(":")[0] for w in words[1:] if not w.startswith("127.")}))
        return sorted(out)

    try:
        yield samples
    finally:
        for lb in LBS:
            lb_host(lb).run(f"touch {SAMPLES}.stop")


def two_actives(samples, addresses) -> list:
    """The moments when the load balancers together route to two hosts: each load balancer's route is its
    latest sample."""
    now, found = {}, []
    for ts, lb, routed in samples:
        now[lb] = {addresses.get(a, a) for a in routed}
        hosts = set().union(*now.values())
        if len(now) == len(LBS) and len(hosts) > 1:
            found.append((round(ts, 2), sorted(hosts)))
    return found


def test_a_partition_between_the_controller_and_the_primary_never_leaves_two_actives_behind_the_load_balancers():
    before = recorded()
    assert before["active"] == MS1 and running(MS1)
    sync_now(MS1)
    addresses = {container_ip(MS1): MS1, container_ip(MS2): MS2}
    controller = acting()
    began = time.time()
    with route_samplers() as samples:
        partition(controller, MS1, True)
        try:
            # The shape of the partition: the controller cannot reach the primary; clients still can, through
            # the same load balancer (the VIP's).
            assert container_host(controller).run(
                f"timeout 3 bash -c '</dev/tcp/{container_ip(MS1)}/{PORT}'").rc != 0
            assert "entities" in json.dumps(sdk_call(VIP, "memory", "read_graph", {}, protocol="handshake"))
            wait_for("the standby promoted", lambda: recorded()["active"] == MS2, DETECTION + 60)
            time.sleep(1)
            # The old primary still runs (nobody could stop it) but no load balancer routes to it.
            assert running(MS1) and running(MS2)
            assert routed_to() == {lb: [f"{container_ip(MS2)}:{PORT}"] for lb in LBS}
            assert "entities" in json.dumps(sdk_call(VIP, "memory", "read_graph", {}, protocol="handshake"))
        finally:
            partition(controller, MS1, False)
        # Healed: the daemon finds the old primary running as the standby and stops it. It logs the stop
        # when the fence call returns, which can be a moment after the container is seen stopped.
        wait_for("the old primary stopped after the partition healed", lambda: not running(MS1), 30)
        wait_for("the daemon's record of stopping the old primary",
                 lambda: any(e["event"] == "standby_fenced" and e.get("server") == "memory" and e["host"] == MS1
                             for e in events_since(began)), 30)
        taken = samples()
    both = two_actives(taken, addresses)
    seen = [sorted({addresses.get(a, a) for a in routed}) for _, _, routed in taken]
    print(f"partition: {len(taken)} samples of the load balancers' routes (every 50 ms on each);"
          f" {len(both)} moments with two actives; routes seen: {sorted(set(map(tuple, seen)))}")
    # The samples cover the switch: each load balancer was seen routing to ms-1, to no host, and to ms-2.
    assert {(MS1,), (), (MS2,)} <= set(map(tuple, seen)), sorted(set(map(tuple, seen)))
    assert not both, both[:5]
    events = [e for e in events_since(began) if e.get("server") == "memory"]
    kinds = [e["event"] for e in events]
    fenced = next(e for e in events if e["event"] == "fenced")
    assert fenced["host"] == MS1 and fenced["result"] == "unreachable"
    # The load balancers confirmed they stopped routing to the primary before the standby started.
    assert kinds.index("unrouted") < kinds.index("failover_done"), kinds
    assert next(e for e in events if e["event"] == "unrouted")["unconfirmed_load_balancers"] == []
    assert "standby_fenced" in kinds
    assert recorded()["generation"] == before["generation"] + 1
    # The controller that stood by did nothing.
    assert {e.get("controller") for e in events} == {controller}, events[-5:]


def test_the_other_controller_takes_over_when_the_acting_one_freezes_and_still_fails_over():
    """The acting controller's host hangs (its container frozen: keepalived, nginx and the daemon stop at
    once, as on a hung machine). keepalived moves the VIP to the other load balancer, whose daemon takes over;
    a primary lost after that still fails over, through the load balancer that is left. When the frozen host
    comes back it takes the VIP back (preempt), reads the placement from the agents and moves nothing."""
    first = acting()
    other = next(lb for lb in LBS if lb != first)
    before = recorded()
    active, standby = before["active"], before["standby"]
    assert running(active) and not running(standby)
    marker = f"before-takeover-{uuid.uuid4().hex[:8]}"
    remember(marker, "synced before the controller froze")
    sync_now(active)
    began = time.time()
    subprocess.run(["docker", "pause", first], check=True, capture_output=True, timeout=30)
    try:
        frozen = time.time()
        wait_for(f"{other}'s daemon taking over",
                 lambda: any(e["event"] == "took_over" and e.get("server") == "memory"
                             for e in events_since(began, other)), 60)
        took = next(e for e in events_since(began, other) if e["event"] == "took_over")
        takeover = took["ts"] - frozen
        assert took["reason"] == "elected" and took["active"] == active, took
        # The frozen load balancer did not answer: it is not waited for, and tried again later.
        assert took["unrouted_load_balancers"] == [first], took
        # A primary lost now fails over, decided by the controller that took over.
        with SteadyLoad(workers=2, server="memory", tool="read_graph", arguments={}, expect=b"entities",
                        protocol="handshake") as load:
            wait_for("steady calls through the VIP", lambda: load.ok >= 5, 30)
            stop = container_host(active).run(f"docker stop -t 5 {CONTAINER}")
            assert stop.rc == 0, stop.stderr
            stopped, stopped_wall = time.monotonic(), time.time()
            wait_for("a call answered after the primary stopped",
                     lambda: any(t > stopped for t in list(load.ok_times)), DETECTION + 5 + 40)
        first_ok = min(t for t in load.ok_times if t > stopped)
        # failover_done comes when every load balancer answered the switch; the frozen one holds it for the
        # command's timeout (the one that is left routes at once: the calls above went through it).
        wait_for("the failover recorded", lambda: any(e["event"] == "failover_done"
                                                      for e in events_since(stopped_wall, other)), 60)
        done = [e for e in events_since(stopped_wall, other) if e["event"] == "failover_done"]
        assert done[0]["active"] == standby and done[0]["unrouted_load_balancers"] == [first], done
        assert done[0]["generation"] > took["generation"]
        assert running(standby) and not running(active)
        assert lb_host(other).file(ROUTE).content_string.count(f"{container_ip(standby)}:{PORT}") == 1
        print(f"controller takeover: {other} acted {takeover:.1f} s after {first} froze (VIP moved, agents read);"
              f" a primary lost after it: the first call answered {first_ok - stopped:.1f} s after the stop,"
              f" {len(load.failed)} of {load.ok + len(load.failed)} calls failed")
        assert recalled()[marker] == ["synced before the controller froze"]
    finally:
        subprocess.run(["docker", "unpause", first], check=False, capture_output=True, timeout=30)
    # Back: the VIP returns to the first load balancer (preempt), its daemon notices the gap in its cycles, reads
    # the placement from the agents and routes both load balancers to the new active; nothing moves back.
    thawed = time.time()
    wait_for(f"{first}'s daemon taking the server over again",
             lambda: any(e["event"] == "took_over" and e.get("server") == "memory"
                         for e in events_since(thawed, first)), 60)
    wait_for("the VIP back on the first load balancer", lambda: vip_holders() == [first], 30)
    wait_for("both load balancers routing to the new active",
             lambda: routed_to() == {lb: [f"{container_ip(standby)}:{PORT}"] for lb in LBS}, 60)
    again = next(e for e in events_since(thawed, first) if e["event"] == "took_over")
    assert again["active"] == standby and again["claim"] > done[0]["generation"], again
    assert running(standby) and not running(active)
    state = recorded()
    assert (state["active"], state["standby"]) == (standby, active), state
    # One more probe round on the returned controller changes nothing: no failover, no fence of the active.
    time.sleep(6)
    kinds = [e["event"] for e in events_since(thawed) if e.get("server") == "memory"]
    assert "failover_started" not in kinds and "switchover_started" not in kinds, kinds
    assert running(standby)
