"""``rate``: the share of a group's events that match a condition over a sliding
window (the original's status-code rates: the non-2xx share of ``<app>.response``
events over ``rate_allowed``, 0.1, in 5 minutes).

The window is a ring of 30 buckets per group (times from the rule's clock), so an
event costs a few integer operations whatever its rate. A group is judged on each of
its events once the window holds ``min_events``: critical over ``rate_allowed``,
warning over ``warn``. A problem is returned when it starts or changes and again every
quarter window while it lasts (its ttl is the window, so the incident stays open); an
``ok`` only for a raised group.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from numbat.analyzer.model import Alert, Clock, Status
from numbat.analyzer.rules import Match
from numbat.analyzer.rules._common import Raised, group_values
from numbat.config.rules import RateRuleConfig
from numbat.event import Event

BUCKETS = 30
"""Buckets per window: the window slides in steps of 1/30 of its length."""


class _Window:
    __slots__ = ("alert_id", "bad", "buckets", "emitted", "status", "total")

    def __init__(self, alert_id: str) -> None:
        self.alert_id = alert_id  # the key of its alerts (and in ``Raised``)
        self.buckets: deque[list[int]] = deque()  # [bucket index, events, matching]
        self.total = 0
        self.bad = 0
        self.status: Status = "ok"
        self.emitted = 0  # ms, the last problem returned


class RateRule:
    """See the module's docstring. Alerts: name the rule's name; host the group's host
    (when ``host`` is a ``group_by`` field); id ``host.name`` when grouped by host
    alone, else the group's values and the name joined by dots; tags the other group
    fields; ``value`` the share (0 to 1); ``ttl`` the window (ms)."""

    match = Match(["*.response"])

    def __init__(self, options: RateRuleConfig, *, name: str, clock: Clock) -> None:
        self.name = name
        self.clock = clock
        self.field = options.field
        self.window = round(options.window * 1000)
        self.step = max(1, self.window // BUCKETS)
        self.allowed = options.rate_allowed
        self.warn = options.warn
        self.min_events = options.min_events
        self.group_by = tuple(options.group_by)
        self.by_host = self.group_by == ("host",)
        self.low, self.high = -float("inf"), float("inf")
        self.inverted = False  # True: inside [low, high] matches; False: outside matches
        self.numbers: frozenset[float] = frozenset()
        self.texts: frozenset[str] | None = None
        if options.equals is not None:
            self.numbers = frozenset(float(v) for v in options.equals if not isinstance(v, str))
            self.texts = frozenset(v for v in options.equals if isinstance(v, str))
            self.condition = f"{self.field} one of {', '.join(map(str, options.equals))}"
        elif options.inside is not None:
            self.low, self.high = options.inside
            self.inverted = True
            self.condition = f"{self.field} in {self.low:g}-{self.high:g}"
        else:
            assert options.outside is not None  # the config's default
            self.low, self.high = options.outside
            self.condition = f"{self.field} outside {self.low:g}-{self.high:g}"
        self.windows: dict[str, _Window] = {}
        self.raised = Raised()

    def matches(self, value: object) -> bool | None:
        """Whether a field value meets the condition; None: no usable value."""
        if isinstance(value, bool):
            return None
        if self.texts is not None:
            if isinstance(value, str):
                return value in self.texts
            if isinstance(value, int | float):
                return float(value) in self.numbers
            return None
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return None
        if not isinstance(value, int | float):
            return None
        inside = self.low <= value <= self.high
        return inside if self.inverted else not inside

    def __call__(self, event: Event) -> list[Alert] | None:
        bad = self.matches(event.get(self.field))
        if bad is None:
            return None
        values = group_values(event, self.group_by)
        key = ".".join(values)
        window = self.windows.get(key)
        if window is None:
            alert_id = f"{values[0]}.{self.name}" if self.by_host else f"{key}.{self.name}"
            window = self.windows[key] = _Window(alert_id)
        now = self.clock()
        index = now // self.step
        buckets = window.buckets
        while buckets and buckets[0][0] <= index - BUCKETS:
            _, total, matched = buckets.popleft()
            window.total -= total
            window.bad -= matched
        if buckets and buckets[-1][0] == index:
            last = buckets[-1]
            last[1] += 1
            last[2] += bad
        else:
            buckets.append([index, 1, int(bad)])
        window.total += 1
        window.bad += bad
        if window.total < self.min_events:
            return None
        share = window.bad / window.total
        status: Status = "ok"
        if share > self.allowed:
            status = "critical"
        elif self.warn is not None and share > self.warn:
            status = "warning"
        if status == "ok":
            window.status = "ok"
            if window.alert_id not in self.raised.status:
                return None  # the cheap, common case: fine and never raised
            return self._alert(values, key, status, share, window, now)
        if status == window.status and now - window.emitted < self.window // 4:
            return None
        window.status = status
        window.emitted = now
        return self._alert(values, key, status, share, window, now)

    def _alert(
        self,
        values: tuple[str, ...],
        key: str,
        status: Status,
        share: float,
        window: _Window,
        now: int,
    ) -> list[Alert] | None:
        if not self.raised.update(window.alert_id, status):
            return None
        host = ""
        tags: dict[str, str] = {}
        for field, value in zip(self.group_by, values, strict=True):
            if field == "host":
                host = value
            else:
                tags[field] = value
        where = f" ({key})" if key else ""
        message = (
            f"{window.bad} of {window.total} events{where} in the last {self.window / 1000:g} s"
            f" had {self.condition}: {share:.1%}, allowed {self.allowed:.1%}"
        )
        return [
            Alert(
                name=self.name,
                host=host,
                status=status,
                message=message,
                value=share,
                time=now,
                ttl=float(self.window),
                id=None if self.by_host else window.alert_id,
                tags=tags,
            )
        ]

    def save(self) -> dict[str, Any]:
        """Groups raised or cleared since the last call (status, or None)."""
        return self.raised.save()

    def restore(self, state: Mapping[str, Any], now: int) -> None:
        """Groups raised before a restart: once their window is judged ok again (from
        events after the restart), they resolve."""
        self.raised.restore(state)
