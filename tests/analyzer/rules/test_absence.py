"""The absence rule: a group seen before and now missing, nothing at all since start,
grouping, forgetting and restarts, with an injected clock."""

from __future__ import annotations

from typing import Any

from numbat.event import Event

from ._helpers import T0, Clock, build, config_error

RULE = """[analyzer.rules.backups]
type = "absence"
match = {name = "backup.done"}
every = 60
"""


def _ev(host: str = "db-1", **extra: Any) -> Event:
    return {"name": "backup.done", "host": host, "time": T0, "value": 1, **extra}


def _rule(clock: Clock, toml: str = RULE) -> Any:
    return build(toml, clock)[0]


def test_a_host_seen_before_and_now_missing_is_critical_until_seen_again() -> None:
    """A silent host is critical every `every` seconds until its next event resolves it."""
    clock = Clock()
    rule = _rule(clock)
    assert rule(_ev()) is None
    assert rule.tick(clock.advance(59)) == []
    [alert] = rule.tick(clock.advance(1))
    assert (alert.key, alert.status, alert.ttl) == ("db-1.backups", "critical", 60_000)
    assert alert.message == "backup.done not seen from host db-1 for 60 s (expected every 60 s)"
    assert rule.tick(clock.advance(30)) == []
    [again] = rule.tick(clock.advance(30))
    assert again.value == 120
    [ok] = rule(_ev())
    assert (ok.status, ok.key) == ("ok", "db-1.backups")
    assert rule(_ev()) is None


def test_each_host_is_judged_on_its_own() -> None:
    """One host going quiet raises for that host only."""
    clock = Clock()
    rule = _rule(clock)
    rule(_ev("db-1"))
    rule(_ev("db-2"))
    clock.advance(50)
    rule(_ev("db-2"))
    assert [a.host for a in rule.tick(clock.advance(10))] == ["db-1"]


def test_nothing_at_all_since_start_is_one_critical_for_the_rule() -> None:
    """Nothing at all for `every` after start: one critical (id: the rule), ended by an event."""
    clock = Clock()
    rule = _rule(clock)
    assert rule.tick(clock.advance(59)) == []
    [alert] = rule.tick(clock.advance(1))
    assert (alert.key, alert.host, alert.status) == ("backups", "", "critical")
    assert alert.message == "nothing matching backup.done seen at all for 60 s"
    assert len(rule.tick(clock.advance(60))) == 1
    [ok] = rule(_ev())
    assert (ok.key, ok.status) == ("backups", "ok")
    assert rule.tick(clock.advance(30)) == []


def test_at_start_false_waits_for_a_first_event() -> None:
    """at_start = false: nothing is said before a group has been seen."""
    clock = Clock()
    rule = _rule(clock, RULE + "at_start = false\n")
    assert rule.tick(clock.advance(600)) == []
    assert rule(_ev()) is None


def test_group_by_other_fields() -> None:
    """group_by = ["job"]: groups by job, id job.name, the job in tags, no host."""
    clock = Clock()
    rule = _rule(clock, RULE + 'group_by = ["job"]\n')
    rule(_ev("a", job="nightly"))
    rule(_ev("b", job="nightly"))
    rule(_ev("a", job="hourly"))
    clock.advance(30)
    rule(_ev("c", job="hourly"))
    [alert] = rule.tick(clock.advance(30))
    assert (alert.key, alert.host, alert.tags) == ("nightly.backups", "", {"job": "nightly"})
    assert alert.message.startswith("backup.done not seen from job=nightly for 60 s")


def test_groups_silent_for_forget_after_are_forgotten() -> None:
    """A group silent for forget_after is dropped: no more alerts, saved as None."""
    clock = Clock()
    rule = _rule(clock, RULE + "forget_after = 120\n")
    rule(_ev())
    rule.save()
    assert len(rule.tick(clock.advance(60))) == 1
    assert rule.tick(clock.advance(60)) == []
    assert rule.groups == {} and rule.save() == {"db-1": None}


def test_restart_restarts_deadlines_and_keeps_what_was_missing() -> None:
    """After a restart groups are due `every` from it, and a missing one is resolved when seen."""
    clock = Clock()
    rule = _rule(clock)
    rule(_ev("gone"))
    rule(_ev("fine"))
    rule.tick(clock.advance(60))
    rule(_ev("fine"))
    saved = rule.save()
    assert saved["gone"][2] == 1 and saved["fine"][2] == 0
    clock.advance(3600)
    again = _rule(clock)
    again.restore(saved, clock.now)
    assert again.tick(clock.advance(59)) == []
    assert sorted(a.host for a in again.tick(clock.advance(1))) == ["fine", "gone"]
    [ok] = again(_ev("gone"))
    assert ok.status == "ok"


def test_restart_keeps_a_nothing_at_all_alert() -> None:
    """A 'nothing at all' alert raised before a restart is resolved by the first event after."""
    clock = Clock()
    rule = _rule(clock)
    rule.tick(clock.advance(60))
    saved = rule.save()
    assert saved == {"": 1}
    again = _rule(clock)
    again.restore(saved, clock.now)
    [ok] = again(_ev())
    assert (ok.key, ok.status) == ("backups", "ok")


def test_bad_options_name_the_key() -> None:
    """No match, a bad every, an unknown key: errors name it."""
    assert "analyzer.rules.a.match: required" in config_error(
        '[analyzer.rules.a]\ntype = "absence"\n'
    )
    assert "analyzer.rules.backups.every: must be positive" in config_error(
        RULE.replace("every = 60", "every = 0")
    )
    assert "analyzer.rules.backups.group_by: expected an array" in config_error(
        RULE + 'group_by = "host"\n'
    )
