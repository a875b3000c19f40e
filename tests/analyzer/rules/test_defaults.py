"""The default rule set (what `numbat up` runs) through the engine: a healthy fleet
costs no alert; a dead host, a full memory and a silent collector each raise theirs."""

from __future__ import annotations

from numbat.analyzer.engine import BoundRule, Engine, Hysteresis
from numbat.analyzer.rules import build_rule
from numbat.config.rules import default_rules
from numbat.event import Event

from ._helpers import Clock


def _engine(clock: Clock) -> Engine:
    bound = []
    for name, options in default_rules().items():
        rule, match = build_rule(name, options, clock)
        hysteresis = None
        if options.for_ or options.keep_firing_for:
            hysteresis = Hysteresis(options.for_ * 1000, options.keep_firing_for * 1000)
        bound.append(BoundRule(name, rule, match, hysteresis))
    return Engine(bound, clock)


def _host(host: str, now: int, memory: float = 0.5) -> list[Event]:
    base: Event = {"host": host, "time": now}
    return [
        {"name": "web.heartbeat", "ttl": 16_000, **base},
        {"name": "numbat.collector.heartbeat", "ttl": 25_000, **base},
        {"name": "memory", "value": memory, **base},
        {"name": "disk./", "value": 0.3, **base},
        {"name": "load-average.1", "value": 0.5, "meta.nprocs": 2, **base},
        {"name": "web.response", "statusCode": 200, **base},
    ]


def test_the_default_set_names_its_rules() -> None:
    """status, heartbeat, the three presets and collector-heartbeat, as documented."""
    assert list(default_rules()) == [
        "status",
        "heartbeat",
        "load-average",
        "memory",
        "disk",
        "collector-heartbeat",
    ]


def test_a_healthy_fleet_costs_no_alert() -> None:
    """Every host beating and within levels for a minute: not one alert."""
    clock = Clock()
    engine = _engine(clock)
    for _ in range(6):
        for i in range(20):
            assert engine.process(_host(f"h{i}", clock.now)) == []
        assert engine.tick(clock.advance(10)) == []


def test_a_dead_host_and_a_full_memory_each_raise_their_alert() -> None:
    """A dead host and a full memory raise exactly their own alerts, nothing else."""
    clock = Clock()
    engine = _engine(clock)
    engine.process(_host("h1", clock.now) + _host("h2", clock.now))
    alerts = []
    for _ in range(3):
        clock.advance(10)
        alerts += engine.process(_host("h2", clock.now, memory=0.95))
        alerts += engine.tick(clock.now)
    found = sorted({(a.rule, a.key, a.status) for a in alerts})
    assert found == [
        ("collector-heartbeat", "h1.collector-heartbeat", "critical"),
        ("heartbeat", "h1.numbat.collector.heartbeat", "critical"),
        ("heartbeat", "h1.web.heartbeat", "critical"),
        ("memory", "h2.memory", "critical"),
    ]
