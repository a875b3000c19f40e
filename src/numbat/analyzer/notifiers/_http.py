"""What the HTTP notifiers share: one aiohttp session, a JSON POST whose answer becomes
success or a :class:`NotifyError` (retryable or not), and errors that name the
server by its origin only (a webhook URL's path or query often is the credential)."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

from numbat._redact import MASK, scrub
from numbat.analyzer.notifiers import Notifier, NotifyError, retryable_status
from numbat.config.notifiers import NotifierConfig

BODY_SHOWN = 200
"""Characters of an error answer's body quoted in the error (secrets masked)."""


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url``, without user, password, path or query: how
    errors and logs name a server whose URL may hold a secret.

    >>> origin("https://hooks.slack.com/services/T0/B0/XXXX?x=1")
    'https://hooks.slack.com'
    >>> origin("http://user:pw@127.0.0.1:8080/a")
    'http://127.0.0.1:8080'
    """
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}"


class HttpNotifier(Notifier):
    """A notifier that POSTs JSON. ``secrets``: strings masked in every error message
    (the URL's path and query are never shown: only :func:`origin`)."""

    def __init__(
        self,
        options: NotifierConfig,
        url: str,
        *,
        secrets: tuple[str, ...] = (),
        hide_path: bool = True,
    ) -> None:
        super().__init__(options)
        self.url = url
        self.where = origin(url)
        parts = urlsplit(url)
        in_url = (parts.password, parts.query, parts.path if hide_path else "")
        # Longest first, so a secret holding another is masked whole.
        self._secrets = tuple(sorted({s for s in (*secrets, *in_url) if s}, key=len, reverse=True))
        self._session: aiohttp.ClientSession | None = None

    def redact(self, text: str) -> str:
        text = scrub(text, self.url).replace(self.url, self.where)
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    async def post(
        self,
        body: Any,
        *,
        ok: tuple[int, ...] = (200, 201, 202, 204),
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """POST ``body`` as JSON; the status and body of an ``ok`` answer, else
        :class:`NotifyError` (retryable for no answer, 408, 429, 5xx; with the answer's
        ``Retry-After`` seconds)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        data = msgspec.json.encode(body)
        sent_headers = {"Content-Type": "application/json", **(headers or {})}
        try:
            async with self._session.post(self.url, data=data, headers=sent_headers) as reply:
                answer = await reply.read()
                status = reply.status
                retry_after = _seconds(reply.headers.get("Retry-After"))
        except (aiohttp.ClientError, OSError) as exc:
            raise NotifyError(self.redact(f"{self.where}: {type(exc).__name__}: {exc}")) from None
        if status not in ok:
            shown = answer[:BODY_SHOWN].decode("utf-8", "replace")
            raise NotifyError(
                self.redact(f"{self.where} answered {status}: {shown}"),
                retryable=retryable_status(status),
                retry_after=retry_after,
            )
        return status, answer

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _seconds(header: str | None) -> float | None:
    """A ``Retry-After`` in seconds (the HTTP-date form is not worth the parsing here).

    >>> _seconds("30"), _seconds(None), _seconds("Wed, 21 Oct 2015 07:28:00 GMT")
    (30.0, None, None)
    """
    try:
        seconds = float(header) if header is not None else math.nan
    except ValueError:
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None
