"""The nginx_lb role's private-CA certificate (tasks/tls.yml and tls_private_ca.yml), run by ansible-playbook on
this host for three stand-in load balancers, each with its own temporary TLS directory and one CA between them,
as the role runs on a fleet: the first run makes the CA and a certificate the CA signs for each one's names; a
re-run keeps a certificate byte for byte, renews one that expires within 30 days and keeps one that expires
later; new names get a new certificate from the same key; check mode on a bare host writes nothing. The handler
the tasks notify is a stand-in that records the notification (no nginx here)."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import subprocess
import sys

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

ROOT = pathlib.Path(__file__).resolve().parents[3]
# tls.yml makes the TLS directory, then includes tls_private_ca.yml for nginx_lb_tls_source private_ca.
TASKS = ROOT / "roles" / "nginx_lb" / "tasks" / "tls.yml"
NAMES = {"lb-a": ["DNS:lb-a", "IP:192.0.2.7"], "lb-b": ["DNS:lb-b"], "lb-c": ["DNS:lb-c"]}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the tasks write root-owned files (make test runs as root)")


def run(tmp_path: pathlib.Path, days: dict[str, int] | None = None, names: dict[str, list[str]] | None = None,
        check: bool = False) -> dict:
    """Run the tasks once on lb-a, lb-b and lb-c (local connections); return the rc, each host's stats, the hosts
    whose handler was notified and the output's tail."""
    days, names = days or {}, {**NAMES, **(names or {})}
    for host in NAMES:
        (tmp_path / f"notified-{host}").unlink(missing_ok=True)
    inventory = {"all": {"hosts": {host: {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "_nginx_lb_tls_dir": str(tmp_path / host / "tls"), "_nginx_lb_tls_sans": names[host],
        "nginx_lb_tls_certificate_days": days.get(host, 397)} for host in NAMES}}}
    play = [{
        "name": "Issue the load balancers' certificates", "hosts": "all", "gather_facts": False,
        "vars": {"nginx_lb_tls_source": "private_ca", "nginx_lb_tls_private_ca_dir": str(tmp_path / "pki"),
                 "nginx_lb_tls_private_ca_name": "fleetops.mcp test CA"},
        "tasks": [{"name": "The role's TLS tasks", "ansible.builtin.include_tasks": str(TASKS)}],
        "handlers": [{"name": "Reload nginx", "ansible.builtin.copy": {
            "content": "yes\n", "dest": str(tmp_path) + "/notified-{{ inventory_hostname }}", "mode": "0644"}}],
    }]
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    result = subprocess.run([str(pathlib.Path(sys.executable).parent / "ansible-playbook"),
                             "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml")] + (["--check"] if check else []),
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False)
    report = json.loads(result.stdout[result.stdout.index("{"):]) if "{" in result.stdout else {}
    return {"rc": result.returncode, "stats": report.get("stats", {}),
            "notified": {host for host in NAMES if (tmp_path / f"notified-{host}").exists()},
            "out": result.stdout[-3000:] + result.stderr[-2000:]}


def pem(tmp_path: pathlib.Path, host: str) -> bytes:
    return (tmp_path / host / "tls" / "fleetops.crt").read_bytes()


def certificate(tmp_path: pathlib.Path, host: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem(tmp_path, host))


def days_left(cert: x509.Certificate) -> float:
    return (cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)).total_seconds() / 86400


def test_the_ca_signs_once_a_rerun_keeps_or_renews_by_expiry_and_new_names_get_a_new_certificate(tmp_path):
    # lb-a for the default 397 days, lb-b for 10 (within the renewal window), lb-c for 45 (outside it).
    first = run(tmp_path, days={"lb-b": 10, "lb-c": 45})
    assert first["rc"] == 0 and first["notified"] == set(NAMES), first["out"]
    ca = x509.load_pem_x509_certificate((tmp_path / "pki" / "ca.crt").read_bytes())
    for host, days in (("lb-a", 397), ("lb-b", 10), ("lb-c", 45)):
        cert = certificate(tmp_path, host)
        cert.verify_directly_issued_by(ca)
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert days - 1 < days_left(cert) <= days, host
        # The key stays on its host, root's only; clients on the host get the CA certificate.
        assert (tmp_path / host / "tls" / "fleetops.key").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / host / "tls" / "ca.crt").read_bytes() == (tmp_path / "pki" / "ca.crt").read_bytes()
    cert = certificate(tmp_path, "lb-a")
    assert cert.subject.rfc4514_string() == "CN=lb-a"
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["lb-a"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["192.0.2.7"]
    assert (tmp_path / "pki" / "ca.key").stat().st_mode & 0o777 == 0o600

    # Every host at the default lifetime: lb-b's certificate expires within 30 days and is renewed; lb-a's and
    # lb-c's are kept byte for byte, and nothing else changes on them.
    before = {host: pem(tmp_path, host) for host in NAMES}
    again = run(tmp_path)
    assert again["rc"] == 0 and again["notified"] == {"lb-b"}, again["out"]
    assert {host: again["stats"][host]["changed"] > 0 for host in NAMES} == {"lb-a": False, "lb-b": True, "lb-c": False}
    assert pem(tmp_path, "lb-a") == before["lb-a"] and pem(tmp_path, "lb-c") == before["lb-c"]
    assert pem(tmp_path, "lb-b") != before["lb-b"] and 396 < days_left(certificate(tmp_path, "lb-b"))
    assert certificate(tmp_path, "lb-b").public_key() == x509.load_pem_x509_certificate(before["lb-b"]).public_key()

    # Another name asked for on lb-a: a new certificate with it, from the same key; the others are kept.
    before = {host: pem(tmp_path, host) for host in NAMES}
    more = run(tmp_path, names={"lb-a": NAMES["lb-a"] + ["DNS:mcp.example.test"]})
    assert more["rc"] == 0 and more["notified"] == {"lb-a"}, more["out"]
    names = certificate(tmp_path, "lb-a").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["lb-a", "mcp.example.test"]
    assert certificate(tmp_path, "lb-a").public_key() == cert.public_key()
    assert pem(tmp_path, "lb-b") == before["lb-b"] and pem(tmp_path, "lb-c") == before["lb-c"]


def test_check_mode_on_bare_hosts_reports_the_change_and_writes_nothing(tmp_path):
    result = run(tmp_path, check=True)
    assert result["rc"] == 0 and all(result["stats"][host]["changed"] > 0 for host in NAMES), result["out"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hosts.yml", "play.yml"]
