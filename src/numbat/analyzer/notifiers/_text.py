"""How notifiers say an incident in words (log lines, mail, Slack titles)."""

from __future__ import annotations

from datetime import UTC, datetime

from numbat.analyzer.model import Incident, NotificationKind

HEADINGS: dict[NotificationKind, str] = {
    "new": "New",
    "changed": "Changed",
    "flapping": "Flapping",
    "resolved": "Resolved",
    "still_firing": "Still firing",
}


def iso(ms: int) -> str:
    """``ms`` since the epoch as ISO 8601 UTC with milliseconds.

    >>> iso(1_700_000_000_123)
    '2023-11-14T22:13:20.123Z'
    """
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def value_text(value: float | None) -> str:
    """A value as people read it: no ``.0`` on whole numbers, 6 significant digits.

    >>> value_text(3.0), value_text(0.123456789), value_text(None)
    ('3', '0.123457', '')
    """
    if value is None:
        return ""
    return f"{value:.6g}"


def line(kind: NotificationKind, incident: Incident) -> str:
    """One line about one incident:
    ``"critical web-1.web.heartbeat (new): web-1.web heartbeat not heard for 2 beats"``.
    """
    status = "ok" if kind == "resolved" else incident.status
    text = f"{status} {incident.id} ({kind.replace('_', ' ')})"
    if incident.message:
        text += f": {incident.message}"
    if incident.value is not None:
        text += f" [value {value_text(incident.value)}]"
    return text
