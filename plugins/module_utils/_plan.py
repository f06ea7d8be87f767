# Copyright: fleetops.mcp contributors
# Apache License 2.0 (see LICENSE)
# SPDX-License-Identifier: Apache-2.0
"""The fleet plan: the one place the inventory's groups and shared settings are read.

The fleet_plan role compiles it on every host (as a dependency of the roles
that need it) and sets it as the fact ``fleetops_plan``. The other roles read
their slice of it instead of each other's variables, paths and group names:

- ``groups``: the inventory group of each kind of host (``docker_hosts``,
  ``load_balancers``, ``monitors``, ``backup_hosts``, ``vault_servers``);
- ``kinds`` and ``members``: the kinds this host is, and the hosts of each;
- ``textfile_dir``: node_exporter's textfile collector directory, which the
  roles that publish metrics write to and monitoring_agent reads;
- ``status``: where nginx serves its local health and status pages
  (``listen``, and ``url`` for the checks that read them);
- ``secrets_dir``: where the MCP servers' secret files are on the Docker
  hosts (``<dir>/<server>/<secret>``): vault_secrets writes them, mcp_server
  mounts them;
- ``failover_dir``: the load balancers' failover include directory:
  nginx_lb writes its ``routes.json`` and includes ``<server>.conf`` from it,
  the failover agent (mcp_failover) writes each ``<server>.conf``;
- ``vip``: the load balancers' virtual IP without its prefix length (from
  their ``keepalived_virtual_ipaddress``), or empty;
- ``prometheus``: this host's Prometheus as the backup role reaches it:
  ``snapshot``, whether its admin API allows TSDB snapshots (a monitor with
  ``monitoring_prometheus_admin_api``), ``listen_address`` and ``port``
  (``monitoring_prometheus_listen_address``, empty for the host's fleet
  address, and ``monitoring_prometheus_port``: the roles make them a URL with
  the ``fleet_prometheus_url`` filter, since the fleet address may come from
  facts gathered after the plan), ``scrape_interval`` (``monitoring_scrape_interval``), ``data_dir``, where
  its TSDB is (``monitoring_prometheus_data_dir``), and ``auth_file``, where
  the monitoring role keeps its basic auth credentials for root's consumers;
- ``failover_controllers``: the hosts that run the failover daemon (failover_controllers())
  (``mcp_failover_controller``, else the first monitor);
- ``firewall``: what this host listens on and who may connect, for the
  firewall role: a list of ``{name, proto, ports, from}``, ``from`` being
  tokens (kinds, ``fleet``, ``failover_controllers``, ``operators``,
  ``ssh_sources``, ``any``) that the role resolves to addresses. ``ssh: true``
  stands for the firewall's SSH port, ``mcp: true`` for the host ports of
  the MCP servers the host publishes (the fleet model's); the ports of the
  other services are the owning roles' (``PORT_DEFAULTS`` where the
  inventory does not set them).
"""

from __future__ import annotations

import ipaddress
import re

# The kinds of hosts a fleet has, each an inventory group (renamable).
KINDS = ("docker_hosts", "load_balancers", "monitors", "backup_hosts", "vault_servers")
# What each kind of host carries that its roles configure, for the backup
# role: (item name, paths, what a restore of them reloads or restarts). The
# paths of the collection's roles and of the daemons they configure.
CONFIG_BY_KIND = {
    # /etc/fleetops/mcp-servers.json: the record of the MCP servers the host runs (mcp_server role).
    "docker_hosts": ("docker-host-config", ["/etc/docker/daemon.json", "/etc/nftables.d", "/etc/fleetops/mcp-servers.json"],
                     {"reload": ["docker"], "restart": ["nftables"]}),
    "load_balancers": ("load-balancer-config", ["/etc/nginx", "/etc/keepalived"],
                       {"reload": ["nginx", "keepalived"]}),
    "monitors": ("monitoring-config", ["/etc/prometheus"],
                 {"reload": ["prometheus", "prometheus-alertmanager", "prometheus-blackbox-exporter"]}),
}
# Where the MCP servers' secret files are unless fleet_plan_secrets_dir says otherwise.
SECRETS_DIR = "/etc/fleetops/secrets"
# The load balancers' failover include directory unless fleet_plan_failover_dir says otherwise.
FAILOVER_DIR = "/etc/nginx/fleetops-failover"
GROUP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LISTEN = re.compile(r"^(?P<host>[0-9]{1,3}(\.[0-9]{1,3}){3}|\[[0-9a-fA-F:]+\]|localhost):(?P<port>[0-9]{1,5})$")


def errors(groups, textfile_dir, status_listen, secrets_dir=SECRETS_DIR, failover_dir=FAILOVER_DIR):
    """Problems in the plan's settings, each naming its variable."""
    out = []
    if not isinstance(groups, dict):
        return ["fleet_plan_groups must be a mapping of host kinds to inventory group names"]
    unknown = sorted(set(groups) - set(KINDS))
    if unknown:
        out.append("fleet_plan_groups has unknown kinds %s; the kinds are %s"
                   % (", ".join(map(str, unknown)), ", ".join(KINDS)))
    for kind in KINDS:
        name = groups.get(kind)
        if not isinstance(name, str) or not GROUP_NAME.match(name):
            out.append("fleet_plan_groups.%s must be an inventory group name (letters, digits, _); got %r"
                       % (kind, name))
    names = [groups.get(kind) for kind in KINDS if isinstance(groups.get(kind), str)]
    shared = sorted({n for n in names if names.count(n) > 1})
    if shared:
        out.append("fleet_plan_groups gives two kinds the same group: %s" % ", ".join(shared))
    if not isinstance(textfile_dir, str) or not textfile_dir.startswith("/") or textfile_dir.rstrip("/") == "":
        out.append("fleet_plan_textfile_dir must be an absolute directory path; got %r" % (textfile_dir,))
    if not isinstance(secrets_dir, str) or not re.match(r"^/[^ ]*[^/ ]$", secrets_dir):
        out.append("fleet_plan_secrets_dir must be an absolute directory path without spaces or a trailing /; got %r"
                   % (secrets_dir,))
    if not isinstance(failover_dir, str) or not re.match(r"^/[^ ]*[^/ ]$", failover_dir):
        out.append("fleet_plan_failover_dir must be an absolute directory path without spaces or a trailing /; got %r"
                   % (failover_dir,))
    match = LISTEN.match(status_listen) if isinstance(status_listen, str) else None
    if not match or not 1 <= int(match.group("port")) <= 65535:
        out.append("fleet_plan_status_listen must be address:port with a port 1-65535 "
                   "(for example 127.0.0.1:8081); got %r" % (status_listen,))
    return out


def address(hostvars, host):
    """A host's address: ``fleetops_address``, else its default IPv4 (facts), else ``ansible_host``, else its name.

    Not a slice of the plan: facts may be gathered after the plan is compiled (a run with --limit learns a
    host's address in the middle of a play), so the roles resolve addresses when they use them, with the
    fleet_address filter.
    """
    hv = hostvars.get(host) or {}
    facts = hv.get("ansible_facts") or {}
    return str(hv.get("fleetops_address") or (facts.get("default_ipv4") or {}).get("address")
               or hv.get("ansible_host") or host)


def _truthy(value):
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


# Where a monitor keeps its Prometheus web user's credentials (user:password, root only) when Prometheus has
# basic auth: the monitoring role writes it, the backup role's TSDB snapshot reads it.
PROMETHEUS_AUTH_FILE = "/etc/prometheus/web-client.auth"


def local_address(address):
    """Where this host reaches a service of its own listening on ``address`` (any address: loopback).

    The one rule: the plan uses it for this host's Prometheus, the monitoring role (filter
    ``fleet_local_address``) for its own checks of Prometheus and Alertmanager. Resolve an empty listen
    address (the host's fleet address) with ``listen_address`` first.
    """
    address = str(address or "").strip()
    return "127.0.0.1" if address in ("", "0.0.0.0", "::", "[::]") else address


WILDCARDS = ("0.0.0.0", "::", "[::]")


def listen_address(value, fleet_address):
    """The address a web UI or API listens on: ``value``, or, when empty, the host's ``fleet_address``.

    The fleet address is the one the firewall admits the service's clients to (``address``); 0.0.0.0 (or
    ``::``) when set is the documented opt-out: every address, the host's own consumers on loopback.
    """
    value = str(value if value is not None else "").strip()
    return value or str(fleet_address or "").strip()


def endpoint(address, port):
    """``address:port``, an IPv6 address in brackets (the form of Prometheus' flags and targets)."""
    address = str(address).strip()
    if ":" in address and not address.startswith("["):
        address = "[%s]" % address
    return "%s:%s" % (address, port)


def _ip(value):
    try:
        return ipaddress.ip_address(str(value).strip().strip("[]"))
    except ValueError:
        return None


def listen_errors(listens, fleet_address, host_addresses=None):
    """Why services cannot listen where ``listens`` (``[{name, value}]``: variable, its value) say, or ``[]``.

    An empty value stands for the host's ``fleet_address`` (``fleetops_address``, else the default IPv4),
    which must then be an IP address of the host itself (``host_addresses``: the facts' all_ipv4_addresses
    and all_ipv6_addresses; None: not known, not checked): a NAT address is where clients reach the host,
    not one it can bind. An explicit value must be an IP address too; any address and loopback always bind.
    """
    out = []
    own = None if host_addresses is None else {_ip(a) for a in host_addresses} - {None}
    for item in listens or []:
        name, value = item["name"], str(item.get("value") if item.get("value") is not None else "").strip()
        address = listen_address(value, fleet_address)
        ip = _ip(address)
        if ip is None:
            out.append(("%s is empty, for the host's fleet address, but that is %r, not an IP address; set "
                        "fleetops_address for the host (or %s)" % (name, address, name)) if not value else
                       ("%s must be an IP address (0.0.0.0 or :: for every address); got %r" % (name, value)))
        elif own is not None and not (ip.is_unspecified or ip.is_loopback or ip in own):
            out.append(("%s is empty, for the host's fleet address, but %s (fleetops_address, else the default "
                        "IPv4) is not an address of this host (NAT?); set fleetops_address to one of its "
                        "addresses, or set %s" % (name, address, name)) if not value else
                       ("%s %s is not an address of this host; its addresses are %s"
                        % (name, address, ", ".join(sorted(str(a) for a in own)) or "none")))
    return out


def prometheus_url(plan, hostvars):
    """The URL this host reaches its own Prometheus at, from the plan's ``prometheus`` slice."""
    listen = listen_address(plan["prometheus"]["listen_address"], address(hostvars, plan["host"]))
    return "http://%s" % endpoint(local_address(listen), plan["prometheus"]["port"])


# What the plan takes for a monitor's Prometheus settings the inventory does not set: the monitoring
# role's defaults (roles/monitoring/defaults/main.yml; a unit test keeps the two equal).
MONITORING_DEFAULTS = {
    "monitoring_prometheus_listen_address": "",
    "monitoring_prometheus_port": 9090,
    "monitoring_prometheus_admin_api": False,
    "monitoring_scrape_interval": "15s",
    "monitoring_prometheus_data_dir": "/var/lib/prometheus/metrics2",
}


def _monitoring(hostvars_of_host, name):
    return hostvars_of_host.get(name, MONITORING_DEFAULTS[name])


# The ports (and switches) the plan takes for the services other roles run, where the inventory does not
# set them: those roles' defaults (a unit test keeps them equal).
PORT_DEFAULTS = {
    "monitoring_agent_node_exporter_port": 9100,
    "monitoring_agent_nginx_exporter_port": 9113,
    "monitoring_agent_gateway_metrics_port": 3903,
    "nginx_lb_listen_port": 80,
    "nginx_lb_tls_port": 443,
    "monitoring_prometheus_port": 9090,
    "monitoring_alertmanager_port": 9093,
    "monitoring_blackbox_port": 9115,
    "grafana_install": True,
    "grafana_http_port": 3000,
    "vault_server_port": 8200,
    "vault_server_cluster_port": 8201,
}


def _port(hostvars_of_host, name):
    return int(hostvars_of_host.get(name, PORT_DEFAULTS[name]))


def firewall_services(kinds, own):
    """What a host of ``kinds`` listens on (``own``: its hostvars) and who may connect (see the module doc)."""
    out = [{"name": "node-exporter", "proto": "tcp", "ports": [_port(own, "monitoring_agent_node_exporter_port")],
            "from": ["monitors"]}]
    # SSH: the operators, and the fleet's own SSH traffic: backup copies to
    # the backup hosts, replication between Docker hosts, the failover
    # daemon's agents on the Docker hosts and load balancers.
    ssh = ["ssh_sources"]
    if "backup_hosts" in kinds:
        ssh += ["fleet"]
    if "docker_hosts" in kinds:
        ssh += ["docker_hosts", "failover_controllers"]
    if "load_balancers" in kinds:
        ssh += ["failover_controllers"]
    out.append({"name": "ssh", "proto": "tcp", "ssh": True, "from": list(dict.fromkeys(ssh))})
    if "docker_hosts" in kinds:
        out.append({"name": "mcp-servers", "proto": "tcp", "mcp": True,
                    "from": ["load_balancers", "monitors", "failover_controllers"]})
    if "load_balancers" in kinds:
        out += [{"name": "mcp-gateway", "proto": "tcp", "from": ["any"],
                 "ports": sorted({_port(own, "nginx_lb_tls_port"), _port(own, "nginx_lb_listen_port")})},
                {"name": "nginx-exporter", "proto": "tcp", "from": ["monitors"],
                 "ports": [_port(own, "monitoring_agent_nginx_exporter_port")]},
                {"name": "gateway-metrics", "proto": "tcp", "from": ["monitors"],
                 "ports": [_port(own, "monitoring_agent_gateway_metrics_port")]},
                {"name": "vrrp", "proto": "vrrp", "ports": [], "from": ["load_balancers"]}]
    if "monitors" in kinds:
        out += [{"name": name, "proto": "tcp", "ports": [_port(own, var)], "from": ["monitors", "operators"]}
                for name, var in (("prometheus", "monitoring_prometheus_port"),
                                  ("alertmanager", "monitoring_alertmanager_port"),
                                  ("blackbox-exporter", "monitoring_blackbox_port"))]
        if _truthy(own.get("grafana_install", PORT_DEFAULTS["grafana_install"])):
            out.append({"name": "grafana", "proto": "tcp", "ports": [_port(own, "grafana_http_port")],
                        "from": ["monitors", "operators"]})
    if "vault_servers" in kinds:
        out += [{"name": "vault", "proto": "tcp", "ports": [_port(own, "vault_server_port")],
                 "from": ["fleet", "operators"]},
                {"name": "vault-cluster", "proto": "tcp", "ports": [_port(own, "vault_server_cluster_port")],
                 "from": ["vault_servers"]}]
    return out


def failover_controllers(own, members, vips):
    """The hosts that run the failover daemon: ``mcp_failover_controllers`` (a list), else
    ``mcp_failover_controller`` (one host), else the load balancers when two or more share a keepalived
    virtual IP (the holder of the VIP acts, the others stand by), else the first monitor host."""
    listed = own.get("mcp_failover_controllers")
    if isinstance(listed, (list, tuple)) and listed:
        return [str(h).strip() for h in listed]
    single = str(own.get("mcp_failover_controller") or "").strip()
    if single:
        return [single]
    if vips and len(members["load_balancers"]) >= 2:
        return list(members["load_balancers"])
    return members["monitors"][:1]


def compile_plan(host, inventory_groups, hostvars, groups, textfile_dir, status_listen,
                 secrets_dir=SECRETS_DIR, failover_dir=FAILOVER_DIR):
    """The plan of ``host``, from the inventory (``groups``, ``hostvars``) and the plan's settings."""
    problems = errors(groups, textfile_dir, status_listen, secrets_dir, failover_dir)
    if problems:
        raise ValueError("; ".join(problems))
    inventory_groups = inventory_groups or {}
    members = {kind: sorted(inventory_groups.get(groups[kind]) or []) for kind in KINDS}
    vips = []
    for lb in members["load_balancers"]:
        vip = str((hostvars.get(lb) or {}).get("keepalived_virtual_ipaddress") or "").split("/", maxsplit=1)[0].strip()
        if vip and vip not in vips:
            vips.append(vip)
    if len(vips) > 1:
        raise ValueError("the load balancers of group %s name different virtual IPs (keepalived_virtual_ipaddress): %s"
                         % (groups["load_balancers"], ", ".join(vips)))
    kinds = [kind for kind in KINDS if host in members[kind]]
    own = hostvars.get(host) or {}
    # Failover controllers only where some server fails over; mcp_failover_controller(s) must be visible to
    # every host (group_vars/all), since each host's firewall admits them.
    fails_over = any(isinstance(s, dict) and s.get("failover") for s in own.get("fleetops_mcp_servers") or [])
    controllers = failover_controllers(own, members, vips) if fails_over else []
    return {
        "host": host,
        "groups": {kind: groups[kind] for kind in KINDS},
        "kinds": kinds,
        "members": members,
        "textfile_dir": textfile_dir.rstrip("/"),
        "status": {"listen": status_listen, "url": "http://%s" % status_listen},
        "secrets_dir": secrets_dir,
        "failover_dir": failover_dir,
        "vip": vips[0] if vips else "",
        "prometheus": {
            "snapshot": "monitors" in kinds and _truthy(_monitoring(own, "monitoring_prometheus_admin_api")),
            "listen_address": str(_monitoring(own, "monitoring_prometheus_listen_address") or "").strip(),
            "port": _monitoring(own, "monitoring_prometheus_port"),
            "scrape_interval": str(_monitoring(own, "monitoring_scrape_interval")),
            "data_dir": str(_monitoring(own, "monitoring_prometheus_data_dir")),
            "auth_file": PROMETHEUS_AUTH_FILE,
        },
        "failover_controllers": controllers,
        "firewall": firewall_services(kinds, own) if kinds else [],
    }
