"""Backups and restores: the timer, one run's encrypted archive and authenticated manifest (also on
the backup host), a byte-identical restore onto a wiped host, and a damaged, forged or undecryptable
archive refused with nothing changed.

The data is real: @modelcontextprotocol/server-memory's knowledge graph,
written through the load balancer with MCP tools/call.
"""

from __future__ import annotations

import json
import os
import time
import uuid

import shutil
import subprocess

import pytest
from fleetops_testlib import container_host, container_ip, run_playbook
from memory_graph import recalled, remember

DH, LB, BK = "bf-dh-1", "bf-lb-1", "bf-bk"
ARCHIVES = "/var/backups/fleetops"
# bf-dh-1 keeps its Docker data in /srv/docker (host_vars/bf-dh-1.yml).
VOLUME = "/srv/docker/volumes/memory-data/_data"
TOOL = "/usr/local/libexec/fleetops/fleetops-backup"
MANIFEST_KEY = "/etc/fleetops/backup-manifest.key"


@pytest.fixture(scope="module", autouse=True)
def failover_daemon_paused():
    """These tests stop and wipe bf-dh-1 on purpose; the failover daemon would (rightly) fail it over."""
    bk = container_host(BK)
    assert bk.run("systemctl stop fleetops-failover.service").rc == 0
    yield
    assert bk.run("systemctl start fleetops-failover.service").rc == 0


def digests(host, paths) -> dict:
    """sha256 of every regular file under the given paths on a host."""
    out = host.run("find " + " ".join(paths) + " -type f -print0 | sort -z | xargs -0 -r sha256sum")
    assert out.rc == 0, out.stderr
    return dict(reversed(line.split(None, 1)) for line in out.stdout.splitlines())


def newest_archive(host) -> str:
    """The newest backup archive (not a pre-restore copy) in the host's archive directory."""
    name = host.run("hostname").stdout.strip()
    names = sorted(host.run(f"ls {ARCHIVES}").stdout.split())
    archives = [n for n in names if n.startswith(name + "-") and n.endswith(".tar.gz.age")]
    assert archives, names
    return f"{ARCHIVES}/{archives[-1]}"


def manifest_of(archive: str) -> str:
    return archive.replace(".tar.gz.age", ".manifest.json")


def keyed(host, path: str) -> str:
    """The manifest's digest of a file on a host: HMAC-SHA256 with the host's manifest key."""
    script = ("import hashlib, hmac, sys; key = open(sys.argv[1], 'rb').read().strip(); "
              "print(hmac.new(key, open(sys.argv[2], 'rb').read(), hashlib.sha256).hexdigest())")
    out = host.run(f'python3 -c "{script}" {MANIFEST_KEY} {path}')
    assert out.rc == 0, out.stderr
    return out.stdout.strip()


def run_backup(host) -> None:
    result = host.run("systemctl start fleetops-backup.service")
    assert result.rc == 0, host.run("journalctl -u fleetops-backup.service -n 20 --no-pager").stdout


def test_the_timer_is_enabled_persistent_and_scheduled():
    for name in (DH, LB):
        host = container_host(name)
        timer = host.service("fleetops-backup.timer")
        assert timer.is_enabled and timer.is_running
        show = host.run("systemctl show fleetops-backup.timer -p Persistent -p RandomizedDelayUSec "
                        "-p NextElapseUSecRealtime -p TimersCalendar").stdout
        assert "Persistent=yes" in show and "RandomizedDelayUSec=30min" in show
        assert "OnCalendar=*-*-* 02:30:00" in show
        assert "NextElapseUSecRealtime=" in show and "NextElapseUSecRealtime=\n" not in show
    # The backup host backs up nothing itself.
    assert not container_host(BK).file("/etc/systemd/system/fleetops-backup.timer").exists


def test_one_service_run_yields_an_archive_with_its_manifest_here_and_on_the_backup_host():
    marker = f"before-backup-{uuid.uuid4().hex[:8]}"
    remember(marker, marker)
    dh, bk = container_host(DH), container_host(BK)
    # The daemon really keeps its volumes off the default root on this host.
    assert dh.run("docker info -f '{{.DockerRootDir}}'").stdout.strip() == "/srv/docker"
    assert not dh.file("/var/lib/docker/volumes/memory-data").exists
    before = time.time()
    run_backup(dh)
    archive = newest_archive(dh)
    manifest = json.loads(dh.file(manifest_of(archive)).content_string)
    assert manifest["created"] >= before - 1
    assert {i["name"] for i in manifest["items"]} == {"docker-host-config", "volume-memory-memory-data"}
    # The live graph file is in the manifest with its exact keyed digest, never a plain sha256.
    live = digests(dh, [VOLUME])[f"{VOLUME}/memory.jsonl"]
    assert manifest["files"][f"volume-memory-memory-data{VOLUME}/memory.jsonl"]["hmac"] == keyed(
        dh, f"{VOLUME}/memory.jsonl")
    assert live not in dh.file(manifest_of(archive)).content_string
    # Encrypted with age before it left the host, no plaintext beside it; the manifest is authenticated.
    assert manifest["encrypted"] is True and len(manifest["hmac"]) == 64
    assert dh.run(f"head -c 21 {archive}").stdout == "age-encryption.org/v1"
    assert [n for n in dh.run(f"ls -A {ARCHIVES}").stdout.split()
            if n.endswith((".tar.gz", ".partial")) and not n.startswith("pre-restore-")] == []
    key = dh.file(MANIFEST_KEY)
    assert (key.user, key.group, key.mode) == ("root", "root", 0o400)
    assert marker in dh.file(f"{VOLUME}/memory.jsonl").content_string
    assert (dh.file(archive).mode, dh.file(ARCHIVES).mode) == (0o600, 0o700)
    verify = dh.run(f"{TOOL} verify {archive}")
    assert verify.rc == 0 and json.loads(verify.stdout)["ok"] is True
    # Without the identity, only the ciphertext is checked; the host holds no key that decrypts.
    assert json.loads(verify.stdout)["contents_checked"] is False
    assert dh.run("grep -rl AGE-SECRET-KEY /etc /root /var/backups").rc != 0
    # The same bytes on the backup host, in this host's own directory.
    copy = f"/srv/fleetops-backups/{DH}/{os.path.basename(archive)}"
    assert bk.file(copy).sha256sum == manifest["archive_sha256"]
    # The manifest key never goes to the backup host.
    assert bk.run(f"grep -rlF '{dh.file(MANIFEST_KEY).content_string.strip()}' /srv /etc /root").rc != 0
    # The run's metrics for node_exporter.
    prom = dh.file("/var/lib/prometheus/node-exporter/fleetops_backup.prom").content_string
    assert "fleetops_backup_last_run_success 1" in prom
    assert f"fleetops_backup_last_size_bytes {manifest['archive_size']}" in prom
    # The paused container was unpaused.
    assert dh.run("docker inspect -f '{{.State.Status}}' mcp-memory-1").stdout.strip() == "running"


def test_the_load_balancer_backs_up_its_configuration():
    lb = container_host(LB)
    run_backup(lb)
    manifest = json.loads(lb.file(manifest_of(newest_archive(lb))).content_string)
    assert manifest["files"]["load-balancer-config/etc/nginx/nginx.conf"]["hmac"] == keyed(lb, "/etc/nginx/nginx.conf")


def test_a_wiped_host_is_restored_byte_for_byte_from_the_backup_host():
    dh = container_host(DH)
    marker = f"restored-{uuid.uuid4().hex[:8]}"
    remember(marker, marker)
    run_backup(dh)
    paths = [VOLUME, "/etc/docker/daemon.json", "/etc/nftables.d", "/etc/fleetops/mcp-servers.json"]
    before = digests(dh, paths)
    # Wipe: the data, the configuration and every local archive.
    assert dh.run(f"docker stop mcp-memory-1 && rm -rf {VOLUME}/* /etc/nftables.d/* {ARCHIVES}/*").rc == 0
    assert dh.run("printf '{}' > /etc/fleetops/mcp-servers.json").rc == 0
    assert dh.run("printf '{}' > /etc/docker/daemon.json && docker start mcp-memory-1").rc == 0
    assert digests(dh, paths) != before
    result = run_playbook("../../playbooks/restore.yml", extra_vars={"restore_hosts": DH, "restore_from_backup_host": True})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert digests(dh, paths) == before
    assert "restored docker-host-config, volume-memory-memory-data" in " ".join(output.split())
    # What it overwrote is kept; the server answers with the data from before the wipe.
    assert dh.run(f"ls {ARCHIVES}/pre-restore-*.tar.gz").rc == 0
    assert recalled()[marker] == [marker]


def test_a_damaged_archive_is_refused_and_nothing_changes():
    dh = container_host(DH)
    run_backup(dh)
    archive = newest_archive(dh)
    survivor = f"after-backup-{uuid.uuid4().hex[:8]}"
    remember(survivor, "must survive the refused restore")
    size = int(dh.run(f"stat -c %s {archive}").stdout)
    assert dh.run(f"printf 'X' | dd of={archive} bs=1 seek={size // 2} conv=notrunc status=none").rc == 0
    before = digests(dh, [VOLUME, "/etc/nftables.d"])
    started = dh.run("docker inspect -f '{{.State.StartedAt}}' mcp-memory-1").stdout
    result = run_playbook("../../playbooks/restore.yml", extra_vars={"restore_hosts": DH})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Refusing to restore" in output and "corrupted" in output, output[-3000:]
    assert digests(dh, [VOLUME, "/etc/nftables.d"]) == before
    assert dh.run("docker inspect -f '{{.State.StartedAt}}' mcp-memory-1").stdout == started
    assert recalled()[survivor] == ["must survive the refused restore"]


def test_restore_without_a_host_names_restore_hosts():
    for extra_vars in ({}, {"restore_hosts": "no-such-host"}):
        result = run_playbook("../../playbooks/restore.yml", extra_vars=extra_vars)
        output = " ".join((result.stdout + result.stderr).split())
        assert result.returncode != 0
        assert "Set restore_hosts to the inventory host (or pattern) to restore" in output, output[-2000:]
        assert f"got '{extra_vars.get('restore_hosts', '')}', which names no host" in output


@pytest.mark.parametrize(
    ("extra_vars", "message"),
    [
        ({"restore_archive": "../../etc/shadow"}, "got '../../etc/shadow' and []"),
        ({"restore_items": ["volume-memory-memory-data", "--keep-dir=/"]},
         'got \'\' and ["volume-memory-memory-data", "--keep-dir=/"]'),
    ],
    ids=["archive-path", "item-option"],
)
def test_restore_refuses_an_archive_path_or_an_item_that_is_not_a_name(extra_vars, message):
    dh = container_host(DH)
    before = digests(dh, [VOLUME])
    result = run_playbook("../../playbooks/restore.yml", extra_vars={"restore_hosts": DH, **extra_vars})
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert "backup_restore_archive must be an archive's file name" in output, output[-2000:]
    assert message in output, output[-2000:]
    assert digests(dh, [VOLUME]) == before


@pytest.mark.parametrize(
    ("extra_vars", "message"),
    [
        ({"backup_calendar": "every night"}, "backup_calendar 'every night' is not a systemd calendar expression"),
        ({"backup_keep_count": 0}, "backup_keep_count must be a whole number from 1 to 1000; got 0"),
        ({"backup_copy_host": "nowhere"}, "backup_copy_host must name another host of the inventory (got 'nowhere')"),
        ({"backup_copy_keep_count": 0}, "backup_copy_keep_count must be a whole number from 1 to 1000; got 0"),
        ({"backup_copy_prune_calendar": "often"},
         "backup_copy_prune_calendar 'often' is not a systemd calendar expression"),
        ({"backup_age_recipients": []}, "backup_age_recipients must list the operator's age public keys"),
        ({"backup_manifest_key": "short"}, "backup_manifest_key must be a secret of at least 32 characters"),
        ({"backup_extra_paths": ["/srv/data/"]}, "backup_extra_paths must be a normalised absolute path"),
    ],
    ids=["calendar", "keep-count", "copy-host", "copy-keep-count", "prune-calendar", "no-recipients", "short-key",
         "trailing-slash"],
)
def test_bad_inputs_fail_naming_the_variable(extra_vars, message):
    dh = container_host(DH)
    config = dh.file("/etc/fleetops/backup.json").content_string
    result = run_playbook("../../playbooks/backup.yml", limit=DH, extra_vars=extra_vars)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output, output[-3000:]
    assert dh.file("/etc/fleetops/backup.json").content_string == config


SSH_DIR = "/etc/fleetops/backup-ssh"


def push(host, key: str, source: str, extra: str = "") -> object:
    """rsync from ``host`` to its directory on the backup host with ``key``, as the backup service does."""
    ssh = (f"ssh -i {key} -o UserKnownHostsFile={SSH_DIR}/known_hosts -o StrictHostKeyChecking=yes "
           "-o BatchMode=yes -o ConnectTimeout=10")
    return host.run(f"rsync -r {extra} -e '{ssh}' {source} fleetops-backup@{container_ip(BK)}:")


def test_the_backup_host_is_append_only_for_sources_and_keeps_its_own_count():
    lb, dh, bk = container_host(LB), container_host(DH), container_host(BK)
    received = f"/srv/fleetops-backups/{LB}"

    def archives():
        return sorted(n for n in bk.run(f"ls {received}").stdout.split() if n.endswith(".tar.gz.age"))

    for _ in range(8):  # more than the backup host keeps (backup_keep_count 5)
        if len(archives()) > 5:
            break
        run_backup(lb)
        time.sleep(1.1)  # archive names are stamped to the second
    before = archives()
    assert len(before) > 5, before
    # A source cannot delete there: rrsync refuses --delete ...
    assert lb.run("mkdir -p /tmp/fo-empty").rc == 0
    refused = push(lb, f"{SSH_DIR}/id_ed25519", "/tmp/fo-empty/", "--delete")
    assert refused.rc != 0 and "delete" in (refused.stderr + refused.stdout).lower(), refused.stderr
    assert archives() == before
    # ... and its key works from its own address only: the load balancer's key on another host is refused.
    key = lb.file(f"{SSH_DIR}/id_ed25519").content_string
    assert dh.run(f"install -m 0600 /dev/null /tmp/fo-lb-key && printf '%s' '{key}' > /tmp/fo-lb-key").rc == 0
    try:
        stolen = push(dh, "/tmp/fo-lb-key", "/etc/hostname")
        assert stolen.rc != 0, stolen.stdout
    finally:
        dh.run("rm -f /tmp/fo-lb-key")
    assert archives() == before
    # The backup host's own retention keeps the newest backup_copy_keep_count (5), with their manifests.
    pruned = bk.run("systemctl start fleetops-backup-prune.service")
    assert pruned.rc == 0, bk.run("journalctl -u fleetops-backup-prune.service -n 20 --no-pager").stdout
    assert archives() == before[-5:]
    manifests = sorted(n for n in bk.run(f"ls {received}").stdout.split() if n.endswith(".manifest.json"))
    assert manifests == [manifest_of(n) for n in before[-5:]]


def wrong_identity(tmp_path) -> str:
    """A fresh age identity on the controller that the archives are not encrypted for."""
    if not shutil.which("age-keygen"):
        pytest.skip("age-keygen is not installed on the controller (Debian package age)")
    path = tmp_path / "not-the-operators.agekey"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    return str(path)


def test_a_wrong_identity_is_refused_by_name_and_removed_from_the_host(tmp_path):
    dh = container_host(DH)
    run_backup(dh)
    archive = os.path.basename(newest_archive(dh))
    other = wrong_identity(tmp_path)
    before = digests(dh, [VOLUME, "/etc/nftables.d"])
    started = dh.run("docker inspect -f '{{.State.StartedAt}}' mcp-memory-1").stdout
    result = run_playbook("../../playbooks/restore.yml", extra_vars={
        "restore_hosts": DH, "restore_archive": archive, "backup_age_identity_file": other})
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert "Refusing to restore" in output and "is encrypted for other recipients" in output, output[-3000:]
    assert digests(dh, [VOLUME, "/etc/nftables.d"]) == before
    assert dh.run("docker inspect -f '{{.State.StartedAt}}' mcp-memory-1").stdout == started
    # The identity was on the host for the restore only, and is gone after a refusal too.
    assert dh.run("ls -d /tmp/fleetops-restore-identity.*").rc != 0


def test_a_manifest_edited_on_the_backup_host_is_refused_before_anything():
    dh, bk = container_host(DH), container_host(BK)
    run_backup(dh)
    archive = os.path.basename(newest_archive(dh))
    remote = f"/srv/fleetops-backups/{DH}/{manifest_of(archive)}"
    # What a compromised backup host could do: widen an item to / (it has no manifest key to re-sign).
    edit = ("import json, sys; m = json.load(open(sys.argv[1])); m['items'][0]['paths'] = ['/']; "
            "json.dump(m, open(sys.argv[1], 'w'))")
    assert bk.run(f'python3 -c "{edit}" {remote}').rc == 0
    before = digests(dh, [VOLUME, "/etc/nftables.d"])
    result = run_playbook("../../playbooks/restore.yml", extra_vars={
        "restore_hosts": DH, "restore_from_backup_host": True, "restore_archive": archive})
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert "Refusing to restore" in output and "fails its HMAC" in output, output[-3000:]
    assert digests(dh, [VOLUME, "/etc/nftables.d"]) == before


def test_restore_names_the_archive_chosen_and_its_manifest_date_before_restoring():
    dh = container_host(DH)
    run_backup(dh)
    first = os.path.basename(newest_archive(dh))
    time.sleep(1.1)  # archive names are stamped to the second
    run_backup(dh)
    assert os.path.basename(newest_archive(dh)) != first
    result = run_playbook("../../playbooks/restore.yml", extra_vars={"restore_hosts": DH, "restore_archive": first})
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 0, output[-3000:]
    stamp = first[len(DH) + 1:].split(".")[0]
    assert f"restoring from {first}, made {stamp} (UTC, from its authenticated manifest)" in output, output[-3000:]
