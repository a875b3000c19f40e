"""A small client of the analyzer's HTTP API, for the ``numbat analyzer`` subcommands."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from numbat._redact import redact_url
from numbat.errors import NumbatError


class ApiCallError(NumbatError):
    """The analyzer could not be reached, or refused the call (the message says why)."""


def call(base: str, method: str, path: str, body: Any = None, *, token: str | None = None) -> Any:
    """``method`` ``base + /api/v1 + path`` with a JSON ``body``; the decoded answer.
    Raises :class:`ApiCallError` (never quoting the token)."""
    url = base.rstrip("/") + "/api/v1" + path
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            why = json.loads(exc.read()).get("error", exc.reason)
        except (ValueError, AttributeError):
            why = exc.reason
        raise ApiCallError(
            f"the analyzer at {redact_url(base)} answered {exc.code}: {why}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ApiCallError(f"cannot reach the analyzer at {redact_url(base)}: {reason}") from None


def forget_key(base: str, key: str, *, token: str | None = None) -> bool:
    """Ask the running analyzer to forget heartbeat ``key``; True if it tracked it."""
    answer = call(base, "POST", "/heartbeats/forget", {"key": key}, token=token)
    return bool(answer.get("forgotten"))
