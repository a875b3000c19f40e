"""The incident manager: dedup, lifecycle, keep-alive, flapping, repeats, write-back,
retention and restore, all on an injected clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from numbat.analyzer.model import SEVERITY
from numbat.analyzer.state import StateStore
from numbat.event import normalize

from .incidents_helpers import T0, Clock, alert, manager, step, told


def test_problem_opens_one_incident_and_repeats_only_refresh() -> None:
    """Alerts of one key are one incident; a same-status repeat says nothing new."""
    clock = Clock()
    m = manager(clock)
    first = step(m, clock, alert("disk", "critical", value=95.0), alert("disk", "critical"))
    assert told(first) == [("new", "h1.disk", "critical")]
    assert [c.kind for c in first.history] == ["opened"]
    clock.advance(5)
    again = step(m, clock, alert("disk", "critical", value=96.0))
    assert again.notifications == [] and again.history == []
    assert [i.id for i in m.incidents()] == ["h1.disk"]
    assert m.get("h1.disk").value == 96.0  # type: ignore[union-attr]


def test_ok_without_an_incident_costs_nothing() -> None:
    """An ok for a key with no open incident leaves nothing to take."""
    clock = Clock()
    m = manager(clock)
    m.apply([alert("disk", "ok")])
    assert not m.dirty
    assert m.incidents(open=None) == []


def test_an_incident_keeps_first_breach_fired_and_resolved_times() -> None:
    """breached_at/value come from the alert's breach (else its time/value); fired and
    resolved times are the alerts' times."""
    clock = Clock()
    m = manager(clock)
    m.apply(
        [
            alert(
                "load",
                "warning",
                time=T0 + 5,
                value=4.0,
                breached_at=T0 - 60_000,
                breached_value=3.5,
            )
        ]
    )
    m.apply([alert("disk", "critical", time=T0 + 7, value=99.0)])
    load, disk = m.get("h1.load"), m.get("h1.disk")
    assert load is not None and disk is not None
    assert (load.breached_at, load.breached_value, load.fired_at) == (T0 - 60_000, 3.5, T0 + 5)
    assert (disk.breached_at, disk.breached_value, disk.fired_at) == (T0 + 7, 99.0, T0 + 7)
    m.apply([alert("disk", "ok", time=T0 + 9_000)])
    assert (disk.status, disk.resolved_at, disk.open) == ("ok", T0 + 9_000, False)


def test_raise_and_lower_are_told_as_changed_resolve_as_resolved() -> None:
    """A status change is told as changed; the resolve carries status ok and the
    status last told in ``notified``."""
    clock = Clock()
    m = manager(clock, group_interval=1)
    step(m, clock, alert("disk", "warning"))
    clock.advance(2)
    changed = step(m, clock, alert("disk", "critical"))
    assert told(changed) == [("changed", "h1.disk", "critical")]
    assert [c.kind for c in changed.history] == ["raised"]
    clock.advance(2)
    lowered = step(m, clock, alert("disk", "warning"))
    assert [c.kind for c in lowered.history] == ["lowered"]
    clock.advance(2)
    resolved = step(m, clock, alert("disk", "ok"))
    assert told(resolved) == [("resolved", "h1.disk", "ok")]
    assert resolved.notifications[0].resolved[0].notified == "warning"


def test_keep_alive_expiry_is_twice_the_ttl_else_60_s() -> None:
    """With ttl 10 s an incident not refreshed resolves (expired) at 20 s; without, at 60 s."""
    clock = Clock()
    m = manager(clock)
    step(m, clock, alert("web.heartbeat", "critical", ttl=10_000.0), alert("disk", "critical"))
    clock.advance(19.999)
    assert step(m, clock).history == []
    clock.advance(0.001)
    expired = step(m, clock)
    assert [(c.incident, c.kind) for c in expired.history] == [("h1.web.heartbeat", "expired")]
    assert told(expired) == [("resolved", "h1.web.heartbeat", "ok")]
    clock.advance(40)
    assert [c.incident for c in step(m, clock).history] == ["h1.disk"]


def test_a_refresh_moves_the_expiry_without_growing_the_heap() -> None:
    """Refreshes push the deadline back; the timer heap keeps one entry per incident."""
    clock = Clock()
    m = manager(clock)
    m.apply([alert("x", "critical", host=f"h{i}", ttl=1_000.0) for i in range(1_000)])
    for _ in range(50):
        clock.advance(1)
        m.apply([alert("x", "critical", host=f"h{i}", ttl=1_000.0) for i in range(1_000)])
        m.tick(clock.now)
    assert len(m.incidents()) == 1_000
    assert len(m._expiry) <= 1_000
    clock.advance(2)
    m.tick(clock.now)
    assert m.incidents() == []


def test_flapping_says_so_once_then_is_quiet_until_stable() -> None:
    """More than max_changes in the window: one flapping notice, no more until calm;
    then the state it settled in, if it differs from what was told."""
    clock = Clock()
    m = manager(clock, window=60, max_changes=3, group_interval=1)
    kinds: list[str] = []
    for status in ("critical", "ok", "critical", "ok", "critical", "ok", "critical", "ok"):
        kinds += [kind for kind, _, _ in told(step(m, clock, alert("web.heartbeat", status)))]
        clock.advance(2)
    assert kinds == ["new", "resolved", "new", "flapping"]
    clock.advance(59)
    calm = step(m, clock)
    assert [c.kind for c in calm.history] == ["stable"]
    assert told(calm) == [("resolved", "h1.web.heartbeat", "ok")]  # "new" was told last
    assert m.get("h1.web.heartbeat").flapping is False  # type: ignore[union-attr]


def test_a_flapping_incident_settled_in_a_new_state_is_told_it() -> None:
    """When a flapping incident calms in a state other than the last told, that is told."""
    clock = Clock()
    m = manager(clock, window=60, max_changes=2, group_interval=1)
    statuses = ("warning", "critical", "warning", "critical", "warning")
    kinds = []
    for status in statuses:
        kinds += [kind for kind, _, _ in told(step(m, clock, alert("disk", status, ttl=1e6)))]
        clock.advance(2)
    assert kinds == ["new", "changed", "flapping"]
    clock.advance(60)
    assert told(step(m, clock)) == [("changed", "h1.disk", "warning")]


def test_a_long_open_critical_is_repeated_unless_acknowledged() -> None:
    """Every repeat_interval a critical still open is told again (repeat); an ack stops it."""
    clock = Clock()
    m = manager(clock, repeat_interval=3600)
    day = 86_400_000.0
    step(m, clock, alert("disk", "critical", ttl=day), alert("disk", "warning", host="h2", ttl=day))
    clock.advance(3599)
    assert step(m, clock).notifications == []
    clock.advance(1)
    (reminder,) = step(m, clock).notifications
    assert reminder.repeat and [i.id for i in reminder.still_firing] == ["h1.disk"]
    assert reminder.changes() == [("still_firing", reminder.still_firing[0])]
    m.acknowledge("h1.disk", author="ann", comment="on it")
    acked = m.take()
    assert [c.kind for c in acked.history] == ["acked"]
    clock.advance(7200)
    assert step(m, clock).notifications == []


def test_acknowledge_refuses_unknown_resolved_or_anonymous() -> None:
    """acknowledge raises KeyError for an unknown id, ValueError when resolved or no author."""
    clock = Clock()
    m = manager(clock)
    step(m, clock, alert("disk", "critical"))
    with pytest.raises(KeyError):
        m.acknowledge("nope", author="a")
    with pytest.raises(ValueError, match="author"):
        m.acknowledge("h1.disk", author=" ")
    m.apply([alert("disk", "ok")])
    with pytest.raises(ValueError, match="resolved"):
        m.acknowledge("h1.disk", author="a")


def test_write_back_events_are_valid_and_tell_each_change() -> None:
    """Each change writes a numbat.alert (status event) and a numbat.alerts point, both
    valid per numbat.event.normalize and unchanged by it."""
    clock = Clock()
    m = manager(clock)
    opened = step(m, clock, alert("disk", "critical", rule="disk", message="é" * 200, time=T0))
    clock.advance(1)
    resolved = step(m, clock, alert("disk", "ok", rule="disk", time=T0 + 1_000))
    events = opened.events + resolved.events
    for event in events:
        assert normalize(dict(event)) == event
    assert [(e["name"], e["value"], e.get("status", e.get("state"))) for e in events] == [
        ("numbat.alert", SEVERITY["critical"], "critical"),
        ("numbat.alerts", 3, "critical"),
        ("numbat.alert", 0, "ok"),
        ("numbat.alerts", 0, "ok"),
    ]
    first = events[0]
    assert {k: first[k] for k in ("alert", "host", "incident", "rule", "kind", "time")} == {
        "alert": "disk",
        "host": "h1",
        "incident": "h1.disk",
        "rule": "disk",
        "kind": "opened",
        "time": T0,
    }
    assert len(str(first["description"]).encode()) <= 255


def test_the_state_series_repeats_every_state_interval_while_open() -> None:
    """An open incident gets a numbat.alerts point every state_interval; a resolved one none."""
    clock = Clock()
    m = manager(clock, state_interval=30)
    step(m, clock, alert("disk", "critical"), alert("load", "warning"))
    m.apply([alert("load", "ok")])
    m.take()
    clock.advance(30)
    points = [
        e for e in step(m, clock, alert("disk", "critical")).events if e["name"] == "numbat.alerts"
    ]
    assert [(e["incident"], e["value"]) for e in points] == [("h1.disk", 3)]
    clock.advance(10)
    assert step(m, clock).events == []


def test_resolved_incidents_are_forgotten_after_the_retention() -> None:
    """A resolved incident stays listed for retain_resolved, then is forgotten."""
    clock = Clock()
    m = manager(clock, retain_resolved=3600)
    step(m, clock, alert("disk", "critical"))
    step(m, clock, alert("disk", "ok"))
    assert [i.id for i in m.incidents(open=False)] == ["h1.disk"]
    clock.advance(3599)
    assert step(m, clock).forgotten == []
    clock.advance(1)
    assert step(m, clock).forgotten == ["h1.disk"]
    assert m.get("h1.disk") is None


def test_a_reopen_before_its_resolve_was_told_says_nothing() -> None:
    """Resolved and reopened within one group wait: nothing to tell (the receiver never
    heard the resolve)."""
    clock = Clock()
    m = manager(clock, group_interval=60)
    step(m, clock, alert("disk", "critical"))
    clock.advance(1)
    m.apply([alert("disk", "ok")])
    m.apply([alert("disk", "critical", ttl=600_000.0)])
    clock.advance(60)
    effects = step(m, clock)
    assert [c.kind for c in effects.history] == ["resolved", "opened"]
    assert effects.notifications == []


def test_taken_incidents_are_copies() -> None:
    """What take() returns does not change when the manager goes on."""
    clock = Clock()
    m = manager(clock)
    effects = step(m, clock, alert("disk", "warning"))
    m.apply([alert("disk", "critical")])
    assert effects.incidents[0].status == "warning"
    assert effects.notifications[0].new[0].status == "warning"


def test_restore_neither_repeats_what_was_told_nor_forgets_what_was_not() -> None:
    """After a restart: a told incident is not told again and its expiry restarts from
    now; an untold open one goes out as new; an untold resolve goes out as resolved."""
    clock = Clock()
    m = manager(clock, group_wait=30)
    step(m, clock, alert("told", "critical", ttl=100_000.0), alert("gone", "critical"))
    clock.advance(30)
    persisted = {i.id: i for i in step(m, clock).incidents}
    m.apply([alert("gone", "ok"), alert("new", "warning", ttl=1e6)])
    persisted.update({i.id: i for i in m.take().incidents})
    assert persisted["h1.told"].notified == "critical"
    clock.advance(3600)  # down for an hour
    fresh = manager(clock, group_wait=30)
    fresh.restore(list(persisted.values()), [], clock.now)
    clock.advance(30)
    effects = step(fresh, clock)
    assert sorted(told(effects)) == [("new", "h1.new", "warning"), ("resolved", "h1.gone", "ok")]
    clock.advance(169)
    assert step(fresh, clock).history == []  # 200 s of keep-alive, counted from the restart
    clock.advance(1)
    assert [c.kind for c in step(fresh, clock).history] == ["expired"]
    clock.advance(30)
    assert told(step(fresh, clock)) == [("resolved", "h1.told", "ok")]


def test_a_restart_through_the_state_store_does_not_page_twice(tmp_path: Path) -> None:
    """Effects committed to the store and restored after a 'crash': the told critical is
    not told again; its resolve, while down, is told exactly once."""
    clock = Clock()
    store = StateStore(tmp_path / "analyzer.db")
    m = manager(clock)
    effects = step(m, clock, alert("web.heartbeat", "critical", ttl=10_000.0))
    rows = store.commit(effects, [("hook", n) for n in effects.notifications])
    store.notification_done(rows[0], "sent")
    del m  # killed: nothing else was written
    store.close()
    clock.advance(600)
    store = StateStore(tmp_path / "analyzer.db")
    incidents, silences = store.load()
    fresh = manager(clock)
    fresh.restore(incidents, silences, clock.now)
    sent = []
    for _ in range(25):
        effects = step(fresh, clock, alert("web.heartbeat", "ok"))
        store.commit(effects, [("hook", n) for n in effects.notifications])
        sent += told(effects)
        clock.advance(1)
    assert sent == [("resolved", "h1.web.heartbeat", "ok")]
    assert [c.kind for c in store.history("h1.web.heartbeat")] == ["opened", "resolved"]
    assert len(store.pending_notifications("hook")) == 1
    store.close()
