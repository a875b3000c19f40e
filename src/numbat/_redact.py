"""Credentials out of what numbat prints: a URL's password never reaches a log line,
an error message, a banner or a file name."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """``url`` with the password of ``user:password@`` replaced by ``***``.

    >>> redact_url("http://admin:s3cret@influx:8086/x"), redact_url("http://influx:8086")
    ('http://admin:***@influx:8086/x', 'http://influx:8086')
    >>> redact_url("http://:pw@h:1"), redact_url("not a url :pw@")
    ('http://:***@h:1', 'not a url :pw@')
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<a malformed URL>"
    if parts.password is None:
        return url
    user, _, _ = parts.netloc.rpartition("@")[0].partition(":")
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
