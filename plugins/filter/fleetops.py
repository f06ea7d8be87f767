# Copyright: fleetops.mcp contributors
# Apache License 2.0 (see LICENSE)
# SPDX-License-Identifier: Apache-2.0
"""Filters shared by the fleetops.mcp roles."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.fleetops.mcp.plugins.module_utils import (
    _backup, _failover, _firewall, _fleet, _lb_clients, _oauth, _plan,
)


def changed_keys(old, new):
    """Return the sorted top-level keys whose values differ between two dicts.

    A key present on one side only counts as changed. ``old`` may be None or
    empty (no previous configuration), in which case every key of ``new``
    is returned.
    """
    old = old or {}
    new = new or {}
    if not isinstance(old, dict) or not isinstance(new, dict):
        raise AnsibleFilterError(
            "changed_keys expects two dictionaries, got %s and %s"
            % (type(old).__name__, type(new).__name__)
        )
    keys = set(old) | set(new)
    return sorted(k for k in keys if k not in old or k not in new or old[k] != new[k])


def docker_ulimits(ulimits):
    """Turn ``{name: {soft: N, hard: N}}`` into daemon.json ``default-ulimits``.

    Docker expects ``{name: {"Name": name, "Soft": N, "Hard": N}}``.
    """
    if ulimits is None:
        return {}
    if not isinstance(ulimits, dict):
        raise AnsibleFilterError("docker_ulimits expects a dictionary of ulimits, got %s" % type(ulimits).__name__)
    out = {}
    for name, limit in ulimits.items():
        if not isinstance(limit, dict) or set(limit) != {"soft", "hard"}:
            raise AnsibleFilterError("ulimit %r must be a dictionary with exactly the keys soft and hard" % name)
        try:
            soft, hard = int(limit["soft"]), int(limit["hard"])
        except (TypeError, ValueError) as exc:
            raise AnsibleFilterError("ulimit %r: soft and hard must be whole numbers" % name) from exc
        out[name] = {"Name": name, "Soft": soft, "Hard": hard}
    return out


def docker_volume_spec(volume):
    """``{source, target, writable}`` -> ``source:target:ro`` (``:rw`` when writable)."""
    if not isinstance(volume, dict) or "source" not in volume or "target" not in volume:
        raise AnsibleFilterError("docker_volume_spec expects a mapping with source and target, got %r" % (volume,))
    return "%s:%s:%s" % (volume["source"], volume["target"], "rw" if volume.get("writable") else "ro")


def mcp_fleet_errors(servers, docker_hosts=None):
    """Problems in a declared MCP server list, each naming the server and field."""
    return _fleet.validate(servers, docker_hosts)


def mcp_fleet(servers, host=None, address=None):
    """The declared MCP servers with defaults filled in and containers listed."""
    try:
        return _fleet.normalize(servers, host, address)
    except ValueError as exc:
        raise AnsibleFilterError("invalid MCP server declaration: %s" % exc) from exc


def mcp_host_ports(servers, host=None):
    """Host ports the MCP server containers publish (on ``host``, or anywhere)."""
    try:
        return _fleet.host_ports(servers, host)
    except ValueError as exc:
        raise AnsibleFilterError("invalid MCP server declaration: %s" % exc) from exc


def mcp_lb_routes(servers, backends):
    """Load balancer routes for the declared MCP servers over the given Docker hosts."""
    try:
        return _fleet.lb_routes(servers, backends)
    except ValueError as exc:
        raise AnsibleFilterError("cannot route the MCP servers: %s" % exc) from exc


def mcp_gateway_routes(servers, backends):
    """The routes the load balancers serve (every server but legacy sse ones)."""
    try:
        return _fleet.gateway_routes(servers, backends)
    except ValueError as exc:
        raise AnsibleFilterError("cannot work out the load balancer routes: %s" % exc) from exc


def mcp_probe_targets(servers, backends, base_url):
    """``[{server, url}]``: the URL through the gateway of each server the MCP probes request."""
    try:
        return _fleet.probe_targets(servers, backends, base_url)
    except ValueError as exc:
        raise AnsibleFilterError("cannot work out the MCP probe targets: %s" % exc) from exc


def mcp_scrape_targets(servers, backends):
    """Prometheus targets for the MCP servers' /metrics, one per replica per Docker host."""
    try:
        return _fleet.scrape_targets(servers, backends)
    except ValueError as exc:
        raise AnsibleFilterError("cannot list the MCP servers' scrape targets: %s" % exc) from exc


def mcp_backup_items(servers, host, kinds, extra_paths=None, prometheus_url=None, prometheus_data_dir=None,
                     docker_data_root=None):
    """What ``host`` backs up: configuration by its kinds, its servers' writable volumes, a TSDB snapshot."""
    try:
        return _backup.items(servers, host, kinds, extra_paths, prometheus_url, prometheus_data_dir,
                             docker_data_root)
    except ValueError as exc:
        raise AnsibleFilterError("cannot list the backup items of %s: %s" % (host, exc)) from exc


def fleet_address(host, hostvars):
    """A host's address: ``fleetops_address``, else its default IPv4 address (facts), else ``ansible_host``, else its name."""
    return _plan.address(hostvars, host)


def mcp_lb_backends(hosts, hostvars):
    """``[{host, address}]`` for the Docker hosts the load balancers send to.

    The address is the host's ``fleetops_address`` when set, else its default
    IPv4 address (facts), else ``ansible_host``, else the inventory name.
    """
    return [{"host": host, "address": _plan.address(hostvars, host)} for host in hosts or []]


def _failover_call(what, function, *args):
    try:
        return function(*args)
    except ValueError as exc:
        raise AnsibleFilterError("cannot work out the failover %s: %s" % (what, exc)) from exc


def mcp_failover_active(servers, state=None):
    """``{server: active host}`` from the controller's recorded state (the primary when none)."""
    return _failover_call("active hosts", _failover.active_hosts, servers, state)


def mcp_failover_routes(servers, backends, max_fails=1, fail_timeout=10):
    """``{server: {host: nginx include text}}`` for the failover servers' pool upstreams."""
    return _failover_call("routes", _failover.route_files, servers, backends, max_fails, fail_timeout)


def mcp_failover_agent_config(servers, host, backends, ready_timeout=60, pause=True, ssh=None, metrics_dir="",
                              docker_data_root=None, session_open_timeout=10):
    """The failover agent's and replication's configuration on one Docker host."""
    return _failover_call("agent configuration", _failover.agent_config, servers, host, backends, ready_timeout,
                          pause, ssh, metrics_dir, docker_data_root, session_open_timeout)


def mcp_failover_daemon_config(servers, backends, load_balancers, options):
    """The failover daemon's configuration on the controller."""
    return _failover_call("daemon configuration", _failover.daemon_config, servers, backends, load_balancers, options)


def mcp_lb_client_errors(clients):
    """Problems in the load balancers' client list, each naming the client and field."""
    return _lb_clients.validate(clients)


def mcp_lb_clients(clients, rate_per_minute=50, burst=10, max_connections=20):
    """Clients with token hashes and limits filled in, grouped into nginx limit zones."""
    try:
        return _lb_clients.normalize(clients, rate_per_minute, burst, max_connections)
    except ValueError as exc:
        raise AnsibleFilterError("invalid load balancer clients: %s" % exc) from exc


def mcp_lb_affinity(routes, clients, key):
    """Client-bound session tags: which (client, tag) pairs pin which upstream, and the tag each answer gets."""
    try:
        return _lb_clients.affinity(routes, clients, key)
    except ValueError as exc:
        raise AnsibleFilterError("load balancer session affinity: %s" % exc) from exc


def mcp_lb_oauth_errors(routes, issuers, base_url, auth=True):
    """Problems in the OAuth resource-server settings (module_utils/_oauth.py), each naming its field."""
    return _oauth.errors(routes, issuers, base_url, auth)


def mcp_lb_oauth(routes, issuers, base_url, affinity_key, keys_dir, rate_per_minute=50, burst=10, max_connections=20):
    """What the load balancer's templates render for OAuth resource-server mode (module_utils/_oauth.py)."""
    problems = _oauth.errors(routes, issuers, base_url, True)
    if problems:
        raise AnsibleFilterError("load balancer OAuth settings: %s" % "; ".join(problems))
    defaults = {"rate_per_minute": int(rate_per_minute), "burst": int(burst), "max_connections": int(max_connections)}
    return _oauth.model(routes, issuers, base_url, affinity_key, keys_dir, defaults)


def fleet_plan(host, inventory_groups, hostvars, groups, textfile_dir, status_listen, secrets_dir=_plan.SECRETS_DIR,
               failover_dir=_plan.FAILOVER_DIR):
    """The fleet plan of one host (see module_utils/_plan.py): the slices the roles read."""
    try:
        return _plan.compile_plan(host, inventory_groups, hostvars, groups, textfile_dir, status_listen, secrets_dir,
                                  failover_dir)
    except ValueError as exc:
        raise AnsibleFilterError("cannot compile the fleet plan of %s: %s" % (host, exc)) from exc


def fleet_local_address(address):
    """Where a host reaches a service of its own listening on ``address`` (any address: 127.0.0.1)."""
    return _plan.local_address(address)


def fleet_listen_address(value, host, hostvars):
    """The address a service of ``host`` listens on: ``value``, or the host's fleet address when empty."""
    return _plan.listen_address(value, _plan.address(hostvars, host))


def fleet_endpoint(address, port):
    """``address:port``, an IPv6 address in brackets."""
    return _plan.endpoint(address, port)


def fleet_listen_errors(listens, host, hostvars):
    """Why the services of ``host`` cannot listen where ``listens`` (``[{name, value}]``) say (module_utils/_plan.py)."""
    facts = (hostvars.get(host) or {}).get("ansible_facts") or {}
    known = "all_ipv4_addresses" in facts or "all_ipv6_addresses" in facts
    addresses = list(facts.get("all_ipv4_addresses") or []) + list(facts.get("all_ipv6_addresses") or [])
    return _plan.listen_errors(listens, _plan.address(hostvars, host), addresses if known else None)


def fleet_prometheus_url(plan, hostvars):
    """Where the host of ``plan`` reaches its own Prometheus (the plan's ``prometheus`` slice)."""
    return _plan.prometheus_url(plan, hostvars)


def fleet_plan_errors(groups, textfile_dir, status_listen, secrets_dir=_plan.SECRETS_DIR, failover_dir=_plan.FAILOVER_DIR):
    """Problems in the fleet plan's settings, each naming its variable."""
    return _plan.errors(groups, textfile_dir, status_listen, secrets_dir, failover_dir)


def fleet_firewall_rules(plan, hostvars, operator_cidrs=None, ssh_sources=None, mcp_ports=None, ssh_port=22,
                         extra_rules=None):
    """The firewall rules of the host ``plan`` is of, sources resolved to networks (module_utils/_firewall.py)."""
    try:
        return _firewall.rules(plan, hostvars, operator_cidrs, ssh_sources, mcp_ports, ssh_port, extra_rules)
    except ValueError as exc:
        raise AnsibleFilterError("cannot work out the firewall rules of %s: %s" % (plan.get("host"), exc)) from exc


def fleet_firewall_lockout(rules, address, ssh_port):
    """Why ``rules`` would cut the controller's SSH session from ``address`` (empty when they would not)."""
    return _firewall.lockout(address, rules, ssh_port) or ""


def fleet_firewall_errors(operator_cidrs, ssh_sources, ssh_port, extra_rules, controller_address=""):
    """Problems in the firewall role's inputs, each naming its variable."""
    return _firewall.input_errors(operator_cidrs, ssh_sources, ssh_port, extra_rules, controller_address)


class FilterModule:
    """fleetops.mcp filters."""

    def filters(self):
        return {
            "changed_keys": changed_keys,
            "docker_ulimits": docker_ulimits,
            "docker_volume_spec": docker_volume_spec,
            "fleet_address": fleet_address,
            "fleet_firewall_errors": fleet_firewall_errors,
            "fleet_firewall_lockout": fleet_firewall_lockout,
            "fleet_firewall_rules": fleet_firewall_rules,
            "fleet_endpoint": fleet_endpoint,
            "fleet_listen_address": fleet_listen_address,
            "fleet_listen_errors": fleet_listen_errors,
            "fleet_local_address": fleet_local_address,
            "fleet_prometheus_url": fleet_prometheus_url,
            "fleet_plan": fleet_plan,
            "fleet_plan_errors": fleet_plan_errors,
            "mcp_fleet": mcp_fleet,
            "mcp_gateway_routes": mcp_gateway_routes,
            "mcp_probe_targets": mcp_probe_targets,
            "mcp_fleet_errors": mcp_fleet_errors,
            "mcp_host_ports": mcp_host_ports,
            "mcp_lb_affinity": mcp_lb_affinity,
            "mcp_lb_backends": mcp_lb_backends,
            "mcp_lb_client_errors": mcp_lb_client_errors,
            "mcp_lb_clients": mcp_lb_clients,
            "mcp_lb_oauth": mcp_lb_oauth,
            "mcp_lb_oauth_errors": mcp_lb_oauth_errors,
            "mcp_lb_routes": mcp_lb_routes,
            "mcp_scrape_targets": mcp_scrape_targets,
            "mcp_backup_items": mcp_backup_items,
            "mcp_failover_active": mcp_failover_active,
            "mcp_failover_agent_config": mcp_failover_agent_config,
            "mcp_failover_daemon_config": mcp_failover_daemon_config,
            "mcp_failover_routes": mcp_failover_routes,
        }
