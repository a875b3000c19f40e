"""Rules run over past or made-up events with a clock that follows the events' time:
``numbat analyzer replay`` (events from the store) and ``numbat analyzer test`` (events
and expectations from a file) share :class:`Simulation`.

The simulation is the daemon's judging without its I/O: the same rules (built by
:func:`~numbat.analyzer.daemon.bind_rules`), the same :class:`Engine` and a real
:class:`IncidentManager`, but no listener, no notifier and no state database. Its clock
is the time of the event being judged; between events it ticks the engine and the
manager every ``tick_interval`` of event time, as the daemon ticks every
``tick_interval`` of wall time, so heartbeat deadlines, ``for``, keep-alive expiry and
windows play out as they would have. What it reports are the incidents' status changes
(the manager's history): opened, raised, lowered, resolved, expired, flapping.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from numbat.analyzer.daemon import OWN_EVENTS, bind_rules
from numbat.analyzer.engine import Engine
from numbat.analyzer.incidents import IncidentManager
from numbat.analyzer.model import Change, Incident
from numbat.config import AnalyzerConfig
from numbat.config.rules import RuleConfig
from numbat.event import Event

__all__ = [
    "REPORTED",
    "Reported",
    "Simulation",
    "format_time",
    "parse_duration",
    "parse_time",
    "replay",
    "restore_numbers",
]

REPORTED = frozenset({"opened", "raised", "lowered", "resolved", "expired", "flapping"})
"""The history kinds a simulation reports (not acks and silences: it makes none)."""

_UNITS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> int:
    """A duration such as ``90s``, ``1h30m``, ``250ms`` or ``2d`` in ms; ValueError if
    it is not one.

    >>> parse_duration("1h30m"), parse_duration("250ms"), parse_duration("1.5s")
    (5400000, 250, 1500)
    """
    pos, total = 0, 0.0
    for found in _DURATION.finditer(text):
        if found.start() != pos:
            break
        total += float(found[1]) * _UNITS[found[2]]
        pos = found.end()
    if pos != len(text) or not text:
        raise ValueError(f"{text!r} is not a duration (such as 30s, 5m, 1h30m, 250ms)")
    return int(total)


def parse_time(text: str | int, now: int) -> int:
    """A time in ms since the epoch from ms (``1700000000000``), ISO 8601
    (``2026-11-30T07:00:00Z``; UTC when no offset is given), ``now``, or ``now`` minus
    or plus a duration (``-1h``, ``-30m``, ``+5m``, ``now-2d``). ValueError otherwise.

    >>> parse_time("-1h", 7_200_000), parse_time("now", 5), parse_time(42, 0)
    (3600000, 5, 42)
    >>> parse_time("1970-01-01T00:00:01Z", 0), parse_time("1970-01-01T00:00:01+01:00", 0)
    (1000, -3599000)
    """
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    text = str(text).strip()
    relative = text.removeprefix("now")
    if relative == "":
        return now
    if relative[0] in "+-":
        sign = -1 if relative[0] == "-" else 1
        return now + sign * parse_duration(relative[1:])
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give ISO 8601 (2026-11-30T07:00:00Z), ms since the "
            "epoch, now, or now minus a duration (-1h, -30m)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def format_time(ms: int) -> str:
    """ISO 8601 in UTC with milliseconds.

    >>> format_time(1_700_000_000_123)
    '2023-11-14T22:13:20.123Z'
    """
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
_FLOAT = re.compile(r"-?[0-9]+\.[0-9]+(?:e[-+][0-9]+)?|-?[0-9]+e[-+][0-9]+")
_TEXT_KEYS = frozenset({"name", "host", "status", "description", "message"})


def restore_numbers(event: Event) -> Event:
    """A stored event with its number tags as numbers again: a store keeps every tag
    as text (``"4"``), but rules read some as numbers (load-average's ``meta.nprocs``).
    Only text exactly as numbat writes a number (``"4"``, ``"0.5"``, ``"1e+22"``)
    turns back, never ``name``, ``host``, ``status`` or the text fields.

    >>> restore_numbers({"name": "7", "value": 1.0, "meta.nprocs": "4", "v": "1.50", "r": "0.5"})
    {'name': '7', 'value': 1.0, 'meta.nprocs': 4, 'v': '1.50', 'r': 0.5}
    """
    for key, value in event.items():
        if type(value) is not str or key in _TEXT_KEYS:
            continue
        if _INT.fullmatch(value):
            event[key] = int(value)
        elif _FLOAT.fullmatch(value) and repr(float(value)) == value:
            event[key] = float(value)
    return event


@dataclass(frozen=True, slots=True)
class Reported:
    """One status change of an incident: the manager's :class:`Change` with who it is
    about (``name``, ``host``, ``rule``), ``now``: the simulated time (ms) the analyzer
    would have made it at, and, when it opened, the first breach. ``now`` can be later
    than ``change.time``, the time of the alert it came from: a ``for`` delay fires the
    last problem alert it held once the delay has passed."""

    change: Change
    now: int
    name: str
    host: str
    rule: str
    breached_at: int | None

    def line(self) -> str:
        """One line a person reads: time, kind, status, incident, rule, message."""
        change = self.change
        status = change.status + (f" (was {change.previous})" if change.previous else "")
        text = f"{format_time(self.now)}  {change.kind:<8} {status:<22} {change.incident}"
        text += f"  rule={self.rule}" if self.rule else ""
        if change.value is not None:
            text += f" value={change.value:g}"
        if self.breached_at is not None and self.breached_at != self.now:
            text += f" breached={format_time(self.breached_at)}"
        return text + (f"  {change.message}" if change.message else "")

    def json(self) -> dict[str, object]:
        """The change as a JSON object: ``time`` (ms, and as ISO 8601 in ``at``) when
        the analyzer would have made it, ``alert_time`` the time of its alert."""
        change = self.change
        found: dict[str, object] = {
            "time": self.now,
            "at": format_time(self.now),
            "alert_time": change.time,
            "kind": change.kind,
            "incident": change.incident,
            "status": change.status,
            "previous": change.previous,
            "name": self.name,
            "host": self.host,
            "rule": self.rule,
            "value": change.value,
            "message": change.message,
        }
        if self.breached_at is not None:
            found["breached_at"] = self.breached_at
        return found


MAX_TICKS = 86_400
"""The most ticks a replay makes by default (about 0.8 s of CPU with the default rules):
over a range longer than a day it ticks less often than ``tick_interval``."""


def replay_tick(config: AnalyzerConfig, start: int, end: int) -> int:
    """The tick (ms) a replay of ``[start, end)`` uses: ``tick_interval``, or coarser so
    that it makes at most :data:`MAX_TICKS` ticks (a 30-day replay ticks every 30 s).

    >>> from numbat.config import loads
    >>> config = loads("").analyzer
    >>> replay_tick(config, 0, 3_600_000), replay_tick(config, 0, 30 * 86_400_000)
    (1000, 30000)
    """
    tick = max(1, int(config.tick_interval * 1000))
    return max(tick, -(-(end - start) // MAX_TICKS))


def heartbeat_rules(rules: dict[str, RuleConfig]) -> list[str]:
    """The rules that judge heartbeats (a heartbeat rule, an absence rule on heartbeat
    names): they cannot be replayed from a store that keeps no heartbeats."""
    found = []
    for name, rule in rules.items():
        names = rule.match.names if rule.match is not None else []
        on_beats = bool(names) and all(n.endswith("heartbeat") for n in names)
        if rule.type == "heartbeat" or (rule.type == "absence" and on_beats):
            found.append(name)
    return found


class Simulation:
    """The configured rules and a real incident manager on an event-time clock.

    ``config``: the ``[analyzer]`` section (grouping, flapping, inhibition, the
    ``tick_interval`` in seconds, unless ``tick_ms`` is given); ``rules``: the rules to run (as
    :func:`~numbat.analyzer.daemon.configured_rules` gives them); ``start``: ms, the
    clock's first reading. Feed events in time order with :meth:`feed` (an event older
    than the clock is judged at the clock's time, as a late event would be), let time
    pass with :meth:`advance`; each returns the changes it caused. Raises ConfigError
    (from bind_rules) for a rule that cannot be built.

    >>> from numbat.config import loads
    >>> config = loads('[analyzer]\\ndefaults = false\\n[analyzer.rules.s]\\ntype = "status"')
    >>> sim = Simulation(config.analyzer, config.analyzer.rule_configs, start=0)
    >>> [r.change.kind for r in sim.feed({"name": "x", "status": "critical", "time": 5})]
    ['opened']
    """

    def __init__(
        self,
        config: AnalyzerConfig,
        rules: dict[str, RuleConfig],
        *,
        start: int,
        tick_ms: int | None = None,
    ) -> None:
        self.now = start
        self.tick_ms = tick_ms or max(1, int(config.tick_interval * 1000))
        # On multiples of the tick since the epoch, not of the start: a replay from
        # "-5m" ticks at the same instants whenever it runs, so it says the same.
        self._next_tick = (start // self.tick_ms + 1) * self.tick_ms
        self.engine = Engine(bind_rules(rules, self.clock), self.clock)
        self.manager = IncidentManager(
            clock=self.clock,
            grouping=config.grouping,
            flapping=config.flapping,
            inhibit=config.inhibit,
            state_interval=config.writeback.state_interval,
        )
        self.events = 0
        self.skipped = 0  # the analyzer's own alert events: never judged (as the daemon)

    def clock(self) -> int:
        """The simulated time, ms."""
        return self.now

    def feed(self, event: Event) -> list[Reported]:
        """Let time pass up to the event's, then judge it; the changes that made."""
        time = event.get("time")
        found = self.advance(time) if isinstance(time, int) and time > self.now else []
        if event.get("name") in OWN_EVENTS:
            self.skipped += 1
            return found
        self.events += 1
        alerts = self.engine.process([event])
        if alerts:
            self.manager.apply(alerts)
        return found + self._take()

    def advance(self, to: int) -> list[Reported]:
        """Tick every ``tick_interval`` up to ``to`` (ms), then set the clock to it."""
        found: list[Reported] = []
        while self._next_tick <= to:
            self._tick(self._next_tick)
            self._next_tick += self.tick_ms
            found += self._take()
        self.now = max(self.now, to)
        return found

    def open_incidents(self) -> list[Incident]:
        """The incidents open now, most severe first (the manager's own objects)."""
        return self.manager.incidents(open=True)

    def _tick(self, now: int) -> None:
        self.now = now
        alerts = self.engine.tick(now)
        if alerts:
            self.manager.apply(alerts)
        self.manager.tick(now)

    def _take(self) -> list[Reported]:
        """The manager's new status changes (its other effects are dropped: nothing is
        persisted, notified or written back)."""
        if not self.manager.dirty:
            return []
        found = []
        for change in self.manager.take().history:
            if change.kind not in REPORTED:
                continue
            incident = self.manager.get(change.incident)
            name = incident.name if incident else ""
            host = incident.host if incident else ""
            rule = incident.rule if incident else ""
            breached = incident.breached_at if incident and change.kind == "opened" else None
            found.append(Reported(change, self.now, name, host, rule, breached))
        return found


async def replay(
    simulation: Simulation, events: AsyncIterable[Event] | Iterable[Event], end: int
) -> AsyncIterable[Reported]:
    """Every change the simulation makes over ``events`` (in time order), then the
    ticks up to ``end`` (ms)."""
    if isinstance(events, AsyncIterable):
        async for event in events:
            for reported in simulation.feed(event):
                yield reported
    else:
        for event in events:
            for reported in simulation.feed(event):
                yield reported
    for reported in simulation.advance(end):
        yield reported
