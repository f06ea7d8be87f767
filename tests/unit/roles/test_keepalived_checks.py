"""keepalived's health checks, rendered by ansible-playbook from the role's templates and run here (issue 18
item 10): the nginx check follows nginx_lb_status_listen, and the backend check fails only when no MCP backend
of the fleet accepts a connection."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "keepalived"
PLAYBOOK = """
- name: Render keepalived's checks from the role's templates
  hosts: lb-1
  connection: local
  gather_facts: false
  vars_files:
    - {role}/defaults/main.yml
    - {role}/vars/main.yml
  tasks:
    - name: Write the checks
      ansible.builtin.template:
        src: "{role}/templates/{{{{ item }}}}.j2"
        dest: "{{{{ out_dir }}}}/{{{{ item }}}}"
        mode: "0700"
      loop: [keepalived-check-nginx, keepalived-check-listening, keepalived-check-backends, keepalived.conf]
"""
INVENTORY = """
[load_balancers]
lb-1
[docker_hosts]
ms-1 fleetops_address=127.0.0.2
ms-2 fleetops_address=127.0.0.3
"""


def render(out_dir: pathlib.Path, **overrides) -> pathlib.Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "render.yml").write_text(PLAYBOOK.format(role=ROLE))
    (out_dir / "hosts.ini").write_text(INVENTORY)
    variables = {
        "out_dir": str(out_dir),
        "ansible_python_interpreter": sys.executable,
        "fleetops_plan": {"groups": {"docker_hosts": "docker_hosts", "load_balancers": "load_balancers"},
                          "status": {"listen": "127.0.0.1:8081", "url": "http://127.0.0.1:8081"},
                          "textfile_dir": str(out_dir / "textfile")},
        "fleetops_mcp_servers": [{"name": "reference", "image": "r:1", "host_port": 18080, "replicas": 2}],
        "keepalived_virtual_ipaddress": "192.0.2.10/24",
        "keepalived_auth_pass": "s3cret",
        "keepalived_unicast": False,
        "keepalived_interface": "lo",
        **overrides,
    }
    (out_dir / "vars.json").write_text(json.dumps(variables))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    bin_dir = pathlib.Path(sys.executable).parent
    result = subprocess.run([str(bin_dir / "ansible-playbook"), "-i", str(out_dir / "hosts.ini"),
                             str(out_dir / "render.yml"), "-e", f"@{out_dir / 'vars.json'}"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=180, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return out_dir


def run(script: pathlib.Path, timeout: float = 10) -> tuple[int, float]:
    started = time.monotonic()
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=timeout, check=False)
    return result.returncode, time.monotonic() - started


class _Listener:
    """A TCP socket on 127.0.0.1 that accepts connections and answers each with ``answer`` (or nothing)."""

    def __init__(self, answer: bytes | None = None):
        import threading
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                if self.answer is not None:
                    request = b""
                    while b"\r\n\r\n" not in request:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        request += chunk
                    conn.sendall(self.answer)

    def close(self):
        # shutdown wakes the thread blocked in accept(), so the port is closed for real.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=5)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_nginx_checks_follow_nginx_lb_status_listen(tmp_path):
    status = _Listener(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
    try:
        out = render(tmp_path, nginx_lb_status_listen=f"127.0.0.1:{status.port}")
        nginx_check = (out / "keepalived-check-nginx").read_text()
        assert f"http://127.0.0.1:{status.port}/healthz" in nginx_check
        # Nginx moved to another status port: both checks still find it, so the node stays healthy.
        assert run(out / "keepalived-check-nginx")[0] == 0
        assert run(out / "keepalived-check-listening")[0] == 0
    finally:
        status.close()
    assert run(out / "keepalived-check-listening")[0] != 0


def test_the_nginx_check_url_defaults_to_the_plan_status_listener(tmp_path):
    out = render(tmp_path)
    assert "http://127.0.0.1:8081/healthz" in (out / "keepalived-check-nginx").read_text()


def test_the_backend_check_defaults_to_every_backend_nginx_routes_to(tmp_path):
    script = (render(tmp_path) / "keepalived-check-backends").read_text()
    targets = [line.strip().strip("'") for line in script.split("targets=(")[1].split(")")[0].splitlines() if line.strip()]
    assert targets == ["127.0.0.2/18080", "127.0.0.2/18081", "127.0.0.3/18080", "127.0.0.3/18081"]
    conf = (tmp_path / "keepalived.conf").read_text()
    assert "vrrp_script fleetops_backends {" in conf
    assert conf.split("track_script {")[1].split("}")[0].split() == [
        "fleetops_nginx", "fleetops_nginx_listening", "fleetops_backends"]


def test_the_backend_check_passes_while_one_backend_answers_and_fails_when_none_does(tmp_path):
    live = _Listener()
    silent = socket.socket()  # a full backlog: connections to it neither complete nor fail
    silent.bind(("127.0.0.1", 0))
    silent.listen(0)
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(silent.getsockname())
            fillers.append(filler)
        dead, silent_port = _closed_port(), silent.getsockname()[1]
        backends = [{"address": "127.0.0.1", "port": p} for p in (dead, silent_port, live.port)]
        out = render(tmp_path / "some", keepalived_check_backends=backends, keepalived_check_timeout=2)
        status, took = run(out / "keepalived-check-backends")
        # One dead, one silent and one live backend: healthy, and without waiting for the silent one.
        assert status == 0 and took < 1.5, (status, took)
        live.close()
        out = render(tmp_path / "none", keepalived_check_backends=backends[:2], keepalived_check_timeout=2)
        status, took = run(out / "keepalived-check-backends")
        # No backend answers: the check fails, within keepalived's timeout for it (2 s).
        assert status != 0 and took < 2.0, (status, took)
    finally:
        live.close()
        silent.close()
        for filler in fillers:
            filler.close()


def test_no_backends_turns_the_backend_check_off(tmp_path):
    out = render(tmp_path, keepalived_check_backends=[])
    assert "fleetops_backends" not in (out / "keepalived.conf").read_text()
    assert run(out / "keepalived-check-backends")[0] == 0


@pytest.mark.parametrize("backends", [[{"address": "10.0.0.1"}], [{"address": "10.0.0.1", "port": 0}],
                                      [{"address": "a b", "port": 80}]])
def test_a_bad_backend_list_is_refused_naming_the_variable(tmp_path, backends):
    from test_keepalived_preflight import preflight
    result = preflight(tmp_path, keepalived_check_backends=backends)
    assert result.returncode != 0
    assert "keepalived_check_backends must be a list of {address, port}" in " ".join(result.stdout.split())


def test_a_bracketed_ipv6_check_url_is_accepted(tmp_path):
    from test_keepalived_preflight import preflight
    result = preflight(tmp_path, keepalived_check_url="http://[::1]:8081/healthz")
    assert result.returncode == 0, result.stdout[-2000:]
