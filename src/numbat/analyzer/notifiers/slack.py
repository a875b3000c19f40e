"""``slack``: a Slack incoming webhook, one attachment per changed incident.

As the original numbat-analyzer's Slack output: each attachment is coloured by status
(``danger`` critical, ``warning`` warning, ``good`` ok/resolved, grey unknown), with
the fields Status, Host and Value (Host and Value when known), the incident's message
as its text and ``"Incident triggered: ..."`` / ``"Incident resolved: ..."`` as the
fallback; here each also has a title (``"New: web-1.web.heartbeat"``) and the message
text is the notification's summary. Past ``max_attachments`` changes, the last
attachment says ``"and N more"``. The hook URL is the credential: it is never shown.
"""

from __future__ import annotations

from typing import Any

from numbat.analyzer.model import Incident, Notification, NotificationKind
from numbat.analyzer.notifiers import expect
from numbat.analyzer.notifiers._http import HttpNotifier
from numbat.analyzer.notifiers._text import HEADINGS, value_text
from numbat.config.notifiers import NotifierConfig, SlackNotifierConfig

GREY = "#808080"
COLOURS = {"ok": "good", "warning": "warning", "critical": "danger", "unknown": GREY}


def attachment(kind: NotificationKind, incident: Incident, author: str) -> dict[str, Any]:
    """One incident as a Slack attachment."""
    status = "ok" if kind == "resolved" else incident.status
    text = incident.message or incident.name
    fields = [{"title": "Status", "value": status, "short": True}]
    if incident.host:
        fields.append({"title": "Host", "value": incident.host, "short": True})
    if incident.value is not None:
        fields.append({"title": "Value", "value": value_text(incident.value), "short": True})
    verb = "resolved" if status == "ok" else "triggered"
    when = incident.resolved_at if kind == "resolved" and incident.resolved_at else None
    return {
        "author_name": author,
        "color": COLOURS[status],
        "fallback": f"Incident {verb}: {text}",
        "title": f"{HEADINGS[kind]}: {incident.id}",
        "text": text,
        "fields": fields,
        "ts": (when or incident.updated_at or incident.fired_at) // 1000,
    }


def payload(notification: Notification, options: SlackNotifierConfig) -> dict[str, Any]:
    """The incoming-webhook body for ``notification``."""
    changes = notification.changes()
    cap = options.max_attachments
    shown = changes if len(changes) <= cap else changes[: cap - 1]
    attachments = [attachment(kind, i, options.username) for kind, i in shown]
    if len(shown) < len(changes):
        more = f"and {len(changes) - len(shown)} more"
        attachments.append({"color": GREY, "fallback": more, "text": more})
    body: dict[str, Any] = {
        "username": options.username,
        "text": notification.summary(),
        "attachments": attachments,
    }
    if options.channel:
        body["channel"] = options.channel
    if options.icon_emoji:
        body["icon_emoji"] = options.icon_emoji
    return body


class SlackNotifier(HttpNotifier):
    """POSTs :func:`payload` to the incoming webhook (200: sent)."""

    Options = SlackNotifierConfig

    def __init__(self, options: NotifierConfig) -> None:
        self.slack = expect(options, SlackNotifierConfig)
        super().__init__(options, self.slack.url)

    async def send(self, notification: Notification) -> None:
        await self.post(payload(notification, self.slack), ok=(200,))
