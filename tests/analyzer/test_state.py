"""The analyzer's durable state: SQLite round trips, the notification log, rule state,
the write-back outbox, bounds, durability across kill -9 and clear errors."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from numbat.analyzer import state as state_module
from numbat.analyzer.incidents import Effects
from numbat.analyzer.model import Change, Incident, Notification, Silence
from numbat.analyzer.state import StateError, StateStore
from numbat.event import now_ms

SRC = Path(__file__).resolve().parents[2] / "src"
T0 = 1_700_000_000_000


def _incident(key: str = "h1.disk", status: str = "critical") -> Incident:
    return Incident(id=key, name="disk", host="h1", status=status, fired_at=T0)  # type: ignore[arg-type]


def _notification(nid: str, *incidents: Incident) -> Notification:
    return Notification(id=nid, time=T0, group={"name": "disk"}, new=list(incidents))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore(tmp_path / "data" / "analyzer.db")
    yield s
    s.close()


def test_effects_round_trip_through_a_reopen(tmp_path: Path) -> None:
    """Incidents, silences and history committed are loaded back after a reopen (silences
    ended over 30 days ago are pruned)."""
    path = tmp_path / "analyzer.db"
    store = StateStore(path)
    silence = Silence(id="s1", ends_at=now_ms() + 60_000, host="web-*", author="ann")
    old = Silence(id="s0", ends_at=now_ms() - state_module.KEEP_SILENCES_MS - 1, author="bob")
    change = Change(incident="h1.disk", time=T0, kind="opened", status="critical")
    store.commit(Effects(incidents=[_incident()], silences=[silence, old], history=[change]), [])
    store.close()
    store = StateStore(path)
    incidents, silences = store.load()
    assert incidents == [_incident()]
    assert silences == [silence]  # the one ended long ago is pruned
    assert store.history("h1.disk") == [change]
    store.close()


def test_upsert_replaces_and_forgotten_deletes_incident_and_history(store: StateStore) -> None:
    """A second commit of an id replaces it; a forgotten id loses its row and history."""
    store.commit(Effects(incidents=[_incident("a"), _incident("b")]), [])
    changes = [Change(incident="a", time=T0 + i, kind="opened", status="warning") for i in range(3)]
    store.commit(Effects(incidents=[_incident("a", "warning")], history=changes), [])
    incidents, _ = store.load()
    assert sorted((i.id, i.status) for i in incidents) == [("a", "warning"), ("b", "critical")]
    assert store.history("a", limit=2) == changes[1:]
    store.commit(Effects(forgotten=["a"]), [])
    assert [i.id for i in store.load()[0]] == ["b"]
    assert store.history("a") == []


def test_history_keeps_the_newest_rows_per_incident(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past KEEP_HISTORY an incident's oldest changes are deleted; other incidents keep theirs."""
    monkeypatch.setattr(state_module, "KEEP_HISTORY", 3)
    other = Change(incident="b", time=T0, kind="opened", status="warning")
    store.commit(Effects(history=[other]), [])
    changes = [
        Change(incident="a", time=T0 + i, kind="raised", status="critical") for i in range(5)
    ]
    store.commit(Effects(history=changes[:2]), [])
    store.commit(Effects(history=changes[2:]), [])
    assert store.history("a") == changes[2:]
    assert store.history("b") == [other]


def test_notification_log_rows_pending_per_notifier_until_done(store: StateStore) -> None:
    """commit() returns row ids in order; each notifier sees its unsent rows oldest first."""
    n1, n2 = _notification("n1", _incident()), _notification("n2")
    rows = store.commit(Effects(), [("slack", n1), ("pager", n1), ("slack", n2)])
    assert len(rows) == 3 and rows == sorted(rows)
    assert store.pending_notifications("slack") == [(rows[0], n1), (rows[2], n2)]
    assert store.pending_notifications("pager") == [(rows[1], n1)]
    store.notification_done(rows[0], "sent")
    store.notification_done(rows[1], "dropped", "queue_full")
    assert store.pending_notifications("slack") == [(rows[2], n2)]
    assert store.pending_notifications("pager") == []
    with pytest.raises(KeyError):
        store.notification_done(999_999, "sent")


def test_done_notification_rows_are_pruned(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Done rows beyond the kept number are deleted; pending rows are never pruned."""
    monkeypatch.setattr(state_module, "KEEP_DONE_NOTIFICATIONS", 5)
    monkeypatch.setattr(state_module, "PRUNE_EVERY", 10)
    rows = store.commit(Effects(), [("log", _notification(f"n{i}")) for i in range(40)])
    for row in rows[:30]:
        store.notification_done(row, "sent")
    db = sqlite3.connect(store.path)
    (done,) = db.execute("SELECT COUNT(*) FROM notifications WHERE outcome IS NOT NULL").fetchone()
    db.close()
    assert done <= 5 + 10
    assert [row for row, _ in store.pending_notifications("log")] == rows[30:]


def test_rule_state_saves_changes_and_deletes_none(store: StateStore) -> None:
    """save_rule_state applies key -> value (None deletes); rule_state reads one rule's keys."""
    store.save_rule_state("hb", {"h1.web": {"ttl": 10_000, "last": T0}, "h2.web": [1, 2]})
    store.save_rule_state("other", {"x": 1})
    store.save_rule_state("hb", {"h2.web": None, "h3.web": "x"})
    assert store.rule_state("hb") == {"h1.web": {"ttl": 10_000, "last": T0}, "h3.web": "x"}
    assert store.rule_state("other") == {"x": 1}


def test_outbox_keeps_events_until_done(store: StateStore) -> None:
    """Write-back events wait in the outbox, oldest first, until outbox_done deletes them."""
    events = [
        {"name": "numbat.alert", "value": 3, "time": T0 + i, "status": "critical"} for i in range(3)
    ]
    store.commit(Effects(events=list(events)), [])  # type: ignore[arg-type]
    got = store.outbox(2)
    assert [e for _, e in got] == events[:2]
    store.outbox_done([row for row, _ in got])
    assert [e for _, e in store.outbox(10)] == events[2:]


def test_a_full_outbox_drops_its_oldest_and_counts(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_OUTBOX the oldest write-back events are dropped and counted."""
    monkeypatch.setattr(state_module, "MAX_OUTBOX", 4)
    events = [{"name": "numbat.alerts", "value": 1, "time": T0 + i} for i in range(6)]
    store.commit(Effects(events=list(events)), [])  # type: ignore[arg-type]
    assert [e for _, e in store.outbox(10)] == events[2:]
    assert store.outbox_dropped == 2


def test_the_database_is_wal_with_full_sync(store: StateStore) -> None:
    """The file is in WAL mode and commits are synchronous=FULL (durable on return)."""
    assert store._db is not None
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == state_module.SCHEMA_VERSION


CHILD = """
import sys, time
from pathlib import Path
from numbat.analyzer.incidents import Effects
from numbat.analyzer.model import Incident, Notification
from numbat.analyzer.state import StateStore
store = StateStore(Path(sys.argv[1]))
incident = Incident(id="h1.web.heartbeat", name="web.heartbeat", host="h1", status="critical")
n = Notification(id="n1", time=1, new=[incident])
rows = store.commit(Effects(incidents=[incident]), [("hook", n)])
print(rows[0], flush=True)
time.sleep(60)
"""


def test_a_commit_survives_kill_9(tmp_path: Path) -> None:
    """A child commits, is SIGKILLed at once; the reopened store has the incident and log row."""
    path = tmp_path / "analyzer.db"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert child.stdout is not None
        row = int(child.stdout.readline())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    store = StateStore(path)
    incidents, _ = store.load()
    assert [i.id for i in incidents] == ["h1.web.heartbeat"]
    assert [r for r, _ in store.pending_notifications("hook")] == [row]
    store.close()


def test_a_corrupt_file_is_a_state_error_naming_it(tmp_path: Path) -> None:
    """A file that is not SQLite raises StateError naming the path (no sqlite3 traceback)."""
    path = tmp_path / "analyzer.db"
    path.write_bytes(b"this is not a database, just some text " * 100)
    with pytest.raises(StateError, match=re.escape(str(tmp_path / "analyzer.db"))) as info:
        StateStore(path)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_an_unopenable_path_is_a_state_error(tmp_path: Path) -> None:
    """A data dir that cannot be made (a file is in the way) raises StateError naming it."""
    (tmp_path / "data").write_text("a file, not a directory")
    with pytest.raises(StateError, match=re.escape(str(tmp_path / "data" / "analyzer.db"))):
        StateStore(tmp_path / "data" / "analyzer.db")


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database of a newer schema version is refused, not misread."""
    path = tmp_path / "analyzer.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={state_module.SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StateError, match="newer numbat"):
        StateStore(path)


def test_a_closed_store_raises_state_error(tmp_path: Path) -> None:
    """Using a closed store is a StateError (closing twice is fine)."""
    store = StateStore(tmp_path / "analyzer.db")
    store.close()
    store.close()
    with pytest.raises(StateError, match="closed"):
        store.load()


def test_a_second_store_on_the_same_database_is_refused_until_the_first_closes(
    tmp_path: Path,
) -> None:
    """Two analyzers on one data_dir would page from state neither owns: the second
    open raises StateError naming the path and the holder's pid; after close it opens."""
    path = tmp_path / "analyzer.db"
    first = StateStore(path)
    with pytest.raises(StateError, match=rf"in use by another analyzer \(pid {os.getpid()}\)"):
        StateStore(path)
    first.close()
    StateStore(path).close()
