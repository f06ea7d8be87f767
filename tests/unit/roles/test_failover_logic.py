"""fleetops-failover: the daemon's decisions against fake actions, its MCP probe against real
reference servers, the agent's command filter, routing with rollback, promotion from the replica,
and the replication push (fake docker/rsync/nginx; the real ones run in the backup_failover scenario)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from script_loader import load_script

SCRIPT = Path(__file__).resolve().parents[3] / "roles/mcp_failover/files/fleetops-failover"


ff = load_script(SCRIPT, "fleetops_failover")


class Fake(ff.Actions):
    def __init__(self, answers, fence="stopped", promote=True):
        self.answers = list(answers)
        self.fence_result, self.promote_result = fence, promote
        self.calls = []

    def probe(self, server, host):
        self.calls.append(("probe", host))
        return (self.answers.pop(0), "x")

    def fence(self, server, host):
        self.calls.append(("fence", host))
        return self.fence_result

    def promote(self, server, host):
        self.calls.append(("promote", host))
        return self.promote_result

    def route(self, server, host, only=None):
        self.calls.append(("route", host))
        return []

    def status(self, server, host):
        self.calls.append(("status", host))
        return self.standby_running

    standby_running = False


def run(actions, probes, threshold=3):
    state = ff.ServerState("memory", active="dh-1", standby="dh-2")
    events = []
    for _ in range(probes):
        ff.step(state, actions, threshold, events.append, now=1.0)
    return state, events


def test_no_failover_before_k_consecutive_failures():
    actions = Fake([False, False, True, False, False])
    state, _ = run(actions, 5)
    assert state.active == "dh-1" and state.failures == 2
    assert [c for c in actions.calls if c[0] not in ("probe", "status")] == []


def test_fence_then_promote_then_route_in_that_order():
    actions = Fake([False, False, False])
    state, events = run(actions, 3)
    assert [c for c in actions.calls if c[0] not in ("probe", "status")] == [
        ("fence", "dh-1"), ("promote", "dh-2"), ("route", "dh-2")]
    assert (state.active, state.standby, state.generation, state.failovers) == ("dh-2", "dh-1", 1, 1)
    assert [e["event"] for e in events][-3:] == ["failover_started", "fenced", "failover_done"]


def test_an_unreachable_old_host_is_fenced_by_routing_to_no_host_before_the_standby_starts():
    actions = Fake([False] * 3, fence="unreachable")
    state, events = run(actions, 3)
    assert state.active == "dh-2"
    # Every load balancer stops routing to the old active (route to None) and confirms, then the standby
    # starts, then the load balancers route to it.
    assert [c for c in actions.calls if c[0] not in ("probe", "status")] == [
        ("fence", "dh-1"), ("route", None), ("promote", "dh-2"), ("route", "dh-2")]
    assert {"event": "unrouted", "server": "memory", "host": "dh-1", "unconfirmed_load_balancers": []} in events


class Partitioned(Fake):
    """The old active's host does not answer the controller; lb-2 does not answer either at first."""

    load_balancers = ["lb-1", "lb-2"]

    def __init__(self, answers, silent_lbs):
        super().__init__(answers, fence="unreachable")
        self.silent_lbs = silent_lbs

    def route(self, server, host, only=None):
        self.calls.append(("route", host, tuple(only or ())))
        return [lb for lb in (only or self.load_balancers) if lb in self.silent_lbs]


def test_a_load_balancer_that_does_not_confirm_it_stopped_routing_to_the_old_active_blocks_the_promotion():
    actions = Partitioned([False] * 4, silent_lbs={"lb-2"})
    state, events = run(actions, 4)
    # lb-2 may still send clients to the old active: the standby never starts.
    assert ("promote", "dh-2") not in actions.calls and state.active == "dh-1"
    aborted = [e for e in events if e["event"] == "failover_aborted"]
    assert aborted and aborted[-1]["reason"] == "load balancers not confirmed off the old active: lb-2"
    assert state.unrouted == ("lb-1", "lb-2")
    # The old active answers again (the partition healed): both load balancers route to it again.
    actions.answers, actions.silent_lbs = [True], set()
    ff.step(state, actions, 3, events.append, now=2.0)
    assert actions.calls[-2] == ("route", "dh-1", ("lb-1", "lb-2")) and state.unrouted == ()
    assert state.active == "dh-1" and state.failures == 0


def test_once_every_load_balancer_confirms_the_standby_takes_over():
    actions = Partitioned([False] * 4, silent_lbs={"lb-2"})
    state, events = run(actions, 3)
    assert state.active == "dh-1"
    actions.silent_lbs = set()
    ff.step(state, actions, 3, events.append, now=2.0)
    assert state.active == "dh-2" and state.generation == 1
    assert [c for c in actions.calls if c[0] != "probe"][-3:] == [
        ("route", None, ()), ("promote", "dh-2"), ("route", "dh-2", ())]


def test_a_standby_that_does_not_start_after_unrouting_leaves_the_old_active_to_be_routed_back():
    actions = Partitioned([False] * 3, silent_lbs=set())
    actions.promote_result = False
    state, events = run(actions, 3)
    assert state.active == "dh-1" and state.unrouted == ("lb-1", "lb-2")
    assert events[-1] == {"event": "failover_aborted", "server": "memory", "reason": "standby did not start"}


def test_a_failed_fence_never_promotes():
    actions = Fake([False] * 4, fence="failed")
    state, events = run(actions, 4)
    assert state.active == "dh-1" and ("promote", "dh-2") not in actions.calls
    assert events[-1] == {"event": "failover_aborted", "server": "memory", "reason": "fence failed"}


def test_metrics_name_the_active_host_and_count_failovers():
    state, _ = run(Fake([False] * 3), 3)
    text = ff.metrics_text([state])
    assert 'fleetops_failover_active{server="memory",host="dh-2"} 1' in text
    assert 'fleetops_failover_total{server="memory"} 1' in text


def test_the_probe_speaks_mcp_to_real_servers_and_closes_its_session(sessioned_server, json_server):
    for server in (sessioned_server, json_server):
        ok, name = ff.probe_mcp(server.mcp_url)
        assert ok and name, name
    bad, detail = ff.probe_mcp("http://127.0.0.1:9/mcp", timeout=1)
    assert not bad and "no answer" in detail


def test_a_running_standby_is_stopped_while_the_active_answers():
    actions = Fake([True])
    actions.standby_running = True
    _, events = run(actions, 1)
    assert ("fence", "dh-2") in actions.calls and events[-1]["event"] == "standby_fenced"


def test_load_balancers_that_missed_the_switch_are_routed_again():
    class Flaky(Fake):
        def route(self, server, host, only=None):
            self.calls.append(("route", host, tuple(only or ())))
            return ["lb-2"] if not only else []

    actions = Flaky([False, False, False, True])
    state, events = run(actions, 4)
    assert state.unrouted == () and ("route", "dh-2", ("lb-2",)) in actions.calls
    assert [e for e in events if e["event"] == "failover_done"][0]["unrouted_load_balancers"] == ["lb-2"]


def test_state_survives_a_restart_and_resets_when_the_pair_changes(tmp_path):
    path = str(tmp_path / "state.json")
    config = {"servers": [{"name": "memory", "primary": "dh-1", "standby": "dh-2"}]}
    state, _ = run(Fake([False] * 3), 3)
    ff.save_states(path, [state])
    again = ff.load_states(config, path)[0]
    assert (again.active, again.generation, again.failovers) == ("dh-2", 1, 1)
    moved = {"servers": [{"name": "memory", "primary": "dh-1", "standby": "dh-3"}]}
    assert ff.load_states(moved, path)[0].active == "dh-1"
    assert ff.load_states(config, str(tmp_path / "missing.json"))[0].active == "dh-1"


class FakeHost:
    """docker, rsync and nginx as the agent and the replication call them."""

    def __init__(self, running=True, nginx_ok=True, rsync_ok=True, start_ok=True):
        self.running, self.nginx_ok, self.rsync_ok, self.start_ok = running, nginx_ok, rsync_ok, start_ok
        self.calls = []

    def __call__(self, argv, **_):
        import subprocess

        self.calls.append(argv)
        ok = subprocess.CompletedProcess(argv, 0, "", "")
        if argv[:2] == ["docker", "stop"]:
            self.running = False
        if argv[:2] == ["docker", "start"]:
            if not self.start_ok:
                return subprocess.CompletedProcess(argv, 1, "", "no such image")
            self.running = True
        if argv[:2] == ["docker", "inspect"]:
            return subprocess.CompletedProcess(argv, 0, "true\n" if self.running else "false\n", "")
        if argv[0] == "nginx":
            return subprocess.CompletedProcess(argv, 0 if self.nginx_ok else 1, "", "bad upstream")
        if argv[0] == "rsync":
            if not self.rsync_ok:
                return subprocess.CompletedProcess(argv, 23, "", "permission denied")
            if argv[-1].startswith("/") and argv[-2].endswith("/"):  # a local copy: do it
                import shutil

                shutil.copytree(argv[-2], argv[-1], symlinks=True, dirs_exist_ok=True)
        return ok


def agent_config(tmp_path):
    replica = tmp_path / "replica"
    return {
        "replica_dir": str(replica),
        "outbox_dir": str(tmp_path / "outbox"),
        "include_dir": str(tmp_path),
        "ssh": {"key": "/k", "known_hosts": "/kh", "connect_timeout": 3, "user": "root"},
        "servers": {"memory": {"container": "mcp-memory-1", "stop_timeout": 5, "ready_timeout": 2,
                               "probe_url": "http://127.0.0.1:18300/mcp", "peer": "10.0.0.12",
                               "volumes": [{"source": str(tmp_path / "volume"), "replica": "memory/memory-data"}]}},
        "routes": {"memory": {"dh-1": "server 10.0.0.11:18300;\n", "dh-2": "server 10.0.0.12:18300;\n"}},
        "claim_dir": str(tmp_path / "claims"),
    }


def test_the_agent_refuses_anything_but_its_four_commands(tmp_path):
    import pytest

    for words in ([], ["rm", "-rf", "/"], ["fence"], ["fence", "other"], ["fence", "memory", "x"],
                  ["route", "memory", "10.0.0.1:80; evil"], ["route", "memory", "dh-9"], ["status", "../etc"],
                  ["route", "other", "dh-1"]):
        with pytest.raises(ff.Refused):
            ff.agent_handle(words, agent_config(tmp_path), run=FakeHost())


def test_fence_stops_and_confirms(tmp_path):
    host = FakeHost(running=True)
    assert ff.agent_handle(["fence", "memory"], agent_config(tmp_path), run=host) == {"server": "memory", "result": "stopped"}
    assert ["docker", "stop", "-t", "5", "mcp-memory-1"] in host.calls

    class Stuck(FakeHost):
        def __call__(self, argv, **kw):
            if argv[:2] == ["docker", "stop"]:
                self.calls.append(argv)
                import subprocess

                return subprocess.CompletedProcess(argv, 1, "", "timeout")
            return super().__call__(argv, **kw)

    assert ff.agent_handle(["fence", "memory"], agent_config(tmp_path), run=Stuck())["result"] == "failed"


def test_a_docker_error_is_a_failed_fence_never_a_stopped_one(tmp_path):
    import subprocess

    class NoDaemon(FakeHost):
        def __call__(self, argv, **kw):
            if argv[0] == "docker":
                self.calls.append(argv)
                return subprocess.CompletedProcess(argv, 1, "", "Cannot connect to the Docker daemon at "
                                                   "unix:///var/run/docker.sock. Is the docker daemon running?")
            return super().__call__(argv, **kw)

    answer = ff.agent_handle(["fence", "memory"], agent_config(tmp_path), run=NoDaemon(running=True))
    assert answer["result"] == "failed" and "Cannot connect to the Docker daemon" in answer["error"]
    status = ff.agent_handle(["status", "memory"], agent_config(tmp_path), run=NoDaemon(running=True))
    assert status["running"] is None and "Cannot connect" in status["error"]

    class Gone(FakeHost):
        def __call__(self, argv, **kw):
            if argv[:2] == ["docker", "inspect"]:
                return subprocess.CompletedProcess(argv, 1, "", "Error: No such object: mcp-memory-1")
            return super().__call__(argv, **kw)

    # A container that no longer exists does not serve: that fence did stop it.
    assert ff.agent_handle(["fence", "memory"], agent_config(tmp_path), run=Gone())["result"] == "stopped"


def _slot(tmp_path, slot, text, stamp=None):
    """A pushed slot of the memory replica root, with its stamp when ``stamp`` is given."""
    data = tmp_path / "replica" / "memory" / slot / "memory-data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "memory.jsonl").write_text(text)
    if stamp is not None:
        (tmp_path / "replica" / "memory" / (slot + ".synced")).write_text(stamp)
    return data


def _promote(tmp_path, host, config=None):
    return ff.agent_handle(["promote", "memory"], config or agent_config(tmp_path), run=host,
                           probe=lambda url, timeout, open_timeout: (True, "m"), sleep=lambda s: None)


def test_promote_gives_the_first_session_the_configured_open_timeout(tmp_path):
    config = agent_config(tmp_path)
    (tmp_path / "volume").mkdir()
    config["servers"]["memory"].update(ready_timeout=60, session_open_timeout=25)
    answers = iter([(False, ""), (True, "memory-server")])
    budgets = []

    def probe(url, timeout, open_timeout):
        budgets.append((timeout, open_timeout))
        return next(answers)

    result = ff.agent_handle(["promote", "memory"], config, run=FakeHost(running=False), probe=probe,
                             sleep=lambda s: None)
    assert result["result"] == "started"
    # mcp_failover_session_open_timeout (25 here), not the built-in 10 s; pings keep 2 s.
    assert budgets == [(2.0, 25.0), (2.0, 25.0)], budgets
    # The ready timeout still caps it: a 5 s ready budget never waits 25 s for a session.
    config["servers"]["memory"].update(ready_timeout=5)
    budgets.clear()
    answers = iter([(True, "memory-server")])
    ff.agent_handle(["promote", "memory"], config, run=FakeHost(running=False), probe=probe, sleep=lambda s: None)
    assert len(budgets) == 1 and 2.0 <= budgets[0][1] <= 5.0, budgets


def test_promote_installs_the_newest_complete_replica_then_waits_for_mcp(tmp_path):
    config = agent_config(tmp_path)
    (tmp_path / "volume").mkdir()
    (tmp_path / "volume" / "memory.jsonl").write_text("stale\n")
    host = FakeHost(running=False)
    answers = iter([(False, ""), (True, "memory-server")])
    budgets = []
    config["servers"]["memory"]["ready_timeout"] = 60

    def probe(url, timeout, open_timeout):
        budgets.append((timeout, open_timeout))
        return next(answers)

    # Nothing was ever pushed here: the container starts on its volume as it is.
    result = ff.agent_handle(["promote", "memory"], config, run=host, probe=probe, sleep=lambda s: None)
    # A ping gets 2 s; opening the first session (a stdio server's process starting behind the bridge)
    # gets up to 10 s of the ready timeout.
    assert budgets and all(b == (2.0, ff.PROMOTE_OPEN_TIMEOUT) for b in budgets), budgets
    assert result == {"server": "memory", "result": "started", "replica": {"memory/memory-data": "no replica yet"}}
    assert (tmp_path / "volume" / "memory.jsonl").read_text() == "stale\n"
    # The newest complete slot is installed; a newer one without its stamp is a push under way.
    _slot(tmp_path, "a", "replicated\n", stamp="1700000000.000\n")
    _slot(tmp_path, "b", "half-pushed\n")
    host = FakeHost(running=False)
    result = _promote(tmp_path, host, config)
    assert result["result"] == "started" and result["replica"] == {"memory/memory-data": "1700000000.000"}
    assert (tmp_path / "volume" / "memory.jsonl").read_text() == "replicated\n"
    # Copied as root: links that leave the tree, devices and specials stay out.
    copy = next(c for c in host.calls if c[0] == "rsync")
    assert {"--safe-links", "--no-devices", "--no-specials", "--delete"} <= set(copy)
    assert copy[-2:] == [str(tmp_path / "replica" / "memory" / "a" / "memory-data") + "/", str(tmp_path / "volume") + "/"]
    (tmp_path / "replica" / "memory" / "b.synced").write_text("1700000030.000\n")
    host.running = False
    assert _promote(tmp_path, host, config)["replica"] == {"memory/memory-data": "1700000030.000"}
    assert (tmp_path / "volume" / "memory.jsonl").read_text() == "half-pushed\n"


def test_promote_refuses_a_replica_whose_push_never_completed(tmp_path):
    (tmp_path / "volume").mkdir()
    (tmp_path / "volume" / "memory.jsonl").write_text("stale\n")
    _slot(tmp_path, "a", "half\n")  # the first push was cut: no stamp
    (tmp_path / "replica" / "memory" / "b.synced").write_text("garbage\n")  # a stamp that is no time, no slot
    host = FakeHost(running=False)
    result = _promote(tmp_path, host)
    assert result["result"] == "failed" and "no complete replica of memory" in result["error"]
    assert not any(c[:2] == ["docker", "start"] for c in host.calls) and not any(c[0] == "rsync" for c in host.calls)
    assert (tmp_path / "volume" / "memory.jsonl").read_text() == "stale\n"


def test_promote_refuses_symlinked_replicas_and_links_out_of_the_tree(tmp_path):
    import os

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "memory.jsonl").write_text("planted\n")
    root = tmp_path / "replica" / "memory"
    root.mkdir(parents=True)
    (root / "a.synced").write_text("1700000000.000\n")

    def refused(match):
        host = FakeHost(running=False)
        result = _promote(tmp_path, host)
        assert result["result"] == "failed" and match in result["error"], result
        assert not any(c[:2] == ["docker", "start"] for c in host.calls)
        assert not any(c[0] == "rsync" for c in host.calls)

    # The slot itself a symlink: no complete slot at all.
    (root / "a").symlink_to(outside)
    refused("no complete replica")
    (root / "a").unlink()
    # The volume's replica a symlink.
    (root / "a").mkdir()
    (root / "a" / "memory-data").symlink_to(outside)
    refused("is a symlink")
    (root / "a" / "memory-data").unlink()
    # Links out of the tree, stored munged by rrsync or not.
    data = _slot(tmp_path, "a", "replicated\n")
    os.symlink("/rsyncd-munged//etc/shadow", data / "shadow")
    refused("symlinks pointing outside it: shadow")
    (data / "shadow").unlink()
    (data / "sub").mkdir()
    os.symlink("../../x", data / "sub" / "up")
    refused("sub/up")
    (data / "sub" / "up").unlink()
    # Each step inside, the chain out: sub/top leads to the replica's top, so top/.. leaves it.
    os.symlink("/rsyncd-munged/..", data / "sub" / "top")
    os.symlink("top/../..", data / "sub" / "chain")
    refused("symlinks pointing outside it: sub/chain")
    (data / "sub" / "chain").unlink()
    (data / "sub" / "top").unlink()
    os.symlink("loop", data / "loop")
    refused("symlinks pointing outside it: loop")
    (data / "loop").unlink()
    # The replica root a symlink.
    moved = tmp_path / "moved"
    root.rename(moved)
    root.symlink_to(moved)
    refused("is a symlink")
    root.unlink()
    moved.rename(root)
    # A link that stays inside comes back in the volume, un-munged.
    os.symlink("/rsyncd-munged/memory.jsonl", data / "sub" / "current")
    os.symlink("../memory.jsonl", data / "sub" / "parent")
    result = _promote(tmp_path, FakeHost(running=False))
    assert result["result"] == "started", result
    assert os.readlink(tmp_path / "volume" / "sub" / "current") == "memory.jsonl"
    assert (tmp_path / "volume" / "sub" / "parent").read_text() == "replicated\n"


def test_promote_fails_when_the_container_never_answers(tmp_path):
    clock = iter(range(100))
    result = ff.agent_handle(["promote", "memory"], agent_config(tmp_path), run=FakeHost(running=False),
                             probe=lambda url, timeout, open_timeout: (False, "no answer"), sleep=lambda s: None,
                             clock=lambda: next(clock))
    assert result["result"] == "failed" and "did not answer MCP" in result["error"]
    result = ff.agent_handle(["promote", "memory"], agent_config(tmp_path), run=FakeHost(running=False, start_ok=False))
    assert result == {"server": "memory", "result": "failed", "error": "no such image"}


def test_route_is_checked_and_a_bad_config_is_put_back(tmp_path):
    config = agent_config(tmp_path)
    host = FakeHost()
    assert ff.agent_handle(["route", "memory", "dh-2"], config, run=host)["result"] == "routed"
    assert (tmp_path / "memory.conf").read_text() == "server 10.0.0.12:18300;\n"
    assert ["systemctl", "reload", "nginx"] in host.calls
    assert ff.agent_handle(["route", "memory", "dh-2"], config, run=host)["result"] == "unchanged"
    broken = FakeHost(nginx_ok=False)
    result = ff.agent_handle(["route", "memory", "dh-1"], config, run=broken)
    assert result["result"] == "failed"
    assert (tmp_path / "memory.conf").read_text() == "server 10.0.0.12:18300;\n"
    assert not any(argv[:2] == ["systemctl", "reload"] for argv in broken.calls)


def test_route_to_no_host_writes_a_pool_nginx_answers_502_from(tmp_path):
    config = agent_config(tmp_path)
    host = FakeHost()
    assert ff.agent_handle(["route", "memory", "dh-1"], config, run=host)["result"] == "routed"
    assert ff.agent_handle(["route", "memory", "-"], config, run=host) == {
        "server": "memory", "result": "routed", "host": "-"}
    text = (tmp_path / "memory.conf").read_text()
    assert text == ff.unrouted_text("memory") and "10.0.0.11" not in text
    assert [line for line in text.splitlines() if not line.startswith("#")] == ["server 127.0.0.1:9 down;"]
    # Only for a server routed here.
    import pytest

    with pytest.raises(ff.Refused):
        ff.agent_handle(["route", "other", "-"], config, run=host)


def test_the_role_seeds_a_route_through_the_agent_and_reloads_only_a_running_nginx(tmp_path):
    import re
    import subprocess

    import pytest

    routes = agent_config(tmp_path)["routes"]

    class Stopped(FakeHost):
        def __call__(self, argv, **kw):
            if argv[:2] == ["systemctl", "is-active"]:
                self.calls.append(argv)
                return subprocess.CompletedProcess(argv, 3, "", "")
            return super().__call__(argv, **kw)

    first = Stopped()
    # A first run: nginx is not running yet; the file is written and checked, nothing reloaded.
    assert ff.seed_route(["memory", "dh-1"], routes, str(tmp_path), run=first) == {
        "server": "memory", "result": "routed", "host": "dh-1", "reloaded": False}
    assert (tmp_path / "memory.conf").read_text() == "server 10.0.0.11:18300;\n"
    assert ["nginx", "-t", "-q"] in first.calls and not any(c[:2] == ["systemctl", "reload"] for c in first.calls)
    running = FakeHost()
    assert ff.seed_route(["memory", "dh-1"], routes, str(tmp_path), run=running)["result"] == "unchanged"
    assert ff.seed_route(["memory", "dh-2"], routes, str(tmp_path), run=running)["result"] == "routed"
    assert ["systemctl", "reload", "nginx"] in running.calls
    for words, message in ((["memory"], "route needs <server> <host>, a host of memory"),
                           (["memory", "dh-9"], "route needs <server> <host>, a host of memory"),
                           (["other", "dh-1"], "server other is not routed here"),
                           (["../x", "dh-1"], "a server name is required"),
                           (["memory", "dh-1; evil"], "route needs <server> <host>, a host of memory")):
        with pytest.raises(ff.Refused, match=re.escape(message)):
            ff.seed_route(words, routes, str(tmp_path), run=FakeHost())


def test_sync_pushes_only_from_the_running_host_and_always_unpauses(tmp_path):
    config = agent_config(tmp_path)
    assert ff.sync("memory", config, run=FakeHost(running=False)) == {"server": "memory", "result": "not active here"}
    (tmp_path / "volume").mkdir()
    (tmp_path / "volume" / "memory.jsonl").write_text("graph\n")
    host = FakeHost(running=True)
    result = ff.sync("memory", config, run=host)
    assert result["result"] == "synced"
    assert (tmp_path / "outbox" / "memory" / "memory-data" / "memory.jsonl").read_text() == "graph\n"
    rsyncs = [c for c in host.calls if c[0] == "rsync"]
    outbox = str(tmp_path / "outbox" / "memory" / "memory-data") + "/"
    # Paused only for the local copy; the push to the peer runs unpaused.
    assert rsyncs[0][-2:] == [str(tmp_path / "volume") + "/", outbox]
    pause = host.calls.index(["docker", "pause", "mcp-memory-1"])
    unpause = host.calls.index(["docker", "unpause", "mcp-memory-1"])
    assert pause < host.calls.index(rsyncs[0]) < unpause < host.calls.index(rsyncs[1])
    failing = FakeHost(running=True, rsync_ok=False)
    assert ff.sync("memory", config, run=failing)["result"] == "failed"
    assert ["docker", "unpause", "mcp-memory-1"] in failing.calls
    assert len([c for c in failing.calls if c[0] == "rsync"]) == 1
    assert 'fleetops_failover_sync_success{server="memory"} 0' in ff.sync_metrics("memory", {"result": "failed"}, 1.0)


def test_a_push_unstamps_its_slot_first_writes_the_stamp_last_and_spares_the_other_slot(tmp_path):
    config = agent_config(tmp_path)
    config["servers"]["memory"]["sync_key"] = "/k_memory"
    (tmp_path / "volume").mkdir()
    (tmp_path / "volume" / "memory.jsonl").write_text("graph\n")
    host = FakeHost(running=True)
    assert ff.sync("memory", config, run=host)["slot"] == "a"
    unstamp, data, stamp = [c for c in host.calls if c[0] == "rsync"][1:]
    # Paths are relative to the server's own rrsync root on the peer, reached with the server's own key.
    for argv in (unstamp, data, stamp):
        shell = argv[argv.index("-e") + 1]
        assert shell.startswith("ssh -i /k_memory ") and "StrictHostKeyChecking=yes" in shell
    assert unstamp[-1] == "10.0.0.12:." and unstamp[-2].endswith("/empty/")
    assert ["--delete", "--include=/a.synced", "--exclude=*"] == unstamp[2:5]
    assert data[-2:] == [str(tmp_path / "outbox" / "memory") + "/", "10.0.0.12:a/"]
    assert {"--delete-delay", "--delay-updates", "--safe-links", "--no-devices", "--no-specials"} <= set(data)
    assert "--delete" not in data  # deletions only after the transfer
    assert stamp[-1] == "10.0.0.12:." and stamp[-2].endswith("/stamp/") and "--delete" not in stamp
    assert (tmp_path / "outbox" / "memory.slot").read_text() == "a\n"
    # The next push goes to the other slot, so the complete one survives a push cut short.
    host = FakeHost(running=True)
    assert ff.sync("memory", config, run=host)["slot"] == "b"
    assert any("--include=/b.synced" in c for c in host.calls) and any(c[-1] == "10.0.0.12:b/" for c in host.calls)

    class CutShort(FakeHost):
        def __call__(self, argv, **kw):
            if argv[0] == "rsync" and argv[-1].endswith(":a/"):
                self.calls.append(argv)
                import subprocess

                return subprocess.CompletedProcess(argv, 255, "", "connection closed")
            return super().__call__(argv, **kw)

    cut = CutShort(running=True)
    answer = ff.sync("memory", config, run=cut)
    assert answer == {"server": "memory", "result": "failed", "slot": "a", "step": "data", "error": "connection closed"}
    assert not any(c[-1] == "10.0.0.12:." and "--ignore-times" in c for c in cut.calls)  # no stamp after a cut push
    assert (tmp_path / "outbox" / "memory.slot").read_text() == "b\n"  # not recorded: the retry goes to a again
    assert ff.sync("memory", config, run=FakeHost(running=True))["slot"] == "a"


def test_the_daemon_persists_state_and_publishes_metrics(tmp_path):
    import io
    import json

    config = {"interval": 0, "failures": 2, "probe_timeout": 1, "state_file": str(tmp_path / "state.json"),
              "event_log": str(tmp_path / "events.jsonl"), "metrics_file": str(tmp_path / "failover.prom"),
              "load_balancers": ["lb-1"], "servers": [{"name": "memory", "primary": "dh-1", "standby": "dh-2"}]}
    (tmp_path / "failover.json").write_text(json.dumps(config))
    fake = Fake([False, False])
    daemon = ff.Daemon(str(tmp_path / "failover.json"), actions_factory=lambda c: fake, sleep=lambda s: None,
                       out=io.StringIO())
    daemon.run(cycles=2)
    saved = json.loads((tmp_path / "state.json").read_text())["servers"]["memory"]
    assert saved["active"] == "dh-2" and saved["generation"] == 1
    events = [json.loads(line)["event"] for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert events[0] == "took_over" and "failover_done" in events
    assert 'fleetops_failover_active{server="memory",host="dh-2"} 1' in (tmp_path / "failover.prom").read_text()


def test_the_drill_times_detection_and_recovery_from_the_daemons_events(tmp_path):
    import json

    log = tmp_path / "events.jsonl"
    config = {"state_file": str(tmp_path / "state.json"), "event_log": str(log),
              "servers": [{"name": "memory", "primary": "dh-1", "standby": "dh-2"}]}
    now = [100.0]

    def clock():
        return now[0]

    def sleep(seconds):
        now[0] += 1.0
        if now[0] == 104.0:
            log.write_text("".join(json.dumps(e) + "\n" for e in (
                {"ts": 50.0, "event": "failover_done", "server": "memory"},  # an older drill: ignored
                {"ts": 103.0, "event": "failover_started", "server": "memory"},
                {"ts": 103.5, "event": "failover_done", "server": "memory"})))

    answers = iter([True, False, False, False, True, True])

    def probe(url, timeout, token=None, cafile=None):
        return next(answers), ""

    fake = Fake([])
    result = ff.drill(config, "memory", "http://lb/mcp/memory", actions=fake, probe=probe, clock=clock, sleep=sleep)
    assert ("fence", "dh-1") in fake.calls
    assert result["result"] == "recovered" and result["failed_calls"] == 3
    after = (result["detected_after_seconds"], result["switched_after_seconds"], result["recovered_after_seconds"])
    assert after == (3.0, 3.5, 4.0)
    import pytest

    with pytest.raises(ff.Refused, match="not a failover server"):
        ff.drill(config, "other", "http://lb/mcp/other", actions=fake, probe=probe)


def test_the_daemon_speaks_to_agents_with_pinned_keys_and_reads_unreachable_as_none():
    import subprocess

    config = {"ssh": {"key": "/k", "known_hosts": "/kh", "connect_timeout": 3, "user": "root"},
              "hosts": {"dh-1": "10.0.0.11"}, "servers": [{"name": "memory", "stop_timeout": 5}]}
    calls = []

    def run(argv, **_):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, '{"result": "stopped"}\n', "")

    assert ff.SshActions(config, run=run).fence("memory", "dh-1") == "stopped"
    argv = calls[0]
    assert argv[:3] == ["ssh", "-i", "/k"] and "StrictHostKeyChecking=yes" in argv and "UserKnownHostsFile=/kh" in argv
    assert argv[-4:] == ["10.0.0.11", "--", "fence", "memory"]
    gone = ff.SshActions(config, run=lambda argv, **_: subprocess.CompletedProcess(argv, 255, "", "no route"))
    assert gone.fence("memory", "dh-1") == "unreachable" and gone.status("memory", "dh-1") is None
    # An agent whose docker failed answers running: null with a failed fence; neither is "stopped".
    broken = ff.SshActions(config, run=lambda argv, **_: subprocess.CompletedProcess(
        argv, 0, '{"result": "failed", "running": null, "error": "docker failed: no daemon"}\n', ""))
    assert broken.fence("memory", "dh-1") == "failed" and broken.status("memory", "dh-1") is None


def test_the_daemon_shares_one_ssh_connection_a_host_only_under_its_service(tmp_path, monkeypatch):
    """Under systemd (RUNTIME_DIRECTORY, the unit's private directory) the daemon's status calls reuse one
    connection a host; its commands, and every call from the command line, connect on their own as before."""
    import json
    import subprocess

    config = {"interval": 0, "failures": 2, "probe_timeout": 1, "state_file": str(tmp_path / "state.json"),
              "ssh": {"key": "/k", "known_hosts": "/kh", "connect_timeout": 3, "user": "root"},
              "hosts": {"dh-2": "10.0.0.12"}, "load_balancers": [],
              "servers": [{"name": "memory", "primary": "dh-1", "standby": "dh-2", "stop_timeout": 5}]}
    (tmp_path / "failover.json").write_text(json.dumps(config))
    calls = []

    def run(argv, **_):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, '{"running": false, "synced": null, "result": "stopped"}\n', "")

    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(runtime))
    daemon = ff.Daemon(str(tmp_path / "failover.json"), actions_factory=lambda c: ff.SshActions(c, run=run))
    assert daemon.actions.status("memory", "dh-2") is False
    argv = calls[-1]
    assert "ControlMaster=auto" in argv and "ControlPath=%s/ssh-%%C" % runtime in argv
    assert "ControlPersist=%d" % ff.MUX_PERSIST in argv
    # The host and the agent's words stay last: the options go before them.
    assert argv[-4:] == ["10.0.0.12", "--", "status", "memory"]
    # A command that changes something connects anew: a host frozen since the last call is not waited for
    # beyond ConnectTimeout.
    daemon.actions.fence("memory", "dh-2")
    assert calls[-1][-4:] == ["10.0.0.12", "--", "fence", "memory"]
    assert not any(word.startswith("Control") for word in calls[-1])
    # The configuration file is not changed by it.
    assert "control_dir" not in json.loads((tmp_path / "failover.json").read_text())["ssh"]

    monkeypatch.delenv("RUNTIME_DIRECTORY")
    plain = ff.Daemon(str(tmp_path / "failover.json"), actions_factory=lambda c: ff.SshActions(c, run=run))
    plain.actions.status("memory", "dh-2")
    assert not any(word.startswith("Control") for word in calls[-1])
    # A directory that is not there (the service stopped) is not used either.
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "gone"))
    ff.Daemon(str(tmp_path / "failover.json"), actions_factory=lambda c: ff.SshActions(c, run=run)).actions.status(
        "memory", "dh-2")
    assert not any(word.startswith("Control") for word in calls[-1])
    assert ff.mux_argv(config["ssh"]) == []


def test_every_load_balancer_is_switched_at_once_and_the_ones_that_did_not_answer_are_named():
    import subprocess
    import threading
    import time

    config = {"ssh": {"key": "/k", "known_hosts": "/kh", "connect_timeout": 3, "user": "root"},
              "hosts": {"lb-1": "10.0.0.21", "lb-2": "10.0.0.22", "lb-3": "10.0.0.23"},
              "load_balancers": ["lb-1", "lb-2", "lb-3"], "servers": [{"name": "memory"}]}
    inside, most = [0], [0]
    lock = threading.Lock()

    def run(argv, **_):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.3)
        with lock:
            inside[0] -= 1
        if "10.0.0.22" in argv:
            return subprocess.CompletedProcess(argv, 255, "", "timed out")
        return subprocess.CompletedProcess(argv, 0, '{"result": "routed"}\n', "")

    actions = ff.SshActions(config, run=run)
    assert actions.route("memory", "dh-2") == ["lb-2"]
    # All three sessions were open at the same time: the switch takes as long as the slowest one.
    assert most[0] == 3
    assert actions.route("memory", None, only=["lb-3"]) == [] and actions.load_balancers == ["lb-1", "lb-2", "lb-3"]


def test_the_include_directory_comes_from_the_command_line_and_must_be_absolute():
    assert ff.split_include_dir(["memory", "dh-2"]) == (ff.INCLUDE_DIR, ["memory", "dh-2"])
    assert ff.split_include_dir(["--include-dir", "/srv/failover/", "memory", "dh-2"]) == ("/srv/failover", ["memory", "dh-2"])
    for bad in (["--include-dir"], ["--include-dir", "srv/failover"], ["--include-dir", "/srv/../etc"],
                ["--include-dir", "/srv/fail over"]):
        with pytest.raises(ff.Refused, match="--include-dir needs an absolute directory path"):
            ff.split_include_dir(bad)


def test_the_standbys_agent_reports_when_its_copy_was_taken_and_the_status_report_gives_ages(tmp_path):
    config = agent_config(tmp_path)
    host = FakeHost(running=False)
    # No complete replica yet: no time.
    assert ff.agent_handle(["status", "memory"], config, run=host) == {
        "server": "memory", "running": False, "synced": None, "claim": None}
    root = tmp_path / "replica" / "memory"
    (root / "a" / "memory-data").mkdir(parents=True)
    (root / "a.synced").write_text("1000.5\n")
    (root / "b").mkdir()
    (root / "b.synced").write_text("1010.25\n")
    assert ff.agent_handle(["status", "memory"], config, run=host)["synced"] == 1010.25

    # The daemon keeps the standby's answer, publishes it, and the status verb turns it into ages.
    class Reporting(Fake):
        def status(self, server, host):
            self.synced = {(server, host): 1010.25}
            return False

    state, _ = run(Reporting([True]), 1)
    assert state.standby_synced == 1010.25
    text = ff.metrics_text([state])
    assert 'fleetops_failover_standby_synced_timestamp_seconds{server="memory",host="dh-2"} 1010.250' in text
    assert 'fleetops_failover_last_failover_timestamp_seconds{server="memory"} 0.000' in text
    report = ff.status_report([state], now=1030.25)["servers"]["memory"]
    assert report["standby_copy_age_seconds"] == 20.0 and report["last_failover_age_seconds"] is None
    assert (report["active"], report["standby"]) == ("dh-1", "dh-2")
    # After a failover the new standby has no copy of the new active's data until its first push.
    state, _ = run(Reporting([False] * 3), 3)
    assert state.standby_synced is None and state.last_failover == 1.0
    assert ff.status_report([state], now=11.0)["servers"]["memory"]["last_failover_age_seconds"] == 10.0


class Moving(Fake):
    """Fake actions for a planned switchover; ``fail`` names the step that fails."""

    def __init__(self, fail=None, fence="stopped"):
        super().__init__([], fence=fence, promote=fail != "promote")
        self.fail = fail

    def handoff(self, server, host):
        self.calls.append(("handoff", host))
        return self.fail != "handoff"

    def resume(self, server, host):
        self.calls.append(("resume", host))
        return True


def _switch(actions, target="dh-2"):
    state = ff.ServerState("memory", active="dh-1", standby="dh-2", generation=3, standby_synced=5.0)
    events = []
    ff.switchover(state, actions, target, events.append, request="r1", now=9.0)
    return state, events


def test_a_switchover_stops_the_active_hands_its_data_over_then_starts_and_routes_the_standby():
    actions = Moving()
    state, events = _switch(actions)
    assert actions.calls == [("fence", "dh-1"), ("handoff", "dh-1"), ("promote", "dh-2"), ("route", "dh-2")]
    assert (state.active, state.standby, state.generation, state.failovers) == ("dh-2", "dh-1", 4, 0)
    assert state.standby_synced is None
    assert [e["event"] for e in events] == ["switchover_started", "switchover_done"]
    assert all(e["request"] == "r1" for e in events)


@pytest.mark.parametrize("fail, fence, calls, reason", [
    ("handoff", "stopped", [("fence", "dh-1"), ("handoff", "dh-1"), ("resume", "dh-1")],
     "the last copy to dh-2 failed"),
    ("promote", "stopped", [("fence", "dh-1"), ("handoff", "dh-1"), ("promote", "dh-2"), ("fence", "dh-2"),
                            ("resume", "dh-1")], "dh-2 did not start"),
    (None, "unreachable", [("fence", "dh-1")], "the active dh-1 did not stop (unreachable)"),
    (None, "failed", [("fence", "dh-1"), ("resume", "dh-1")], "the active dh-1 did not stop (failed)"),
])
def test_a_switchover_step_that_fails_puts_the_old_active_back(fail, fence, calls, reason):
    actions = Moving(fail, fence=fence)
    state, events = _switch(actions)
    assert actions.calls == calls
    assert (state.active, state.generation) == ("dh-1", 3)
    assert events[-1]["event"] == "switchover_aborted" and events[-1]["reason"] == reason


def test_a_switchover_only_goes_to_the_standby():
    actions = Moving()
    state, events = _switch(actions, target="dh-9")
    assert actions.calls == [] and state.active == "dh-1"
    assert events == [{"event": "switchover_aborted", "server": "memory", "request": "r1",
                       "reason": "dh-9 is not the standby of memory (the standby is dh-2)"}]


def test_handoff_pushes_a_stopped_containers_volumes_unpaused_and_resume_starts_without_the_replica(tmp_path):
    config = agent_config(tmp_path)
    (tmp_path / "volume").mkdir()
    (tmp_path / "volume" / "memory.jsonl").write_text("last writes\n")
    assert ff.agent_handle(["handoff", "memory"], config, run=FakeHost(running=True))["error"] == \
        "the container runs: fence it first"
    host = FakeHost(running=False)
    assert ff.agent_handle(["handoff", "memory"], config, run=host)["result"] == "synced"
    assert (tmp_path / "outbox" / "memory" / "memory-data" / "memory.jsonl").read_text() == "last writes\n"
    assert not any(c[:2] in (["docker", "pause"], ["docker", "unpause"]) for c in host.calls)
    # resume: docker start and nothing else (no rsync of a replica into the volumes).
    host = FakeHost(running=False)
    assert ff.agent_handle(["resume", "memory"], config, run=host) == {"server": "memory", "result": "started"}
    assert host.calls == [["docker", "start", "mcp-memory-1"]]
    for words in (["handoff"], ["handoff", "memory", "x"], ["resume", "other"]):
        with pytest.raises(ff.Refused):
            ff.agent_handle(words, config, run=FakeHost())


def test_the_switchover_request_reaches_the_daemon_once_and_its_answer_comes_back(tmp_path):
    config = {"servers": [{"name": "memory"}], "request_dir": str(tmp_path / "requests"),
              "event_log": str(tmp_path / "events.jsonl")}
    with pytest.raises(ff.Refused):
        ff.ask_switchover(config, "other", "dh-2", 1)
    clock = iter(range(1000, 2000))

    def daemon_turn(_seconds):
        # The daemon takes the request (once) and logs its outcome with the request's id.
        request = ff.take_request(config, "memory")
        assert request is not None and request["to"] == "dh-2"
        assert ff.take_request(config, "memory") is None
        with open(config["event_log"], "a", encoding="utf-8") as log:
            log.write(json.dumps({"ts": 1500.0, "event": "switchover_done", "server": "memory",
                                  "request": request["id"], "active": "dh-2"}) + "\n")

    answer = ff.ask_switchover(config, "memory", "dh-2", 60, clock=lambda: float(next(clock)), sleep=daemon_turn)
    assert answer["event"] == "switchover_done" and answer["active"] == "dh-2"
    assert oct((tmp_path / "requests").stat().st_mode & 0o777) == "0o700"
    # Nobody answers: the caller hears so.
    quiet = iter(range(3000, 4000))
    answer = ff.ask_switchover(config, "memory", "dh-2", 5, clock=lambda: float(next(quiet)), sleep=lambda s: None)
    assert answer["event"] == "switchover_unanswered" and "fleetops-failover.service" in answer["reason"]


def test_the_daemon_takes_a_switchover_request_instead_of_probing_and_saves_the_move(tmp_path):
    config = {"state_file": str(tmp_path / "state.json"), "event_log": str(tmp_path / "events.jsonl"),
              "request_dir": str(tmp_path / "requests"), "interval": 0, "failures": 3, "load_balancers": ["lb-1"],
              "servers": [{"name": "memory", "primary": "dh-1", "standby": "dh-2"}]}
    (tmp_path / "failover.json").write_text(json.dumps(config))
    (tmp_path / "requests").mkdir()
    (tmp_path / "requests" / "memory.json").write_text(json.dumps({"id": "q1", "to": "dh-2"}))
    fake = Moving()
    daemon = ff.Daemon(str(tmp_path / "failover.json"), actions_factory=lambda c: fake, sleep=lambda s: None,
                       out=io.StringIO())
    daemon.run(cycles=1)
    assert ("probe", "dh-1") not in fake.calls and ("handoff", "dh-1") in fake.calls
    assert not (tmp_path / "requests" / "memory.json").exists()
    saved = json.loads((tmp_path / "state.json").read_text())["servers"]["memory"]
    assert (saved["active"], saved["generation"], saved["failovers"]) == ("dh-2", 1, 0)
    done = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()][-1]
    assert done["event"] == "switchover_done" and done["request"] == "q1"



# --------------------------------------------------------------------------
# Two controllers: the acting one elected by the VIP, generation fencing on the agents


def test_claim_allowed_is_generation_fencing():
    assert ff.claim_allowed(None, 0, "lb-1")
    recorded = {"generation": 4, "controller": "lb-2"}
    assert ff.claim_allowed(recorded, 5, "lb-1")
    assert ff.claim_allowed(recorded, 4, "lb-2")          # the same controller, the same generation
    assert not ff.claim_allowed(recorded, 4, "lb-1")      # one generation, one controller
    assert not ff.claim_allowed(recorded, 3, "lb-2")


def test_the_agent_refuses_a_stale_claim_and_records_what_it_did(tmp_path):
    config = agent_config(tmp_path)
    host = FakeHost(running=True)
    assert ff.agent_handle(["fence", "memory", "3:lb-2"], config, run=host)["result"] == "stopped"
    recorded = ff.read_claim(config, "memory")
    assert (recorded["generation"], recorded["controller"], recorded["command"], recorded["result"]) == (
        3, "lb-2", "fence", "stopped")
    assert oct((tmp_path / "claims" / "memory.json").stat().st_mode & 0o777) == "0o600"
    host.calls.clear()
    # A lower generation, or the same one from another controller: refused before docker is touched.
    for words in (["promote", "memory", "2:lb-2"], ["promote", "memory", "3:lb-1"], ["resume", "memory", "1:lb-1"]):
        answer = ff.agent_handle(words, config, run=host)
        assert answer == {"server": "memory", "result": "stale", "claim": recorded}
    assert host.calls == []
    # The status answer carries the record (read by a controller taking over).
    assert ff.agent_handle(["status", "memory"], config, run=host)["claim"] == recorded
    # Load balancers: the same fence on the include.
    (tmp_path / "memory.conf").write_text("server 10.0.0.11:18300;\n")
    nginx = FakeHost()
    assert ff.agent_handle(["route", "memory", "dh-2", "7:lb-1"], config, run=nginx)["result"] == "routed"
    assert ff.agent_handle(["route", "memory", "dh-1", "6:lb-2"], config, run=nginx)["result"] == "stale"
    assert (tmp_path / "memory.conf").read_text() == "server 10.0.0.12:18300;\n"
    # A claim that is not GENERATION:CONTROLLER is a word too many.
    with pytest.raises(ff.Refused):
        ff.agent_handle(["fence", "memory", "x:lb-1"], config, run=host)


def test_ssh_actions_carry_the_claim_and_remember_a_stale_answer():
    seen = []

    def run(argv, **kw):
        import subprocess

        seen.append(argv)
        answer = {"result": "stale", "claim": {"generation": 9, "controller": "lb-2"}}
        return subprocess.CompletedProcess(argv, 0, json.dumps(answer) + "\n", "")

    config = {"controller": "lb-1", "probe_timeout": 1, "load_balancers": ["lb-1", "lb-2"],
              "ssh": {"key": "/k", "known_hosts": "/kh", "connect_timeout": 3, "user": "root"},
              "hosts": {"dh-1": "10.0.0.11", "dh-2": "10.0.0.12", "lb-1": "10.0.0.21", "lb-2": "10.0.0.22"},
              "servers": [{"name": "memory", "primary": "dh-1", "standby": "dh-2", "stop_timeout": 5,
                           "ready_timeout": 5, "probe_urls": {}}]}
    actions = ff.SshActions(config, run=run)
    actions.claims["memory"] = 4
    assert actions.fence("memory", "dh-1") == "stale"
    assert seen[-1][-3:] == ["fence", "memory", "4:lb-1"]
    assert actions.stale["memory"] == {"generation": 9, "controller": "lb-2", "host": "dh-1"}
    actions.status("memory", "dh-2")
    assert seen[-1][-2:] == ["status", "memory"]  # a read carries no claim


def test_placement_believes_a_running_container_then_the_newest_recorded_start():
    state = ff.ServerState("memory", "dh-1", "dh-2")
    started = {"command": "promote", "result": "started"}
    assert ff.placement(state, {"dh-1": False, "dh-2": True}, {}) == "dh-2"
    assert ff.placement(state, {"dh-1": True, "dh-2": True},
                        {"dh-1": dict(started, generation=2), "dh-2": dict(started, generation=5)}) == "dh-2"
    assert ff.placement(state, {"dh-1": False, "dh-2": None},
                        {"dh-1": dict(started, generation=2), "dh-2": dict(started, generation=5)}) == "dh-2"
    fenced = {"command": "fence", "result": "stopped", "generation": 6}
    assert ff.placement(state, {"dh-1": False, "dh-2": False},
                        {"dh-1": dict(started, generation=5), "dh-2": fenced}) == "dh-1"
    assert ff.placement(state, {"dh-1": None, "dh-2": None}, {}) == "dh-1"


class World:
    """Two Docker hosts and two load balancers whose agents fence by generation (claim_allowed), shared by
    the fake actions of two controllers."""

    def __init__(self):
        self.running = {"dh-1": True, "dh-2": False}
        self.routes = {"lb-1": "dh-1", "lb-2": "dh-1"}
        self.records = {}
        self.reachable = {"dh-1": True, "dh-2": True}
        self.clock = 1000

    def command(self, host, controller, generation, do):
        if not ff.claim_allowed(self.records.get(host), generation, controller):
            return {"result": "stale", "claim": self.records[host]}
        result = do()
        self.clock += 1
        self.records[host] = {"generation": generation, "controller": controller, "result": result,
                              "command": do.__name__, "ts": float(self.clock)}
        return {"result": result}


class WorldActions(ff.Actions):
    load_balancers = ["lb-1", "lb-2"]

    def __init__(self, world, controller):
        self.world, self.controller = world, controller
        self.claims, self.stale, self.recorded, self.calls = {}, {}, {}, []

    def _cmd(self, server, host, do):
        answer = self.world.command(host, self.controller, self.claims[server], do)
        if answer["result"] == "stale":
            self.stale[server] = dict(answer["claim"], host=host)
        return answer["result"]

    def probe(self, server, host):
        return (self.world.running[host] and self.world.reachable[host], "x")

    def fence(self, server, host):
        if not self.world.reachable[host]:
            return "unreachable"

        def fence():
            self.world.running[host] = False
            return "stopped"
        return self._cmd(server, host, fence)

    def promote(self, server, host):
        def promote():
            self.world.running[host] = True
            return "started"
        return self._cmd(server, host, promote) == "started"

    def route(self, server, host, only=None):
        refused = []
        for lb in only or self.load_balancers:
            def route(lb=lb):
                self.world.routes[lb] = host
                return "routed"
            if self._cmd(server, lb, route) != "routed":
                refused.append(lb)
        return refused

    def lb_claims(self, server):
        return [self.world.records[lb] for lb in self.load_balancers if lb in self.world.records]

    def status(self, server, host):
        self.recorded[(server, host)] = self.world.records.get(host)
        return self.world.running[host] if self.world.reachable[host] else None


def two_controllers(tmp_path, world, vip_holder):
    daemons = {}
    for name in ("lb-1", "lb-2"):
        config = {"controller": name, "acting_vip": "10.0.0.100", "interval": 1, "failures": 2,
                  "state_file": str(tmp_path / ("%s-state.json" % name)),
                  "metrics_file": str(tmp_path / ("%s.prom" % name)), "load_balancers": ["lb-1", "lb-2"],
                  "servers": [{"name": "memory", "primary": "dh-1", "standby": "dh-2"}]}
        (tmp_path / ("%s.json" % name)).write_text(json.dumps(config))
        daemons[name] = ff.Daemon(str(tmp_path / ("%s.json" % name)),
                                  actions_factory=lambda c, n=name: WorldActions(world, n), sleep=lambda s: None,
                                  out=io.StringIO(), has_address=lambda vip, n=name: vip_holder[0] == n,
                                  clock=lambda: 0.0)
    return daemons


def events_of(daemon):
    return [json.loads(line) for line in daemon.out.getvalue().splitlines()]


def test_only_the_vip_holder_acts_and_the_other_publishes_that_it_stands_by(tmp_path):
    world, holder = World(), ["lb-1"]
    daemons = two_controllers(tmp_path, world, holder)
    daemons["lb-1"].cycle()
    daemons["lb-2"].cycle()
    assert [e["event"] for e in events_of(daemons["lb-1"])] == ["took_over"]
    assert events_of(daemons["lb-2"]) == []
    assert daemons["lb-2"].actions.calls == [] and world.records.get("dh-1") is None
    assert (tmp_path / "lb-2.prom").read_text().endswith("fleetops_failover_controller_acting 0\n")
    assert "fleetops_failover_active" not in (tmp_path / "lb-2.prom").read_text()
    assert "fleetops_failover_controller_acting 1\n" in (tmp_path / "lb-1.prom").read_text()
    # The takeover claimed the load balancers under a generation above every one recorded.
    assert world.records["lb-1"] == {"generation": 1, "controller": "lb-1", "result": "routed", "command": "route",
                                     "ts": 1001.0}


def test_the_other_controller_takes_over_and_a_later_primary_loss_still_fails_over(tmp_path):
    world, holder = World(), ["lb-1"]
    daemons = two_controllers(tmp_path, world, holder)
    for _ in range(2):
        daemons["lb-1"].cycle()
        daemons["lb-2"].cycle()
    # lb-1 dies (frozen: it does not even see the VIP go); keepalived moves the VIP to lb-2.
    holder[0] = "lb-2"
    daemons["lb-2"].cycle()
    took = events_of(daemons["lb-2"])[-1]
    assert took["event"] == "took_over" and took["active"] == "dh-1" and took["claim"] == 2
    # The primary's container stops: lb-2 fails over.
    world.running["dh-1"] = False
    for _ in range(2):
        daemons["lb-2"].cycle()
    assert world.running == {"dh-1": False, "dh-2": True} and world.routes == {"lb-1": "dh-2", "lb-2": "dh-2"}
    assert events_of(daemons["lb-2"])[-1]["event"] == "failover_done"
    # lb-1 wakes up still believing it acts, with its old state (dh-1 active, generation 1): its probe of
    # dh-1 fails, it tries to fail over, the agents refuse its stale claim, it reads the placement again,
    # and it moves nothing back.
    holder[0] = "lb-1"
    for _ in range(4):
        daemons["lb-1"].cycle()
        assert world.running == {"dh-1": False, "dh-2": True}
        assert set(world.routes.values()) == {"dh-2"}
    kinds = [e["event"] for e in events_of(daemons["lb-1"])]
    assert "claim_refused" in kinds and kinds.count("took_over") == 2
    assert daemons["lb-1"].states[0].active == "dh-2"
    # The switch lb-2 made is lb-1's last failover now (the time dh-2's agent recorded the start).
    assert daemons["lb-1"].states[0].last_failover == world.records["dh-2"]["ts"]


def test_the_heartbeat_notices_that_the_process_did_not_run():
    def heartbeat(*ticks):
        clock = iter(ticks)
        beat = ff.Heartbeat(every=0.5, jump=3.0, clock=lambda: next(clock), sleep=lambda s: None)
        beat.beat(beats=len(ticks) - 1)
        return beat

    # Beats 0.5 s apart, one a little late (a loaded host): running.
    assert heartbeat(0.0, 0.5, 1.0, 1.6, 2.1, 3.5).take() is False
    # A beat 7.4 s after the one before: the process was frozen meanwhile. Told once.
    beat = heartbeat(0.0, 0.5, 1.0, 1.6, 9.0, 9.5)
    assert beat.take() is True and beat.take() is False


def test_the_heartbeat_thread_sees_a_real_stop_and_continue(tmp_path):
    """A real process, stopped with SIGSTOP (as the cgroup freezer of `docker pause` stops it) and continued."""
    import os
    import signal
    import subprocess
    import sys
    import time

    child = tmp_path / "beat.py"
    child.write_text(
        "import importlib.machinery, importlib.util, sys, time\n"
        f"loader = importlib.machinery.SourceFileLoader('ff', {str(SCRIPT)!r})\n"
        "spec = importlib.util.spec_from_loader('ff', loader)\n"
        "ff = sys.modules['ff'] = importlib.util.module_from_spec(spec)\n"
        "loader.exec_module(ff)\n"
        "beat = ff.Heartbeat(every=0.05, jump=1.5).start()\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    time.sleep(0.1)\n"
        "    print(beat.take(), flush=True)\n")
    proc = subprocess.Popen([sys.executable, str(child)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        before = [proc.stdout.readline().strip() for _ in range(5)]
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(4)  # well past the 1.5 s a loaded machine may delay a beat
        os.kill(proc.pid, signal.SIGCONT)
        after = [proc.stdout.readline().strip() for _ in range(10)]
    finally:
        proc.kill()
        proc.wait()
    assert before == ["False"] * 5, before
    assert after.count("True") == 1, after


class Thawed:
    """A heartbeat that saw the process stop (once)."""

    def __init__(self):
        self.late = True

    def take(self):
        late, self.late = self.late, False
        return late


def failed_over_by_lb2_while_lb1_was_frozen(tmp_path):
    """lb-1 acts, then freezes; keepalived moves the VIP to lb-2, which takes over, and when the primary's
    container stops, fails it over to dh-2. Returns (world, holder, daemons) with lb-1 not run since."""
    world, holder = World(), ["lb-1"]
    daemons = two_controllers(tmp_path, world, holder)
    daemons["lb-1"].cycle()
    holder[0] = "lb-2"
    daemons["lb-2"].cycle()
    world.running["dh-1"] = False
    for _ in range(2):
        daemons["lb-2"].cycle()
    assert world.running == {"dh-1": False, "dh-2": True} and set(world.routes.values()) == {"dh-2"}
    return world, holder, daemons


def test_a_controller_frozen_in_the_middle_of_a_cycle_reads_the_placement_before_acting_again(tmp_path):
    # lb-1 froze in the middle of a cycle: its cycles then look regular (the next starts on time after the thaw).
    world, holder, daemons = failed_over_by_lb2_while_lb1_was_frozen(tmp_path)
    # lb-1 thaws with the VIP; its heartbeat saw the stop: it reads the placement first, so it never
    # probes its old active nor starts a failover the agents would refuse.
    holder[0] = "lb-1"
    daemons["lb-1"].heartbeat = Thawed()
    for _ in range(4):
        daemons["lb-1"].cycle()
    kinds = [e["event"] for e in events_of(daemons["lb-1"])]
    assert kinds == ["took_over", "took_over"], kinds
    assert events_of(daemons["lb-1"])[1]["reason"] == "cycle gap"
    assert daemons["lb-1"].states[0].active == "dh-2"
    assert world.running == {"dh-1": False, "dh-2": True} and set(world.routes.values()) == {"dh-2"}


def test_a_thawed_controller_that_cannot_read_the_placement_waits_and_moves_nothing(tmp_path):
    world, holder, daemons = failed_over_by_lb2_while_lb1_was_frozen(tmp_path)
    records = dict(world.records)
    # lb-1 thaws and gets the VIP back; the gap in its cycles makes it read the placement again. dh-1 says
    # its container is stopped and dh-2 does not answer yet: lb-1 does not know where the server runs, so
    # it neither probes nor commands anything (its old record, dh-1, would fail dh-2's server over to dh-2
    # and route the load balancers away from it).
    holder[0] = "lb-1"
    daemons["lb-1"].last_cycle = -100.0
    world.reachable["dh-2"] = False
    for _ in range(3):
        daemons["lb-1"].cycle()
    assert world.records == records and world.running == {"dh-1": False, "dh-2": True}
    assert set(world.routes.values()) == {"dh-2"}
    kinds = [e["event"] for e in events_of(daemons["lb-1"])]
    assert kinds[1:] == ["takeover_deferred"], kinds  # once, not every cycle
    deferred = events_of(daemons["lb-1"])[-1]
    assert deferred["reason"] == "cycle gap" and deferred["running"] == {"dh-1": False, "dh-2": None}
    # dh-2 answers: lb-1 takes over with the placement the agents tell, and moves nothing.
    world.reachable["dh-2"] = True
    for _ in range(3):
        daemons["lb-1"].cycle()
    took = events_of(daemons["lb-1"])[2]
    assert (took["event"], took["reason"], took["active"]) == ("took_over", "cycle gap", "dh-2"), took
    assert [e["event"] for e in events_of(daemons["lb-1"])][3:] == []
    assert world.running == {"dh-1": False, "dh-2": True} and set(world.routes.values()) == {"dh-2"}
    assert daemons["lb-1"].states[0].active == "dh-2" and not daemons["lb-1"].states[0].deferred


def test_a_takeover_fails_a_dead_primary_over_when_only_its_host_is_silent(tmp_path):
    # The other half of the rule: the host the record names active does not answer (down, or cut off) and
    # the standby's container is stopped: the record stands, and the dead primary is failed over.
    world, holder = World(), ["lb-1"]
    daemons = two_controllers(tmp_path, world, holder)
    daemons["lb-1"].cycle()
    holder[0] = "lb-2"
    world.reachable["dh-1"] = False
    for _ in range(3):
        daemons["lb-2"].cycle()
    kinds = [e["event"] for e in events_of(daemons["lb-2"])]
    assert kinds[0] == "took_over" and "takeover_deferred" not in kinds and "failover_done" in kinds, kinds
    assert world.running["dh-2"] is True and set(world.routes.values()) == {"dh-2"}


def test_a_partition_never_leaves_the_load_balancers_on_two_actives_across_a_takeover(tmp_path):
    world, holder = World(), ["lb-1"]
    daemons = two_controllers(tmp_path, world, holder)
    daemons["lb-1"].cycle()
    # lb-1 cannot reach dh-1 (which still serves clients): it unroutes dh-1 everywhere, then promotes dh-2.
    world.reachable["dh-1"] = False
    for _ in range(2):
        daemons["lb-1"].cycle()
        routed = {world.routes[lb] for lb in ("lb-1", "lb-2")}
        assert len(routed - {"-", None}) <= 1
    assert world.routes == {"lb-1": "dh-2", "lb-2": "dh-2"}
    # The VIP moves; lb-2 adopts dh-2 (running) and the healed dh-1, running a stale container, is fenced.
    world.reachable["dh-1"] = True
    holder[0] = "lb-2"
    daemons["lb-2"].cycle()
    assert daemons["lb-2"].states[0].active == "dh-2" and world.running["dh-1"] is False
    assert set(world.routes.values()) == {"dh-2"}


def test_a_takeover_does_not_wait_for_a_silent_load_balancer_and_retries_it_later(tmp_path):
    world, holder = World(), ["lb-2"]

    class Hung(WorldActions):
        def lb_claims(self, server):
            self.unanswered = {server: ["lb-1"]}
            return super().lb_claims(server)

        def route(self, server, host, only=None):
            self.calls.append(("route", host, tuple(only or ())))
            return [lb for lb in (only or self.load_balancers) if lb == "lb-1"] + [
                lb for lb in super().route(server, host, only=[x for x in (only or self.load_balancers)
                                                                if x != "lb-1"] or ["lb-2"])]

    daemons = two_controllers(tmp_path, world, holder)
    daemon = daemons["lb-2"]
    daemon.actions = Hung(world, "lb-2")
    daemon.cycle()
    took = events_of(daemon)[0]
    assert took["event"] == "took_over" and took["unrouted_load_balancers"] == ["lb-1"]
    assert daemon.actions.calls[0] == ("route", "dh-1", ("lb-2",))  # lb-1 not waited for
    # The next probes do not try lb-1 again at once (each try of a hung host costs a timeout).
    routes = len([c for c in daemon.actions.calls if c[0] == "route"])
    daemon.cycle()
    assert len([c for c in daemon.actions.calls if c[0] == "route"]) == routes
    daemon.states[0].reroute_after = 0.0  # REROUTE_EVERY later
    daemon.cycle()
    assert daemon.actions.calls[-1] == ("route", "dh-1", ("lb-1",))


def test_a_controller_that_did_not_run_for_a_while_takes_over_again_but_a_slow_cycle_does_not(tmp_path):
    world, holder = World(), ["lb-1"]
    daemons = two_controllers(tmp_path, world, holder)
    daemon, now = daemons["lb-1"], [0.0]
    daemon.clock = lambda: now[0]

    class Slow(WorldActions):
        def probe(self, server, host):
            now[0] += 30.0  # a probe that takes 30 s: the cycle is slow, not late
            return super().probe(server, host)

    daemon.actions = Slow(world, "lb-1")
    daemon.cycle()
    daemon.cycle()
    assert [e["event"] for e in events_of(daemon)] == ["took_over"]
    now[0] += 1.0 + ff.GAP_SLACK + 0.5  # the next cycle comes late: the host froze in the daemon's sleep
    daemon.cycle()
    assert [(e["event"], e.get("reason")) for e in events_of(daemon)][-1] == ("took_over", "cycle gap")
