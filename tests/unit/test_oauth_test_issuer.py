"""The OAuth test issuer (tests/oauth_test_issuer; a test tool, NOT an authorization server): its JWTs verify
with cryptography directly, its JWKs carry the key's numbers, and its CLI writes a JWKS and serves files over HTTPS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from script_loader import load_script

REPO = Path(__file__).resolve().parents[2]
ISSUER = REPO / "tests/oauth_test_issuer/fleetops_test_issuer.py"

ti = load_script(ISSUER, "fleetops_test_issuer")

CLAIMS = ti.claims("https://idp.example.test", "https://mcp.example.test/mcp", "alice", "mcp:tools", now=1_700_000_000)


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _parts(token: str) -> tuple:
    head, payload, signature = token.split(".")
    return json.loads(_unb64(head)), json.loads(_unb64(payload)), (head + "." + payload).encode(), _unb64(signature)


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module", params=["P-256", "P-384"])
def ec_key(request):
    return ec.generate_private_key({"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}[request.param])


@pytest.mark.parametrize(("alg", "digest"), [("RS256", hashes.SHA256), ("RS384", hashes.SHA384), ("RS512", hashes.SHA512)])
def test_rsa_tokens_verify_and_tampering_fails(rsa_key, alg, digest):
    token = ti.mint(rsa_key, "rsa-1", CLAIMS, alg=None if alg == "RS256" else alg)
    header, payload, signed, signature = _parts(token)

    assert header == {"alg": alg, "typ": "JWT", "kid": "rsa-1"}
    assert payload == CLAIMS
    rsa_key.public_key().verify(signature, signed, padding.PKCS1v15(), digest())
    with pytest.raises(InvalidSignature):
        rsa_key.public_key().verify(signature, signed.replace(b".", b".e", 1), padding.PKCS1v15(), digest())


def test_ec_tokens_carry_a_raw_r_s_signature_that_verifies(ec_key):
    size, alg, digest = (32, "ES256", hashes.SHA256) if ec_key.curve.key_size == 256 else (48, "ES384", hashes.SHA384)
    token = ti.mint(ec_key, "ec-1", CLAIMS)
    header, payload, signed, signature = _parts(token)

    assert header["alg"] == alg and payload == CLAIMS
    assert len(signature) == 2 * size
    der = utils.encode_dss_signature(int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big"))
    ec_key.public_key().verify(der, signed, ec.ECDSA(digest()))
    with pytest.raises(InvalidSignature):
        ec_key.public_key().verify(der, signed + b"x", ec.ECDSA(digest()))


def test_the_header_can_lie_while_the_signature_stays_good(rsa_key, ec_key):
    token = ti.mint(rsa_key, "rsa-1", CLAIMS, header={"kid": "someone-else", "typ": None, "x5u": "https://evil.test"})
    header, _, signed, signature = _parts(token)
    assert header == {"alg": "RS256", "kid": "someone-else", "x5u": "https://evil.test"}
    rsa_key.public_key().verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(ValueError, match="signs"):
        ti.mint(ec_key, "ec-1", CLAIMS, alg="RS256")
    with pytest.raises(ValueError, match="signs"):
        ti.mint(rsa_key, "rsa-1", CLAIMS, alg="ES256")


def test_forged_tokens(rsa_key):
    none = ti.mint_none(CLAIMS, kid="rsa-1")
    header, payload, _, signature = _parts(none)
    assert none.endswith(".") and signature == b""
    assert header == {"alg": "none", "typ": "JWT", "kid": "rsa-1"} and payload == CLAIMS

    public_pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    forged = ti.mint_hs256(public_pem, CLAIMS)
    header, _, signed, signature = _parts(forged)
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert signature == hmac.new(public_pem, signed, hashlib.sha256).digest()


def test_public_jwk_carries_the_key_numbers(rsa_key, ec_key):
    jwk = ti.public_jwk(rsa_key, "rsa-1")
    numbers = rsa_key.public_key().public_numbers()
    assert set(jwk) == {"kty", "n", "e", "kid", "use", "alg"}
    assert (jwk["kty"], jwk["kid"], jwk["use"], jwk["alg"], jwk["e"]) == ("RSA", "rsa-1", "sig", "RS256", "AQAB")
    assert int.from_bytes(_unb64(jwk["n"]), "big") == numbers.n
    assert "=" not in jwk["n"] and len(_unb64(jwk["n"])) == 256

    jwk = ti.public_jwk(ec_key, "ec-1")
    numbers = ec_key.public_key().public_numbers()
    size = 32 if ec_key.curve.key_size == 256 else 48
    assert set(jwk) == {"kty", "crv", "x", "y", "kid", "use", "alg"}
    assert jwk["crv"] == ("P-256" if size == 32 else "P-384") and jwk["alg"] == ("ES256" if size == 32 else "ES384")
    assert len(_unb64(jwk["x"])) == len(_unb64(jwk["y"])) == size
    assert (int.from_bytes(_unb64(jwk["x"]), "big"), int.from_bytes(_unb64(jwk["y"]), "big")) == (numbers.x, numbers.y)

    assert ti.public_jwk(ec_key.public_key(), "ec-1") == jwk
    assert ti.jwks([(rsa_key, "a"), (ec_key, "b")]) == {"keys": [ti.public_jwk(rsa_key, "a"), ti.public_jwk(ec_key, "b")]}
    with pytest.raises(ValueError, match="only RSA and EC"):
        ti.public_jwk(ec.generate_private_key(ec.SECP521R1()), "p521")


def test_claims_and_b64url():
    body = ti.claims("https://i", ["a", "b"], "s", "x y", lifetime=60, now=1000, client_id="c")
    assert body == {"iss": "https://i", "aud": ["a", "b"], "sub": "s", "scope": "x y", "iat": 1000, "nbf": 1000,
                    "exp": 1060, "client_id": "c"}
    assert abs(ti.claims("i", "a", "s", "x")["iat"] - time.time()) < 5
    assert ti.b64url(b"\xfb\xff") == "-_8"


def _write_key(path: Path, key) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def test_cli_jwks_writes_the_public_halves(tmp_path, rsa_key, ec_key):
    rsa_pem, ec_pem = _write_key(tmp_path / "rsa.pem", rsa_key), _write_key(tmp_path / "ec.pem", ec_key)
    out = tmp_path / "www" / "jwks.json"
    out.parent.mkdir()
    result = subprocess.run([sys.executable, str(ISSUER), "jwks", "--key", "%s:rsa-1" % rsa_pem, "--key", "%s:ec-1" % ec_pem,
                             "--out", str(out)], capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text()) == ti.jwks([(rsa_key, "rsa-1"), (ec_key, "ec-1")])
    assert out.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in out.parent.iterdir()) == ["jwks.json"]
    assert ti.public_jwk(ti.load_private_key(str(rsa_pem)), "k") == ti.public_jwk(rsa_key, "k")


def test_serve_needs_no_cryptography_at_import():
    code = "import sys; sys.path.insert(0, %r); import fleetops_test_issuer; print('cryptography' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code % str(ISSUER.parent)], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "False"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_serve_serves_files_over_https_and_nothing_else(tmp_path, tls_material):
    www = tmp_path / "www"
    www.mkdir()
    (www / "jwks.json").write_text('{"keys": []}')
    (www / "sub").mkdir()
    port = _free_port()
    process = subprocess.Popen([sys.executable, str(ISSUER), "serve", "--dir", str(www), "--cert", str(tls_material.cert_path),
                                "--key", str(tls_material.key_path), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    context = ssl.create_default_context(cafile=str(tls_material.cert_path))
    base = "https://127.0.0.1:%d/" % port

    def status(path: str, method: str = "GET"):
        try:
            with urllib.request.urlopen(urllib.request.Request(base + path, method=method), context=context, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""

    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "the issuer did not start"
                time.sleep(0.05)
        assert status("jwks.json") == (200, b'{"keys": []}')
        assert status("")[0] == 404
        assert status("sub/")[0] == 404
        assert status("missing.json")[0] == 404
        assert status("../../etc/passwd")[0] == 404
        assert status("jwks.json", "HEAD")[0] == 405
        assert status("jwks.json", "POST")[0] == 501
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    requests = [line for line in stderr.splitlines() if "HTTP/1.1" in line]
    assert len(requests) == 7, stderr
    assert all(line.startswith("fleetops-test-issuer: 127.0.0.1 ") for line in requests)
