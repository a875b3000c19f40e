"""The rule loop: dispatch by name and tags, rule failures contained, ``for`` and
``keep_firing_for`` with an injected clock."""

from __future__ import annotations

from numbat.analyzer.engine import BoundRule, Engine, Hysteresis
from numbat.analyzer.model import Alert
from numbat.analyzer.rules import Match, build_rule
from numbat.config.rules import RuleConfig, rule_config
from numbat.event import Event


class Clock:
    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _status(name: str, status: str, host: str = "h1", time: int = 1) -> Event:
    return {"name": name, "status": status, "host": host, "time": time}


def _engine(clock: Clock, **options: object) -> Engine:
    config = rule_config("status", dict(options))
    rule, match = build_rule("status", config, clock)
    hysteresis = None
    if config.for_ or config.keep_firing_for:
        hysteresis = Hysteresis(config.for_ * 1000, config.keep_firing_for * 1000)
    return Engine([BoundRule("status", rule, match, hysteresis)], clock)


def test_the_status_rule_judges_each_event_by_its_status() -> None:
    """warning/critical/unknown/ok come out as alerts of that status, keyed host.name."""
    engine = _engine(Clock())
    alerts = engine.process([_status("disk", s) for s in ("warning", "critical", "ok")])
    assert [(a.key, a.status, a.rule) for a in alerts] == [
        ("h1.disk", "warning", "status"),
        ("h1.disk", "critical", "status"),
        ("h1.disk", "ok", "status"),
    ]
    assert engine.process([{"name": "disk", "value": 3, "time": 1}]) == []


def test_match_filters_by_name_glob_and_tag_equality() -> None:
    """Only events whose name matches a glob and whose tags are equal reach the rule."""
    engine = _engine(Clock(), match={"name": ["web.*", "db"], "tags": {"host": "h2"}})
    events = [
        _status("web.latency", "critical", host="h2"),
        _status("web.latency", "critical", host="h1"),
        _status("db", "warning", host="h2"),
        _status("cache", "critical", host="h2"),
    ]
    assert [(a.name, a.host) for a in engine.process(events)] == [
        ("web.latency", "h2"),
        ("db", "h2"),
    ]


def test_a_failing_rule_is_counted_and_the_others_carry_on() -> None:
    """A rule that raises costs its own alerts only."""

    def broken(event: Event) -> list[Alert]:
        raise RuntimeError("bug")

    clock = Clock()
    good, match = build_rule("status", RuleConfig(type="status"), clock)
    engine = Engine([BoundRule("broken", broken, Match()), BoundRule("status", good, match)], clock)
    assert [a.rule for a in engine.process([_status("x", "critical")])] == ["status"]
    assert engine.rule_errors == 1


def test_for_holds_a_problem_until_it_has_lasted() -> None:
    """With for=30 a critical fires only once 30 s have passed, on the tick, carrying the
    time and value of the first breach; a clear before then opens nothing."""
    clock = Clock()
    engine = _engine(clock, **{"for": 30})
    first = {**_status("disk", "critical", time=111), "value": 91}
    assert engine.process([first]) == []
    clock.now += 10_000
    assert engine.process([{**_status("disk", "critical", time=222), "value": 95}]) == []
    assert engine.tick() == []
    clock.now += 20_000
    [fired] = engine.tick()
    assert (fired.status, fired.breached_at, fired.breached_value, fired.time) == (
        "critical",
        111,
        91,
        clock.now,  # when it fired: the incident's fired_at
    )
    engine.process([_status("other", "critical")])
    engine.process([_status("other", "ok")])
    clock.now += 60_000
    assert [a.key for a in engine.tick()] == []


def test_keep_firing_for_holds_a_resolve_until_it_has_lasted() -> None:
    """With keep_firing_for=60 an ok resolves only after 60 s clear; a problem in between
    cancels it."""
    clock = Clock()
    engine = _engine(clock, keep_firing_for=60)
    assert [a.status for a in engine.process([_status("disk", "critical")])] == ["critical"]
    assert engine.process([_status("disk", "ok")]) == []
    clock.now += 30_000
    assert [a.status for a in engine.process([_status("disk", "warning")])] == ["warning"]
    assert engine.process([_status("disk", "ok")]) == []
    clock.now += 59_000
    assert engine.tick() == []
    clock.now += 1_000
    [resolved] = engine.tick()
    assert (resolved.status, resolved.time) == ("ok", clock.now)


def test_ignored_names_reach_no_rule_and_are_counted_and_evaluations_are_counted() -> None:
    """A name in ``ignore`` feeds no rule (counted in ``ignored``, told apart from a name
    no rule wants); every rule call is counted in ``evaluations``."""
    clock = Clock()
    rule, match = build_rule("status", rule_config("status", {}), clock)
    engine = Engine([BoundRule("status", rule, match)], clock, ignore=["numbat.alert"])
    events = [_status("numbat.alert", "critical"), _status("disk", "critical")] * 2
    assert [a.key for a in engine.process(events)] == ["h1.disk", "h1.disk"]
    assert (engine.ignored, engine.evaluations) == (2, 2)
    mine = Engine([BoundRule("disk-only", rule, Match(["disk"]))], clock, ignore=["x"])
    assert mine.process([_status("cpu", "critical"), _status("x", "critical")]) == []
    assert (mine.ignored, mine.evaluations) == (1, 0)
