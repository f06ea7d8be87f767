"""The fleet_plan role run by ansible-playbook on this host: the plan it sets, and bad settings refused
with the variable named, before any role that reads the plan runs."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
PLAYBOOK = """
- name: The fleet plan, then a role that reads it
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Check keepalived's inputs (keepalived depends on fleet_plan)
      ansible.builtin.include_role:
        name: fleetops.mcp.keepalived
        tasks_from: preflight
    - name: Keep the plan for the test
      ansible.builtin.copy:
        content: "{{ fleetops_plan | to_json }}"
        dest: "{{ plan_file }}"
        mode: "0600"
"""
GOOD = {"keepalived_virtual_ipaddress": "192.0.2.10/24", "keepalived_auth_pass": "s3cret", "keepalived_unicast": False,
        "ansible_python_interpreter": sys.executable}


def run(tmp_path, **overrides) -> subprocess.CompletedProcess:
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    (tmp_path / "vars.json").write_text(json.dumps({**GOOD, "plan_file": str(tmp_path / "plan.json"), **overrides}))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    bin_dir = pathlib.Path(sys.executable).parent
    return subprocess.run([str(bin_dir / "ansible-playbook"), "-i", "localhost,", str(tmp_path / "play.yml"),
                           "-e", f"@{tmp_path / 'vars.json'}"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)


def test_a_role_that_reads_the_plan_gets_it_compiled_first(tmp_path):
    result = run(tmp_path, fleet_plan_status_listen="127.0.0.1:9181", keepalived_virtual_ipaddress="192.0.2.10/24")
    assert result.returncode == 0, result.stdout[-3000:]
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["status"] == {"listen": "127.0.0.1:9181", "url": "http://127.0.0.1:9181"}
    assert plan["host"] == "localhost" and plan["kinds"] == [] and plan["groups"]["docker_hosts"] == "docker_hosts"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"fleet_plan_textfile_dir": "var/lib/textfiles"}, "fleet_plan_textfile_dir must be an absolute directory path"),
    ({"fleet_plan_status_listen": "127.0.0.1"}, "fleet_plan_status_listen must be address:port"),
    ({"fleet_plan_groups": {"docker_hosts": "mcp-nodes"}}, "fleet_plan_groups.docker_hosts must be an inventory group name"),
])
def test_a_bad_setting_fails_naming_the_variable_before_the_reading_role_runs(tmp_path, overrides, message):
    result = run(tmp_path, **overrides)
    assert result.returncode != 0
    assert message in result.stdout, result.stdout[-3000:]
    assert "Check keepalived_virtual_ipaddress" not in result.stdout  # the reading role's own tasks never ran


# The shipped playbooks with renamed groups: plan.yml fills fleetops_<kind>, the stage plays name those.
RENAMED_INVENTORY = """
all:
  vars:
    ansible_connection: local
    ansible_python_interpreter: {python}
    fleet_plan_groups:
      docker_hosts: mcp_nodes
      load_balancers: edge
      monitors: observers
      backup_hosts: vaultish_backups
      vault_servers: secret_keepers
  children:
    mcp_nodes: {{hosts: {{node-a: {{}}, node-b: {{}}}}}}
    edge: {{hosts: {{edge-1: {{}}}}}}
    observers: {{hosts: {{watch-1: {{}}}}}}
    vaultish_backups: {{hosts: {{keep-1: {{}}}}}}
    docker_hosts: {{hosts: {{decoy: {{}}}}}}
"""
RECORD_PLAYS = """
- name: The shipped plan play
  ansible.builtin.import_playbook: {plan}
{plays}
"""
RECORD_PLAY = """
- name: Record who {group} targets
  hosts: {pattern}
  gather_facts: false
  tasks:
    - name: Record
      ansible.builtin.copy:
        content: "{{{{ ansible_play_hosts_all | sort | to_json }}}}"
        dest: "{out}/{group}.json"
        mode: "0600"
      run_once: true
      delegate_to: localhost
"""


def _shipped_host_patterns() -> set[str]:
    import yaml

    patterns = set()
    for playbook in sorted((ROOT / "playbooks").glob("*.yml")):
        for play in yaml.safe_load(playbook.read_text()):
            if "hosts" in play:
                patterns.add(play["hosts"])
    return patterns


def test_the_shipped_playbooks_name_only_the_plans_groups():
    kinds = {"docker_hosts", "load_balancers", "monitors", "backup_hosts", "vault_servers"}
    allowed = {"all", "localhost", "fleetops_failover_controller", "{{ restore_hosts | default('none_given') }}"}
    for pattern in _shipped_host_patterns():
        for part in pattern.replace("all:!", "").split(":"):
            assert part in allowed or part.removeprefix("fleetops_") in kinds, pattern
            assert part not in kinds, f"{pattern} names an inventory group; name fleetops_<kind> instead"


def test_with_renamed_groups_the_stage_plays_target_the_renamed_groups(tmp_path):
    (tmp_path / "hosts.yml").write_text(RENAMED_INVENTORY.format(python=sys.executable))
    patterns = sorted(p for p in _shipped_host_patterns() if p.startswith(("fleetops_", "all:!")))
    plays = "".join(RECORD_PLAY.format(group=p.replace("all:!", "not_"), pattern=p, out=tmp_path) for p in patterns)
    (tmp_path / "play.yml").write_text(RECORD_PLAYS.format(plan=ROOT / "playbooks" / "plan.yml", plays=plays))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    bin_dir = pathlib.Path(sys.executable).parent
    result = subprocess.run([str(bin_dir / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml")],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=180, check=False)
    assert result.returncode == 0, result.stdout[-3000:]

    def targeted(name):
        path = tmp_path / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else []

    assert targeted("fleetops_docker_hosts") == ["node-a", "node-b"]  # not the decoy group docker_hosts
    assert targeted("fleetops_load_balancers") == ["edge-1"]
    assert targeted("fleetops_monitors") == ["watch-1"]
    assert targeted("fleetops_backup_hosts") == ["keep-1"]
    assert targeted("not_fleetops_backup_hosts") == ["decoy", "edge-1", "node-a", "node-b", "watch-1"]
    assert targeted("fleetops_vault_servers") == []  # an empty kind: its plays match no host


ACTIVE_PLAYBOOK = """
- name: mcp_failover's active entry point, into a fact the caller names
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Work out the active hosts
      ansible.builtin.include_role:
        name: fleetops.mcp.mcp_failover
        tasks_from: active
      vars:
        mcp_failover_active_var: "{{ wanted_name }}"
    - name: Keep what the caller reads
      ansible.builtin.copy:
        content: "{{ {'mine': _callers_own | default(none), 'default_name': mcp_failover_active | default(none)} | to_json }}"
        dest: "{{ out_file }}"
        mode: "0600"
"""


@pytest.mark.parametrize("state", [None, {"servers": {"memory": {"active": "dh-2", "standby": "dh-1"}}}],
                         ids=["nothing-recorded", "failed-over"])
def test_the_active_entry_point_sets_the_fact_its_caller_names(tmp_path, state):
    state_file = tmp_path / "state.json"
    if state:
        state_file.write_text(json.dumps(state))
    (tmp_path / "play.yml").write_text(ACTIVE_PLAYBOOK)
    (tmp_path / "vars.json").write_text(json.dumps({
        "ansible_python_interpreter": sys.executable, "wanted_name": "_callers_own", "out_file": str(tmp_path / "out.json"),
        "mcp_failover_controller": "localhost", "_mcp_failover_state_file": str(state_file),
        "fleetops_mcp_servers": [{"name": "memory", "image": "m:1", "host_port": 18300,
                                  "failover": {"primary": "dh-1", "standby": "dh-2"}}]}))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    bin_dir = pathlib.Path(sys.executable).parent
    result = subprocess.run([str(bin_dir / "ansible-playbook"), "-i", "localhost,", str(tmp_path / "play.yml"),
                             "-e", f"@{tmp_path / 'vars.json'}"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out == {"mine": {"memory": "dh-2" if state else "dh-1"}, "default_name": None}


def test_the_active_entry_point_refuses_a_fact_name_that_is_not_a_variable_name(tmp_path):
    (tmp_path / "play.yml").write_text(ACTIVE_PLAYBOOK)
    (tmp_path / "vars.json").write_text(json.dumps({
        "ansible_python_interpreter": sys.executable, "wanted_name": "not a name", "out_file": str(tmp_path / "o.json")}))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    bin_dir = pathlib.Path(sys.executable).parent
    result = subprocess.run([str(bin_dir / "ansible-playbook"), "-i", "localhost,", str(tmp_path / "play.yml"),
                             "-e", f"@{tmp_path / 'vars.json'}"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    assert result.returncode != 0
    assert "mcp_failover_active_var must be a variable name" in result.stdout, result.stdout[-3000:]


def test_the_plan_is_compiled_once_a_run_however_many_roles_depend_on_it(tmp_path):
    (tmp_path / "play.yml").write_text(PLAYBOOK + """
- name: A later stage of the same run
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Check keepalived's inputs again (keepalived depends on fleet_plan)
      ansible.builtin.include_role:
        name: fleetops.mcp.keepalived
        tasks_from: preflight
""")
    (tmp_path / "vars.json").write_text(json.dumps({**GOOD, "plan_file": str(tmp_path / "plan.json")}))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    result = subprocess.run([str(pathlib.Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
                             str(tmp_path / "play.yml"), "-e", f"@{tmp_path / 'vars.json'}"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    # Planned by the first role's dependency; the second meets the include, skipped, and none of its tasks.
    assert result.stdout.count("TASK [fleetops.mcp.fleet_plan : Compile the fleet plan of this host]") == 1
    assert result.stdout.count("TASK [fleetops.mcp.fleet_plan : Plan this host, once a run]") == 2
    assert "Check the plan's settings" not in result.stdout.split("A later stage of the same run")[1]
