"""The heartbeat rule: tracking from beats, missed beats, resolves, shutdown, forgetting,
restarts, with an injected clock."""

from __future__ import annotations

from typing import Any

from numbat.event import Event

from ._helpers import T0, Clock, build, config_error

RULE = "[analyzer.rules.heartbeat]\n"


def _beat(host: str = "web-1", name: str = "web.heartbeat", ttl: int = 16_000) -> Event:
    return {"name": name, "host": host, "ttl": ttl, "time": T0, "value": 1}


def _rule(clock: Clock, toml: str = RULE) -> Any:
    return build(toml, clock)[0]


def test_a_missed_beat_is_critical_naming_the_key_and_the_beats_missed() -> None:
    """After the ttl passes with no beat, one critical names host.prefix and 1 beat."""
    clock = Clock()
    rule = _rule(clock)
    assert rule(_beat()) is None
    assert rule.tick(clock.advance(15.9)) == []
    [alert] = rule.tick(clock.advance(0.1))
    assert (alert.name, alert.host, alert.key, alert.status) == (
        "web.heartbeat",
        "web-1",
        "web-1.web.heartbeat",
        "critical",
    )
    assert alert.message == "web-1.web heartbeat not heard for 1 beats"
    assert alert.ttl == 16_000 and alert.time == clock.now


def test_silence_repeats_the_critical_every_ttl_with_the_count() -> None:
    """Each further ttl of silence repeats the critical with one more beat missed."""
    clock = Clock()
    rule = _rule(clock)
    rule(_beat())
    assert len(rule.tick(clock.advance(16))) == 1
    assert rule.tick(clock.advance(10)) == []
    [again] = rule.tick(clock.advance(6))
    assert again.message.endswith("not heard for 2 beats") and again.value == 2


def test_the_next_beat_resolves_and_a_healthy_beat_says_nothing() -> None:
    """A beat after a miss returns one ok; beats on time return nothing at all."""
    clock = Clock()
    rule = _rule(clock)
    rule(_beat())
    clock.advance(10)
    assert rule(_beat()) is None
    assert rule.tick(clock.advance(10)) == []  # renewed at +10: due at +26
    rule.tick(clock.advance(6))
    [ok] = rule(_beat())
    assert (ok.status, ok.key) == ("ok", "web-1.web.heartbeat")
    assert rule(_beat()) is None


def test_a_bare_heartbeat_is_named_heartbeat_and_keyed_by_host() -> None:
    """``heartbeat`` with no prefix: alert name heartbeat, key the host alone."""
    clock = Clock()
    rule = _rule(clock)
    rule(_beat(name="heartbeat", ttl=1000))
    [alert] = rule.tick(clock.advance(1))
    assert (alert.name, alert.key) == ("heartbeat", "web-1.heartbeat")
    assert alert.message == "web-1 heartbeat not heard for 1 beats"


def test_hosts_of_one_app_share_the_alert_name_and_differ_by_id() -> None:
    """1,000 hosts of one app: one alert name, 1,000 ids, all in one tick."""
    clock = Clock()
    rule = _rule(clock)
    for i in range(1000):
        rule(_beat(host=f"h{i}"))
    alerts = rule.tick(clock.advance(16))
    assert {a.name for a in alerts} == {"web.heartbeat"}
    assert len({a.key for a in alerts}) == 1000


def test_shutdown_stops_tracking_without_an_alert() -> None:
    """``web.shutdown`` ends tracking of host.web: no critical follows."""
    clock = Clock()
    rule = _rule(clock)
    rule(_beat())
    assert rule(_beat(name="web.shutdown")) is None
    assert rule.tick(clock.advance(60)) == []
    assert "web-1.web" not in rule.keys


def test_shutdown_after_a_miss_resolves_what_was_raised() -> None:
    """A shutdown of a key already critical returns an ok, so the incident closes."""
    clock = Clock()
    rule = _rule(clock)
    rule(_beat())
    rule.tick(clock.advance(16))
    [ok] = rule(_beat(name="web.shutdown"))
    assert (ok.status, ok.key) == ("ok", "web-1.web.heartbeat")


def test_a_shorter_ttl_is_due_sooner() -> None:
    """A beat that shortens the ttl moves the deadline earlier, not only later."""
    clock = Clock()
    rule = _rule(clock)
    rule(_beat(ttl=60_000))
    rule(_beat(ttl=2000))
    assert len(rule.tick(clock.advance(2))) == 1


def test_a_beat_without_ttl_uses_default_ttl() -> None:
    """default_ttl (s) applies to a beat that carries no ttl."""
    clock = Clock()
    rule = _rule(clock, RULE + "default_ttl = 5\n")
    rule({"name": "db.heartbeat", "host": "db-1", "time": T0})
    assert rule.tick(clock.advance(4.999)) == []
    assert len(rule.tick(clock.advance(0.001))) == 1


def test_keys_silent_for_forget_after_are_forgotten() -> None:
    """A key silent for forget_after is dropped (no more criticals) and saved as None."""
    clock = Clock()
    rule = _rule(clock, RULE + "forget_after = 60\n")
    rule(_beat(ttl=20_000))
    rule.save()
    assert len(rule.tick(clock.advance(20))) == 1
    assert len(rule.tick(clock.advance(20))) == 1
    assert rule.tick(clock.advance(20)) == []
    assert rule.keys == {} and rule.save() == {"web-1.web": None}


def test_forget_decommissions_a_key() -> None:
    """forget(KEY) stops tracking it at once and says whether it was tracked."""
    clock = Clock()
    rule = _rule(clock)
    rule(_beat())
    assert rule.forget("web-1.web") is True
    assert rule.forget("web-1.web") is False
    assert rule.tick(clock.advance(100)) == []


def test_forget_takes_the_incident_id_too() -> None:
    """forget("<host>.<prefix>.heartbeat"), the id the API lists, forgets that key."""
    clock = Clock()
    rule = _rule(clock)
    rule(_beat())
    assert rule.forget("web-1.web.heartbeat") is True
    assert rule.keys == {}


def test_expiry_work_is_proportional_to_what_is_due() -> None:
    """A tick pops only due heap entries: 10,000 healthy keys are not visited."""
    clock = Clock()
    rule = _rule(clock)
    for i in range(10_000):
        rule(_beat(host=f"h{i}", ttl=3_600_000))
    rule(_beat(host="late", ttl=1000))
    heap_before = len(rule._heap)
    assert [a.host for a in rule.tick(clock.advance(1))] == ["late"]
    assert len(rule._heap) == heap_before  # one popped, one re-queued; nothing scanned


def test_restart_keeps_keys_and_restarts_deadlines_from_now() -> None:
    """Restored keys are due one ttl after the restart; a missing one is resolved by its beat."""
    clock = Clock()
    rule = _rule(clock)
    rule(_beat(host="quiet"))
    rule(_beat(host="up"))
    rule.tick(clock.advance(16))  # both missed
    rule(_beat(host="up"))  # up resolves
    saved = rule.save()
    assert saved["quiet.web"][4] == 1 and saved["up.web"][4] == 0
    clock.advance(3600)  # the analyzer was down an hour
    again = _rule(clock)
    again.restore(saved, clock.now)
    assert again.tick(clock.now) == []
    alerts = again.tick(clock.advance(16))
    assert sorted((a.host, a.message[-7:]) for a in alerts) == [
        ("quiet", "2 beats"),
        ("up", "1 beats"),
    ]
    [ok] = again(_beat(host="quiet"))
    assert ok.status == "ok"


def test_after_a_restart_the_first_beat_resolves_whatever_may_have_been_raised() -> None:
    """After a restart a key's first beat returns an ok (it may have been raised), then quiet."""
    clock = Clock()
    again = _rule(clock)
    again.restore({"h.web": ["h", "web", 16_000, T0, 0]}, clock.now)
    [ok] = again(_beat(host="h"))
    assert ok.status == "ok"
    assert again(_beat(host="h")) is None


def test_save_returns_only_changes_and_restore_skips_bad_entries() -> None:
    """save() is empty when nothing changed; malformed saved entries are skipped."""
    clock = Clock()
    rule = _rule(clock)
    rule(_beat())
    assert list(rule.save()) == ["web-1.web"]
    rule(_beat())
    assert rule.save() == {}
    other = _rule(clock)
    other.restore({"bad": "x", "worse": [1, 2], "ok.web": ["ok", "web", 1000, T0, 0]}, T0)
    assert list(other.keys) == ["ok.web"]


def test_bad_options_name_the_key() -> None:
    """A bad forget_after, default_ttl or unknown key is a config error naming it."""
    assert "analyzer.rules.heartbeat.forget_after: must be positive" in config_error(
        RULE + "forget_after = 0\n"
    )
    assert "analyzer.rules.heartbeat.default_ttl" in config_error(RULE + "default_ttl = -1\n")
    assert "analyzer.rules.heartbeat.ttl: unknown key" in config_error(RULE + "ttl = 3\n")
