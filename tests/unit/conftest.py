"""Shared pytest fixtures for the fleetops.mcp unit tests.

* Makes this checkout importable as ``ansible_collections.fleetops.mcp`` via the
  symlink tree ``.cache/collections/ansible_collections/fleetops/mcp`` (the one
  ansible.cfg uses; idempotent, safe under concurrent runs).
* Starts real reference-server subprocesses on free 127.0.0.1 ports (started
  in parallel once per session) and real loopback helpers for every failure
  class the client must recognise: a closed port, a socket that never answers,
  a plain ``http.server`` that is not MCP, a TLS server with a self-signed
  certificate, and a round-robin proxy without session affinity.

No mocks: every test talks to a real socket.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import http.client
import http.server
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_SCRIPT = REPO_ROOT / "roles" / "mcp_server" / "files" / "reference_server" / "fleetops_reference_server.py"
MCP_TOKEN = "s3cr3t-fleet-token-" + uuid.uuid4().hex[:8]
STARTUP_TIMEOUT = 30.0


# --------------------------------------------------------------------------- #
# Collection import path
# --------------------------------------------------------------------------- #


def _ensure_link(base: Path) -> Path:
    """Make ``base/ansible_collections/fleetops/mcp`` a symlink to this checkout; return ``base``.

    Idempotent and safe under concurrency: the link is built under a unique
    name and atomically renamed into place, so readers see the old or the new
    link, never none. The same tree is created by tests/harness/venv.sh.
    """
    link = base / "ansible_collections" / "fleetops" / "mcp"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and link.resolve() == REPO_ROOT:
        return base
    staging = link.with_name(f".mcp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.symlink(REPO_ROOT, staging)
    os.replace(staging, link)
    return base


def _collections_root() -> Path:
    """Directory containing ``ansible_collections/fleetops/mcp`` that resolves to this checkout."""
    parents = REPO_ROOT.parents
    if REPO_ROOT.name == "mcp" and parents[0].name == "fleetops" and parents[1].name == "ansible_collections":
        return parents[2]
    try:
        return _ensure_link(REPO_ROOT / ".cache" / "collections")
    except OSError:  # read-only checkout: fall back to the temp dir
        digest = hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:12]
        return _ensure_link(Path(tempfile.gettempdir()) / f"fleetops-mcp-collections-{os.getuid()}-{digest}")


COLLECTIONS_ROOT = _collections_root()
if str(COLLECTIONS_ROOT) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS_ROOT))


# --------------------------------------------------------------------------- #
# Generic helpers
# --------------------------------------------------------------------------- #


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerHandle:
    """A reference-server subprocess and how to reach it."""

    def __init__(self, name: str, args: list[str], workdir: Path, tls: "TLSMaterial | None" = None, env=None):
        self.name = name
        self.args = list(args)
        self.port = free_port()
        self.tls = tls
        self.scheme = "https" if tls else "http"
        self.base_url = f"{self.scheme}://127.0.0.1:{self.port}"
        self.mcp_url = self.base_url + "/mcp"
        self.instance = f"{name}-{uuid.uuid4().hex[:6]}"
        self.stdout_path = workdir / f"{name}.stdout.log"
        self.stderr_path = workdir / f"{name}.stderr.log"
        cmd = [sys.executable, str(SERVER_SCRIPT), "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--instance-id", self.instance, *self.args]
        if tls:
            cmd += ["--tls-cert", str(tls.cert_path), "--tls-key", str(tls.key_path)]
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        full_env.update(env or {})
        self._stdout = open(self.stdout_path, "wb")
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._stdout, stderr=self._stderr, env=full_env)

    # -- lifecycle -------------------------------------------------------- #

    def _ssl_context(self):
        import ssl

        return ssl.create_default_context(cafile=str(self.tls.cert_path)) if self.tls else None

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Poll /health until it answers 200; fail with the server's stderr if it dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.stderr()[-2000:]}")
            with contextlib.suppress(OSError):
                status, _ = self.health()
                if status == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not become healthy in {timeout}s: {self.stderr()[-2000:]}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit promptly; close log files."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._stdout.close()
        self._stderr.close()

    # -- observation -------------------------------------------------------- #

    def get(self, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
        """Plain GET against the server (status, lower-cased headers, body)."""
        req = urllib.request.Request(self.base_url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5, context=self._ssl_context()) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

    def health(self) -> tuple[int, dict]:
        status, _, body = self.get("/health")
        return status, json.loads(body)

    def metrics(self) -> str:
        return self.get("/metrics")[2].decode()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def access_log(self) -> list[dict]:
        """Parsed JSON lines the server wrote to stdout so far."""
        lines = self.stdout_path.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


class TLSMaterial:
    """A self-signed certificate (also its own CA) for 127.0.0.1/localhost, made with cryptography."""

    def __init__(self, directory: Path):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetops-test")])
        now = datetime.datetime.now(datetime.timezone.utc)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256())
        )
        self.cert_path = directory / "cert.pem"
        self.key_path = directory / "key.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self.key_path.chmod(0o600)


# --------------------------------------------------------------------------- #
# Reference server fixtures
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="session")
def collections_root() -> Path:
    """Directory to put on sys.path / ANSIBLE_COLLECTIONS_PATH to find fleetops.mcp."""
    return COLLECTIONS_ROOT


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory) -> TLSMaterial:
    """Self-signed certificate + key for 127.0.0.1."""
    return TLSMaterial(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def mcp_token() -> str:
    """Bearer token required by the secure reference server."""
    return MCP_TOKEN


@pytest.fixture(scope="session")
def fleet(tmp_path_factory, tls_material):
    """Start every shared reference server in parallel and wait for all of them."""
    workdir = tmp_path_factory.mktemp("servers")
    specs = {
        "sessioned": dict(args=[]),
        "stateless": dict(args=["--stateless"]),
        "json": dict(args=["--json-response"]),
        "secure": dict(args=[], tls=tls_material, env={"FLEETOPS_BEARER_TOKEN": MCP_TOKEN}),
    }
    servers = {}
    try:
        for name, spec in specs.items():
            servers[name] = ServerHandle(name, spec["args"], workdir, tls=spec.get("tls"), env=spec.get("env"))
        for server in servers.values():
            server.wait_ready()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="session")
def sessioned_server(fleet) -> ServerHandle:
    """Sessioned mode, SSE responses (the defaults)."""
    return fleet["sessioned"]


@pytest.fixture(scope="session")
def stateless_server(fleet) -> ServerHandle:
    """The SDK's stateless Streamable HTTP mode (no Mcp-Session-Id), SSE responses."""
    return fleet["stateless"]


@pytest.fixture(scope="session")
def json_server(fleet) -> ServerHandle:
    """Sessioned mode answering every POST with application/json."""
    return fleet["json"]


@pytest.fixture(scope="session")
def secure_server(fleet) -> ServerHandle:
    """HTTPS with a self-signed certificate and a required bearer token."""
    return fleet["secure"]


@pytest.fixture
def server_factory(tmp_path):
    """Start dedicated reference servers for destructive tests (e.g. SIGTERM); cleaned up afterwards."""
    started: list[ServerHandle] = []

    def start(*args: str, name: str = "dedicated", env: dict | None = None) -> ServerHandle:
        server = ServerHandle(name, list(args), tmp_path, env=env)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


# --------------------------------------------------------------------------- #
# Failure-class helpers on loopback
# --------------------------------------------------------------------------- #


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    return free_port()


@pytest.fixture
def silent_port():
    """A loopback port whose socket completes TCP handshakes but never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture
def closed_port_url(closed_port) -> str:
    """URL of a loopback port nothing listens on."""
    return f"http://127.0.0.1:{closed_port}/mcp"


@pytest.fixture
def silent_server_url(silent_port) -> str:
    """An MCP URL on a socket that never answers."""
    return f"http://127.0.0.1:{silent_port}/mcp"


class _NonMCPHandler(http.server.BaseHTTPRequestHandler):
    """Answers like ordinary web servers/proxies do, never like MCP."""

    ROUTES = {
        "/html": (200, "text/html; charset=utf-8", b"<!DOCTYPE html><html><head><title>Welcome</title></head></html>"),
        "/notfound": (404, "text/html", b"<html><body><h1>404 Not Found</h1></body></html>"),
        "/error": (500, "text/plain", b"Internal Server Error"),
        "/badgateway": (502, "text/html", b"<html><title>502 Bad Gateway</title></html>"),
        "/json": (200, "application/json", b'{"status": "ok"}'),
        "/notjson": (200, "application/json", b"this is not json"),
        "/octets": (200, "application/octet-stream", b"\x00\x01\x02"),
    }

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/elsewhere?token=zzz")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, ctype, body = self.ROUTES.get(self.path, self.ROUTES["/notfound"])
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@contextlib.contextmanager
def _serve_in_thread(server: http.server.HTTPServer):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def non_mcp_server():
    """Base URL of a plain http.server answering HTML pages, error pages and non-JSON-RPC JSON."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NonMCPHandler)
    server.daemon_threads = True
    with _serve_in_thread(server):
        yield f"http://127.0.0.1:{server.server_address[1]}"


class _RoundRobinProxy(http.server.BaseHTTPRequestHandler):
    """Forwards each request to the next upstream in turn: a load balancer without session affinity."""

    protocol_version = "HTTP/1.1"
    upstreams: list[tuple[str, int]] = []
    counter = [0]
    lock = threading.Lock()

    def _forward(self) -> None:
        with self.lock:
            host, port = self.upstreams[self.counter[0] % len(self.upstreams)]
            self.counter[0] += 1
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection", "content-length")}
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request(self.command, self.path, body=body or None, headers=headers)
            upstream = conn.getresponse()
            payload = upstream.read()
        finally:
            conn.close()
        self.send_response(upstream.status)
        for key, value in upstream.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length", "date"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.close_connection = True

    do_GET = do_POST = do_DELETE = _forward

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def round_robin_proxy(sessioned_server, json_server):
    """URL of a non-affine round-robin proxy over two sessioned reference servers."""
    handler = type(
        "Proxy",
        (_RoundRobinProxy,),
        {"upstreams": [("127.0.0.1", sessioned_server.port), ("127.0.0.1", json_server.port)], "counter": [0]},
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    with _serve_in_thread(server):
        yield f"http://127.0.0.1:{server.server_address[1]}/mcp"
