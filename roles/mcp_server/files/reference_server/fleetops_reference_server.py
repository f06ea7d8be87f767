#!/usr/bin/env python3
# Copyright: fleetops.mcp contributors
# Apache License 2.0 (see LICENSE)
# SPDX-License-Identifier: Apache-2.0
"""FleetOps reference MCP server.

A small, production-shaped MCP server built on the official ``mcp`` Python SDK
and served over Streamable HTTP by uvicorn. It exists so the ``fleetops.mcp``
collection has a known-good server to deploy, load-balance, probe and drain.

Protocol generations served on the same endpoint (the SDK routes each request):

* 2025-era sessioned Streamable HTTP (``initialize`` handshake,
  ``Mcp-Session-Id``, ``MCP-Protocol-Version`` header, DELETE to end).
* 2026-07-28 sessionless requests (``server/discover``, ``Mcp-Method``
  header, per-request ``params._meta`` envelope, no session).

Operational surface:

* ``GET /health``  - JSON status; 503 while draining.
* ``GET /metrics`` - Prometheus text exposition.
* One JSON access-log line per HTTP request on stdout (diagnostics go to
  stderr as JSON too).
* SIGTERM/SIGINT: drain. The listener closes at once, so a load balancer's
  new connection is refused before anything is sent and it tries another
  backend. What still arrives on open keep-alive connections is served with
  ``Connection: close`` (so no connection is reused), except a new session
  (``initialize`` without ``Mcp-Session-Id``): HTTP 503 with a JSON-RPC
  error. Requests on already-open sessions are served so clients can finish
  and DELETE; /health answers 503. The drain lasts at least DRAIN_LINGER
  seconds, so that idle keep-alive connections are closed by the load
  balancer (nginx_lb: after 4 s) rather than by the server under a request
  in flight, then until nothing is in flight, all within the grace period;
  then the server stops and exits 0. A second signal stops at once.

The process never writes to the filesystem, so it runs unchanged on a
read-only root filesystem as a non-root user.

Every option can be given on the command line or through a ``FLEETOPS_*``
environment variable; see ``--help``.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__version__ = "1.0.0"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MODERN_PROTOCOL_VERSIONS = frozenset({"2026-07-28"})
"""Protocol versions that use the sessionless per-request envelope."""

DRAINING_ERROR_CODE = -32000
DRAIN_LINGER = 5.0
"""Seconds a drain lasts at least (bounded by the grace period): longer than the idle
keep-alive timeout of the load balancers' upstream connections (nginx_lb: 4 s)."""
"""JSON-RPC error code (implementation-defined server error) for drain refusals."""

MAX_INSPECTED_BODY = 1024 * 1024
"""Request/response bodies above this size are passed through uninspected."""

TOOL_NAMES = ("echo", "add", "whoami", "slow_count", "fail")

KNOWN_RPC_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "server/discover",
        "tools/list",
        "tools/call",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "resources/subscribe",
        "resources/unsubscribe",
        "subscriptions/listen",
        "logging/setLevel",
        "completion/complete",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
    }
)
"""JSON-RPC methods recorded under their own metric label; anything else is ``other``."""

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

ACCESS_LOG = logging.getLogger("fleetops.access")
LOG = logging.getLogger("fleetops.server")


# --------------------------------------------------------------------------- #
# Configuration
# --------------------------------------------------------------------------- #


def _env_bool(name: str, default: bool = False) -> bool:
    """Read a boolean environment variable (1/true/yes/on are true)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _read_token_file(path: str | None) -> str | None:
    """Return the stripped contents of a token file, or None when no path is given."""
    if not path:
        return None
    with open(path, encoding="utf-8") as handle:
        token = handle.read().strip()
    return token or None


@dataclass(frozen=True)
class ServerConfig:
    """Effective runtime configuration of the reference server."""

    host: str
    port: int
    path: str
    stateless: bool
    json_response: bool
    server_name: str
    instance_id: str
    grace_period: float
    bearer_token: str | None
    allowed_hosts: tuple[str, ...]
    session_idle_timeout: float
    log_level: str
    log_probes: bool
    tls_cert: str | None = None
    tls_key: str | None = None

    @property
    def mode(self) -> str:
        """Human/metric label for the session mode."""
        return "stateless" if self.stateless else "sessioned"


def build_arg_parser() -> argparse.ArgumentParser:
    """Command-line interface; every option defaults from a FLEETOPS_* variable."""
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="fleetops_reference_server",
        description="FleetOps reference MCP server (Streamable HTTP, both MCP protocol generations).",
    )
    parser.add_argument("--host", default=env("FLEETOPS_HOST", "127.0.0.1"), help="bind address [FLEETOPS_HOST]")
    parser.add_argument("--port", type=int, default=int(env("FLEETOPS_PORT", "8080")), help="TCP port [FLEETOPS_PORT]")
    parser.add_argument("--path", default=env("FLEETOPS_PATH", "/mcp"), help="MCP endpoint path [FLEETOPS_PATH]")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--stateless",
        dest="stateless",
        action="store_true",
        default=_env_bool("FLEETOPS_STATELESS"),
        help="run the SDK's stateless Streamable HTTP mode (no Mcp-Session-Id) [FLEETOPS_STATELESS]",
    )
    mode.add_argument("--sessioned", dest="stateless", action="store_false", help="sessioned mode (default)")
    parser.add_argument(
        "--json-response",
        action=argparse.BooleanOptionalAction,
        default=_env_bool("FLEETOPS_JSON_RESPONSE"),
        help="answer POSTs with application/json instead of SSE streams [FLEETOPS_JSON_RESPONSE]",
    )
    parser.add_argument(
        "--server-name", default=env("FLEETOPS_SERVER_NAME", "fleetops-reference"), help="[FLEETOPS_SERVER_NAME]"
    )
    parser.add_argument(
        "--instance-id",
        default=env("FLEETOPS_INSTANCE") or socket.gethostname(),
        help="instance identity reported by whoami, /health and logs (default: hostname) [FLEETOPS_INSTANCE]",
    )
    parser.add_argument(
        "--grace-period",
        type=float,
        default=float(env("FLEETOPS_GRACE_PERIOD", "30")),
        help="seconds to let in-flight requests finish after SIGTERM [FLEETOPS_GRACE_PERIOD]",
    )
    parser.add_argument(
        "--bearer-token-file",
        default=env("FLEETOPS_BEARER_TOKEN_FILE"),
        help="require 'Authorization: Bearer <token>' on the MCP path, token read from this file "
        "[FLEETOPS_BEARER_TOKEN_FILE]; FLEETOPS_BEARER_TOKEN sets the token directly",
    )
    parser.add_argument(
        "--tls-cert",
        default=env("FLEETOPS_TLS_CERT"),
        help="serve HTTPS with this PEM certificate (chain) [FLEETOPS_TLS_CERT]",
    )
    parser.add_argument(
        "--tls-key", default=env("FLEETOPS_TLS_KEY"), help="PEM private key for --tls-cert [FLEETOPS_TLS_KEY]"
    )
    parser.add_argument(
        "--allowed-hosts",
        default=env("FLEETOPS_ALLOWED_HOSTS", ""),
        help="comma-separated Host header values (e.g. 'mcp.example.com,127.0.0.1:*'); when set, the SDK's "
        "DNS-rebinding protection is enabled [FLEETOPS_ALLOWED_HOSTS]",
    )
    parser.add_argument(
        "--session-idle-timeout",
        type=float,
        default=float(env("FLEETOPS_SESSION_IDLE_TIMEOUT", "1800")),
        help="seconds before an idle session is reaped [FLEETOPS_SESSION_IDLE_TIMEOUT]",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=_LOG_LEVELS,
        default=env("FLEETOPS_LOG_LEVEL", "WARNING").upper(),
        help="level of diagnostic logs on stderr; access logs are always written [FLEETOPS_LOG_LEVEL]",
    )
    parser.add_argument(
        "--log-probes",
        action=argparse.BooleanOptionalAction,
        default=_env_bool("FLEETOPS_LOG_PROBES"),
        help="also write access-log lines for /health and /metrics [FLEETOPS_LOG_PROBES]",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def parse_config(argv: list[str] | None = None) -> ServerConfig:
    """Parse argv/environment into a validated ServerConfig."""
    parser = build_arg_parser()
    args = parser.parse_args(argv)
    if not args.path.startswith("/"):
        parser.error("--path must start with '/'")
    if args.grace_period < 0:
        parser.error("--grace-period must be >= 0")
    token = os.environ.get("FLEETOPS_BEARER_TOKEN") or None
    try:
        token = _read_token_file(args.bearer_token_file) or token
    except OSError as exc:
        parser.error(f"cannot read bearer token file: {exc.strerror}")
    hosts = tuple(h.strip() for h in args.allowed_hosts.split(",") if h.strip())
    if args.tls_key and not args.tls_cert:
        parser.error("--tls-key requires --tls-cert")
    return ServerConfig(
        host=args.host,
        port=args.port,
        path=args.path.rstrip("/") or "/",
        stateless=args.stateless,
        json_response=args.json_response,
        server_name=args.server_name,
        instance_id=args.instance_id,
        grace_period=args.grace_period,
        bearer_token=token,
        allowed_hosts=hosts,
        session_idle_timeout=args.session_idle_timeout,
        log_level=args.log_level.upper(),
        log_probes=args.log_probes,
        tls_cert=args.tls_cert or None,
        tls_key=args.tls_key or None,
    )


# --------------------------------------------------------------------------- #
# Logging
# --------------------------------------------------------------------------- #


class JsonFormatter(logging.Formatter):
    """Render log records as single-line JSON objects.

    A record whose ``msg`` is a dict is emitted as that dict (plus ``ts`` and
    ``level``); anything else becomes ``{"message": ...}``.
    """

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
        }
        if isinstance(record.msg, dict):
            payload.update(record.msg)
        else:
            payload["logger"] = record.name
            payload["message"] = record.getMessage()
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(payload, separators=(",", ":"), default=str)


def configure_logging(level: str) -> None:
    """Access log (JSON lines) to stdout; all diagnostics (JSON lines) to stderr."""
    formatter = JsonFormatter()
    access_handler = logging.StreamHandler(sys.stdout)
    access_handler.setFormatter(formatter)
    ACCESS_LOG.handlers[:] = [access_handler]
    ACCESS_LOG.setLevel(logging.INFO)
    ACCESS_LOG.propagate = False

    diag_handler = logging.StreamHandler(sys.stderr)
    diag_handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [diag_handler]
    root.setLevel(level)
    # Lifecycle messages (start, drain, stop) are always emitted.
    LOG.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


# --------------------------------------------------------------------------- #
# Metrics and shared runtime state
# --------------------------------------------------------------------------- #


class Metrics:
    """Prometheus metrics on a private registry (``*_created`` series disabled)."""

    def __init__(self, config: ServerConfig, active_sessions: Callable[[], int]) -> None:
        disable_created_metrics()
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        labels = ("rpc_method", "tool", "outcome")
        self.requests = Counter(
            "fleetops_mcp_requests",
            "MCP JSON-RPC messages handled, by method, tool and outcome.",
            labels,
            registry=self.registry,
        )
        self.errors = Counter(
            "fleetops_mcp_errors",
            "Failed MCP messages by kind (tool_error, rpc_error, http_error, refused, unauthorized, aborted).",
            ("rpc_method", "tool", "kind"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "fleetops_mcp_request_duration_seconds",
            "Wall time of MCP HTTP requests, from arrival to the final response chunk.",
            ("rpc_method", "tool"),
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=self.registry,
        )
        self.progress = Counter(
            "fleetops_mcp_progress_notifications",
            "notifications/progress messages streamed to clients.",
            registry=self.registry,
        )
        sessions = Gauge("fleetops_mcp_active_sessions", "Open Streamable HTTP sessions.", registry=self.registry)
        sessions.set_function(active_sessions)
        self.inflight = Gauge(
            "fleetops_mcp_inflight_requests", "MCP POST/DELETE requests being served.", registry=self.registry
        )
        self.draining = Gauge("fleetops_mcp_draining", "1 while the server is draining.", registry=self.registry)
        info = Gauge(
            "fleetops_mcp_server_info",
            "Static server identity (value is always 1).",
            ("version", "server_name", "instance", "mode", "response_mode"),
            registry=self.registry,
        )
        info.labels(
            __version__,
            config.server_name,
            config.instance_id,
            config.mode,
            "json" if config.json_response else "sse",
        ).set(1)

    def render(self) -> bytes:
        """Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


@dataclass
class RuntimeState:
    """Mutable process state shared by the HTTP layer and the drain controller."""

    config: ServerConfig
    started_at: float = field(default_factory=time.monotonic)
    draining: bool = False
    drain_started_at: float | None = None
    inflight: int = 0
    session_counter: Callable[[], int] = lambda: 0

    def active_sessions(self) -> int:
        """Number of open SDK sessions (always 0 in stateless mode)."""
        try:
            return int(self.session_counter())
        except Exception:  # noqa: BLE001 - a metrics callback must never raise
            return 0


# --------------------------------------------------------------------------- #
# MCP server (tools)
# --------------------------------------------------------------------------- #

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True)


def build_mcp_server(config: ServerConfig) -> MCPServer:
    """Create the SDK server and register the reference tools."""
    mcp = MCPServer(
        name=config.server_name,
        version=__version__,
        instructions=f"FleetOps reference MCP server (instance {config.instance_id}).",
        log_level=config.log_level,
    )

    @mcp.tool(description="Return the given text unchanged.", annotations=READ_ONLY)
    def echo(text: str) -> str:
        return text

    @mcp.tool(description="Add two integers.", annotations=READ_ONLY)
    def add(a: int, b: int) -> int:
        return a + b

    @mcp.tool(
        description="Return the id of the server instance that handled this call (proves load-balancer affinity).",
        annotations=READ_ONLY,
    )
    def whoami() -> str:
        return config.instance_id

    @mcp.tool(
        description="Count to `steps`, sleeping `delay` seconds per step and sending a progress "
        "notification after each step (when the caller supplied a progressToken).",
        annotations=READ_ONLY,
    )
    async def slow_count(ctx: Context, steps: int = 5, delay: float = 0.2) -> str:
        if not 1 <= steps <= 1000:
            raise ToolError("steps must be between 1 and 1000")
        if not 0 <= delay <= 60:
            raise ToolError("delay must be between 0 and 60 seconds")
        for step in range(1, steps + 1):
            await asyncio.sleep(delay)
            await ctx.report_progress(step, steps, f"step {step}/{steps}")
        return f"counted to {steps}"

    @mcp.tool(description="Always fails with a tool error (isError: true).", annotations=READ_ONLY)
    def fail(message: str = "this tool always fails") -> str:
        raise ToolError(message)

    return mcp


# --------------------------------------------------------------------------- #
# HTTP layer: request ids, auth, drain gate, metrics, access log
# --------------------------------------------------------------------------- #


@dataclass
class RpcInfo:
    """What the access layer learned from a JSON-RPC request body."""

    method: str = "-"
    tool: str = "-"
    rpc_id: Any = None
    is_request: bool = False
    protocol_version: str | None = None


def parse_rpc_request(body: bytes, headers: dict[str, str]) -> RpcInfo:
    """Best-effort extraction of method / tool / id from a JSON-RPC POST body."""
    info = RpcInfo(protocol_version=headers.get("mcp-protocol-version"))
    if not body or len(body) > MAX_INSPECTED_BODY:
        return info
    try:
        decoded = json.loads(body)
    except ValueError:
        info.method = "invalid"
        return info
    if isinstance(decoded, list):
        info.method = "batch"
        return info
    if not isinstance(decoded, dict):
        info.method = "invalid"
        return info
    method = decoded.get("method")
    if isinstance(method, str):
        info.method = method
    info.is_request = "id" in decoded and isinstance(method, str)
    info.rpc_id = decoded.get("id")
    params = decoded.get("params") if isinstance(decoded.get("params"), dict) else {}
    if info.method == "tools/call" and isinstance(params.get("name"), str):
        info.tool = params["name"]
    if info.method == "initialize" and isinstance(params.get("protocolVersion"), str):
        info.protocol_version = params["protocolVersion"]
    return info


def iter_sse_data(body: bytes) -> Iterable[str]:
    """Yield the joined ``data:`` payload of every event in an SSE body."""
    text = body.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    for block in text.split("\n\n"):
        data = [line[5:].lstrip(" ") if line.startswith("data:") else None for line in block.split("\n")]
        payload = "\n".join(d for d in data if d is not None)
        if payload:
            yield payload


def classify_response(body: bytes, content_type: str, rpc_id: Any) -> tuple[str, int | None, int]:
    """Return (outcome, json-rpc error code, progress notifications) for a response body.

    ``outcome`` is ``ok``, ``tool_error`` (result.isError), ``rpc_error`` or
    ``unknown`` when no matching JSON-RPC response was found.
    """
    messages: list[Any] = []
    if content_type.startswith("application/json"):
        try:
            messages = [json.loads(body)]
        except ValueError:
            return "unknown", None, 0
    elif content_type.startswith("text/event-stream"):
        for payload in iter_sse_data(body):
            try:
                messages.append(json.loads(payload))
            except ValueError:
                continue
    progress = sum(1 for m in messages if isinstance(m, dict) and m.get("method") == "notifications/progress")
    for message in messages:
        if not isinstance(message, dict) or "method" in message:
            continue
        if rpc_id is not None and message.get("id") not in (rpc_id, None):
            continue
        if isinstance(message.get("error"), dict):
            code = message["error"].get("code")
            return "rpc_error", code if isinstance(code, int) else None, progress
        result = message.get("result")
        if isinstance(result, dict) and result.get("isError") is True:
            return "tool_error", None, progress
        return "ok", None, progress
    return "unknown", None, progress


def _json_rpc_error_response(status: int, rpc_id: Any, code: int, message: str, headers: dict[str, str]) -> Response:
    """A JSON-RPC error body with the given HTTP status."""
    body = {"jsonrpc": "2.0", "id": rpc_id, "error": {"code": code, "message": message}}
    return Response(
        json.dumps(body, separators=(",", ":")), status_code=status, media_type="application/json", headers=headers
    )


class AccessLayer:
    """Pure-ASGI middleware wrapping the whole Starlette app.

    For each HTTP request it assigns a request id (``X-Request-Id`` or a fresh
    UUID, echoed back), enforces the optional bearer token on the MCP path,
    refuses new work while draining, feeds Prometheus and writes one JSON
    access-log line.
    """

    def __init__(self, app: ASGIApp, state: RuntimeState, metrics: Metrics) -> None:
        self.app = app
        self.state = state
        self.metrics = metrics
        self.config = state.config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.state.draining:
            send = self._closing(send)
        path = scope.get("path", "")
        if path.rstrip("/") != self.config.path and path != self.config.path:
            await self._serve_plain(scope, receive, send)
            return
        await self._serve_mcp(scope, receive, send)

    # -- helpers ----------------------------------------------------------- #

    @staticmethod
    def _closing(send: Send) -> Send:
        """Wrap ``send`` so that the response ends its connection (while draining)."""

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message["headers"] = headers + [(b"connection", b"close")]
            await send(message)

        return wrapped

    @staticmethod
    def _headers(scope: Scope) -> dict[str, str]:
        return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}

    @staticmethod
    def _request_id(headers: dict[str, str]) -> str:
        supplied = headers.get("x-request-id", "").strip()
        if supplied and len(supplied) <= 200 and supplied.isprintable():
            return supplied
        return uuid.uuid4().hex

    @staticmethod
    def _with_request_id(send: Send, request_id: str, sink: dict[str, Any]) -> Send:
        """Wrap ``send``: add X-Request-Id, remember status/content-type/body, and run
        ``sink["finalize"]`` just before the last body chunk leaves, so metrics and the
        access log are complete by the time a client has seen the whole response."""

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message["headers"] = headers
                sink["status"] = message["status"]
                for key, value in headers:
                    lowered = key.lower()
                    if lowered == b"content-type":
                        sink["content_type"] = value.decode("latin-1").lower()
                    elif lowered == b"mcp-session-id":
                        sink["session_id"] = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                if sink.get("capture", False):
                    if sink["size"] + len(chunk) <= MAX_INSPECTED_BODY:
                        sink["body"].append(chunk)
                    sink["size"] += len(chunk)
                if not message.get("more_body", False):
                    sink["completed"] = True
                    AccessLayer._finalize(sink)
            await send(message)

        return wrapped

    @staticmethod
    def _finalize(sink: dict[str, Any]) -> None:
        """Run the request's bookkeeping exactly once."""
        finalize = sink.pop("finalize", None)
        if finalize is not None:
            finalize()

    async def _serve_plain(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = self._headers(scope)
        request_id = self._request_id(headers)
        started = time.perf_counter()
        sink: dict[str, Any] = {"status": 500, "size": 0, "body": []}
        if self.config.log_probes or scope.get("path") not in ("/health", "/metrics"):
            sink["finalize"] = lambda: self._log(scope, request_id, sink, RpcInfo(), "-", started, headers)
        try:
            await self.app(scope, receive, self._with_request_id(send, request_id, sink))
        finally:
            self._finalize(sink)

    async def _read_body(self, receive: Receive) -> tuple[bytes, list[Message]]:
        """Drain the request body, keeping the raw messages for replay."""
        messages: list[Message] = []
        chunks: list[bytes] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return b"".join(chunks), messages

    @staticmethod
    def _replaying(messages: list[Message], receive: Receive) -> Receive:
        """A receive callable that replays buffered messages, then defers to ``receive``."""
        pending = list(messages)

        async def replay() -> Message:
            if pending:
                return pending.pop(0)
            return await receive()

        return replay

    def _authorized(self, headers: dict[str, str]) -> bool:
        expected = self.config.bearer_token
        if not expected:
            return True
        scheme, _, supplied = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(supplied.strip().encode(), expected.encode())

    def _refuse_while_draining(self, method: str, headers: dict[str, str], info: RpcInfo) -> bool:
        """A new session is refused while draining (it would end with the process)."""
        return (self.state.draining and method == "POST" and "mcp-session-id" not in headers
                and info.method == "initialize")

    async def _serve_mcp(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = self._headers(scope)
        request_id = self._request_id(headers)
        http_method = scope.get("method", "GET")
        started = time.perf_counter()
        sink: dict[str, Any] = {"status": 500, "size": 0, "body": [], "capture": http_method == "POST"}
        state: dict[str, Any] = {"info": RpcInfo(protocol_version=headers.get("mcp-protocol-version")), "outcome": None}

        def finalize() -> None:
            info = state["info"]
            outcome = state["outcome"] or self._outcome(http_method, info, sink)
            if http_method in ("POST", "DELETE"):
                self._record(http_method, info, outcome, started)
            self._log(scope, request_id, sink, info, outcome, started, headers)

        sink["finalize"] = finalize
        wrapped_send = self._with_request_id(send, request_id, sink)
        counted = http_method in ("POST", "DELETE")
        if counted:
            self.state.inflight += 1
            self.metrics.inflight.inc()
        try:
            if http_method == "POST":
                body, buffered = await self._read_body(receive)
                state["info"] = parse_rpc_request(body, headers)
                receive = self._replaying(buffered, receive)
            refusal = self._refusal(http_method, headers, state["info"])
            if refusal is not None:
                state["outcome"], response = refusal
                await response(scope, receive, wrapped_send)
                return
            await self.app(scope, receive, wrapped_send)
        finally:
            if counted:
                self.state.inflight -= 1
                self.metrics.inflight.dec()
            self._finalize(sink)

    def _refusal(self, http_method: str, headers: dict[str, str], info: RpcInfo) -> tuple[str, Response] | None:
        """(outcome, response) when the request must be refused before reaching the SDK."""
        if not self._authorized(headers):
            return "unauthorized", _json_rpc_error_response(
                401,
                info.rpc_id if info.is_request else None,
                -32001,
                "Unauthorized: missing or invalid bearer token",
                {"WWW-Authenticate": 'Bearer realm="mcp"'},
            )
        if self._refuse_while_draining(http_method, headers, info):
            return "refused", _json_rpc_error_response(
                503,
                info.rpc_id if info.is_request else None,
                DRAINING_ERROR_CODE,
                f"Server instance {self.config.instance_id} is draining: not accepting new sessions; "
                "retry against another instance",
                {"Retry-After": "1", "Connection": "close"},
            )
        return None

    def _outcome(self, http_method: str, info: RpcInfo, sink: dict[str, Any]) -> str:
        status = sink.get("status", 500)
        if not sink.get("completed"):
            return "aborted"  # client went away or the server stopped mid-response
        if http_method != "POST":
            return "ok" if status < 400 else "http_error"
        if info.is_request and status < 500:
            outcome, code, progress = classify_response(
                b"".join(sink["body"]), sink.get("content_type", ""), info.rpc_id
            )
            sink["rpc_error_code"] = code
            if progress:
                self.metrics.progress.inc(progress)
            if outcome != "unknown":
                return outcome
        if status >= 400:
            return "http_error"
        return "ok" if status < 300 else "http_error"

    def _labels(self, http_method: str, info: RpcInfo) -> tuple[str, str]:
        if http_method == "DELETE":
            return "session/delete", "-"
        method = info.method if info.method in KNOWN_RPC_METHODS else ("-" if info.method == "-" else "other")
        tool = "-"
        if info.method == "tools/call":
            tool = info.tool if info.tool in TOOL_NAMES else "unknown"
        return method, tool

    def _record(self, http_method: str, info: RpcInfo, outcome: str, started: float) -> None:
        method, tool = self._labels(http_method, info)
        self.metrics.requests.labels(method, tool, outcome).inc()
        self.metrics.duration.labels(method, tool).observe(time.perf_counter() - started)
        if outcome not in ("ok", "-"):
            self.metrics.errors.labels(method, tool, outcome).inc()

    def _log(
        self,
        scope: Scope,
        request_id: str,
        sink: dict[str, Any],
        info: RpcInfo,
        outcome: str,
        started: float,
        headers: dict[str, str],
    ) -> None:
        session = headers.get("mcp-session-id") or sink.get("session_id")
        client = scope.get("client") or ("-", 0)
        record: dict[str, Any] = {
            "event": "http_request",
            "request_id": request_id,
            "instance": self.config.instance_id,
            "http_method": scope.get("method"),
            "path": scope.get("path"),
            "status": sink.get("status"),
            "method": info.method,
            "tool": info.tool,
            "rpc_id": info.rpc_id,
            "outcome": outcome,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "protocol_version": info.protocol_version,
            "era": "2026" if info.protocol_version in MODERN_PROTOCOL_VERSIONS else "2025",
            # A session id is a weak credential: log only a correlatable prefix.
            "session": session[:8] if session else None,
            "client": f"{client[0]}:{client[1]}",
            "draining": self.state.draining,
        }
        if sink.get("rpc_error_code") is not None:
            record["rpc_error_code"] = sink["rpc_error_code"]
        ACCESS_LOG.info(record)


# --------------------------------------------------------------------------- #
# App assembly
# --------------------------------------------------------------------------- #


def build_app(config: ServerConfig) -> tuple[ASGIApp, RuntimeState, Metrics]:
    """Build the ASGI application (SDK Streamable HTTP app wrapped by the access layer)."""
    state = RuntimeState(config=config)
    metrics = Metrics(config, state.active_sessions)
    mcp = build_mcp_server(config)

    @mcp.custom_route("/health", methods=["GET", "HEAD"])
    async def health(_: Request) -> Response:
        body = {
            "status": "draining" if state.draining else "ok",
            "instance": config.instance_id,
            "server_name": config.server_name,
            "version": __version__,
            "mode": config.mode,
            "response_mode": "json" if config.json_response else "sse",
            "active_sessions": state.active_sessions(),
            "inflight_requests": state.inflight,
            "draining": state.draining,
            "uptime_seconds": round(time.monotonic() - state.started_at, 3),
        }
        return JSONResponse(body, status_code=503 if state.draining else 200, headers={"Cache-Control": "no-store"})

    @mcp.custom_route("/metrics", methods=["GET"])
    async def prometheus(_: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=bool(config.allowed_hosts),
        allowed_hosts=list(config.allowed_hosts),
        allowed_origins=[],
    )
    starlette_app = mcp.streamable_http_app(
        streamable_http_path=config.path,
        json_response=config.json_response,
        stateless_http=config.stateless,
        session_idle_timeout=config.session_idle_timeout,
        transport_security=security,
        host=config.host,
    )
    manager = mcp.session_manager
    # Private SDK detail (pinned mcp==2.3.0): the manager's live session table.
    state.session_counter = lambda: len(getattr(manager, "_server_instances", {}))
    return AccessLayer(starlette_app, state, metrics), state, metrics


# --------------------------------------------------------------------------- #
# Serving and graceful drain
# --------------------------------------------------------------------------- #


class DrainingServer(uvicorn.Server):
    """uvicorn server whose first SIGTERM/SIGINT starts a drain instead of stopping.

    The drain closes the listener at once: a new connection is refused before
    anything is sent, which a load balancer retries on another backend even for
    a POST. A second signal stops immediately. Signals are not re-raised after
    shutdown, so a drained process exits 0.
    """

    def __init__(self, config: uvicorn.Config, state: RuntimeState, metrics: Metrics) -> None:
        super().__init__(config)
        self.state = state
        self.metrics = metrics

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:  # noqa: ARG002
        """Signal handler (replaces uvicorn's): only flips flags, never logs or blocks."""
        if self.state.draining:
            self.should_exit = True
            self.force_exit = True
            return
        self.state.draining = True
        self.state.drain_started_at = time.monotonic()
        self.metrics.draining.set(1)

    async def drain_controller(self) -> None:
        """Wait for a drain, then for in-flight requests (bounded by the grace period), then stop."""
        while not self.state.draining:
            if self.should_exit:
                return
            await asyncio.sleep(0.05)
        grace = self.state.config.grace_period
        for listener in self.servers:
            listener.close()
        LOG.info(
            {
                "event": "drain_started",
                "instance": self.state.config.instance_id,
                "inflight_requests": self.state.inflight,
                "active_sessions": self.state.active_sessions(),
                "grace_period": grace,
            }
        )
        deadline = time.monotonic() + grace
        linger = time.monotonic() + min(grace, DRAIN_LINGER)
        while ((self.state.inflight > 0 or time.monotonic() < linger) and time.monotonic() < deadline
               and not self.should_exit):
            await asyncio.sleep(0.05)
        LOG.info(
            {
                "event": "drain_aborted" if self.force_exit else "drain_finished",
                "instance": self.state.config.instance_id,
                "abandoned_requests": self.state.inflight,
                "drain_seconds": round(time.monotonic() - (self.state.drain_started_at or time.monotonic()), 3),
            }
        )
        self.should_exit = True


async def serve(config: ServerConfig) -> None:
    """Run the server until it has drained (or been told twice to stop)."""
    app, state, metrics = build_app(config)
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
        # Long-lived SSE GET streams would otherwise hold shutdown open; the
        # drain has already waited for real work.
        timeout_graceful_shutdown=2,
        ssl_certfile=config.tls_cert,
        ssl_keyfile=config.tls_key,
    )
    server = DrainingServer(uv_config, state, metrics)
    controller = asyncio.create_task(server.drain_controller())
    LOG.info(
        {
            "event": "starting",
            "instance": config.instance_id,
            "server_name": config.server_name,
            "version": __version__,
            "listen": f"{'https' if config.tls_cert else 'http'}://{config.host}:{config.port}",
            "path": config.path,
            "mode": config.mode,
            "response_mode": "json" if config.json_response else "sse",
            "auth": "bearer" if config.bearer_token else "none",
        }
    )
    try:
        await server.serve()
    finally:
        controller.cancel()
    LOG.info({"event": "stopped", "instance": config.instance_id})
    if not server.started:
        raise SystemExit(3)


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse options, configure logging, serve; returns the exit code."""
    config = parse_config(argv)
    configure_logging(config.log_level)
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
