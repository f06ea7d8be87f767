"""The memory server's knowledge graph through the load balancer, with real MCP tools/call.

Calls go through the official ``mcp`` SDK client in its default ``auto`` mode, as users run
it (fleetops_testlib.sdk_probe), not the collection's own client. Each call opens its own
session and ends it.
"""

from __future__ import annotations

import json

from fleetops_testlib import sdk_probe

URL = "http://172.30.218.21/mcp/memory"


def call(tool: str, arguments: dict) -> dict:
    """One ``tools/call`` through the load balancer; the result as the wire shows it."""
    return sdk_probe(URL, "auto", call_tool=tool, tool_arguments=arguments, timeout=20)["tool_result"]


def remember(name: str, fact: str) -> None:
    result = call("create_entities", {"entities": [{"name": name, "entityType": "test", "observations": [fact]}]})
    assert not result.get("isError"), result


def recalled() -> dict:
    result = call("read_graph", {})
    assert not result.get("isError"), result
    graph = result.get("structuredContent") or json.loads(result["content"][0]["text"])
    return {e["name"]: e["observations"] for e in graph["entities"]}
