"""``[[analyzer.notifiers]]``: the notifier kinds (:data:`NOTIFIERS`) and their options.

Every notifier has a bounded queue of its own and retries with backoff and jitter
(:class:`NotifierConfig`); each kind adds its endpoint and format options.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from numbat._redact import redact_url
from numbat.config._base import (
    Plugin,
    Section,
    _plugin,
    _positive,
    _seconds,
    _split_uri,
)
from numbat.config.rules import MatchConfig


class NotifierConfig(Section):
    """What every notifier takes. ``name``: its name in logs, stats and the notification
    log (default: its type); ``match``: only incidents it matches are sent to it;
    ``min_status``: the least severe status it is told about (``"warning"``: not
    ``unknown``); ``queue_size``: notifications waiting (when full the oldest is dropped
    and counted, ``reason=queue_full``); ``give_up_after`` (seconds): how long one
    notification is retried (from its first attempt; then it is dropped and counted,
    ``reason=failed``), so a receiver down for minutes or hours still gets the page when
    it is back; ``max_attempts``: also give up after this many attempts (0: no limit);
    ``max_backoff`` (seconds): the longest wait between attempts; ``timeout``: seconds
    one attempt may take."""

    type: str
    name: str | None = None
    match: MatchConfig | None = None
    min_status: str = "warning"
    queue_size: int = 1_000
    give_up_after: float = 86_400.0
    max_attempts: int = 0
    max_backoff: float = 300.0
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.min_status not in ("unknown", "warning", "critical"):
            raise ValueError(
                f"min_status: got {self.min_status!r}; allowed: 'unknown', 'warning', 'critical'"
            )
        _positive(self, "queue_size")
        if self.max_attempts < 0:
            raise ValueError(f"max_attempts: must be 0 (no limit) or more, got {self.max_attempts}")
        _seconds(self, "max_backoff", "timeout", "give_up_after")

    @property
    def label(self) -> str:
        return self.name or self.type.rpartition(":")[2].lower()


class LogNotifierConfig(NotifierConfig, kw_only=True):
    """``type = "log"`` (or ``"console"``): one log line per change, at WARNING for
    problems and INFO for resolves."""


def _http_url(key: str, url: str, *, secret_path: bool) -> None:
    """``url`` must be ``http(s)://host[:port]/...``; the error never quotes a password,
    a secret query value or (``secret_path``: a Slack hook's token) the path."""
    parts = _split_uri(key, url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = f"{parts.scheme}://{parts.hostname or ''}/..." if secret_path else redact_url(url)
        raise ValueError(f"{key}: expected an http:// or https:// URL with a host, got {shown!r}")


class WebhookNotifierConfig(NotifierConfig, kw_only=True):
    """``type = "webhook"``: each notification POSTed as JSON to ``url`` (2xx: sent).
    ``headers``: added to every request (e.g. ``Authorization``; their values are never
    logged). The URL's path and query are never shown in logs or errors.
    ``max_incidents``: the most incidents of each list in one body (0: all)."""

    url: str
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    max_incidents: int = 1_000

    def __post_init__(self) -> None:
        super().__post_init__()
        _http_url("url", self.url, secret_path=True)
        if self.max_incidents < 0:
            raise ValueError(
                f"max_incidents: must be 0 (no limit) or more, got {self.max_incidents}"
            )


class SlackNotifierConfig(NotifierConfig, kw_only=True):
    """``type = "slack"``: a Slack incoming webhook (``url``, a secret: never shown).
    One attachment per changed incident, coloured by status, with Status/Host/Value
    fields; past ``max_attachments`` a last one says how many more. ``username`` and
    ``channel`` override the hook's defaults (``channel`` only for legacy hooks)."""

    url: str
    username: str = "numbat"
    channel: str | None = None
    icon_emoji: str | None = None
    max_attachments: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        _http_url("url", self.url, secret_path=True)
        _positive(self, "max_attachments")


_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"


class PagerDutyNotifierConfig(NotifierConfig, kw_only=True):
    """``type = "pagerduty"``: PagerDuty Events API v2. ``routing_key``: the
    integration key (32 characters; a secret, never shown); ``url``: the enqueue
    endpoint; ``source``: the payload's source when an incident has no host; ``client``
    and ``client_url``: shown in PagerDuty as the event's origin."""

    routing_key: str
    url: str = PAGERDUTY_URL
    source: str = "numbat"
    client: str = "numbat"
    client_url: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.routing_key.strip():
            raise ValueError("routing_key: must not be empty (the integration key)")
        _http_url("url", self.url, secret_path=False)


class EmailNotifierConfig(NotifierConfig, kw_only=True):
    """``type = "email"``: one mail per notification through an SMTP server.
    ``host``/``port`` (default 25, or 465 with ``ssl``, 587 with ``starttls``);
    ``ssl``: TLS from the start (SMTPS); ``starttls``: upgrade with STARTTLS (required:
    fails if the server does not offer it); ``username``/``password``: SMTP AUTH (the
    password is never shown); ``ca_file``: PEM certificates to trust instead of the
    system's; ``from``: the sender; ``to``: the recipients; ``subject_prefix``."""

    to: list[str]
    from_: str = msgspec.field(name="from", default="numbat@localhost")
    host: str = "localhost"
    port: int | None = None
    ssl: bool = False
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    subject_prefix: str = "[numbat]"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.to or any("@" not in address for address in self.to):
            raise ValueError("to: give one or more addresses such as 'ops@example.com'")
        if "@" not in self.from_:
            raise ValueError(
                f"from: expected an address such as 'numbat@example.com', got {self.from_!r}"
            )
        if self.ssl and self.starttls:
            raise ValueError(
                "starttls: cannot be used with ssl = true (the connection is TLS already)"
            )
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"port: must be 1-65535, got {self.port}")
        if (self.username is None) != (self.password is None):
            raise ValueError("password: username and password go together")

    @property
    def smtp_port(self) -> int:
        if self.port is not None:
            return self.port
        return 465 if self.ssl else 587 if self.starttls else 25


class AlertmanagerNotifierConfig(NotifierConfig, kw_only=True):
    """``type = "alertmanager"``: alerts POSTed to a Prometheus Alertmanager's
    ``/api/v2/alerts`` (``url``: its base URL, e.g. ``http://alertmanager:9093``).
    ``firing_ttl``: seconds a firing alert's ``endsAt`` lies ahead (refreshed by every
    notification that mentions it; Alertmanager resolves an alert it is not told about
    by then); ``generator_url``: a link shown with each alert (``{id}`` is replaced by
    the incident id); ``labels``: added to every alert."""

    url: str
    firing_ttl: float = 7 * 86_400.0
    generator_url: str | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        _http_url("url", self.url, secret_path=False)
        _seconds(self, "firing_ttl")
        for name in self.labels:
            if not _LABEL.fullmatch(name):
                raise ValueError(
                    f"labels: {name!r} is not a label name (letters, digits, _; not first a digit)"
                )


NOTIFIERS: dict[str, Plugin] = {
    "log": Plugin("numbat.analyzer.notifiers.log:LogNotifier", LogNotifierConfig),
    "console": Plugin("numbat.analyzer.notifiers.log:LogNotifier", LogNotifierConfig),
    "webhook": Plugin("numbat.analyzer.notifiers.webhook:WebhookNotifier", WebhookNotifierConfig),
    "slack": Plugin("numbat.analyzer.notifiers.slack:SlackNotifier", SlackNotifierConfig),
    "pagerduty": Plugin(
        "numbat.analyzer.notifiers.pagerduty:PagerDutyNotifier", PagerDutyNotifierConfig
    ),
    "email": Plugin("numbat.analyzer.notifiers.email:EmailNotifier", EmailNotifierConfig),
    "alertmanager": Plugin(
        "numbat.analyzer.notifiers.alertmanager:AlertmanagerNotifier", AlertmanagerNotifierConfig
    ),
}
"""Notifier type -> plug-in; a notifier's ``type`` may also be an import path."""


def notifier_config(raw: Any, index: int) -> NotifierConfig:
    """Validate one ``[[analyzer.notifiers]]`` table."""
    return _plugin(raw, f"notifiers[{index}]", NOTIFIERS, NotifierConfig, "notifiers", "webhook")
