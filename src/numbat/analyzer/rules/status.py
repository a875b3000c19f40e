"""``status``: every event's nagios-style ``status`` field, judged as it is."""

from __future__ import annotations

from numbat.analyzer.model import STATUSES, Alert, Clock, Status
from numbat.analyzer.rules import ALL
from numbat.config.rules import RuleConfig
from numbat.event import Event


class StatusRule:
    """An event with ``status`` warning, critical or unknown opens (or raises, or
    lowers) the incident ``host.name`` (or the event's ``id``); ``ok`` resolves it. The
    event's ``description`` is the message, its ``ttl`` the keep-alive.

    >>> rule = StatusRule(RuleConfig(type="status"), name="status", clock=lambda: 0)
    >>> [a.status for a in rule({"name": "disk", "host": "h", "status": "critical", "time": 1})]
    ['critical']
    """

    match = ALL

    def __init__(self, options: RuleConfig, *, name: str, clock: Clock) -> None:
        self.name = name

    def __call__(self, event: Event) -> list[Alert] | None:
        status = event.get("status")
        if status is None:
            return None
        value = event.get("value")
        ttl = event.get("ttl")
        incident = event.get("id")
        return [
            Alert(
                name=str(event["name"]),
                host=str(event.get("host", "")),
                status=_status(status),
                message=str(event.get("description", "")),
                value=float(value) if isinstance(value, int | float) else None,
                time=int(event.get("time", 0)),
                ttl=float(ttl) if isinstance(ttl, int | float) else None,
                id=str(incident) if incident is not None else None,
            )
        ]


_CANONICAL: dict[object, Status] = {s: s for s in STATUSES}


def _status(raw: object) -> Status:
    # The event model has made it canonical (ok/warning/critical/unknown).
    return _CANONICAL.get(raw, "unknown")
