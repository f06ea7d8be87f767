"""Failover of a stateful MCP server between two Docker hosts, observed from outside.

bf-dh-1 (Debian 12) is the primary and bf-dh-2 (Debian 13) the standby of
@modelcontextprotocol/server-memory; bf-bk runs the failover daemon alone
(mcp_failover_controller: one controller, which always acts; probe every 2 s,
failover after 3 failures) and bf-lb-1 routes to the active over plain HTTP.
These tests run after test_backup.py (file order) and in this order: the
standby's shape, the agent's command filter, the replication key's
confinement, the failover drill (the playbook stops the primary; the daemon
fails it over with the data of the last sync), the old primary staying down,
a hand-started standby stopped, a tampered replica refused, playbook re-runs
changing nothing.

What the fleet scenario proves in the shape users run it (both load
balancers, the VIP, TLS and tokens, two controllers, failover under load,
failback, a partition, a controller takeover, the metrics and dashboards) is
not repeated here.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid

import pytest
from fleetops_testlib import container_host, run_playbook, wait_for
from memory_graph import URL, recalled, remember

DH1, DH2, LB, BK = "bf-dh-1", "bf-dh-2", "bf-lb-1", "bf-bk"
ADDRESS = {DH1: "172.30.218.11", DH2: "172.30.218.12"}
EVENTS = "/var/log/fleetops/failover.jsonl"
STATE = "/var/lib/fleetops/failover/state.json"
# The memory server's replica root (its own rrsync root): slots a/ and b/, each
# complete when its stamp a.synced / b.synced is there.
REPLICAS = "/var/lib/fleetops/failover/replica"
REPLICA_ROOT = f"{REPLICAS}/memory"
SYNC_SSH = ("ssh -i /root/.ssh/fleetops_failover_sync_memory -o BatchMode=yes -o StrictHostKeyChecking=yes "
            "-o UserKnownHostsFile=/etc/fleetops/failover_sync_known_hosts -l root")
AGENT_SSH = ("ssh -i /root/.ssh/fleetops_failover -o BatchMode=yes -o StrictHostKeyChecking=yes "
             "-o UserKnownHostsFile=/etc/fleetops/failover_known_hosts -l root ")
TOOL = "/usr/local/sbin/fleetops-failover"
# group_vars/all.yml: 3 probes 2 s apart, each with a 2 s timeout.
DETECTION_BOUND = 3 * 2 + 2


def running(host: str) -> bool:
    out = container_host(host).run("docker inspect -f '{{.State.Running}}' mcp-memory-1")
    assert out.rc == 0, out.stderr
    return out.stdout.strip() == "true"


def events_since(ts: float) -> list[dict]:
    lines = container_host(BK).file(EVENTS).content_string.splitlines()
    return [e for e in map(json.loads, lines) if e["ts"] >= ts]


def active() -> str:
    return json.loads(container_host(BK).file(STATE).content_string)["servers"]["memory"]["active"]


def sync(host: str) -> None:
    """Replicate now, with data written before this call.

    The timer starts the same oneshot unit every 10 s here. `systemctl start`
    on a run already under way joins that run, which may have read the data
    before the caller's last write; so wait for any such run to end first.
    """
    unit = "fleetops-failover-sync-memory.service"
    deadline = time.time() + 60
    while container_host(host).run(f"systemctl show -P ActiveState {unit}").stdout.strip() in ("activating", "deactivating"):
        assert time.time() < deadline, f"{unit} stayed active on {host} for 60 s"
        time.sleep(0.5)
    result = container_host(host).run(f"systemctl start {unit}")
    assert result.rc == 0, container_host(host).run(f"journalctl -u {unit} -n 5 --no-pager").stdout


@contextlib.contextmanager
def sync_held(host: str):
    """No replication run from ``host`` meanwhile (its timer stopped, a run under way waited for)."""
    timer, unit = "fleetops-failover-sync-memory.timer", "fleetops-failover-sync-memory.service"
    assert container_host(host).run(f"systemctl stop {timer}").rc == 0
    try:
        deadline = time.time() + 60
        while container_host(host).run(f"systemctl show -P ActiveState {unit}").stdout.strip() in ("activating", "deactivating"):
            assert time.time() < deadline, f"{unit} stayed active on {host} for 60 s"
            time.sleep(0.5)
        yield
    finally:
        assert container_host(host).run(f"systemctl start {timer}").rc == 0


def newest_slot(host: str) -> str:
    """The slot promotion would take on ``host``: the one with the newest stamp."""
    stamps = {}
    for slot in ("a", "b"):
        stamp = container_host(host).file(f"{REPLICA_ROOT}/{slot}.synced")
        if stamp.exists:
            stamps[slot] = float(stamp.content_string)
    assert stamps, f"no complete replica of memory on {host}"
    return max(stamps, key=stamps.get)


def replica_holds(host: str, marker: str) -> bool:
    return container_host(host).run(f"grep -q {marker} {REPLICA_ROOT}/{newest_slot(host)}/memory-data/memory.jsonl").rc == 0


def test_the_standby_is_created_stopped_and_nothing_restarts_it():
    assert active() == DH1
    assert running(DH1) and not running(DH2)
    for host in (DH1, DH2):
        policy = container_host(host).run("docker inspect -f '{{.HostConfig.RestartPolicy.Name}}' mcp-memory-1")
        assert policy.stdout.strip() == "no"
        assert container_host(host).run("systemctl is-active fleetops-failover-sync-memory.timer").stdout.strip() == "active"
    # The standby's replication has nothing to push.
    out = container_host(DH2).run(f"{TOOL} sync memory")
    assert out.rc == 0 and json.loads(out.stdout)["result"] == "not active here"


def test_the_controllers_key_runs_the_agent_and_nothing_else():
    bk = container_host(BK)
    ssh = AGENT_SSH
    status = bk.run(ssh + ADDRESS[DH1] + " status memory")
    answer = json.loads(status.stdout) if status.rc == 0 else {}
    assert {k: answer.get(k) for k in ("running", "server")} == {"running": True, "server": "memory"}, status
    # ... and when the copy it would promote was taken (none on the active unless it was a standby once), and
    # the last claim a controller commanded it under (none yet: the daemon only asked for status).
    assert set(answer) == {"running", "server", "synced", "claim"} and (answer["synced"] is None or answer["synced"] > 0)
    for command in ("id", "docker ps", "route memory 10.9.9.9:80", "fence other"):
        refused = bk.run(ssh + ADDRESS[DH1] + " " + command)
        assert refused.rc == 2 and json.loads(refused.stdout)["result"] == "refused", (command, refused.stdout)
    assert running(DH1)


def test_a_servers_replication_key_writes_only_its_own_replica_root():
    """bf-dh-1's key for memory, used by hand on bf-dh-1: it cannot reach another server's root on
    bf-dh-2 (here `other`, made for the test), nor read, nor run anything but rrsync."""
    dh1, dh2 = container_host(DH1), container_host(DH2)
    keys = dh2.file("/root/.ssh/authorized_keys").content_string
    entry = next(line for line in keys.splitlines() if line.endswith(f"fleetops-failover-sync-memory@{DH1}"))
    assert entry.startswith(f'command="/usr/bin/rrsync -wo -munge {REPLICA_ROOT}",restrict,from="{ADDRESS[DH1]}" ')
    # No key of the older single-root layout is left.
    assert f"fleetops-failover-sync@{DH1}" not in keys and f'rrsync -wo {REPLICAS}"' not in keys
    assert dh2.run(f"install -d -m 0700 {REPLICAS}/other").rc == 0
    with sync_held(DH1):  # no timer run holds the root's rrsync lock meanwhile
        try:
            assert dh1.run("install -d /tmp/intruder && echo planted > /tmp/intruder/planted").rc == 0
            # The key works: into its own root it writes.
            pushed = dh1.run(f"rsync -r -e '{SYNC_SSH}' /tmp/intruder/ {ADDRESS[DH2]}:probe/")
            assert pushed.rc == 0, pushed.stderr
            assert dh2.file(f"{REPLICA_ROOT}/probe/planted").exists
            for dest in ("../other/", f"{REPLICAS}/other/", "a/../../other/", "../../../../tmp/"):
                pushed = dh1.run(f"rsync -r -e '{SYNC_SSH}' /tmp/intruder/ {ADDRESS[DH2]}:{dest}")
                assert pushed.rc != 0, (dest, pushed.stdout, pushed.stderr)
            assert dh2.run(f"find {REPLICAS}/other /tmp -name planted | grep -q .").rc != 0
            # Write-only: no pull, and no command but rrsync.
            assert dh1.run(f"rsync -r -e '{SYNC_SSH}' {ADDRESS[DH2]}:. /tmp/pulled/").rc != 0
            assert dh1.run(f"{SYNC_SSH} {ADDRESS[DH2]} id").rc != 0
        finally:
            dh2.run(f"rm -rf {REPLICAS}/other {REPLICA_ROOT}/probe")
            dh1.run("rm -rf /tmp/intruder /tmp/pulled")


def test_the_drill_fails_the_server_over_with_the_last_synced_data_and_reports_its_times():
    marker = f"before-failover-{uuid.uuid4().hex[:8]}"
    remember(marker, marker)
    sync(DH1)
    assert replica_holds(DH2, marker)
    began = time.time()
    result = run_playbook("../../playbooks/failover_drill.yml",
                          extra_vars={"failover_drill_server": "memory", "failover_drill_url": URL})
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 0, output[-3000:]
    assert "server memory: bf-dh-1 -> bf-dh-2 (recovered)" in output, output[-3000:]
    assert "detected after" in output and "first successful MCP call through" in output
    events = events_since(began)
    started = next(e for e in events if e["event"] == "failover_started")
    assert started["ts"] - began <= DETECTION_BOUND + 30  # the playbook's own start is in it
    assert [e["result"] for e in events if e["event"] == "fenced"] == ["stopped"]
    assert next(e for e in events if e["event"] == "failover_done")["unrouted_load_balancers"] == []
    assert active() == DH2 and running(DH2) and not running(DH1)
    include = container_host(LB).file("/etc/nginx/fleetops-failover/memory.conf").content_string
    assert f"server {ADDRESS[DH2]}:18300 " in include and ADDRESS[DH1] not in include
    # The data of the last sync, read through the load balancer from the new active.
    assert recalled()[marker] == [marker]
    status = json.loads(container_host(BK).run(f"{TOOL} status").stdout)
    assert status["acting"] is True and status["controller"] == BK  # one controller: it always acts
    assert (status["servers"]["memory"]["active"], status["servers"]["memory"]["failovers"]) == (DH2, 1)


def test_the_old_primary_stays_down_and_receives_the_replication():
    dh1 = container_host(DH1)
    assert dh1.run("systemctl restart docker").rc == 0
    time.sleep(3)
    assert not running(DH1)
    marker = f"after-failover-{uuid.uuid4().hex[:8]}"
    remember(marker, marker)
    sync(DH2)
    assert replica_holds(DH1, marker)
    out = dh1.run(f"{TOOL} sync memory")
    assert json.loads(out.stdout)["result"] == "not active here"


def test_a_standby_started_by_hand_is_stopped_by_the_daemon():
    began = time.time()
    assert container_host(DH1).run("docker start mcp-memory-1").rc == 0
    deadline = began + 30
    while time.time() < deadline and running(DH1):
        time.sleep(0.5)
    assert not running(DH1)
    # The daemon logs the stop when its fence call returns, which can be a moment after the container is
    # seen stopped (under load).
    wait_for("the daemon's record of stopping the standby",
             lambda: any(e["event"] == "standby_fenced" and e["host"] == DH1 for e in events_since(began)), 30)
    assert active() == DH2 and running(DH2)


def test_promotion_refuses_a_symlinked_replica():
    """bf-dh-1 is the standby now (bf-dh-2 pushes to it). With bf-dh-2's pushes held, a replica
    replaced by a symlink makes the agent's promote fail without starting the container."""
    dh1 = container_host(DH1)
    with sync_held(DH2):
        slot = f"{REPLICA_ROOT}/{newest_slot(DH1)}"
        for tamper, undo, message in (
            (f"mv {slot}/memory-data {slot}/memory-data.real && ln -s /etc {slot}/memory-data",
             f"rm {slot}/memory-data && mv {slot}/memory-data.real {slot}/memory-data", "is a symlink"),
            (f"ln -s /etc/shadow {slot}/memory-data/shadow", f"rm {slot}/memory-data/shadow",
             "symlinks pointing outside it: shadow"),
            (f"mv {REPLICA_ROOT} {REPLICA_ROOT}.real && ln -s {REPLICA_ROOT}.real {REPLICA_ROOT}",
             f"rm {REPLICA_ROOT} && mv {REPLICA_ROOT}.real {REPLICA_ROOT}", "is a symlink"),
        ):
            assert dh1.run(tamper).rc == 0, tamper
            try:
                out = container_host(BK).run(AGENT_SSH + ADDRESS[DH1] + " promote memory")
                answer = json.loads(out.stdout.strip().splitlines()[-1])
                assert out.rc == 1 and answer["result"] == "failed" and message in answer["error"], (tamper, answer)
                assert not running(DH1)
            finally:
                assert dh1.run(undo).rc == 0, undo
    assert active() == DH2 and running(DH2) and not running(DH1)


def test_playbooks_after_a_failover_change_nothing():
    for playbook in ("../../playbooks/mcp_servers.yml", "../../playbooks/load_balancers.yml"):
        result = run_playbook(playbook)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        recap = output[output.rindex("PLAY RECAP"):]
        assert "changed=0" in recap and "changed=1" not in recap, recap
    assert running(DH2) and not running(DH1)
    include = container_host(LB).file("/etc/nginx/fleetops-failover/memory.conf").content_string
    assert f"server {ADDRESS[DH2]}:18300 " in include


@pytest.mark.parametrize(
    ("extra_vars", "message"),
    [
        ({"mcp_failover_controller": DH1},
         "mcp_failover_controllers (or mcp_failover_controller) must name inventory hosts outside the failover pairs"),
        ({"mcp_failover_failures": 0}, "mcp_failover_failures must be a whole number from 1 to 100; got 0"),
        ({"failover_drill_server": ""}, "failover_drill_server (a failover server's name) and failover_drill_url"),
        ({"mcp_failover_lb_group": "nowhere"},
         "mcp_failover_lb_group: the group 'nowhere' has no hosts; failover switches load balancers."),
        ({"mcp_failover_servers": [{"name": "memory", "image": "fleetops/mcp-memory:2026.8.31", "host_port": 18300,
                                    "failover": {"primary": DH1, "standby": LB}}]},
         "mcp_failover_servers: failover hosts bf-lb-1 are not in the docker_hosts group."),
    ],
    ids=["controller-in-pair", "failures", "drill-without-server", "no-load-balancers", "standby-not-a-docker-host"],
)
def test_bad_inputs_fail_naming_the_variable(extra_vars, message):
    playbook = "failover_drill" if "failover_drill_server" in extra_vars else "failover"
    config = container_host(BK).file("/etc/fleetops/failover.json").content_string
    before = active()
    result = run_playbook(f"../../playbooks/{playbook}.yml", extra_vars=extra_vars)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert message in output, output[-3000:]
    assert container_host(BK).file("/etc/fleetops/failover.json").content_string == config
    # Nothing moved: the server stays where the drill left it.
    assert active() == before == DH2 and running(DH2) and not running(DH1)
