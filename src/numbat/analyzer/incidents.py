"""The incident manager: alerts in, incidents, notifications and write-back events out."""

from __future__ import annotations

from dataclasses import dataclass, field

from numbat.analyzer.model import Change, Incident, Notification, Silence
from numbat.event import Event


@dataclass
class Effects:
    """What changed since the last :meth:`IncidentManager.take`; the state store
    persists it in ONE transaction before any of its notifications is sent.

    ``incidents``: upsert by id (new, changed, resolved, acked, notified);
    ``forgotten``: ids to delete (resolved longer than the retention); ``history``: to
    insert; ``silences``: upsert (created, expired); ``notifications``: digests due now
    (grouping applied); ``events``: write-back ``numbat.alert`` / ``numbat.alerts``
    events (valid events).
    """

    incidents: list[Incident] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    history: list[Change] = field(default_factory=list)
    silences: list[Silence] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
