"""Credentials out of what numbat prints: a URL's password, or a token in its query,
never reaches a log line, an error message, a banner or a file name.

The masking does not trust :func:`urllib.parse.urlsplit`: a password holding an
unencoded ``/``, ``?`` or ``#`` makes urlsplit end the authority early and put the rest
of the password in the path. Here the user:password part is everything between
``scheme://`` and the *last* ``@``, whatever characters it holds.
"""

from __future__ import annotations

import re

# The query keys that carry a secret: the ws listener's ?key= / ?token=, InfluxDB's
# ?p= (its ?u= is a user name, shown), and the like.
_SECRET_QUERY = re.compile(
    r"(?i)(^|[&;])((?:key|token|password|secret|api_key|apikey|access_token|auth"
    r"|p|pass|passwd|pwd)=)[^&;]*"
)
_SCHEME = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*:")
MASK = "***"


def redact_url(url: str) -> str:
    """``url`` with the password of ``user:password@`` and secret query values (``key``,
    ``token``, ``password``, ``secret``, ``api_key``, ``p``, ...) replaced by ``***``.

    The user:password part runs from ``scheme://`` to the last ``@``; the user (before
    its first ``:``) is shown, the rest masked. With no ``:`` the whole part is masked
    (``https://TOKEN@host`` puts a token there). A query secret ends at ``&`` or ``;``;
    the query is taken to start at the first ``?``, even one in the password.

    >>> redact_url("http://admin:s3cret@influx:8086/x"), redact_url("http://influx:8086")
    ('http://admin:***@influx:8086/x', 'http://influx:8086')
    >>> redact_url("ws://h:1/events?key=s3cret&x=1"), redact_url("http://:pw@h:1")
    ('ws://h:1/events?key=***&x=1', 'http://:***@h:1')
    >>> redact_url("http://admin:ab/c?d#e@f@h:1"), redact_url("http://h:1?u=admin&p=pw")
    ('http://admin:***@h:1', 'http://h:1?u=admin&p=***')
    >>> redact_url("not a url :pw@")
    'not a url :***@'
    """
    if not isinstance(url, str):
        return "<not a URL>"
    shown, end = [], 0
    for first, last in _merged(_secret_spans(url)):
        shown += [url[end:first], MASK]
        end = last
    return "".join([*shown, url[end:]])


def _secret_spans(url: str) -> list[tuple[int, int]]:
    """(start, end) of the password and of each secret query value in ``url``."""
    spans = []
    start, at = _userinfo_span(url)
    if at >= 0:
        colon = url.find(":", start, at)
        spans.append((colon + 1 if colon >= 0 else start, at))
    query = url.find("?", start)
    if query >= 0:
        base = query + 1
        spans += [(base + m.end(2), base + m.end()) for m in _SECRET_QUERY.finditer(url[base:])]
    return [(a, b) for a, b in spans if b > a]


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in sorted(spans):
        if merged and first <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(last, merged[-1][1]))
        else:
            merged.append((first, last))
    return merged


def userinfo(url: str) -> str | None:
    """The ``user:password`` part of ``url`` (to its last ``@``), or None if it has none.

    >>> userinfo("http://a:b/c@h:1"), userinfo("http://h:1"), userinfo("unix:///x@y")
    ('a:b/c', None, None)
    """
    start, at = _userinfo_span(url)
    return url[start:at] if at >= 0 else None


def unsplittable(url: str) -> str | None:
    """Why urlsplit would misread ``url``'s user:password part, or None if it would not.

    urlsplit ends the host part at the first ``/``, ``?`` or ``#``, so one of those
    before the last ``@`` (in a password, or an ``@`` in a path or query) makes it take
    a piece of the password for the host or port.

    >>> unsplittable("http://u:a/b@h:1") is not None, unsplittable("http://u:a%2Fb@h:1")
    (True, None)
    """
    secret = userinfo(url)
    if secret is None or not any(c in secret for c in "/?#"):
        return None
    return (
        "a '/', '?' or '#' in a password must be percent-encoded (%2F, %3F, %23), "
        "as must an '@' in a path or query (%40)"
    )


def scrub(text: str, url: str) -> str:
    """``text`` (e.g. a library's error about ``url``) with ``url``, its password and
    its secret query values replaced by their masked forms.

    A parser that misread ``url`` may quote a piece of the password (urllib's "Port
    could not be cast to integer value as 'ab'"), so a quoted value in ``text`` is
    masked too when ``url`` holds a secret.

    >>> scrub("Port could not be cast to integer value as 'ab'", "http://u:ab/c@h:1")
    "Port could not be cast to integer value as '***'"
    """
    shown = redact_url(url)
    if shown == url:
        return text
    text = text.replace(url, shown)
    for first, last in _secret_spans(url):
        text = text.replace(url[first:last], MASK)
    return re.sub(r"'[^']*'|\"[^\"]*\"", lambda m: m[0] if m[0][1:-1] in shown else "'***'", text)


def _userinfo_span(url: str) -> tuple[int, int]:
    """(start, end) of the user:password part: end is the last ``@``, -1 if none."""
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme else 0
    if url.startswith("//", start):
        start += 2
    if url.startswith("/", start):
        return start, -1  # unix:///path and the like: no authority, so no user:password
    return start, url.rfind("@", start)
