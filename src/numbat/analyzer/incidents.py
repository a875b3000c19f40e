"""The incident manager: alerts in; incidents, grouped notifications and write-back
events out. The only part of the analyzer that decides whom to tell.

* **Dedup**: alerts of one :attr:`Alert.key` are one incident. A problem alert with no
  open incident opens one (first breach, fired time); one of another status raises or
  lowers it; an ``ok`` resolves it; a repeat of the same status only refreshes it.
* **Keep-alive**: an open incident no alert refreshed for ``2 * ttl`` (60 s without a
  ttl) resolves as ``expired`` (a timer heap: work proportional to what expires).
* **Flapping**: more than ``max_changes`` status changes within ``window``: one
  ``flapping`` notice, then quiet until it has not changed for ``window``; then its
  state as it is, if that differs from what was last said.
* **Repeat**: an open critical, notified and not acknowledged, is said again every
  ``repeat_interval`` (a message with ``repeat`` set, listing it under still firing).
* **Silences and inhibition** mute notifications only: a muted change is recorded and
  written back, and when the mute ends an open incident whose status was never told
  goes out then (as new if nothing was told), a resolve of a told one as resolved.
* **Grouping**: incidents with the same ``group_by`` values share messages. A quiet
  group's first news waits ``group_wait``; later news waits until ``group_interval`` has
  passed since the group's last message. Each message says what changed since the last
  one, by comparing each touched incident with what was last told of it (so a flap
  within one wait says nothing).

Times are ms (the clock's); config durations are seconds, converted here once.
"""

from __future__ import annotations

import fnmatch
import heapq
import re
import secrets
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from numbat.analyzer.model import (
    DEFAULT_KEEPALIVE,
    SEVERITY,
    Alert,
    Change,
    Clock,
    Incident,
    Notification,
    NotificationKind,
    Silence,
    Status,
)
from numbat.analyzer.rules import Match
from numbat.config.analyzer import FlappingConfig, GroupingConfig, InhibitConfig
from numbat.event import MAX_DESCRIPTION_BYTES, Event

_copy = msgspec.structs.replace
_PROBLEM_TOLD = ("warning", "critical", "unknown")


@dataclass
class Effects:
    """What changed since the last :meth:`IncidentManager.take`; the state store
    persists it in ONE transaction before any of its notifications is sent.

    ``incidents``: upsert by id (new, changed, resolved, acked, notified);
    ``forgotten``: ids to delete (resolved longer than the retention); ``history``: to
    insert; ``silences``: upsert (created, expired); ``notifications``: digests due now
    (grouping applied); ``events``: write-back ``numbat.alert`` / ``numbat.alerts``
    events (valid events). Everything in it is a copy: the manager goes on changing
    its own incidents while another thread writes these.
    """

    incidents: list[Incident] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    history: list[Change] = field(default_factory=list)
    silences: list[Silence] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


GroupKey = tuple[str, ...]


@dataclass(slots=True)
class _Group:
    labels: dict[str, str]
    members: dict[str, None] = field(default_factory=dict)  # open, or with news untold
    news: dict[str, None] = field(default_factory=dict)  # touched since the last message
    last_sent: int | None = None
    repeat: bool = False


@dataclass(slots=True)
class _Inhibit:
    """One inhibit rule, with the open sources at ``source_status`` or worse, by the
    values of its ``equal`` labels."""

    source: Match
    target: Match
    equal: tuple[str, ...]
    severity: int
    sources: dict[tuple[str, ...], dict[str, None]] = field(default_factory=dict)
    values_of: dict[str, tuple[str, ...]] = field(default_factory=dict)


class IncidentManager:
    """Turns alerts into incidents, notifications and write-back events.

    ``clock``: ms; ``grouping``, ``flapping``, ``inhibit``: the ``[analyzer]`` options;
    ``state_interval``: seconds between two points of the ``numbat.alerts`` state
    series of an open incident; ``retain_resolved``: seconds a resolved incident stays
    listed before it is forgotten. Feed it with :meth:`apply` and :meth:`tick`; persist
    what :meth:`take` returns (then send its notifications). Not thread-safe: one
    thread (the daemon's event loop) calls it.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        grouping: GroupingConfig,
        flapping: FlappingConfig,
        inhibit: Sequence[InhibitConfig],
        state_interval: float,
        retain_resolved: float = 86_400,
    ) -> None:
        self.clock = clock
        self._group_by = tuple(grouping.group_by)
        self._group_wait = int(grouping.group_wait * 1000)
        self._group_interval = int(grouping.group_interval * 1000)
        self._repeat = int(grouping.repeat_interval * 1000)
        self._flap_window = int(flapping.window * 1000)
        self._flap_max = flapping.max_changes
        self._inhibit = [
            _Inhibit(
                Match(rule.source.names, rule.source.tags),
                Match(rule.target.names, rule.target.tags),
                tuple(rule.equal),
                SEVERITY[rule.source_status],
            )
            for rule in inhibit
        ]
        self._state_ms = int(state_interval * 1000)
        self._retain = int(retain_resolved * 1000)
        self._incidents: dict[str, Incident] = {}
        self._silences: dict[str, Silence] = {}
        self._silence_patterns: dict[
            str, tuple[re.Pattern[str] | None, re.Pattern[str] | None]
        ] = {}
        # Timer heaps of (ms, id); an entry is checked against the state when it pops.
        self._expiry: list[tuple[int, str]] = []
        self._expiry_at: dict[str, int] = {}  # the one live expiry entry of each id
        self._repeats: list[tuple[int, str]] = []
        self._calm: list[tuple[int, str]] = []
        self._forget: list[tuple[int, str]] = []
        self._silence_timers: list[tuple[int, str]] = []
        self._next_state: int | None = None
        self._changes: dict[str, deque[int]] = {}  # status change times within the window
        self._flap_told: set[str] = set()
        self._groups: dict[GroupKey, _Group] = {}
        self._group_of: dict[str, GroupKey] = {}
        self._due: dict[GroupKey, int] = {}  # groups with news: when they may go out
        self._muted: dict[str, None] = {}  # ids whose news a mute holds back
        self._recheck = False  # a mute may have ended
        # What take() hands over.
        self._dirty: dict[str, Incident] = {}
        self._forgotten: list[str] = []
        self._history: list[Change] = []
        self._silence_changes: dict[str, Silence] = {}
        self._notifications: list[Notification] = []
        self._events: list[Event] = []

    # -- input --

    def restore(self, incidents: list[Incident], silences: list[Silence], now: int) -> None:
        """Take back the stored state at start. Keep-alive deadlines restart from
        ``now`` (ms: the analyzer's own downtime is not silence); what was not told
        before the stop (an open incident never notified, a resolve not sent) is due
        again."""
        for silence in silences:
            if silence.ends_at + self._retain > now:
                self._add_silence(silence)
        for incident in incidents:
            self._incidents[incident.id] = incident
            if incident.open:
                keep = incident.expires_at - incident.updated_at
                incident.expires_at = now + (keep if keep > 0 else DEFAULT_KEEPALIVE)
                self._schedule_expiry(incident)
                self._update_sources(incident)
                if incident.notified == "critical" and self._repeat:
                    due = (incident.notified_at or now) + self._repeat
                    heapq.heappush(self._repeats, (max(due, now), incident.id))
            else:
                resolved = incident.resolved_at or now
                heapq.heappush(self._forget, (resolved + self._retain, incident.id))
            if incident.flapping and self._flap_window:
                self._flap_told.add(incident.id)
                self._changes[incident.id] = deque([now])
                heapq.heappush(self._calm, (now + self._flap_window, incident.id))
            self._touch(incident, now, news=self._news(incident) is not None)

    def apply(self, alerts: Iterable[Alert]) -> None:
        """Take the engine's alerts. An ``ok`` for no open incident and a repeat of an
        open incident's status cost a dict lookup and a few assignments (the hot path)."""
        now = self.clock()
        incidents = self._incidents
        for alert in alerts:
            key = alert.id or f"{alert.host}.{alert.name}"
            incident = incidents.get(key)
            status = alert.status
            if incident is not None and incident.resolved_at is None:
                if status == incident.status:
                    ttl = alert.ttl
                    incident.expires_at = now + (int(2 * ttl) if ttl else DEFAULT_KEEPALIVE)
                    incident.updated_at = now
                    incident.value = alert.value
                    if alert.message:
                        incident.message = alert.message
                elif status == "ok":
                    self._resolve(incident, alert.time or now, now, "resolved", alert)
                else:
                    self._change(incident, alert, now)
            elif status != "ok":
                self._open(key, alert, now, incident)

    def tick(self, now: int) -> None:
        """Act on time (``now`` ms): expire incidents not kept alive, end silences,
        calm flapping ones, queue repeats, refresh the state series, forget old
        resolved incidents, and flush the groups that are due. Work is proportional to
        what is due (heaps), but for the state series (one point per open incident
        every ``state_interval``)."""
        self._expire(now)
        self._silence_timers_due(now)
        self._calm_down(now)
        self._repeats_due(now)
        self._state_series(now)
        self._forget_due(now)
        self._flush(now)

    # -- output --

    @property
    def dirty(self) -> bool:
        """Whether :meth:`take` would return something."""
        if (
            self._dirty
            or self._forgotten
            or self._history
            or self._silence_changes
            or self._notifications
            or self._events
            or self._recheck
        ):
            return True
        if self._due:
            now = self.clock()
            return any(due <= now for due in self._due.values())
        return False

    def take(self) -> Effects:
        """Everything changed since the last call (groups due now flushed first), as
        copies, and start afresh. Persist it before sending its notifications."""
        self._flush(self.clock())
        effects = Effects(
            incidents=[_copy(i) for i in self._dirty.values()],
            forgotten=self._forgotten,
            history=self._history,
            silences=list(self._silence_changes.values()),
            notifications=self._notifications,
            events=self._events,
        )
        self._dirty = {}
        self._forgotten = []
        self._history = []
        self._silence_changes = {}
        self._notifications = []
        self._events = []
        return effects

    # -- read side --

    def incidents(
        self,
        *,
        open: bool | None = True,  # the API's query parameter
        status: str | None = None,
        host: str | None = None,
        name: str | None = None,
    ) -> list[Incident]:
        """Incidents (``open``: True open ones, False resolved ones still kept, None
        both), filtered by exact ``status``, ``host`` and ``name`` (a glob when it has
        ``*`` or ``?``); most severe first, then newest. The manager's own objects:
        read, do not change them."""
        pattern = re.compile(fnmatch.translate(name), re.S) if name and _is_glob(name) else None
        found = [
            i
            for i in self._incidents.values()
            if (open is None or i.open == open)
            and (status is None or i.status == status)
            and (host is None or i.host == host)
            and (name is None or (pattern.match(i.name) if pattern else i.name == name))
        ]
        found.sort(key=lambda i: (-SEVERITY[i.status], -i.fired_at, i.id))
        return found

    def get(self, incident_id: str) -> Incident | None:
        """The incident of this id (open or kept resolved), or None."""
        return self._incidents.get(incident_id)

    def silences(self, *, active: bool = True) -> list[Silence]:
        """Silences (``active``: those not ended yet, future ones included; else all
        kept), by start time."""
        now = self.clock()
        found = [s for s in self._silences.values() if not active or s.ends_at > now]
        found.sort(key=lambda s: (s.starts_at, s.id))
        return found

    def muted_by(self, incident: Incident) -> str | None:
        """Why the incident's notifications are muted: ``"silence:<id>"``,
        ``"inhibited:<source incident id>"``, or None."""
        now = self.clock()
        for silence in self._silences.values():
            if silence.starts_at <= now < silence.ends_at and self._silences_it(silence, incident):
                return f"silence:{silence.id}"
        labels: dict[str, str] | None = None
        for rule in self._inhibit:
            if not rule.sources:
                continue
            labels = labels or _labels(incident)
            if _matches(rule.source, labels) or not _matches(rule.target, labels):
                continue  # a source is never muted by its own rule
            sources = rule.sources.get(tuple(labels.get(k, "") for k in rule.equal))
            for source in sources or ():
                if source != incident.id:
                    return f"inhibited:{source}"
        return None

    # -- mutations (HTTP API) --

    def silence(
        self,
        *,
        ends_at: int,
        starts_at: int | None = None,
        name: str = "",
        host: str = "",
        tags: Mapping[str, str] | None = None,
        author: str,
        comment: str = "",
    ) -> Silence:
        """Mute notifications of incidents whose name and host match the globs (empty:
        any) and whose tags equal ``tags``, from ``starts_at`` (ms, default now) to
        ``ends_at`` (ms). Raises ValueError: no author, no matcher at all (``name="*"``
        says "everything" outright), an end not after the start or in the past, a tag
        that is not text."""
        now = self.clock()
        start = now if starts_at is None else starts_at
        if not author or not author.strip():
            raise ValueError("author: required (who silenced it)")
        if ends_at <= start:
            raise ValueError(f"ends_at: must be after starts_at ({start}), got {ends_at}")
        if ends_at <= now:
            raise ValueError(f"ends_at: must be in the future (now {now}), got {ends_at}")
        clean = dict(tags or {})
        for key, value in clean.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError(f"tags: {key!r}: keys and values must be text")
        if not (name or host or clean):
            # An unset $HOST in a script must not mute every alert: all is said outright.
            raise ValueError(
                "give name, host or tags: a silence with none would mute every alert "
                '(to mean that, say name = "*")'
            )
        silence = Silence(
            id=secrets.token_hex(8),
            starts_at=start,
            ends_at=ends_at,
            name=name,
            host=host,
            tags=clean,
            author=author,
            comment=comment,
            created_at=now,
        )
        self._add_silence(silence)
        self._silence_changes[silence.id] = _copy(silence)
        return silence

    def expire_silence(self, silence_id: str) -> Silence:
        """End a silence now (held notifications of what it muted go out). KeyError if
        unknown; an ended one is returned as it is."""
        silence = self._silences[silence_id]
        now = self.clock()
        if silence.ends_at > now:
            silence.ends_at = max(now, silence.starts_at)
            self._silence_changes[silence.id] = _copy(silence)
            self._recheck = True
            heapq.heappush(self._silence_timers, (now + self._retain, silence.id))
        return silence

    def acknowledge(self, incident_id: str, *, author: str, comment: str = "") -> Incident:
        """Mark an open incident acknowledged (no more repeats; it stays open). KeyError
        if unknown; ValueError if resolved or no author."""
        incident = self._incidents[incident_id]
        if not author or not author.strip():
            raise ValueError("author: required (who acknowledged it)")
        if not incident.open:
            raise ValueError(f"{incident_id}: resolved, nothing to acknowledge")
        now = self.clock()
        incident.acked_by, incident.acked_at, incident.ack_comment = author, now, comment
        self._record(incident, "acked", now, incident.status, comment or f"by {author}")
        self._dirty[incident.id] = incident
        return incident

    # -- changes --

    def _open(self, key: str, alert: Alert, now: int, old: Incident | None) -> None:
        at = alert.time or now
        breached = alert.breached_at is not None
        ttl = alert.ttl
        incident = Incident(
            id=key,
            name=alert.name,
            host=alert.host,
            status=alert.status,
            message=alert.message,
            value=alert.value,
            tags=alert.tags,
            rule=alert.rule,
            breached_at=alert.breached_at if alert.breached_at is not None else at,
            breached_value=alert.breached_value if breached else alert.value,
            fired_at=at,
            updated_at=now,
            expires_at=now + (int(2 * ttl) if ttl else DEFAULT_KEEPALIVE),
        )
        if old is not None:
            incident.flapping = old.flapping
            if old.notified in _PROBLEM_TOLD:
                # Its resolve was never told: the receiver still has it open, so this
                # is a change of that one (or nothing), not news.
                incident.notified, incident.notified_at = old.notified, old.notified_at
                incident.peak = old.peak
        self._incidents[key] = incident
        self._schedule_expiry(incident)
        self._changed(incident, "opened", None, at, now)

    def _change(self, incident: Incident, alert: Alert, now: int) -> None:
        previous = incident.status
        incident.status = alert.status
        incident.message = alert.message or incident.message
        incident.value = alert.value
        incident.updated_at = now
        ttl = alert.ttl
        incident.expires_at = now + (int(2 * ttl) if ttl else DEFAULT_KEEPALIVE)
        if alert.tags:
            incident.tags = alert.tags
        kind = "raised" if SEVERITY[alert.status] > SEVERITY[previous] else "lowered"
        self._changed(incident, kind, previous, alert.time or now, now)

    def _resolve(
        self, incident: Incident, at: int, now: int, kind: str, alert: Alert | None = None
    ) -> None:
        previous = incident.status
        incident.status = "ok"
        incident.resolved_at = max(at, incident.fired_at)
        incident.updated_at = now
        if alert is not None:
            incident.value = alert.value
            incident.message = alert.message or incident.message
        heapq.heappush(self._forget, (now + self._retain, incident.id))
        self._changed(incident, kind, previous, incident.resolved_at, now)

    def _changed(
        self, incident: Incident, kind: str, previous: Status | None, at: int, now: int
    ) -> None:
        """Record a status change: history, write-back, flapping, inhibition, group."""
        self._record(incident, kind, at, previous)
        self._dirty[incident.id] = incident
        self._events.append(self._state_event(incident, at))
        self._note_flapping(incident, now)
        if self._inhibit:
            self._update_sources(incident)
        self._touch(incident, now)

    def _record(
        self,
        incident: Incident,
        kind: str,
        at: int,
        previous: Status | None,
        message: str | None = None,
    ) -> None:
        text = incident.message if message is None else message
        self._history.append(
            Change(
                incident=incident.id,
                time=at,
                kind=kind,
                status=incident.status,
                previous=previous,
                message=text,
                value=incident.value,
            )
        )
        event: Event = {
            "name": "numbat.alert",
            "value": SEVERITY[incident.status],
            "time": at,
            "alert": incident.name,
            "status": incident.status,
            "incident": incident.id,
            "kind": kind,
        }
        if incident.host:
            event["host"] = incident.host
        if incident.rule:
            event["rule"] = incident.rule
        if text:
            event["description"] = _cut(text)
        self._events.append(event)

    def _state_event(self, incident: Incident, at: int) -> Event:
        event: Event = {
            "name": "numbat.alerts",
            "value": SEVERITY[incident.status],
            "time": at,
            "alert": incident.name,
            "incident": incident.id,
            "state": incident.status,
        }
        if incident.host:
            event["host"] = incident.host
        return event

    # -- timers --

    def _schedule_expiry(self, incident: Incident) -> None:
        if incident.id not in self._expiry_at:
            self._expiry_at[incident.id] = incident.expires_at
            heapq.heappush(self._expiry, (incident.expires_at, incident.id))

    def _expire(self, now: int) -> None:
        heap, scheduled = self._expiry, self._expiry_at
        while heap and heap[0][0] <= now:
            at, key = heapq.heappop(heap)
            if scheduled.get(key) != at:
                continue  # stale
            del scheduled[key]
            incident = self._incidents.get(key)
            if incident is None or not incident.open:
                continue
            if incident.expires_at > now:  # refreshed since: look again then
                self._schedule_expiry(incident)
                continue
            incident.message = f"no alert for {(now - incident.updated_at) // 1000} s (expired)"
            self._resolve(incident, now, now, "expired")

    def _silence_timers_due(self, now: int) -> None:
        heap = self._silence_timers
        while heap and heap[0][0] <= now:
            at, key = heapq.heappop(heap)
            silence = self._silences.get(key)
            if silence is None:
                continue
            if at >= silence.ends_at + self._retain:
                del self._silences[key]
                self._silence_patterns.pop(key, None)
            elif at == silence.ends_at:
                self._recheck = True

    def _calm_down(self, now: int) -> None:
        heap = self._calm
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            times = self._changes.get(key)
            if times is None or times[-1] + self._flap_window > now:
                continue  # changed since: a later entry looks again
            del self._changes[key]
            incident = self._incidents.get(key)
            if incident is not None and incident.flapping:
                incident.flapping = False
                self._flap_told.discard(key)
                self._record(incident, "stable", now, incident.status)
                self._dirty[key] = incident
                self._touch(incident, now)

    def _repeats_due(self, now: int) -> None:
        heap = self._repeats
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            incident = self._incidents.get(key)
            if (
                incident is None
                or not incident.open
                or incident.status != "critical"
                or incident.notified != "critical"
                or incident.acked_at is not None
                or incident.flapping
                or (incident.notified_at or 0) + self._repeat > now
            ):
                continue  # resolved, lowered, acked, or told since (a later entry)
            group = self._groups.get(self._group_of.get(key, ()))
            if group is not None:
                group.repeat = True
                self._schedule(self._group_of[key], group, now)

    def _state_series(self, now: int) -> None:
        if self._next_state is None:
            self._next_state = now + self._state_ms
        if now < self._next_state:
            return
        self._next_state = now + self._state_ms
        self._events.extend(
            self._state_event(i, now) for i in self._incidents.values() if i.resolved_at is None
        )

    def _forget_due(self, now: int) -> None:
        heap = self._forget
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            incident = self._incidents.get(key)
            if incident is None or incident.open:
                continue
            if (incident.resolved_at or 0) + self._retain > now:
                continue  # resolved again later: a later entry
            del self._incidents[key]
            self._forgotten.append(key)
            self._dirty.pop(key, None)
            self._changes.pop(key, None)
            self._flap_told.discard(key)
            self._muted.pop(key, None)
            group_key = self._group_of.pop(key, None)
            if group_key is not None:
                group = self._groups[group_key]
                group.members.pop(key, None)
                group.news.pop(key, None)
            if self._inhibit:
                self._update_sources(incident, gone=True)

    # -- flapping --

    def _note_flapping(self, incident: Incident, now: int) -> None:
        if self._flap_max <= 0:
            return
        times = self._changes.get(incident.id)
        if times is None:
            times = self._changes[incident.id] = deque()
        times.append(now)
        while times[0] <= now - self._flap_window:
            times.popleft()
        heapq.heappush(self._calm, (now + self._flap_window, incident.id))
        if not incident.flapping and len(times) > self._flap_max:
            incident.flapping = True
            self._record(
                incident,
                "flapping",
                now,
                None,
                f"{len(times)} changes in {self._flap_window // 1000} s",
            )

    # -- inhibition --

    def _update_sources(self, incident: Incident, *, gone: bool = False) -> None:
        """Keep each inhibit rule's index of open sources at its status or worse."""
        labels = _labels(incident)
        for rule in self._inhibit:
            before = rule.values_of.get(incident.id)
            now: tuple[str, ...] | None = None
            if (
                not gone
                and incident.open
                and SEVERITY[incident.status] >= rule.severity
                and _matches(rule.source, labels)
            ):
                now = tuple(labels.get(k, "") for k in rule.equal)
            if now == before:
                continue
            if before is not None:
                ids = rule.sources[before]
                ids.pop(incident.id, None)
                if not ids:
                    del rule.sources[before]
                del rule.values_of[incident.id]
                self._recheck = True  # its targets may be free now
            if now is not None:
                rule.values_of[incident.id] = now
                rule.sources.setdefault(now, {})[incident.id] = None

    # -- silences --

    def _add_silence(self, silence: Silence) -> None:
        self._silences[silence.id] = silence
        self._silence_patterns[silence.id] = (_glob(silence.name), _glob(silence.host))
        heapq.heappush(self._silence_timers, (silence.ends_at, silence.id))
        heapq.heappush(self._silence_timers, (silence.ends_at + self._retain, silence.id))

    def _silences_it(self, silence: Silence, incident: Incident) -> bool:
        name, host = self._silence_patterns[silence.id]
        if name is not None and not name.match(incident.name):
            return False
        if host is not None and not host.match(incident.host):
            return False
        if silence.tags:
            labels = _labels(incident)
            return all(labels.get(k) == v for k, v in silence.tags.items())
        return True

    # -- grouping --

    def _group_key(self, incident: Incident) -> GroupKey:
        return tuple(_label(incident, label) for label in self._group_by)

    def _touch(self, incident: Incident, now: int, *, news: bool = True) -> None:
        """The incident may have news for its group (``news`` False: only join it)."""
        key = self._group_key(incident)
        previous = self._group_of.get(incident.id)
        if previous is not None and previous != key:
            old = self._groups[previous]
            old.members.pop(incident.id, None)
            old.news.pop(incident.id, None)
        self._group_of[incident.id] = key
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(dict(zip(self._group_by, key, strict=True)))
        group.members[incident.id] = None
        if news:
            group.news[incident.id] = None
            self._schedule(key, group, now)

    def _schedule(self, key: GroupKey, group: _Group, now: int) -> None:
        if key in self._due:
            return
        due = now + self._group_wait
        if group.last_sent is not None:
            due = max(due, group.last_sent + self._group_interval)
        self._due[key] = due

    def _flush(self, now: int) -> None:
        if self._recheck:
            self._recheck = False
            for incident_id in list(self._muted):
                incident = self._incidents.get(incident_id)
                if incident is None:
                    del self._muted[incident_id]
                elif self.muted_by(incident) is None:
                    del self._muted[incident_id]
                    self._touch(incident, now)
        if not self._due:
            return
        for key, due in list(self._due.items()):
            if due <= now:
                del self._due[key]
                self._send(key, self._groups[key], now)

    def _send(self, key: GroupKey, group: _Group, now: int) -> None:
        """One message for the group: what changed since its last one."""
        lists: dict[NotificationKind, list[Incident]] = {
            "new": [],
            "changed": [],
            "resolved": [],
            "flapping": [],
        }
        told: set[str] = set()
        for incident_id in group.news:
            incident = self._incidents.get(incident_id)
            if incident is None or self._group_of.get(incident_id) != key:
                continue
            kind = self._news(incident)
            if kind is None:
                self._muted.pop(incident_id, None)
                continue
            mute = self.muted_by(incident)
            if mute is not None:
                self._hold(incident, mute, now)
                continue
            lists[kind].append(_copy(incident))
            told.add(incident_id)
            self._told(incident, kind, now)
        group.news.clear()
        repeat, group.repeat = group.repeat, False
        still: list[Incident] = []
        still_count = 0  # listed in full only in a reminder: a storm's group is large
        for incident_id in list(group.members):
            incident = self._incidents.get(incident_id)
            if incident is None or incident_id in told:
                continue
            if not incident.open:
                if incident.notified not in _PROBLEM_TOLD:
                    del group.members[incident_id]  # nothing more to say of it
                continue
            if incident.notified != incident.status or incident_id in self._muted:
                continue
            still_count += 1
            if repeat:
                if (
                    incident.status != "critical"
                    or incident.acked_at is not None
                    or incident.flapping
                ):
                    continue
                incident.notified_at = now
                self._dirty[incident_id] = incident
                heapq.heappush(self._repeats, (now + self._repeat, incident_id))
                still.append(_copy(incident))
        if not any(lists.values()) and not (repeat and still):
            return
        self._notifications.append(
            Notification(
                id=secrets.token_hex(8),
                time=now,
                group=dict(group.labels),
                still_firing=still,
                still_firing_count=still_count,
                repeat=repeat and bool(still),
                **lists,
            )
        )
        group.last_sent = now

    def _news(self, incident: Incident) -> NotificationKind | None:
        """What is to be told of the incident, against what was last told."""
        if incident.flapping:
            return None if incident.id in self._flap_told else "flapping"
        if incident.open:
            if incident.notified is None or incident.notified == "ok":
                return "new"
            return "changed" if incident.notified != incident.status else None
        return "resolved" if incident.notified in _PROBLEM_TOLD else None

    def _told(self, incident: Incident, kind: NotificationKind, now: int) -> None:
        self._muted.pop(incident.id, None)
        if kind == "flapping":
            self._flap_told.add(incident.id)
            return
        incident.notified = incident.status
        incident.notified_at = now
        if incident.status != "ok" and (
            incident.peak is None or SEVERITY[incident.status] > SEVERITY[incident.peak]
        ):
            incident.peak = incident.status
        self._dirty[incident.id] = incident
        if incident.status == "critical" and self._repeat:
            heapq.heappush(self._repeats, (now + self._repeat, incident.id))

    def _hold(self, incident: Incident, mute: str, now: int) -> None:
        """A mute holds the incident's news back: say so once in its history."""
        if incident.id in self._muted:
            return
        self._muted[incident.id] = None
        kind = "silenced" if mute.startswith("silence:") else "inhibited"
        self._history.append(
            Change(incident=incident.id, time=now, kind=kind, status=incident.status, message=mute)
        )


def _labels(incident: Incident) -> dict[str, str]:
    """What matchers see of an incident: its tags, name, host, rule and status."""
    return {
        **incident.tags,
        "name": incident.name,
        "host": incident.host,
        "rule": incident.rule,
        "status": incident.status,
    }


def _label(incident: Incident, label: str) -> str:
    if label in ("name", "host", "rule", "status"):
        return str(getattr(incident, label))
    return incident.tags.get(label, "")


def _matches(match: Match, labels: Mapping[str, str]) -> bool:
    return match.name_matches(labels["name"]) and match.fields_match(labels)


def _is_glob(text: str) -> bool:
    return "*" in text or "?" in text or "[" in text


def _glob(pattern: str) -> re.Pattern[str] | None:
    return re.compile(fnmatch.translate(pattern), re.S) if pattern else None


def _cut(text: str) -> str:
    """At most MAX_DESCRIPTION_BYTES of UTF-8, cut on a character boundary."""
    data = text.encode()
    if len(data) <= MAX_DESCRIPTION_BYTES:
        return text
    return data[:MAX_DESCRIPTION_BYTES].decode(errors="ignore")
