"""The backup role's fleetops-backup: archives with a manifest, verify, refusal of damage, byte-identical restore."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from script_loader import load_script

SCRIPT = Path(__file__).resolve().parents[3] / "roles/backup/files/fleetops-backup"


fb = load_script(SCRIPT, "fleetops_backup")

_SCRATCH = os.path.realpath(tempfile.gettempdir())


def _inside_scratch(path, dir_fd=None) -> bool:
    path = os.fsdecode(path)
    if dir_fd is not None and not os.path.isabs(path):
        path = os.path.join(os.readlink("/proc/self/fd/%d" % dir_fd), path)
    real = os.path.realpath(os.path.abspath(path))
    return real == _SCRATCH or real.startswith(_SCRATCH + os.sep)


@pytest.fixture(autouse=True)
def _writes_stay_in_the_scratch_dir(monkeypatch):
    """A restore under test runs as root: a regression must fail here, never touch the machine.

    The forged manifests below name ``/`` and ``/etc``; before the restore
    was confined, running them deleted the machine's own /etc. Every write,
    removal and rename the script makes is held to the temporary directory.
    """
    def guarded(name, original, *, writes=None):
        def call(path, *args, **kwargs):
            if (writes is None or writes(args, kwargs)) and not _inside_scratch(path, kwargs.get("dir_fd")):
                raise AssertionError("the script under test tried to %s %s outside %s" % (name, path, _SCRATCH))
            return original(path, *args, **kwargs)
        return call

    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    for name in ("unlink", "remove", "rmdir", "makedirs", "mkdir", "chmod", "chown", "lchown", "utime"):
        monkeypatch.setattr(os, name, guarded(name, getattr(os, name)))
    def opens_to_write(args, kwargs):
        return bool((args[0] if args else kwargs.get("flags", 0)) & writing)

    monkeypatch.setattr(os, "open", guarded("open", os.open, writes=opens_to_write))
    monkeypatch.setattr(shutil, "rmtree", guarded("rmtree", shutil.rmtree))
    for name in ("replace", "rename"):
        original = getattr(os, name)

        def both(src, dst, *args, _name=name, _original=original, **kwargs):
            for path, fd in ((src, kwargs.get("src_dir_fd")), (dst, kwargs.get("dst_dir_fd"))):
                if not _inside_scratch(path, fd):
                    raise AssertionError("the script under test tried to %s %s outside %s" % (_name, path, _SCRATCH))
            return _original(src, dst, *args, **kwargs)
        monkeypatch.setattr(os, name, both)
    original_symlink = os.symlink

    def symlink(src, dst, *args, **kwargs):
        if not _inside_scratch(os.path.join(os.path.dirname(os.fsdecode(dst)) or ".", "x"), kwargs.get("dir_fd")):
            raise AssertionError("the script under test tried to make a link at %s outside %s" % (dst, _SCRATCH))
        return original_symlink(src, dst, *args, **kwargs)
    monkeypatch.setattr(os, "symlink", symlink)


def test_the_guard_stops_a_write_outside_the_scratch_dir():
    with pytest.raises(AssertionError, match="outside"):
        os.unlink("/etc/fleetops-guard-test-never-exists")
    with pytest.raises(AssertionError, match="outside"):
        shutil.rmtree("/etc/fleetops-guard-test-never-exists")


def tree(root: Path) -> dict:
    """Every file under root: relative path -> bytes (and symlinks -> target)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_file():
            out[rel] = (path.read_bytes(), path.stat().st_mode & 0o777)
        else:
            out[rel] = ("dir",)
    return out


def write_key(directory: Path) -> str:
    key = directory / "manifest.key"
    key.write_text("k" * 64 + "\n")
    os.chmod(key, 0o400)
    return str(key)


@pytest.fixture()
def site(tmp_path):
    data = tmp_path / "data"
    (data / "notes" / "deep").mkdir(parents=True)
    (data / "notes" / "a.txt").write_text("alpha\n")
    (data / "notes" / "deep" / "b.bin").write_bytes(os.urandom(70_000))
    (data / "notes" / "secret").write_text("s")
    os.chmod(data / "notes" / "secret", 0o600)
    os.symlink("a.txt", data / "notes" / "link")
    conf = tmp_path / "etc" / "nginx.conf"
    conf.parent.mkdir()
    conf.write_text("events {}\n")
    key = write_key(tmp_path)
    calls = []

    def runner(command, **_):
        calls.append(command)
        return subprocess.CompletedProcess(command, 0, "", "")

    config = {
        "host": "dh-1", "archive_dir": str(tmp_path / "backups"), "keep_count": 3, "keep_days": 10,
        "textfile_dir": str(tmp_path), "manifest_key_file": key, "items": [
            {"name": "volume-notes", "paths": [str(data / "notes")], "hook": {"pause": ["mcp-notes-1"]},
             "restart": {"containers": ["mcp-notes-1"]}},
            {"name": "nginx", "paths": [str(conf)]},
        ],
    }
    return {"config": config, "data": data, "conf": conf, "calls": calls, "runner": runner, "tmp": tmp_path}


def test_a_run_writes_an_archive_and_manifest_and_pauses_around_the_volume(site):
    manifest = fb.run_backup(site["config"], now=1_800_000_000, runner=site["runner"])
    archive = os.path.join(site["config"]["archive_dir"], "dh-1-20270115T080000Z.tar.gz")
    assert manifest["archive"] == os.path.basename(archive) and os.path.exists(archive)
    assert oct(os.stat(archive).st_mode & 0o777) == "0o600"
    assert site["calls"] == [["docker", "pause", "mcp-notes-1"], ["docker", "unpause", "mcp-notes-1"]]
    assert {i["name"] for i in manifest["items"]} == {"volume-notes", "nginx"}
    names = set(manifest["files"])
    assert fb.member_name("volume-notes", str(site["data"] / "notes" / "deep" / "b.bin")) in names
    assert fb.verify(archive, site["config"])["archive_sha256"] == manifest["archive_sha256"]


def test_a_failing_item_still_unpauses_and_leaves_no_archive(site):
    site["config"]["items"][0]["paths"].append("/nonexistent/path")
    with pytest.raises(fb.BackupError, match="does not exist"):
        fb.run_backup(site["config"], runner=site["runner"])
    assert site["calls"][-1] == ["docker", "unpause", "mcp-notes-1"]
    assert os.listdir(site["config"]["archive_dir"]) == []


class _Answer:
    def __init__(self, returncode, stderr=""):
        self.returncode, self.stderr, self.stdout = returncode, stderr, ""


def test_a_pause_waits_while_the_failover_replication_holds_the_container_paused():
    """The failover replication pauses a server's container for its local copy: the backup waits, then pauses it."""
    answers = [_Answer(1, "Error response from daemon: Container abc is already paused"),
               _Answer(1, "Error response from daemon: Container abc is already paused"), _Answer(0)]
    calls, now = [], [0.0]

    def runner(argv, **_):
        calls.append(argv)
        return answers.pop(0) if argv[1] == "pause" else _Answer(0)

    def sleep(seconds):
        now[0] += seconds

    item = {"name": "volume-memory", "hook": {"pause": ["mcp-memory-1"]}}
    with fb.Hooks(item, runner, clock=lambda: now[0], sleep=sleep) as hooks:
        assert hooks.paused == ["mcp-memory-1"]
    assert calls == [["docker", "pause", "mcp-memory-1"]] * 3 + [["docker", "unpause", "mcp-memory-1"]]


def test_a_container_that_stays_paused_fails_the_item_by_name_and_is_left_as_it_was():
    calls, now = [], [0.0]

    def runner(argv, **_):
        calls.append(argv)
        return _Answer(1, "Error response from daemon: Container abc is already paused")

    def sleep(seconds):
        now[0] += seconds

    item = {"name": "volume-memory", "hook": {"pause": ["mcp-memory-1"]}}
    with pytest.raises(fb.BackupError, match="item volume-memory: cannot pause container mcp-memory-1: .*already paused"):
        with fb.Hooks(item, runner, clock=lambda: now[0], sleep=sleep):
            pass
    assert now[0] >= fb.PAUSE_WAIT_SECONDS
    assert ["docker", "unpause", "mcp-memory-1"] not in calls


def test_restore_onto_a_wiped_host_is_byte_identical(site):
    before = (tree(site["data"]), site["conf"].read_bytes())
    manifest = fb.run_backup(site["config"], runner=site["runner"])
    archive = os.path.join(site["config"]["archive_dir"], manifest["archive"])
    import shutil
    shutil.rmtree(site["data"])
    site["conf"].unlink()
    result = fb.restore(archive, str(site["tmp"] / "kept"), site["config"])
    assert result["restored"] == ["nginx", "volume-notes"]
    assert (tree(site["data"]), site["conf"].read_bytes()) == before
    # Nothing differs any more: a second restore changes nothing.
    assert fb.restore(archive, str(site["tmp"] / "kept"), site["config"])["restored"] == []


def test_restore_keeps_a_copy_of_what_it_overwrites_and_removes_extra_files(site):
    manifest = fb.run_backup(site["config"], runner=site["runner"])
    archive = os.path.join(site["config"]["archive_dir"], manifest["archive"])
    (site["data"] / "notes" / "a.txt").write_text("changed after the backup\n")
    (site["data"] / "notes" / "new.txt").write_text("created after the backup\n")
    result = fb.restore(archive, str(site["tmp"] / "kept"), site["config"], only=["volume-notes"])
    assert result["restored"] == ["volume-notes"]
    assert (site["data"] / "notes" / "a.txt").read_text() == "alpha\n"
    assert not (site["data"] / "notes" / "new.txt").exists()
    with tarfile.open(result["kept"]) as kept:
        names = kept.getnames()
        member = fb.member_name("volume-notes", str(site["data"] / "notes" / "new.txt"))
        assert member in names
        assert kept.extractfile(member).read() == b"created after the backup\n"


@pytest.mark.parametrize("damage", ["flip", "truncate", "no-manifest", "extra-member"])
def test_a_damaged_archive_is_refused_and_nothing_changes(site, damage):
    manifest = fb.run_backup(site["config"], runner=site["runner"])
    archive = os.path.join(site["config"]["archive_dir"], manifest["archive"])
    if damage == "flip":
        with open(archive, "r+b") as handle:
            handle.seek(200)
            byte = handle.read(1)
            handle.seek(200)
            handle.write(bytes([byte[0] ^ 0xFF]))
        message = "corrupted"
    elif damage == "truncate":
        with open(archive, "r+b") as handle:
            handle.truncate(os.path.getsize(archive) // 2)
        message = "truncated"
    elif damage == "no-manifest":
        os.unlink(fb.manifest_path(archive))
        message = "no readable manifest"
    else:
        # A rebuilt archive whose sums match a forged manifest, but with a member the backup never had.
        data = json.loads(Path(fb.manifest_path(archive)).read_text())
        extra = site["tmp"] / "evil"
        extra.write_text("x")
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(extra, arcname=fb.member_name("volume-notes", str(site["data"] / "notes" / "evil")))
        data["archive_sha256"] = fb.sha256_file(archive)
        data["archive_size"] = os.path.getsize(archive)
        # Even with the manifest key (the backup host never has it), the sums of the members are checked.
        data["hmac"] = fb.manifest_mac(data, b"k" * 64)
        Path(fb.manifest_path(archive)).write_text(json.dumps(data))
        message = "not in the manifest"
    (site["data"] / "notes" / "a.txt").write_text("current\n")
    before = tree(site["tmp"])
    with pytest.raises(fb.BackupError, match=message):
        fb.restore(archive, str(site["tmp"] / "kept"), site["config"])
    assert tree(site["tmp"]) == before


def test_retention_keeps_the_newest_by_count_and_age(site):
    day = 86400
    for offset in (0, 1, 2, 3, 12):
        fb.run_backup(site["config"], now=1_800_000_000 - offset * day, runner=site["runner"])
    removed = fb.prune(site["config"], now=1_800_000_000)
    left = [e["created"] for e in fb.list_archives(site["config"]["archive_dir"])]
    assert left == [1_800_000_000 - o * day for o in (0, 1, 2)]
    assert len(removed) == 2
    # An old newest archive is never pruned.
    site["config"]["keep_days"] = 0
    fb.prune(site["config"], now=1_800_000_000 + 100 * day)
    assert len(fb.list_archives(site["config"]["archive_dir"])) == 1


def test_prune_removes_what_a_dead_run_left_once_it_is_old_and_keeps_what_may_still_arrive(site):
    now = 1_800_000_000
    fb.run_backup(site["config"], now=now, runner=site["runner"])
    backups = Path(site["config"]["archive_dir"])
    old = now - 2 * fb.ORPHAN_GRACE_SECONDS
    left_behind = {
        "dh-1-20260101T000000Z.tar.gz": old,           # an archive whose manifest was never written
        "dh-1-20260102T000000Z.manifest.json": old,     # a manifest whose archive never arrived
        "dh-1-20260103T000000Z.tar.gz.partial": old,    # a run that died writing
        "dh-1-20270115T000000Z.manifest.json": now,     # arriving now: its archive may follow
        "pre-restore-20260104T000000Z.tar.gz": old,     # what a restore kept: not the run's
    }
    for name, mtime in left_behind.items():
        (backups / name).write_text("{}" if name.endswith(".json") else "x")
        os.utime(backups / name, (mtime, mtime))
    removed = fb.prune(site["config"], now=now)
    assert sorted(Path(r).name for r in removed) == sorted(list(left_behind)[:3])
    assert {p.name for p in backups.iterdir()} >= set(list(left_behind)[3:])
    assert len([p for p in backups.iterdir() if p.name.endswith(".tar.gz") and not p.name.startswith("pre-")]) == 1


def test_the_backup_host_applies_the_retention_in_each_sources_directory(site, tmp_path):
    day = 86400
    received = tmp_path / "received"
    for host in ("dh-1", "lb-1"):
        config = dict(site["config"], host=host, archive_dir=str(received / host))
        for offset in range(5):
            fb.run_backup(config, now=1_800_000_000 - offset * day, runner=site["runner"])
    (received / "stray-file").write_text("not a source directory")
    removed = fb.prune_received(str(received), keep_count=2, keep_days=30, now=1_800_000_000)
    assert {host: len(paths) for host, paths in removed.items()} == {"dh-1": 3, "lb-1": 3}
    for host in ("dh-1", "lb-1"):
        assert [e["created"] for e in fb.list_archives(str(received / host))] == [1_800_000_000, 1_800_000_000 - day]
    assert fb.main(["prune-received", str(received), "--keep-count", "0", "--keep-days", "3"]) == 2


def test_metrics_record_success_and_keep_the_last_success_time_after_a_failure(site):
    fb.write_metrics(site["config"], True, 100.0, 103.5, 4096)
    fb.write_metrics(site["config"], False, 200.0, 201.0, None)
    text = (site["tmp"] / "fleetops_backup.prom").read_text()
    assert "fleetops_backup_last_run_success 0" in text
    assert "fleetops_backup_last_success_timestamp_seconds 103.500" in text
    assert "fleetops_backup_last_run_timestamp_seconds 201.000" in text


def test_the_command_line_verifies_and_refuses_with_exit_2(site, capsys):
    manifest = fb.run_backup(site["config"], runner=site["runner"])
    archive = os.path.join(site["config"]["archive_dir"], manifest["archive"])
    config = site["tmp"] / "backup.json"
    config.write_text(json.dumps(site["config"]))
    assert fb.main(["verify", archive, "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    os.unlink(fb.manifest_path(archive))
    assert fb.main(["restore", archive, "--keep-dir", str(site["tmp"] / "kept"), "--config", str(config)]) == 2
    out = capsys.readouterr()
    assert json.loads(out.out)["ok"] is False and "incomplete backup" in out.err


def test_a_prometheus_snapshot_is_archived_under_the_data_dir_and_removed_after(tmp_path):
    import http.server
    import threading

    data = tmp_path / "metrics2"
    (data / "wal").mkdir(parents=True)
    (data / "wal" / "00000001").write_bytes(b"live wal, not in a snapshot")

    class Admin(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            assert self.path == "/api/v1/admin/tsdb/snapshot"
            block = data / "snapshots" / "20261201T000000Z-1" / "01BLOCK"
            (block / "chunks").mkdir(parents=True)
            (block / "chunks" / "000001").write_bytes(b"samples")
            (block / "meta.json").write_text('{"ulid": "01BLOCK"}')
            body = b'{"status":"success","data":{"name":"20261201T000000Z-1"}}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Admin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = {"host": "mon", "archive_dir": str(tmp_path / "backups"), "manifest_key_file": write_key(tmp_path),
                  "items": [
            {"name": "prometheus-tsdb", "prometheus_snapshot": "http://127.0.0.1:%d" % server.server_port,
             "prometheus_data_dir": str(data), "restart": {"stop": ["prometheus"]}}]}
        manifest = fb.run_backup(config)
    finally:
        server.shutdown()
    assert set(manifest["files"]) == {
        f"prometheus-tsdb{data}/01BLOCK/chunks/000001", f"prometheus-tsdb{data}/01BLOCK/meta.json"}
    assert not (data / "snapshots" / "20261201T000000Z-1").exists()
    # A restore puts the snapshot's blocks in place of the live data directory.
    archive = os.path.join(config["archive_dir"], manifest["archive"])
    result = fb.restore(archive, str(tmp_path / "kept"), config)
    assert result["restored"] == ["prometheus-tsdb"]
    assert (data / "01BLOCK" / "chunks" / "000001").read_bytes() == b"samples"
    assert not (data / "wal").exists()


def test_the_snapshot_request_carries_basic_auth_from_the_auth_file_when_it_exists(tmp_path):
    """Prometheus behind basic auth (monitoring_web_auth): the snapshot call sends the credentials the
    monitoring role wrote to the auth file, and is refused (named) without them."""
    import base64
    import http.server
    import threading

    data = tmp_path / "metrics2"
    data.mkdir()
    seen = []

    class Admin(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            seen.append(self.headers.get("Authorization"))
            if self.headers.get("Authorization") != "Basic " + base64.b64encode(b"fleet-ops:s3cret:with-colon").decode():
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            (data / "snapshots" / "snap-1" / "01BLOCK").mkdir(parents=True)
            (data / "snapshots" / "snap-1" / "01BLOCK" / "meta.json").write_text("{}")
            body = b'{"status":"success","data":{"name":"snap-1"}}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Admin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    auth = tmp_path / "web-client.auth"
    key = write_key(tmp_path)
    item = {"name": "prometheus-tsdb", "prometheus_snapshot": "http://127.0.0.1:%d" % server.server_port,
            "prometheus_data_dir": str(data), "prometheus_auth_file": str(auth)}
    try:
        # No auth file (basic auth off): no header, and this Prometheus refuses.
        with pytest.raises(fb.BackupError, match="admin API"):
            fb.run_backup({"host": "mon", "archive_dir": str(tmp_path / "b1"), "manifest_key_file": key, "items": [item]})
        auth.write_text("fleet-ops:s3cret:with-colon\n")
        manifest = fb.run_backup({"host": "mon", "archive_dir": str(tmp_path / "b2"), "manifest_key_file": key,
                                  "items": [item]})
    finally:
        server.shutdown()
    assert seen[0] is None and seen[-1].startswith("Basic ")
    assert any(name.endswith("/01BLOCK/meta.json") for name in manifest["files"])


def test_a_refused_snapshot_names_the_admin_api(tmp_path):
    config = {"host": "mon", "archive_dir": str(tmp_path / "b"), "manifest_key_file": write_key(tmp_path), "items": [
        {"name": "prometheus-tsdb", "prometheus_snapshot": "http://127.0.0.1:9", "prometheus_data_dir": str(tmp_path)}]}
    with pytest.raises(fb.BackupError, match="admin API"):
        fb.run_backup(config)


@pytest.mark.parametrize(("config", "problem"), [
    ({"archive_dir": "/b"}, "host is required"),
    ({"host": "h", "archive_dir": "relative"}, "archive_dir must be an absolute path"),
    ({"host": "h", "archive_dir": "/b", "keep_count": 0}, "keep_count must be a whole number of at least 1"),
    ({"host": "h", "archive_dir": "/b", "items": [{"name": "x", "paths": ["rel"]}]}, "items[0] (x): paths must be absolute"),
    ({"host": "h", "archive_dir": "/b", "copy": {"address": "a"}}, "copy needs address, user, key and known_hosts"),
])
def test_check_names_each_configuration_problem(config, problem):
    assert problem in fb.check_config(config)


def test_absent_configuration_of_an_optional_item_is_skipped_and_left_alone_on_restore(site):
    missing = str(site["tmp"] / "etc-keepalived")
    site["config"]["items"][1] = {"name": "nginx", "paths": [str(site["conf"]), missing], "optional": True}
    manifest = fb.run_backup(site["config"], runner=site["runner"])
    assert next(i for i in manifest["items"] if i["name"] == "nginx")["paths"] == [str(site["conf"])]
    os.makedirs(missing)
    Path(missing, "keepalived.conf").write_text("configured after the backup\n")
    site["conf"].write_text("changed\n")
    fb.restore(os.path.join(site["config"]["archive_dir"], manifest["archive"]), str(site["tmp"] / "kept"), site["config"])
    assert site["conf"].read_text() == "events {}\n"
    assert Path(missing, "keepalived.conf").read_text() == "configured after the backup\n"


# --------------------------------------------------------------------------- #
# Forged archives: confinement to the configured item paths, authenticated
# manifests. Each forgery is self-consistent (sums and HMAC made with the key)
# unless the test is about the HMAC, so only the new checks can refuse it.
# --------------------------------------------------------------------------- #

KEY = b"k" * 64
FORGED = "dh-1-20270101T000000Z"


def forge(site, members, items=None, key=KEY, sign=True, host="dh-1"):
    """An archive of ``members`` ((name, kind, data or link target)) with a matching, signed manifest."""
    archive_dir = Path(site["config"]["archive_dir"])
    archive_dir.mkdir(mode=0o700, exist_ok=True)
    archive = archive_dir / (FORGED + ".tar.gz")
    files = {}
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_800_000_000
            if kind == "file":
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
                files[name] = {"hmac": hmac.new(KEY, data, hashlib.sha256).hexdigest(), "size": len(data),
                               "mode": 0o644}
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
    manifest = {
        "format": fb.FORMAT, "host": host, "created": 1_800_000_000, "created_utc": "20270115T080000Z",
        "archive": archive.name, "encrypted": False, "archive_sha256": fb.sha256_file(str(archive)),
        "archive_size": archive.stat().st_size, "files": files, "skipped_symlinks": [],
        "items": items if items is not None else [
            {"name": i["name"], "paths": i["paths"]} for i in site["config"]["items"]],
    }
    if sign:
        manifest["hmac"] = fb.manifest_mac(manifest, key)
    Path(fb.manifest_path(str(archive))).write_text(json.dumps(manifest))
    return str(archive)


def refused(site, archive, message, outside=()):
    """The restore is refused with ``message`` and nothing under the test's directory (or ``outside``) changes."""
    (site["data"] / "notes" / "a.txt").write_text("current\n")
    before = tree(site["tmp"])
    with pytest.raises(fb.BackupError, match=message):
        fb.restore(archive, str(site["tmp"] / "kept"), site["config"])
    assert tree(site["tmp"]) == before
    for path in outside:
        assert not os.path.lexists(path)


def notes(site, *rest):
    """The archive member for a path under the volume-notes item's directory."""
    return fb.member_name("volume-notes", os.path.join(str(site["data"] / "notes"), *rest))


@pytest.mark.parametrize("case", ["dotdot", "absolute", "other-path", "other-item", "bare-item"])
def test_a_member_outside_the_items_configured_paths_is_refused(site, case):
    escape = site["tmp"] / "escaped"
    name = {
        "dotdot": notes(site, "..", "..", "escaped"),
        "absolute": str(escape),
        "other-path": fb.member_name("volume-notes", str(escape)),
        "other-item": fb.member_name("nginx", str(escape)),
        "bare-item": "volume-notes",
    }[case]
    message = "outside the paths of item" if case in ("other-path", "other-item") else "outside its items"
    refused(site, forge(site, [(notes(site, "a.txt"), "file", b"alpha\n"), (name, "file", b"pwned\n")]),
            message, outside=[escape])


@pytest.mark.parametrize(("link", "message"), [
    ("/etc", "is absolute or points out of"),
    ("../../escaped", "is absolute or points out of"),
    ("deep/../../x", "is absolute or points out of"),
])
def test_an_absolute_or_escaping_symlink_is_refused(site, link, message):
    archive = forge(site, [(notes(site, "a.txt"), "file", b"alpha\n"), (notes(site, "evil"), "link", link)])
    refused(site, archive, message)
    assert not (site["data"] / "notes" / "evil").is_symlink()


def test_a_member_written_through_a_symlinked_directory_is_refused(site):
    # The link itself stays inside the item; what is refused is a member under it.
    archive = forge(site, [(notes(site, "deep"), "dir", None), (notes(site, "d"), "link", "deep"),
                           (notes(site, "d", "x"), "file", b"through the link\n")])
    refused(site, archive, "would be written through the symlink")


@pytest.mark.parametrize(("items", "message"), [
    ([{"name": "volume-notes", "paths": ["/"]}], "names the path '/', which is not one of its configured paths"),
    ([{"name": "volume-notes", "paths": ["/etc"]}], "not one of its configured paths"),
    ([{"name": "sneaky", "paths": ["/etc"]}], "item 'sneaky' is not one of this host's configured items"),
])
def test_a_manifest_naming_root_or_an_unconfigured_item_or_path_is_refused(site, items, message):
    refused(site, forge(site, [], items=items), message)


@pytest.mark.parametrize(("kind", "message"), [
    ("missing", "has no HMAC: not authenticated"),
    ("other-key", "fails its HMAC"),
    ("edited", "fails its HMAC"),
    ("other-host", "made by dh-2, not by this host dh-1"),
])
def test_a_manifest_without_a_valid_hmac_is_refused_before_anything(site, kind, message):
    archive = forge(site, [(notes(site, "a.txt"), "file", b"alpha\n")], sign=kind != "missing",
                    key=b"z" * 64 if kind == "other-key" else KEY, host="dh-2" if kind == "other-host" else "dh-1")
    if kind == "edited":
        # A valid manifest, then its paths widened to / (the HMAC no longer matches).
        data = json.loads(Path(fb.manifest_path(archive)).read_text())
        data["items"][0]["paths"] = ["/"]
        Path(fb.manifest_path(archive)).write_text(json.dumps(data))
    refused(site, archive, message)
    with pytest.raises(fb.BackupError, match=message):
        fb.verify(archive, site["config"])


def test_an_archive_swapped_under_a_valid_manifest_is_refused(site):
    first = fb.run_backup(site["config"], now=1_800_000_000, runner=site["runner"])
    (site["data"] / "notes" / "a.txt").write_text("second\n")
    second = fb.run_backup(site["config"], now=1_800_000_100, runner=site["runner"])
    backups = Path(site["config"]["archive_dir"])
    # The second archive under the first's name: the first's (valid) manifest does not match it.
    os.replace(backups / second["archive"], backups / first["archive"])
    refused(site, str(backups / first["archive"]), "truncated or changed|corrupted")
    # A whole valid pair renamed to another stamp: its manifest names its own archive.
    third = fb.run_backup(site["config"], now=1_800_000_200, runner=site["runner"])
    os.replace(backups / third["archive"], backups / (FORGED + ".tar.gz"))
    os.replace(fb.manifest_path(str(backups / third["archive"])), backups / (FORGED + ".manifest.json"))
    refused(site, str(backups / (FORGED + ".tar.gz")), "renamed or swapped")


def test_a_forged_good_archive_restores_only_inside_its_item(site):
    # The control case for the forgeries: the same builder, members inside the item, restores.
    archive = forge(site, [(notes(site), "dir", None), (notes(site, "a.txt"), "file", b"forged but valid\n"),
                           (notes(site, "l"), "link", "a.txt")],
                    items=[{"name": "volume-notes", "paths": [str(site["data"] / "notes")]}])
    assert fb.restore(archive, str(site["tmp"] / "kept"), site["config"])["restored"] == ["volume-notes"]
    assert tree(site["data"]) == {"notes": ("dir",), "notes/a.txt": (b"forged but valid\n", 0o644),
                                  "notes/l": ("link", "a.txt")}
    assert site["conf"].read_text() == "events {}\n"


def test_the_manifest_carries_keyed_digests_not_plain_sha256(site):
    manifest = fb.run_backup(site["config"], runner=site["runner"])
    text = Path(fb.manifest_path(os.path.join(site["config"]["archive_dir"], manifest["archive"]))).read_text()
    assert hashlib.sha256(b"events {}\n").hexdigest() not in text
    assert hmac.new(KEY, b"events {}\n", hashlib.sha256).hexdigest() in text


def test_an_escaping_symlink_in_the_data_is_left_out_of_the_archive_and_named(site):
    os.symlink("/etc/passwd", site["data"] / "notes" / "abs")
    manifest = fb.run_backup(site["config"], runner=site["runner"])
    assert manifest["skipped_symlinks"] == [str(site["data"] / "notes" / "abs")]
    archive = os.path.join(site["config"]["archive_dir"], manifest["archive"])
    assert fb.verify(archive, site["config"])["contents_checked"] is True


def test_check_refuses_root_as_an_item_path_and_a_missing_key():
    problems = fb.check_config({"host": "h", "archive_dir": "/b", "items": [{"name": "x", "paths": ["/"]}]})
    assert "items[0] (x): paths must be normalised and not /" in problems
    assert "manifest_key_file must be an absolute path" in problems


# --------------------------------------------------------------------------- #
# age encryption
# --------------------------------------------------------------------------- #

needs_age = pytest.mark.skipif(not (shutil.which("age") and shutil.which("age-keygen")),
                               reason="the age and age-keygen commands are not installed (Debian package age)")


def age_key(directory: Path, name: str) -> tuple[str, str]:
    """(identity file, public recipient) of a fresh test key pair."""
    identity = directory / name
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True)
    return str(identity), public.stdout.strip()


@needs_age
def test_an_encrypted_archive_restores_byte_identical_with_the_operators_identity(site):
    identity, recipient = age_key(site["tmp"], "operator.key")
    site["config"]["age_recipients"] = [recipient]
    before = (tree(site["data"]), site["conf"].read_bytes())
    manifest = fb.run_backup(site["config"], runner=site["runner"])
    backups = Path(site["config"]["archive_dir"])
    assert manifest["archive"].endswith(".tar.gz.age") and manifest["encrypted"] is True
    # No plaintext is left beside the ciphertext, and the ciphertext is not a gzip.
    assert sorted(p.name for p in backups.iterdir()) == sorted([manifest["archive"], fb.manifest_path(
        manifest["archive"])])
    archive = str(backups / manifest["archive"])
    assert Path(archive).read_bytes().startswith(b"age-encryption.org/v1")
    assert fb.verify(archive, site["config"])["contents_checked"] is False
    assert fb.verify(archive, site["config"], identity)["contents_checked"] is True
    shutil.rmtree(site["data"])
    site["conf"].unlink()
    assert fb.restore(archive, str(site["tmp"] / "kept"), site["config"], identity=identity)["restored"] == [
        "nginx", "volume-notes"]
    assert (tree(site["data"]), site["conf"].read_bytes()) == before
    assert [p.name for p in backups.iterdir() if p.name.startswith(".fleetops")] == []
    assert [e["path"] for e in fb.list_archives(str(backups))] == [archive]


@needs_age
@pytest.mark.parametrize("which", ["wrong", "none"])
def test_an_encrypted_archive_with_a_wrong_or_no_identity_is_refused_changing_nothing(site, which):
    _, recipient = age_key(site["tmp"], "operator.key")
    other, _ = age_key(site["tmp"], "other.key")
    site["config"]["age_recipients"] = [recipient]
    manifest = fb.run_backup(site["config"], runner=site["runner"])
    archive = os.path.join(site["config"]["archive_dir"], manifest["archive"])
    message = ("is encrypted for other recipients: the identity %s does not match" % other if which == "wrong"
               else "is encrypted: give the age identity file")
    (site["data"] / "notes" / "a.txt").write_text("current\n")
    before = tree(site["tmp"])
    with pytest.raises(fb.BackupError, match=message):
        fb.restore(archive, str(site["tmp"] / "kept"), site["config"], identity=other if which == "wrong" else None)
    assert tree(site["tmp"]) == before


def test_an_item_path_that_is_a_symlink_on_the_host_is_not_written_through(site):
    manifest = fb.run_backup(site["config"], runner=site["runner"])
    archive = os.path.join(site["config"]["archive_dir"], manifest["archive"])
    # Someone replaced the volume's directory with a link to elsewhere: the restore must not follow it.
    elsewhere = site["tmp"] / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious").write_text("not the volume's\n")
    os.rename(site["data"] / "notes", site["tmp"] / "notes-moved")
    os.symlink(elsewhere, site["data"] / "notes")
    before = tree(site["tmp"])
    for dry_run in (True, False):
        with pytest.raises(fb.BackupError, match="is a symlink on this host"):
            fb.restore(archive, str(site["tmp"] / "kept"), site["config"], dry_run=dry_run)
    assert tree(site["tmp"]) == before
