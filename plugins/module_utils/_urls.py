# Copyright: fleetops.mcp contributors
# Apache License 2.0 (see LICENSE)
# SPDX-License-Identifier: Apache-2.0
"""URL helpers shared by the collection's clients."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_url(url):
    """Return ``url`` without userinfo, query string or fragment (safe for messages).

    Never raises: an unparsable URL becomes ``<invalid url>`` and an invalid
    port is dropped, because this runs while reporting other errors.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if ":" in host:
        host = "[%s]" % host
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None else "%s:%s" % (host, port)
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
