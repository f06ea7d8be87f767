"""The memory server's knowledge graph through the load balancer, with real MCP tools/call."""

from __future__ import annotations

import json

from fleetops_testlib import mcp_client_class

MCPClient = mcp_client_class()
URL = "http://172.30.218.21/mcp/memory"


def memory():
    client = MCPClient(URL, timeout=20)
    client.connect_handshake()
    return client


def remember(name: str, fact: str) -> None:
    result = memory().request("tools/call", {"name": "create_entities", "arguments": {
        "entities": [{"name": name, "entityType": "test", "observations": [fact]}]}}).result
    assert not result.get("isError"), result


def recalled() -> dict:
    result = memory().request("tools/call", {"name": "read_graph", "arguments": {}}).result
    assert not result.get("isError"), result
    graph = result.get("structuredContent") or json.loads(result["content"][0]["text"])
    return {e["name"]: e["observations"] for e in graph["entities"]}
