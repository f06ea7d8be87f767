# Copyright: fleetops.mcp contributors
# Apache License 2.0 (see LICENSE)
# SPDX-License-Identifier: Apache-2.0
"""What a host backs up: the items of fleetops-backup's configuration.

Derived from the inventory so that a new MCP server's data volume is backed
up without anyone listing it: every writable volume of the servers that run
on the host (made consistent by the server's own dump command or by pausing
its containers), the collection's configuration for the host's roles, and a
Prometheus TSDB snapshot on monitor hosts.
"""

from __future__ import annotations


from ansible_collections.fleetops.mcp.plugins.module_utils import _fleet, _plan

# Docker's default data root; a host's own comes from its daemon (DockerRootDir).
DOCKER_DATA_ROOT = "/var/lib/docker"


def _safe(name):
    return _fleet.safe_name(name)


def volume_path(source, data_root=None):
    """Where a volume's data lives on the Docker host: a host path as is, a named
    volume under the daemon's data root (``data_root``, default /var/lib/docker)."""
    source = str(source)
    if source.startswith("/"):
        return source
    root = str(data_root or DOCKER_DATA_ROOT)
    if not root.startswith("/"):
        raise ValueError("the Docker data root must be an absolute path; got %r" % root)
    return "%s/volumes/%s/_data" % (root.rstrip("/") or "", source)


def volume_items(servers, host, data_root=None):
    """One item per writable volume of each server on ``host`` (Docker data root ``data_root``)."""
    items = []
    for server in _fleet.normalize(servers, host):
        containers = [c["name"] for c in server["containers"]]
        for volume in server["volumes"]:
            if not volume.get("writable"):
                continue
            source = str(volume["source"])
            path = volume_path(source, data_root)
            command = server.get("backup_command")
            hook = ({"commands": [["docker", "exec", containers[0]] + list(command)]} if command
                    else {"pause": containers})
            items.append({
                "name": "volume-%s-%s" % (server["name"], _safe(source)),
                "paths": [path],
                "hook": hook,
                "restart": {"containers": containers},
            })
    return items


def items(servers, host, kinds, extra_paths=None, prometheus_url=None, prometheus_data_dir=None,
          docker_data_root=None):
    """Every item ``host`` backs up, in a stable order; ``kinds`` are the plan's kinds of the host."""
    out = []
    # The configuration each kind of host carries, as the fleet plan's module lists it.
    for kind, (name, paths, services) in _plan.CONFIG_BY_KIND.items():
        if kind in kinds:
            out.append({"name": name, "paths": list(paths), "optional": True, "restart": dict(services)})
    if extra_paths:
        out.append({"name": "extra", "paths": list(extra_paths)})
    if "docker_hosts" in kinds:
        out += volume_items(servers, host, docker_data_root)
    if "monitors" in kinds and prometheus_url:
        out.append({"name": "prometheus-tsdb", "prometheus_snapshot": prometheus_url,
                    "prometheus_data_dir": prometheus_data_dir
                    or _plan.MONITORING_DEFAULTS["monitoring_prometheus_data_dir"],
                    "prometheus_auth_file": _plan.PROMETHEUS_AUTH_FILE,
                    "restart": {"stop": ["prometheus"]}})
    names = [i["name"] for i in out]
    if len(names) != len(set(names)):
        raise ValueError("two backup items share a name: %s" % ", ".join(sorted(n for n in names if names.count(n) > 1)))
    return out
