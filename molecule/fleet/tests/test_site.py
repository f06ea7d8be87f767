"""site.yml as a whole: one stage by its tag, a load balancer restored from the backup host after
losing its configuration and its local archives, and a rolling update under steady load through
the VIP without a failed call.

These run after the gateway, keepalived, load balancer and monitoring tests (file order); the
rolling update is last because it leaves the reference server on a new image.
"""

from __future__ import annotations

import os
import re
import time

from fleetops_testlib import container_host, docker_inspect, run_playbook
from lbha import SteadyLoad, session, whoami

ARCHIVES = "/var/backups/fleetops"
LB_PATHS = ["/etc/nginx", "/etc/keepalived"]


def recap(output: str) -> dict:
    """{host: {"ok": n, "changed": n, ...}} from the PLAY RECAP."""
    hosts = {}
    for host, counts in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, re.M):
        hosts[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return hosts


def test_one_stage_runs_alone_by_its_tag_and_changes_nothing():
    result = run_playbook("../../playbooks/site.yml", extra_args=["--tags", "load_balancers"])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    tasks = set(re.findall(r"^TASK \[([^\]]+)\]", output, re.M))
    roles = {t.split(" : ")[0] for t in tasks if " : " in t}
    assert {"fleetops.mcp.nginx_lb", "fleetops.mcp.keepalived"} <= roles, sorted(roles)
    assert "fleetops.mcp.nginx_lb : Write nginx.conf and its njs functions, checked with nginx -t before they replace the old ones" in tasks
    # The other stages contribute neither their work nor their input checks (those carry their own
    # roles' tags, not always): only the plan and the facts every stage reads.
    for work in ("fleetops.mcp.docker_host : Install Docker Engine and the Python Docker SDK",
                 "fleetops.mcp.mcp_server : Build images on the host, without network",
                 "fleetops.mcp.monitoring_agent : Install the exporters",
                 "fleetops.mcp.monitoring : Install Prometheus, Alertmanager and the blackbox exporter",
                 "fleetops.mcp.backup : Install fleetops-backup",
                 "fleetops.mcp.backup : Check backup_calendar with systemd",
                 "fleetops.mcp.firewall : Find where the controller's SSH session comes from"):
        assert work not in tasks, work
    counts = recap(output)
    assert set(counts) >= {"lb-1", "lb-2"}
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), counts


def digests(host, paths) -> dict:
    out = host.run("find " + " ".join(paths) + " -type f -print0 | sort -z | xargs -0 sha256sum")
    assert out.rc == 0, out.stderr
    return dict(line.split("  ", 1)[::-1] for line in out.stdout.splitlines())


def test_a_load_balancer_that_lost_its_disk_is_restored_from_the_backup_host_byte_for_byte():
    lb, bk = container_host("lb-2"), container_host("bk-1")
    run = lb.run("systemctl start fleetops-backup.service")
    assert run.rc == 0, lb.run("journalctl -u fleetops-backup.service -n 20 --no-pager").stdout
    archive = lb.run(f"ls -1t {ARCHIVES}/lb-2-*.tar.gz.age | head -1").stdout.strip()
    assert archive, lb.run(f"ls -l {ARCHIVES}").stdout
    # The copy on the backup host is the same archive.
    copies = bk.run(f"find / -xdev -name {os.path.basename(archive)} -not -path '/proc/*'").stdout.split()
    assert len(copies) == 1, copies
    assert bk.run(f"sha256sum {copies[0]}").stdout.split()[0] == lb.run(f"sha256sum {archive}").stdout.split()[0]
    before = digests(lb, LB_PATHS)
    assert before

    # The disaster: the configuration and every local archive gone, nginx down.
    lb.run("systemctl stop nginx")
    assert lb.run(f"rm -rf /etc/nginx/* /etc/keepalived/* {ARCHIVES}/*").rc == 0
    try:
        result = run_playbook("../../playbooks/restore.yml",
                              extra_vars={"restore_hosts": "lb-2", "restore_from_backup_host": True})
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        assert "restored load-balancer-config" in " ".join(output.split()), output[-3000:]
        assert digests(lb, LB_PATHS) == before
    finally:
        lb.run("systemctl start nginx")
    assert lb.run("nginx -t").rc == 0
    # The restored load balancer serves MCP again (TLS, token) on its own address.
    deadline = time.monotonic() + 30
    while True:
        try:
            assert "/mcp-reference-" in whoami(session("172.30.214.22"))
            break
        except Exception:  # noqa: BLE001 (nginx comes back within seconds)
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_a_rolling_update_under_steady_load_fails_no_call():
    context = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], ".cache", "mcp-images", "reference")
    before = {h: docker_inspect(container_host(h), "mcp-reference-1")["State"]["StartedAt"] for h in ("ms-1", "ms-2")}
    with SteadyLoad() as load:
        time.sleep(3)
        warm = load.ok
        result = run_playbook("../../playbooks/rolling_update.yml", extra_vars={
            "rollout_server": "reference", "rollout_image": "fleetops/mcp-reference:1.1.0",
            "rollout_build_context": context})
        time.sleep(3)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    print(f"rolling update: {load.ok} calls answered, {len(load.failed)} failed")
    assert warm > 0 and load.ok > 100, load.ok
    assert load.failed == [], load.failed[:10]
    # Every replica on both hosts was replaced by the new image, and answers through the VIP.
    for host in ("ms-1", "ms-2"):
        for replica in ("mcp-reference-1", "mcp-reference-2"):
            info = docker_inspect(container_host(host), replica)
            assert info["Config"]["Image"] == "fleetops/mcp-reference:1.1.0", (host, replica)
        assert docker_inspect(container_host(host), "mcp-reference-1")["State"]["StartedAt"] != before[host]
    assert "/mcp-reference-" in whoami(session())
