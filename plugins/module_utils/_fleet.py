# Copyright: fleetops.mcp contributors
# Apache License 2.0 (see LICENSE)
# SPDX-License-Identifier: Apache-2.0
"""The fleet model: validation and normalisation of the declared MCP servers.

One place that knows what an MCP server entry may contain, used by the
mcp_server role (containers), and by later roles (load balancer upstreams,
scrape targets). Every error names the server and the field.
"""

from __future__ import annotations

import ipaddress
import re

from ansible_collections.fleetops.mcp.plugins.module_utils import _oauth

TRANSPORTS = ("streamable-http", "sse", "stdio")
IMAGE_SOURCES = ("registry", "build", "archive")
KNOWN_FIELDS = {
    "name", "image", "image_source", "build_context", "image_archive", "transport",
    "command", "stdio_command", "port", "host_port", "bind_address", "path", "replicas",
    "env", "secrets", "volumes", "resources", "healthcheck", "stop_grace_period",
    "labels", "user", "tmpfs", "stateless", "hosts", "metrics_path", "backup_command",
    "failover", "max_sessions", "allowed_origins", "oauth",
}
OAUTH_FIELDS = {"issuers", "scopes", "tools_by_scope", "static_tokens", "audience"}
# RFC 6749 section 3.3 scope-token characters.
SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}\Z")
OAUTH_TOOL = re.compile(r"^(?:\*|[A-Za-z0-9_.-]{1,128})\Z")
FAILOVER_FIELDS = {"primary", "standby", "sync_interval"}
NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?\Z")
IMAGE = re.compile(
    r"^(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*(?::[0-9]+/[a-z0-9]+(?:[._/-][a-z0-9]+)*)?)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?\Z"
)
SIZE = re.compile(r"^[1-9][0-9]*[kmg]?\Z")
DURATION = re.compile(r"^[1-9][0-9]*(ms|s|m|h)\Z")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
SECRET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
# URL paths (path, metrics_path, healthcheck.path) are pasted into nginx's
# proxy_pass, prometheus.yml and the health check's Python: RFC 3986
# unreserved characters and '/' only, no '.' or '..' segment.
URL_PATH = re.compile(r"^/[A-Za-z0-9._~/-]{0,200}\Z")
# Host paths and container paths of volumes and tmpfs mounts: no ':' or ','
# (Docker's separators), no spaces, quotes or shell characters.
MOUNT_PATH = re.compile(r"^/[A-Za-z0-9._@+/-]{0,254}\Z")
VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
# Host paths a container must never get: the engine's sockets (root on the
# host) and the system's own directories.
FORBIDDEN_SOURCES = {"/", "/etc", "/proc", "/sys", "/dev", "/boot", "/root", "/usr", "/bin", "/sbin", "/lib",
                     "/lib64", "/var", "/var/lib", "/var/lib/docker", "/var/lib/containerd", "/run", "/var/run",
                     "/home", "/srv", "/opt", "/etc/docker", "/etc/fleetops"}
FORBIDDEN_SOURCE_TREES = ("/proc/", "/sys/", "/dev/", "/run/docker", "/var/run/docker", "/run/containerd",
                          "/var/run/containerd", "/var/lib/docker/", "/var/lib/containerd/", "/etc/fleetops/")
TMPFS_OPTION = re.compile(r"^(rw|ro|noexec|exec|nosuid|suid|nodev|dev|size=[1-9][0-9]*[kmg]?|mode=[0-7]{3,4}"
                          r"|uid=[0-9]+|gid=[0-9]+)\Z")
# Label keys: Docker's recommended reverse-DNS form.
LABEL_KEY = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?\Z")
# Label prefixes the engine and this collection own (the mcp_server role's
# org.fleetops.mcp.* labels find and prune its containers).
RESERVED_LABEL_PREFIXES = ("com.docker.", "io.docker.", "org.dockerproject.", "org.opencontainers.", "org.fleetops.")
# Browser origins a server admits at the gateway (MCP Streamable HTTP: a
# present and invalid Origin gets 403): scheme://host[:port], nothing more.
ORIGIN = re.compile(r"^(?P<scheme>https?)://(?P<host>[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?|\[[0-9a-f:.]{2,45}\])"
                    r"(?::(?P<port>[0-9]{1,5}))?\Z")
# Inventory host names (failover.primary/standby, hosts).
HOST_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252}[A-Za-z0-9])?\Z")

DEFAULTS = {
    "image_source": "registry",
    "transport": "streamable-http",
    "command": None,
    "stdio_command": None,
    "port": 8080,
    # None: the Docker host's own fleet address (fleet_address: the one the
    # load balancers and the firewall use), never every interface (CIS
    # Docker 5.13). 0.0.0.0 (or another address) only when set.
    "bind_address": None,
    "replicas": 1,
    "env": {},
    "secrets": [],
    "volumes": [],
    "resources": {"memory": "256m", "cpus": 1.0, "pids": 256},
    "healthcheck": {"path": "/health", "interval": "10s", "timeout": "3s", "retries": 3, "start_period": "10s"},
    "stop_grace_period": 30,
    "labels": {},
    "user": "10001:10001",
    "tmpfs": ["/tmp:rw,noexec,nosuid,size=64m"],
    "stateless": False,
    "hosts": None,
    # None: /metrics for HTTP servers, none for stdio (the bridge has none).
    "metrics_path": None,
    # Run in the first replica before its writable volumes are copied (a
    # dump); without it the server's containers are paused for the copy.
    "backup_command": None,
    # Active/passive on two Docker hosts (roles/mcp_failover):
    # {primary, standby, sync_interval seconds}.
    "failover": None,
    # stdio servers: sessions (one server process each) a replica's bridge
    # runs at once; initialize gets HTTP 503 over it.
    "max_sessions": 16,
    # Browser origins the gateway admits for this server (exact
    # scheme://host[:port]); a request with any other Origin gets 403 before
    # its token is checked, one without Origin (native clients) goes on.
    "allowed_origins": [],
    # OAuth 2.1 resource-server mode at the gateway (nginx_lb): {issuers: [names of
    # nginx_lb_oauth_issuers], scopes?, tools_by_scope?, static_tokens?, audience?};
    # None: the static bearer tokens of nginx_lb_clients only.
    "oauth": None,
}


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _int_in(value, low, high):
    """value as an int when it is a whole number in [low, high], else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if _is_int(value) and low <= value <= high:
        return value
    return None


def safe_name(name):
    """A volume source as a directory name (the failover replica and backup item names)."""
    return re.sub(r"[^a-z0-9-]+", "-", str(name).lower()).strip("-")


def url_path_error(value):
    """Why ``value`` is not a URL path the templates may paste, or None."""
    if not isinstance(value, str) or not URL_PATH.match(value):
        return "must start with / and hold only letters, digits and - . _ ~ /"
    if any(part in (".", "..") for part in value.split("/")):
        return "must not contain a . or .. segment"
    return None


def _mount_path_error(value):
    if not isinstance(value, str) or not MOUNT_PATH.match(value):
        return "must be an absolute path of letters, digits and . _ @ + - /"
    if any(part in (".", "..") for part in value.split("/")):
        return "must not contain a . or .. segment"
    return None


def _forbidden_source(path):
    norm = "/" + "/".join(p for p in path.split("/") if p)
    if norm in FORBIDDEN_SOURCES or path.endswith(".sock"):
        return True
    return any(norm.startswith(tree) or norm + "/" == tree for tree in FORBIDDEN_SOURCE_TREES)


def bind_address_error(value):
    """Why ``value`` is not an address Docker can publish ports on, or None (None itself: the default)."""
    if value is None:
        return None
    try:
        ipaddress.ip_address(value if isinstance(value, str) else "")
    except ValueError:
        return "must be an IPv4 or IPv6 address without brackets (or unset: the host's fleet address)"
    return None


def _label(server, index):
    name = server.get("name") if isinstance(server, dict) else None
    return "mcp server %r" % name if isinstance(name, str) and name else "mcp server #%d" % (index + 1)


def _check_resources(where, resources, errors):
    if not isinstance(resources, dict):
        errors.append("%s: resources must be a mapping of memory, cpus and pids" % where)
        return
    for key in sorted(set(resources) - {"memory", "cpus", "pids"}):
        errors.append("%s: resources.%s is not a known field (memory, cpus, pids)" % (where, key))
    memory = resources.get("memory")
    if memory is not None and not SIZE.match(str(memory).lower()):
        errors.append("%s: resources.memory %r is not a size such as 256m or 1g" % (where, memory))
    cpus = resources.get("cpus")
    if cpus is not None:
        try:
            ok = float(cpus) > 0 and not isinstance(cpus, bool)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            errors.append("%s: resources.cpus %r must be a number above 0" % (where, cpus))
    pids = resources.get("pids")
    if pids is not None and _int_in(pids, 1, 4194304) is None:
        errors.append("%s: resources.pids %r must be a whole number of at least 1" % (where, pids))


def _check_healthcheck(where, check, errors):
    if not isinstance(check, dict):
        errors.append("%s: healthcheck must be a mapping" % where)
        return
    known = {"test", "path", "interval", "timeout", "retries", "start_period", "disable"}
    for key in sorted(set(check) - known):
        errors.append("%s: healthcheck.%s is not a known field (%s)" % (where, key, ", ".join(sorted(known))))
    for key in ("interval", "timeout", "start_period"):
        if key in check and not DURATION.match(str(check[key])):
            errors.append("%s: healthcheck.%s %r is not a duration such as 10s" % (where, key, check[key]))
    if "retries" in check and _int_in(check["retries"], 1, 100) is None:
        errors.append("%s: healthcheck.retries %r must be a whole number from 1 to 100" % (where, check["retries"]))
    test = check.get("test")
    if "test" in check and not (isinstance(test, list) and test and all(isinstance(t, str) for t in test)):
        errors.append("%s: healthcheck.test must be a non-empty list of strings" % where)
    if "path" in check and url_path_error(check["path"]):
        errors.append("%s: healthcheck.path %r %s" % (where, check["path"], url_path_error(check["path"])))


def _check_volumes(where, volumes, errors):
    if not isinstance(volumes, list):
        errors.append("%s: volumes must be a list" % where)
        return
    replica_dirs = {}
    for i, volume in enumerate(volumes):
        if not isinstance(volume, dict) or not {"source", "target"} <= set(volume):
            errors.append("%s: volumes[%d] needs source and target" % (where, i))
            continue
        for key in sorted(set(volume) - {"source", "target", "writable"}):
            errors.append("%s: volumes[%d].%s is not a known field (source, target, writable)" % (where, i, key))
        target = volume["target"]
        problem = _mount_path_error(target)
        if problem:
            errors.append("%s: volumes[%d].target %r %s" % (where, i, target, problem))
        elif target.rstrip("/") in ("", "/run/secrets"):
            errors.append("%s: volumes[%d].target %r is reserved (the container's root or its secrets)" % (where, i, target))
        source = volume["source"]
        if isinstance(source, str) and source.startswith("/"):
            problem = _mount_path_error(source)
            if problem:
                errors.append("%s: volumes[%d].source %r %s" % (where, i, source, problem))
            elif _forbidden_source(source):
                errors.append("%s: volumes[%d].source %r is a system directory or the engine's socket; "
                              "mount a directory of the server's own" % (where, i, source))
        elif not (isinstance(source, str) and VOLUME_NAME.match(source)):
            errors.append("%s: volumes[%d].source %r must be an absolute host path or a volume name" % (where, i, source))
        if "writable" in volume and not isinstance(volume["writable"], bool):
            errors.append("%s: volumes[%d].writable must be true or false" % (where, i))
        elif volume.get("writable") is True:
            # The failover replica and the backup item of a writable volume are named after it.
            key = safe_name(source)
            if key in replica_dirs:
                errors.append("%s: volumes[%d].source %r and volumes[%d].source %r map to the same replica directory "
                              "%r; rename one" % (where, replica_dirs[key][0], replica_dirs[key][1], i, source, key))
            else:
                replica_dirs[key] = (i, source)


def _check_tmpfs(where, tmpfs, errors):
    if not isinstance(tmpfs, list):
        errors.append("%s: tmpfs must be a list of 'path[:options]' strings" % where)
        return
    for i, mount in enumerate(tmpfs):
        if not isinstance(mount, str):
            errors.append("%s: tmpfs[%d] must be a 'path[:options]' string" % (where, i))
            continue
        path, options = (mount.split(":", 1) + [""])[:2]
        problem = _mount_path_error(path)
        if problem:
            errors.append("%s: tmpfs[%d] path %r %s" % (where, i, path, problem))
        elif path.rstrip("/") in ("", "/run/secrets"):
            errors.append("%s: tmpfs[%d] path %r is reserved (the container's root or its secrets)" % (where, i, path))
        if ":" in mount:
            bad = [o for o in options.split(",") if not TMPFS_OPTION.match(o)]
            if bad:
                errors.append("%s: tmpfs[%d] options %r are not tmpfs options (rw, ro, noexec, nosuid, nodev, "
                              "size=N[kmg], mode=NNN, uid=N, gid=N)" % (where, i, ",".join(bad)))


def normalize_origin(value):
    """``scheme://host[:port]`` in the form browsers send it (lower case, no default port), or None when it is not one."""
    if not isinstance(value, str):
        return None
    match = ORIGIN.match(value.strip().lower())
    if not match:
        return None
    port = match.group("port")
    if port is not None and not 1 <= int(port) <= 65535:
        return None
    if port in (None, {"https": "443", "http": "80"}[match.group("scheme")]):
        return "%s://%s" % (match.group("scheme"), match.group("host"))
    return "%s://%s:%d" % (match.group("scheme"), match.group("host"), int(port))


def _check_origins(where, origins, errors):
    if not isinstance(origins, list):
        errors.append("%s: allowed_origins must be a list of origins (scheme://host[:port])" % where)
        return
    for origin in origins:
        if normalize_origin(origin) is None:
            errors.append("%s: allowed_origins entry %r is not an origin: http:// or https://, a host name or address, "
                          "an optional port, no path, no '*'" % (where, origin))


def _check_oauth(where, oauth, errors):
    """The shape of a server's ``oauth`` block (the issuer names are checked against the issuers by nginx_lb)."""
    if oauth is None:
        return
    if not isinstance(oauth, dict):
        errors.append("%s: oauth must be a mapping {issuers, scopes?, tools_by_scope?, static_tokens?, audience?}" % where)
        return
    unknown = sorted(set(oauth) - OAUTH_FIELDS, key=str)
    if unknown:
        known = ", ".join(sorted(OAUTH_FIELDS))
        errors.append("%s: oauth has unknown field(s) %s (known: %s)" % (where, ", ".join(map(str, unknown)), known))
    issuers = oauth.get("issuers")
    if not isinstance(issuers, list) or not issuers or not all(isinstance(i, str) and i for i in issuers):
        errors.append("%s: oauth.issuers must be a non-empty list of issuer names (nginx_lb_oauth_issuers)" % where)
    scopes = oauth.get("scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(s, str) and SCOPE.match(s) for s in scopes):
        errors.append("%s: oauth.scopes must be a list of scope names (printable ASCII, no spaces, quotes or "
                      "backslashes); got %r" % (where, scopes))
    rules = oauth.get("tools_by_scope", {})
    if not isinstance(rules, dict):
        errors.append("%s: oauth.tools_by_scope must map a scope to a list of tool names (or \"*\")" % where)
    else:
        for scope, tools in rules.items():
            if not isinstance(scope, str) or not SCOPE.match(scope):
                errors.append("%s: oauth.tools_by_scope key %r is not a scope name" % (where, scope))
            if not isinstance(tools, list) or not tools or not all(isinstance(t, str) and OAUTH_TOOL.match(t) for t in tools):
                errors.append("%s: oauth.tools_by_scope[%s] must be a non-empty list of tool names (letters, digits, "
                              "'_', '.', '-') or \"*\"; got %r" % (where, scope, tools))
    if not isinstance(oauth.get("static_tokens", False), bool):
        errors.append("%s: oauth.static_tokens must be true or false" % where)
    audience = oauth.get("audience")
    if audience is not None:
        problem = _oauth.https_url_error(audience, "%s: oauth.audience" % where)
        if problem:
            errors.append(problem + " (the resource URL tokens must name, RFC 8707)")


def _check_labels(where, labels, errors):
    if not isinstance(labels, dict):
        errors.append("%s: labels must be a mapping" % where)
        return
    for key in sorted(labels, key=str):
        value = labels[key]
        if not isinstance(key, str) or not LABEL_KEY.match(key):
            errors.append("%s: label key %r must be letters, digits, '.', '_' and '-' (no '=', spaces or newlines)"
                          % (where, key))
        elif key.lower().startswith(RESERVED_LABEL_PREFIXES):
            errors.append("%s: label key %r uses a reserved prefix (%s)" % (where, key, ", ".join(RESERVED_LABEL_PREFIXES)))
        if isinstance(value, (dict, list)) or value is None:
            errors.append("%s: label %r must have a string value" % (where, key))
        elif any(ord(c) < 32 or ord(c) == 127 for c in str(value)) or len(str(value)) > 1024:
            errors.append("%s: label %r value must be at most 1024 characters without newlines or control characters"
                          % (where, key))


def _check_one(where, server, errors):
    for key in sorted(set(server) - KNOWN_FIELDS):
        errors.append("%s: %s is not a known field" % (where, key))
    image = server.get("image")
    if not isinstance(image, str) or not image:
        errors.append("%s: image is required" % where)
    else:
        match = IMAGE.match(image)
        if not match:
            errors.append("%s: image %r is not a valid image reference" % (where, image))
        elif not match.group("tag") and not match.group("digest"):
            errors.append("%s: image %r has no tag or digest; pin one (never an implicit latest)" % (where, image))
    source = server.get("image_source", DEFAULTS["image_source"])
    if source not in IMAGE_SOURCES:
        errors.append("%s: image_source %r is not one of %s" % (where, source, ", ".join(IMAGE_SOURCES)))
    if source == "build" and not server.get("build_context"):
        errors.append("%s: build_context is required with image_source build" % where)
    if source == "archive" and not server.get("image_archive"):
        errors.append("%s: image_archive is required with image_source archive" % where)
    transport = server.get("transport", DEFAULTS["transport"])
    if transport not in TRANSPORTS:
        errors.append("%s: transport %r is not one of %s" % (where, transport, ", ".join(TRANSPORTS)))
    if transport == "stdio" and not server.get("stdio_command"):
        errors.append("%s: stdio_command is required with transport stdio" % where)
    for key in ("command", "stdio_command", "backup_command"):
        value = server.get(key)
        if value is not None and not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
            errors.append("%s: %s must be a non-empty list of strings" % (where, key))
    if _int_in(server.get("port", DEFAULTS["port"]), 1, 65535) is None:
        errors.append("%s: port %r must be a whole number from 1 to 65535" % (where, server.get("port")))
    if "host_port" not in server:
        errors.append("%s: host_port is required (the published port of the first replica)" % where)
    elif _int_in(server["host_port"], 1, 65535) is None:
        errors.append("%s: host_port %r must be a whole number from 1 to 65535" % (where, server["host_port"]))
    replicas = _int_in(server.get("replicas", DEFAULTS["replicas"]), 1, 64)
    if replicas is None:
        errors.append("%s: replicas %r must be a whole number from 1 to 64" % (where, server.get("replicas")))
    elif _int_in(server.get("host_port"), 1, 65535) is not None and int(server["host_port"]) + replicas - 1 > 65535:
        errors.append("%s: host_port + replicas runs past 65535" % where)
    path = server.get("path")
    if path is not None and url_path_error(path):
        errors.append("%s: path %r %s" % (where, path, url_path_error(path)))
    metrics_path = server.get("metrics_path")
    if metrics_path not in (None, "") and url_path_error(metrics_path):
        errors.append("%s: metrics_path %r %s (or be empty for no metrics)" % (where, metrics_path, url_path_error(metrics_path)))
    if bind_address_error(server.get("bind_address")):
        errors.append("%s: bind_address %r %s" % (where, server.get("bind_address"),
                                                  bind_address_error(server.get("bind_address"))))
    env = server.get("env", {})
    if not isinstance(env, dict):
        errors.append("%s: env must be a mapping" % where)
    else:
        for key in sorted(k for k in env if not ENV_NAME.match(str(k))):
            errors.append("%s: env name %r is not a valid variable name" % (where, key))
    secrets = server.get("secrets", [])
    if not isinstance(secrets, list):
        errors.append("%s: secrets must be a list of names" % where)
    else:
        for secret in secrets:
            if not isinstance(secret, str) or not SECRET_NAME.match(secret):
                errors.append("%s: secret name %r may hold letters, digits, '.', '_' and '-' only" % (where, secret))
    _check_volumes(where, server.get("volumes", []), errors)
    _check_resources(where, server.get("resources", {}), errors)
    _check_healthcheck(where, server.get("healthcheck", {}), errors)
    if _int_in(server.get("stop_grace_period", DEFAULTS["stop_grace_period"]), 1, 3600) is None:
        errors.append("%s: stop_grace_period %r must be whole seconds from 1 to 3600" % (where, server.get("stop_grace_period")))
    user = str(server.get("user", DEFAULTS["user"]))
    uid = user.split(":", 1)[0].strip()
    # The engine reads "00", "+0" and "0000" as uid 0 too.
    if uid in ("", "root") or (re.match(r"^[+-]?[0-9]+\Z", uid) and int(uid) == 0):
        errors.append("%s: user %r is root; MCP servers run as a non-root user" % (where, user))
    elif server.get("secrets") and not re.match(r"^[0-9]+(:[0-9]+)?\Z", user):
        errors.append("%s: user %r must be a numeric uid[:gid] when secrets are mounted (they are owned by it)" % (where, user))
    _check_labels(where, server.get("labels", {}), errors)
    _check_tmpfs(where, server.get("tmpfs", DEFAULTS["tmpfs"]), errors)
    _check_origins(where, server.get("allowed_origins", []), errors)
    _check_oauth(where, server.get("oauth"), errors)
    if not isinstance(server.get("stateless", False), bool):
        errors.append("%s: stateless must be true or false" % where)
    if "max_sessions" in server:
        if transport != "stdio":
            errors.append("%s: max_sessions applies to transport stdio only (the bridge's session cap)" % where)
        elif _int_in(server["max_sessions"], 1, 1024) is None:
            errors.append("%s: max_sessions %r must be a whole number from 1 to 1024" % (where, server["max_sessions"]))
    hosts = server.get("hosts")
    if hosts is not None and not (isinstance(hosts, list) and all(isinstance(h, str) and HOST_NAME.match(h) for h in hosts)):
        errors.append("%s: hosts must be a list of inventory host names" % where)
    if server.get("failover") is not None:
        _check_failover(where, server, errors)


def _check_failover(where, server, errors):
    failover = server["failover"]
    if not isinstance(failover, dict):
        errors.append("%s: failover must be a mapping of primary, standby and sync_interval" % where)
        return
    for key in sorted(set(failover) - FAILOVER_FIELDS):
        errors.append("%s: failover.%s is not a known field (primary, standby, sync_interval)" % (where, key))
    for key in ("primary", "standby"):
        if not isinstance(failover.get(key), str) or not failover.get(key):
            errors.append("%s: failover.%s is required (an inventory host name)" % (where, key))
        elif not HOST_NAME.match(failover[key]):
            errors.append("%s: failover.%s %r is not an inventory host name (letters, digits, '.', '_', '-')"
                          % (where, key, failover[key]))
    if isinstance(failover.get("primary"), str) and failover.get("primary") == failover.get("standby"):
        errors.append("%s: failover.primary and failover.standby must be two different hosts" % where)
    if "sync_interval" in failover and _int_in(failover["sync_interval"], 5, 86400) is None:
        errors.append("%s: failover.sync_interval %r must be whole seconds from 5 to 86400"
                      % (where, failover["sync_interval"]))
    if _int_in(server.get("replicas", 1), 1, 64) != 1:
        errors.append("%s: replicas must be 1 with failover (one active container at a time)" % where)
    if server.get("hosts") is not None:
        errors.append("%s: hosts and failover exclude each other (failover places the server)" % where)
    if server.get("transport", DEFAULTS["transport"]) == "sse":
        errors.append("%s: failover needs an HTTP transport (streamable-http or stdio), not sse" % where)


def _check_placement(where, server, docker_hosts, errors):
    known = set(docker_hosts or [])
    named = []
    if isinstance(server.get("hosts"), list):
        named += [("hosts", h) for h in server["hosts"] if isinstance(h, str)]
    if isinstance(server.get("failover"), dict):
        named += [("failover." + k, server["failover"][k]) for k in ("primary", "standby")
                  if isinstance(server["failover"].get(k), str) and server["failover"][k]]
    for field, host in named:
        if host not in known:
            errors.append("%s: %s names %r, which is not a Docker host (the docker_hosts group)" % (where, field, host))


def validate(servers, docker_hosts=None):
    """Every problem in the declared servers, as messages naming server and field.

    With ``docker_hosts`` (the inventory's Docker hosts), the hosts a server
    names (``hosts``, ``failover.primary`` and ``failover.standby``) must be
    among them.
    """
    if servers is None:
        return []
    if not isinstance(servers, list):
        return ["mcp servers must be a list, not %s" % type(servers).__name__]
    errors = []
    seen = {}
    for index, server in enumerate(servers):
        where = _label(server, index)
        if not isinstance(server, dict):
            errors.append("%s: each server must be a mapping" % where)
            continue
        name = server.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            errors.append("%s: name %r must be 1-40 lower-case letters, digits and '-'" % (where, name))
        elif name in seen:
            errors.append("%s: name is declared twice (entries %d and %d)" % (where, seen[name] + 1, index + 1))
        else:
            seen[name] = index
        _check_one(where, server, errors)
        if docker_hosts is not None:
            _check_placement(where, server, docker_hosts, errors)
    if not errors:
        errors.extend(_port_conflicts(servers))
    return errors


def _port_conflicts(servers):
    errors = []
    claimed = []  # (first, last, hosts or None, name)
    for server in servers:
        first = int(server["host_port"])
        last = first + int(server.get("replicas", 1)) - 1
        hosts = set(server["hosts"]) if server.get("hosts") is not None else None
        if server.get("failover"):
            hosts = {server["failover"]["primary"], server["failover"]["standby"]}
        for other_first, other_last, other_hosts, other_name in claimed:
            shared = hosts is None or other_hosts is None or hosts & other_hosts
            if shared and first <= other_last and other_first <= last:
                errors.append(
                    "mcp server %r: host_port %d-%d overlaps mcp server %r (%d-%d) on the same host"
                    % (server["name"], first, last, other_name, other_first, other_last)
                )
        claimed.append((first, last, hosts, server["name"]))
    return errors


def _merge(defaults, server):
    out = dict(defaults)
    for key, value in server.items():
        if isinstance(value, dict) and isinstance(defaults.get(key), dict):
            merged = dict(defaults[key])
            merged.update(value)
            out[key] = merged
        else:
            out[key] = value
    return out


def normalize(servers, host=None, address=None):
    """Declared servers with every default filled in and their containers listed.

    With ``host``, only the servers that run on that inventory host. With
    ``address`` (that host's fleet address), an unset ``bind_address`` becomes
    it; it must then be an IP address. Raises ValueError with all problems
    when the declaration is invalid.
    """
    errors = validate(servers)
    if errors:
        raise ValueError("; ".join(errors))
    out = []
    for server in servers or []:
        full = _merge(DEFAULTS, server)
        if full["failover"]:
            full["failover"] = {"primary": full["failover"]["primary"], "standby": full["failover"]["standby"],
                                "sync_interval": int(full["failover"].get("sync_interval", 60))}
            full["hosts"] = [full["failover"]["primary"], full["failover"]["standby"]]
        if host is not None and full["hosts"] is not None and host not in full["hosts"]:
            continue
        if full["bind_address"] is None and address is not None:
            if bind_address_error(str(address)):
                raise ValueError("mcp server %r: bind_address is unset and the host's fleet address %r is not an IP "
                                 "address; set fleetops_address for the host (or bind_address)" % (full["name"], address))
            full["bind_address"] = str(address)
        full["port"] = int(full["port"])
        full["host_port"] = int(full["host_port"])
        full["replicas"] = int(full["replicas"])
        full["stop_grace_period"] = int(full["stop_grace_period"])
        full["max_sessions"] = int(full["max_sessions"])
        full["env"] = dict((str(k), str(v)) for k, v in full["env"].items())
        full["labels"] = dict((str(k), str(v)) for k, v in full["labels"].items())
        full["allowed_origins"] = sorted({normalize_origin(o) for o in full["allowed_origins"]})
        if full.get("path") is None:
            full["path"] = "/sse" if full["transport"] == "sse" else "/mcp"
        if full.get("metrics_path") is None:
            full["metrics_path"] = "" if full["transport"] == "stdio" else "/metrics"
        full["containers"] = [
            {"name": "mcp-%s-%d" % (full["name"], i + 1), "replica": i + 1, "host_port": full["host_port"] + i}
            for i in range(full["replicas"])
        ]
        out.append(full)
    return out


def host_ports(servers, host=None):
    """Sorted published host ports of the servers that run on ``host``."""
    return sorted({c["host_port"] for s in normalize(servers, host) for c in s["containers"]})


def _var_name(name):
    """A server name as an nginx variable / upstream name fragment."""
    return re.sub(r"[^a-z0-9_]", "_", name)


def backend_tag(address, port):
    """Deterministic short tag for a backend, the same on every load balancer.

    Derived from ``address:port`` alone, so adding or removing other
    backends never changes the tag (and so the routing) of existing sessions.
    """
    import hashlib

    return "b" + hashlib.sha1(("%s:%d" % (address, int(port))).encode("ascii")).hexdigest()[:10]


def backend_addresses(backends):
    """``{host: address}`` of a ``[{host, address}]`` list; ValueError when it is not one."""
    if not isinstance(backends, list) or not all(isinstance(b, dict) and b.get("host") and b.get("address") for b in backends):
        raise ValueError("backends must be a list of {host, address} mappings")
    return {b["host"]: b["address"] for b in backends}


def lb_routes(servers, backends):
    """What the load balancers route: one entry per HTTP-reachable MCP server.

    ``backends`` is a list of ``{"host": inventory name, "address": IP or
    name}`` for the Docker hosts. Each route lists every replica on every
    host that runs the server, with its tag and its own upstream name (for
    session pinning; a failover server's members name the pool, which
    lists the active host only), plus the pool upstream for new sessions
    and stateless servers.
    """
    backend_addresses(backends)
    routes = []
    for server in normalize(servers):
        upstream = "mcp_" + _var_name(server["name"])
        members = []
        for backend in backends:
            if server["hosts"] is not None and backend["host"] not in server["hosts"]:
                continue
            for container in server["containers"]:
                tag = backend_tag(backend["address"], container["host_port"])
                members.append({
                    "host": backend["host"],
                    "address": backend["address"],
                    "port": container["host_port"],
                    "container": container["name"],
                    "tag": tag,
                    # A failover server's session is pinned to the pool, which holds the active host only: a
                    # session opened on the old active gets 404 from the new one (and none reaches a fenced
                    # or unrouted host), never the old active behind the failover's back.
                    "upstream": upstream if server["failover"] else "%s_%s" % (upstream, tag),
                })
        if not members:
            raise ValueError("mcp server %r: no Docker host in the backends runs it" % server["name"])
        if server["failover"]:
            missing = [h for h in server["hosts"] if h not in {m["host"] for m in members}]
            if missing:
                raise ValueError("mcp server %r: failover host %s is not a Docker host in the backends"
                                 % (server["name"], ", ".join(missing)))
        tags = [m["tag"] for m in members]
        if len(set(tags)) != len(tags):
            raise ValueError("mcp server %r: two backends share an address and port" % server["name"])
        routes.append({
            "name": server["name"],
            "var": _var_name(server["name"]),
            "public_path": "/mcp/" + server["name"],
            "backend_path": server["path"],
            "stateless": server["stateless"],
            "transport": server["transport"],
            "upstream": upstream,
            "members": members,
            "failover": server["failover"],
            "allowed_origins": server["allowed_origins"],
            "oauth": server["oauth"],
        })
    return routes


def gateway_routes(servers, backends):
    """The routes the load balancers serve: every server but the legacy ``sse`` ones, which they do not proxy."""
    return [route for route in lb_routes(servers, backends) if route["transport"] != "sse"]


def probe_targets(servers, backends, base_url):
    """What the MCP probes request: ``{server, url}`` for each route the gateway serves, at ``base_url``."""
    base = str(base_url or "").rstrip("/")
    return [{"server": route["name"], "url": base + route["public_path"]} for route in gateway_routes(servers, backends)]


def scrape_targets(servers, backends):
    """Prometheus targets for the MCP servers' own metrics endpoints.

    One entry per replica on every Docker host in ``backends`` that runs a
    server with a metrics path (stdio servers have none unless declared):
    ``{server, host, container, replica, target, metrics_path}``.
    """
    targets = []
    for route in lb_routes(servers, backends):
        server = next(s for s in normalize(servers) if s["name"] == route["name"])
        if not server["metrics_path"]:
            continue
        for member in route["members"]:
            replica = next(c["replica"] for c in server["containers"] if c["name"] == member["container"])
            targets.append({
                "server": server["name"],
                "host": member["host"],
                "container": member["container"],
                "replica": replica,
                "target": "%s:%d" % (member["address"], member["port"]),
                "metrics_path": server["metrics_path"],
            })
    return targets
