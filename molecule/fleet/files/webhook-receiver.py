#!/usr/bin/python3
"""Test webhook receiver for Alertmanager: appends each POSTed JSON body as one line to a file."""

import http.server
import json
import sys

LOG = sys.argv[1] if len(sys.argv) > 1 else "/var/log/fleetops-test-webhook.jsonl"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            record = json.loads(body)
        except ValueError:
            self.send_response(400)
            self.end_headers()
            return
        with open(LOG, "a", encoding="utf-8") as out:
            out.write(json.dumps(record, sort_keys=True) + "\n")
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", 9099), Handler).serve_forever()
