"""A TEST DOUBLE of the HashiCorp Vault HTTP API. This is NOT HashiCorp Vault.

No Vault server can be installed on the test machines, so the fleetops.mcp Vault
modules are tested against this small stand-in. It was written from
HashiCorp's public HTTP API documentation (developer.hashicorp.com/vault/api-docs:
``sys/health``, ``sys/policies``, ``sys/wrapping/unwrap``, ``auth/approle``,
``auth/token`` and ``secret/kv/kv-v2``) and answers with the request and response
shapes documented there. It contains no Vault code, keeps all state in memory,
listens only on 127.0.0.1 (random port, optional TLS) and serves each request on a
thread of a stdlib :class:`http.server.ThreadingHTTPServer`.

Endpoints covered (all under ``/v1/``)
======================================

* ``GET|HEAD sys/health``: 200 active, 429 standby, 501 uninitialised, 503
  sealed; honours ``standbyok``, ``activecode``, ``standbycode``, ``sealedcode``,
  ``uninitcode`` (and accepts ``perfstandbyok``, ``drsecondarycode``,
  ``performancestandbycode``). Unauthenticated, answered even when sealed.
* ``sys/policies/acl``: ``LIST``; ``sys/policies/acl/<name>``: ``GET``,
  ``POST``/``PUT`` (``{"policy": ...}``, plain or base64), ``DELETE``. Names are
  lower-cased; ``root`` cannot be changed or deleted, ``default`` cannot be deleted.
* ``auth/approle/login`` (unauthenticated), ``LIST auth/approle/role``,
  ``GET|POST|DELETE auth/approle/role/<name>``, ``GET|POST .../role-id``,
  ``POST|LIST .../secret-id`` (also under other AppRole mounts given to the
  constructor). TTL fields accept seconds or duration strings and are read back as
  integer seconds; policies are lower-cased, de-duplicated and sorted; CIDRs are
  validated; unknown parameters are ignored with a warning (HTTP 200).
* Response wrapping: any authenticated request (and AppRole login) carrying
  ``X-Vault-Wrap-TTL`` gets a ``wrap_info`` response instead of its data.
  ``POST sys/wrapping/unwrap`` takes the wrapping token as ``X-Vault-Token`` or,
  with a separate valid client token, in the ``token`` body field. Wrapping tokens
  are single-use and expire after their TTL.
* ``GET auth/token/lookup-self``.
* KV version 2 (mount ``secret`` unless told otherwise): ``GET <mount>/data/<path>``
  (``?version=``), ``POST|PUT <mount>/data/<path>`` (``options.cas``),
  ``DELETE <mount>/data/<path>`` (soft delete of the latest version),
  ``GET|POST|DELETE <mount>/metadata/<path>``, ``LIST <mount>/metadata/<path>``,
  ``GET <mount>/config``.

Behaviours
==========

* ``LIST`` is accepted both as an HTTP method and as ``GET ...?list=true``.
* Authentication: every endpoint except health, AppRole login and unwrap needs
  ``X-Vault-Token``. A missing, unknown or expired token gets
  ``403 {"errors": ["permission denied"]}``. Tokens are registered with
  :meth:`VaultAPIDouble.add_token` either with a list of allowed path prefixes
  (any capability) or with policy names. Policies are evaluated by a deliberately
  minimal ACL reader: ``path "<glob>" { capabilities = [...] }`` blocks (HCL or
  JSON), ``*`` only as a suffix glob, ``+`` as one path segment, ``deny`` wins,
  otherwise any matching block granting the capability allows. The ``root``
  policy allows everything; the built-in ``default`` policy grants the
  token-self and wrapping endpoints.
* Missing objects give ``404 {"errors": []}``; unknown routes give 404 with a
  "no handler for route" message; bad input gives 400 with an ``errors`` list.
* :attr:`VaultAPIDouble.sealed` (or ``initialized = False``) makes every endpoint
  except ``sys/health`` answer ``503 {"errors": ["Vault is sealed"]}``.
* ``X-Vault-Namespace`` is accepted and recorded on every request (state is not
  partitioned by namespace).
* Every request is recorded (:attr:`VaultAPIDouble.requests`), and an access log
  of request lines is kept (:attr:`VaultAPIDouble.access_log`) the way a proxy or
  web server would log them, so tests can prove a secret never travelled in a URL
  or never reached the double at all.

Not covered: leases and renewal, token creation endpoints, entity/identity,
longest-prefix ACL precedence and parameter constraints, policy HCL parsing
beyond a brace/quote check, replication, performance standbys, audit devices,
KV v1, namespaces as separate state, request forwarding.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import ipaddress
import json
import re
import secrets
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

DOUBLE_VERSION = "0.0.0+fleetops-vault-api-double"
DOUBLE_CLUSTER_NAME = "fleetops-vault-api-double"
DEFAULT_TOKEN_TTL = 32 * 24 * 3600  # what the double uses when a role sets no token_ttl

# Subset of the paths Vault's built-in "default" policy grants.
DEFAULT_POLICY = """\
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/revoke-self" {
  capabilities = ["update"]
}
path "sys/wrapping/lookup" {
  capabilities = ["update"]
}
path "sys/wrapping/unwrap" {
  capabilities = ["update"]
}
"""

ROLE_NAME_RE = re.compile(r"^[A-Za-z0-9 ._-]+$")
DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}

ROLE_BOOL_FIELDS = ("bind_secret_id", "local_secret_ids", "token_no_default_policy")
ROLE_INT_FIELDS = ("secret_id_num_uses", "token_num_uses")
ROLE_DURATION_FIELDS = (
    "secret_id_ttl",
    "token_ttl",
    "token_max_ttl",
    "token_explicit_max_ttl",
    "token_period",
    "period",
)
ROLE_POLICY_FIELDS = ("token_policies", "policies")
ROLE_CIDR_FIELDS = ("secret_id_bound_cidrs", "token_bound_cidrs")
ROLE_STR_FIELDS = ("token_type",)
ROLE_DEFAULTS: dict[str, Any] = {
    "bind_secret_id": True,
    "local_secret_ids": False,
    "period": 0,
    "policies": [],
    "secret_id_bound_cidrs": [],
    "secret_id_num_uses": 0,
    "secret_id_ttl": 0,
    "token_bound_cidrs": [],
    "token_explicit_max_ttl": 0,
    "token_max_ttl": 0,
    "token_no_default_policy": False,
    "token_num_uses": 0,
    "token_period": 0,
    "token_policies": [],
    "token_ttl": 0,
    "token_type": "default",
}

METHOD_CAPABILITY = {
    "GET": ("read",),
    "HEAD": ("read",),
    "LIST": ("list",),
    "POST": ("create", "update"),
    "PUT": ("create", "update"),
    "PATCH": ("patch",),
    "DELETE": ("delete",),
}


# --------------------------------------------------------------------------- #
# Small helpers
# --------------------------------------------------------------------------- #


def _now_rfc3339(epoch: float | None = None) -> str:
    moment = datetime.datetime.fromtimestamp(time.time() if epoch is None else epoch, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _uuid() -> str:
    return str(uuid.uuid4())


def _parse_bool(value: Any, name: str) -> bool:
    """Booleans the way Go's strconv.ParseBool reads them (plus JSON booleans)."""
    if isinstance(value, bool):
        return value
    text = str(value)
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise DoubleHTTPError(400, [f"error converting input {text!r} for field {name!r}: not a boolean"])


def parse_duration(value: Any, name: str = "duration") -> int:
    """Seconds from an integer, a numeric string or a duration string such as ``1h30m`` or ``2d``."""
    if isinstance(value, bool):
        raise DoubleHTTPError(400, [f"error converting input {value!r} for field {name!r}"])
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip()
        if text == "":
            return 0
        if re.fullmatch(r"\d+", text):
            seconds = float(text)
        elif re.fullmatch(r"(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h|d))+", text):
            seconds = sum(float(num) * DURATION_UNITS[unit] for num, unit in DURATION_PART_RE.findall(text))
        else:
            raise DoubleHTTPError(
                400, [f"error converting input {text!r} for field {name!r}: time: invalid duration {text!r}"]
            )
    if seconds < 0:
        raise DoubleHTTPError(400, [f"{name!r} cannot be negative"])
    return int(seconds)


def _comma_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list):
        return [str(item).strip() for item in value if str(item).strip()]
    raise DoubleHTTPError(400, [f"expected a list or a comma-separated string, got {type(value).__name__}"])


def _sanitize_policies(value: Any) -> list[str]:
    """Lower-cased, de-duplicated, sorted policy names (what Vault stores on roles)."""
    return sorted({item.lower() for item in _comma_list(value)})


def _cidrs(value: Any, *, sockaddr_style: bool) -> list[str]:
    """Validate CIDR blocks. ``sockaddr_style`` prints single hosts without ``/32`` like Vault's token fields do."""
    result = []
    for item in _comma_list(value):
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise DoubleHTTPError(400, [f"invalid CIDR blocks: {item!r}"]) from None
        if sockaddr_style and network.prefixlen == network.max_prefixlen:
            result.append(str(network.network_address))
        elif sockaddr_style:
            result.append(str(network))
        else:
            result.append(item)
    return result


def _address_allowed(address: str, cidrs: list[str]) -> bool:
    if not cidrs:
        return True
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _envelope(data=None, *, auth=None, warnings=None, wrap_info=None, lease_duration=0) -> dict:
    """The response envelope Vault wraps logical responses in."""
    return {
        "request_id": _uuid(),
        "lease_id": "",
        "renewable": False,
        "lease_duration": lease_duration,
        "data": data,
        "wrap_info": wrap_info,
        "warnings": warnings,
        "auth": auth,
    }


# --------------------------------------------------------------------------- #
# Records and state
# --------------------------------------------------------------------------- #


class DoubleHTTPError(Exception):
    """An HTTP error answer of the double (status plus Vault-style ``errors`` list or a full body)."""

    def __init__(self, status: int, errors: list[str] | None = None, body: dict | None = None):
        super().__init__(status, errors)
        self.status = status
        self.body = body if body is not None else {"errors": list(errors or [])}


@dataclass
class RecordedRequest:
    """One request the double received, exactly as it arrived (headers lower-cased)."""

    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: str
    client: str
    status: int = 0

    @property
    def namespace(self) -> str | None:
        return self.headers.get("x-vault-namespace")

    @property
    def token(self) -> str | None:
        return self.headers.get("x-vault-token")

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def text(self) -> str:
        """Everything the client sent, for "did this secret reach the double" searches."""
        headers = "\n".join(f"{key}: {value}" for key, value in self.headers.items())
        return f"{self.method} {self.target}\n{headers}\n\n{self.body}"


@dataclass
class DoubleToken:
    """A client token known to the double."""

    token: str
    accessor: str
    policies: list[str]
    paths: list[str] | None
    display_name: str
    creation_path: str
    ttl: int
    created: float
    meta: dict | None = None
    renewable: bool = False

    def expired(self) -> bool:
        return bool(self.ttl) and time.time() >= self.created + self.ttl

    def remaining(self) -> int:
        return max(0, int(self.created + self.ttl - time.time())) if self.ttl else 0


@dataclass
class DoubleSecretID:
    """An AppRole secret_id issued by the double."""

    secret_id: str
    accessor: str
    ttl: int
    num_uses: int
    created: float
    metadata: dict
    cidr_list: list[str]
    token_bound_cidrs: list[str]

    def expired(self) -> bool:
        return bool(self.ttl) and time.time() >= self.created + self.ttl


@dataclass
class DoubleAppRole:
    """An AppRole: its settings as Vault would read them back, its role_id and secret_ids."""

    name: str
    role_id: str
    settings: dict[str, Any]
    secret_ids: dict[str, DoubleSecretID] = field(default_factory=dict)


@dataclass
class DoubleWrapped:
    """A response stored behind a single-use wrapping token."""

    token: str
    accessor: str
    ttl: int
    created: float
    creation_path: str
    response: dict

    def expired(self) -> bool:
        return time.time() >= self.created + self.ttl


@dataclass
class DoubleKVSecret:
    """All versions and the metadata of one KV v2 secret."""

    created: float
    updated: float
    versions: dict[int, dict] = field(default_factory=dict)
    current_version: int = 0
    custom_metadata: dict | None = None
    cas_required: bool = False
    max_versions: int = 0

    def metadata_for(self, version: int) -> dict:
        entry = self.versions[version]
        return {
            "created_time": _now_rfc3339(entry["created"]),
            "custom_metadata": self.custom_metadata,
            "deletion_time": _now_rfc3339(entry["deleted"]) if entry["deleted"] else "",
            "destroyed": entry["destroyed"],
            "version": version,
        }


# --------------------------------------------------------------------------- #
# ACL evaluation (deliberately minimal)
# --------------------------------------------------------------------------- #


def parse_policy_rules(text: str) -> list[tuple[re.Pattern, set[str]]]:
    """``(path regex, capabilities)`` pairs from an HCL or JSON ACL policy document."""
    blocks: list[tuple[str, list[str]]] = []
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            document = json.loads(stripped)
        except ValueError:
            document = {}
        for glob, body in (document.get("path") or {}).items():
            blocks.append((glob, list((body or {}).get("capabilities") or [])))
    else:
        for match in re.finditer(r'path\s+"([^"]+)"\s*\{(.*?)\}', text, re.S):
            caps = re.search(r"capabilities\s*=\s*\[([^\]]*)\]", match.group(2))
            blocks.append((match.group(1), re.findall(r'"([^"]+)"', caps.group(1)) if caps else []))
    rules = []
    for glob, caps in blocks:
        pattern = re.escape(glob).replace(r"\+", "[^/]+")
        if pattern.endswith(r"\*"):
            pattern = pattern[:-2] + ".*"
        rules.append((re.compile(pattern), set(caps)))
    return rules


def check_policy_syntax(text: str) -> None:
    """Reject documents with unbalanced braces or quotes (the only HCL check the double makes)."""
    if text.strip().startswith("{"):
        try:
            json.loads(text)
        except ValueError as exc:
            raise DoubleHTTPError(400, [f"failed to parse policy: {exc}"]) from None
        return
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    if without_strings.count('"') % 2 or without_strings.count("{") != without_strings.count("}"):
        raise DoubleHTTPError(400, ["failed to parse policy: unbalanced braces or quotes"])


# --------------------------------------------------------------------------- #
# HTTP plumbing
# --------------------------------------------------------------------------- #


class _DoubleHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer doing the TLS handshake per connection thread and able to drop live connections."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, double: VaultAPIDouble, ssl_context: ssl.SSLContext | None):
        self.double = double
        self.ssl_context = ssl_context
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def finish_request(self, request, client_address):
        request.settimeout(10)
        if self.ssl_context is not None:
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                self.double.tls_failures.append(f"{client_address[0]}: {exc}")
                request.close()
                return
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)
            if self.ssl_context is not None:
                request.close()

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, lets the double answer it, writes the JSON response."""

    protocol_version = "HTTP/1.1"
    server_version = "fleetops-vault-api-double"
    sys_version = ""
    timeout = 10

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, body = self.server.double.handle(
            self.command, self.path, dict(self.headers.items()), raw, self.client_address[0]
        )
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Cache-Control", "no-store")
        if body is not None:
            self.send_header("Content-Type", "application/json")
        if status != 204:
            self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(payload)))
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_LIST = _serve

    def log_message(self, *args) -> None:  # the double keeps its own access log
        pass


# --------------------------------------------------------------------------- #
# The double
# --------------------------------------------------------------------------- #


class VaultAPIDouble:
    """In-memory test double of the documented Vault HTTP API on 127.0.0.1 (see the module docstring).

    Use as a context manager or call :meth:`start` / :meth:`stop`. The
    ``root_token`` (random unless given) carries the ``root`` policy.
    """

    def __init__(
        self,
        *,
        root_token: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        kv_mounts: tuple[str, ...] = ("secret",),
        approle_mounts: tuple[str, ...] = ("approle",),
    ):
        self.lock = threading.RLock()
        self.sealed = False
        self.initialized = True
        self.standby = False
        self.policies: dict[str, str] = {"default": DEFAULT_POLICY}
        self.tokens: dict[str, DoubleToken] = {}
        self.wrapped: dict[str, DoubleWrapped] = {}
        self.approles: dict[str, dict[str, DoubleAppRole]] = {mount: {} for mount in approle_mounts}
        self.kv: dict[str, dict[str, DoubleKVSecret]] = {mount: {} for mount in kv_mounts}
        self.requests: list[RecordedRequest] = []
        self.access_log: list[str] = []
        self.tls_failures: list[str] = []
        self.cluster_id = _uuid()
        self.root_token = root_token or f"double-root-{secrets.token_hex(8)}"
        self.add_token(self.root_token, policies=["root"], display_name="root")
        self._tls = (tls_cert, tls_key) if tls_cert else None
        self._server: _DoubleHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------- #

    def start(self, port: int = 0) -> VaultAPIDouble:
        """Listen on 127.0.0.1 (a random port unless given) and serve on a background thread."""
        context = None
        if self._tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self._tls[0], self._tls[1])
        self._server = _DoubleHTTPServer(("127.0.0.1", port), _Handler, self, context)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="vault-api-double", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop live keep-alive connections, close the socket and join the thread."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> VaultAPIDouble:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "the double is not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Base URL to give clients as the Vault address (``VAULT_ADDR``)."""
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    # -- seeding ------------------------------------------------------------- #

    def add_token(
        self,
        token: str | None = None,
        *,
        paths: list[str] | None = None,
        policies: list[str] | None = None,
        ttl: int = 0,
        display_name: str = "double",
        creation_path: str = "auth/token/create",
        meta: dict | None = None,
    ) -> str:
        """Register a client token; returns it.

        ``paths`` are allowed path prefixes (any capability; ``""`` allows all).
        Otherwise the token's ``policies`` are evaluated against the stored policy texts.
        """
        token = token or f"double-token-{secrets.token_hex(12)}"
        with self.lock:
            self.tokens[token] = DoubleToken(
                token=token,
                accessor=secrets.token_hex(12),
                policies=list(policies or ([] if paths is not None else ["default"])),
                paths=list(paths) if paths is not None else None,
                display_name=display_name,
                creation_path=creation_path,
                ttl=int(ttl),
                created=time.time(),
                meta=meta,
            )
        return token

    def revoke_token(self, token: str) -> None:
        with self.lock:
            self.tokens.pop(token, None)

    def seed_policy(self, name: str, text: str) -> None:
        with self.lock:
            self.policies[name.lower()] = text

    def seed_kv(self, path: str, data: dict, *, mount: str = "secret") -> int:
        """Write a new KV v2 version directly; returns the version number."""
        with self.lock:
            return self._kv_write(mount, path.strip("/"), data)

    def seed_approle(self, name: str, *, mount: str = "approle", role_id: str | None = None, **settings) -> str:
        """Create an AppRole as ``POST auth/<mount>/role/<name>`` would; returns its role_id."""
        with self.lock:
            role = self._role_upsert(mount, name, settings)
            if role_id:
                role.role_id = role_id
            return role.role_id

    def issue_secret_id(self, role_name: str, *, mount: str = "approle", wrap_ttl: int | None = None, **params):
        """Issue a secret_id as ``POST .../secret-id`` would.

        Returns ``(secret_id, accessor)``, or ``(wrapping_token, accessor)`` when ``wrap_ttl`` is given.
        """
        with self.lock:
            data = self._secret_id_create(mount, role_name.lower(), params)
            if wrap_ttl:
                wrapped = self._wrap(_envelope(data), wrap_ttl, f"auth/{mount}/role/{role_name.lower()}/secret-id")
                return wrapped["wrap_info"]["token"], data["secret_id_accessor"]
            return data["secret_id"], data["secret_id_accessor"]

    def wrap(self, response: dict, ttl: int = 300, creation_path: str = "sys/wrapping/wrap") -> str:
        """Store ``response`` behind a new single-use wrapping token; returns the token."""
        with self.lock:
            return self._wrap(response, ttl, creation_path)["wrap_info"]["token"]

    # -- inspection ---------------------------------------------------------- #

    def policy(self, name: str) -> str | None:
        with self.lock:
            return self.policies.get(name.lower())

    def approle(self, name: str, *, mount: str = "approle") -> DoubleAppRole | None:
        with self.lock:
            return self.approles[mount].get(name.lower())

    def kv_secret(self, path: str, *, mount: str = "secret", version: int | None = None) -> dict | None:
        with self.lock:
            secret = self.kv[mount].get(path.strip("/"))
            if secret is None:
                return None
            entry = secret.versions.get(version or secret.current_version)
            return None if entry is None or entry["destroyed"] else dict(entry["data"])

    def requests_for(self, path: str | None = None, method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests, optionally filtered by API path (without ``/v1/``) and method."""
        with self.lock:
            return [
                req
                for req in self.requests
                if (path is None or req.path == path) and (method is None or req.method == method.upper())
            ]

    def requests_containing(self, needle: str) -> list[RecordedRequest]:
        """Requests in which ``needle`` appears anywhere (request line, headers or body)."""
        with self.lock:
            return [req for req in self.requests if needle in req.text()]

    def clear_requests(self) -> None:
        with self.lock:
            self.requests.clear()
            self.access_log.clear()

    # -- request handling ---------------------------------------------------- #

    def handle(self, method: str, target: str, headers: dict, raw: bytes, client: str) -> tuple[int, dict | None]:
        """Answer one HTTP request: ``(status, JSON body or None)``. Called by the HTTP handler threads."""
        parts = urlsplit(target)
        record = RecordedRequest(
            method=method.upper(),
            target=target,
            path=unquote(parts.path)[len("/v1/") :] if parts.path.startswith("/v1/") else unquote(parts.path),
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={key.lower(): value for key, value in headers.items()},
            body=raw.decode("utf-8", errors="replace"),
            client=client,
        )
        with self.lock:
            self.requests.append(record)
            try:
                status, body = self._dispatch(record)
            except DoubleHTTPError as exc:
                status, body = exc.status, exc.body
            except Exception as exc:  # a bug in the double: answer like Vault's 500 and keep serving
                status, body = 500, {
                    "errors": [f"1 error occurred:\n\t* internal error in the test double: {exc!r}\n\n"]
                }
            record.status = status
            namespace = f" ns={record.namespace}" if record.namespace else ""
            self.access_log.append(f"{client} {record.method} {target} {status}{namespace}")
        return status, body

    def _dispatch(self, req: RecordedRequest) -> tuple[int, dict | None]:
        if not req.target.startswith("/v1/"):
            raise DoubleHTTPError(404, ["no handler for route: the Vault API is served under /v1/"])
        method = req.method
        if method == "GET" and req.query.get("list") and _parse_bool(req.query["list"][0], "list"):
            method = "LIST"
        path = req.path.strip("/")
        if path == "sys/health":
            return self._health(method, req.query)
        if self.sealed or not self.initialized:
            raise DoubleHTTPError(503, ["Vault is sealed"])
        body = self._json_body(req)
        if path == "sys/wrapping/unwrap":
            return self._unwrap(method, req, body)
        login = re.fullmatch(r"auth/([^/]+)/login", path)
        if login and login.group(1) in self.approles:
            status, answer = self._approle_login(login.group(1), method, body, req.client)
            return self._maybe_wrap(req, path, status, answer)
        token = self._authenticate(req)
        self._authorize(token, path, method)
        status, answer = self._route(method, path, req, body, token)
        return self._maybe_wrap(req, path, status, answer)

    @staticmethod
    def _json_body(req: RecordedRequest) -> dict:
        if not req.body.strip():
            return {}
        try:
            body = json.loads(req.body)
        except ValueError as exc:
            raise DoubleHTTPError(400, [f"failed to parse JSON input: {exc}"]) from None
        if not isinstance(body, dict):
            raise DoubleHTTPError(400, ["failed to parse JSON input: expected an object"])
        return body

    def _authenticate(self, req: RecordedRequest) -> DoubleToken:
        token = self.tokens.get(req.token or "")
        if token is None:
            raise DoubleHTTPError(403, ["permission denied"])
        if token.expired():
            del self.tokens[token.token]
            raise DoubleHTTPError(403, ["permission denied"])
        return token

    def _authorize(self, token: DoubleToken, path: str, method: str) -> None:
        if token.paths is not None:
            if any(path.startswith(prefix.rstrip("*")) for prefix in token.paths):
                return
            raise DoubleHTTPError(403, ["permission denied"])
        if "root" in token.policies:
            return
        needed = set(METHOD_CAPABILITY.get(method, ("sudo",)))
        granted: set[str] = set()
        for name in token.policies:
            for pattern, caps in parse_policy_rules(self.policies.get(name, "")):
                if pattern.fullmatch(path):
                    granted |= caps
        if "deny" in granted or not granted & needed:
            raise DoubleHTTPError(403, ["permission denied"])

    def _maybe_wrap(self, req: RecordedRequest, path: str, status: int, answer: dict | None):
        ttl = req.headers.get("x-vault-wrap-ttl")
        if ttl is None or status != 200 or answer is None:
            return status, answer
        return 200, self._wrap(answer, parse_duration(ttl, "X-Vault-Wrap-TTL"), path)

    def _wrap(self, response: dict, ttl: int, creation_path: str) -> dict:
        if ttl <= 0:
            raise DoubleHTTPError(400, ["wrapping TTL must be greater than zero"])
        token = f"double-wrap-{secrets.token_hex(12)}"
        wrapped = DoubleWrapped(
            token=token,
            accessor=secrets.token_hex(12),
            ttl=ttl,
            created=time.time(),
            creation_path=creation_path,
            response=response,
        )
        self.wrapped[token] = wrapped
        data = response.get("data") or {}
        auth = response.get("auth") or {}
        wrap_info = {
            "token": token,
            "accessor": wrapped.accessor,
            "ttl": ttl,
            "creation_time": _now_rfc3339(wrapped.created),
            "creation_path": creation_path,
        }
        wrapped_accessor = data.get("secret_id_accessor") or auth.get("accessor")
        if wrapped_accessor:
            wrap_info["wrapped_accessor"] = wrapped_accessor
        answer = _envelope(None, wrap_info=wrap_info)
        answer["request_id"] = ""
        return answer

    def _route(self, method: str, path: str, req: RecordedRequest, body: dict, token: DoubleToken):
        if path == "sys/policies/acl" or path.startswith("sys/policies/acl/"):
            return self._policies(method, path[len("sys/policies/acl") :].strip("/"), body)
        if path == "auth/token/lookup-self":
            return self._lookup_self(method, token)
        segments = path.split("/")
        if len(segments) >= 3 and segments[0] == "auth" and segments[1] in self.approles and segments[2] == "role":
            return self._approle_routes(method, segments[1], segments[3:], body)
        if segments[0] in self.kv:
            return self._kv_routes(method, segments[0], segments[1:], req, body)
        raise DoubleHTTPError(404, [f'no handler for route "{path}". route entry not found.'])

    @staticmethod
    def _method_not_allowed() -> DoubleHTTPError:
        return DoubleHTTPError(405, ["1 error occurred:\n\t* unsupported operation\n\n"])

    # -- sys/health ---------------------------------------------------------- #

    def _health(self, method: str, query: dict) -> tuple[int, dict | None]:
        if method not in ("GET", "HEAD"):
            raise DoubleHTTPError(405, [])

        def code(name: str, default: int) -> int:
            if name not in query:
                return default
            try:
                return int(query[name][0])
            except ValueError:
                raise DoubleHTTPError(400, [f"bad code value for {name} parameter"]) from None

        def flag(name: str) -> bool:
            return name in query and _parse_bool(query[name][0] or "true", name)

        for accepted in ("drsecondarycode", "performancestandbycode"):  # validated, but no such node states here
            code(accepted, 0)
        flag("perfstandbyok")
        if not self.initialized:
            status = code("uninitcode", 501)
        elif self.sealed:
            status = code("sealedcode", 503)
        elif self.standby and not flag("standbyok"):
            status = code("standbycode", 429)
        else:
            status = code("activecode", 200)
        body: dict[str, Any] = {
            "initialized": self.initialized,
            "sealed": self.sealed or not self.initialized,
            "standby": self.standby,
            "performance_standby": False,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": int(time.time()),
            "version": DOUBLE_VERSION,
        }
        if self.initialized and not self.sealed:
            body.update(cluster_name=DOUBLE_CLUSTER_NAME, cluster_id=self.cluster_id)
        return status, body

    # -- sys/policies/acl ---------------------------------------------------- #

    def _policies(self, method: str, name: str, body: dict) -> tuple[int, dict | None]:
        name = name.lower()
        if not name:
            if method != "LIST":
                raise self._method_not_allowed()
            keys = sorted(set(self.policies) | {"root"})
            answer = _envelope({"keys": keys})
            answer["keys"] = keys
            return 200, answer
        if method == "GET":
            text = "" if name == "root" else self.policies.get(name)
            if text is None:
                raise DoubleHTTPError(404, [])
            answer = _envelope({"name": name, "policy": text})
            answer.update(name=name, policy=text)
            return 200, answer
        if method in ("POST", "PUT"):
            if name == "root":
                raise DoubleHTTPError(400, ['cannot update "root" policy'])
            text = body.get("policy")
            if not isinstance(text, str) or not text.strip():
                raise DoubleHTTPError(400, ["'policy' parameter not supplied or empty"])
            text = self._maybe_base64(text)
            check_policy_syntax(text)
            self.policies[name] = text
            return 204, None
        if method == "DELETE":
            if name in ("root", "default"):
                raise DoubleHTTPError(400, [f'cannot delete "{name}" policy'])
            self.policies.pop(name, None)
            return 204, None
        raise self._method_not_allowed()

    @staticmethod
    def _maybe_base64(text: str) -> str:
        """The policy parameter "can be base64-encoded": decode it when it cleanly is."""
        try:
            decoded = base64.b64decode(text, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return text
        return decoded if decoded.strip() else text

    # -- auth/token ---------------------------------------------------------- #

    def _lookup_self(self, method: str, token: DoubleToken) -> tuple[int, dict]:
        if method != "GET":
            raise self._method_not_allowed()
        data = {
            "accessor": token.accessor,
            "creation_time": int(token.created),
            "creation_ttl": token.ttl,
            "display_name": token.display_name,
            "entity_id": "",
            "expire_time": _now_rfc3339(token.created + token.ttl) if token.ttl else None,
            "explicit_max_ttl": 0,
            "id": token.token,
            "issue_time": _now_rfc3339(token.created),
            "meta": token.meta,
            "num_uses": 0,
            "orphan": True,
            "path": token.creation_path,
            "policies": sorted(token.policies),
            "renewable": token.renewable,
            "ttl": token.remaining(),
            "type": "service",
        }
        return 200, _envelope(data)

    # -- sys/wrapping/unwrap ------------------------------------------------- #

    def _unwrap(self, method: str, req: RecordedRequest, body: dict) -> tuple[int, dict]:
        if method not in ("POST", "PUT"):
            raise self._method_not_allowed()
        header_token = req.token or ""
        body_token = body.get("token")
        invalid = DoubleHTTPError(400, ["wrapping token is not valid or does not exist"])
        if body_token:
            if body_token == header_token:  # documented double use: the token is burnt, nothing is returned
                self.wrapped.pop(body_token, None)
                raise invalid
            client = self._authenticate(req)
            self._authorize(client, "sys/wrapping/unwrap", "POST")
            wrapping_token = body_token
        else:
            wrapping_token = header_token
        wrapped = self.wrapped.pop(wrapping_token, None)
        if wrapped is None or wrapped.expired():
            raise invalid
        answer = dict(wrapped.response)
        answer["request_id"] = _uuid()
        return 200, answer

    # -- auth/approle ---------------------------------------------------------- #

    def _approle_routes(self, method: str, mount: str, rest: list[str], body: dict):
        roles = self.approles[mount]
        if not rest:
            if method != "LIST":
                raise self._method_not_allowed()
            if not roles:
                raise DoubleHTTPError(404, [])
            return 200, _envelope({"keys": sorted(roles)})
        name = rest[0].lower()
        if not ROLE_NAME_RE.match(name):
            raise DoubleHTTPError(400, [f"invalid role name {rest[0]!r}"])
        if len(rest) == 1:
            return self._role(method, mount, name, body)
        if rest[1:] == ["role-id"]:
            return self._role_id(method, mount, name, body)
        if rest[1:] == ["secret-id"]:
            return self._secret_id(method, mount, name, body)
        raise DoubleHTTPError(
            404, [f'no handler for route "auth/{mount}/role/{"/".join(rest)}". route entry not found.']
        )

    def _role(self, method: str, mount: str, name: str, body: dict):
        role = self.approles[mount].get(name)
        if method == "GET":
            if role is None:
                raise DoubleHTTPError(404, [])
            return 200, _envelope(json.loads(json.dumps(role.settings)))
        if method in ("POST", "PUT"):
            ignored = sorted(set(body) - set(ROLE_DEFAULTS) - {"role_name"})
            self._role_upsert(mount, name, {key: value for key, value in body.items() if key in ROLE_DEFAULTS})
            if ignored:
                return 200, _envelope(None, warnings=[f"Endpoint ignored these unrecognized parameters: {ignored}"])
            return 204, None
        if method == "DELETE":
            self.approles[mount].pop(name, None)
            return 204, None
        raise self._method_not_allowed()

    def _role_upsert(self, mount: str, name: str, params: dict) -> DoubleAppRole:
        name = name.lower()
        role = self.approles[mount].get(name)
        settings = dict(role.settings) if role else json.loads(json.dumps(ROLE_DEFAULTS))
        for key, value in params.items():
            if key in ROLE_BOOL_FIELDS:
                settings[key] = _parse_bool(value, key)
            elif key in ROLE_INT_FIELDS:
                try:
                    settings[key] = int(value)
                except (TypeError, ValueError):
                    raise DoubleHTTPError(400, [f"error converting input {value!r} for field {key!r}"]) from None
            elif key in ROLE_DURATION_FIELDS:
                settings[key] = parse_duration(value, key)
            elif key in ROLE_POLICY_FIELDS:
                settings["token_policies"] = settings["policies"] = _sanitize_policies(value)
            elif key == "secret_id_bound_cidrs":
                settings[key] = _cidrs(value, sockaddr_style=False)
            elif key == "token_bound_cidrs":
                settings[key] = _cidrs(value, sockaddr_style=True)
            elif key in ROLE_STR_FIELDS:
                settings[key] = str(value)
            else:
                raise DoubleHTTPError(400, [f"unknown role field {key!r}"])
        if "period" in params or "token_period" in params:
            settings["period"] = settings["token_period"] = settings[
                "token_period" if "token_period" in params else "period"
            ]
        if settings["token_max_ttl"] and settings["token_ttl"] > settings["token_max_ttl"]:
            raise DoubleHTTPError(400, ["'token_ttl' cannot be greater than 'token_max_ttl'"])
        if (
            not settings["bind_secret_id"]
            and not settings["secret_id_bound_cidrs"]
            and not settings["token_bound_cidrs"]
        ):
            raise DoubleHTTPError(400, ["at least one constraint should be enabled on the role"])
        if role is None:
            role = DoubleAppRole(name=name, role_id=_uuid(), settings=settings)
            self.approles[mount][name] = role
        else:
            role.settings = settings
        return role

    def _role_id(self, method: str, mount: str, name: str, body: dict):
        role = self.approles[mount].get(name)
        if role is None:
            raise DoubleHTTPError(404, [])
        if method == "GET":
            return 200, _envelope({"role_id": role.role_id})
        if method in ("POST", "PUT"):
            role_id = body.get("role_id")
            if not role_id:
                raise DoubleHTTPError(400, ["missing role_id"])
            role.role_id = str(role_id)
            return 204, None
        raise self._method_not_allowed()

    def _secret_id(self, method: str, mount: str, name: str, body: dict):
        if method == "LIST":
            role = self.approles[mount].get(name)
            if role is None or not role.secret_ids:
                raise DoubleHTTPError(404, [])
            return 200, _envelope({"keys": sorted(entry.accessor for entry in role.secret_ids.values())})
        if method in ("POST", "PUT"):
            return 200, _envelope(self._secret_id_create(mount, name, body))
        raise self._method_not_allowed()

    def _secret_id_create(self, mount: str, name: str, params: dict) -> dict:
        role = self.approles[mount].get(name)
        if role is None:
            raise DoubleHTTPError(400, [f'role "{name}" does not exist'])
        settings = role.settings
        metadata = params.get("metadata") or {}
        if isinstance(metadata, str):
            try:
                metadata = json.loads(metadata)
            except ValueError as exc:
                raise DoubleHTTPError(400, [f"failed to parse metadata: {exc}"]) from None
        if not isinstance(metadata, dict):
            raise DoubleHTTPError(400, ["metadata must be a JSON object of strings"])
        num_uses = int(params.get("num_uses", settings["secret_id_num_uses"]) or 0)
        if settings["secret_id_num_uses"] and (num_uses == 0 or num_uses > settings["secret_id_num_uses"]):
            raise DoubleHTTPError(400, ["num_uses cannot be higher than the role's secret_id_num_uses"])
        ttl = parse_duration(params.get("ttl", settings["secret_id_ttl"]), "ttl")
        if settings["secret_id_ttl"] and (ttl == 0 or ttl > settings["secret_id_ttl"]):
            raise DoubleHTTPError(400, ["ttl cannot be longer than the role's secret_id_ttl"])
        entry = DoubleSecretID(
            secret_id=_uuid(),
            accessor=_uuid(),
            ttl=ttl,
            num_uses=num_uses,
            created=time.time(),
            metadata={str(k): str(v) for k, v in metadata.items()},
            cidr_list=_cidrs(params.get("cidr_list"), sockaddr_style=False),
            token_bound_cidrs=_cidrs(params.get("token_bound_cidrs"), sockaddr_style=True),
        )
        role.secret_ids[entry.secret_id] = entry
        return {
            "secret_id_accessor": entry.accessor,
            "secret_id": entry.secret_id,
            "secret_id_ttl": entry.ttl,
            "secret_id_num_uses": entry.num_uses,
        }

    def _approle_login(self, mount: str, method: str, body: dict, client: str) -> tuple[int, dict]:
        if method not in ("POST", "PUT"):
            raise self._method_not_allowed()
        invalid = DoubleHTTPError(400, ["invalid role or secret ID"])
        role_id = body.get("role_id")
        if not role_id:
            raise DoubleHTTPError(400, ["missing role_id"])
        role = next((r for r in self.approles[mount].values() if r.role_id == role_id), None)
        if role is None:
            raise invalid
        settings = role.settings
        if not _address_allowed(client, settings["secret_id_bound_cidrs"]):
            raise DoubleHTTPError(400, [f'source address "{client}" unauthorized by CIDR restrictions on the role'])
        if settings["bind_secret_id"]:
            secret_id = body.get("secret_id")
            if not secret_id:
                raise DoubleHTTPError(400, ["missing secret_id"])
            entry = role.secret_ids.get(secret_id)
            if entry is None or entry.expired():
                role.secret_ids.pop(secret_id, None)
                raise invalid
            if not _address_allowed(client, entry.cidr_list):
                raise DoubleHTTPError(
                    400, [f'source address "{client}" unauthorized by CIDR restrictions on the secret ID']
                )
            if entry.num_uses:
                entry.num_uses -= 1
                if entry.num_uses == 0:
                    del role.secret_ids[secret_id]
        policies = sorted(
            set(settings["token_policies"]) | (set() if settings["token_no_default_policy"] else {"default"})
        )
        ttl = settings["token_ttl"] or DEFAULT_TOKEN_TTL
        meta = {"role_name": role.name}
        token = self.add_token(
            f"double-token-{secrets.token_hex(12)}",
            policies=policies,
            ttl=ttl,
            display_name=f"{mount}",
            creation_path=f"auth/{mount}/login",
            meta=meta,
        )
        entry_token = self.tokens[token]
        entry_token.renewable = True
        auth = {
            "client_token": token,
            "accessor": entry_token.accessor,
            "policies": policies,
            "token_policies": policies,
            "metadata": meta,
            "lease_duration": ttl,
            "renewable": True,
            "entity_id": "",
            "token_type": "service",
            "orphan": True,
            "num_uses": 0,
        }
        return 200, _envelope(None, auth=auth)

    # -- KV version 2 ---------------------------------------------------------- #

    def _kv_routes(self, method: str, mount: str, rest: list[str], req: RecordedRequest, body: dict):
        if rest == ["config"]:
            if method != "GET":
                raise self._method_not_allowed()
            return 200, _envelope({"cas_required": False, "delete_version_after": "0s", "max_versions": 0})
        if not rest or rest[0] not in ("data", "metadata"):
            raise DoubleHTTPError(404, [f'no handler for route "{mount}/{"/".join(rest)}". route entry not found.'])
        path = "/".join(rest[1:]).strip("/")
        if rest[0] == "data":
            return self._kv_data(method, mount, path, req, body)
        return self._kv_metadata(method, mount, path, body)

    def _kv_data(self, method: str, mount: str, path: str, req: RecordedRequest, body: dict):
        secrets_ = self.kv[mount]
        if method == "GET":
            secret = secrets_.get(path)
            if secret is None:
                raise DoubleHTTPError(404, [])
            try:
                version = int((req.query.get("version") or ["0"])[0] or 0)
            except ValueError:
                raise DoubleHTTPError(400, ["version must be an integer"]) from None
            version = version or secret.current_version
            entry = secret.versions.get(version)
            if entry is None:
                raise DoubleHTTPError(404, [])
            metadata = secret.metadata_for(version)
            if entry["deleted"] or entry["destroyed"]:
                raise DoubleHTTPError(404, body=_envelope({"data": None, "metadata": metadata}))
            return 200, _envelope({"data": json.loads(json.dumps(entry["data"])), "metadata": metadata})
        if method in ("POST", "PUT"):
            data = body.get("data")
            if not isinstance(data, dict):
                raise DoubleHTTPError(400, ["no data provided"])
            options = body.get("options") or {}
            secret = secrets_.get(path)
            current = secret.current_version if secret else 0
            if "cas" in options:
                if int(options["cas"]) != current:
                    raise DoubleHTTPError(400, ["check-and-set parameter did not match the current version"])
            elif secret is not None and secret.cas_required:
                raise DoubleHTTPError(400, ["check-and-set parameter required for this call"])
            version = self._kv_write(mount, path, data)
            return 200, _envelope(self.kv[mount][path].metadata_for(version))
        if method == "DELETE":
            secret = secrets_.get(path)
            if secret is not None and secret.current_version:
                secret.versions[secret.current_version]["deleted"] = time.time()
            return 204, None
        raise self._method_not_allowed()

    def _kv_write(self, mount: str, path: str, data: dict) -> int:
        now = time.time()
        secret = self.kv[mount].setdefault(path, DoubleKVSecret(created=now, updated=now))
        secret.current_version += 1
        secret.updated = now
        secret.versions[secret.current_version] = {
            "data": json.loads(json.dumps(data)),
            "created": now,
            "deleted": None,
            "destroyed": False,
        }
        return secret.current_version

    def _kv_metadata(self, method: str, mount: str, path: str, body: dict):
        secrets_ = self.kv[mount]
        if method == "LIST":
            prefix = f"{path}/" if path else ""
            keys = set()
            for name in secrets_:
                if name.startswith(prefix):
                    head, sep, _ = name[len(prefix) :].partition("/")
                    keys.add(head + sep)
            if not keys:
                raise DoubleHTTPError(404, [])
            return 200, _envelope({"keys": sorted(keys)})
        secret = secrets_.get(path)
        if method == "GET":
            if secret is None:
                raise DoubleHTTPError(404, [])
            versions = {
                str(number): {
                    "created_time": _now_rfc3339(entry["created"]),
                    "deletion_time": _now_rfc3339(entry["deleted"]) if entry["deleted"] else "",
                    "destroyed": entry["destroyed"],
                }
                for number, entry in secret.versions.items()
            }
            return 200, _envelope(
                {
                    "cas_required": secret.cas_required,
                    "created_time": _now_rfc3339(secret.created),
                    "current_version": secret.current_version,
                    "custom_metadata": secret.custom_metadata,
                    "delete_version_after": "0s",
                    "max_versions": secret.max_versions,
                    "oldest_version": min(secret.versions) if secret.versions else 0,
                    "updated_time": _now_rfc3339(secret.updated),
                    "versions": versions,
                }
            )
        if method in ("POST", "PUT"):
            now = time.time()
            secret = secrets_.setdefault(path, DoubleKVSecret(created=now, updated=now))
            if "cas_required" in body:
                secret.cas_required = _parse_bool(body["cas_required"], "cas_required")
            if "max_versions" in body:
                secret.max_versions = int(body["max_versions"])
            if "custom_metadata" in body:
                secret.custom_metadata = {str(k): str(v) for k, v in (body["custom_metadata"] or {}).items()}
            return 204, None
        if method == "DELETE":
            secrets_.pop(path, None)
            return 204, None
        raise self._method_not_allowed()
