"""The threshold rule and its presets (memory, disk, load-average): levels above and
below, rates of change with counter resets, ok only for what was raised, restarts."""

from __future__ import annotations

from typing import Any

from numbat.event import Event

from ._helpers import T0, Clock, build, config_error


def _rule(toml: str) -> Any:
    return build(toml, Clock())[0]


def _ev(name: str, value: float, host: str = "h1", time: int = T0, **extra: Any) -> Event:
    return {"name": name, "value": value, "host": host, "time": time, **extra}


def _statuses(rule: Any, events: list[Event]) -> list[str | None]:
    out: list[str | None] = []
    for event in events:
        found = rule(event)
        out.append(found[0].status if found else None)
    return out


LATENCY = """[analyzer.rules.latency]
type = "threshold"
match = {name = "web.latency"}
warn = 200
critical = 500
"""


def test_levels_above_give_warning_critical_and_ok_only_after_a_raise() -> None:
    """Over warn: warning, over critical: critical, each breach repeats; ok once after a raise."""
    rule = _rule(LATENCY)
    values = [100, 250, 600, 600, 100, 100]
    assert _statuses(rule, [_ev("web.latency", v) for v in values]) == [
        None,
        "warning",
        "critical",
        "critical",
        "ok",
        None,
    ]


def test_the_alert_carries_value_time_ttl_and_a_message() -> None:
    """An alert keys host.name and says the value, the side and the level crossed."""
    rule = _rule(LATENCY)
    [alert] = rule(_ev("web.latency", 612, time=T0 + 5, ttl=30_000))
    assert (alert.key, alert.value, alert.time) == ("h1.web.latency", 612, T0 + 5)
    assert alert.ttl == 30_000
    assert alert.message == "web.latency 612 on h1: above the critical level 500"


def test_levels_below() -> None:
    """below = true: under warn is warning, under critical is critical."""
    rule = _rule(
        '[analyzer.rules.free]\ntype = "threshold"\nmatch = {name = "free"}\n'
        "below = true\nwarn = 10\ncritical = 5\n"
    )
    assert _statuses(rule, [_ev("free", v) for v in (20, 8, 3, 20)]) == [
        None,
        "warning",
        "critical",
        "ok",
    ]


def test_another_field_and_group_by_make_separate_series() -> None:
    """field picks what is judged; group_by values split series and enter the id."""
    rule = _rule(
        '[analyzer.rules.q]\ntype = "threshold"\nmatch = {name = "queue"}\n'
        'field = "depth"\ncritical = 10\ngroup_by = ["queue"]\n'
    )
    [alert] = rule(_ev("queue", 1, depth=50, queue="mail"))
    assert (alert.key, alert.tags) == ("h1.queue.mail", {"queue": "mail"})
    assert rule(_ev("queue", 1, depth=1, queue="jobs")) is None
    assert rule(_ev("queue", 1, queue="mail")) is None  # no depth: not judged


def test_rate_of_change_per_second_between_consecutive_points() -> None:
    """on = rate judges (v2 - v1) / (t2 - t1) per second; first and stale points are skipped."""
    rule = _rule(
        '[analyzer.rules.growth]\ntype = "threshold"\nmatch = {name = "db.size"}\n'
        'on = "rate"\nwarn = 100\ncritical = 1000\n'
    )
    assert rule(_ev("db.size", 0, time=T0)) is None
    [alert] = rule(_ev("db.size", 2000, time=T0 + 10_000))  # 200/s
    assert (alert.status, alert.value) == ("warning", 200)
    assert rule(_ev("db.size", 99_999, time=T0 + 10_000)) is None  # same time: skipped
    [ok] = rule(_ev("db.size", 2100, time=T0 + 20_000))  # 10/s
    assert ok.status == "ok"


def test_a_counter_reset_counts_from_zero() -> None:
    """counter = true reads a decrease as a reset from 0; without it, a negative rate."""
    toml = (
        '[analyzer.rules.errors]\ntype = "threshold"\nmatch = {name = "errors"}\n'
        'on = "rate"\ncritical = 5\nbelow = false\n'
    )
    rule = _rule(toml + "counter = true\n")
    rule(_ev("errors", 1000, time=T0))
    [alert] = rule(_ev("errors", 100, time=T0 + 10_000))  # reset: 100 in 10 s
    assert alert.value == 10 and alert.status == "critical"
    gauge = _rule(toml.replace("critical = 5\nbelow = false", "critical = -5\nbelow = true"))
    gauge(_ev("errors", 1000, time=T0))
    [drop] = gauge(_ev("errors", 100, time=T0 + 10_000))
    assert drop.value == -90


def test_scale_multiplies_the_levels() -> None:
    """scale = a field: the levels are multiplied by its value (1 when absent)."""
    rule = _rule(
        '[analyzer.rules.conns]\ntype = "threshold"\nmatch = {name = "conns"}\n'
        'critical = 100\nscale = "workers"\n'
    )
    assert rule(_ev("conns", 150, workers=2)) is None
    assert rule(_ev("conns", 150))[0].status == "critical"


def test_memory_preset_reproduces_the_original() -> None:
    """memory: over 0.75 warning, over 0.9 critical, then ok (the original's levels)."""
    rule, match = build("[analyzer.rules.memory]\n", Clock())
    assert match.name_matches("memory") and not match.name_matches("memory.x")
    assert _statuses(rule, [_ev("memory", v) for v in (0.5, 0.8, 0.95, 0.5)]) == [
        None,
        "warning",
        "critical",
        "ok",
    ]


def test_disk_preset_judges_each_mount() -> None:
    """disk / disk.*: over 0.8 warning, over 0.9 critical, an incident per mount."""
    rule, match = build("[analyzer.rules.disk]\n", Clock())
    assert match.name_matches("disk") and match.name_matches("disk./var")
    [alert] = rule(_ev("disk./var", 0.95))
    assert (alert.key, alert.status) == ("h1.disk./var", "critical")
    assert rule(_ev("disk./", 0.85))[0].status == "warning"


def test_load_average_levels_are_times_nprocs() -> None:
    """load-average.N over the period's level times meta.nprocs, the original's message."""
    rule, match = build(
        '[analyzer.rules.load-average]\nwarn = {"1" = 1.0}\ncritical = {"1" = 2.0}\n', Clock()
    )
    assert match.name_matches("load-average.1")
    assert rule({**_ev("load-average.1", 3.9), "meta.nprocs": 4}) is None
    [warn] = rule({**_ev("load-average.1", 4.5), "meta.nprocs": 4})
    assert (warn.status, warn.key) == ("warning", "h1.load-average.1")
    assert warn.message == "1 minute load average (4.50/4 CPUs) on host h1"
    assert rule({**_ev("load-average.1", 8.5), "meta.nprocs": 4})[0].status == "critical"
    assert rule(_ev("load-average.1", 2.5))[0].status == "critical"  # no nprocs: 1 CPU
    assert rule(_ev("load-average.1", 0.5))[0].status == "ok"
    assert rule(_ev("load-average.5", 100)) is None  # a period without levels


def test_restart_keeps_what_was_raised() -> None:
    """save() gives the raised keys; after restore the next good value resolves."""
    rule = _rule(LATENCY)
    rule(_ev("web.latency", 600))
    saved = rule.save()
    assert saved == {"h1.web.latency": "critical"} and rule.save() == {}
    again = _rule(LATENCY)
    again.restore(saved, T0)
    assert again(_ev("web.latency", 1))[0].status == "ok"
    assert again.save() == {"h1.web.latency": None}


def test_bad_options_name_the_key() -> None:
    """Missing match, no level, levels the wrong way round, a bad `on`: errors name it."""
    base = '[analyzer.rules.t]\ntype = "threshold"\n'
    assert "analyzer.rules.t.match: required" in config_error(base + "warn = 1\n")
    matched = base + 'match = {name = "x"}\n'
    assert "analyzer.rules.t.warn: give warn, critical or both" in config_error(matched)
    assert "analyzer.rules.t.critical: 1.0 is below warn" in config_error(
        matched + "warn = 2\ncritical = 1\n"
    )
    assert "analyzer.rules.t.on: got 'speed'" in config_error(matched + 'warn = 1\non = "speed"\n')
    assert "analyzer.rules.load-average.warn.x: a period is whole minutes" in config_error(
        '[analyzer.rules.load-average]\nwarn = {"x" = 1.0}\n'
    )
    assert "analyzer.rules.memory.critical: 0.5 is below warn" in config_error(
        "[analyzer.rules.memory]\ncritical = 0.5\n"
    )
