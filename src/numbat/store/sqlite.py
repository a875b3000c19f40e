"""The embedded store: SQLite (stdlib) on one machine with no InfluxDB, with retention.

Layout (schema version 2)::

    meta    (key TEXT PRIMARY KEY, value INTEGER)             'version', 'seq'
    series  (id INTEGER PRIMARY KEY AUTOINCREMENT, measurement TEXT, tags TEXT,
             UNIQUE (measurement, tags))                      tags: canonical JSON object
    points  (series_id, time, seq, value) PRIMARY KEY (series_id, time, seq) WITHOUT ROWID
    inbox   (series_id, time, seq, value) PRIMARY KEY (time, series_id, seq) WITHOUT ROWID
    texts   (time, series_id, seq, fields) PRIMARY KEY (time, series_id, seq) WITHOUT ROWID
                                                              fields: JSON object of text

``texts`` holds the text fields (``description``, ``message``) of the points that have
any, keyed like their point; it is read by time range (:meth:`SQLiteStore.annotations`)
and most points have none, so it stays apart from the point tables. Version 1 (before
``texts``) is upgraded in place when opened: the table is created and the version set.

Why two point tables: range queries want points clustered by series then time, but new
points arrive in time order across all series, so inserting them straight into that
order touches one B-tree leaf per series per batch (about 4x slower than an append).
New points are therefore appended to ``inbox`` (clustered by time: cheap appends, still
indexed for time ranges) and moved into ``points`` in sorted order, many per leaf, once
``inbox`` holds ``compact_rows`` rows. Queries read both tables. ``seq`` is a counter
kept in ``meta`` that makes every point's key unique, so two points of one series in the
same millisecond are both kept.

Every SQLite call runs in one worker thread that owns the connection, so the event loop
never waits on the disk; the async methods hand their work to that thread in order.
Series ids are cached in memory so a write is a single ``executemany``. One process
writes a database file; other processes may open it to read (series that another
process added are picked up through ``PRAGMA data_version``).

Retention: :meth:`SQLiteStore.prune` deletes points (and their texts) older than
``retention_ms`` and the series left with no point, in short transactions of at most
``PRUNE_CHUNK`` points so the write lock is never held for long;
:meth:`~SQLiteStore.write` calls it once every ``prune_interval_ms`` by the injected
clock, and counts a point already older than the retention as ``expired`` instead of
storing it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

from numbat._ratelimit import RateLimitedLog
from numbat.event import Event, now_ms
from numbat.store import (
    ANNOTATIONS_LIMIT,
    EVENTS_PAGE,
    MAX_GROUPS,
    MAX_RATE_POINTS,
    MAX_SERIES,
    PERCENTILES,
    RECENT_POINTS,
    Aggregate,
    Annotation,
    Bucket,
    Page,
    Series,
    SeriesInfo,
    Store,
    WriteResult,
    bucket_count,
    busiest,
    check_groups,
    check_limit,
    check_rate_points,
    check_series_limit,
    glob_matcher,
    newest,
    paged_events,
    point_event,
    rate_buckets,
    series_hint,
)
from numbat.store.points import TEXT_FIELDS, PointMapper, Tags, scalar_text

__all__ = ["DEFAULT_RETENTION_MS", "SQLiteStore", "texts_of", "to_point"]

T = TypeVar("T")
Row = tuple[str, Tags, int, float]
SeriesKey = tuple[str, Tags]

DAY_MS = 86_400_000
DEFAULT_RETENTION_MS = 7 * DAY_MS
PRUNE_INTERVAL_MS = 60_000
COMPACT_ROWS = 100_000
PRUNE_CHUNK = 10_000  # points deleted per transaction
PRUNE_SERIES = 500  # series visited per transaction
# How long a write waits for another connection's lock before failing. The store's
# callers block (the collector's sqlite output is ``when_full = "block"``), so waiting
# is backpressure; failing would drop the batch.
BUSY_TIMEOUT_S = 30.0
SCHEMA_VERSION = 2

_MAPPER = PointMapper()
log = logging.getLogger(__name__)

# A new file starts at version 1 and is upgraded like an old one (_migrate).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES ('version', 1), ('seq', 0);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    measurement TEXT NOT NULL,
    tags TEXT NOT NULL,
    UNIQUE (measurement, tags)
);
CREATE TABLE IF NOT EXISTS points (
    series_id INTEGER NOT NULL,
    time INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (series_id, time, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox (
    series_id INTEGER NOT NULL,
    time INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (time, series_id, seq)
) WITHOUT ROWID;
"""

# Each step takes the schema from version N (its index + 1) to N + 1.
_MIGRATIONS = (
    """
    CREATE TABLE IF NOT EXISTS texts (
        time INTEGER NOT NULL,
        series_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        fields TEXT NOT NULL,
        PRIMARY KEY (time, series_id, seq)
    ) WITHOUT ROWID;
    """,
)

# For "last", SQLite takes a bare column from the row holding the single max() of the
# group: the value at the latest time (one of them when several share that millisecond).
_AGGREGATE_SQL: Mapping[str, str] = {
    "mean": "AVG(value)",
    "min": "MIN(value)",
    "max": "MAX(value)",
    "count": "COUNT(*)",
    "last": "value, MAX(time)",
}


def to_point(event: Event, mapper: PointMapper = _MAPPER) -> Row | None:
    """``(measurement, tags, time, value)`` of an event as this store keeps it, or None
    for a heartbeat.

    The mapping is :mod:`numbat.store.points`'s (the one InfluxDB's renderer uses too):
    tags are every other scalar field but ``ttl`` and the text fields (``description``
    and ``message``), which :func:`texts_of` gives.

    >>> to_point({"name": "db.query", "value": 3, "time": 10, "host": "a", "ok": True,
    ...           "ttl": 5, "description": "slow"})
    ('db.query', (('host', 'a'), ('ok', 'true')), 10, 3.0)
    >>> to_point({"name": "web.heartbeat", "value": 1, "time": 10}) is None
    True
    """
    if not mapper.should_store(event):
        return None
    # Not mapper.point(): a stored event has its time (a missing one fails the batch).
    return str(event["name"]), mapper.tags(event), int(event["time"]), float(event["value"])


def texts_of(event: Event, text_fields: Iterable[str] = TEXT_FIELDS) -> str | None:
    """The event's text fields as this store keeps them (a JSON object, each value as
    text, as InfluxDB stores it), or None when it has none.

    >>> texts_of({"name": "deploy", "description": "v1.2", "message": 7})
    '{"description":"v1.2","message":"7"}'
    >>> texts_of({"name": "web.requests"}) is None
    True
    """
    found = {key: scalar_text(event[key]) for key in text_fields if key in event}
    return json.dumps(found, ensure_ascii=False, separators=(",", ":")) if found else None


class _Batch(NamedTuple):
    """One write's rows, and what it left out."""

    points: list[tuple[int, int, int, float]]  # (series_id, time, seq, value)
    texts: list[tuple[int, int, int, str]]  # (time, series_id, seq, fields)
    skipped: int
    expired: int


@contextmanager
def _transaction(db: sqlite3.Connection, undo: Callable[[], None] | None = None) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; on any error, roll back, call ``undo`` (which
    puts back what the caller cached from inside the transaction) and re-raise the error.

    After some errors (``SQLITE_FULL``, ``SQLITE_IOERR``, ``SQLITE_NOMEM``...) SQLite
    has already rolled back by itself: a ROLLBACK then raises "no transaction is
    active", which would hide the real error and skip ``undo``. So roll back only while
    a transaction is open, and never let a failing ROLLBACK replace the error.
    """
    if db.in_transaction:  # left open by a ROLLBACK that failed: its undo is done
        db.execute("ROLLBACK")
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        try:
            if db.in_transaction:
                # Should this fail too, the connection is unusable; closing it (by its
                # owner) rolls back, and the original error is the one to report.
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
        finally:
            if undo is not None:
                undo()
        raise


def _tags_json(tags: Tags) -> str:
    return json.dumps(dict(tags), ensure_ascii=False, separators=(",", ":"))


def _tags_from_json(text: str) -> Tags:
    return tuple(sorted(json.loads(text).items()))


class SQLiteStore(Store):
    """A :class:`~numbat.store.Store` in one SQLite file, keeping ``retention_ms`` of data.

    >>> import asyncio, os, tempfile
    >>> async def demo(path: str) -> list[Bucket]:
    ...     store = SQLiteStore(path, clock=lambda: 180_000)
    ...     try:
    ...         await store.write([{"name": "web.requests", "value": 3, "time": 70_000,
    ...                             "host": "a"}])
    ...         return await store.query("web.requests", {"host": "a"}, start=0,
    ...                                  end=120_000, bucket=60_000, aggregate="max")
    ...     finally:
    ...         await store.close()
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     asyncio.run(demo(os.path.join(tmp, "numbat.db")))
    [Bucket(start=0, value=None), Bucket(start=60000, value=3.0)]

    ``text_fields``: the fields kept as text rather than tags, as
    :class:`~numbat.store.points.PointMapper` takes them (the InfluxDB output's
    ``text_fields``).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        retention_ms: int = DEFAULT_RETENTION_MS,
        clock: Callable[[], int] = now_ms,
        prune_interval_ms: int = PRUNE_INTERVAL_MS,
        compact_rows: int = COMPACT_ROWS,
        text_fields: Iterable[str] = TEXT_FIELDS,
    ) -> None:
        if retention_ms <= 0:
            raise ValueError(f"retention_ms must be positive, got {retention_ms}")
        self.path = path
        self.retention_ms = retention_ms
        self.mapper = PointMapper(text_fields=text_fields)
        self._clock = clock
        self._prune_interval = prune_interval_ms
        self._compact_rows = compact_rows
        self._next_prune = clock()  # the first write prunes what aged out while we were down
        self._next_compact = 0  # clock time before which a failed compaction is not retried
        self._warn = RateLimitedLog(log)
        self._pruning = False
        self._closed = False
        # A single thread: it owns the connection and serialises every job.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="numbat-sqlite")
        # Everything below belongs to the worker thread.
        self._db: sqlite3.Connection | None = None
        self._ids: dict[SeriesKey, int] = {}
        self._keys: dict[int, SeriesKey] = {}
        # measurement: {series id: its tag items}, for matching tag filters
        self._by_measurement: dict[str, dict[int, frozenset[tuple[str, str]]]] = {}
        self._max_id = 0
        self._data_version = -1
        self._seq = 0
        self._inbox_rows = 0
        self._inbox_latest: dict[int, int] = {}  # series id: its latest time in the inbox

    # -- the Store interface (event loop side) --

    async def open(self) -> None:
        """Open the file now, creating the schema, rather than at the first write (so a
        path that cannot be used shows at start). Raises sqlite3.Error or OSError."""
        await self._call(self._connect)

    async def write(self, events: Sequence[Event]) -> WriteResult:
        """Store the events' points and their text; prune and compact when due.

        Heartbeats are not stored (``skipped``), nor points already past the retention
        (``expired``: so a prune never races a late write for a series it is about to
        find empty). All or nothing: an error (sqlite3.Error, OSError) stores none.

        A compaction or prune that fails after the batch was stored (a full disk) is
        logged, rate-limited, and retried later (a compaction once ``prune_interval_ms``
        has passed, a prune at its next turn): it never fails the stored batch.
        """
        if not events:
            return WriteResult(0)
        result, inbox_rows = await self._call(
            self._write, events, self._clock() - self.retention_ms
        )
        if inbox_rows >= self._compact_rows and self._clock() >= self._next_compact:
            await self._maintain("compact", self.compact)
        if self._clock() >= self._next_prune:
            await self._maintain("prune", self.prune)
        return result

    async def _maintain(self, what: str, job: Callable[[], Awaitable[object]]) -> None:
        try:
            await job()
        except (sqlite3.Error, OSError) as exc:
            if what == "compact":  # each try copies the whole inbox: not at every write
                self._next_compact = self._clock() + self._prune_interval
            self._warn.warning(
                what, "sqlite %s: %s failed, retried later: %r", self.path, what, exc
            )

    async def series(self, measurement: str | None = None) -> list[Series]:
        """Every series, or those of one measurement, sorted."""
        return await self._call(self._series, measurement)

    async def query(
        self,
        measurement: str,
        tags: Mapping[str, str],
        *,
        start: int,
        end: int,
        bucket: int,
        aggregate: Aggregate = "mean",
    ) -> list[Bucket]:
        """See :meth:`numbat.store.Store.query`; the points of all matching series together."""
        count = bucket_count(start, end, bucket, aggregate)
        found = await self._call(
            self._query, measurement, dict(tags), start, end, bucket, aggregate
        )
        return [Bucket(start + i * bucket, found.get(i)) for i in range(count)]

    async def annotations(
        self,
        pattern: str = "*",
        tags: Mapping[str, str] | None = None,
        *,
        start: int,
        end: int,
        limit: int = ANNOTATIONS_LIMIT,
    ) -> list[Annotation]:
        """See :meth:`numbat.store.Store.annotations`."""
        check_limit(limit)
        return await self._call(self._annotations, pattern, dict(tags or {}), start, end, limit)

    async def series_info(self, pattern: str = "*", *, limit: int = MAX_SERIES) -> list[SeriesInfo]:
        """See :meth:`numbat.store.Store.series_info`."""
        check_series_limit(limit)
        return await self._call(self._series_info, pattern, limit)

    async def query_by(
        self,
        measurement: str,
        tags: Mapping[str, str],
        by: str,
        *,
        start: int,
        end: int,
        bucket: int,
        aggregate: Aggregate = "mean",
        limit: int = MAX_GROUPS,
    ) -> dict[str, list[Bucket]]:
        """See :meth:`numbat.store.Store.query_by`."""
        count = bucket_count(start, end, bucket, aggregate)
        check_groups(by, limit, count)
        counts = await self._call(self._group_counts, measurement, dict(tags), by, start, end)
        groups = {}
        for value in busiest(counts, limit):
            wanted = {**tags, by: value}
            groups[value] = await self.query(
                measurement, wanted, start=start, end=end, bucket=bucket, aggregate=aggregate
            )
        return groups

    def events(
        self, *, start: int, end: int, pattern: str = "*", page: int = EVENTS_PAGE
    ) -> AsyncIterator[Event]:
        """See :meth:`numbat.store.Store.events`."""

        async def fetch(low: int, high: int, limit: int | None) -> Page:
            return await self._call(self._events, pattern, low, high, limit)

        return paged_events(fetch, start, end, page)

    async def prune(self) -> int:
        """Delete points older than the retention and series left empty; return points deleted.

        Runs as many short jobs, so writes and queries interleave with a long prune.
        """
        if self._pruning:
            return 0
        self._pruning = True
        try:
            now = self._clock()
            self._next_prune = now + self._prune_interval
            cutoff = now - self.retention_ms
            deleted = 0
            while count := await self._call(self._prune_inbox, cutoff):
                deleted += count
            while await self._call(self._prune_texts, cutoff):
                pass
            ids = await self._call(self._series_ids)
            index = 0
            while index < len(ids):
                count, index = await self._call(self._prune_points, cutoff, ids, index)
                deleted += count
            return deleted
        finally:
            self._pruning = False

    async def compact(self) -> None:
        """Move the points of the inbox into the series-ordered table (write does this itself)."""
        await self._call(self._compact)

    async def close(self) -> None:
        """Close the connection in its thread and stop the thread; closing twice is fine."""
        if self._closed:
            return
        try:
            await self._call(self._close)
        finally:
            self._closed = True
            self._executor.shutdown(wait=True)

    async def _call(self, func: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise RuntimeError("the store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    # -- the worker thread --

    def _connect(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        # isolation_level=None: we BEGIN/COMMIT ourselves (see _transaction).
        db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # In WAL mode this stays consistent; a power cut may lose the last commits.
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA cache_size=-16000")  # 16 MiB
            db.execute("PRAGMA temp_store=MEMORY")  # the compaction's sort
            db.execute("PRAGMA journal_size_limit=67108864")  # keep the WAL file at most 64 MiB
            db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
            self._migrate(db)
            self._load(db)
        except BaseException:
            db.close()
            raise
        self._db = db
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Bring a file of an older schema version up to this one, one step a version,
        each in its own transaction (a crash between steps resumes at the next open)."""
        while True:
            with _transaction(db):
                (version,) = db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
                if not 1 <= version < SCHEMA_VERSION:
                    return
                for statement in _MIGRATIONS[version - 1].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("UPDATE meta SET value = ? WHERE key = 'version'", (version + 1,))

    def _load(self, db: sqlite3.Connection) -> None:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if meta["version"] != SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path}: schema version {meta['version']}, not {SCHEMA_VERSION}"
                " (written by a newer numbat?)"
            )
        self._seq = meta["seq"]
        self._refresh(db)
        self._inbox_rows = db.execute("SELECT COUNT(*) FROM inbox").fetchone()[0]
        sql = "SELECT series_id, MAX(time) FROM inbox GROUP BY series_id"
        self._inbox_latest = dict(db.execute(sql).fetchall())

    def _refresh(self, db: sqlite3.Connection) -> None:
        """Learn the series another process added (ids only grow: AUTOINCREMENT)."""
        version = db.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return
        self._data_version = version
        rows = db.execute(
            "SELECT id, measurement, tags FROM series WHERE id > ? ORDER BY id", (self._max_id,)
        )
        for sid, measurement, text in rows:
            self._remember(sid, (measurement, _tags_from_json(text)))

    def _remember(self, sid: int, key: SeriesKey) -> None:
        self._forget(key)  # another process may have pruned it and made it anew
        self._ids[key] = sid
        self._keys[sid] = key
        self._by_measurement.setdefault(key[0], {})[sid] = frozenset(key[1])
        self._max_id = max(self._max_id, sid)

    def _forget(self, key: SeriesKey) -> None:
        sid = self._ids.pop(key, None)
        if sid is None:
            return
        del self._keys[sid]
        members = self._by_measurement[key[0]]
        del members[sid]
        if not members:
            del self._by_measurement[key[0]]

    def _write(self, events: Sequence[Event], cutoff: int) -> tuple[WriteResult, int]:
        db = self._connect()
        created: list[SeriesKey] = []
        seq, max_id = self._seq, self._max_id

        def undo() -> None:
            # The series made in the transaction are gone with it: their cached ids
            # would be handed to other series by the next write.
            self._seq, self._max_id = seq, max_id
            for key in created:
                self._forget(key)

        with _transaction(db, undo):
            batch = self._rows(db, events, cutoff, created)
            rows = batch.points
            db.executemany("INSERT INTO inbox VALUES (?, ?, ?, ?)", rows)
            if batch.texts:
                db.executemany("INSERT INTO texts VALUES (?, ?, ?, ?)", batch.texts)
            db.execute("UPDATE meta SET value = ? WHERE key = 'seq'", (self._seq,))
        self._inbox_rows += len(rows)
        latest = self._inbox_latest
        for sid, time, _, _ in rows:
            if time > latest.get(sid, -1):
                latest[sid] = time
        return WriteResult(len(rows), batch.skipped, batch.expired), self._inbox_rows

    def _rows(
        self,
        db: sqlite3.Connection,
        events: Sequence[Event],
        cutoff: int,
        created: list[SeriesKey],
    ) -> _Batch:
        """The inbox and texts rows of ``events``, creating series as needed."""
        ids = self._ids
        seq = self._seq
        mapper = self.mapper
        text_fields = mapper.text_fields
        points: list[tuple[int, int, int, float]] = []
        texts: list[tuple[int, int, int, str]] = []
        skipped = expired = 0
        for event in events:
            row = to_point(event, mapper)
            if row is None:
                skipped += 1
                continue
            if row[2] < cutoff:
                expired += 1
                continue
            key = (row[0], row[1])
            sid = ids.get(key)
            if sid is None:
                sid = self._create_series(db, key)
                created.append(key)
            points.append((sid, row[2], seq, row[3]))
            for field in text_fields:
                if field in event:  # most events have no text: one test per field
                    texts.append((row[2], sid, seq, texts_of(event, text_fields) or ""))
                    break
            seq += 1
        self._seq = seq
        return _Batch(points, texts, skipped, expired)

    def _create_series(self, db: sqlite3.Connection, key: SeriesKey) -> int:
        params = (key[0], _tags_json(key[1]))
        db.execute("INSERT OR IGNORE INTO series (measurement, tags) VALUES (?, ?)", params)
        (sid,) = db.execute(
            "SELECT id FROM series WHERE measurement = ? AND tags = ?", params
        ).fetchone()
        self._remember(sid, key)
        return int(sid)

    def _compact(self) -> None:
        db = self._connect()
        if not self._inbox_rows:
            return
        with _transaction(db):
            # Sorted, so each leaf of ``points`` takes all its new rows at once.
            db.execute(
                "INSERT INTO points SELECT series_id, time, seq, value FROM inbox"
                " ORDER BY series_id, time, seq"
            )
            db.execute("DELETE FROM inbox")
        self._inbox_rows = 0
        self._inbox_latest.clear()

    def _series(self, measurement: str | None) -> list[Series]:
        db = self._connect()
        if measurement is None:
            rows = db.execute("SELECT measurement, tags FROM series").fetchall()
        else:
            sql = "SELECT measurement, tags FROM series WHERE measurement = ?"
            rows = db.execute(sql, (measurement,)).fetchall()
        return sorted(Series(name, _tags_from_json(text)) for name, text in rows)

    def _ids_with(self, measurement: str, tags: dict[str, str]) -> list[int]:
        """The ids of the series of ``measurement`` whose tags include ``tags``."""
        members = self._by_measurement.get(measurement, {})
        wanted = {(key, scalar_text(val)) for key, val in tags.items()}
        return [sid for sid, items in members.items() if wanted <= items]

    def _query(
        self,
        measurement: str,
        tags: dict[str, str],
        start: int,
        end: int,
        bucket: int,
        aggregate: str,
    ) -> dict[int, float]:
        """Aggregate per bucket index, for the buckets that have points."""
        db = self._connect()
        self._refresh(db)
        ids = self._ids_with(measurement, tags)
        if not ids or end <= start:
            return {}
        # Ids are our own integers, so they go into the SQL as literals: no limit on how many.
        where = f"series_id IN ({','.join(map(str, ids))}) AND time >= ?1 AND time < ?2"
        if aggregate == "rate":
            return self._rate(db, where, start, end, bucket)
        if aggregate in PERCENTILES:
            # Nearest rank, as InfluxDB's PERCENTILE(): the value at rank
            # floor(n * p / 100.0 + 0.5) of the bucket's n points sorted (see nearest_rank).
            sql = (
                "SELECT bucket, value FROM ("
                "SELECT bucket, value, ROW_NUMBER() OVER (PARTITION BY bucket ORDER BY value)"
                " AS rank, COUNT(*) OVER (PARTITION BY bucket) AS n FROM ("
                f"SELECT (time - ?1) / ?3 AS bucket, value FROM points WHERE {where}"
                f" UNION ALL SELECT (time - ?1) / ?3, value FROM inbox WHERE {where}"
                f")) WHERE rank = CAST(n * {PERCENTILES[aggregate]} / 100.0 + 0.5 AS INTEGER)"
            )
        else:
            sql = (
                f"SELECT (time - ?1) / ?3 AS bucket, {_AGGREGATE_SQL[aggregate]} FROM ("
                f"SELECT time, value FROM points WHERE {where}"
                f" UNION ALL SELECT time, value FROM inbox WHERE {where}"
                ") GROUP BY bucket"
            )
        return {row[0]: float(row[1]) for row in db.execute(sql, (start, end, bucket))}

    def _rate(
        self, db: sqlite3.Connection, where: str, start: int, end: int, bucket: int
    ) -> dict[int, float]:
        """The ``rate`` aggregate (see :func:`numbat.store.rate_buckets`)."""
        sql = (
            "SELECT series_id, time, value FROM ("
            f"SELECT series_id, time, seq, value FROM points WHERE {where}"
            f" UNION ALL SELECT series_id, time, seq, value FROM inbox WHERE {where}"
            f") ORDER BY series_id, time, seq LIMIT {MAX_RATE_POINTS + 1}"
        )
        rows = db.execute(sql, (start, end)).fetchall()
        check_rate_points(len(rows))
        series: dict[int, list[tuple[int, float]]] = {}
        for sid, time, value in rows:
            series.setdefault(sid, []).append((time, value))
        return rate_buckets(
            ((self._keys[sid][1], points) for sid, points in series.items()), start, bucket
        )

    def _group_counts(
        self, measurement: str, tags: dict[str, str], by: str, start: int, end: int
    ) -> dict[str, int]:
        """Points in ``[start, end)`` per value of the tag ``by``."""
        db = self._connect()
        self._refresh(db)
        values = {}
        for sid in self._ids_with(measurement, tags):
            value = dict(self._keys[sid][1]).get(by)
            if value is not None:
                values[sid] = value
        if not values or end <= start:
            return {}
        where = f"series_id IN ({','.join(map(str, values))}) AND time >= ?1 AND time < ?2"
        sql = (
            f"SELECT series_id, COUNT(*) FROM (SELECT series_id FROM points WHERE {where}"
            f" UNION ALL SELECT series_id FROM inbox WHERE {where}) GROUP BY series_id"
        )
        counts: dict[str, int] = {}
        for sid, count in db.execute(sql, (start, end)):
            counts[values[sid]] = counts.get(values[sid], 0) + count
        return counts

    def _series_info(self, pattern: str, limit: int) -> list[SeriesInfo]:
        db = self._connect()
        self._refresh(db)
        match = glob_matcher(pattern).match
        keys = sorted((key, sid) for sid, key in self._keys.items() if match(key[0]))[:limit]
        if not keys:
            return []
        # The inbox is clustered by time, not series: one pass ranks every series' rows
        # in it (a read per series would scan it each time).
        inbox_sql = (
            "SELECT i.series_id, i.time, i.seq, i.value, t.fields IS NOT NULL FROM ("
            "SELECT series_id, time, seq, value, ROW_NUMBER() OVER"
            " (PARTITION BY series_id ORDER BY time DESC, seq DESC) AS rank FROM inbox"
            f" WHERE series_id IN ({','.join(str(sid) for _, sid in keys)})) AS i"
            " LEFT JOIN texts AS t"
            " ON t.time = i.time AND t.series_id = i.series_id AND t.seq = i.seq"
            f" WHERE i.rank <= {RECENT_POINTS}"
        )
        recent: dict[int, list[tuple[int, int, float, int]]] = {}
        for sid, *row in db.execute(inbox_sql):
            recent.setdefault(sid, []).append((row[0], row[1], row[2], row[3]))
        points_sql = (
            "SELECT p.time, p.seq, p.value, t.fields IS NOT NULL FROM ("
            "SELECT time, seq, value FROM points WHERE series_id = ?1"
            f" ORDER BY time DESC, seq DESC LIMIT {RECENT_POINTS}) AS p LEFT JOIN texts AS t"
            " ON t.time = p.time AND t.series_id = ?1 AND t.seq = p.seq"
        )
        found = []
        for (measurement, tags), sid in keys:
            rows = recent.get(sid, []) + db.execute(points_sql, (sid,)).fetchall()
            rows = sorted(rows, reverse=True)[:RECENT_POINTS]  # newest first
            values = [float(row[2]) for row in reversed(rows)]
            hint = series_hint(tags, values, any(row[3] for row in rows))
            newest_time, newest_value = (int(rows[0][0]), values[-1]) if rows else (None, None)
            found.append(SeriesInfo(measurement, tags, hint, newest_time, newest_value))
        return found

    def _annotations(
        self, pattern: str, tags: dict[str, str], start: int, end: int, limit: int
    ) -> list[Annotation]:
        db = self._connect()
        self._refresh(db)
        match = glob_matcher(pattern).match
        wanted = {(key, scalar_text(val)) for key, val in tags.items()}
        ids = [
            sid
            for measurement, members in self._by_measurement.items()
            if match(measurement)
            for sid, items in members.items()
            if wanted <= items
        ]
        if not ids or end <= start:
            return []
        where = "time >= ? AND time < ?"
        if len(ids) < len(self._keys):  # not every series: a dashboard's default is all
            where += f" AND series_id IN ({','.join(map(str, ids))})"
        # The limit-th newest time; every point from there on, ties included, is a
        # candidate, so the cut falls where newest() puts it for every backend.
        sql = f"SELECT time FROM texts WHERE {where} ORDER BY time DESC LIMIT 1 OFFSET ?"
        row = db.execute(sql, (start, end, limit - 1)).fetchone()
        since = start if row is None else row[0]
        sql = f"SELECT time, series_id, fields FROM texts WHERE {where} ORDER BY time, seq"
        found = []
        for time, sid, text in db.execute(sql, (since, end)):
            measurement, series_tags = self._keys[sid]  # ids were all just looked up
            found.append(Annotation(time, measurement, series_tags, json.loads(text)))
        return newest(found, limit)

    def _events(self, pattern: str, low: int, high: int, limit: int | None) -> Page:
        """The points in ``[low, high)`` of the measurements matching ``pattern``, at
        most ``limit``, by time then write order (``seq``), with their texts."""
        db = self._connect()
        self._refresh(db)
        match = glob_matcher(pattern).match
        ids = [
            sid
            for measurement, members in self._by_measurement.items()
            if match(measurement)
            for sid in members
        ]
        if not ids or high <= low:
            return Page([], high)
        where = "time >= ?1 AND time < ?2"
        if len(ids) < len(self._keys):
            where += f" AND series_id IN ({','.join(map(str, ids))})"
        sql = (
            "SELECT p.time, p.series_id, p.value, t.fields FROM ("
            f"SELECT series_id, time, seq, value FROM points WHERE {where}"
            f" UNION ALL SELECT series_id, time, seq, value FROM inbox WHERE {where}"
            ") AS p LEFT JOIN texts AS t"
            " ON t.time = p.time AND t.series_id = p.series_id AND t.seq = p.seq"
            " ORDER BY p.time, p.seq LIMIT ?3"
        )
        rows = db.execute(sql, (low, high, -1 if limit is None else limit)).fetchall()
        found = []
        for time, sid, value, text in rows:
            measurement, tags = self._keys[sid]
            event = point_event(measurement, tags, time, value, json.loads(text) if text else None)
            found.append(((time, measurement, tags), event))
        complete = rows[-1][0] if limit is not None and len(rows) >= limit else high
        return Page(found, complete)

    def _prune_texts(self, cutoff: int) -> int:
        """Delete up to about PRUNE_CHUNK texts older than ``cutoff``."""
        return self._delete_chunk("texts", cutoff)

    def _delete_chunk(self, table: Literal["texts", "inbox"], cutoff: int) -> int:
        """Delete up to about PRUNE_CHUNK rows of ``table`` older than ``cutoff``: whole
        milliseconds at a time, so the chunk may run over by the rows sharing one."""
        db = self._connect()
        row = db.execute(
            f"SELECT time FROM {table} WHERE time < ? ORDER BY time LIMIT 1 OFFSET ?",
            (cutoff, PRUNE_CHUNK),
        ).fetchone()
        bound = cutoff if row is None else row[0] + 1
        return int(db.execute(f"DELETE FROM {table} WHERE time < ?", (bound,)).rowcount)

    def _series_ids(self) -> list[int]:
        self._connect()
        return sorted(self._keys)

    def _prune_inbox(self, cutoff: int) -> int:
        """Delete up to about PRUNE_CHUNK inbox points older than ``cutoff``."""
        deleted = self._delete_chunk("inbox", cutoff)
        self._inbox_rows -= deleted
        return deleted

    def _prune_points(self, cutoff: int, ids: list[int], index: int) -> tuple[int, int]:
        """One transaction of the prune from ``ids[index]`` on; return (deleted, next index)."""
        db = self._connect()
        deleted = visited = 0
        emptied: list[int] = []
        with _transaction(db):
            while index < len(ids) and deleted < PRUNE_CHUNK and visited < PRUNE_SERIES:
                count, done = self._prune_series(db, ids[index], cutoff, PRUNE_CHUNK - deleted)
                deleted += count
                if not done:
                    break  # the next job resumes this series
                if self._drop_if_empty(db, ids[index], cutoff):
                    emptied.append(ids[index])
                index += 1
                visited += 1
        self._drop_series(emptied)
        return deleted, index

    @staticmethod
    def _prune_series(
        db: sqlite3.Connection, sid: int, cutoff: int, limit: int
    ) -> tuple[int, bool]:
        """Delete up to ``limit`` points of a series older than ``cutoff``; True: none are left."""
        bound = db.execute(
            "SELECT time, seq FROM points WHERE series_id = ? AND time < ?"
            " ORDER BY time, seq LIMIT 1 OFFSET ?",
            (sid, cutoff, limit),
        ).fetchone()
        if bound is None:
            sql = "DELETE FROM points WHERE series_id = ? AND time < ?"
            return db.execute(sql, (sid, cutoff)).rowcount, True
        sql = "DELETE FROM points WHERE series_id = ? AND time <= ? AND (time, seq) < (?, ?)"
        return db.execute(sql, (sid, bound[0], *bound)).rowcount, False

    def _drop_if_empty(self, db: sqlite3.Connection, sid: int, cutoff: int) -> bool:
        """Delete the series if it has no point left; the inbox was pruned to ``cutoff``."""
        # Writes since then only added points at ``cutoff`` or later (see write).
        if self._inbox_latest.get(sid, -1) >= cutoff:
            return False
        sql = "SELECT 1 FROM points WHERE series_id = ? LIMIT 1"
        if db.execute(sql, (sid,)).fetchone() is not None:
            return False
        db.execute("DELETE FROM series WHERE id = ?", (sid,))
        return True

    def _drop_series(self, ids: list[int]) -> None:
        for sid in ids:
            self._inbox_latest.pop(sid, None)
            key = self._keys.get(sid)
            if key is not None:
                self._forget(key)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
