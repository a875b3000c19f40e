"""``threshold`` and its presets ``memory``, ``disk`` and ``load-average``: a number
judged against warn/critical levels, above or below, on the value itself or on its rate
of change per second.

An alert goes out for every breaching event (each refreshes its incident's keep-alive)
and an ``ok`` only for a series this rule has raised. A series is host, name and the
``group_by`` fields; the incident id is ``host.name`` (with the ``group_by`` values
appended when there are any).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from numbat.analyzer.model import Alert, Clock, Status
from numbat.analyzer.rules import ALL, Match
from numbat.analyzer.rules._common import Raised, group_values, number
from numbat.config.rules import LoadAverageRuleConfig, ThresholdRuleConfig
from numbat.event import Event


def _level_status(
    value: float, warn: float | None, critical: float | None, below: bool, factor: float
) -> tuple[Status, float | None]:
    """The status of ``value`` and the level it crossed (levels times ``factor``)."""
    if below:
        if critical is not None and value < critical * factor:
            return "critical", critical * factor
        if warn is not None and value < warn * factor:
            return "warning", warn * factor
    else:
        if critical is not None and value > critical * factor:
            return "critical", critical * factor
        if warn is not None and value > warn * factor:
            return "warning", warn * factor
    return "ok", None


class ThresholdRule:
    """Levels on a field's value or its rate of change (see the module's docstring).

    Rate of change: ``(v2 - v1) / (t2 - t1)`` per second between consecutive points of a
    series (times in ms); a point not newer than the last is skipped; with ``counter``
    a decrease is a reset and the new value counts from 0. ``value`` of the alert: what
    was judged (the value, or the rate per second).

    """

    match = ALL

    def __init__(self, options: ThresholdRuleConfig, *, name: str, clock: Clock) -> None:
        self.name = name
        self.field = options.field
        self.warn = options.warn
        self.critical = options.critical
        self.below = options.below
        self.on_rate = options.on == "rate"
        self.counter = options.counter
        self.scale = options.scale
        self.group_by = tuple(options.group_by)
        self.raised = Raised()
        self.last: dict[str, tuple[int, float]] = {}  # series -> (time ms, value): rates

    def __call__(self, event: Event) -> list[Alert] | None:
        value = number(event, self.field)
        if value is None:
            return None
        time = event.get("time", 0)
        time = time if isinstance(time, int) else 0
        if self.on_rate:
            name, host, key, tags = self._series(event)
            judged = self._rate(key, time, value)
            if judged is None:
                return None
        else:
            judged = value
        factor = 1.0
        if self.scale:
            found = number(event, self.scale)
            factor = found if found is not None and found > 0 else 1.0
        status, level = _level_status(judged, self.warn, self.critical, self.below, factor)
        if status == "ok" and not self.raised.status:
            return None  # the common case, kept cheap: fine, and nothing to resolve
        if not self.on_rate:
            name, host, key, tags = self._series(event)
        if not self.raised.update(key, status):
            return None
        ttl = event.get("ttl")
        return [
            Alert(
                name=name,
                host=host,
                status=status,
                message=self._message(name, host, judged, status, level),
                value=judged,
                time=time,
                ttl=float(ttl) if isinstance(ttl, int | float) else None,
                id=key if self.group_by else None,
                tags=tags,
            )
        ]

    def _series(self, event: Event) -> tuple[str, str, str, dict[str, str]]:
        """(name, host, series key, tags) of an event."""
        name = str(event["name"])
        raw_host = event.get("host", "")
        host = raw_host if isinstance(raw_host, str) else str(raw_host)
        key = f"{host}.{name}"
        if not self.group_by:
            return name, host, key, {}
        values = group_values(event, self.group_by)
        key = ".".join((key, *values))
        return name, host, key, dict(zip(self.group_by, values, strict=True))

    def _rate(self, key: str, time: int, value: float) -> float | None:
        previous = self.last.get(key)
        if previous is not None and time <= previous[0]:
            return None  # a late or repeated point: no rate, and the newer one is kept
        self.last[key] = (time, value)
        if previous is None:
            return None
        delta = value - previous[1]
        if delta < 0 and self.counter:
            delta = value  # a reset: counted again from 0
        return delta * 1000.0 / (time - previous[0])

    def _message(
        self, name: str, host: str, judged: float, status: Status, level: float | None
    ) -> str:
        what = f"{name} rate of change {judged:.4g}/s" if self.on_rate else f"{name} {judged:.4g}"
        where = f" on {host}" if host else ""
        if level is None:
            return f"{what}{where}: back within levels"
        side = "below" if self.below else "above"
        return f"{what}{where}: {side} the {status} level {level:.4g}"

    def save(self) -> dict[str, Any]:
        """Series keys raised or cleared since the last call (status, or None)."""
        return self.raised.save()

    def restore(self, state: Mapping[str, Any], now: int) -> None:
        """The series raised before a restart: their next good point resolves them."""
        self.raised.restore(state)


class MemoryRule(ThresholdRule):
    """The original's memory rule: ``memory`` (value: the fraction used) over 0.75 is
    warning, over 0.9 critical."""

    match = Match(["memory"])


class DiskRule(ThresholdRule):
    """Disk use: ``disk`` or ``disk.*`` (value: the fraction used) over 0.8 is warning,
    over 0.9 critical; one incident per host and name (so per mount)."""

    match = Match(["disk", "disk.*"])


class LoadAverageRule:
    """The original's load rule: ``load-average.<period>`` (1, 5, 15 minutes) over the
    period's warn/critical level times the host's CPU count (the ``meta.nprocs``
    field, 1 when absent). Message as the original: ``"5 minute load average
    (9.20/4 CPUs) on host web-1"``. One incident per host and period (the original had
    one per host, and no ok: it expired); an ``ok`` resolves a raised one.

    >>> rule = LoadAverageRule(LoadAverageRuleConfig(), name="load", clock=lambda: 0)
    >>> event = {"name": "load-average.5", "host": "h", "value": 17.2, "meta.nprocs": 4}
    >>> [(a.status, a.message) for a in rule(event)]
    [('critical', '5 minute load average (17.20/4 CPUs) on host h')]
    """

    match = Match(["load-average.*"])

    def __init__(self, options: LoadAverageRuleConfig, *, name: str, clock: Clock) -> None:
        self.name = name
        self.nprocs_field = options.nprocs_field
        periods = set(options.warn) & set(options.critical)
        self.levels = {
            f"load-average.{int(p)}": (str(int(p)), options.warn[p], options.critical[p])
            for p in periods
        }
        self.raised = Raised()

    def __call__(self, event: Event) -> list[Alert] | None:
        name = str(event["name"])
        levels = self.levels.get(name)
        value = number(event, "value")
        if levels is None or value is None:
            return None
        period, warn, critical = levels
        nprocs = number(event, self.nprocs_field)
        nprocs = nprocs if nprocs is not None and nprocs > 0 else 1.0
        status, _ = _level_status(value, warn, critical, False, nprocs)
        if status == "ok" and not self.raised.status:
            return None
        raw_host = event.get("host", "")
        host = raw_host if isinstance(raw_host, str) else str(raw_host)
        if not self.raised.update(f"{host}.{name}", status):
            return None
        time = event.get("time", 0)
        ttl = event.get("ttl")
        return [
            Alert(
                name=name,
                host=host,
                status=status,
                message=(
                    f"{period} minute load average ({value:.2f}/{nprocs:g} CPUs) on host {host}"
                ),
                value=value,
                time=time if isinstance(time, int) else 0,
                ttl=float(ttl) if isinstance(ttl, int | float) else None,
            )
        ]

    def save(self) -> dict[str, Any]:
        """Keys raised or cleared since the last call (status, or None)."""
        return self.raised.save()

    def restore(self, state: Mapping[str, Any], now: int) -> None:
        """The keys raised before a restart: their next good point resolves them."""
        self.raised.restore(state)
