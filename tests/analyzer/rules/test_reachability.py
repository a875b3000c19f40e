"""The reachability rule, as the original: value 0 is critical per host and target."""

from __future__ import annotations

from typing import Any

from numbat.event import Event

from ._helpers import T0, Clock, build, config_error

RULE = "[analyzer.rules.reachability]\n"


def _ev(value: float, target: str = "db", host: str = "web-1", **extra: Any) -> Event:
    return {
        "name": "reachability",
        "host": host,
        "target": target,
        "value": value,
        "time": T0,
        **extra,
    }


def test_value_zero_is_critical_per_host_and_target_then_ok() -> None:
    """Value 0 is critical per host and target; a non-zero value resolves that pair once."""
    rule, match = build(RULE, Clock())
    assert match.name_matches("reachability") and match.name_matches("probe.reachability")
    [alert] = rule(_ev(0))
    assert (alert.name, alert.key, alert.status) == (
        "reachability",
        "web-1.reachability.db",
        "critical",
    )
    assert alert.message == "web-1 cannot reach db" and alert.tags == {"target": "db"}
    [other] = rule(_ev(0, target="cache"))
    assert other.key == "web-1.reachability.cache"
    [ok] = rule(_ev(1))
    assert (ok.key, ok.status) == ("web-1.reachability.db", "ok")
    assert rule(_ev(1)) is None
    assert rule(_ev(1, host="web-2")) is None


def test_target_field_is_configurable() -> None:
    """target_field names the field that holds the target."""
    rule, _ = build(RULE + 'target_field = "peer"\n', Clock())
    [alert] = rule(_ev(0, peer="10.0.0.9"))
    assert alert.message == "web-1 cannot reach 10.0.0.9"


def test_restart_keeps_what_was_raised() -> None:
    """A pair critical before a restart is resolved by its next reachable event."""
    rule, _ = build(RULE, Clock())
    rule(_ev(0))
    saved = rule.save()
    again, _ = build(RULE, Clock())
    again.restore(saved, T0)
    [ok] = again(_ev(1))
    assert ok.status == "ok"


def test_bad_options_name_the_key() -> None:
    """An unknown key or a non-text target_field is an error naming it."""
    assert "analyzer.rules.reachability.level: unknown key" in config_error(RULE + "level = 1\n")
    assert "analyzer.rules.reachability.target_field: expected a string" in config_error(
        RULE + "target_field = 3\n"
    )
