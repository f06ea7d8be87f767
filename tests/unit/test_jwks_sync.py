"""nginx_lb's fleetops-jwks-sync against the test issuer's HTTPS server on loopback (real TLS, a throwaway CA).

The script runs as a subprocess, as the systemd timer runs it; its JWK checks are also called directly.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from script_loader import load_script

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "roles/nginx_lb/files/fleetops-jwks-sync"
SYSTEM_PYTHON = "/usr/bin/python3"

sync = load_script(SCRIPT, "fleetops_jwks_sync")
issuer = load_script(REPO / "tests/oauth_test_issuer/fleetops_test_issuer.py", "fleetops_test_issuer")


def _system_python_has_cryptography() -> bool:
    if not os.path.exists(SYSTEM_PYTHON) or os.path.realpath(SYSTEM_PYTHON) == os.path.realpath(sys.executable):
        return False
    probe = [SYSTEM_PYTHON, "-c", "import cryptography"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


# --------------------------------------------------------------------------- #
# A throwaway CA, a server certificate for 127.0.0.1, and the test issuer's server
# --------------------------------------------------------------------------- #


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _usage(**enabled) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{name: enabled.get(name, False) for name in names})


def _make_ca(common_name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _pem(obj) -> bytes:
    if hasattr(obj, "private_bytes"):
        return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    return obj.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict:
    """ca.pem signs server.pem (127.0.0.1 only); other-ca.pem signs nothing we serve."""
    directory = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _make_ca("fleetops jwks-sync test CA")
    _, other_ca = _make_ca("fleetops unrelated CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {name: directory / (name + ".pem") for name in ("ca", "other-ca", "server", "server-key")}
    paths["ca"].write_bytes(_pem(ca_cert))
    paths["other-ca"].write_bytes(_pem(other_ca))
    paths["server"].write_bytes(_pem(cert))
    paths["server-key"].write_bytes(_pem(key))
    return {name: str(path) for name, path in paths.items()}


class IssuerServer:
    """The test issuer's ``serve`` (make_server) in a thread, serving ``directory``."""

    def __init__(self, directory: Path, pki: dict):
        self.directory = directory
        self.server = issuer.make_server(str(directory), pki["server"], pki["server-key"], port=0)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.running = True

    def url(self, name: str, host: str = "127.0.0.1") -> str:
        return "https://%s:%d/%s" % (host, self.port, name)

    def publish(self, keys: list, name: str = "jwks.json") -> None:
        """Serve a JWKS of [(key, kid) or a ready JWK dict, ...]."""
        jwks = [k if isinstance(k, dict) else issuer.public_jwk(k[0], k[1]) for k in keys]
        (self.directory / name).write_text(json.dumps({"keys": jwks}))

    def stop(self) -> None:
        if self.running:
            self.server.shutdown()
            self.server.server_close()
            self.running = False


@pytest.fixture
def server(tmp_path, pki):
    served = tmp_path / "served"
    served.mkdir()
    handle = IssuerServer(served, pki)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def keys() -> dict:
    return {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "rsa-new": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rsa-weak": rsa.generate_private_key(public_exponent=65537, key_size=1024),
        "rsa-enc": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }


def _mixed_jwks(keys: dict) -> list:
    """Two usable keys and three the script must skip: oct, a 1024-bit RSA key, an encryption key."""
    oct_key = {"kty": "oct", "kid": "hmac-1", "k": issuer.b64url(b"s" * 32), "alg": "HS256"}
    enc = dict(issuer.public_jwk(keys["rsa-enc"], "rsa-enc"), use="enc")
    enc.pop("alg")
    return [(keys["rsa"], "rsa-1"), (keys["ec"], "ec-1"), oct_key, (keys["rsa-weak"], "rsa-weak"), enc]


def _config(tmp_path: Path, server: IssuerServer, pki: dict, **overrides) -> Path:
    entry = {"name": "corp", "issuer": "https://idp.example.test", "jwks_uri": server.url("jwks.json"),
             "algorithms": ["RS256", "ES256"], "ca_file": pki["ca"]}
    entry.update(overrides.pop("issuer", {}))
    config = {"keys_dir": str(tmp_path / "oauth"), "timeout": 5, "max_bytes": 1048576, "issuers": [entry]}
    config.update(overrides)
    path = tmp_path / "oauth-issuers.json"
    path.write_text(json.dumps(config))
    return path


def run_sync(config: Path, python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run([python, str(SCRIPT), "--config", str(config)], capture_output=True, text=True,
                          timeout=60, check=False)


def _verify(spki_b64: str, token: str) -> None:
    """Check ``token``'s signature with the SPKI key, as njs's crypto.subtle.verify would."""
    public = serialization.load_der_public_key(base64.b64decode(spki_b64, validate=True))
    head, payload, signature = token.split(".")
    data = (head + "." + payload).encode("ascii")
    signature = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    else:
        half = len(signature) // 2
        der = utils.encode_dss_signature(int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big"))
        public.verify(der, data, ec.ECDSA(hashes.SHA256()))


# --------------------------------------------------------------------------- #
# Sync runs
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("python", [
    sys.executable,
    pytest.param(SYSTEM_PYTHON, marks=pytest.mark.skipif(not _system_python_has_cryptography(),
                                                         reason="no system python3 with python3-cryptography")),
], ids=["venv", "system-python3"])
def test_writes_only_the_usable_keys_and_they_verify_minted_tokens(tmp_path, server, pki, keys, python):
    server.publish(_mixed_jwks(keys))
    config = _config(tmp_path, server, pki)

    result = run_sync(config, python)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "corp: 2 keys (changed)\n"
    for kid, reason in (("hmac-1", "unsupported kty 'oct'"), ("rsa-weak", "1024 bits"), ("rsa-enc", "not sig")):
        assert any("corp" in line and "kid=%s" % kid in line and reason in line for line in result.stderr.splitlines()), kid
    keys_dir = tmp_path / "oauth"
    assert keys_dir.stat().st_mode & 0o777 == 0o755
    path = keys_dir / "corp.json"
    assert path.stat().st_mode & 0o777 == 0o644
    document = json.loads(path.read_text())
    assert document["issuer"] == "https://idp.example.test"
    assert document["jwks_uri"] == server.url("jwks.json")
    assert isinstance(document["changed_at"], int)
    assert [(k["kid"], k["alg"]) for k in document["keys"]] == [("ec-1", "ES256"), ("rsa-1", "RS256")]
    spki = {k["kid"]: k["spki"] for k in document["keys"]}
    body = issuer.claims("https://idp.example.test", "mcp", "alice", "mcp:tools")
    for kid in ("rsa-1", "ec-1"):
        _verify(spki[kid], issuer.mint(keys[kid.split("-")[0]], kid, body))
    assert sorted(os.listdir(keys_dir)) == ["corp.json"]  # no temporary file left behind


def test_unchanged_jwks_leaves_the_file_alone_and_a_rotation_rewrites_it(tmp_path, server, pki, keys):
    server.publish([(keys["rsa"], "rsa-1"), (keys["ec"], "ec-1")])
    config = _config(tmp_path, server, pki)
    path = tmp_path / "oauth/corp.json"
    assert run_sync(config).returncode == 0
    os.utime(path, (1_000_000_000, 1_000_000_000))  # far in the past: any rewrite would show
    before = path.read_bytes()

    again = run_sync(config)

    assert (again.returncode, again.stdout) == (0, "corp: 2 keys (unchanged)\n")
    assert path.read_bytes() == before
    assert path.stat().st_mtime == 1_000_000_000

    server.publish([(keys["ec"], "ec-1"), (keys["rsa-new"], "rsa-2")])
    rotated = run_sync(config)

    assert (rotated.returncode, rotated.stdout) == (0, "corp: 2 keys (changed)\n")
    document = json.loads(path.read_text())
    assert [k["kid"] for k in document["keys"]] == ["ec-1", "rsa-2"]
    assert document["changed_at"] > 1_000_000_000
    _verify(document["keys"][1]["spki"], issuer.mint(keys["rsa-new"], "rsa-2", {"sub": "bob"}))


def _stop(server, config):
    server.stop()


def _wrong_ca(server, config):
    config["issuers"][0]["ca_file"] = config["issuers"][0]["ca_file"].replace("ca.pem", "other-ca.pem")


def _wrong_host(server, config):
    config["issuers"][0]["jwks_uri"] = server.url("jwks.json", host="localhost")  # the certificate names 127.0.0.1


def _too_big(server, config):
    config["max_bytes"] = 200


def _no_usable_key(server, config):
    server.publish([{"kty": "oct", "kid": "hmac-1", "k": "c2VjcmV0"}])


def _not_a_jwks(server, config):
    (server.directory / "jwks.json").write_text('["keys"]')


def _gone(server, config):
    (server.directory / "jwks.json").unlink()


@pytest.mark.parametrize(("breakage", "reason"), [
    (_stop, "Connection refused"),
    (_wrong_ca, "CERTIFICATE_VERIFY_FAILED"),
    (_wrong_host, "CERTIFICATE_VERIFY_FAILED"),
    (_too_big, "larger than max_bytes (200)"),
    (_no_usable_key, "no usable signature key"),
    (_not_a_jwks, "not a JWKS"),
    (_gone, "404"),
], ids=["stopped", "wrong-ca", "wrong-host", "too-big", "no-usable-key", "not-a-jwks", "404"])
def test_a_failed_fetch_keeps_the_previous_file(tmp_path, server, pki, keys, breakage, reason):
    server.publish([(keys["rsa"], "rsa-1")])
    config_path = _config(tmp_path, server, pki)
    path = tmp_path / "oauth/corp.json"
    assert run_sync(config_path).returncode == 0
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    config = json.loads(config_path.read_text())
    breakage(server, config)
    config_path.write_text(json.dumps(config))

    result = run_sync(config_path)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1].startswith("fleetops-jwks-sync: corp: ")
    assert reason in result.stderr
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == mtime
    assert sorted(os.listdir(path.parent)) == ["corp.json"]


def test_one_failing_issuer_does_not_stop_the_others(tmp_path, server, pki, keys):
    server.publish([(keys["ec"], "ec-1")])
    config_path = _config(tmp_path, server, pki)
    config = json.loads(config_path.read_text())
    broken = dict(config["issuers"][0], name="broken", jwks_uri=server.url("missing.json"))
    config["issuers"].insert(0, broken)
    config_path.write_text(json.dumps(config))

    result = run_sync(config_path)

    assert result.returncode == 1
    assert result.stdout == "corp: 1 keys (changed)\n"
    assert "fleetops-jwks-sync: broken: HTTP Error 404" in result.stderr
    assert sorted(os.listdir(tmp_path / "oauth")) == ["corp.json"]


@pytest.mark.parametrize(("change", "field"), [
    ({"issuer": {"jwks_uri": "http://127.0.0.1/jwks.json"}}, "issuers[0].jwks_uri: must be an https:// URL"),
    ({"issuer": {"name": "Corp_IdP"}}, "issuers[0].name: 'Corp_IdP' must match"),
    ({"issuer": {"name": "../etc"}}, "issuers[0].name"),
    ({"issuer": {"name": "corp\n"}}, "issuers[0].name"),
    ({"issuer": {"algorithms": ["HS256"]}}, "issuers[0].algorithms"),
    ({"issuer": {"issuer": None}}, "issuers[0].issuer: missing"),
    ({"keys_dir": None}, "keys_dir: missing"),
    ({"keys_dir": "relative/oauth"}, "keys_dir: must be an absolute path"),
    ({"max_bytes": "1M"}, "max_bytes: missing or not an integer"),
    ({"issuers": "corp"}, "issuers: missing or not a list"),
    ({"timeout": 0}, "timeout: must be positive"),
], ids=lambda value: json.dumps(value)[:40] if isinstance(value, dict) else None)
def test_a_bad_config_exits_2_naming_the_field(tmp_path, server, pki, change, field):
    config_path = _config(tmp_path, server, pki, **change)

    result = run_sync(config_path)

    assert result.returncode == 2
    assert field in result.stderr
    assert not (tmp_path / "oauth").exists()


def test_an_unreadable_config_exits_2(tmp_path):
    missing = run_sync(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    garbled = run_sync(tmp_path / "bad.json")

    assert (missing.returncode, garbled.returncode) == (2, 2)
    assert "cannot read" in missing.stderr and "absent.json" in missing.stderr
    assert "cannot read" in garbled.stderr


# --------------------------------------------------------------------------- #
# The JWK checks, called directly
# --------------------------------------------------------------------------- #


def _spki(key) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def test_p384_and_rsa_variants_convert(keys):
    p384 = ec.generate_private_key(ec.SECP384R1())
    assert sync.jwk_to_spki(issuer.public_jwk(p384, "p"), ["ES384"]) == ("ES384", _spki(p384))
    rs512 = dict(issuer.public_jwk(keys["rsa"], "r"), alg="RS512")
    assert sync.jwk_to_spki(rs512, ["RS512"]) == ("RS512", _spki(keys["rsa"]))
    no_alg_no_use = {k: v for k, v in issuer.public_jwk(keys["rsa"], "r").items() if k not in ("alg", "use")}
    assert sync.jwk_to_spki(no_alg_no_use, ["RS256"]) == ("RS256", _spki(keys["rsa"]))


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda jwk: dict(jwk, alg="ES384"), "does not match curve P-256"),
    (lambda jwk: dict(jwk, crv="P-521"), "unsupported curve 'P-521'"),
    (lambda jwk: dict(jwk, crv=["P-256"]), "unsupported curve"),
    (lambda jwk: dict(jwk, x=jwk["x"] + "\n"), "x is not base64url"),
    (lambda jwk: dict(jwk, kty="OKP", crv="Ed25519"), "unsupported kty 'OKP'"),
    (lambda jwk: dict(jwk, x=jwk["x"] + "="), "x is not base64url"),
    (lambda jwk: dict(jwk, x=jwk["x"][:-3]), "not 32 bytes long"),
    (lambda jwk: dict(jwk, y=issuer.b64url(b"\x01" * 32)), "invalid key"),
    (lambda jwk: dict(jwk, use="enc"), "use is 'enc'"),
], ids=["alg-curve-mismatch", "p521", "crv-list", "newline", "okp", "padded", "short", "off-curve", "enc"])
def test_bad_ec_jwks_are_skipped(keys, edit, reason):
    jwk = edit(issuer.public_jwk(keys["ec"], "ec-1"))
    with pytest.raises(sync.Skip, match=reason):
        sync.jwk_to_spki(jwk, ["RS256", "ES256", "ES384"])


@pytest.mark.parametrize(("edit", "algorithms", "reason"), [
    (lambda jwk: dict(jwk, alg="PS256"), ["RS256"], "alg 'PS256' is not one of"),
    (lambda jwk: dict(jwk, alg="RS384"), ["RS256"], "RS384 is not allowed"),
    (lambda jwk: dict(jwk, n="not*base64"), ["RS256"], "n is not base64url"),
    (lambda jwk: dict(jwk, e="AA"), ["RS256"], "invalid key"),
    (lambda jwk: {k: v for k, v in jwk.items() if k != "e"}, ["RS256"], "e is not base64url"),
], ids=["ps256", "not-allowed", "bad-n", "bad-e", "no-e"])
def test_bad_rsa_jwks_are_skipped(keys, edit, algorithms, reason):
    jwk = edit(issuer.public_jwk(keys["rsa"], "rsa-1"))
    with pytest.raises(sync.Skip, match=reason):
        sync.jwk_to_spki(jwk, algorithms)


def test_keys_sort_by_kid_with_null_first_and_duplicates_merge(keys, capsys):
    rsa_jwk = issuer.public_jwk(keys["rsa"], "b")
    ec_jwk = issuer.public_jwk(keys["ec"], "a")
    anonymous = {k: v for k, v in issuer.public_jwk(keys["rsa-new"], "x").items() if k != "kid"}
    out = sync.usable_keys("corp", [rsa_jwk, ec_jwk, anonymous, rsa_jwk, {"kty": "RSA", "kid": 7}], ["RS256", "ES256"])
    assert [(k["kid"], k["alg"]) for k in out] == [(None, "RS256"), ("a", "ES256"), ("b", "RS256")]
    assert "fleetops-jwks-sync: corp: key kid=7 skipped: kid is not a string" in capsys.readouterr().err


def test_script_is_executable_with_the_system_shebang():
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/usr/bin/python3\n")
