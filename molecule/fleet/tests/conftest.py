import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "_shared"))


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _close_sdk_sessions():
    """Every SDK session a test opened ends (DELETE) when the test does, passed or failed."""
    yield
    from lbha import close_sessions

    close_sessions()


# When a failover or VIP test fails: what the failover controllers and keepalived logged in the two
# minutes before, on each load balancer, appended to the failure's report (CI keeps the log as text;
# the containers are gone by the time anyone reads it).
_WATCHED = ("test_failover.py", "test_keepalived.py")
_LOGS = ("/var/log/fleetops/failover.jsonl", "/var/log/fleetops/keepalived-state.json")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed or not item.fspath.basename.startswith(_WATCHED):
        return
    import json
    import time
    from datetime import datetime

    from lbha import LBS, lb_host

    since, lines = time.time() - 120, []
    for lb in LBS:
        for path in _LOGS:
            try:
                text = lb_host(lb).file(path).content_string if lb_host(lb).file(path).exists else ""
            except Exception as exc:  # noqa: BLE001 - a report must not hide the failure
                lines.append(f"{lb} {path}: unreadable ({exc})")
                continue
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                    # The controllers' events carry "ts" (epoch), keepalived's notify "time" (ISO 8601).
                    ts = float(record["ts"]) if "ts" in record else datetime.fromisoformat(record["time"]).timestamp()
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue
                if ts >= since:
                    lines.append(f"{ts:.2f} {lb} {line}")
    report.sections.append(("the load balancers' failover and keepalived events, last 2 min",
                            "\n".join(sorted(lines)[-80:]) or "(none)"))
