"""The Vault API test double run as a process (tests/vault_double/serve.py; NOT HashiCorp Vault)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_seeds_writes_private_credentials_and_stops_on_sigterm(tmp_path):
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({
        "kv": {"mcp/a": {"k": "v-123"}},
        "policies": {"read-mcp": 'path "secret/data/mcp/*" { capabilities = ["read"] }'},
        "approles": {"r": {"token_policies": ["read-mcp"]}},
    }))
    state = tmp_path / "state"
    port = free_port()
    process = subprocess.Popen([sys.executable, str(ROOT / "tests/vault_double/serve.py"), "--port", str(port),
                                "--state-dir", str(state), "--seed", str(seed)], stdout=subprocess.PIPE, text=True)
    try:
        credentials = state / "credentials.json"
        for _ in range(100):
            if credentials.exists() and credentials.stat().st_size:
                break
            time.sleep(0.05)
        assert credentials.stat().st_mode & 0o777 == 0o600
        creds = json.loads(credentials.read_text())
        assert creds["url"] == f"http://127.0.0.1:{port}"
        login = urllib.request.Request(f"{creds['url']}/v1/auth/approle/login", method="POST", data=json.dumps(
            {"role_id": creds["approles"]["r"]["role_id"], "secret_id": creds["approles"]["r"]["secret_id"]}).encode())
        with urllib.request.urlopen(login, timeout=5) as response:
            token = json.load(response)["auth"]["client_token"]
        read = urllib.request.Request(f"{creds['url']}/v1/secret/data/mcp/a", headers={"X-Vault-Token": token})
        with urllib.request.urlopen(read, timeout=5) as response:
            assert json.load(response)["data"]["data"] == {"k": "v-123"}
        assert int((state / "pid").read_text()) == process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    log = process.stdout.read()
    assert "NOT HashiCorp Vault" in log and "stopping on SIGTERM" in log
