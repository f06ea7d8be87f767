#!/usr/bin/env python3
# Copyright: fleetops.mcp contributors
# Apache License 2.0 (see LICENSE)
# SPDX-License-Identifier: Apache-2.0
"""fleetops-stdio-bridge: serve a stdio MCP server over Streamable HTTP.

Python 3.9+ standard library only, one file, so it runs in any image that has
``python3`` (the image's own server may be Node, Python or anything else).

Usage::

    fleetops-stdio-bridge [options] -- COMMAND [ARG...]

The bridge keeps its server processes ("children") alive and multiplexes
JSON-RPC by id: every request forwarded to a child gets a bridge-unique id
(and a bridge-unique progress token), and the reply is mapped back to the
client's own id, so any number of requests from any number of clients are in
flight on one child at once.

Children, by the protocol generation a request speaks:

* 2026-07-28 (sessionless; ``MCP-Protocol-Version: 2026-07-28`` or the
  ``params._meta`` envelope): one long-lived *modern* child per bridge,
  shared by every such request, in both modes. A child that does not speak
  2026-07-28 (it answers ``server/discover`` with an error) is answered for:
  ``server/discover`` lists the handshake version the child negotiated (the
  SDKs then fall back to ``initialize``), any other 2026-07-28 request gets
  -32022 (unsupported protocol version) naming that version.
* 2025-era handshake, ``--stateless``: one long-lived *legacy* child,
  initialized once by the bridge and shared by every client; ``initialize``
  is answered from its handshake, with no ``Mcp-Session-Id``.
* 2025-era handshake, sessioned (default): one child per ``Mcp-Session-Id``,
  started by the client's ``initialize`` (whose capabilities it sees), ended
  on DELETE, after ``--session-timeout`` seconds without a request, or when it
  exits. At most ``--max-sessions`` at once: over the cap ``initialize`` gets
  HTTP 503 with a JSON-RPC error and ``Retry-After``. Notifications and
  server-to-client requests (progress, logging, sampling, elicitation, roots)
  reach the client on the SSE stream of the request they belong to (progress,
  by token), else the session's GET stream, else the newest open POST stream;
  the client's answers (POSTed JSON-RPC responses) go back to the child.

A shared child that exits is restarted (with back-off); while it is down its
requests get a JSON-RPC error and ``GET <health-path>`` answers 503.
``GET <health-path>`` proves the child answers MCP: it sends the shared child
``server/discover`` (2026-07-28) or ``ping`` (handshake) and answers 200 only
when the child replies in time.

Logs are JSON lines on stdout: one per HTTP request (``access``), and one per
line the child writes to stderr (``child_stderr``, with the ids of the
requests in flight on that child; ``request_id`` when there is exactly one).
A line on the child's stdout that is not a JSON-RPC object is logged
(``child_bad_line``) and skipped.
"""

import argparse
import asyncio
import json
import os
import secrets
import signal
import sys
import time

__version__ = "1.0.0"

MODERN_VERSIONS = ("2026-07-28",)
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_HANDSHAKE = "2025-11-25"
META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPS = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT = "io.modelcontextprotocol/clientInfo"
META_SERVER = "io.modelcontextprotocol/serverInfo"

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_UNAVAILABLE = -32000
REQUEST_TIMEOUT = -32001
SESSION_NOT_FOUND = -32001
UNSUPPORTED_PROTOCOL_VERSION = -32022
# As the MCP SDKs map JSON-RPC errors of 2026-07-28 replies to HTTP statuses.
MODERN_ERROR_STATUS = {PARSE_ERROR: 400, INVALID_REQUEST: 400, INVALID_PARAMS: 400, -32020: 400, -32021: 400,
                       UNSUPPORTED_PROTOCOL_VERSION: 400, METHOD_NOT_FOUND: 404}

MAX_HEADER_BYTES = 64 * 1024
SSE_PING_SECONDS = 15.0
KEEPALIVE_SECONDS = 60.0
CHILD_LINE_LIMIT = 64 * 1024 * 1024
STDERR_LINE_CHARS = 4000
REASONS = {200: "OK", 202: "Accepted", 204: "No Content", 400: "Bad Request", 404: "Not Found",
           405: "Method Not Allowed", 406: "Not Acceptable", 409: "Conflict", 413: "Payload Too Large",
           415: "Unsupported Media Type", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
           503: "Service Unavailable", 504: "Gateway Timeout"}


# --------------------------------------------------------------------------- #
# Logging
# --------------------------------------------------------------------------- #

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_log_level = 20


def log(level, event, **fields):
    """One JSON line on stdout (the container log)."""
    if LEVELS[level] < _log_level:
        return
    record = {"ts": round(time.time(), 3), "level": level, "event": event}
    record.update(fields)
    try:
        sys.stdout.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        pass


def rpc_error(rpc_id, code, message, data=None):
    error = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": rpc_id, "error": error}


_background_tasks = set()


def background(coro):
    """Run ``coro`` as a task nobody awaits, referenced until it ends (the event loop keeps only weak ones)."""
    task = asyncio.ensure_future(coro)
    _background_tasks.add(task)
    task.add_done_callback(_background_tasks.discard)
    return task


class BridgeError(Exception):
    """A request the bridge answers itself: HTTP status plus a JSON-RPC error."""

    def __init__(self, status, code, message, data=None, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.data = status, code, message, data
        self.headers = headers or {}


# --------------------------------------------------------------------------- #
# Children
# --------------------------------------------------------------------------- #


class Pending:
    """A request forwarded to a child, waiting for its reply."""

    __slots__ = ("client_id", "client_token", "token", "queue")

    def __init__(self, client_id, client_token=None, token=None):
        self.client_id = client_id
        self.client_token = client_token   # the client's progress token
        self.token = token                 # the bridge's token for it, sent to the child
        # Notifications for this request, then the reply (last).
        self.queue = asyncio.Queue()


class Child:
    """One stdio server process and the JSON-RPC traffic on its pipes."""

    def __init__(self, bridge, label):
        self.bridge = bridge
        self.label = label
        self.proc = None
        self.pending = {}          # bridge id -> Pending
        self.tokens = {}           # bridge progress token -> bridge id
        self.streams = []          # open SSE sinks for unrouted messages (session mode)
        self.get_stream = None     # the session's GET stream (asyncio.Queue)
        self.closed = asyncio.Event()
        self.exit_code = None
        self.on_exit = None

    @property
    def alive(self):
        return self.proc is not None and self.proc.returncode is None and not self.closed.is_set()

    async def start(self):
        self.proc = await asyncio.create_subprocess_exec(
            *self.bridge.command,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            limit=CHILD_LINE_LIMIT, start_new_session=True)
        self.bridge.children_started += 1
        log("info", "child_started", child=self.label, pid=self.proc.pid)
        background(self._read_stdout())
        background(self._read_stderr())

    def _in_flight(self):
        return [p.client_id for p in self.pending.values()]

    async def _read_stderr(self):
        while True:
            try:
                line = await self.proc.stderr.readline()
            except (ValueError, asyncio.LimitOverrunError):
                continue
            if not line:
                return
            ids = self._in_flight()
            fields = {"child": self.label, "pid": self.proc.pid,
                      "line": line.decode("utf-8", "replace").rstrip("\r\n")[:STDERR_LINE_CHARS]}
            if len(ids) == 1:
                fields["request_id"] = ids[0]
            elif ids:
                fields["in_flight"] = ids[:20]
            log("info", "child_stderr", **fields)

    async def _read_stdout(self):
        try:
            while True:
                try:
                    line = await self.proc.stdout.readline()
                except ValueError:
                    log("warning", "child_bad_line", child=self.label, reason="line over %d bytes" % CHILD_LINE_LIMIT)
                    continue
                if not line:
                    break
                text = line.strip()
                if not text:
                    continue
                try:
                    message = json.loads(text)
                except ValueError:
                    message = None
                if not isinstance(message, dict):
                    log("warning", "child_bad_line", child=self.label, line=text[:200].decode("utf-8", "replace"))
                    continue
                self._dispatch(message)
        finally:
            await self._finish()

    async def _finish(self):
        if self.proc.returncode is None:
            try:
                self.exit_code = await asyncio.wait_for(self.proc.wait(), 5)
            except asyncio.TimeoutError:
                self._signal(signal.SIGKILL)
                self.exit_code = await self.proc.wait()
        else:
            self.exit_code = self.proc.returncode
        self.closed.set()
        log("warning" if not self.bridge.stopping else "info", "child_exited", child=self.label,
            pid=self.proc.pid, code=self.exit_code, failed_requests=len(self.pending))
        for pending in list(self.pending.values()):
            pending.queue.put_nowait(("reply", rpc_error(
                pending.client_id, INTERNAL_ERROR, "MCP server process exited (code %s)" % self.exit_code)))
        self.pending.clear()
        self.tokens.clear()
        if self.get_stream is not None:
            self.get_stream.put_nowait(None)
        if self.on_exit:
            self.on_exit(self)

    def _dispatch(self, message):
        if "method" in message:
            if "id" in message:
                self._server_request(message)
            else:
                self._notification(message)
            return
        bid = message.get("id")
        pending = self.forget(bid) if isinstance(bid, (int, str)) else None
        if pending is None:
            log("warning", "child_unmatched_reply", child=self.label, id=bid)
            return
        message["id"] = pending.client_id
        pending.queue.put_nowait(("reply", message))

    def _notification(self, message):
        params = message.get("params")
        if message["method"] == "notifications/progress" and isinstance(params, dict):
            bid = self.tokens.get(params.get("progressToken"))
            pending = self.pending.get(bid)
            if pending is not None:
                params["progressToken"] = pending.client_token
                pending.queue.put_nowait(("message", message))
                return
        if message["method"] == "notifications/cancelled" and isinstance(params, dict):
            return  # the child cancels its own requests to the client; nothing is routed by id there
        self._unrouted(message)

    def _server_request(self, message):
        if not self.bridge.back_channel(self):
            self.write(rpc_error(message["id"], METHOD_NOT_FOUND,
                                 "%s: this connection has no back-channel to the client (sessionless)" % message["method"]))
            return
        self._unrouted(message)

    def _unrouted(self, message):
        """A message for the client that belongs to no request we can name."""
        sink = self.get_stream
        if sink is None and self.streams:
            sink = self.streams[-1]
        if sink is None:
            if "id" in message:
                self.write(rpc_error(message["id"], INTERNAL_ERROR, "no open stream to the client for this request"))
            log("debug", "child_message_dropped", child=self.label, method=message.get("method"))
            return
        sink.put_nowait(("message", message))

    def write(self, message):
        if not self.alive:
            return False
        try:
            self.proc.stdin.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError, RuntimeError):
            return False
        return True

    async def request(self, message):
        """Forward a client request; return (bridge id, Pending whose queue yields ('message'|'reply', msg))."""
        if not self.alive:
            raise BridgeError(503, SERVER_UNAVAILABLE, "MCP server process is not running")
        bid = self.bridge.next_id()
        params = message.get("params")
        pending = Pending(message.get("id"))
        if isinstance(params, dict) and isinstance(params.get("_meta"), dict) and "progressToken" in params["_meta"]:
            pending.client_token = params["_meta"]["progressToken"]
            pending.token = "fo-%d" % bid
            params = dict(params)
            params["_meta"] = dict(params["_meta"], progressToken=pending.token)
            self.tokens[pending.token] = bid
        self.pending[bid] = pending
        forwarded = dict(message, id=bid)
        if params is not None:
            forwarded["params"] = params
        if not self.write(forwarded):
            self.forget(bid)
            raise BridgeError(503, SERVER_UNAVAILABLE, "MCP server process is not running")
        try:
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass
        return bid, pending

    def forget(self, bid):
        """Stop tracking a request (answered, cancelled or failed); return its Pending, or None."""
        pending = self.pending.pop(bid, None)
        if pending is not None and pending.token is not None:
            self.tokens.pop(pending.token, None)
        return pending

    def cancel(self, bid, reason):
        """The client went away or timed out: tell the child, forget the request."""
        if self.forget(bid) is None:
            return
        self.write({"jsonrpc": "2.0", "method": "notifications/cancelled",
                    "params": {"requestId": bid, "reason": reason}})

    async def call(self, message, timeout):
        """Forward a request and wait for its reply only (handshakes, health probes)."""
        bid, pending = await self.request(message)
        try:
            while True:
                kind, reply = await asyncio.wait_for(pending.queue.get(), timeout)
                if kind == "reply":
                    return reply
        except asyncio.TimeoutError:
            self.cancel(bid, "timed out")
            raise

    def _signal(self, sig):
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    async def stop(self, grace=3.0):
        if self.proc is None or self.closed.is_set():
            return
        try:
            self.proc.stdin.close()
        except (OSError, RuntimeError):
            pass
        try:
            await asyncio.wait_for(self.closed.wait(), grace)
            return
        except asyncio.TimeoutError:
            pass
        self._signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.closed.wait(), grace)
        except asyncio.TimeoutError:
            self._signal(signal.SIGKILL)
            await self.closed.wait()


def modern_envelope():
    return {META_VERSION: MODERN_VERSIONS[-1], META_CAPS: {},
            META_CLIENT: {"name": "fleetops-stdio-bridge", "version": __version__}}


class SharedChild:
    """A long-lived child shared by every request of one protocol generation."""

    def __init__(self, bridge, kind):
        self.bridge = bridge
        self.kind = kind                # "modern" or "legacy"
        self.child = None
        self.ready = False
        self.modern_supported = None    # modern kind: learned at the first start
        self.init_result = None         # legacy kind (or a modern child that fell back)
        self.discover_result = None
        self.restarts = 0
        self._starting = None
        self._backoff = 1.0
        self.down_until = 0.0

    @property
    def starting(self):
        return self._starting is not None and not self._starting.done()

    async def get(self):
        if self.ready and self.child is not None and self.child.alive:
            return self.child
        wait = self.down_until - time.monotonic()
        if wait > 0 and not self.starting:
            raise BridgeError(503, SERVER_UNAVAILABLE,
                              "MCP server process exited; restarting in %.1f s" % wait, headers={"Retry-After": "1"})
        if not self.starting:
            self._starting = asyncio.ensure_future(self._start())
        await asyncio.shield(self._starting)
        if not self.ready:
            raise BridgeError(503, SERVER_UNAVAILABLE, "MCP server process is not ready")
        return self.child

    async def _start(self):
        self.ready = False
        child = Child(self.bridge, "shared-" + self.kind)
        child.on_exit = self._exited
        self.child = child
        try:
            await child.start()
            timeout = self.bridge.args.start_timeout
            if self.kind == "modern" and self.modern_supported is not False:
                reply = await child.call({"jsonrpc": "2.0", "id": 0, "method": "server/discover",
                                          "params": {"_meta": modern_envelope()}}, timeout)
                result = reply.get("result")
                if result is None and not child.alive:
                    # It died before it answered: a failed start, not an answer about 2026-07-28.
                    raise BridgeError(503, SERVER_UNAVAILABLE, "MCP server process exited while starting")
                if isinstance(result, dict) and any(v in result.get("supportedVersions", ()) for v in MODERN_VERSIONS):
                    self.modern_supported = True
                    self.discover_result = result
                    self.ready = True
                    self._backoff = 1.0
                    log("info", "child_ready", child=child.label, protocol=MODERN_VERSIONS[-1])
                    return
                self.modern_supported = False
                log("info", "child_no_modern", child=child.label, reply=json.dumps(reply)[:300])
            await self._handshake(child, timeout)
            self.ready = True
            self._backoff = 1.0
            log("info", "child_ready", child=child.label, protocol=self.init_result.get("protocolVersion"))
        except (asyncio.TimeoutError, BridgeError, OSError) as exc:
            log("error", "child_start_failed", child=child.label, error=str(exc) or type(exc).__name__)
            await child.stop(grace=1.0)

    async def _handshake(self, child, timeout):
        reply = await child.call({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": LATEST_HANDSHAKE, "capabilities": {},
            "clientInfo": {"name": "fleetops-stdio-bridge", "version": __version__}}}, timeout)
        if not isinstance(reply.get("result"), dict):
            raise BridgeError(503, SERVER_UNAVAILABLE, "initialize failed: %s" % json.dumps(reply)[:300])
        self.init_result = reply["result"]
        child.write({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def _exited(self, child):
        if child is not self.child:
            return
        self.ready = False
        if self.bridge.stopping:
            return
        self.restarts += 1
        delay = self._backoff
        self._backoff = min(self._backoff * 2, 10.0)
        self.down_until = time.monotonic() + delay
        log("warning", "child_restart", child=child.label, in_seconds=delay, restarts=self.restarts)

        async def later():
            await asyncio.sleep(delay)
            if not self.bridge.stopping and not self.starting and not self.ready:
                self._starting = asyncio.ensure_future(self._start())
        background(later())

    async def probe(self, timeout):
        """Prove the child answers MCP."""
        child = self.child
        if not self.ready or child is None or not child.alive:
            return False
        if self.modern_supported:
            message = {"jsonrpc": "2.0", "id": 0, "method": "server/discover", "params": {"_meta": modern_envelope()}}
        else:
            message = {"jsonrpc": "2.0", "id": 0, "method": "ping"}
        try:
            reply = await child.call(message, timeout)
        except (asyncio.TimeoutError, BridgeError):
            return False
        return "result" in reply


class Session:
    def __init__(self, sid, child):
        self.sid = sid
        self.child = child
        self.last_used = time.monotonic()
        self.busy = 0


# --------------------------------------------------------------------------- #
# HTTP
# --------------------------------------------------------------------------- #


class Request:
    __slots__ = ("method", "path", "version", "headers", "body")

    def header(self, name, default=""):
        return self.headers.get(name.lower(), default)


class HTTPError(Exception):
    def __init__(self, status, text):
        super().__init__(text)
        self.status, self.text = status, text


async def read_request(reader, writer, max_body):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise HTTPError(400, "incomplete request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise HTTPError(431, "request head over %d bytes" % MAX_HEADER_BYTES) from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HTTPError(400, "bad request line")
    req = Request()
    req.method, target, req.version = parts
    req.path = target.split("?", 1)[0]
    req.headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HTTPError(400, "bad header line")
        key = name.lower()
        value = value.strip()
        if key in req.headers:
            if key in ("content-length", "transfer-encoding", "host", "mcp-session-id", "mcp-protocol-version"):
                raise HTTPError(400, "duplicate %s header" % name)
            req.headers[key] += ", " + value
        else:
            req.headers[key] = value
    if req.headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
    if "chunked" in req.headers.get("transfer-encoding", "").lower():
        if "content-length" in req.headers:
            raise HTTPError(400, "both Content-Length and Transfer-Encoding")
        chunks, size = [], 0
        while True:
            line = await reader.readuntil(b"\r\n")
            try:
                n = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise HTTPError(400, "bad chunk size") from None
            if n == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                break
            size += n
            if size > max_body:
                raise HTTPError(413, "body over %d bytes" % max_body)
            chunks.append(await reader.readexactly(n))
            await reader.readexactly(2)
        req.body = b"".join(chunks)
    else:
        raw = req.headers.get("content-length", "0") or "0"
        if not raw.isdigit():
            raise HTTPError(400, "bad Content-Length")
        length = int(raw)
        if length > max_body:
            raise HTTPError(413, "body over %d bytes" % max_body)
        req.body = await reader.readexactly(length) if length else b""
    return req


class Response:
    """Writes one HTTP/1.1 response: whole, or as an SSE stream (chunked)."""

    def __init__(self, writer, keep_alive, reader=None):
        self.writer = writer
        self.reader = reader
        self.keep_alive = keep_alive
        self.status = None
        self.streaming = False

    def client_gone(self):
        """The client closed its side (for example it timed out) while we worked on its request."""
        return (self.reader is not None and self.reader.at_eof()) or self.writer.is_closing()

    def _head(self, status, headers):
        self.status = status
        lines = ["HTTP/1.1 %d %s" % (status, REASONS.get(status, "Status"))]
        for name, value in headers.items():
            lines.append("%s: %s" % (name, value))
        if not self.keep_alive:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def send(self, status, body=b"", content_type="application/json", headers=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body, separators=(",", ":")).encode()
        all_headers = dict(headers or {})
        if body or status not in (202, 204):
            all_headers["Content-Type"] = content_type
        if status != 204:
            all_headers["Content-Length"] = str(len(body))
        self.writer.write(self._head(status, all_headers) + body)
        await self.writer.drain()

    async def start_sse(self, headers=None):
        all_headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache, no-transform",
                       "X-Accel-Buffering": "no", "Transfer-Encoding": "chunked"}
        all_headers.update(headers or {})
        self.streaming = True
        self.writer.write(self._head(200, all_headers))
        await self.writer.drain()

    async def sse(self, message=None):
        data = (b": ping\n\n" if message is None else
                b"event: message\ndata: " + json.dumps(message, separators=(",", ":")).encode() + b"\n\n")
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await self.writer.drain()

    async def end_sse(self):
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()


# --------------------------------------------------------------------------- #
# The bridge
# --------------------------------------------------------------------------- #


class Bridge:
    def __init__(self, args):
        self.args = args
        self.command = args.command
        self.stateless = args.stateless
        self.modern = SharedChild(self, "modern")
        self.legacy = SharedChild(self, "legacy")
        self.sessions = {}
        self._id = 0
        self.children_started = 0
        self.stopping = False
        self.connections = set()

    def next_id(self):
        self._id += 1
        return self._id

    def back_channel(self, child):
        return child.label.startswith("session-")

    # -- requests --------------------------------------------------------- #

    async def handle(self, req, resp):
        if req.path == self.args.health_path and req.method == "GET":
            return await self.health(resp)
        if req.path != self.args.path:
            return await resp.send(404, {"error": "not found"})
        if req.method == "POST":
            return await self.post(req, resp)
        if req.method == "GET":
            return await self.get(req, resp)
        if req.method == "DELETE":
            return await self.delete(req, resp)
        return await resp.send(405, b"", headers={"Allow": "GET, POST, DELETE"})

    async def health(self, resp):
        primary = self.modern
        if not primary.ready and (primary.child is None or primary.starting):
            # The first start (or one under way): wait for it, briefly.
            try:
                await asyncio.wait_for(primary.get(), self.args.health_timeout)
            except (BridgeError, asyncio.TimeoutError):
                pass
        ok = await primary.probe(self.args.health_timeout)
        body = {"status": "ok" if ok else "down", "mode": "stateless" if self.stateless else "sessioned",
                "protocol": (MODERN_VERSIONS[-1] if primary.modern_supported else
                             (primary.init_result or {}).get("protocolVersion")),
                "sessions": len(self.sessions), "children_started": self.children_started,
                "restarts": primary.restarts + self.legacy.restarts, "version": __version__}
        await resp.send(200 if ok else 503, body)

    @staticmethod
    def _is_modern(req, message):
        version = req.header("mcp-protocol-version")
        if version in MODERN_VERSIONS:
            return True
        params = message.get("params") if isinstance(message, dict) else None
        meta = params.get("_meta") if isinstance(params, dict) else None
        return isinstance(meta, dict) and meta.get(META_VERSION) in MODERN_VERSIONS

    async def post(self, req, resp):
        accept = req.header("accept")
        if "application/json" not in accept and "*/*" not in accept:
            raise BridgeError(406, SERVER_UNAVAILABLE, "Accept must include application/json")
        ctype = req.header("content-type").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise BridgeError(415, SERVER_UNAVAILABLE, "Content-Type must be application/json")
        try:
            message = json.loads(req.body)
        except (ValueError, RecursionError):
            raise BridgeError(400, PARSE_ERROR, "Parse error") from None
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            raise BridgeError(400, INVALID_REQUEST, "Body must be one JSON-RPC 2.0 object (batches are not accepted)")
        rpc_id = message.get("id")
        if "id" in message and (isinstance(rpc_id, bool) or not isinstance(rpc_id, (int, str))):
            raise BridgeError(400, INVALID_REQUEST, "id must be a string or an integer")
        if "method" in message and not isinstance(message["method"], str):
            raise BridgeError(400, INVALID_REQUEST, "method must be a string")
        if self._is_modern(req, message):
            return await self.post_modern(req, resp, message)
        if self.stateless:
            return await self.post_stateless(req, resp, message)
        return await self.post_session(req, resp, message)

    async def post_modern(self, req, resp, message):
        if "method" not in message:
            raise BridgeError(400, INVALID_REQUEST, "a 2026-07-28 POST carries a request or a notification")
        if "id" not in message:
            return await resp.send(202)
        shared = self.modern
        child = await shared.get()
        if not shared.modern_supported:
            version = (shared.init_result or {}).get("protocolVersion", LATEST_HANDSHAKE)
            if message["method"] == "server/discover":
                # The go-sdk's answer for a handshake-only server; the SDK clients then initialize.
                info = shared.init_result or {}
                result = {"supportedVersions": [version], "capabilities": info.get("capabilities", {}),
                          "resultType": "complete", "cacheScope": "public", "ttlMs": 0,
                          "_meta": {META_SERVER: info.get("serverInfo", {})}}
                if not await shared.probe(self.args.health_timeout):
                    raise BridgeError(503, SERVER_UNAVAILABLE, "MCP server process does not answer")
                return await resp.send(200, {"jsonrpc": "2.0", "id": message["id"], "result": result})
            raise BridgeError(400, UNSUPPORTED_PROTOCOL_VERSION,
                              "this server speaks the initialize handshake only",
                              {"supported": [version], "requested": MODERN_VERSIONS[-1]})
        await self.relay(req, resp, child, message, modern=True)

    async def post_stateless(self, req, resp, message):
        method = message.get("method")
        if "method" not in message:
            raise BridgeError(400, INVALID_REQUEST, "a stateless server takes no responses")
        if "id" not in message:
            return await resp.send(202)
        shared = await self.handshake_shared()
        child = await shared.get()
        if method == "initialize":
            info = dict(shared.init_result)
            params = message.get("params") if isinstance(message.get("params"), dict) else {}
            requested = params.get("protocolVersion")
            if requested in HANDSHAKE_VERSIONS:
                info["protocolVersion"] = requested
            return await resp.send(200, {"jsonrpc": "2.0", "id": message["id"], "result": info})
        await self.relay(req, resp, child, message, modern=False)

    async def handshake_shared(self):
        """The shared child for handshake clients: the first child itself when it has no 2026-07-28."""
        if self.modern.modern_supported is None:
            try:
                await self.modern.get()
            except BridgeError:
                pass
        return self.modern if self.modern.modern_supported is False else self.legacy

    async def post_session(self, req, resp, message):
        sid = req.header("mcp-session-id")
        if not sid:
            if message.get("method") != "initialize" or "id" not in message:
                raise BridgeError(400, SERVER_UNAVAILABLE, "Bad Request: no Mcp-Session-Id; send initialize first")
            return await self.new_session(req, resp, message)
        session = self.sessions.get(sid)
        if session is None:
            raise BridgeError(404, SESSION_NOT_FOUND, "Session not found")
        session.last_used = time.monotonic()
        if "method" not in message or "id" not in message:
            # A notification, or the client's answer to a server request: to the child.
            if message.get("method") == "notifications/cancelled":
                self._map_cancel(session.child, message)
            session.child.write(message)
            return await resp.send(202)
        session.busy += 1
        try:
            await self.relay(req, resp, session.child, message, modern=False)
        finally:
            session.busy -= 1
            session.last_used = time.monotonic()

    @staticmethod
    def _map_cancel(child, message):
        params = message.get("params")
        if isinstance(params, dict):
            for bid, pending in list(child.pending.items()):
                if pending.client_id == params.get("requestId"):
                    message["params"] = dict(params, requestId=bid)
                    child.forget(bid)
                    pending.queue.put_nowait(("cancelled", None))
                    break

    async def new_session(self, req, resp, message):
        live = len(self.sessions)  # starting ones too: each holds (or is about to hold) a process
        if live >= self.args.max_sessions:
            log("warning", "session_cap", sessions=live, cap=self.args.max_sessions)
            raise BridgeError(503, SERVER_UNAVAILABLE,
                              "this replica serves at most %d sessions; try again later" % self.args.max_sessions,
                              {"maxSessions": self.args.max_sessions}, headers={"Retry-After": "5"})
        sid = secrets.token_hex(16)
        child = Child(self, "session-" + sid[:8])
        session = Session(sid, child)
        self.sessions[sid] = session
        session.busy += 1

        def gone(_child):
            if self.sessions.get(sid) is session:
                del self.sessions[sid]
        child.on_exit = gone
        try:
            await child.start()
            reply = await child.call(message, self.args.start_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            await child.stop(grace=1.0)
            self.sessions.pop(sid, None)
            raise BridgeError(503, SERVER_UNAVAILABLE, "MCP server process did not start: %s" % (exc or "timeout")) from exc
        finally:
            session.busy -= 1
        if "result" not in reply or resp.client_gone():
            # A failed initialize, or a client that gave up waiting: no session is kept for it.
            self.sessions.pop(sid, None)
            await child.stop(grace=1.0)
            if "result" in reply:
                log("info", "session_abandoned", session=sid[:8], reason="client gone before initialize answered")
                resp.keep_alive = False
                return
            return await resp.send(200, reply)
        session.last_used = time.monotonic()
        log("info", "session_opened", session=sid[:8], pid=child.proc.pid, sessions=len(self.sessions))
        await resp.send(200, reply, headers={"Mcp-Session-Id": sid})

    async def relay(self, req, resp, child, message, modern):
        """Forward one request; answer with JSON, or SSE once a notification comes first."""
        bid, pending = await child.request(message)
        wants_sse = "text/event-stream" in req.header("accept")
        # Server requests and notifications that name no request may ride this stream (sessions only).
        shares_stream = wants_sse and self.back_channel(child)
        if shares_stream:
            child.streams.append(pending.queue)
        deadline = time.monotonic() + self.args.request_timeout
        try:
            next_ping = time.monotonic() + SSE_PING_SECONDS
            while True:
                wait = min(1.0, deadline - time.monotonic())
                if wait <= 0:
                    raise asyncio.TimeoutError
                try:
                    entry = await asyncio.wait_for(pending.queue.get(), wait)
                except asyncio.TimeoutError:
                    if time.monotonic() >= deadline:
                        raise
                    if resp.client_gone():
                        child.cancel(bid, "client disconnected")
                        resp.keep_alive = False
                        return
                    if not wants_sse or time.monotonic() < next_ping:
                        continue
                    next_ping = time.monotonic() + SSE_PING_SECONDS
                    if not resp.streaming:
                        await resp.start_sse()
                    await resp.sse()
                    continue
                if entry is None:
                    continue
                kind, item = entry
                if kind == "cancelled":
                    error = rpc_error(message.get("id"), -32800, "request cancelled by the client")
                    if resp.streaming:
                        await resp.sse(error)
                        await resp.end_sse()
                    else:
                        await resp.send(200, error)
                    return
                if kind == "reply":
                    if resp.streaming:
                        await resp.sse(item)
                        await resp.end_sse()
                    else:
                        status = 200
                        if modern and "error" in item:
                            status = MODERN_ERROR_STATUS.get(item["error"].get("code"), 200)
                        await resp.send(status, item)
                    return
                if not wants_sse:
                    continue   # a JSON-only client cannot receive notifications
                if not resp.streaming:
                    await resp.start_sse()
                await resp.sse(item)
        except asyncio.TimeoutError:
            child.cancel(bid, "timed out in the bridge")
            error = rpc_error(message.get("id"), REQUEST_TIMEOUT,
                              "no answer from the MCP server within %d s" % self.args.request_timeout)
            if resp.streaming:
                await resp.sse(error)
                await resp.end_sse()
            else:
                await resp.send(504, error)
        except (ConnectionError, asyncio.CancelledError):
            child.cancel(bid, "client disconnected")
            raise
        finally:
            if shares_stream:
                child.streams.remove(pending.queue)

    async def get(self, req, resp):
        if self.stateless:
            return await resp.send(405, b"", headers={"Allow": "POST"})
        sid = req.header("mcp-session-id")
        if not sid:
            raise BridgeError(400, SERVER_UNAVAILABLE, "GET needs an Mcp-Session-Id")
        if "text/event-stream" not in req.header("accept"):
            raise BridgeError(406, SERVER_UNAVAILABLE, "GET must accept text/event-stream")
        session = self.sessions.get(sid)
        if session is None:
            raise BridgeError(404, SESSION_NOT_FOUND, "Session not found")
        child = session.child
        if child.get_stream is not None:
            raise BridgeError(409, SERVER_UNAVAILABLE, "this session already has a GET stream")
        queue = asyncio.Queue()
        child.get_stream = queue
        try:
            await resp.start_sse()
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), SSE_PING_SECONDS)
                except asyncio.TimeoutError:
                    await resp.sse()
                    continue
                if item is None:
                    break
                await resp.sse(item[1] if isinstance(item, tuple) else item)
            await resp.end_sse()
        finally:
            if child.get_stream is queue:
                child.get_stream = None

    async def delete(self, req, resp):
        if self.stateless:
            return await resp.send(405, b"", headers={"Allow": "POST"})
        sid = req.header("mcp-session-id")
        session = self.sessions.pop(sid, None) if sid else None
        if session is None:
            raise BridgeError(404, SESSION_NOT_FOUND, "Session not found")
        log("info", "session_closed", session=sid[:8], reason="DELETE", sessions=len(self.sessions))
        await session.child.stop()
        await resp.send(200, b"", content_type="text/plain")

    # -- housekeeping ----------------------------------------------------- #

    async def reap(self):
        while not self.stopping:
            await asyncio.sleep(min(5.0, max(0.2, self.args.session_timeout / 4)))
            now = time.monotonic()
            for sid, session in list(self.sessions.items()):
                if session.busy == 0 and now - session.last_used > self.args.session_timeout:
                    self.sessions.pop(sid, None)
                    log("info", "session_closed", session=sid[:8], reason="idle", sessions=len(self.sessions))
                    background(session.child.stop())

    async def connection(self, reader, writer):
        task = asyncio.current_task()
        self.connections.add(task)
        try:
            while not self.stopping:
                try:
                    req = await asyncio.wait_for(read_request(reader, writer, self.args.max_body), KEEPALIVE_SECONDS)
                except asyncio.TimeoutError:
                    break
                except HTTPError as exc:
                    resp = Response(writer, keep_alive=False)
                    await resp.send(exc.status, rpc_error(None, INVALID_REQUEST, exc.text))
                    break
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                if req is None:
                    break
                keep = req.version == "HTTP/1.1" and "close" not in req.header("connection").lower()
                resp = Response(writer, keep_alive=keep and not self.stopping, reader=reader)
                started = time.monotonic()
                try:
                    await self.handle(req, resp)
                except BridgeError as exc:
                    rpc_id = None
                    try:
                        rpc_id = json.loads(req.body).get("id")
                    except (ValueError, AttributeError, RecursionError):
                        pass
                    if resp.streaming:
                        await resp.sse(rpc_error(rpc_id, exc.code, exc.message, exc.data))
                        await resp.end_sse()
                    else:
                        await resp.send(exc.status, rpc_error(rpc_id, exc.code, exc.message, exc.data),
                                        headers=exc.headers)
                if req.path != self.args.health_path or resp.status != 200:
                    rpc = None
                    if req.method == "POST":
                        try:
                            rpc = json.loads(req.body).get("method")
                        except (ValueError, AttributeError, RecursionError):
                            pass
                    log("info", "access", method=req.method, path=req.path, status=resp.status, rpc=rpc,
                        ms=round((time.monotonic() - started) * 1000, 1),
                        session=(req.header("mcp-session-id") or "")[:8] or None)
                if not resp.keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as exc:  # never let one connection take the bridge down
            log("error", "connection_error", error=repr(exc))
        finally:
            self.connections.discard(task)
            try:
                writer.close()
            except (OSError, RuntimeError):
                pass

    async def run(self):
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = await asyncio.start_server(self.connection, self.args.host, self.args.port,
                                            limit=MAX_HEADER_BYTES, reuse_address=True)
        log("info", "listening", host=self.args.host, port=self.args.port, path=self.args.path,
            mode="stateless" if self.stateless else "sessioned", command=self.command[0], version=__version__)
        background(self.modern.get()).add_done_callback(lambda f: f.exception())
        reaper = asyncio.ensure_future(self.reap())
        await stop.wait()
        self.stopping = True
        log("info", "stopping", sessions=len(self.sessions))
        server.close()
        await server.wait_closed()
        reaper.cancel()
        if self.connections:
            await asyncio.wait(list(self.connections), timeout=self.args.drain_seconds)
        children = [s.child for s in self.sessions.values()] + [c.child for c in (self.modern, self.legacy) if c.child]
        await asyncio.gather(*(c.stop(grace=2.0) for c in children), return_exceptions=True)
        log("info", "stopped")


def positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError("must be greater than 0, got %s" % text)
        return value
    return parse


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="fleetops-stdio-bridge",
        description="Serve a stdio MCP server over Streamable HTTP (both MCP protocol generations).",
        usage="%(prog)s [options] -- COMMAND [ARG...]")
    parser.add_argument("--host", default="0.0.0.0", help="bind address (default 0.0.0.0)")
    parser.add_argument("--port", type=positive(int), default=8080, help="TCP port (default 8080)")
    parser.add_argument("--path", default="/mcp", help="MCP endpoint path (default /mcp)")
    parser.add_argument("--health-path", default="/health", help="health endpoint path (default /health)")
    parser.add_argument("--stateless", action="store_true",
                        help="handshake clients share one child and get no Mcp-Session-Id")
    parser.add_argument("--session-timeout", type=positive(float), default=600.0,
                        help="seconds a session may go without a request before it is ended (default 600)")
    parser.add_argument("--max-sessions", type=positive(int), default=32,
                        help="sessions (children) at most at once; initialize gets 503 over it (default 32)")
    parser.add_argument("--request-timeout", type=positive(float), default=300.0,
                        help="seconds a request may wait for its answer (default 300)")
    parser.add_argument("--start-timeout", type=positive(float), default=60.0,
                        help="seconds a new child may take to answer its first message (default 60)")
    parser.add_argument("--health-timeout", type=positive(float), default=3.0,
                        help="seconds the health probe waits for the child (default 3)")
    parser.add_argument("--max-body", type=positive(int), default=4 * 1024 * 1024,
                        help="largest request body in bytes (default 4 MiB)")
    parser.add_argument("--drain-seconds", type=positive(float), default=5.0,
                        help="seconds open requests get to finish on SIGTERM (default 5)")
    parser.add_argument("--log-level", choices=sorted(LEVELS, key=LEVELS.get), default="info")
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    if "--" in argv:
        split = argv.index("--")
        options, command = argv[:split], argv[split + 1:]
    else:
        options, command = argv, []
    args = parser.parse_args(options)
    if not command:
        parser.error("the stdio server command is missing: give it after --")
    for name in ("path", "health_path"):
        if not getattr(args, name).startswith("/"):
            parser.error("--%s must start with /" % name.replace("_", "-"))
    args.command = command
    return args


def main(argv=None):
    global _log_level
    args = parse_args(sys.argv[1:] if argv is None else argv)
    _log_level = LEVELS[args.log_level]
    try:
        asyncio.run(Bridge(args).run())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
