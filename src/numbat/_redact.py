"""Credentials out of what numbat prints: a URL's password, or a token in its query,
never reaches a log line, an error message, a banner or a file name."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# The query keys that carry a secret: the ws listener's ?key= / ?token=, and the like.
_SECRET_QUERY = re.compile(r"(?i)(^|[&;])((?:key|token|password|secret|api_key)=)[^&;]*")


def redact_url(url: str) -> str:
    """``url`` with the password of ``user:password@`` and secret query values (``key``,
    ``token``, ``password``, ``secret``, ``api_key``) replaced by ``***``.

    >>> redact_url("http://admin:s3cret@influx:8086/x"), redact_url("http://influx:8086")
    ('http://admin:***@influx:8086/x', 'http://influx:8086')
    >>> redact_url("ws://h:1/events?key=s3cret&x=1"), redact_url("http://:pw@h:1")
    ('ws://h:1/events?key=***&x=1', 'http://:***@h:1')
    >>> redact_url("not a url :pw@")
    'not a url :pw@'
    """
    if not isinstance(url, str):
        return "<not a URL>"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<a malformed URL>"
    if parts.password is not None:
        user = parts.netloc.rpartition("@")[0].partition(":")[0]
        parts = parts._replace(netloc=f"{user}:***@{parts.netloc.rpartition('@')[2]}")
    if parts.query:
        parts = parts._replace(query=_SECRET_QUERY.sub(r"\1\2***", parts.query))
    return urlunsplit(parts)
