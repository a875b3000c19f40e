"""The analyzer's data model: what rules return (:class:`Alert`), what the incident
manager keeps (:class:`Incident`, :class:`Change`, :class:`Silence`) and what notifiers
are given (:class:`Notification`).

All times are milliseconds since the epoch and all durations milliseconds, as on the
wire (an event's ``time`` and ``ttl``); the config speaks seconds and is converted once,
where a rule or the manager is built. Every type is a ``msgspec.Struct``: cheap to make
by the thousand per second, and encoded to JSON as it is for the state database, the
HTTP API and webhook payloads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import msgspec

Status = Literal["ok", "warning", "critical", "unknown"]
STATUSES: tuple[Status, ...] = ("ok", "warning", "critical", "unknown")
SEVERITY: dict[str, int] = {"ok": 0, "unknown": 1, "warning": 2, "critical": 3}
"""How bad a status is, to tell a raise from a lowering (nagios puts unknown at 3; an
unknown check is less urgent than a warning one, as Icinga orders them)."""

Clock = Callable[[], int]
"""Wall-clock time in ms since the epoch (``numbat.event.now_ms``); tests inject their own."""

DEFAULT_KEEPALIVE = 60_000
"""ms an incident stays open without a new alert when the alert has no ``ttl`` (the
original's 60 s); with a ttl it is ``2 * ttl``."""


class Alert(msgspec.Struct, kw_only=True):
    """A rule's judgement of one thing at one time: what :class:`Rule` callables return.

    ``name``: what is judged (``"web.heartbeat"``, ``"load-average.1"``); ``host``: where;
    ``id``: the incident it belongs to, by default ``host + "." + name`` (the original's
    incident id, :attr:`key`). ``status`` ``ok`` says the thing is fine (it resolves an
    open incident); the others open or change one. ``value``: the number judged (ms,
    bytes, a share: the rule says). ``time``: ms, the judged event's time (or the tick's,
    for an alert about silence). ``ttl``: ms; an open incident expires (resolves) when no
    alert has refreshed it for ``2 * ttl`` (:data:`DEFAULT_KEEPALIVE` without one).
    ``tags``: labels for grouping, silences and inhibition (``app``, ``target``, ...).
    ``rule``: the config name of the rule that made it (set by the engine).
    ``breached_at``/``breached_value``: the time and value of the first event that
    breached, before any ``for`` delay (set by the engine's hysteresis; None: this one).

    >>> a = Alert(name="web.heartbeat", host="web-1", status="critical", time=1_700_000_000_000)
    >>> a.key
    'web-1.web.heartbeat'
    """

    name: str
    status: Status
    host: str = ""
    message: str = ""
    value: float | None = None
    time: int = 0
    id: str | None = None
    ttl: float | None = None
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    rule: str = ""
    breached_at: int | None = None
    breached_value: float | None = None

    @property
    def key(self) -> str:
        """The incident id: ``id``, else ``host.name``."""
        return self.id or f"{self.host}.{self.name}"

    @property
    def shard(self) -> str:
        """The shard key (the host): all state of one host lives in one analyzer, so
        several can split the hosts between them without changing a rule."""
        return self.host


class Incident(msgspec.Struct, kw_only=True):
    """An open (or recently resolved) problem: the alerts of one id, deduplicated.

    Times are ms. ``breached_at``/``breached_value``: the first event that breached (so
    a graph can mark the data that caused it); ``fired_at``: when the incident opened
    (after any ``for``); ``resolved_at``: when it resolved (None while open);
    ``updated_at``: the last alert; ``expires_at``: the keep-alive deadline (resolved
    then if no alert refreshed it). ``acked_*``: an acknowledgement (stops repeats; the
    incident stays open). ``flapping``: too many changes in the flapping window
    (notified once, then quiet until stable). ``notified``: the status last notified;
    ``peak``: the most severe status notified since it opened, so a notifier told of it
    (a critical-only pager) also hears it lowered and resolved.
    """

    id: str
    name: str
    host: str
    status: Status
    message: str = ""
    value: float | None = None
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    rule: str = ""
    breached_at: int = 0
    breached_value: float | None = None
    fired_at: int = 0
    resolved_at: int | None = None
    updated_at: int = 0
    expires_at: int = 0
    acked_by: str | None = None
    acked_at: int | None = None
    ack_comment: str = ""
    flapping: bool = False
    notified: Status | None = None
    notified_at: int | None = None
    peak: Status | None = None

    @property
    def open(self) -> bool:
        return self.resolved_at is None


class Change(msgspec.Struct, kw_only=True):
    """One line of an incident's history: a status change (``opened``, ``raised``,
    ``lowered``, ``resolved``, ``expired``), an ``acked``, ``silenced`` or ``flapping``
    mark; ``time`` ms."""

    incident: str
    time: int
    kind: str
    status: Status
    previous: Status | None = None
    message: str = ""
    value: float | None = None


class Silence(msgspec.Struct, kw_only=True):
    """Mutes notifications of matching incidents from ``starts_at`` to ``ends_at`` (ms).

    ``name`` and ``host`` are globs (``*`` any text, ``?`` one character; empty matches
    all); ``tags`` must all be equal. Incidents are still opened, resolved, written back
    and listed; only notifications are muted (Alertmanager's silences).
    """

    id: str
    ends_at: int
    starts_at: int = 0
    name: str = ""
    host: str = ""
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    author: str = ""
    comment: str = ""
    created_at: int = 0


NotificationKind = Literal["new", "changed", "resolved", "still_firing", "flapping"]


class Notification(msgspec.Struct, kw_only=True):
    """One message to send: what changed in one group of incidents since its last
    message (not the whole group again).

    ``group``: the group's labels (the ``group_by`` values); ``time`` ms. ``new``: opened
    since the last message; ``changed``: status changed (raised or lowered);
    ``resolved``; ``flapping``: started flapping (said once); ``still_firing_count``:
    the group's incidents open and unchanged; ``still_firing``: those listed in full,
    only in a reminder (``repeat``: the unacknowledged criticals still open), so a storm's
    messages stay the size of their news. ``id``: unique, for the notification log and
    idempotent retries.
    """

    id: str
    time: int
    group: dict[str, str] = msgspec.field(default_factory=dict)
    new: list[Incident] = msgspec.field(default_factory=list)
    changed: list[Incident] = msgspec.field(default_factory=list)
    resolved: list[Incident] = msgspec.field(default_factory=list)
    flapping: list[Incident] = msgspec.field(default_factory=list)
    still_firing: list[Incident] = msgspec.field(default_factory=list)
    still_firing_count: int = 0
    repeat: bool = False

    def changes(self) -> list[tuple[NotificationKind, Incident]]:
        """Every incident this message is about, with why, most urgent news first."""
        kinds: tuple[NotificationKind, ...] = ("new", "changed", "flapping", "resolved")
        found = [(kind, incident) for kind in kinds for incident in getattr(self, kind)]
        if self.repeat:
            found += [("still_firing", incident) for incident in self.still_firing]
        return found

    def summary(self) -> str:
        """One line: ``"2 new, 1 resolved, 5 still firing: web.heartbeat"``."""
        sizes = {k: len(getattr(self, k)) for k in ("new", "changed", "flapping", "resolved")}
        sizes["still_firing"] = max(len(self.still_firing), self.still_firing_count)
        counts = [f"{n} {kind.replace('_', ' ')}" for kind, n in sizes.items() if n]
        what = ", ".join(f"{k}={v}" for k, v in self.group.items())
        return f"{', '.join(counts) or 'nothing'}" + (f": {what}" if what else "")
