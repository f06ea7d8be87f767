#!/usr/bin/env python3
"""A handshake-only stdio MCP server (like the TypeScript SDK 1.x servers) that misbehaves on request.

Standard library only. Tools: echo, pid, slow (a thread each, so calls overlap),
garbage (writes a line that is not JSON-RPC first), stderr (writes a stderr line
while the call is in flight), crash (exits), sample (asks the client for
sampling/createMessage and answers with what the client said), log (a
notifications/message during the call), later (answers, then sends a
notifications/resources/list_changed half a second later, belonging to no request).
"""

import json
import os
import sys
import threading
import time

LOCK = threading.Lock()
WAITING = {}
TOOLS = ["echo", "pid", "slow", "garbage", "stderr", "crash", "sample", "log", "later"]


def send(message):
    with LOCK:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


def text(rpc_id, value):
    send({"jsonrpc": "2.0", "id": rpc_id, "result": {"content": [{"type": "text", "text": value}], "isError": False}})


def call(rpc_id, params):
    name = params.get("name")
    args = params.get("arguments") or {}
    if name == "echo":
        text(rpc_id, args.get("text", ""))
    elif name == "pid":
        text(rpc_id, str(os.getpid()))
    elif name == "slow":
        token = (params.get("_meta") or {}).get("progressToken")
        steps = int(args.get("steps", 1))
        for step in range(1, steps + 1):
            time.sleep(float(args.get("seconds", 0.5)) / steps)
            if token is not None:
                send({"jsonrpc": "2.0", "method": "notifications/progress",
                      "params": {"progressToken": token, "progress": step, "total": steps}})
        text(rpc_id, "slept")
    elif name == "garbage":
        with LOCK:
            sys.stdout.write("this is not json-rpc\n[1, 2]\n")
            sys.stdout.flush()
        text(rpc_id, "after garbage")
    elif name == "stderr":
        sys.stderr.write("diagnostic line from the child\n")
        sys.stderr.flush()
        time.sleep(0.2)
        text(rpc_id, "wrote stderr")
    elif name == "log":
        send({"jsonrpc": "2.0", "method": "notifications/message",
              "params": {"level": "info", "logger": "scripted", "data": "working on it"}})
        time.sleep(0.2)
        text(rpc_id, "logged")
    elif name == "later":
        text(rpc_id, "see you later")
        time.sleep(0.5)
        send({"jsonrpc": "2.0", "method": "notifications/resources/list_changed"})
    elif name == "crash":
        os._exit(3)
    elif name == "sample":
        event = threading.Event()
        WAITING["s-1"] = [event, None]
        send({"jsonrpc": "2.0", "id": "s-1", "method": "sampling/createMessage",
              "params": {"messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}], "maxTokens": 5}})
        if not event.wait(10):
            send({"jsonrpc": "2.0", "id": rpc_id, "error": {"code": -32001, "message": "no sampling answer"}})
            return
        answer = WAITING.pop("s-1")[1]
        text(rpc_id, "client said: " + json.dumps(answer))
    else:
        send({"jsonrpc": "2.0", "id": rpc_id, "error": {"code": -32602, "message": "unknown tool %s" % name}})


def main():
    for line in sys.stdin:
        message = json.loads(line)
        method = message.get("method")
        rpc_id = message.get("id")
        if method is None:
            if rpc_id in WAITING:
                WAITING[rpc_id][1] = message.get("result")
                WAITING[rpc_id][0].set()
            continue
        if rpc_id is None:
            continue
        if method == "initialize":
            send({"jsonrpc": "2.0", "id": rpc_id, "result": {
                "protocolVersion": message["params"].get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}}, "serverInfo": {"name": "scripted", "version": "1"}}})
        elif method == "ping":
            send({"jsonrpc": "2.0", "id": rpc_id, "result": {}})
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": rpc_id, "result": {"tools": [
                {"name": name, "inputSchema": {"type": "object"}} for name in TOOLS]}})
        elif method == "tools/call":
            threading.Thread(target=call, args=(rpc_id, message.get("params") or {}), daemon=True).start()
        else:
            send({"jsonrpc": "2.0", "id": rpc_id, "error": {"code": -32601, "message": "Method not found"}})


if __name__ == "__main__":
    main()
