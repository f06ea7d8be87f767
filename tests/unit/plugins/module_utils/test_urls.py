"""redact_url: safe for messages, and never raises while reporting another error."""

from __future__ import annotations

import pytest

from ansible_collections.fleetops.mcp.plugins.module_utils import _mcp_client, _vault
from ansible_collections.fleetops.mcp.plugins.module_utils._urls import redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://admin:pw@vault.example.com:8200/v1?token=x#f", "https://vault.example.com:8200/v1"),
        ("http://[::1]:8080/mcp?k=v", "http://[::1]:8080/mcp"),
        ("http://host:99999/mcp", "http://host/mcp"),
        ("http://[broken/mcp", "<invalid url>"),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_both_clients_use_the_one_helper():
    assert _mcp_client.redact_url is redact_url
    assert _vault.redact_url is redact_url
