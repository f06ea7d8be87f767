"""The nginx_lb role's private-CA certificate (tasks/tls.yml and tls_private_ca.yml), run by ansible-playbook on this host
into temporary directories: the first run makes the CA and a certificate the CA signs for the names asked;
a re-run keeps it byte for byte; a certificate that expires within 30 days is renewed, one that expires
later is kept; new names get a new certificate; check mode on a bare host writes nothing. The handler the
tasks notify is a stand-in that records the notification (no nginx here)."""

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

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the tasks write root-owned files (make test runs as root)")


def run(tmp_path: pathlib.Path, days: int = 397, sans: tuple[str, ...] = ("DNS:lb-test", "IP:192.0.2.7"),
        check: bool = False) -> dict:
    """Run the tasks once; return {'rc', 'stats', 'notified', 'out'} for this host."""
    marker = tmp_path / "notified"
    marker.unlink(missing_ok=True)
    play = [{
        "name": "Issue the load balancer's certificate", "hosts": "localhost", "gather_facts": False,
        "vars": {"nginx_lb_tls_source": "private_ca", "nginx_lb_tls_private_ca_dir": str(tmp_path / "pki"),
                 "nginx_lb_tls_private_ca_name": "fleetops.mcp test CA",
                 "nginx_lb_tls_certificate_days": days,
                 "_nginx_lb_tls_dir": str(tmp_path / "tls"),
                 "_nginx_lb_tls_sans": list(sans), "ansible_python_interpreter": sys.executable},
        "tasks": [{"name": "The role's TLS tasks", "ansible.builtin.include_tasks": str(TASKS)}],
        "handlers": [{"name": "Reload nginx", "ansible.builtin.copy": {"content": "yes\n", "dest": str(marker),
                                                                      "mode": "0644"}}],
    }]
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_LOCALHOST_WARNING="0")
    result = subprocess.run([str(pathlib.Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
                             "-c", "local", str(playbook)] + (["--check"] if check else []),
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False)
    report = json.loads(result.stdout[result.stdout.index("{"):]) if "{" in result.stdout else {}
    return {"rc": result.returncode, "stats": report.get("stats", {}).get("localhost", {}),
            "notified": marker.exists(), "out": result.stdout[-3000:] + result.stderr[-2000:]}


def certificate(tmp_path: pathlib.Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((tmp_path / "tls" / "fleetops.crt").read_bytes())


def days_left(cert: x509.Certificate) -> float:
    return (cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)).total_seconds() / 86400


def test_the_ca_signs_a_certificate_once_and_a_rerun_keeps_it(tmp_path):
    first = run(tmp_path)
    assert first["rc"] == 0 and first["stats"]["changed"] > 0 and first["notified"], first["out"]
    ca = x509.load_pem_x509_certificate((tmp_path / "pki" / "ca.crt").read_bytes())
    cert = certificate(tmp_path)
    cert.verify_directly_issued_by(ca)
    assert cert.subject.rfc4514_string() == "CN=lb-test"
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["lb-test"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["192.0.2.7"]
    assert 396 < days_left(cert) <= 397
    # The key stays on the host; the CA's key on the controller, root's only.
    assert (tmp_path / "tls" / "fleetops.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "pki" / "ca.key").stat().st_mode & 0o777 == 0o600
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert (tmp_path / "tls" / "ca.crt").read_bytes() == (tmp_path / "pki" / "ca.crt").read_bytes()

    pem = (tmp_path / "tls" / "fleetops.crt").read_bytes()
    again = run(tmp_path)
    assert again["rc"] == 0 and again["stats"]["changed"] == 0 and not again["notified"], again["out"]
    assert (tmp_path / "tls" / "fleetops.crt").read_bytes() == pem

    # Another name asked for: a new certificate with it, from the same key.
    more = run(tmp_path, sans=("DNS:lb-test", "IP:192.0.2.7", "DNS:mcp.example.test"))
    assert more["rc"] == 0 and more["notified"], more["out"]
    names = certificate(tmp_path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["lb-test", "mcp.example.test"]
    assert certificate(tmp_path).public_key() == cert.public_key()


@pytest.mark.parametrize(("days", "renewed"), [(10, True), (45, False)], ids=["expires-in-10-days", "in-45-days"])
def test_a_certificate_that_expires_within_30_days_is_renewed_and_a_later_one_kept(tmp_path, days, renewed):
    assert run(tmp_path, days=days)["rc"] == 0
    pem = (tmp_path / "tls" / "fleetops.crt").read_bytes()
    assert days - 1 < days_left(certificate(tmp_path)) <= days

    result = run(tmp_path)  # the default lifetime, 397 days
    assert result["rc"] == 0, result["out"]
    assert ((tmp_path / "tls" / "fleetops.crt").read_bytes() != pem) is renewed
    assert result["notified"] is renewed and (result["stats"]["changed"] > 0) is renewed
    assert 396 < days_left(certificate(tmp_path)) if renewed else days - 1 < days_left(certificate(tmp_path)) <= days


def test_check_mode_on_a_bare_host_reports_the_change_and_writes_nothing(tmp_path):
    result = run(tmp_path, check=True)
    assert result["rc"] == 0 and result["stats"]["changed"] > 0, result["out"]
    assert not (tmp_path / "pki").exists() and not (tmp_path / "tls").exists()
