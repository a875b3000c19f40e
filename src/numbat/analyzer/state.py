"""The analyzer's durable state: SQLite in ``data_dir/analyzer.db``.

What survives a restart (even ``kill -9``): incidents (open and recently resolved) and
their history, silences, the notification log (one row per notifier and notification,
written before the notification is sent, marked done after), the rules' own state
(heartbeat keys, ...) and the write-back outbox (``numbat.alert*`` events waiting to be
sent to the collector).

The database is in WAL mode with ``synchronous=FULL``: when :meth:`StateStore.commit`
returns, its transaction is on disk, so a notification is never sent before the record
that it is due (no page twice after a crash, no resolve forgotten). Every call comes
from ONE thread (the daemon's state thread); each method is one transaction. Rows are
JSON of the model's structs (msgspec), so a field added to a struct needs no migration.

The schema version is ``PRAGMA user_version``; a file of a newer version is refused.
Every failure is a :class:`StateError` naming the file (never a traceback at the CLI).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import msgspec

from numbat.analyzer.model import Change, Incident, Notification, Silence
from numbat.errors import NumbatError
from numbat.event import Event, Scalar, now_ms

if TYPE_CHECKING:
    from numbat.analyzer.incidents import Effects

T = TypeVar("T")

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 10.0
KEEP_DONE_NOTIFICATIONS = 10_000
"""Notification-log rows kept once done (sent or dropped), newest first; older ones are
pruned so the table stays bounded."""
KEEP_HISTORY = 1_000
"""History rows kept per incident (the newest): a long-open incident that flaps for
days does not grow its history without end."""
PRUNE_EVERY = 500
"""Rows marked done between two prunings of the notification log."""
KEEP_SILENCES_MS = 30 * 86_400_000
"""A silence ended longer ago than this (ms) is deleted when the store opens."""
MAX_OUTBOX = 1_000_000
"""Write-back events kept while the collector cannot take them; past that the oldest
are dropped and counted (:attr:`StateStore.outbox_dropped`)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS history (
    row INTEGER PRIMARY KEY AUTOINCREMENT, incident TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS history_incident ON history (incident, row);
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY, ends_at INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS notifications (
    row INTEGER PRIMARY KEY AUTOINCREMENT, notifier TEXT NOT NULL, body TEXT NOT NULL,
    created INTEGER NOT NULL, done INTEGER, outcome TEXT, detail TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS notifications_pending ON notifications (notifier, row)
    WHERE outcome IS NULL;
CREATE INDEX IF NOT EXISTS notifications_done ON notifications (row)
    WHERE outcome IS NOT NULL;
CREATE TABLE IF NOT EXISTS rule_state (
    rule TEXT NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (rule, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (row INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
"""


class StateError(NumbatError):
    """The state database cannot be opened, created, read or written; the message
    names the file and what SQLite said."""


_encode = msgspec.json.Encoder().encode
_incident = msgspec.json.Decoder(Incident).decode
_change = msgspec.json.Decoder(Change).decode
_silence = msgspec.json.Decoder(Silence).decode
_notification = msgspec.json.Decoder(Notification).decode
_event = msgspec.json.Decoder(dict[str, Scalar]).decode
_any = msgspec.json.Decoder().decode


class StateStore:
    """The analyzer's SQLite state at ``path`` (its directory is made if missing).

    Raises :class:`StateError` naming ``path`` when the file cannot be opened or
    created, is not a SQLite database, or was written by a newer numbat.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.outbox_dropped = 0
        """Write-back events dropped because the outbox was full (:data:`MAX_OUTBOX`)."""
        self._done_since_prune = 0
        self._db: sqlite3.Connection | None = None
        self._lock_fd = self._guard("lock", self._lock)
        try:
            self._db = self._guard("open", self._open)
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _lock(self) -> int:
        """``flock`` a lock file beside the database: a second analyzer on the same
        data_dir would judge and page from state it does not own."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise StateError(
                f"{self.path}: in use by another analyzer (pid {holder or '?'}); "
                "give each analyzer its own data_dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    # -- lifecycle --

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are ours (BEGIN IMMEDIATE .. COMMIT).
        db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        try:
            db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            if db.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
                raise sqlite3.OperationalError("cannot switch to WAL mode")
            # FULL: a commit is on disk (WAL fsynced) before commit() returns, so what a
            # notification records is durable before the notification is sent.
            db.execute("PRAGMA synchronous=FULL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"schema version {version}, not {SCHEMA_VERSION} (written by a newer numbat?)"
                )
            # executescript() commits what is pending first: the whole script is the
            # transaction.
            db.executescript(
                f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
            )
            with _transaction(db):
                db.execute("DELETE FROM silences WHERE ends_at < ?", (now_ms() - KEEP_SILENCES_MS,))
                self._prune(db)
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        """Close the database; closing twice is fine."""
        if self._db is not None:
            db, self._db = self._db, None
            try:
                self._guard("close", db.close)
            finally:
                os.close(self._lock_fd)  # the lock goes with it

    # -- incidents and silences --

    def load(self) -> tuple[list[Incident], list[Silence]]:
        """Every stored incident (open and retained resolved ones) and silence."""

        def load(db: sqlite3.Connection) -> tuple[list[Incident], list[Silence]]:
            incidents = [_incident(b) for (b,) in db.execute("SELECT body FROM incidents")]
            silences = [_silence(b) for (b,) in db.execute("SELECT body FROM silences")]
            return incidents, silences

        return self._run("load", load)

    def commit(self, effects: Effects, notifications: list[tuple[str, Notification]]) -> list[int]:
        """Persist ``effects`` and log ``notifications`` (``(notifier label,
        notification)``, one row each, pending) in one durable transaction; append
        ``effects.events`` to the write-back outbox. Returns the new log rows' ids, in
        the order of ``notifications``."""

        def commit(db: sqlite3.Connection) -> list[int]:
            self._write_effects(db, effects)
            rows: list[int] = []
            for notifier, notification in notifications:
                cursor = db.execute(
                    "INSERT INTO notifications (notifier, body, created) VALUES (?, ?, ?)",
                    (notifier, _encode(notification), notification.time),
                )
                rows.append(_rowid(cursor))
            if effects.events:
                db.executemany(
                    "INSERT INTO outbox (body) VALUES (?)",
                    [(_encode(event),) for event in effects.events],
                )
                self._bound_outbox(db)
            return rows

        return self._run("commit", commit, write=True)

    def _write_effects(self, db: sqlite3.Connection, effects: Effects) -> None:
        if effects.incidents:
            db.executemany(
                "INSERT OR REPLACE INTO incidents (id, body) VALUES (?, ?)",
                [(i.id, _encode(i)) for i in effects.incidents],
            )
        for incident_id in effects.forgotten:
            db.execute("DELETE FROM incidents WHERE id = ?", (incident_id,))
            db.execute("DELETE FROM history WHERE incident = ?", (incident_id,))
        if effects.history:
            db.executemany(
                "INSERT INTO history (incident, body) VALUES (?, ?)",
                [(c.incident, _encode(c)) for c in effects.history],
            )
            for incident_id in {c.incident for c in effects.history}:
                db.execute(
                    "DELETE FROM history WHERE incident = ?1 AND row <= (SELECT row FROM history"
                    " WHERE incident = ?1 ORDER BY row DESC LIMIT 1 OFFSET ?2)",
                    (incident_id, KEEP_HISTORY),
                )
        if effects.silences:
            db.executemany(
                "INSERT OR REPLACE INTO silences (id, ends_at, body) VALUES (?, ?, ?)",
                [(s.id, s.ends_at, _encode(s)) for s in effects.silences],
            )

    def history(self, incident_id: str, limit: int = 1000) -> list[Change]:
        """The incident's changes, oldest first: the newest ``limit`` of them."""

        def history(db: sqlite3.Connection) -> list[Change]:
            rows = db.execute(
                "SELECT body FROM history WHERE incident = ? ORDER BY row DESC LIMIT ?",
                (incident_id, limit),
            ).fetchall()
            return [_change(b) for (b,) in reversed(rows)]

        return self._run("history", history)

    # -- the notification log --

    def pending_notifications(self, notifier: str) -> list[tuple[int, Notification]]:
        """``(row, notification)`` logged for ``notifier`` and not done, oldest first."""

        def pending(db: sqlite3.Connection) -> list[tuple[int, Notification]]:
            rows = db.execute(
                "SELECT row, body FROM notifications WHERE notifier = ? AND outcome IS NULL"
                " ORDER BY row",
                (notifier,),
            )
            return [(row, _notification(body)) for row, body in rows]

        return self._run("pending_notifications", pending)

    def notification_done(
        self, row: int, outcome: Literal["sent", "dropped"], detail: str = ""
    ) -> None:
        """Mark log row ``row`` done (``sent``, or ``dropped`` with why in ``detail``).
        Raises KeyError for a row that is not in the log."""
        if outcome not in ("sent", "dropped"):
            raise ValueError(f"outcome: expected 'sent' or 'dropped', got {outcome!r}")

        def done(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                "UPDATE notifications SET outcome = ?, detail = ?, done = ? WHERE row = ?",
                (outcome, detail, now_ms(), row),
            )
            self._done_since_prune += 1
            if self._done_since_prune >= PRUNE_EVERY:
                self._prune(db)
            return cursor.rowcount

        if not self._run("notification_done", done, write=True):
            raise KeyError(row)

    def _prune(self, db: sqlite3.Connection) -> None:
        """Keep the newest :data:`KEEP_DONE_NOTIFICATIONS` done rows of the log."""
        self._done_since_prune = 0
        found = db.execute(
            "SELECT row FROM notifications WHERE outcome IS NOT NULL ORDER BY row DESC"
            " LIMIT 1 OFFSET ?",
            (KEEP_DONE_NOTIFICATIONS,),
        ).fetchone()
        if found is not None:
            db.execute(
                "DELETE FROM notifications WHERE outcome IS NOT NULL AND row <= ?", (found[0],)
            )

    # -- rule state --

    def save_rule_state(self, rule: str, changes: Mapping[str, Any]) -> None:
        """Apply a rule's ``save()``: key -> JSON-able value, or None to delete the key."""
        if not changes:
            return

        def save(db: sqlite3.Connection) -> None:
            gone = [(rule, key) for key, value in changes.items() if value is None]
            kept = [(rule, key, _encode(v)) for key, v in changes.items() if v is not None]
            if gone:
                db.executemany("DELETE FROM rule_state WHERE rule = ? AND key = ?", gone)
            if kept:
                db.executemany(
                    "INSERT OR REPLACE INTO rule_state (rule, key, body) VALUES (?, ?, ?)", kept
                )

        self._run("save_rule_state", save, write=True)

    def rule_state(self, rule: str) -> dict[str, Any]:
        """Every key saved for ``rule`` (for its ``restore()``)."""

        def state(db: sqlite3.Connection) -> dict[str, Any]:
            rows = db.execute("SELECT key, body FROM rule_state WHERE rule = ?", (rule,))
            return {key: _any(body) for key, body in rows}

        return self._run("rule_state", state)

    # -- the write-back outbox --

    def outbox(self, limit: int) -> list[tuple[int, Event]]:
        """The oldest ``limit`` write-back events not sent yet, as ``(row, event)``."""

        def outbox(db: sqlite3.Connection) -> list[tuple[int, Event]]:
            rows = db.execute("SELECT row, body FROM outbox ORDER BY row LIMIT ?", (limit,))
            return [(row, _event(body)) for row, body in rows]

        return self._run("outbox", outbox)

    def outbox_done(self, rows: Sequence[int]) -> None:
        """Delete outbox rows the collector has taken."""
        if not rows:
            return

        def done(db: sqlite3.Connection) -> None:
            db.executemany("DELETE FROM outbox WHERE row = ?", [(row,) for row in rows])

        self._run("outbox_done", done, write=True)

    def _bound_outbox(self, db: sqlite3.Connection) -> None:
        first, last = db.execute("SELECT MIN(row), MAX(row) FROM outbox").fetchone()
        # Rows are consecutive but for those done, so last - first bounds the count.
        if first is None or last - first < MAX_OUTBOX:
            return
        count = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        if count > MAX_OUTBOX:
            db.execute(
                "DELETE FROM outbox WHERE row IN (SELECT row FROM outbox ORDER BY row LIMIT ?)",
                (count - MAX_OUTBOX,),
            )
            self.outbox_dropped += count - MAX_OUTBOX

    # -- plumbing --

    def _run(self, what: str, func: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        db = self._db
        if db is None:
            raise StateError(f"{self.path}: {what}: the state database is closed")

        def call() -> T:
            if not write:
                return func(db)
            with _transaction(db):
                return func(db)

        return self._guard(what, call)

    def _guard(self, what: str, func: Callable[[], T]) -> T:
        try:
            return func()
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"{self.path}: {what}: {_reason(exc)}") from None


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _rowid(cursor: sqlite3.Cursor) -> int:
    row = cursor.lastrowid
    assert row is not None  # an INSERT always sets it
    return row


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return text
