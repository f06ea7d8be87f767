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
