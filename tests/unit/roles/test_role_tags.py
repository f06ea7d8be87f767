"""Tags: a role's input checks run with any of the role's tags and with no other stage's; what a run
limited to one tag would run, as ansible-playbook --list-tasks reports it for site.yml."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLES = sorted(p.parent.parent.name for p in ROOT.glob("roles/*/tasks/preflight.yml")
               if "preflight.yml" in (p.parent / "main.yml").read_text())


def role_tags(role: str) -> set[str]:
    """Every tag a task, block or import of the role's task files carries."""
    found: set[str] = set()

    def walk(items):
        for item in items or []:
            if not isinstance(item, dict):
                continue
            tags = item.get("tags") or []
            found.update([tags] if isinstance(tags, str) else tags)
            for key in ("block", "rescue", "always"):
                walk(item.get(key))
            apply = (item.get("ansible.builtin.include_tasks") or {})
            if isinstance(apply, dict):
                found.update((apply.get("apply") or {}).get("tags") or [])

    for path in (ROOT / "roles" / role / "tasks").glob("*.yml"):
        walk(yaml.safe_load(path.read_text()))
    return found - {"always", "never"}


def preflight_tags(role: str) -> set[str]:
    main = yaml.safe_load((ROOT / "roles" / role / "tasks/main.yml").read_text())
    entry = next(t for t in main if t.get("ansible.builtin.import_tasks") == "preflight.yml")
    return set(entry["tags"])


@pytest.mark.parametrize("role", ROLES)
def test_a_roles_input_checks_carry_every_tag_of_its_work_and_not_always(role):
    tags = preflight_tags(role)
    assert "always" not in tags, f"{role}: its input checks would run under any other stage's tag"
    assert role_tags(role) <= tags, f"{role}: preflight lacks {sorted(role_tags(role) - tags)}"
    assert {role, role + "_preflight"} <= tags


def test_the_load_balancer_stage_checks_keepalived_under_every_tag_of_its_roles():
    plays = yaml.safe_load((ROOT / "playbooks/load_balancers.yml").read_text())
    play = next(p for p in plays if p.get("hosts") == "fleetops_load_balancers")
    check = next(t for t in play["pre_tasks"] if t.get("name") == "Check keepalived's inputs first")
    stage = {tag for role in play["roles"] for tag in role["tags"]}
    assert "always" not in check["tags"]
    assert stage | role_tags("nginx_lb") | role_tags("keepalived") <= set(check["tags"])


def list_tasks(*tags: str, option: str = "--tags") -> list[str]:
    """The tasks site.yml would run with ``option`` (--tags or --skip-tags) set to ``tags``."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    result = subprocess.run([str(pathlib.Path(sys.executable).parent / "ansible-playbook"), "-i",
                             str(ROOT / "inventories/example/hosts.yml"), str(ROOT / "playbooks/site.yml"),
                             "--list-tasks", option, ",".join(tags)],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return [line.strip().split("\tTAGS:")[0] for line in result.stdout.splitlines() if "\tTAGS:" in line]


def roles_working(tasks: list[str]) -> set[str]:
    """Roles with a task that would run, leaving out the argument checks Ansible adds to every role, the
    include of the checks for a run with --skip-tags (tagged always; its condition skips it in a run
    without) and mcp_failover's own always-tagged fact."""
    return {m.group(1) for t in tasks if "Validating arguments" not in t and not t.endswith("in a run with --skip-tags")
            and not t.endswith("Work out this host's part in failover")
            for m in [re.match(r"fleetops\.mcp\.(\w+) : ", t)] if m}


def test_a_run_limited_to_the_load_balancers_checks_and_changes_them_only():
    tasks = list_tasks("load_balancers")
    # The plan every stage reads, and the two load balancer roles' checks and work; no other stage's
    # input checks (the backup's calendar check alone called systemd-analyze on all six demo hosts).
    assert roles_working(tasks) == {"fleet_plan", "nginx_lb", "keepalived"}, sorted(roles_working(tasks))
    assert "fleetops.mcp.nginx_lb : Check the MCP server declarations" in tasks
    assert "fleetops.mcp.keepalived : Check keepalived_virtual_ipaddress" in tasks


@pytest.mark.parametrize(("tag", "check"), [
    ("backup_configure", "fleetops.mcp.backup : Check the retention and the port"),
    ("secrets", "fleetops.mcp.vault_secrets : Check the MCP server declarations"),
    ("keepalived_run", "fleetops.mcp.keepalived : Check keepalived_virtual_ipaddress"),
    ("firewall", "fleetops.mcp.firewall : Check the firewall's inputs"),
])
def test_a_run_limited_to_part_of_a_role_still_checks_its_inputs_first(tag, check):
    tasks = list_tasks(tag)
    assert check in tasks, [t for t in tasks if "Check" in t]
    work = [i for i, t in enumerate(tasks) if "Check" not in t and "Validating" not in t
            and t.startswith(check.split(" : ")[0])]
    assert not work or tasks.index(check) < work[0]


def test_mcp_failover_works_out_the_hosts_part_in_every_run_that_reads_it():
    """main.yml's imports read _mcp_failover_part in their conditions: the task that sets it runs in every
    run (always), also one that skips some of the imports' tags, or the run stops on an undefined variable."""
    main = yaml.safe_load((ROOT / "roles/mcp_failover/tasks/main.yml").read_text())
    part = next(t for t in main if "_mcp_failover_part" in (t.get("ansible.builtin.set_fact") or {}))
    readers = [t for t in main if "_mcp_failover_part" in str(t.get("when", ""))]
    assert len(readers) == 6
    assert part["tags"] == ["always"] and main.index(part) < min(main.index(r) for r in readers)


@pytest.mark.parametrize("role", ROLES)
def test_a_run_with_skip_tags_checks_the_inputs_through_an_include_tagged_always(role):
    """--skip-tags skips a task that carries any skipped tag, so the tagged import would drop the checks
    (and the facts they set) from a run that skips one part of the role; such a run includes them instead."""
    main = yaml.safe_load((ROOT / "roles" / role / "tasks/main.yml").read_text())
    imported = next(t for t in main if t.get("ansible.builtin.import_tasks") == "preflight.yml")
    included = next(t for t in main if (t.get("ansible.builtin.include_tasks") or {}).get("file") == "preflight.yml")
    assert imported["when"] == "ansible_skip_tags | length == 0"
    assert included["when"] == "ansible_skip_tags | length > 0"
    assert "always" in included["tags"] and "always" in included["ansible.builtin.include_tasks"]["apply"]["tags"]
    assert main.index(imported) + 1 == main.index(included)


def test_a_run_skipping_part_of_a_role_still_checks_its_inputs():
    tasks = list_tasks("firewall_install", "mcp_failover_sync", "nginx_lb_install", option="--skip-tags")
    for check in ("fleetops.mcp.firewall : Check the inputs and work out the rules, in a run with --skip-tags",
                  "fleetops.mcp.mcp_failover : Check the inputs, in a run with --skip-tags",
                  "fleetops.mcp.nginx_lb : Check the inputs, in a run with --skip-tags",
                  "Check keepalived's inputs first, in a run with --skip-tags",
                  "fleetops.mcp.mcp_failover : Work out this host's part in failover"):
        assert check in tasks, check
    # The skipped part itself is gone, and so are the tagged imports of the checks (they carry its tag).
    assert "fleetops.mcp.firewall : Check the firewall's inputs" not in tasks


@pytest.mark.parametrize(("args", "checked"), [
    (["--tags", "mcp_failover_sync"], True),
    (["--skip-tags", "mcp_failover_install,mcp_failover_sync,mcp_failover_controller"], True),
    (["--tags", "load_balancers"], False),
    (["--skip-tags", "mcp_failover_preflight,mcp_failover_install,mcp_failover_sync,mcp_failover_controller"], False),
])
def test_mcp_failover_run_on_this_host_checks_its_inputs_once_whatever_the_tags(tmp_path, args, checked):
    """The role itself, run by ansible-playbook on this host with no failover servers (a run of all of it
    would stop a failover daemon through systemd, which this host lacks): the checks run once
    (through the import, or the include in a run with --skip-tags), or not at all when no part of the
    role is selected or the checks are skipped by name; the host's part is worked out in every run."""
    (tmp_path / "play.yml").write_text(yaml.safe_dump([{
        "name": "mcp_failover alone", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "roles": [{"role": "fleetops.mcp.mcp_failover"}]}]))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    result = subprocess.run([str(pathlib.Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
                             str(tmp_path / "play.yml"), "-e", f"ansible_python_interpreter={sys.executable}", *args],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.stdout.count("TASK [fleetops.mcp.mcp_failover : Check the timing]") == (1 if checked else 0)
    assert "TASK [fleetops.mcp.mcp_failover : Work out this host's part in failover]" in result.stdout
