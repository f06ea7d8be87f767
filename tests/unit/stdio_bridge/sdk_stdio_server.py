#!/usr/bin/env python3
"""A stdio MCP server on the official ``mcp`` SDK (both protocol generations), for the bridge tests."""

import asyncio
import os

from mcp.server.mcpserver import Context, MCPServer

mcp = MCPServer(name="bridge-test-sdk", version="1.0.0")


@mcp.tool(description="Return the text.")
def echo(text: str) -> str:
    return text


@mcp.tool(description="The server process id.")
def pid() -> str:
    return str(os.getpid())


@mcp.tool(description="Sleep, reporting progress after each of `steps` steps.")
async def slow(ctx: Context, seconds: float = 0.5, steps: int = 1) -> str:
    for step in range(1, steps + 1):
        await asyncio.sleep(seconds / steps)
        await ctx.report_progress(step, steps, "step %d" % step)
    return "slept %s" % seconds


@mcp.tool(description="Exit the server process at once.")
def crash() -> str:
    os._exit(3)


if __name__ == "__main__":
    mcp.run("stdio")
