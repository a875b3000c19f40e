"""The incident manager's notifications: grouping (wait, interval, what changed),
silences, inhibition, and the 1,000-host storm, on an injected clock."""

from __future__ import annotations

import pytest

from numbat.config.analyzer import InhibitConfig, _default_inhibit
from numbat.config.rules import MatchConfig

from .incidents_helpers import Clock, alert, manager, step, told

DAY = 86_400_000.0


def test_group_wait_gathers_a_quiet_groups_first_news() -> None:
    """Changes within group_wait of a quiet group's first go out in one message."""
    clock = Clock()
    m = manager(clock, group_wait=30, group_interval=60)
    assert step(m, clock, alert("disk", "critical", host="a", ttl=DAY)).notifications == []
    clock.advance(29)
    assert step(m, clock, alert("disk", "warning", host="b", ttl=DAY)).notifications == []
    clock.advance(1)
    (message,) = step(m, clock).notifications
    assert message.group == {"name": "disk"}
    assert sorted(i.id for i in message.new) == ["a.disk", "b.disk"]


def test_later_news_waits_group_interval_and_says_only_what_changed() -> None:
    """After a message, news waits group_interval; the next message lists what changed,
    the rest only as still firing."""
    clock = Clock()
    m = manager(clock, group_interval=60)
    first = step(m, clock, *(alert("disk", "critical", host=h, ttl=DAY) for h in "abc"))
    assert len(first.notifications) == 1 and len(first.notifications[0].new) == 3
    clock.advance(10)
    assert (
        step(
            m, clock, alert("disk", "ok", host="a"), alert("disk", "warning", host="b")
        ).notifications
        == []
    )
    clock.advance(50)
    (message,) = step(m, clock).notifications
    assert [i.id for i in message.resolved] == ["a.disk"]
    assert [(i.id, i.status) for i in message.changed] == [("b.disk", "warning")]
    assert (message.still_firing, message.still_firing_count) == ([], 1)  # a count only
    assert message.new == [] and not message.repeat
    assert message.summary() == "1 changed, 1 resolved, 1 still firing: name=disk"


def test_open_and_resolved_within_one_wait_says_nothing() -> None:
    """An incident that opens and resolves before its group's message is never told."""
    clock = Clock()
    m = manager(clock, group_wait=30)
    m.apply([alert("disk", "critical")])
    clock.advance(5)
    m.apply([alert("disk", "ok")])
    clock.advance(30)
    effects = step(m, clock)
    assert effects.notifications == []
    assert [c.kind for c in effects.history] == ["opened", "resolved"]


def test_group_by_host_splits_messages_per_host() -> None:
    """group_by host: one message per host, its labels the host."""
    clock = Clock()
    m = manager(clock, group_by=["host"])
    effects = step(
        m,
        clock,
        alert("disk", "critical", host="a"),
        alert("load", "warning", host="a"),
        alert("disk", "critical", host="b"),
    )
    assert sorted((n.group["host"], len(n.new)) for n in effects.notifications) == [
        ("a", 2),
        ("b", 1),
    ]


def test_group_by_a_tag() -> None:
    """group_by a tag groups incidents by that tag's value (missing: empty)."""
    clock = Clock()
    m = manager(clock, group_by=["app"])
    effects = step(
        m,
        clock,
        alert("x", "critical", host="a", tags={"app": "web"}),
        alert("y", "critical", host="b", tags={"app": "web"}),
        alert("z", "critical", host="c"),
    )
    assert sorted((n.group["app"], len(n.new)) for n in effects.notifications) == [
        ("", 1),
        ("web", 2),
    ]


def test_a_silence_mutes_and_its_end_sends_what_was_held() -> None:
    """A silenced change is recorded and written back, not told; when the silence is
    expired the still-open incident goes out as new."""
    clock = Clock()
    m = manager(clock)
    silence = m.silence(
        ends_at=clock.now + 3_600_000, name="disk*", host="web-?", author="ann", comment="maint"
    )
    assert m.silences() == [silence] and m.take().silences == [silence]
    effects = step(
        m,
        clock,
        alert("disk", "critical", host="web-1", ttl=DAY),
        alert("disk", "critical", host="db-1", ttl=DAY),
    )
    assert told(effects) == [("new", "db-1.disk", "critical")]
    assert [(c.incident, c.kind) for c in effects.history] == [
        ("web-1.disk", "opened"),
        ("db-1.disk", "opened"),
        ("web-1.disk", "silenced"),
    ]
    assert {e["incident"] for e in effects.events} == {"web-1.disk", "db-1.disk"}
    web = m.get("web-1.disk")
    assert web is not None and m.muted_by(web) == f"silence:{silence.id}"
    clock.advance(20)
    expired = m.expire_silence(silence.id)
    assert expired.ends_at == clock.now and m.silences() == []
    effects = step(m, clock)
    assert [s.id for s in effects.silences] == [silence.id]
    assert [n.new[0].id for n in effects.notifications] == ["web-1.disk"]
    assert effects.notifications[0].still_firing_count == 1


def test_a_silence_ending_on_its_own_releases_a_held_resolve() -> None:
    """A told incident resolved while silenced has its resolve told when the silence ends."""
    clock = Clock()
    m = manager(clock)
    step(m, clock, alert("disk", "critical"))
    m.silence(ends_at=clock.now + 60_000, host="h1", author="ann")
    clock.advance(1)
    assert step(m, clock, alert("disk", "ok")).notifications == []
    clock.advance(59)
    assert told(step(m, clock)) == [("resolved", "h1.disk", "ok")]


def test_silence_tags_starts_and_validation() -> None:
    """Tags must all be equal; a silence starting later mutes nothing yet; bad arguments
    raise ValueError naming them; an unknown id KeyError."""
    clock = Clock()
    m = manager(clock)
    m.silence(ends_at=clock.now + 60_000, tags={"app": "web"}, author="a")
    m.silence(starts_at=clock.now + 30_000, ends_at=clock.now + 60_000, name="*", author="b")
    effects = step(
        m,
        clock,
        alert("x", "critical", tags={"app": "web"}),
        alert("y", "critical", tags={"app": "db"}),
    )
    assert told(effects) == [("new", "h1.y", "critical")]
    with pytest.raises(ValueError, match="author"):
        m.silence(ends_at=clock.now + 1, host="h1", author="")
    with pytest.raises(ValueError, match="give name, host or tags"):
        m.silence(ends_at=clock.now + 1, host="", tags={}, author="a")
    with pytest.raises(ValueError, match="ends_at"):
        m.silence(ends_at=clock.now - 1, host="h1", author="a")
    with pytest.raises(ValueError, match="ends_at"):
        m.silence(starts_at=clock.now + 10, ends_at=clock.now + 5, host="h1", author="a")
    with pytest.raises(KeyError):
        m.expire_silence("nope")


def test_a_missing_collector_heartbeat_inhibits_its_hosts_other_alerts() -> None:
    """Default inhibition: a host whose collector's heartbeat is critical has its other
    alerts muted (a service's own missing heartbeat included), not other hosts'; one
    service's missing heartbeat mutes nothing; when the host is back the held go out."""
    clock = Clock()
    m = manager(clock, inhibit=_default_inhibit())
    effects = step(
        m,
        clock,
        alert("numbat.collector.heartbeat", "critical", host="a", ttl=DAY),
        alert("web.heartbeat", "critical", host="a", ttl=DAY),
        alert("disk", "critical", host="a", ttl=DAY),
        alert("disk", "critical", host="b", ttl=DAY),
        alert("web.heartbeat", "critical", host="b", ttl=DAY),
    )
    assert sorted(told(effects)) == [
        ("new", "a.numbat.collector.heartbeat", "critical"),
        ("new", "b.disk", "critical"),
        ("new", "b.web.heartbeat", "critical"),
    ]
    disk = m.get("a.disk")
    assert disk is not None and m.muted_by(disk) == "inhibited:a.numbat.collector.heartbeat"
    assert [c.kind for c in effects.history if c.incident == "a.disk"] == ["opened", "inhibited"]
    clock.advance(20)
    assert sorted(told(step(m, clock, alert("numbat.collector.heartbeat", "ok", host="a")))) == [
        ("new", "a.disk", "critical"),
        ("new", "a.web.heartbeat", "critical"),
        ("resolved", "a.numbat.collector.heartbeat", "ok"),
    ]


def test_inhibition_is_configurable_by_source_status_and_equal_labels() -> None:
    """A configured rule mutes targets with equal labels only while the source is at
    source_status or worse."""
    rule = InhibitConfig(
        source=MatchConfig(name="dc.power"),
        target=MatchConfig(name="*"),
        equal=["dc"],
        source_status="warning",
    )
    clock = Clock()
    m = manager(clock, inhibit=[rule])
    effects = step(
        m,
        clock,
        alert("dc.power", "warning", host="pdu", tags={"dc": "east"}, ttl=DAY),
        alert("disk", "critical", host="a", tags={"dc": "east"}, ttl=DAY),
        alert("disk", "critical", host="b", tags={"dc": "west"}, ttl=DAY),
    )
    assert sorted(told(effects)) == [
        ("new", "b.disk", "critical"),
        ("new", "pdu.dc.power", "warning"),
    ]


def test_a_storm_of_1000_missing_heartbeats_is_a_bounded_number_of_messages() -> None:
    """1,000 heartbeat incidents opening in one tick (group_by name) make one message
    listing all 1,000 as new; recoveries trickling in make one message per
    group_interval, each listing what changed; incidents() lists all 1,000."""
    clock = Clock()
    m = manager(clock, group_interval=10, inhibit=_default_inhibit())
    storm = [alert("web.heartbeat", "critical", host=f"h{i:04}", ttl=5_000.0) for i in range(1_000)]
    m.apply(storm)
    assert m.dirty
    effects = m.take()
    assert len(effects.notifications) == 1
    assert len(effects.notifications[0].new) == 1_000
    assert len(effects.incidents) == 1_000 and len(effects.history) == 1_000
    assert len(m.incidents(name="web.heartbeat")) == 1_000
    assert len(m.incidents(name="*.heartbeat", status="critical")) == 1_000
    messages = []
    for second in range(1, 31):  # 30 s: hosts come back, 20 a second, refreshed
        clock.advance(1)
        back = [
            alert("web.heartbeat", "ok", host=f"h{i:04}")
            for i in range(20 * (second - 1), 20 * second)
        ]
        still = [
            alert("web.heartbeat", "critical", host=f"h{i:04}", ttl=5_000.0)
            for i in range(20 * second, 1_000)
        ]
        messages += step(m, clock, *back, *still).notifications
    assert len(messages) == 3  # at 10, 20 and 30 s
    assert sum(len(n.resolved) for n in messages) == 600
    assert all(n.new == [] and n.changed == [] for n in messages)
    assert messages[-1].still_firing_count == 1_000 - 600
    assert messages[-1].still_firing == []  # listed in full only in a reminder
    assert len(m.incidents()) == 400 and len(m.incidents(open=None)) == 1_000
