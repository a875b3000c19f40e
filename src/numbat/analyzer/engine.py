"""The plain loop that runs rules: every event to every rule that matches it, every tick
to every rule that acts on time, and ``for`` / ``keep_firing_for`` on what they return.

Dispatch is by name first: the rules whose globs match a name are found once and
remembered (a bounded cache), so an event no rule wants costs one dict lookup. A rule
that raises is logged (rate-limited) and counted (``rule_errors``); the others carry on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from numbat._ratelimit import RateLimitedLog
from numbat.analyzer.model import Alert, Clock
from numbat.analyzer.rules import Match, RuleFunction, Ticking
from numbat.event import Event

log = logging.getLogger(__name__)

NAME_CACHE = 100_000
"""Names whose matching rules are remembered; past that the cache starts over."""


@dataclass(slots=True)
class Hysteresis:
    """``for`` and ``keep_firing_for`` (ms) of one rule, per alert key.

    A problem alert for a key not firing yet waits ``for_ms`` (its first breach kept:
    ``breached_at``, ``breached_value``); it fires when that time has passed with no ok
    in between, on the next alert or tick. An ok for a firing key waits ``keep_ms``; a
    problem in between cancels it. With both 0 it passes alerts through, noting only the
    first breach.
    """

    for_ms: float = 0.0
    keep_ms: float = 0.0
    # key -> (since ms, the latest problem alert, its first breach time, first value)
    pending: dict[str, tuple[int, Alert, int, float | None]] = field(default_factory=dict)
    firing: dict[str, tuple[int, float | None]] = field(default_factory=dict)  # breach
    clearing: dict[str, tuple[int, Alert]] = field(default_factory=dict)  # ok since, ok

    def feed(self, alert: Alert, now: int) -> Alert | None:
        """The alert to pass on now, if any."""
        key = alert.key
        if alert.status != "ok":
            self.clearing.pop(key, None)
            breach = self.firing.get(key)
            if breach is not None:
                return _breached(alert, breach)
            waiting = self.pending.get(key)
            if waiting is None:
                waiting = (now, alert, alert.breached_at or alert.time, _value(alert))
            else:
                waiting = (waiting[0], alert, waiting[2], waiting[3])
            if now - waiting[0] >= self.for_ms:
                self.pending.pop(key, None)
                self.firing[key] = (waiting[2], waiting[3])
                return _breached(alert, (waiting[2], waiting[3]))
            self.pending[key] = waiting
            return None
        if self.pending.pop(key, None) is not None:
            return None  # cleared before it fired: no incident at all
        if key not in self.firing:
            return alert  # nothing of ours; the manager ignores an ok it has no incident for
        if self.keep_ms <= 0:
            del self.firing[key]
            return alert
        if key not in self.clearing:
            self.clearing[key] = (now, alert)
        return None

    def tick(self, now: int) -> list[Alert]:
        """Pending problems whose ``for`` has passed, clears whose ``keep_firing_for`` has."""
        due: list[Alert] = []
        for key, (since, alert, at, value) in list(self.pending.items()):
            if now - since >= self.for_ms:
                del self.pending[key]
                self.firing[key] = (at, value)
                alert.time = now  # it fires now: the incident's fired_at
                due.append(_breached(alert, (at, value)))
        for key, (since, ok) in list(self.clearing.items()):
            if now - since >= self.keep_ms:
                del self.clearing[key]
                self.firing.pop(key, None)
                ok.time = now  # it resolves now, not at the first ok
                due.append(ok)
        return due


def _value(alert: Alert) -> float | None:
    return alert.breached_value if alert.breached_at is not None else alert.value


def _breached(alert: Alert, breach: tuple[int, float | None]) -> Alert:
    alert.breached_at, alert.breached_value = breach
    return alert


@dataclass(slots=True)
class BoundRule:
    """A configured rule: its name, callable, match and hysteresis."""

    name: str
    rule: RuleFunction
    match: Match
    hysteresis: Hysteresis | None = None  # None: no for / keep_firing_for


def _never(event: Event) -> None:
    raise AssertionError("an ignored name reached a rule")


_IGNORE_RULE = BoundRule("(ignored)", _never, Match())
_Dispatch = tuple[tuple[BoundRule, RuleFunction, bool], ...]
_IGNORED: _Dispatch = ((_IGNORE_RULE, _IGNORE_RULE.rule, False),)
"""What the name cache holds for an ignored name (told apart by identity: not the
empty tuple, which every name no rule wants shares)."""


class Engine:
    """Runs rules over events and ticks; returns the alerts to hand to the incident
    manager, each stamped with its rule's name.

    >>> from numbat.analyzer.rules.status import StatusRule
    >>> from numbat.config.rules import RuleConfig
    >>> status = StatusRule(RuleConfig(type="status"), name="status", clock=lambda: 0)
    >>> engine = Engine([BoundRule("status", status, status.match)], clock=lambda: 0)
    >>> [a.status for a in engine.process([{"name": "x", "status": "warning", "time": 1}])]
    ['warning']
    """

    def __init__(
        self, rules: Sequence[BoundRule], clock: Clock, *, ignore: Iterable[str] = ()
    ) -> None:
        self.rules = list(rules)
        self.clock = clock
        self.rule_errors = 0
        self.evaluations = 0
        self.ignored = 0  # events dropped because their name is in ``ignore``
        self._ignore = frozenset(ignore)
        # name -> (rule, its callable, whether its match has tag conditions) per rule
        # that wants the name; _IGNORED for a name in ``ignore``.
        self._by_name: dict[str, _Dispatch] = {}
        self._tickers = [r for r in self.rules if isinstance(r.rule, Ticking) or r.hysteresis]
        self._warn = RateLimitedLog(log)

    def process(self, events: Iterable[Event]) -> list[Alert]:
        """Every event through the rules that match it; the alerts to pass on. An event
        whose name is in ``ignore`` goes to no rule (counted in ``ignored``)."""
        out: list[Alert] = []
        now = self.clock()
        by_name = self._by_name
        evaluations = 0
        try:
            for event in events:
                rules = by_name.get(event["name"])  # type: ignore[arg-type]  # a str
                if rules is None:
                    rules = self._rules_for(str(event["name"]))
                if rules is _IGNORED:
                    self.ignored += 1
                    continue
                for bound, rule, tags in rules:
                    if tags and not bound.match.fields_match(event):
                        continue
                    evaluations += 1
                    try:
                        found = rule(event)
                    except Exception as exc:  # a rule's bug must not stop the others
                        self._failed(bound, exc)
                        continue
                    if found:
                        self._pass_on(bound, found, now, out)
        finally:
            self.evaluations += evaluations
        return out

    def tick(self, now: int | None = None) -> list[Alert]:
        """Let rules act on time (missed beats, absences, ``for`` and ``keep_firing_for``)."""
        now = self.clock() if now is None else now
        out: list[Alert] = []
        for bound in self._tickers:
            if isinstance(bound.rule, Ticking):
                try:
                    found = list(bound.rule.tick(now))
                except Exception as exc:
                    self._failed(bound, exc)
                    found = []
                self._pass_on(bound, found, now, out)
            if bound.hysteresis is not None:
                for alert in bound.hysteresis.tick(now):
                    out.append(alert)
        return out

    def _pass_on(
        self, bound: BoundRule, found: Iterable[Alert], now: int, out: list[Alert]
    ) -> None:
        hysteresis = bound.hysteresis
        for alert in found:
            alert.rule = bound.name
            if not alert.time:
                alert.time = now
            if hysteresis is None:
                out.append(alert)
            elif (passed := hysteresis.feed(alert, now)) is not None:
                out.append(passed)

    def _rules_for(self, name: str) -> _Dispatch:
        if len(self._by_name) >= NAME_CACHE:
            self._by_name.clear()
        if name in self._ignore:
            rules = _IGNORED
        else:
            rules = tuple(
                (r, r.rule, bool(r.match.tags)) for r in self.rules if r.match.name_matches(name)
            )
        self._by_name[name] = rules
        return rules

    def _failed(self, bound: BoundRule, exc: Exception) -> None:
        self.rule_errors += 1
        self._warn.warning(
            bound.name, "rule %s failed: %s: %s", bound.name, type(exc).__name__, exc
        )
