# -*- coding: utf-8 -*-
# Copyright: fleetops.mcp contributors
# Apache License 2.0 (see LICENSE)
# SPDX-License-Identifier: Apache-2.0
"""Minimal MCP (Model Context Protocol) Streamable HTTP client, Python stdlib only.

This module runs on managed hosts, so it imports nothing outside the Python
standard library (3.8+). It speaks both MCP protocol generations:

* **handshake** (2024-11-05 .. 2025-11-25): ``POST initialize`` -> read the
  optional ``Mcp-Session-Id`` response header -> ``POST
  notifications/initialized`` -> requests carrying ``Mcp-Session-Id`` and
  ``MCP-Protocol-Version`` -> ``DELETE`` to end the session.
* **sessionless** (2026-07-28): every request is self-contained. It carries
  ``MCP-Protocol-Version`` and ``Mcp-Method`` headers (plus ``Mcp-Name`` for
  ``tools/call``) and a ``params._meta`` envelope with the protocol version,
  client capabilities and client info. ``server/discover`` advertises the
  server's supported versions and capabilities; its identity arrives in
  ``result._meta["io.modelcontextprotocol/serverInfo"]``.

Responses may be ``application/json`` (one JSON-RPC message) or
``text/event-stream`` (SSE ``event: message`` frames; notifications such as
``notifications/progress`` may precede the response, which is matched by
JSON-RPC id).

Every failure is raised as a subclass of :class:`MCPClientError` with a
distinct, actionable message. Messages never contain the bearer token.
"""

from __future__ import absolute_import, division, print_function

import base64
import http.client
import json
import os
import re
import socket
import ssl
import time
from http.cookies import SimpleCookie
from urllib.parse import urlsplit

try:
    from ansible_collections.fleetops.mcp.plugins.module_utils._urls import redact_url  # noqa: F401 (re-exported)
except ImportError:  # outside Ansible: installed beside _urls.py (roles/mcp_failover, fleetops-failover)
    from _urls import redact_url  # noqa: F401

__metaclass__ = type

CLIENT_NAME = "fleetops.mcp.mcp_probe"
CLIENT_VERSION = "1.0.0"

PROTOCOL_AUTO = "auto"
PROTOCOL_HANDSHAKE = "handshake"
PROTOCOL_SESSIONLESS = "sessionless"
PROTOCOLS = (PROTOCOL_AUTO, PROTOCOL_HANDSHAKE, PROTOCOL_SESSIONLESS)

HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
SESSIONLESS_VERSIONS = ("2026-07-28",)
DEFAULT_HANDSHAKE_VERSION = "2025-11-25"
DEFAULT_SESSIONLESS_VERSION = "2026-07-28"
FIRST_SESSIONLESS_VERSION = "2026-07-28"

HEADER_SESSION_ID = "Mcp-Session-Id"
HEADER_PROTOCOL_VERSION = "MCP-Protocol-Version"
HEADER_METHOD = "Mcp-Method"
HEADER_NAME = "Mcp-Name"
HEADER_PARAM_PREFIX = "Mcp-Param-"

META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"

ACCEPT = "application/json, text/event-stream"
UNSUPPORTED_PROTOCOL_VERSION = -32022
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_LIST_PAGES = 50
SNIPPET_CHARS = 120


# --------------------------------------------------------------------------- #
# Exceptions
# --------------------------------------------------------------------------- #


class MCPClientError(Exception):
    """Base class of every error raised by this client.

    ``kind`` is a stable machine-readable failure class; ``details`` carries
    structured, secret-free context (URL, HTTP status, JSON-RPC code...).
    """

    kind = "error"

    def __init__(self, message, **details):
        super(MCPClientError, self).__init__(message)
        self.message = message
        self.details = dict((k, v) for k, v in details.items() if v is not None)

    def __str__(self):
        return self.message


class MCPConfigurationError(MCPClientError):
    """Invalid client configuration (bad URL, unreadable CA file, bad option)."""

    kind = "configuration"


class MCPConnectionError(MCPClientError):
    """TCP-level failure: connection refused/reset, host unresolvable."""

    kind = "connection"


class MCPTLSError(MCPClientError):
    """TLS handshake failure, including certificate verification failures."""

    kind = "tls"


class MCPTimeoutError(MCPClientError):
    """No (complete) answer within the configured timeout."""

    kind = "timeout"


class MCPNonMCPResponseError(MCPClientError):
    """The endpoint answered, but not like an MCP server (HTML, wrong type, not JSON-RPC, 5xx page...)."""

    kind = "non_mcp_response"


class MCPAuthenticationError(MCPClientError):
    """HTTP 401/403: the credentials (bearer token) were missing or rejected."""

    kind = "authentication"


class MCPSessionNotFoundError(MCPClientError):
    """HTTP 404 for a request carrying ``Mcp-Session-Id``: the server does not know that session."""

    kind = "session_not_found"


class MCPJSONRPCError(MCPClientError):
    """The server answered with a JSON-RPC error object."""

    kind = "jsonrpc_error"

    def __init__(self, message, code=None, rpc_message=None, data=None, **details):
        super(MCPJSONRPCError, self).__init__(message, rpc_code=code, **details)
        self.code = code
        self.rpc_message = rpc_message
        self.data = data


class MCPProtocolVersionError(MCPClientError):
    """The server and this client share no protocol version."""

    kind = "protocol_version"


# --------------------------------------------------------------------------- #
# Small helpers
# --------------------------------------------------------------------------- #


def is_sessionless_version(version):
    """True when ``version`` belongs to the sessionless (2026-07-28+) generation.

    Protocol versions are ISO dates, so later generations compare greater.
    """
    return bool(version) and version >= FIRST_SESSIONLESS_VERSION


def _snippet(raw):
    """A short, whitespace-collapsed excerpt of a response body for error messages."""
    if not raw:
        return ""
    text = raw[:512].decode("utf-8", "replace")
    text = re.sub(r"\s+", " ", text).strip()
    return text[:SNIPPET_CHARS] + ("..." if len(text) > SNIPPET_CHARS else "")


_HEADER_SAFE = re.compile(r"^[\x20-\x7E]*$")
_B64_SENTINEL = re.compile(r"^=\?base64\?.*\?=$")


def encode_header_value(value):
    """Encode a value for an ``Mcp-Name``/``Mcp-Param-*`` header (2026-07-28 rules).

    Printable ASCII without edge whitespace passes verbatim; anything else is
    wrapped as ``=?base64?<b64 of utf-8>?=``.
    """
    if _HEADER_SAFE.match(value) and value == value.strip() and not _B64_SENTINEL.match(value):
        return value
    return "=?base64?%s?=" % base64.b64encode(value.encode("utf-8")).decode("ascii")


def _render_scalar(value):
    """Header rendering of an argument value, or None when it has none."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def _annotated_properties(schema, path=()):
    """Yield (property path, header token) for ``x-mcp-header`` annotations on pure ``properties`` chains."""
    if not isinstance(schema, dict):
        return
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return
    for name, sub in properties.items():
        if not isinstance(sub, dict):
            continue
        token = sub.get("x-mcp-header")
        if isinstance(token, str) and token:
            yield path + (name,), token
        yield from _annotated_properties(sub, path + (name,))


def mcp_param_headers(input_schema, arguments):
    """``Mcp-Param-*`` headers a 2026-07-28 ``tools/call`` must mirror from its arguments."""
    headers = {}
    for path, token in _annotated_properties(input_schema):
        node = arguments
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        rendered = None if node is None else _render_scalar(node)
        if rendered is not None:
            headers[HEADER_PARAM_PREFIX + token] = encode_header_value(rendered)
    return headers


def _lower_headers(response):
    """Response headers as a dict with lower-cased names."""
    return dict((k.lower(), v) for k, v in response.getheaders())


class RPCReply:
    """One JSON-RPC exchange as seen on the wire."""

    def __init__(self, result, notifications, response_mode, status, headers, elapsed_ms, events):
        self.result = result
        self.notifications = notifications
        self.response_mode = response_mode
        self.status = status
        self.headers = headers
        self.elapsed_ms = elapsed_ms
        self.events = events


class ProbeResult:
    """Everything one probe learned; ``as_dict()`` gives the module's return values."""

    def __init__(self, protocol, url):
        self.protocol = protocol
        self.url = url
        self.protocol_version = None
        self.server_name = None
        self.server_version = None
        self.server_title = None
        self.instructions = None
        self.capabilities = {}
        self.supported_versions = []
        self.tools = []
        self.tool_result = None
        self.progress = []
        self.session_id_seen = False
        self.session_terminated = None
        self.response_modes = {}
        self.timings_ms = {}
        self.latency_ms = None
        self.fallback_reason = None

    @property
    def tool_names(self):
        """Names of the tools the server listed, in server order."""
        return [t.get("name") for t in self.tools if isinstance(t, dict)]

    def as_dict(self):
        """Plain-dict view (JSON-serialisable)."""
        return {
            "url": self.url,
            "protocol": self.protocol,
            "protocol_version": self.protocol_version,
            "server_name": self.server_name,
            "server_version": self.server_version,
            "server_title": self.server_title,
            "instructions": self.instructions,
            "capabilities": self.capabilities,
            "supported_versions": self.supported_versions,
            "tools": self.tool_names,
            "tool_result": self.tool_result,
            "progress": self.progress,
            "session_id_seen": self.session_id_seen,
            "session_terminated": self.session_terminated,
            "response_modes": self.response_modes,
            "timings_ms": self.timings_ms,
            "latency_ms": self.latency_ms,
            "fallback_reason": self.fallback_reason,
        }


# --------------------------------------------------------------------------- #
# SSE parsing
# --------------------------------------------------------------------------- #


class _SSEReader:
    """Incremental ``text/event-stream`` parser over an http.client response."""

    def __init__(self, response, deadline_fn):
        self._response = response
        self._deadline_fn = deadline_fn
        self._consumed = 0

    def events(self):
        """Yield dicts ``{"event", "data", "id"}`` for each dispatched SSE event."""
        event, data, event_id = None, [], None
        while True:
            self._deadline_fn()
            line = self._response.readline(65536 + 2)
            if not line:
                if data:
                    yield {"event": event or "message", "data": "\n".join(data), "id": event_id}
                return
            self._consumed += len(line)
            if self._consumed > MAX_BODY_BYTES:
                raise MCPNonMCPResponseError("SSE stream exceeded %d bytes without a response" % MAX_BODY_BYTES)
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if text == "":
                if data:
                    yield {"event": event or "message", "data": "\n".join(data), "id": event_id}
                event, data = None, []
                continue
            if text.startswith(":"):
                continue  # comment / keepalive ping
            field, _colon, value = text.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "data":
                data.append(value)
            elif field == "event":
                event = value
            elif field == "id":
                event_id = value


# --------------------------------------------------------------------------- #
# Client
# --------------------------------------------------------------------------- #


class MCPClient:
    """Blocking MCP Streamable HTTP client for health probes.

    One TCP/TLS connection is opened per HTTP request (no pooling), cookies
    set by the server (e.g. load-balancer affinity cookies) are replayed for
    the lifetime of the client, and redirects are never followed.
    """

    def __init__(
        self,
        url,
        bearer_token=None,
        ca_path=None,
        validate_certs=True,
        client_cert=None,
        client_key=None,
        timeout=10.0,
        headers=None,
    ):
        self.url = url
        self.safe_url = redact_url(url)
        parts = self._parse_url(url)
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        self._token = bearer_token or None
        self._timeout = float(timeout)
        if self._timeout <= 0:
            raise MCPConfigurationError("timeout must be a positive number of seconds")
        self._extra_headers = dict(headers or {})
        self._ssl_context = self._build_ssl_context(ca_path, validate_certs, client_cert, client_key)
        self._cookies = {}
        self._next_id = 0
        self.session_id = None
        self.protocol_version = None

    # -- configuration ----------------------------------------------------- #

    @staticmethod
    def _parse_url(url):
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - validates the port
        except ValueError as exc:
            raise MCPConfigurationError("Invalid MCP url %r: %s" % (redact_url(url), exc)) from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise MCPConfigurationError(
                "Invalid MCP url %r: expected http(s)://host[:port]/path, e.g. https://mcp.example.com/mcp"
                % redact_url(url)
            )
        return parts

    def _build_ssl_context(self, ca_path, validate_certs, client_cert, client_key):
        if self._scheme != "https":
            return None
        try:
            context = ssl.create_default_context()
            if ca_path:
                if os.path.isdir(ca_path):
                    context.load_verify_locations(capath=ca_path)
                else:
                    context.load_verify_locations(cafile=ca_path)
            if not validate_certs:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if client_cert:
                context.load_cert_chain(client_cert, keyfile=client_key or None)
        except (IOError, OSError, ssl.SSLError) as exc:
            raise MCPConfigurationError("Cannot set up TLS (ca_path/client_cert/client_key): %s" % exc) from exc
        return context

    # -- low-level HTTP ---------------------------------------------------- #

    def _connection(self, timeout):
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._ssl_context)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _base_headers(self):
        headers = {"User-Agent": "%s/%s" % (CLIENT_NAME, CLIENT_VERSION)}
        headers.update(self._extra_headers)
        if self._token:
            headers["Authorization"] = "Bearer %s" % self._token
        if self._cookies:
            headers["Cookie"] = "; ".join("%s=%s" % kv for kv in sorted(self._cookies.items()))
        return headers

    def _remember_cookies(self, response):
        for value in response.msg.get_all("Set-Cookie") or []:
            jar = SimpleCookie()
            try:
                jar.load(value)
            except Exception:  # noqa: BLE001 - a malformed cookie is not fatal for a probe
                continue
            for name, morsel in jar.items():
                self._cookies[name] = morsel.value

    def _redact(self, text):
        if self._token and text:
            text = text.replace(self._token, "***")
        return text

    def _where(self):
        return "%s:%s" % (self._host, self._port)

    def _translate_os_error(self, exc, what):
        """Map socket/TLS exceptions to the typed client errors."""
        details = {"url": self.safe_url}
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return MCPTimeoutError(
                "Timed out after %gs waiting for %s from %s (the server accepted the connection but did not "
                "answer in time; raise timeout or check the server/load balancer)"
                % (self._timeout, what, self.safe_url),
                **details
            )
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc)
            return MCPTLSError(
                "TLS certificate verification failed for %s: %s. Set ca_path to the CA bundle that issued the "
                "server certificate (or validate_certs=false, insecure)" % (self._where(), reason),
                **details
            )
        if isinstance(exc, ssl.SSLError):
            reason = getattr(exc, "reason", None) or str(exc)
            hint = ""
            if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST"):
                hint = " (is the server speaking plain HTTP? try an http:// url)"
            return MCPTLSError("TLS handshake with %s failed: %s%s" % (self._where(), reason, hint), **details)
        if isinstance(exc, ConnectionRefusedError):
            return MCPConnectionError(
                "Connection refused by %s (%s): nothing is listening on that port or a firewall rejected it"
                % (self._where(), self.safe_url),
                **details
            )
        if isinstance(exc, socket.gaierror):
            return MCPConnectionError("Cannot resolve host %r (%s): %s" % (self._host, self.safe_url, exc), **details)
        if isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
            return MCPConnectionError(
                "Connection to %s was closed before %s arrived (is it an HTTPS port? try an https:// url)"
                % (self._where(), what),
                **details
            )
        if isinstance(exc, http.client.HTTPException):
            return MCPNonMCPResponseError(
                "%s did not answer %s with valid HTTP (%s: %s)" % (self.safe_url, what, type(exc).__name__, exc),
                **details
            )
        return MCPConnectionError("Cannot reach %s: %s" % (self.safe_url, exc), **details)

    def _send(self, http_method, body, headers, what):
        """Open a connection, send one request and return (connection, response, deadline).

        The whole exchange (connect, send, response headers and, in the
        callers, the body) shares one deadline of ``timeout`` seconds.
        """
        deadline = time.monotonic() + self._timeout
        conn = self._connection(self._timeout)
        try:
            self._connect(conn)
            self._set_read_timeout(conn, deadline, what)
            conn.request(http_method, self._path, body=body, headers=headers)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise self._translate_os_error(exc, what) from exc
        except ValueError as exc:  # e.g. a header value with CR/LF or non-latin-1 characters
            conn.close()
            raise MCPConfigurationError("Cannot send the request to %s: %s (check headers)" % (self.safe_url, exc)) from exc
        except MCPClientError:
            conn.close()
            raise
        self._remember_cookies(response)
        return conn, response, deadline

    def _connect(self, conn):
        """TCP (and TLS) connect, with a connect-specific timeout message."""
        try:
            conn.connect()
        except (socket.timeout, TimeoutError):
            if conn.sock is not None:  # TCP is up; the TLS handshake stalled
                raise MCPTimeoutError(
                    "Timed out after %gs waiting for the TLS handshake with %s (%s): the port accepts TCP but "
                    "does not complete TLS - is it a plain-HTTP or unresponsive service?"
                    % (self._timeout, self._where(), self.safe_url),
                    url=self.safe_url,
                ) from None
            raise MCPTimeoutError(
                "Timed out after %gs connecting to %s (%s): no TCP answer - host down, packets dropped by a "
                "firewall, or wrong address" % (self._timeout, self._where(), self.safe_url),
                url=self.safe_url,
            ) from None

    def _read_body(self, conn, response, deadline, what):
        try:
            self._set_read_timeout(conn, deadline, what)
            return response.read(MAX_BODY_BYTES)
        except (OSError, http.client.HTTPException) as exc:
            raise self._translate_os_error(exc, what) from exc

    def _set_read_timeout(self, conn, deadline, what):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MCPTimeoutError(
                "Timed out after %gs waiting for %s from %s" % (self._timeout, what, self.safe_url),
                url=self.safe_url,
            )
        if conn.sock is not None:
            conn.sock.settimeout(remaining)

    # -- JSON-RPC ---------------------------------------------------------- #

    def _new_id(self):
        self._next_id += 1
        return self._next_id

    def _session_headers(self):
        headers = {}
        if self.session_id:
            headers[HEADER_SESSION_ID] = self.session_id
        if self.protocol_version:
            headers[HEADER_PROTOCOL_VERSION] = self.protocol_version
        return headers

    def request(self, method, params=None, headers=None):
        """Send a JSON-RPC request and return its :class:`RPCReply` (raises on any failure)."""
        rpc_id = self._new_id()
        message = {"jsonrpc": "2.0", "id": rpc_id, "method": method}
        if params is not None:
            message["params"] = params
        return self._exchange(message, headers or {}, "the response to %r" % method)

    def notify(self, method, params=None, headers=None):
        """Send a JSON-RPC notification; the server must accept it (HTTP 202/200/204)."""
        message = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        what = "the acknowledgement of %r" % method
        all_headers = self._request_headers(headers or {})
        started = time.monotonic()
        conn, response, deadline = self._send("POST", json.dumps(message).encode("utf-8"), all_headers, what)
        try:
            raw = self._read_body(conn, response, deadline, what)
        finally:
            conn.close()
        if response.status in (200, 202, 204):
            return (time.monotonic() - started) * 1000.0
        raise self._http_error(method, response, raw)

    def _request_headers(self, headers):
        all_headers = self._base_headers()
        all_headers.update({"Accept": ACCEPT, "Content-Type": "application/json"})
        all_headers.update(self._session_headers())
        all_headers.update(headers)
        return all_headers

    def _exchange(self, message, headers, what):
        method = message["method"]
        started = time.monotonic()
        conn, response, deadline = self._send(
            "POST", json.dumps(message).encode("utf-8"), self._request_headers(headers), what
        )
        try:
            content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
            if response.status == 200 and content_type == "text/event-stream":
                reply = self._read_sse(conn, response, deadline, message["id"], method, what)
            else:
                raw = self._read_body(conn, response, deadline, what)
                reply = self._read_json(response, raw, content_type, message["id"], method)
        finally:
            conn.close()
        reply.elapsed_ms = (time.monotonic() - started) * 1000.0
        return reply

    def _read_json(self, response, raw, content_type, rpc_id, method):
        if response.status != 200:
            raise self._http_error(method, response, raw)
        if content_type != "application/json":
            raise self._wrong_content_type(method, response, raw, content_type)
        decoded = self._decode_json(method, response, raw)
        result = self._match_response(decoded, rpc_id, method, response.status)
        if result is None:
            raise self._not_jsonrpc(method, response, raw)
        return RPCReply(result, [], "json", response.status, _lower_headers(response), None, ["response"])

    def _read_sse(self, conn, response, deadline, rpc_id, method, what):
        notifications, events = [], []

        def check_deadline():
            self._set_read_timeout(conn, deadline, what)

        try:
            for event in _SSEReader(response, check_deadline).events():
                if not event["data"] or event["event"] != "message":
                    continue  # priming event / other event types
                try:
                    decoded = json.loads(event["data"])
                except ValueError:
                    raise MCPNonMCPResponseError(
                        "%s is not an MCP endpoint: it sent an SSE event that is not JSON in reply to %r: %s"
                        % (self.safe_url, method, self._redact(_snippet(event["data"].encode("utf-8")))),
                        url=self.safe_url,
                    ) from None
                if isinstance(decoded, dict) and "method" in decoded:
                    notifications.append(decoded)
                    events.append("request" if "id" in decoded else "notification")
                    continue
                result = self._match_response(decoded, rpc_id, method, response.status)
                if result is not None:
                    events.append("response")
                    return RPCReply(
                        result, notifications, "sse", response.status, _lower_headers(response), None, events
                    )
        except (OSError, http.client.HTTPException) as exc:
            raise self._translate_os_error(exc, what) from exc
        raise MCPNonMCPResponseError(
            "%s closed the SSE stream for %r before sending the JSON-RPC response (id %s)"
            % (self.safe_url, method, rpc_id),
            url=self.safe_url,
        )

    def _decode_json(self, method, response, raw):
        try:
            return json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise MCPNonMCPResponseError(
                "%s is not an MCP endpoint: it answered %r with HTTP %s and content-type application/json, "
                "but the body is not valid JSON: %s"
                % (self.safe_url, method, response.status, self._redact(_snippet(raw))),
                url=self.safe_url,
                http_status=response.status,
            ) from None

    def _match_response(self, decoded, rpc_id, method, status):
        """Return the ``result`` of the JSON-RPC response for ``rpc_id``; raise on an error object.

        Returns None when ``decoded`` is not a JSON-RPC response at all.
        """
        if not isinstance(decoded, dict) or decoded.get("jsonrpc") != "2.0":
            return None
        if "error" in decoded and isinstance(decoded["error"], dict):
            if decoded.get("id") not in (rpc_id, None):
                return None
            raise self._rpc_error(method, decoded["error"], status)
        if "result" not in decoded:
            return None
        if decoded.get("id") != rpc_id:
            return None
        result = decoded["result"]
        return result if isinstance(result, dict) else {"value": result}

    # -- error construction ------------------------------------------------ #

    def _rpc_error(self, method, error, status):
        code = error.get("code")
        rpc_message = str(error.get("message", ""))
        data = error.get("data")
        text = "MCP server at %s returned JSON-RPC error %s (%s) for %r" % (self.safe_url, code, rpc_message, method)
        if data is not None:
            text += "; data: %s" % _snippet(json.dumps(data).encode("utf-8"))
        if status and status != 200:
            text += " [HTTP %s]" % status
        return MCPJSONRPCError(
            self._redact(text), code=code, rpc_message=rpc_message, data=data, url=self.safe_url, http_status=status
        )

    def _wrong_content_type(self, method, response, raw, content_type):
        looks_html = content_type == "text/html" or raw.lstrip()[:15].lower().startswith((b"<!doctype", b"<html"))
        kind = "an HTML page" if looks_html else "content-type %r" % (content_type or "none")
        return MCPNonMCPResponseError(
            "%s is not an MCP endpoint: it answered %r with HTTP %s and %s instead of application/json or "
            "text/event-stream (check the url path, e.g. /mcp): %s"
            % (self.safe_url, method, response.status, kind, self._redact(_snippet(raw))),
            url=self.safe_url,
            http_status=response.status,
            content_type=content_type or None,
        )

    def _not_jsonrpc(self, method, response, raw):
        return MCPNonMCPResponseError(
            "%s is not an MCP endpoint: it answered %r with JSON that is not a JSON-RPC 2.0 response for this "
            "request: %s" % (self.safe_url, method, self._redact(_snippet(raw))),
            url=self.safe_url,
            http_status=response.status,
        )

    def _http_error(self, method, response, raw):
        """Translate a non-success HTTP answer into the most specific error class."""
        status = response.status
        content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
        rpc_error = self._embedded_rpc_error(raw, content_type)
        if status in (401, 403):
            return self._auth_error(method, response, status)
        if status == 404 and self.session_id and (rpc_error is None or rpc_error.get("id") is None):
            return MCPSessionNotFoundError(
                "HTTP 404 for %r at %s: the server does not know MCP session %s... (it expired, was "
                "terminated, the server restarted, or a load balancer routed the request to an instance "
                "that did not create it - check session affinity)" % (method, self.safe_url, self.session_id[:8]),
                url=self.safe_url,
                http_status=status,
            )
        if rpc_error is not None:
            return self._rpc_error(method, rpc_error["error"], status)
        if 300 <= status < 400:
            return MCPNonMCPResponseError(
                "%s answered %r with an HTTP %s redirect to %r; MCP clients do not follow redirects, "
                "use the final URL" % (self.safe_url, method, status, redact_url(response.getheader("Location") or "")),
                url=self.safe_url,
                http_status=status,
            )
        return MCPNonMCPResponseError(
            "%s is not an MCP endpoint: it answered %r with HTTP %s %s (content-type %r): %s"
            % (
                self.safe_url,
                method,
                status,
                response.reason,
                content_type or "none",
                self._redact(_snippet(raw)),
            ),
            url=self.safe_url,
            http_status=status,
        )

    @staticmethod
    def _embedded_rpc_error(raw, content_type):
        """A JSON-RPC error object carried in a non-2xx body, if any."""
        if content_type != "application/json" or not raw:
            return None
        try:
            decoded = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None
        if isinstance(decoded, dict) and decoded.get("jsonrpc") == "2.0" and isinstance(decoded.get("error"), dict):
            return decoded
        return None

    def _auth_error(self, method, response, status):
        challenge = response.getheader("WWW-Authenticate")
        if status == 401:
            if self._token:
                why = "the configured bearer token was rejected (expired, revoked or for another audience)"
            else:
                why = "no bearer token was sent; set bearer_token"
            text = "HTTP 401 Unauthorized from %s for %r: %s" % (self.safe_url, method, why)
        else:
            text = "HTTP 403 Forbidden from %s for %r: the bearer token is valid but not allowed to use this server" % (
                self.safe_url,
                method,
            )
        if challenge:
            text += " (WWW-Authenticate: %s)" % _snippet(challenge.encode("utf-8"))
        return MCPAuthenticationError(self._redact(text), url=self.safe_url, http_status=status)

    # -- session end --------------------------------------------------------- #

    def terminate_session(self):
        """DELETE the current session. Returns True when the server confirmed, False otherwise."""
        if not self.session_id:
            return None
        headers = self._base_headers()
        headers.update(self._session_headers())
        try:
            conn, response, deadline = self._send("DELETE", None, headers, "the session DELETE")
            try:
                self._read_body(conn, response, deadline, "the session DELETE")
            finally:
                conn.close()
        except MCPClientError:
            return False
        finally:
            self.session_id = None
        return 200 <= response.status < 300

    # -- high-level flows -------------------------------------------------- #

    def _client_info(self):
        return {"name": CLIENT_NAME, "version": CLIENT_VERSION}

    def _timed(self, probe, key, func):
        started = time.monotonic()
        try:
            return func()
        finally:
            probe.timings_ms[key] = round((time.monotonic() - started) * 1000.0, 3)

    def _list_tools(self, probe, params_fn, headers_fn):
        """Page through tools/list, recording every tool definition."""
        cursor, tools = None, []
        for _page in range(MAX_LIST_PAGES):
            params = params_fn()
            if cursor:
                params["cursor"] = cursor
            reply = self.request("tools/list", params, headers_fn("tools/list"))
            probe.response_modes["tools/list"] = reply.response_mode
            page = reply.result.get("tools")
            if not isinstance(page, list):
                raise MCPNonMCPResponseError(
                    "%s returned a tools/list result without a 'tools' array" % self.safe_url, url=self.safe_url
                )
            tools.extend(t for t in page if isinstance(t, dict))
            cursor = reply.result.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                break
        probe.tools = tools

    def _call_tool(self, probe, name, arguments, params_fn, headers_fn, require_read_only):
        tool = next((t for t in probe.tools if t.get("name") == name), None)
        if require_read_only and not ((tool or {}).get("annotations") or {}).get("readOnlyHint"):
            probe.tool_result = {
                "name": name,
                "skipped": True,
                "skip_reason": "check mode: the server does not annotate this tool readOnlyHint=true",
            }
            return
        params = params_fn()
        params["name"] = name
        params["arguments"] = arguments or {}
        params.setdefault("_meta", {})["progressToken"] = "mcp-probe-%d" % (self._next_id + 1)
        headers = headers_fn("tools/call")
        if is_sessionless_version(self.protocol_version):
            headers[HEADER_NAME] = encode_header_value(name)
            headers.update(mcp_param_headers((tool or {}).get("inputSchema"), arguments or {}))
        reply = self.request("tools/call", params, headers)
        probe.response_modes["tools/call"] = reply.response_mode
        probe.progress = [
            dict((k, v) for k, v in (n.get("params") or {}).items() if k in ("progress", "total", "message"))
            for n in reply.notifications
            if n.get("method") == "notifications/progress"
        ]
        result = reply.result
        probe.tool_result = {
            "name": name,
            "skipped": False,
            "is_error": bool(result.get("isError", False)),
            "content": result.get("content") if isinstance(result.get("content"), list) else [],
            "structured_content": result.get("structuredContent"),
            "text": "\n".join(
                c.get("text", "")
                for c in result.get("content") or []
                if isinstance(c, dict) and c.get("type") == "text"
            ),
            "result_type": result.get("resultType"),
            "stream_events": reply.events,
        }

    def connect_handshake(self, protocol_version=None, probe=None):
        """Open a 2025-era session: ``initialize`` then ``notifications/initialized``.

        Leaves the session open (``session_id``/``protocol_version`` set) so
        callers can issue :meth:`request` calls; end it with
        :meth:`terminate_session`. Returns the :class:`ProbeResult` being filled.
        """
        probe = probe or ProbeResult(PROTOCOL_HANDSHAKE, self.safe_url)
        self.session_id, self.protocol_version = None, None
        self._initialize(probe, protocol_version or DEFAULT_HANDSHAKE_VERSION)
        self._timed(probe, "notifications/initialized", lambda: self.notify("notifications/initialized"))
        return probe

    def run_handshake(self, protocol_version=None, call_tool=None, tool_arguments=None, require_read_only=False):
        """2025-era flow: initialize, initialized, tools/list, [tools/call], DELETE."""
        probe = ProbeResult(PROTOCOL_HANDSHAKE, self.safe_url)
        started = time.monotonic()
        try:
            self.connect_handshake(protocol_version, probe)
            self._timed(probe, "tools/list", lambda: self._list_tools(probe, dict, lambda m: {}))
            if call_tool:
                self._timed(
                    probe,
                    "tools/call",
                    lambda: self._call_tool(probe, call_tool, tool_arguments, dict, lambda m: {}, require_read_only),
                )
        finally:
            if self.session_id:
                probe.session_terminated = self._timed(probe, "session/delete", self.terminate_session)
        probe.latency_ms = round((time.monotonic() - started) * 1000.0, 3)
        return probe

    def _initialize(self, probe, version):
        params = {"protocolVersion": version, "capabilities": {}, "clientInfo": self._client_info()}
        reply = self._timed(probe, "initialize", lambda: self.request("initialize", params))
        probe.response_modes["initialize"] = reply.response_mode
        result = reply.result
        negotiated = result.get("protocolVersion")
        if not isinstance(negotiated, str) or "serverInfo" not in result:
            raise MCPNonMCPResponseError(
                "%s answered initialize without protocolVersion/serverInfo; not an MCP InitializeResult"
                % self.safe_url,
                url=self.safe_url,
            )
        if negotiated not in HANDSHAKE_VERSIONS:
            raise MCPProtocolVersionError(
                "%s negotiated MCP protocol version %r, which this client does not support (supported: %s)"
                % (self.safe_url, negotiated, ", ".join(HANDSHAKE_VERSIONS)),
                url=self.safe_url,
            )
        session_id = reply.headers.get(HEADER_SESSION_ID.lower())
        self.session_id = session_id or None
        self.protocol_version = negotiated
        probe.session_id_seen = bool(session_id)
        probe.protocol_version = negotiated
        info = result.get("serverInfo") if isinstance(result.get("serverInfo"), dict) else {}
        probe.server_name, probe.server_version, probe.server_title = (
            info.get("name"),
            info.get("version"),
            info.get("title"),
        )
        probe.instructions = result.get("instructions")
        probe.capabilities = result.get("capabilities") or {}
        probe.supported_versions = [negotiated]

    def envelope_params(self):
        """Fresh ``params`` carrying the 2026-07-28 ``_meta`` envelope."""
        return {
            "_meta": {
                META_PROTOCOL_VERSION: self.protocol_version,
                META_CLIENT_CAPABILITIES: {},
                META_CLIENT_INFO: self._client_info(),
            }
        }

    def envelope_headers(self, method):
        """Per-request routing headers of the 2026-07-28 protocol."""
        return {HEADER_PROTOCOL_VERSION: self.protocol_version, HEADER_METHOD: method}

    def discover(self, probe=None, protocol_version=None):
        """Sessionless ``server/discover``; fills server identity and capabilities into ``probe``.

        Afterwards :meth:`request` calls can be made with
        :meth:`envelope_params` / :meth:`envelope_headers`. Returns the probe.
        """
        probe = probe or ProbeResult(PROTOCOL_SESSIONLESS, self.safe_url)
        self.session_id = None
        self.protocol_version = protocol_version or DEFAULT_SESSIONLESS_VERSION
        reply = self._timed(
            probe,
            "server/discover",
            lambda: self.request("server/discover", self.envelope_params(), self.envelope_headers("server/discover")),
        )
        probe.response_modes["server/discover"] = reply.response_mode
        result = reply.result
        supported = result.get("supportedVersions")
        if not isinstance(supported, list):
            raise MCPNonMCPResponseError(
                "%s answered server/discover without supportedVersions; not an MCP DiscoverResult" % self.safe_url,
                url=self.safe_url,
            )
        probe.supported_versions = [v for v in supported if isinstance(v, str)]
        if self.protocol_version not in probe.supported_versions:
            raise MCPProtocolVersionError(
                "%s does not support MCP protocol version %s (server supports: %s)"
                % (self.safe_url, self.protocol_version, ", ".join(probe.supported_versions) or "none"),
                url=self.safe_url,
                supported_versions=probe.supported_versions,
            )
        meta = result.get("_meta") if isinstance(result.get("_meta"), dict) else {}
        info = meta.get(META_SERVER_INFO) if isinstance(meta.get(META_SERVER_INFO), dict) else {}
        probe.protocol_version = self.protocol_version
        probe.server_name, probe.server_version, probe.server_title = (
            info.get("name"),
            info.get("version"),
            info.get("title"),
        )
        probe.instructions = result.get("instructions")
        probe.capabilities = result.get("capabilities") or {}
        return probe

    def _sessionless_tools(self, probe, call_tool, tool_arguments, require_read_only):
        """tools/list and optional tools/call with the per-request envelope."""
        self._timed(probe, "tools/list", lambda: self._list_tools(probe, self.envelope_params, self.envelope_headers))
        if call_tool:
            self._timed(
                probe,
                "tools/call",
                lambda: self._call_tool(
                    probe, call_tool, tool_arguments, self.envelope_params, self.envelope_headers, require_read_only
                ),
            )

    def run_sessionless(self, protocol_version=None, call_tool=None, tool_arguments=None, require_read_only=False):
        """2026-07-28 flow: server/discover, tools/list, [tools/call]; no session."""
        probe = ProbeResult(PROTOCOL_SESSIONLESS, self.safe_url)
        started = time.monotonic()
        self.discover(probe, protocol_version)
        self._sessionless_tools(probe, call_tool, tool_arguments, require_read_only)
        probe.latency_ms = round((time.monotonic() - started) * 1000.0, 3)
        return probe

    def probe(
        self,
        protocol=PROTOCOL_AUTO,
        protocol_version=None,
        call_tool=None,
        tool_arguments=None,
        require_read_only=False,
    ):
        """Run a full probe with the chosen protocol generation.

        ``auto`` tries the sessionless ``server/discover`` first and falls back
        to the handshake when the server answers like a handshake-only server
        (a JSON-RPC error, no shared sessionless version, or an HTTP 4xx
        rejection). Network, TLS, timeout and authentication failures are never
        a reason to fall back. In ``auto`` mode ``protocol_version`` applies to
        the generation it belongs to (2026-07-28 and later: sessionless).
        """
        if protocol not in PROTOCOLS:
            raise MCPConfigurationError("protocol must be one of %s, got %r" % (", ".join(PROTOCOLS), protocol))
        if protocol == PROTOCOL_HANDSHAKE:
            return self.run_handshake(protocol_version, call_tool, tool_arguments, require_read_only)
        if protocol == PROTOCOL_SESSIONLESS:
            return self.run_sessionless(protocol_version, call_tool, tool_arguments, require_read_only)
        sessionless = is_sessionless_version(protocol_version)
        started = time.monotonic()
        probe = ProbeResult(PROTOCOL_SESSIONLESS, self.safe_url)
        try:
            self.discover(probe, protocol_version if sessionless else None)
        except (MCPJSONRPCError, MCPNonMCPResponseError, MCPProtocolVersionError) as exc:
            if not self._falls_back(exc):
                raise
            discover_ms = round((time.monotonic() - started) * 1000.0, 3)
            probe = self.run_handshake(
                None if sessionless else protocol_version, call_tool, tool_arguments, require_read_only
            )
            probe.fallback_reason = "server/discover failed (%s): %s" % (exc.kind, exc)
            probe.timings_ms["server/discover"] = discover_ms
        else:
            self._sessionless_tools(probe, call_tool, tool_arguments, require_read_only)
        probe.latency_ms = round((time.monotonic() - started) * 1000.0, 3)
        return probe

    @staticmethod
    def _falls_back(exc):
        """Whether a failed ``server/discover`` means 'handshake-only server' (so retry with initialize)."""
        if isinstance(exc, MCPProtocolVersionError):
            return True
        if isinstance(exc, MCPJSONRPCError):
            if exc.code == UNSUPPORTED_PROTOCOL_VERSION and isinstance(exc.data, dict):
                supported = exc.data.get("supported") or []
                return any(v in HANDSHAKE_VERSIONS for v in supported)
            return True
        status = exc.details.get("http_status")
        return status in (400, 404, 405, 406, 415, 422)
