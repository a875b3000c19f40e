"""``pagerduty``: PagerDuty Events API v2 (``POST /v2/enqueue``), one event per changed
incident, with no state of its own (the original kept PagerDuty's incident keys in
Redis; here the incident id is the ``dedup_key``).

An open incident (new, changed, flapping) is a ``trigger`` whose ``dedup_key`` is the
incident id, so PagerDuty keeps one alert per incident and a raise or a lowering
updates it; a resolved one is a ``resolve`` with the same key. Severity: critical ->
``critical``, warning -> ``warning``, unknown -> ``error`` (the check itself failed).
Reminders of still-firing incidents are not sent: PagerDuty escalates on its own.

PagerDuty answers 202 when it took an event; 400 (an invalid event) is not retried;
429 and 5xx are. A retry sends every event of the notification again: triggers and
resolves with the same ``dedup_key`` are idempotent. The routing key never appears in
logs or errors.
"""

from __future__ import annotations

from typing import Any

from numbat.analyzer.model import Incident, Notification, NotificationKind
from numbat.analyzer.notifiers import expect
from numbat.analyzer.notifiers._http import HttpNotifier
from numbat.analyzer.notifiers._text import iso
from numbat.config.notifiers import NotifierConfig, PagerDutyNotifierConfig

SEVERITIES = {"critical": "critical", "warning": "warning", "unknown": "error"}
SUMMARY_MAX = 1024
"""PagerDuty's limit on ``payload.summary``, in characters."""


def event(
    kind: NotificationKind, incident: Incident, options: PagerDutyNotifierConfig
) -> dict[str, Any]:
    """The Events API v2 event for one incident."""
    if kind == "resolved" or incident.status == "ok":
        return {
            "routing_key": options.routing_key,
            "event_action": "resolve",
            "dedup_key": incident.id,
        }
    details: dict[str, Any] = {
        "incident": incident.id,
        "status": incident.status,
        "change": kind,
        "value": incident.value,
        "breached_at": iso(incident.breached_at) if incident.breached_at else None,
        "breached_value": incident.breached_value,
        "tags": incident.tags,
    }
    payload: dict[str, Any] = {
        "summary": (incident.message or f"{incident.status}: {incident.id}")[:SUMMARY_MAX],
        "source": incident.host or options.source,
        "severity": SEVERITIES[incident.status],
        "timestamp": iso(incident.fired_at or incident.updated_at),
        "component": incident.name,
        "custom_details": details,
    }
    if incident.rule:
        payload["class"] = incident.rule
    body: dict[str, Any] = {
        "routing_key": options.routing_key,
        "event_action": "trigger",
        "dedup_key": incident.id,
        "payload": payload,
        "client": options.client,
    }
    if options.client_url:
        body["client_url"] = options.client_url
    return body


def events(notification: Notification, options: PagerDutyNotifierConfig) -> list[dict[str, Any]]:
    """The events for ``notification``, most urgent first (no still-firing reminders)."""
    return [
        event(kind, incident, options)
        for kind, incident in notification.changes()
        if kind != "still_firing"
    ]


class PagerDutyNotifier(HttpNotifier):
    """POSTs each of :func:`events` to ``options.url`` (202: taken)."""

    Options = PagerDutyNotifierConfig

    def __init__(self, options: NotifierConfig) -> None:
        self.pagerduty = expect(options, PagerDutyNotifierConfig)
        routing_key = self.pagerduty.routing_key
        super().__init__(options, self.pagerduty.url, secrets=(routing_key,), hide_path=False)

    async def send(self, notification: Notification) -> None:
        for body in events(notification, self.pagerduty):
            await self.post(body, ok=(202,))
