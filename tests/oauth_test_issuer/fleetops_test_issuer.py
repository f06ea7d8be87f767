#!/usr/bin/python3
"""fleetops test issuer: a test issuer for the fleet scenario and unit tests, not an authorization server.

It mints JWTs (RS256/384/512, ES256/384, and the forged kinds a resource server must refuse: alg none,
HS256 keyed with a public key, a wrong kid) and writes or serves the JWKS of its keys. It has no
clients, no grants, no token endpoint and no key protection: never point anything real at it.

    python3 fleetops_test_issuer.py jwks --key rsa.pem:rsa-1 --key ec.pem:ec-1 --out jwks.json
    python3 fleetops_test_issuer.py serve --dir DIR --cert CERT --key KEY [--bind 127.0.0.1] [--port 9443]

``serve`` runs on the load balancers of the test scenario under their python3 stdlib alone, so
cryptography is imported only inside the functions that need it, never at module import time.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import hmac
import http.server
import json
import os
import ssl
import sys
import tempfile
import time

RSA_HASHES = {"RS256": "SHA256", "RS384": "SHA384", "RS512": "SHA512"}
# cryptography's curve name -> (JWK crv, alg, hash, coordinate length in bytes)
EC_CURVES = {
    "secp256r1": ("P-256", "ES256", "SHA256", 32),
    "secp384r1": ("P-384", "ES384", "SHA384", 48),
}


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515, section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json_b64(obj: dict) -> str:
    return b64url(json.dumps(obj, separators=(",", ":"), sort_keys=True).encode("utf-8"))


def _uint(value: int, length: int = 0) -> bytes:
    return value.to_bytes(length or (value.bit_length() + 7) // 8, "big")


def _public(key):
    """The public half of a private key; a public key as it is."""
    return key.public_key() if hasattr(key, "private_numbers") else key


def _kind(key) -> tuple:
    """("RSA", None) or ("EC", EC_CURVES entry) for an RSA or EC key, private or public."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    public = _public(key)
    if isinstance(public, rsa.RSAPublicKey):
        return "RSA", None
    if isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name in EC_CURVES:
        return "EC", EC_CURVES[public.curve.name]
    raise ValueError("only RSA and EC P-256/P-384 keys are supported, not %r" % type(public).__name__)


def public_jwk(private_key, kid: str) -> dict:
    """The public JWK (RFC 7517/7518) of an RSA or EC P-256/P-384 key, private or public."""
    kty, curve = _kind(private_key)
    numbers = _public(private_key).public_numbers()
    if kty == "RSA":
        jwk = {"kty": "RSA", "n": b64url(_uint(numbers.n)), "e": b64url(_uint(numbers.e)), "alg": "RS256"}
    else:
        crv, alg, _, size = curve
        jwk = {"kty": "EC", "crv": crv, "x": b64url(_uint(numbers.x, size)), "y": b64url(_uint(numbers.y, size)),
               "alg": alg}
    jwk.update(kid=kid, use="sig")
    return jwk


def jwks(keys: list) -> dict:
    """The JWKS of [(key, kid), ...]."""
    return {"keys": [public_jwk(key, kid) for key, kid in keys]}


def load_private_key(path: str):
    """An unencrypted PEM private key."""
    from cryptography.hazmat.primitives import serialization

    with open(path, "rb") as handle:
        return serialization.load_pem_private_key(handle.read(), password=None)


def _signing_input(alg: str, kid, claims: dict, header) -> str:
    jose = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        jose["kid"] = kid
    for name, value in (header or {}).items():
        if value is None:
            jose.pop(name, None)
        else:
            jose[name] = value
    return _json_b64(jose) + "." + _json_b64(claims)


def mint(private_key, kid, claims: dict, alg=None, header=None) -> str:
    """A JWS compact JWT signed with ``private_key``.

    ``alg`` defaults to RS256 for RSA and to the curve's ES256/ES384 for EC. ``header`` extends or
    overrides the JOSE header after signing-alg selection (a member set to None is removed), so a test
    can claim a wrong kid or alg while the signature stays made with ``alg``.
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

    kty, curve = _kind(private_key)
    if kty == "RSA":
        alg = alg or "RS256"
        if alg not in RSA_HASHES:
            raise ValueError("an RSA key signs %s, not %s" % ("/".join(RSA_HASHES), alg))
    else:
        if (alg or curve[1]) != curve[1]:
            raise ValueError("a %s key signs %s, not %s" % (curve[0], curve[1], alg))
        alg = curve[1]
    signing_input = _signing_input(alg, kid, claims, header).encode("ascii")
    if kty == "RSA":
        digest = getattr(hashes, RSA_HASHES[alg])()
        signature = private_key.sign(signing_input, padding.PKCS1v15(), digest)
    else:
        der = private_key.sign(signing_input, ec.ECDSA(getattr(hashes, curve[2])()))
        r, s = utils.decode_dss_signature(der)
        signature = _uint(r, curve[3]) + _uint(s, curve[3])  # JWS wants raw r||s (RFC 7518, 3.4)
    return signing_input.decode("ascii") + "." + b64url(signature)


def mint_none(claims: dict, kid=None) -> str:
    """An unsigned JWT (alg none, empty signature): ``header.payload.``."""
    return _signing_input("none", kid, claims, None) + "."


def mint_hs256(secret: bytes, claims: dict, kid=None) -> str:
    """An HS256 JWT; with a public key's bytes as ``secret`` it is the classic alg-confusion forgery."""
    signing_input = _signing_input("HS256", kid, claims, None)
    return signing_input + "." + b64url(hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest())


def claims(issuer: str, audience, subject: str, scope: str, lifetime: int = 300, now=None, **extra) -> dict:
    """iss/aud/sub/scope with iat and nbf at ``now`` (default: the clock) and exp ``lifetime`` later."""
    now = int(time.time() if now is None else now)
    body = {"iss": issuer, "aud": audience, "sub": subject, "scope": scope, "iat": now, "nbf": now,
            "exp": now + lifetime}
    body.update(extra)
    return body


def write_atomically(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".jwks.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class StaticFileHandler(http.server.SimpleHTTPRequestHandler):
    """GET of the served directory's files: no listing, no other method, one log line per request."""

    timeout = 10  # a client that never finishes its TLS handshake or request frees its thread

    def do_HEAD(self):
        self.send_error(405)

    def list_directory(self, path):
        self.send_error(404)
        return None

    def log_message(self, format, *args):
        sys.stderr.write("fleetops-test-issuer: %s %s\n" % (self.client_address[0], format % args))

    def log_error(self, format, *args):
        pass  # log_request already writes the status line


def make_server(directory: str, cert: str, key: str, bind: str = "127.0.0.1", port: int = 9443):
    """An HTTPS ThreadingHTTPServer for ``directory`` (not started; port 0 picks a free one)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    handler = functools.partial(StaticFileHandler, directory=os.path.abspath(directory))
    server = http.server.ThreadingHTTPServer((bind, port), handler)
    # The handshake happens in the request's thread, not in accept(): a stalled client blocks no one.
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    return server


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fleetops_test_issuer.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make_jwks = commands.add_parser("jwks", help="write the JWKS of private keys' public halves")
    make_jwks.add_argument("--key", action="append", required=True, metavar="PATH:KID", help="PEM private key and its kid")
    make_jwks.add_argument("--out", required=True, metavar="FILE")
    serve = commands.add_parser("serve", help="serve a directory's files over HTTPS")
    serve.add_argument("--dir", required=True)
    serve.add_argument("--cert", required=True)
    serve.add_argument("--key", required=True)
    serve.add_argument("--bind", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=9443)
    args = parser.parse_args(argv)

    if args.command == "jwks":
        keys = []
        for spec in args.key:
            path, _, kid = spec.rpartition(":")
            if not path or not kid:
                parser.error("--key %s: expected PATH:KID" % spec)
            keys.append((load_private_key(path), kid))
        write_atomically(args.out, json.dumps(jwks(keys), indent=2) + "\n")
        return 0
    server = make_server(args.dir, args.cert, args.key, args.bind, args.port)
    sys.stderr.write("fleetops-test-issuer: serving %s on https://%s:%d/\n" % (args.dir, args.bind, server.server_address[1]))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
