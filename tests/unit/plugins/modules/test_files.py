"""Tests for fleetops.mcp.files: the module's Runner on real files, and the action plugin through ansible-playbook.

Every test writes real files under pytest's tmp_path (the unit tests run as root, so owners can be set).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
import subprocess
import textwrap

import pytest

from ansible_collections.fleetops.mcp.plugins.modules import files as files_module
from ansible_collections.fleetops.mcp.tests.vault_double.pytest_fixtures import ansible_bin, ansible_env

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="sets owners: run as root, as make test does")


def entry(path, **kw):
    base = {"path": str(path), "state": "file", "owner": "root", "group": "root", "mode": "0644", "validate": None,
            "content": None, "secret_content": None}
    base.update(kw)
    return base


def apply(entries, check_mode=False, diff=True):
    """Check, then apply entries as main() does; return (changes per entry, runner)."""
    errors = files_module.check_entries(entries)
    assert errors == [], errors

    def run_command(command):
        proc = subprocess.run(command, shell=True, capture_output=True, text=True, check=False)
        return proc.returncode, proc.stdout, proc.stderr

    runner = files_module.Runner(check_mode, diff, run_command)
    return [runner.apply(i, e) for i, e in enumerate(entries)], runner


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def leftovers(directory):
    return [name for name in os.listdir(directory) if name.endswith(".fleetops")]


# --------------------------------------------------------------------------- #
# The module: what it writes, and that a second run writes nothing
# --------------------------------------------------------------------------- #


@ROOT_ONLY
def test_first_run_makes_everything_and_second_run_changes_nothing(tmp_path):
    conf = tmp_path / "etc" / "app"
    entries = [
        entry(conf, state="directory", mode="0750"),
        entry(conf / "app.conf", content="a = 1\n", mode="0640"),
        entry(conf / "app.key", secret_content="s3cr3t", mode="0400"),
        entry(tmp_path / "log" / "access.log", state="touch", owner="www-data", group="adm", mode="0640"),
    ]
    first, _ = apply(entries)
    assert first == [["created"]] * 4
    assert mode_of(conf) == 0o750 and (conf / "app.conf").read_text() == "a = 1\n"
    assert mode_of(conf / "app.conf") == 0o640 and mode_of(conf / "app.key") == 0o400
    log = tmp_path / "log" / "access.log"
    assert log.read_bytes() == b"" and pwd.getpwuid(log.stat().st_uid).pw_name == "www-data"
    assert grp.getgrgid(log.stat().st_gid).gr_name == "adm"

    stamp = (conf / "app.conf").stat().st_mtime_ns
    second, runner = apply(entries)
    assert second == [[]] * 4 and runner.diffs == []
    assert (conf / "app.conf").stat().st_mtime_ns == stamp, "an unchanged file was rewritten"


@ROOT_ONLY
def test_only_what_differs_is_changed_and_named(tmp_path):
    path = tmp_path / "app.conf"
    apply([entry(path, content="a = 1\n", mode="0644")])
    os.chmod(path, 0o666)
    os.chown(path, pwd.getpwnam("nobody").pw_uid, 0)
    changes, runner = apply([entry(path, content="a = 1\n", mode="0644")])
    assert changes == [["owner", "mode"]]
    assert mode_of(path) == 0o644 and path.stat().st_uid == 0
    assert runner.diffs[0]["before"]["mode"] == "0666" and runner.diffs[0]["after"]["mode"] == "0644"

    changes, runner = apply([entry(path, content="a = 2\n", mode="0644")])
    assert changes == [["content"]] and path.read_text() == "a = 2\n"
    assert runner.diffs == [{"before_header": str(path), "after_header": str(path), "before": "a = 1\n", "after": "a = 2\n"}]


@ROOT_ONLY
def test_a_touched_file_keeps_its_text_and_times(tmp_path):
    log = tmp_path / "access.log"
    log.write_text("GET / 200\n")
    os.utime(log, ns=(1_000_000_000, 2_000_000_000))
    os.chmod(log, 0o640)
    changes, _ = apply([entry(log, state="touch", mode="0640")])
    assert changes == [[]]
    assert log.read_text() == "GET / 200\n" and log.stat().st_mtime_ns == 2_000_000_000


@ROOT_ONLY
def test_check_mode_reports_and_writes_nothing(tmp_path):
    path = tmp_path / "new" / "app.conf"
    existing = tmp_path / "old.conf"
    existing.write_text("old\n")
    os.chmod(existing, 0o644)
    changes, runner = apply(
        [entry(tmp_path / "new", state="directory", mode="0755"), entry(path, content="x\n"),
         entry(existing, content="new\n"), entry(tmp_path / "gone", state="absent")],
        check_mode=True,
    )
    assert changes == [["created"], ["created"], ["content"], []]
    assert not (tmp_path / "new").exists() and existing.read_text() == "old\n"
    assert runner.diffs[2]["before"] == "old\n" and runner.diffs[2]["after"] == "new\n"


def test_check_mode_tolerates_a_user_a_package_would_create(tmp_path):
    changes, _ = apply([entry(tmp_path / "f", content="x", owner="fleetops-no-such-user", group="fleetops-no-such-group")],
                       check_mode=True)
    assert changes == [["created"]]
    with pytest.raises(files_module.EntryError, match=r"files\[0\] \(.*\)\.owner: no user 'fleetops-no-such-user'"):
        apply([entry(tmp_path / "f", content="x", owner="fleetops-no-such-user")])
    assert not (tmp_path / "f").exists()


# --------------------------------------------------------------------------- #
# validate: a rejected text never replaces the old one; later entries see earlier ones
# --------------------------------------------------------------------------- #


@ROOT_ONLY
def test_a_text_the_checker_rejects_never_replaces_the_old_one(tmp_path):
    path = tmp_path / "app.json"
    check = "python3 -c 'import json,sys; json.load(open(sys.argv[1]))' %s"
    apply([entry(path, content='{"a": 1}\n', validate=check)])
    with pytest.raises(files_module.EntryError) as failure:
        apply([entry(path, content="{not json\n", validate=check)])
    message = str(failure.value)
    assert message.startswith("files[0] (%s).validate: python3 rejected the new text (rc 1)" % path), message
    assert "JSONDecodeError" in message
    assert path.read_text() == '{"a": 1}\n'
    assert leftovers(tmp_path) == []


@ROOT_ONLY
def test_a_secret_text_the_checker_rejects_is_not_quoted(tmp_path):
    path = tmp_path / "secret.conf"
    with pytest.raises(files_module.EntryError) as failure:
        apply([entry(path, secret_content="password=hunter2-xyz\n", mode="0600", validate="cat %s; false")])
    assert "hunter2" not in str(failure.value) and "output withheld" in str(failure.value)
    assert not path.exists() and leftovers(tmp_path) == []


@ROOT_ONLY
def test_the_checker_sees_the_files_written_before_it(tmp_path):
    include = tmp_path / "include.conf"
    main = tmp_path / "main.conf"
    # The main file is accepted only when the include (an earlier entry of the same call) is already in place.
    check = f"grep -q ok {include} && test -s %s"
    changes, _ = apply([entry(include, content="ok\n"), entry(main, content="include include.conf\n", validate=check)])
    assert changes == [["created"], ["created"]] and main.exists()


@ROOT_ONLY
def test_the_checker_gets_the_new_text_with_its_final_owner_and_mode(tmp_path):
    path = tmp_path / "key"
    probe = tmp_path / "seen"
    apply([entry(path, secret_content="k", mode="0400", validate=f"stat -c %a {{}} > {probe}; true".replace("{}", "%s"))])
    assert probe.read_text().strip() == "400"


# --------------------------------------------------------------------------- #
# Secrets, absent, and refusals
# --------------------------------------------------------------------------- #


@ROOT_ONLY
def test_a_secret_text_never_reaches_a_diff(tmp_path):
    path = tmp_path / "vrrp.conf"
    _, runner = apply([entry(path, secret_content="auth_pass topsecret\n", mode="0600")])
    _, runner2 = apply([entry(path, secret_content="auth_pass other\n", mode="0600")])
    dumped = json.dumps(runner.diffs + runner2.diffs)
    assert "topsecret" not in dumped and "other" not in dumped and "secret text" in dumped
    assert path.read_text() == "auth_pass other\n"


@ROOT_ONLY
def test_absent_removes_files_and_empty_directories_only(tmp_path):
    (tmp_path / "old.key").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "data").write_text("keep")
    changes, _ = apply([entry(tmp_path / "old.key", state="absent"), entry(tmp_path / "empty", state="absent"),
                        entry(tmp_path / "never", state="absent")])
    assert changes == [["removed"], ["removed"], []]
    assert not (tmp_path / "old.key").exists() and not (tmp_path / "empty").exists()
    with pytest.raises(files_module.EntryError, match="not empty; not removing it"):
        apply([entry(tmp_path / "full", state="absent")])
    assert (tmp_path / "full" / "data").read_text() == "keep"


@ROOT_ONLY
def test_a_directory_or_link_is_never_replaced_by_a_file(tmp_path):
    (tmp_path / "dir").mkdir()
    os.symlink("/etc/passwd", tmp_path / "link")
    with pytest.raises(files_module.EntryError, match=r"files\[0\] .*not a regular file"):
        apply([entry(tmp_path / "dir", content="x")])
    with pytest.raises(files_module.EntryError, match="not a regular file"):
        apply([entry(tmp_path / "link", content="x")])
    with pytest.raises(files_module.EntryError, match="not a directory"):
        apply([entry(tmp_path / "link", state="directory", mode="0755")])
    assert os.readlink(tmp_path / "link") == "/etc/passwd"


@pytest.mark.parametrize(
    "bad, message",
    [
        (entry("relative/path", content="x"), r"files\[0\] \(relative/path\)\.path: must be an absolute path"),
        (entry("/x", content=None), r"files\[0\] \(/x\): a file needs exactly one of content"),
        (entry("/x", content="a", secret_content="b"), r"needs exactly one of"),
        (entry("/x", state="directory", content="a"), r"content is only for state=file, not state=directory"),
        (entry("/x", content="a", mode=None), r"files\[0\] \(/x\)\.mode: required"),
        (entry("/x", content="a", mode="644x"), r"\.mode: '644x' is not an octal mode"),
        (entry("/x", content="a", mode="0999"), r"\.mode: '0999' is not an octal mode"),
        (entry("/x", content="a", validate="check it"), r"\.validate: must contain %s"),
        (entry("/x", state="touch", mode="0644", validate="x %s"), r"\.validate: only for state=file"),
    ],
)
def test_bad_entries_are_refused_with_the_field_named(bad, message):
    errors = files_module.check_entries([bad])
    assert errors and any(__import__("re").search(message, e) for e in errors), errors


# --------------------------------------------------------------------------- #
# The action plugin, through ansible-playbook on this host (connection local)
# --------------------------------------------------------------------------- #

SECRET = "fleet-secret-9f2c71d04b"


@pytest.fixture
def playbook(tmp_path, collections_root):
    """Run a play on localhost in a role-like directory with templates/ and files/; returns (rc, output)."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "files").mkdir()
    (tmp_path / "templates" / "app.conf.j2").write_text(
        "{{ ansible_managed | comment }}\nname={{ app_name }}\n{% if true %}\nblock line\n{% endif %}\n"
    )
    (tmp_path / "templates" / "unit.j2").write_text("server={{ item.0.name }} kind={{ item.1 }}\n")
    (tmp_path / "templates" / "secret.j2").write_text("password={{ secret }}\n")
    (tmp_path / "files" / "tool").write_text("#!/bin/sh\necho tool\n")
    (tmp_path / "files" / "blob").write_bytes(b"\xff\xfe\x00binary")
    env = ansible_env(tmp_path, collections_root)

    def run(tasks, *extra):
        book = tmp_path / "play.yml"
        book.write_text(
            "- hosts: localhost\n  gather_facts: false\n"
            f"  vars: {{out: '{tmp_path}/out', app_name: demo, secret: {SECRET}}}\n"
            "  handlers:\n    - name: Noted\n      ansible.builtin.debug: {msg: HANDLER-RAN}\n"
            "  tasks:\n" + textwrap.indent(textwrap.dedent(tasks), "    ")
        )
        proc = subprocess.run(
            [ansible_bin("ansible-playbook"), "-i", "localhost,", "-c", "local",
             "-e", "ansible_python_interpreter=/usr/bin/python3", str(book), *extra],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180, check=False,
        )
        return proc.returncode, proc.stdout + proc.stderr

    run.dir = tmp_path
    return run


@ROOT_ONLY
def test_templates_render_as_ansible_builtin_template_renders_them(playbook):
    rc, out = playbook("""
        - name: Bulk
          fleetops.mcp.files:
            files:
              - {path: "{{ out }}/bulk.conf", template: app.conf.j2, mode: "0644"}
              - {path: "{{ out }}/tool", src: tool, mode: "0755"}
              - path: "{{ out }}/unit-a.service"
                template: unit.j2
                mode: "0644"
                vars: {item: [{name: a}, service]}
          notify: Noted
        - ansible.builtin.template: {src: app.conf.j2, dest: "{{ out }}/builtin.conf", mode: "0644"}
        """)
    assert rc == 0, out
    out_dir = playbook.dir / "out"
    assert (out_dir / "bulk.conf").read_bytes() == (out_dir / "builtin.conf").read_bytes()
    assert "# Ansible managed" in (out_dir / "bulk.conf").read_text()
    assert (out_dir / "tool").read_text() == "#!/bin/sh\necho tool\n" and mode_of(out_dir / "tool") == 0o755
    assert (out_dir / "unit-a.service").read_text() == "server=a kind=service\n"
    assert "HANDLER-RAN" in out

    rc, out = playbook("""
        - name: Bulk
          fleetops.mcp.files:
            files:
              - {path: "{{ out }}/bulk.conf", template: app.conf.j2, mode: "0644"}
              - {path: "{{ out }}/tool", src: tool, mode: "0755"}
          notify: Noted
        """)
    assert rc == 0 and "changed=0" in out and "HANDLER-RAN" not in out, out


@ROOT_ONLY
def test_a_secret_never_reaches_the_output_even_at_the_highest_verbosity(playbook):
    tasks = """
        - fleetops.mcp.files:
            files:
              - {path: "{{ out }}/a.key", secret_content: "{{ secret }}", mode: "0400"}
              - {path: "{{ out }}/b.conf", template: secret.j2, secret: true, mode: "0600"}
        """
    rc, out = playbook(tasks, "-vvvv", "--diff")
    assert rc == 0, out
    assert SECRET not in out
    assert (playbook.dir / "out" / "b.conf").read_text() == f"password={SECRET}\n"
    rc, out = playbook(tasks.replace("{{ secret }}", "{{ secret }}-2"), "-vvvv", "--diff", "--check")
    assert rc == 0 and "changed=1" in out and SECRET not in out, out


@ROOT_ONLY
def test_check_mode_with_diff_shows_the_change_and_writes_nothing(playbook):
    rc, out = playbook("""
        - fleetops.mcp.files:
            files:
              - {path: "{{ out }}/app.conf", content: "port=8080\\n", mode: "0644"}
        """, "--check", "--diff")
    assert rc == 0 and "+port=8080" in out and "changed=1" in out, out
    assert not (playbook.dir / "out").exists()


@pytest.mark.parametrize(
    "files, message",
    [
        ('[{path: "/tmp/x", template: no-such.j2, mode: "0644"}]', r"files\[0\] \(/tmp/x\)\.template: .*no-such\.j2"),
        ('[{path: "/tmp/x", src: no-such, mode: "0644"}]', r"files\[0\] \(/tmp/x\)\.src: "),
        ('[{path: "/tmp/x", src: blob, mode: "0644"}]', r"files\[0\] \(/tmp/x\)\.src: .* is not UTF-8 text"),
        ('[{path: "/tmp/x", template: app.conf.j2, content: "y", mode: "0644"}]',
         r"give one of content, secret_content, template or src, not content and template"),
        ('[{path: "/tmp/x", content: "y", mode: "0644", owner_name: root}]',
         r"files\[0\] \(/tmp/x\): unsupported key\(s\) owner_name"),
        ('[{path: "/tmp/x", content: "y", vars: {a: 1}, mode: "0644"}]', r"\.vars: only for an entry with template"),
        ('[{path: "/tmp/x", content: "y"}]', r"files\[0\] \(/tmp/x\)\.mode: required"),
        ("[]", r"files: must be a non-empty list"),
    ],
)
def test_bad_input_fails_before_anything_is_written_and_names_the_field(playbook, files, message):
    rc, out = playbook(f"""
        - fleetops.mcp.files:
            files: {files}
        """)
    assert rc != 0 and __import__("re").search(message, out), out
    assert not os.path.exists("/tmp/x")


# --------------------------------------------------------------------------- #
# What the module logs on the host and returns as its invocation
# --------------------------------------------------------------------------- #


@ROOT_ONLY
def test_texts_never_reach_the_hosts_log_or_the_returned_invocation(monkeypatch, tmp_path):
    """AnsibleModule logs each invocation to the journal; a text in a list of entries is not masked there."""
    from ansible.module_utils import basic

    from ansible_collections.fleetops.mcp.tests.vault_double.pytest_fixtures import make_module_runner

    logged = []
    monkeypatch.setattr(basic.AnsibleModule, "log", lambda self, msg, log_args=None: logged.append(msg))
    run = make_module_runner(monkeypatch, files_module.main)
    secret = "auth_pass demo-vip\nline two\n"
    result = run(files=[{"path": str(tmp_path / "k.conf"), "secret_content": secret, "mode": "0600"},
                        {"path": str(tmp_path / "tool"), "content": "#!/bin/sh\necho a-long-script-body\n", "mode": "0755"}])
    assert not result.get("failed"), result
    assert (tmp_path / "k.conf").read_text() == secret
    assert logged == [f"Invoked with files=file:{tmp_path}/k.conf, file:{tmp_path}/tool"]
    invocation = json.dumps(result["invocation"])
    assert "demo-vip" not in invocation and "a-long-script-body" not in invocation
    assert f"({len(secret)} characters, not shown)" in invocation
