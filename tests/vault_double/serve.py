"""Run the Vault API TEST DOUBLE (NOT HashiCorp Vault) as a process, for Molecule scenarios.

    python -m tests.vault_double.serve --port 18200 --state-dir DIR [--seed seed.json]

Listens on 127.0.0.1 only. The seed file gives KV v2 secrets, policies and
AppRoles::

    {"kv": {"mcp/tickets": {"db_password": "..."}},
     "policies": {"fleetops-mcp": "path \\"secret/data/mcp/*\\" { capabilities = [\\"read\\"] }"},
     "approles": {"fleetops-mcp": {"token_policies": ["fleetops-mcp"]}}}

It writes ``DIR/credentials.json`` (0600): the URL, the root token, and each
AppRole's role_id and a secret_id with unlimited uses. Later changes (such as
a rotated secret) go through the double's own documented HTTP API with the
root token. It stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import sys
import threading

if __package__ in (None, ""):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
    from tests.vault_double.vault_api_double import VaultAPIDouble
else:
    from .vault_api_double import VaultAPIDouble


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--seed")
    args = parser.parse_args()

    state = pathlib.Path(args.state_dir)
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    seed = json.loads(pathlib.Path(args.seed).read_text()) if args.seed else {}
    double = VaultAPIDouble()
    for name, text in seed.get("policies", {}).items():
        double.seed_policy(name, text)
    for path, data in seed.get("kv", {}).items():
        double.seed_kv(path, data)
    approles = {}
    for name, settings in seed.get("approles", {}).items():
        role_id = double.seed_approle(name, **settings)
        secret_id, _ = double.issue_secret_id(name)
        approles[name] = {"role_id": role_id, "secret_id": secret_id}
    double.start(port=args.port)

    credentials = state / "credentials.json"
    fd = os.open(credentials, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"url": double.url, "root_token": double.root_token, "approles": approles}, out)
    (state / "pid").write_text(str(os.getpid()))

    stop = threading.Event()
    stopped_by: list[str] = []

    def on_signal(number, _frame):
        stopped_by.append(signal.Signals(number).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"Vault API test double (NOT HashiCorp Vault) on {double.url}", flush=True)
    stop.wait()
    # Said in the log: a scenario that finds the double gone can tell a stop from a crash.
    print(f"Vault API test double stopping on {stopped_by[0]} (sent by another process)", flush=True)
    double.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
