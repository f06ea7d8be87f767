# Copyright: fleetops.mcp contributors
# Apache License 2.0 (see LICENSE)
# SPDX-License-Identifier: Apache-2.0
"""Active/passive failover: what each host of a failover pair, each load
balancer and the failover controller is told, derived from the fleet.

The same route text is written by the nginx_lb role (from the recorded active)
and by fleetops-failover's agent (on a switch), so a playbook run after a
failover changes nothing.
"""

from __future__ import annotations

from ansible_collections.fleetops.mcp.plugins.module_utils import _fleet
from ansible_collections.fleetops.mcp.plugins.module_utils._backup import _safe, volume_path
from ansible_collections.fleetops.mcp.plugins.module_utils._plan import local_address

REPLICA_DIR = "/var/lib/fleetops/failover/replica"
RRSYNC = "/usr/bin/rrsync"


def failover_servers(servers):
    return [s for s in _fleet.normalize(servers) if s["failover"]]


def route_files(servers, backends, max_fails=1, fail_timeout=10):
    """``{server: {host: include file text}}``: the pool upstream's member when ``host`` is active."""
    out = {}
    for route in _fleet.lb_routes(servers, backends):
        if not route["failover"]:
            continue
        texts = {}
        for member in route["members"]:
            texts[member["host"]] = (
                "# fleetops.mcp failover: %s is served by %s (rewritten by fleetops-failover on a switch)\n"
                "server %s:%d max_fails=%d fail_timeout=%ds;  # %s %s\n"
                % (route["name"], member["host"], member["address"], member["port"], int(max_fails),
                   int(fail_timeout), member["host"], member["container"]))
        out[route["name"]] = texts
    return out


def _newest_records(states):
    """``{server: record}`` from one controller's state or a list of them (two controllers): per server,
    the record with the highest generation (then claim); a controller that stood by holds an older one."""
    if isinstance(states, dict) or states is None:
        states = [states]
    out = {}
    for state in states:
        if not isinstance(state, dict) or not isinstance(state.get("servers"), dict):
            continue
        for name, record in state["servers"].items():
            if not isinstance(record, dict):
                continue
            rank = (int(record.get("generation") or 0), int(record.get("claimed") or 0))
            if name not in out or rank > out[name][0]:
                out[name] = (rank, record)
    return {name: ranked[1] for name, ranked in out.items()}


def active_hosts(servers, state=None):
    """``{server: active host}``: the recorded active when it is one of the pair, else the primary.
    ``state``: a controller's recorded state, or a list of them (the newest record of a server counts)."""
    recorded = _newest_records(state)
    out = {}
    for server in failover_servers(servers):
        pair = server["hosts"]  # [primary, standby]
        active = (recorded.get(server["name"]) or {}).get("active")
        standby = (recorded.get(server["name"]) or {}).get("standby")
        out[server["name"]] = active if sorted([active or "", standby or ""]) == sorted(pair) else pair[0]
    return out


def _volumes(server, data_root=None):
    out = []
    for volume in server["volumes"]:
        if not volume.get("writable"):
            continue
        out.append({
            "source": volume_path(volume["source"], data_root),
            "replica": "%s/%s" % (server["name"], _safe(volume["source"])),
        })
    return out


def _probe_host(server, own_address):
    """Where a host reaches its own replica: the published address (``bind_address``, else the host's
    fleet address), loopback when published on every address; IPv6 in brackets."""
    address = local_address(server["bind_address"] if server["bind_address"] is not None else own_address)
    return "[%s]" % address if ":" in address else address


def agent_config(servers, host, backends, ready_timeout=60, pause=True, ssh=None, metrics_dir="",
                 docker_data_root=None, session_open_timeout=10):
    """The agent's configuration on one Docker host: the failover servers it holds
    (named volumes under ``docker_data_root``, the host daemon's data root); a promoted server's
    first MCP session may take ``session_open_timeout`` seconds to open."""
    addresses = _fleet.backend_addresses(backends)
    out = {}
    for server in failover_servers(servers):
        pair = server["hosts"]  # [primary, standby]
        if host not in pair:
            continue
        peer = pair[1] if host == pair[0] else pair[0]
        for pair_host in (peer, host):
            if pair_host not in addresses:
                raise ValueError("mcp server %r: failover host %s has no address" % (server["name"], pair_host))
        container = server["containers"][0]
        out[server["name"]] = {
            "container": container["name"],
            "stop_timeout": server["stop_grace_period"],
            "ready_timeout": int(ready_timeout),
            "session_open_timeout": int(session_open_timeout),
            "probe_url": "http://%s:%d%s" % (_probe_host(server, addresses[host]), container["host_port"],
                                             server["path"]),
            "peer": addresses[peer],
            "peer_host": peer,
            "sync_interval": server["failover"]["sync_interval"],
            "pause": bool(pause),
            "volumes": _volumes(server, docker_data_root),
        }
        if (ssh or {}).get("key"):
            # One replication key per server: the peer's forced command for it is confined to
            # that server's replica root (replica/<server>).
            if ssh.get("restrict_from", True) and host not in addresses:
                raise ValueError("mcp server %r: failover host %s has no address" % (server["name"], host))
            out[server["name"]]["sync_key"] = "%s_%s" % (ssh["key"], server["name"])
            out[server["name"]]["sync_key_options"] = sync_key_options(
                server["name"], addresses[host] if ssh.get("restrict_from", True) else None)
    return {"servers": out, "replica_dir": REPLICA_DIR, "ssh": dict(ssh or {}), "metrics_dir": metrics_dir}


def sync_key_options(name, from_address=None):
    """The authorized_keys options of server ``name``'s replication key on the receiving peer.

    rrsync confines the key to that server's own replica root: write only (-wo), symlinks stored
    munged so they never work on the receiving host (-munge); ``restrict`` (no shell, no
    forwarding, no pty) and, with ``from_address``, only from the pushing host. Not -no-del: a
    replica has to lose the files the active deleted (docs/design/failover.md, "Replication").
    """
    options = 'command="%s -wo -munge %s/%s",restrict' % (RRSYNC, REPLICA_DIR, name)
    if from_address:
        options += ',from="%s"' % from_address
    return options


def daemon_config(servers, backends, load_balancers, options):
    """The controller's configuration: probe URLs, SSH addresses of every agent, timing (``options`` may
    name the ``controller`` and, with two controllers, the ``acting_vip`` whose holder acts)."""
    docker = _fleet.backend_addresses(backends)
    lbs = _fleet.backend_addresses(load_balancers)
    listed = []
    for server in failover_servers(servers):
        pair = server["hosts"]  # [primary, standby]
        missing = [h for h in pair if h not in docker]
        if missing:
            raise ValueError("mcp server %r: failover host %s is not a Docker host" % (server["name"], ", ".join(missing)))
        container = server["containers"][0]
        listed.append({
            "name": server["name"],
            "primary": pair[0],
            "standby": pair[1],
            "stop_timeout": server["stop_grace_period"],
            "ready_timeout": int(options.get("ready_timeout", 60)),
            "probe_urls": {h: "http://%s:%d%s" % (docker[h], container["host_port"], server["path"]) for h in pair},
        })
    hosts = dict(lbs)
    for server in listed:
        for h in (server["primary"], server["standby"]):
            hosts[h] = docker[h]
    config = dict(options)
    config.update({"servers": listed, "hosts": hosts, "load_balancers": sorted(lbs)})
    return config
