# Copyright: fleetops.mcp contributors
# Apache License 2.0 (see LICENSE)
# SPDX-License-Identifier: Apache-2.0
"""Who may reach what: the firewall rules of one host, from the fleet plan.

The plan says which services a host runs (``services``: a name, a protocol,
ports and the sources allowed, as tokens); :func:`rules` resolves the tokens
to addresses and CIDRs for the firewall role's nftables template:

- a kind (``docker_hosts``, ``load_balancers``, ``monitors``,
  ``backup_hosts``, ``vault_servers``): the addresses of its members;
- ``fleet``: every host of every kind;
- ``failover_controllers``: the hosts that run the failover daemon;
- ``operators``: the operator networks (``firewall_operator_cidrs``);
- ``ssh_sources``: the operator networks allowed to SSH (``firewall_ssh_sources``),
  anywhere when that list is empty;
- ``any``: anywhere.

Loopback is always admitted by the template, never by a rule.
"""

from __future__ import annotations

import ipaddress
import re

from ansible_collections.fleetops.mcp.plugins.module_utils import _plan

TOKENS = ("any", "operators", "ssh_sources", "fleet", "failover_controllers") + _plan.KINDS
PROTOCOLS = ("tcp", "udp", "vrrp")


def _network(text, where):
    try:
        return ipaddress.ip_network(str(text).strip(), strict=False)
    except ValueError:
        raise ValueError("%s must hold IPv4 or IPv6 addresses or CIDRs; got %r" % (where, text)) from None


def cidr_errors(name, value):
    """Problems in a list of CIDRs (``name`` is the variable), each naming it."""
    if not isinstance(value, list):
        return ["%s must be a list of IPv4 or IPv6 addresses or CIDRs; got %r" % (name, value)]
    out = []
    for item in value:
        try:
            _network(item, name)
        except ValueError as exc:
            out.append(str(exc))
    return out


def input_errors(operator_cidrs, ssh_sources, ssh_port, extra_rules, controller_address=""):
    """Problems in the firewall role's inputs, each naming its variable."""
    out = cidr_errors("firewall_operator_cidrs", operator_cidrs) + cidr_errors("firewall_ssh_sources", ssh_sources)
    if not _is_port(ssh_port):
        out.append("firewall_ssh_port must be a port number from 1 to 65535; got %r" % (ssh_port,))
    out += extra_errors(extra_rules)
    if controller_address:
        try:
            ipaddress.ip_address(str(controller_address).strip())
        except ValueError:
            out.append("firewall_controller_address must be an IP address; got %r" % (controller_address,))
    return out


def extra_errors(extra):
    """Problems in ``firewall_extra_rules``, each naming the entry and field."""
    if not isinstance(extra, list):
        return ["firewall_extra_rules must be a list of {name, proto, ports, sources}; got %r" % (extra,)]
    out = []
    for i, rule in enumerate(extra):
        where = "firewall_extra_rules[%d]" % i
        if not isinstance(rule, dict):
            out.append("%s must be a mapping {name, proto, ports, sources}; got %r" % (where, rule))
            continue
        unknown = sorted(set(rule) - {"name", "proto", "ports", "sources"})
        if unknown:
            out.append("%s has unknown keys %s" % (where, ", ".join(map(str, unknown))))
        name = rule.get("name")
        if not isinstance(name, str) or not re.match(r"^[a-z0-9][a-z0-9-]{0,40}$", name):
            out.append("%s.name must be lower-case letters, digits and - (at most 41); got %r" % (where, name))
        if rule.get("proto", "tcp") not in ("tcp", "udp"):
            out.append("%s.proto must be tcp or udp; got %r" % (where, rule.get("proto")))
        ports = rule.get("ports")
        if not isinstance(ports, list) or not ports or not all(_is_port(p) for p in ports):
            out.append("%s.ports must be a non-empty list of port numbers from 1 to 65535; got %r" % (where, ports))
        out += cidr_errors("%s.sources" % where, rule.get("sources", []))
    return out


def _is_port(value):
    if isinstance(value, bool):
        return False
    try:
        return 1 <= int(str(value)) <= 65535 and str(value).strip().isdigit()
    except ValueError:
        return False


def _address(hostvars, host):
    text = _plan.address(hostvars, host)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError("host %s has no IP address to admit (got %r): set its fleetops_address, or run without "
                         "--limit so that its facts are gathered" % (host, text)) from None


def _family(networks, version):
    """The networks of one IP version, deduplicated, in address order, as text."""
    return [str(n) for n in sorted({n for n in networks if n.version == version})]


def rules(plan, hostvars, operator_cidrs=None, ssh_sources=None, mcp_ports=None, ssh_port=22, extra_rules=None):
    """The rules of the host ``plan`` is of: ``[{name, proto, ports, forward, any, v4, v6, sources}]``.

    ``any`` is true where anyone may connect; else ``v4`` and ``v6`` hold the admitted networks (sorted,
    deduplicated) and ``sources`` the tokens they came from, for the rule's comment. ``forward`` rules are
    for ports that Docker publishes (they reach containers through the forward hook). ``mcp_ports`` are
    the host ports of the MCP servers this host publishes (the fleet model's); ``extra_rules`` the
    operator's own (``firewall_extra_rules``), after the plan's.
    """
    problems = extra_errors(extra_rules or [])
    if problems:
        raise ValueError("; ".join(problems))
    operator = [_network(c, "firewall_operator_cidrs") for c in (operator_cidrs or [])]
    ssh = [_network(c, "firewall_ssh_sources") for c in (ssh_sources or [])]
    members = plan["members"]
    fleet = sorted({h for kind in _plan.KINDS for h in members.get(kind, [])})

    def hosts(token):
        if token == "fleet":
            return fleet
        if token == "failover_controllers":
            return list(plan.get("failover_controllers", []))
        return list(members.get(token, []))

    out = []
    for service in plan["firewall"]:
        ports = [int(ssh_port)] if service.get("ssh") else list(service.get("ports", []))
        if service.get("mcp"):
            ports = sorted({int(p) for p in (mcp_ports or [])})
            if not ports:
                continue
        tokens = list(service["from"])
        anyone = "any" in tokens or ("ssh_sources" in tokens and not ssh)
        networks = []
        if not anyone:
            for token in tokens:
                if token == "operators":
                    networks += operator
                elif token == "ssh_sources":
                    networks += ssh
                else:
                    networks += [ipaddress.ip_network(_address(hostvars, h)) for h in hosts(token)]
        if not anyone and not networks:
            # Nobody may connect: no rule, so the input policy drops it.
            continue
        out.append({
            "name": service["name"],
            "proto": service["proto"],
            "ports": ports,
            "forward": bool(service.get("mcp")),
            "any": anyone,
            "v4": _family(networks, 4),
            "v6": _family(networks, 6),
            "sources": tokens,
        })
    for rule in extra_rules or []:
        networks = [_network(c, "firewall_extra_rules") for c in rule.get("sources", [])]
        out.append({
            "name": rule["name"],
            "proto": rule.get("proto", "tcp"),
            "ports": sorted({int(p) for p in rule["ports"]}),
            "forward": False,
            "any": not networks,
            "v4": _family(networks, 4),
            "v6": _family(networks, 6),
            "sources": ["firewall_extra_rules"],
        })
    return out


def lockout(address, rule_list, ssh_port):
    """Why the rules would cut the controller's SSH session from ``address``, or None.

    ``address`` is where this host sees the controller's SSH connection come from (empty: not known,
    for example a connection that is not SSH).
    """
    address = str(address or "").strip()
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "firewall_controller_address must be an IP address; got %r" % address
    ssh_port = int(ssh_port)
    for rule in rule_list:
        if rule["proto"] != "tcp" or ssh_port not in rule["ports"]:
            continue
        if rule["any"] or any(ip in ipaddress.ip_network(n) for n in rule["v%d" % ip.version]):
            return None
    return ("firewall_ssh_sources would cut off the controller's own SSH session from %s to port %d: add that "
            "address (or its network) to firewall_ssh_sources, or run from an address it admits (and keep "
            "firewall_ssh_port the port sshd listens on)" % (address, ssh_port))
