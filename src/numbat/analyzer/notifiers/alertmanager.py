"""``alertmanager``: alerts POSTed to a Prometheus Alertmanager (``POST /api/v2/alerts``),
for teams that already route, silence and inhibit there.

Each incident of a notification (new, changed, flapping, resolved, still firing) is one
alert: labels ``alertname`` (the incident's name), ``host``, ``severity`` (its status),
``incident`` (its id) and its tags (names made valid: other characters become ``_``),
plus the configured ``labels``; annotations ``summary`` (the message) and
``description``; ``startsAt`` the time it fired; ``endsAt`` the time it resolved, or
``firing_ttl`` ahead while it is open (Alertmanager resolves an alert nobody refreshed
by its ``endsAt``; any notification mentioning the incident refreshes it, and a
long-open critical is repeated every ``grouping.repeat_interval``). A resolved
incident carries the severity last notified, so it ends the alert that was firing;
a changed one also ends its alerts at the other severities.

Alertmanager answers 200; 400 (an invalid alert) is not retried, 5xx is. A
``user:password@`` in ``url`` is sent as Basic auth and never shown.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from numbat.analyzer.model import Incident, Notification, NotificationKind
from numbat.analyzer.notifiers import expect
from numbat.analyzer.notifiers._http import HttpNotifier
from numbat.analyzer.notifiers._text import iso, value_text
from numbat.config.notifiers import AlertmanagerNotifierConfig, NotifierConfig

PATH = "/api/v2/alerts"
PROBLEMS = ("warning", "critical", "unknown")
_INVALID = re.compile(r"[^A-Za-z0-9_]")


def label_name(name: str) -> str:
    """A tag name as a valid Prometheus label name (``[a-zA-Z_][a-zA-Z0-9_]*``).

    >>> label_name("app.name"), label_name("2xx"), label_name("")
    ('app_name', '_2xx', '_')
    """
    name = _INVALID.sub("_", name)
    return name if name and not name[0].isdigit() else f"_{name}"


class AlertmanagerNotifier(HttpNotifier):
    """POSTs :meth:`alerts` to ``options.url`` + ``/api/v2/alerts``."""

    Options = AlertmanagerNotifierConfig

    def __init__(self, options: NotifierConfig) -> None:
        self.am = expect(options, AlertmanagerNotifierConfig)
        super().__init__(options, self.am.url.rstrip("/") + PATH, hide_path=False)

    async def send(self, notification: Notification) -> None:
        await self.post(self.alerts(notification), ok=(200,))

    def alerts(self, notification: Notification) -> list[dict[str, Any]]:
        """The postable alerts for ``notification`` (Alertmanager API v2)."""
        found: list[dict[str, Any]] = []
        kinds: tuple[NotificationKind, ...] = (
            "new",
            "changed",
            "flapping",
            "still_firing",
            "resolved",
        )
        for kind in kinds:
            for incident in getattr(notification, kind):
                found.append(self.alert(kind, incident, notification.time))
                if kind == "changed" and incident.status != "ok":
                    others = [s for s in PROBLEMS if s != incident.status]
                    found += [self.ended(incident, s, notification.time) for s in others]
        return found

    def alert(self, kind: NotificationKind, incident: Incident, now: int) -> dict[str, Any]:
        resolved = kind == "resolved" or incident.resolved_at is not None
        severity = (incident.notified or "unknown") if resolved else incident.status
        ends = (incident.resolved_at or now) if resolved else now + round(self.am.firing_ttl * 1000)
        alert: dict[str, Any] = {
            "labels": self.labels(incident, severity),
            "annotations": {
                "summary": incident.message or f"{severity}: {incident.id}",
                "description": description(incident),
            },
            "startsAt": iso(incident.fired_at or incident.breached_at or now),
            "endsAt": iso(ends),
        }
        if self.am.generator_url:
            alert["generatorURL"] = self.am.generator_url.replace("{id}", quote(incident.id))
        return alert

    def ended(self, incident: Incident, severity: str, now: int) -> dict[str, Any]:
        """The alert of ``incident`` at another ``severity``, ended now (a raise or a
        lowering changes the severity label, so Alertmanager sees another alert)."""
        return {
            "labels": self.labels(incident, severity),
            "annotations": {"summary": incident.message or incident.id},
            "startsAt": iso(incident.fired_at or now),
            "endsAt": iso(now),
        }

    def labels(self, incident: Incident, severity: str) -> dict[str, str]:
        labels = dict(self.am.labels)
        labels.update((label_name(k), v) for k, v in incident.tags.items())
        labels.update(alertname=incident.name, severity=severity, incident=incident.id)
        if incident.host:
            labels["host"] = incident.host
        return labels


def description(incident: Incident) -> str:
    """``"web-1.web.heartbeat critical since 2023-...Z (value 2); first breach 2023-...Z"``."""
    text = f"{incident.id} {incident.status}"
    if incident.fired_at:
        text += f" since {iso(incident.fired_at)}"
    if incident.value is not None:
        text += f" (value {value_text(incident.value)})"
    if incident.breached_at:
        text += f"; first breach {iso(incident.breached_at)}"
        if incident.breached_value is not None:
            text += f" (value {value_text(incident.breached_value)})"
    if incident.resolved_at:
        text += f"; resolved {iso(incident.resolved_at)}"
    return text
