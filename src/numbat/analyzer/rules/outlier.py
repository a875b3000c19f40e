"""``outlier``: a value far from its own series' recent history (a series: host, name
and the ``group_by`` fields), by one of two measures:

- ``mad`` (default): the robust z-score ``0.6745 * (x - median) / MAD`` over the last
  ``window`` points (median absolute deviation; when half the window is one value the
  MAD is 0 and the mean absolute deviation times 1.2533 stands in; when every point is
  the same, any other value is infinitely far). Robust: a few spikes in the window do
  not widen the band the way they widen a standard deviation.
- ``ewma``: ``(x - mean) / stddev`` with an exponentially weighted moving mean and
  variance (weight ``alpha`` for the newest point): cheap, O(1) per point, and adapts
  to a drift.

A point is judged against the history before it, then added. Nothing is judged before
``min_points`` points. Each outlier point returns an alert; the next ordinary one
resolves it (``ok`` only for a raised series).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from numbat.analyzer.model import Alert, Clock, Status
from numbat.analyzer.rules import ALL
from numbat.analyzer.rules._common import Raised, group_values, number
from numbat.config.rules import OutlierRuleConfig
from numbat.event import Event

_MAD_SCALE = 0.6745  # makes the MAD of normal data comparable to a standard deviation
_MEAN_AD_SCALE = 1.2533  # sqrt(pi / 2): the same for the mean absolute deviation


def robust_z(x: float, history: list[float]) -> tuple[float, float]:
    """(robust z-score of ``x`` against ``history``, the history's median)."""
    ordered = sorted(history)
    median = _median(ordered)
    deviations = sorted(abs(v - median) for v in ordered)
    mad = _median(deviations)
    if mad > 0:
        return _MAD_SCALE * (x - median) / mad, median
    mean_ad = sum(deviations) / len(deviations)
    if mean_ad > 0:
        return (x - median) / (_MEAN_AD_SCALE * mean_ad), median
    return _infinite(x - median), median


def _median(ordered: list[float]) -> float:
    n = len(ordered)
    middle = n // 2
    return ordered[middle] if n % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _infinite(difference: float) -> float:
    return 0.0 if difference == 0 else math.copysign(math.inf, difference)


class _Ewma:
    __slots__ = ("count", "mean", "var")

    def __init__(self, first: float) -> None:
        self.count = 1
        self.mean = first
        self.var = 0.0

    def z(self, x: float) -> float:
        sd = math.sqrt(self.var)
        return (x - self.mean) / sd if sd > 0 else _infinite(x - self.mean)

    def add(self, x: float, alpha: float) -> None:
        diff = x - self.mean
        step = alpha * diff
        self.mean += step
        self.var = (1 - alpha) * (self.var + diff * step)
        self.count += 1


class OutlierRule:
    """See the module's docstring. Alerts: name the event's name, host its host, id
    ``host.name`` (with the ``group_by`` values appended when there are any), ``value``
    the point judged; the message gives the score and the centre it was judged from.

    >>> from numbat.config.rules import MatchConfig
    >>> options = OutlierRuleConfig(match=MatchConfig(name="lat"), min_points=5)
    >>> rule = OutlierRule(options, name="o", clock=lambda: 0)
    >>> for v in (10, 11, 9, 10, 12):
    ...     _ = rule({"name": "lat", "host": "h", "value": v})
    >>> [a.message for a in rule({"name": "lat", "host": "h", "value": 40})]
    ['lat 40 on h: robust z-score 20.2 from the median 10 of the last 5 points']
    """

    match = ALL  # the config requires a match

    def __init__(self, options: OutlierRuleConfig, *, name: str, clock: Clock) -> None:
        self.name = name
        self.field = options.field
        self.ewma = options.method == "ewma"
        self.window = options.window
        self.alpha = options.alpha
        self.warn = options.warn
        self.critical = options.critical
        self.direction = options.direction
        self.min_points = options.min_points
        self.group_by = tuple(options.group_by)
        self.series: dict[str, deque[float] | _Ewma] = {}
        self.raised = Raised()

    def __call__(self, event: Event) -> list[Alert] | None:
        x = number(event, self.field)
        if x is None:
            return None
        name = str(event["name"])
        raw_host = event.get("host", "")
        host = raw_host if isinstance(raw_host, str) else str(raw_host)
        key = f"{host}.{name}"
        if self.group_by:
            key = ".".join((key, *group_values(event, self.group_by)))
        judged = self._judge(key, x)
        if judged is None:
            return None
        z, centre, status, points = judged
        if not self.raised.update(key, status):
            return None
        time = event.get("time", 0)
        tags = dict(zip(self.group_by, group_values(event, self.group_by), strict=True))
        return [
            Alert(
                name=name,
                host=host,
                status=status,
                message=self._message(name, host, x, z, centre, points),
                value=x,
                time=time if isinstance(time, int) else 0,
                id=key if self.group_by else None,
                tags=tags,
            )
        ]

    def _judge(self, key: str, x: float) -> tuple[float, float, Status, int] | None:
        """(score, centre, status, points judged against) of ``x``, None before
        ``min_points``; adds ``x`` to the history."""
        state = self.series.get(key)
        if state is None:
            self.series[key] = _Ewma(x) if self.ewma else deque([x], maxlen=self.window)
            return None
        if isinstance(state, _Ewma):
            points = state.count
            ready = points >= self.min_points
            z, centre = (state.z(x), state.mean) if ready else (0.0, 0.0)
            state.add(x, self.alpha)
        else:
            points = len(state)
            ready = points >= self.min_points
            z, centre = robust_z(x, list(state)) if ready else (0.0, 0.0)
            state.append(x)
        if not ready:
            return None
        return z, centre, self._status(z), points

    def _status(self, z: float) -> Status:
        far = abs(z)
        if (self.direction == "above" and z < 0) or (self.direction == "below" and z > 0):
            far = 0.0
        if self.critical is not None and far > self.critical:
            return "critical"
        if self.warn is not None and far > self.warn:
            return "warning"
        return "ok"

    def _message(self, name: str, host: str, x: float, z: float, centre: float, points: int) -> str:
        where = f" on {host}" if host else ""
        if self.ewma:
            return (
                f"{name} {x:.4g}{where}: {z:.1f} standard deviations from its moving mean "
                f"{centre:.4g}"
            )
        return (
            f"{name} {x:.4g}{where}: robust z-score {z:.1f} from the median {centre:.4g}"
            f" of the last {points} points"
        )

    def save(self) -> dict[str, Any]:
        """Series raised or cleared since the last call (status, or None). The history
        itself is not saved: after a restart a series is judged again from
        ``min_points`` new points."""
        return self.raised.save()

    def restore(self, state: Mapping[str, Any], now: int) -> None:
        """Series raised before a restart: their next ordinary point resolves them."""
        self.raised.restore(state)
