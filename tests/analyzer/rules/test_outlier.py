"""The outlier rule: robust z-score (median/MAD) and EWMA bands per series, minimum
points, direction, restarts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from numbat.analyzer.rules.outlier import robust_z
from numbat.event import Event

from ._helpers import T0, Clock, build, config_error

RULE = """[analyzer.rules.latency]
type = "outlier"
match = {name = "web.latency"}
min_points = 10
window = 20
"""

NORMAL = [100, 102, 98, 101, 99, 100, 103, 97, 100, 101]


def _ev(value: float, host: str = "web-1", **extra: Any) -> Event:
    return {"name": "web.latency", "host": host, "value": value, "time": T0, **extra}


def _feed(rule: Any, values: Sequence[float], **kw: Any) -> list[Any]:
    out: list[Any] = []
    for value in values:
        out.extend(rule(_ev(value, **kw)) or [])
    return out


def test_robust_z_is_the_scaled_distance_from_the_median() -> None:
    """robust_z: 0.6745 (x - median) / MAD, mean-AD fallback, infinite off a constant history."""
    z, median = robust_z(14, [10, 11, 9, 10, 12])
    assert median == 10 and math.isclose(z, 0.6745 * 4)
    z, _ = robust_z(20, [10, 10, 10, 10, 20])  # MAD 0, mean AD 2
    assert math.isclose(z, 10 / (1.2533 * 2))
    assert robust_z(11, [5, 5, 5]) == (math.inf, 5)
    assert robust_z(5, [5, 5, 5]) == (0.0, 5)


def test_a_spike_is_critical_and_the_next_ordinary_point_resolves() -> None:
    """After min_points, a far point is critical naming the score; then ok once."""
    rule, _ = build(RULE, Clock())
    assert _feed(rule, NORMAL) == []
    [alert] = _feed(rule, [180])
    assert (alert.status, alert.key, alert.value) == ("critical", "web-1.web.latency", 180)
    assert alert.message.startswith("web.latency 180 on web-1: robust z-score ")
    assert alert.message.endswith("from the median 100 of the last 10 points")
    [ok] = _feed(rule, [101])
    assert ok.status == "ok"
    assert _feed(rule, [99]) == []


def test_warning_between_the_levels() -> None:
    """A point beyond warn but within critical is a warning."""
    rule, _ = build(RULE + "warn = 3\ncritical = 50\n", Clock())
    _feed(rule, NORMAL)
    [alert] = _feed(rule, [110])  # z = 0.6745 * 10 / 1 ~ 6.7
    assert alert.status == "warning"


def test_nothing_is_judged_before_min_points() -> None:
    """Fewer points than min_points: even a wild value says nothing."""
    rule, _ = build(RULE, Clock())
    assert _feed(rule, [*NORMAL[:9], 10_000]) == []


def test_each_series_has_its_own_history() -> None:
    """A value normal for one host is judged against that host's history only."""
    rule, _ = build(RULE, Clock())
    _feed(rule, NORMAL, host="a")
    _feed(rule, [v * 10 for v in NORMAL], host="b")
    assert _feed(rule, [1000], host="b") == []
    assert len(_feed(rule, [1000], host="a")) == 1


def test_direction_above_ignores_drops() -> None:
    """direction = "above": a fall far below the median is not an outlier."""
    rule, _ = build(RULE + 'direction = "above"\n', Clock())
    _feed(rule, NORMAL)
    assert _feed(rule, [1]) == []
    assert len(_feed(rule, [500])) == 1


def test_the_window_forgets_old_points() -> None:
    """With window = 20, a level that has held 20 points is the new normal."""
    rule, _ = build(RULE, Clock())
    _feed(rule, NORMAL)
    high = [v + 400 for v in NORMAL * 2]
    assert [a.status for a in _feed(rule, high[:1])] == ["critical"]
    assert [a.status for a in _feed(rule, high[1:])][-1] == "ok"
    assert _feed(rule, [500, 501, 499]) == []
    assert [a.status for a in _feed(rule, [100])] == ["critical"]  # the old level is gone


def test_ewma_bands() -> None:
    """method = "ewma": a point many moving standard deviations away is critical."""
    rule, _ = build(RULE + 'method = "ewma"\nalpha = 0.3\n', Clock())
    assert _feed(rule, NORMAL * 2) == []
    [alert] = _feed(rule, [200])
    assert alert.status == "critical"
    assert "standard deviations from its moving mean 100" in alert.message


def test_restart_keeps_what_was_raised() -> None:
    """A series raised before a restart resolves on its next judged ordinary point."""
    rule, _ = build(RULE, Clock())
    _feed(rule, [*NORMAL, 500])
    saved = rule.save()
    assert saved == {"web-1.web.latency": "critical"}
    again, _ = build(RULE, Clock())
    again.restore(saved, T0)
    assert _feed(again, NORMAL) == []  # history rebuilds first
    [ok] = _feed(again, [100])
    assert ok.status == "ok"


def test_bad_options_name_the_key() -> None:
    """No match, a bad method, alpha, window or min_points: errors name the key."""
    assert "analyzer.rules.o.match: required" in config_error(
        '[analyzer.rules.o]\ntype = "outlier"\n'
    )
    assert "analyzer.rules.latency.method: got 'mean'" in config_error(RULE + 'method = "mean"\n')
    assert "analyzer.rules.latency.alpha: between 0 and 1" in config_error(RULE + "alpha = 1\n")
    assert "analyzer.rules.latency.min_points: 30 is more than window" in config_error(
        RULE.replace("min_points = 10", "min_points = 30")
    )
    assert "analyzer.rules.latency.warn: a z-score level must be positive" in config_error(
        RULE + "warn = -1\n"
    )
