#!/usr/bin/env python3
"""Generate the Grafana dashboards the grafana role provisions.

    tests/harness/dashboards.py --write    rewrite roles/grafana/files/dashboards/*.json
    tests/harness/dashboards.py --check    exit 1 when a committed dashboard differs

The dashboards are data: one list of panels each (title, kind, queries).
Every query is run against the live Prometheus by the fleet scenario.
Template variables: $server (MCP server names); Grafana's $__rate_interval.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "roles" / "grafana" / "files" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "fleetops-prometheus"}
RI = "$__rate_interval"
S = 'server=~"$server"'
# The gateway's metrics (mtail on the load balancers' audit log): every MCP server, third-party ones too.
CALLS = "fleetops_gateway_tool_calls_total"
DURATION = "fleetops_gateway_tool_call_duration_seconds"

# (title, kind, unit, [(expr, legend)], description)
OVERVIEW = [
    ("MCP endpoints answering through the VIP", "stat", "percentunit",
     [('avg(probe_success{job="mcp_probe"})', "")],
     "Share of MCP servers whose initialize POST through the virtual IP succeeds now."),
    ("Availability over the range (SLA)", "stat", "percentunit",
     [('avg by (server) (avg_over_time(probe_success{job="mcp_probe"}[$__range]))', "{{server}}")],
     "Fraction of successful initialize probes per server over the dashboard's time range."),
    ("Error ratio", "timeseries", "percentunit",
     [((f'(sum by (server) (rate({CALLS}{{outcome=~"error|tool_error"}}[{RI}]))'
        f' or sum by (server) (rate({CALLS}[{RI}])) * 0)'
        f' / sum by (server) (rate({CALLS}[{RI}]))'), "{{server}}")],
     ("Failed tool calls (JSON-RPC and tool errors) over all tool calls per server, at the gateway, for every"
      " server (the alert fires above 5% for 5 minutes).")),
    ("p95 latency", "timeseries", "s",
     [(f'histogram_quantile(0.95, sum by (server, le) (rate({DURATION}_bucket[{RI}])))', "{{server}}")],
     "95th percentile of tool call time per server at the gateway (the alert fires above 2 s for 5 minutes)."),
    ("Tool calls per second", "timeseries", "reqps",
     [(f'sum by (server) (rate({CALLS}[{RI}]))', "{{server}}")], "At the gateway, for every server."),
    ("Probe time through the VIP", "timeseries", "s",
     [('probe_duration_seconds{job="mcp_probe"}', "{{server}}")], "Wall time of the initialize probe, TLS included."),
    ("Hosts up", "stat", "none", [('sum(up{job="node"})', "up"), ('count(up{job="node"})', "of")], ""),
    ("Virtual IP holder", "stat", "none",
     [('max by (instance) (fleetops_keepalived_state{state="MASTER"})', "{{instance}}")],
     "1 on the load balancer that holds the virtual IP."),
    ("TLS certificate expires in", "stat", "s",
     [('min(probe_ssl_earliest_cert_expiry{job="mcp_probe"}) - time()', "")], ""),
    ("Firing alerts", "stat", "none", [('count(ALERTS{alertstate="firing"}) or vector(0)', "")], ""),
]

OPERATIONS = [
    ("Replicas up", "stat", "none", [(f'sum by (server) (up{{job="mcp_server", {S}}})', "{{server}}")], ""),
    # Stateful servers with failover (the mcp_failover daemon's metrics): where each runs, how old the
    # standby's copy is, and when it last failed over.
    ("Failover: active host", "stat", "none",
     [(f'max by (server, host) (fleetops_failover_active{{{S}}}) == 1', "{{server}} on {{host}}")],
     "The Docker host that serves each failover server now (playbooks/failover_status.yml says the same)."),
    ("Failover: standby's copy age", "stat", "s",
     [(f'time() - max by (server) (fleetops_failover_standby_synced_timestamp_seconds{{{S}}})', "{{server}}")],
     ("Age of the data the standby would promote (its newest complete replication push); about the sync"
      " interval when replication works, and the McpReplicationFailing alert fires when it does not.")),
    ("Failover: last failover", "stat", "dateTimeFromNow",
     [(f'max by (server) (fleetops_failover_last_failover_timestamp_seconds{{{S}}}) * 1000', "{{server}}")],
     "When the standby last took over (1970: never); the McpFailoverHappened alert fires for 15 minutes after."),
    ("Failover: acting controller", "stat", "none",
     [("max by (instance) (fleetops_failover_controller_acting) == 1", "{{instance}}")],
     ("The failover controller that acts now: the load balancer holding the VIP (the other stands by and takes"
      " over when the VIP moves). McpFailoverNoActingController and McpFailoverTwoActingControllers fire when"
      " none or two act.")),
    ("Tool calls per second by tool", "timeseries", "reqps",
     [(f'sum by (server, tool) (rate({CALLS}{{{S}}}[{RI}]))', "{{server}} {{tool}}")],
     "At the gateway, for every server; calls no server answered are under tool \"-\"."),
    ("Messages per second by method", "timeseries", "reqps",
     [(f'sum by (rpc_method) (rate(fleetops_mcp_requests_total{{{S}}}[{RI}]))', "{{rpc_method}}")], ""),
    ("p95 tool call latency", "timeseries", "s",
     [(f'histogram_quantile(0.95, sum by (server, le) (rate({DURATION}_bucket{{{S}}}[{RI}])))', "{{server}}")],
     "At the gateway, for every server."),
    ("Failed tool calls per second by tool", "timeseries", "reqps",
     [((f'sum by (tool, outcome) (rate({CALLS}{{{S}, outcome=~"error|tool_error"}}[{RI}]))'
        f' or sum by (tool) (rate({CALLS}{{{S}}}[{RI}])) * 0'), "{{tool}} {{outcome}}")],
     "At the gateway: tool errors (result.isError) and JSON-RPC errors (the gateway's own refusals included)."),
    ("Open sessions", "timeseries", "none",
     [(f'sum by (instance) (fleetops_mcp_active_sessions{{{S}}})', "{{instance}}")],
     "Streamable HTTP sessions (2025-era protocol) per replica."),
    ("Requests in flight", "timeseries", "none",
     [(f'sum by (instance) (fleetops_mcp_inflight_requests{{{S}}})', "{{instance}}")], ""),
    ("Container memory", "timeseries", "bytes",
     [('fleetops_container_memory_usage_bytes{mcp_server=~"$server"}', "{{instance}} {{name}}")], ""),
    ("Container CPU", "timeseries", "percentunit",
     [(f'rate(fleetops_container_cpu_seconds_total{{mcp_server=~"$server"}}[{RI}])', "{{instance}} {{name}}")], "Cores used."),
]

DEBUGGING = [
    ("Errors by kind", "timeseries", "reqps",
     [((f'sum by (server, kind) (rate(fleetops_mcp_errors_total[{RI}]))'
        f' or sum by (server) (rate(fleetops_mcp_requests_total[{RI}])) * 0'), "{{server}} {{kind}}")],
     "tool_error, rpc_error, http_error, refused, unauthorized, aborted."),
    ("Scrape targets down", "timeseries", "none",
     [('count by (job) (up == 0) or count by (job) (up) * 0', "{{job}}")], "Targets Prometheus cannot scrape, by job."),
    ("Backends not answering (upstream failures)", "timeseries", "none",
     [('sum by (server) (1 - up{job="mcp_server"})', "{{server}}")],
     "MCP replicas whose own endpoint does not answer; the load balancers route around them."),
    ("Failed MCP probes through the VIP", "timeseries", "none",
     [('1 - probe_success{job="mcp_probe"}', "{{server}}")], ""),
    ("Container restarts (1 h)", "timeseries", "none",
     [('sum by (instance, name) (increase(fleetops_container_restarts_total[1h]))', "{{instance}} {{name}}")], ""),
    ("Unhealthy containers", "stat", "none",
     [('count(fleetops_container_healthy == 0) or vector(0)', "")], "Containers whose Docker health check fails."),
    ("nginx connections", "timeseries", "none",
     [('sum by (instance) (nginx_connections_active)', "{{instance}} active"),
      (f'sum by (instance) (rate(nginx_http_requests_total[{RI}]))', "{{instance}} req/s")], ""),
    ("Virtual IP state changes (1 h)", "timeseries", "none",
     [('changes(fleetops_keepalived_state_change_timestamp_seconds[1h])', "{{instance}}")], ""),
    ("Failovers of stateful servers", "timeseries", "none",
     [('sum by (server) (increase(fleetops_failover_total[1h])) or vector(0)', "{{server}}")],
     "Promotions of a standby by the mcp_failover daemon."),
    ("Last successful backup age", "stat", "s",
     [('time() - max by (instance) (fleetops_backup_last_success_timestamp_seconds) or vector(0)', "{{instance}}")],
     "Seconds since each host's last successful backup (the alert fires past 26 hours)."),
    ("Alert notifications failed", "timeseries", "none",
     [(f'sum by (integration) (rate(alertmanager_notifications_failed_total[{RI}]))', "{{integration}}")], ""),
]

DASHBOARDS = {
    "fleetops-overview": ("fleetops: fleet overview and SLA", OVERVIEW, False),
    "fleetops-operations": ("fleetops: MCP servers and tools", OPERATIONS, True),
    "fleetops-debugging": ("fleetops: debugging", DEBUGGING, False),
}


def panel(index: int, at: tuple[int, int], title: str, kind: str, unit: str, queries, description: str) -> dict:
    return {
        "id": index + 1,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": width(kind), "x": at[0], "y": at[1]},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(queries)
        ],
    }


def width(kind: str) -> int:
    return 8 if kind == "stat" else 12


def layout(panels) -> list[tuple[int, int]]:
    """Left to right, a new row of height 8 when the next panel does not fit in 24 columns."""
    x = y = 0
    spots = []
    for spec in panels:
        w = width(spec[1])
        if x + w > 24:
            x, y = 0, y + 8
        spots.append((x, y))
        x += w
    return spots


def dashboard(uid: str, title: str, panels, with_server: bool) -> dict:
    templating = []
    if with_server:
        templating.append({
            "name": "server", "label": "MCP server", "type": "query", "datasource": DATASOURCE,
            "query": {"query": 'label_values(probe_success{job="mcp_probe"}, server)', "refId": "server"},
            "definition": 'label_values(probe_success{job="mcp_probe"}, server)',
            "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2,
            "current": {"text": "All", "value": "$__all"},
        })
    return {
        "uid": uid,
        "title": title,
        "tags": ["fleetops", "mcp"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": templating},
        "panels": [panel(i, at, *p) for i, (p, at) in enumerate(zip(panels, layout(panels), strict=True))],
    }


def render() -> dict[str, str]:
    return {uid: json.dumps(dashboard(uid, *spec), indent=2, sort_keys=True) + "\n" for uid, spec in DASHBOARDS.items()}


def main() -> int:
    parser = argparse.ArgumentParser()
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true")
    group.add_argument("--check", action="store_true")
    args = parser.parse_args()
    stale = []
    for uid, text in render().items():
        path = OUT / f"{uid}.json"
        if args.write:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        elif not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(path.name)
    if stale:
        print("stale dashboards (run tests/harness/dashboards.py --write): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
