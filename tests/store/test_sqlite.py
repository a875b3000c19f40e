"""The embedded SQLite store: round trips, aggregates, tag filters, retention, durability."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import pytest

from numbat.event import Event
from numbat.store import Aggregate, Annotation, Bucket, Series, WriteResult
from numbat.store import sqlite as sqlite_store
from numbat.store.sqlite import SQLiteStore, to_point
from tests.store.stores import ev, run

MINUTE = 60_000
HOUR = 60 * MINUTE


class Clock:
    """A clock in ms that moves only when the test says so."""

    def __init__(self, now: int = 0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@asynccontextmanager
async def opened(path: Path, **options: Any) -> AsyncIterator[SQLiteStore]:
    """A store on ``path`` that is closed however the test ends."""
    store = SQLiteStore(path, **options)
    try:
        yield store
    finally:
        await store.close()


def values(buckets: list[Bucket]) -> list[float | None]:
    return [b.value for b in buckets]


async def minutes(
    store: SQLiteStore,
    measurement: str,
    tags: dict[str, str],
    *,
    n: int = 4,
    aggregate: Aggregate = "mean",
) -> list[float | None]:
    """The values of the first ``n`` one-minute buckets from time 0."""
    end = n * MINUTE
    return values(
        await store.query(measurement, tags, start=0, end=end, bucket=MINUTE, aggregate=aggregate)
    )


def test_round_trip(tmp_path: Path) -> None:
    """Written points come back as per-minute means with their bucket starts."""

    async def test() -> None:
        async with opened(tmp_path / "db", clock=Clock()) as store:
            await store.write([ev("web.ms", 10, 0, host="a"), ev("web.ms", 20, 59_999, host="a")])
            await store.write([ev("web.ms", 4.5, MINUTE, host="a")])
            got = await store.query("web.ms", {"host": "a"}, start=0, end=3 * MINUTE, bucket=MINUTE)
            assert got == [Bucket(0, 15.0), Bucket(MINUTE, 4.5), Bucket(2 * MINUTE, None)]

    run(test)


def test_same_millisecond_points_both_kept(tmp_path: Path) -> None:
    """Two points of one series in the same ms are both stored, in one batch or two."""

    async def test() -> None:
        async with opened(tmp_path / "db", clock=Clock()) as store:
            await store.write([ev("x", 1, 500), ev("x", 3, 500)])
            await store.write([ev("x", 5, 500)])
            assert await minutes(store, "x", {}, n=1, aggregate="count") == [3.0]
            assert await minutes(store, "x", {}, n=1) == [3.0]

    run(test)


def test_series_listing_and_tag_mapping(tmp_path: Path) -> None:
    """series() is sorted, filters by measurement, and holds scalar fields as text tags."""

    async def test() -> None:
        event = ev("db.query", 1, 0, host="h", ok=True, rows=3, ratio=0.5, ttl=9)
        event |= {"description": "slow", "message": "m", "status": "ok"}
        async with opened(tmp_path / "db", clock=Clock()) as store:
            await store.write([ev("web", 1, 0, host="b"), event, ev("web", 1, 0, host="a")])
            await store.write([ev("web", 2, 1, host="a")])  # a known series
            tags = (
                ("host", "h"),
                ("ok", "true"),
                ("ratio", "0.5"),
                ("rows", "3"),
                ("status", "ok"),
            )
            assert await store.series() == [
                Series("db.query", tags),
                Series("web", (("host", "a"),)),
                Series("web", (("host", "b"),)),
            ]
            assert await store.series("web") == [
                Series("web", (("host", "a"),)),
                Series("web", (("host", "b"),)),
            ]
            assert await store.series("nothing") == []
            assert await minutes(store, "db.query", {"ok": "true", "rows": "3"}, n=1) == [1.0]

    run(test)


@pytest.mark.parametrize(
    ("aggregate", "expected"),
    [
        ("mean", [3.0, 7.0, None, 1.0]),
        ("min", [1.0, 7.0, None, -2.0]),
        ("max", [5.0, 7.0, None, 4.0]),
        ("count", [3.0, 1.0, None, 2.0]),
        ("last", [3.0, 7.0, None, 4.0]),
    ],
)
def test_aggregates(tmp_path: Path, aggregate: Aggregate, expected: list[float | None]) -> None:
    """Each aggregate gives the exact figure per bucket, whatever order points came in."""

    async def test() -> None:
        async with opened(tmp_path / "db", clock=Clock()) as store:
            await store.write([ev("m", 3, 20_000), ev("m", 4, 190_000), ev("m", 1, 0)])
            await store.compact()  # a query reads the compacted points and the inbox together
            await store.write([ev("m", 5, 10_000), ev("m", 7, 65_000), ev("m", -2, 180_000)])
            assert await minutes(store, "m", {}, aggregate=aggregate) == expected

    run(test)


def test_tag_subset_matches_several_series(tmp_path: Path) -> None:
    """A tag filter matches every series whose tags include it; their points are pooled."""

    async def test() -> None:
        async with opened(tmp_path / "db", clock=Clock()) as store:
            await store.write(
                [
                    ev("cpu", 10, 0, host="a", region="eu"),
                    ev("cpu", 20, 1_000, host="b", region="eu"),
                    ev("cpu", 90, 2_000, host="c", region="us"),
                    ev("cpu.other", 1000, 0, host="a", region="eu"),
                ]
            )
            assert await minutes(store, "cpu", {"region": "eu"}, n=1) == [15.0]
            assert await minutes(store, "cpu", {"region": "eu"}, n=1, aggregate="last") == [20.0]
            assert await minutes(store, "cpu", {}, n=1, aggregate="count") == [3.0]
            assert await minutes(store, "cpu", {"host": "c", "region": "us"}, n=1) == [90.0]
            assert await minutes(store, "cpu", {"host": "a", "region": "us"}, n=1) == [None]
            assert await minutes(store, "cpu", {"zone": "x"}, n=1) == [None]

    run(test)


def test_empty_buckets_and_range_edges(tmp_path: Path) -> None:
    """Every interval gets a bucket (None if empty), the last one partial; end is exclusive."""

    async def test() -> None:
        async with opened(tmp_path / "db", clock=Clock()) as store:
            await store.write([ev("m", 1, 1_000), ev("m", 2, 150_000), ev("m", 8, 150_001)])
            got = await store.query("m", {}, start=1_000, end=150_001, bucket=MINUTE)
            assert got == [Bucket(1_000, 1.0), Bucket(61_000, None), Bucket(121_000, 2.0)]
            assert await store.query("m", {}, start=5, end=5, bucket=MINUTE) == []
            assert await store.query("m", {}, start=9, end=5, bucket=MINUTE) == []
            assert await minutes(store, "unknown", {}, n=2) == [None, None]

    run(test)


def test_heartbeats_not_stored(tmp_path: Path) -> None:
    """Events whose name ends in the segment "heartbeat" are dropped; others are kept."""

    async def test() -> None:
        async with opened(tmp_path / "db", clock=Clock()) as store:
            await store.write([ev("heartbeat", 1, 0), ev("app.heartbeat", 1, 0, host="a")])
            await store.write([ev("heartbeat.count", 1, 0), ev("app.heartbeats", 1, 0)])
            assert [s.measurement for s in await store.series()] == [
                "app.heartbeats",
                "heartbeat.count",
            ]
            assert await minutes(store, "app.heartbeat", {}, n=1) == [None]

    run(test)


def test_prune_drops_old_points_and_empty_series(tmp_path: Path) -> None:
    """prune() deletes points past the retention and series left empty; recent ones stay."""

    async def test() -> None:
        clock = Clock(HOUR)
        async with opened(tmp_path / "db", clock=clock, retention_ms=HOUR) as store:
            await store.write([ev("old", 1, 0), ev("old", 2, MINUTE), ev("mixed", 3, 0)])
            await store.compact()  # some points in the series table, some in the inbox
            await store.write([ev("mixed", 4, HOUR), ev("mixed", 5, 2 * MINUTE)])
            clock.now = HOUR + 2 * MINUTE  # the cutoff: 2 minutes
            assert await store.prune() == 3
            assert await store.series() == [Series("mixed", ())]
            got = await store.query(
                "mixed", {}, start=0, end=2 * HOUR, bucket=HOUR, aggregate="count"
            )
            assert values(got) == [1.0, 1.0]
            assert await store.prune() == 0

    run(test)


def test_write_prunes_when_due(tmp_path: Path) -> None:
    """A write prunes by itself once prune_interval_ms has passed on the clock."""

    async def test() -> None:
        clock = Clock(0)
        options: dict[str, Any] = {
            "clock": clock,
            "retention_ms": HOUR,
            "prune_interval_ms": MINUTE,
        }
        async with opened(tmp_path / "db", **options) as store:
            await store.write([ev("a", 1, 0)])
            clock.now = HOUR + 1
            await store.write([ev("b", 1, HOUR)])
            assert [s.measurement for s in await store.series()] == ["b"]
            await store.write([ev("a", 1, 0)])  # already past the retention: not stored
            assert [s.measurement for s in await store.series()] == ["b"]
            await store.write([ev("a", 1, 1)])  # the oldest point still kept, until next prune
            clock.now = HOUR + MINUTE  # one ms before the next prune is due
            await store.write([ev("b", 1, HOUR)])
            assert [s.measurement for s in await store.series()] == ["a", "b"]
            clock.now = HOUR + MINUTE + 1
            await store.write([ev("b", 1, HOUR)])
            assert [s.measurement for s in await store.series()] == ["b"]

    run(test)


def test_prune_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small chunks still delete every old point, even many sharing one millisecond."""
    monkeypatch.setattr(sqlite_store, "PRUNE_CHUNK", 3)
    monkeypatch.setattr(sqlite_store, "PRUNE_SERIES", 2)

    async def test() -> None:
        clock = Clock(5 * MINUTE)  # the first write's prune has nothing to do
        async with opened(tmp_path / "db", clock=clock, retention_ms=5 * MINUTE) as store:
            old = [ev("m", i, 1_000, host=f"h{i % 4}") for i in range(40)]
            old += [ev("m", i, 2_000 + i, host=f"h{i % 4}") for i in range(40)]
            await store.write(old)
            await store.compact()
            await store.write([*old, ev("m", 7, 6 * MINUTE, host="h1")])
            clock.now = 11 * MINUTE
            assert await store.prune() == 160
            assert await store.series() == [Series("m", (("host", "h1"),))]
            assert await minutes(store, "m", {}, n=10, aggregate="count") == [None] * 6 + [
                1.0,
                None,
                None,
                None,
            ]

    run(test)


def test_persistence_across_reopen(tmp_path: Path) -> None:
    """Points and series survive close and reopen; a new point in the same ms is kept too."""

    async def test() -> None:
        path = tmp_path / "numbat.db"
        async with opened(path, clock=Clock()) as store:
            await store.write([ev("m", 2, 1_000, host="a"), ev("m", 4, 61_000, host="a")])
            await store.compact()
            await store.write([ev("m", 6, 1_000, host="a")])  # stays in the inbox
        async with opened(path, clock=Clock()) as store:
            assert await minutes(store, "m", {"host": "a"}, n=2) == [4.0, 4.0]
            await store.write([ev("m", 8, 1_000, host="a")])
            assert await minutes(store, "m", {"host": "a"}, n=2, aggregate="count") == [3.0, 1.0]
            assert await store.series() == [Series("m", (("host", "a"),))]

    run(test)


def test_concurrent_writes(tmp_path: Path) -> None:
    """Writes from many tasks at once are all stored."""

    async def test() -> None:
        async with opened(tmp_path / "db", clock=Clock(), compact_rows=1_000) as store:

            async def writer(task: int) -> None:
                for i in range(10):
                    batch = [ev("m", 1, (task * 10 + i) % 4 * MINUTE, task=task) for _ in range(50)]
                    await store.write(batch)

            await asyncio.gather(*(writer(task) for task in range(20)))
            assert await minutes(store, "m", {}, aggregate="count") == [2500.0] * 4
            assert len(await store.series("m")) == 20

    run(test)


def test_large_batch(tmp_path: Path) -> None:
    """A 200,000-event batch is stored whole, and reads span the inbox and compacted points."""

    async def test() -> None:
        async with opened(tmp_path / "db", clock=Clock(), compact_rows=150_000) as store:
            batch = [ev("m", i % 7, i % 10 * MINUTE, host=f"h{i % 100}") for i in range(200_000)]
            await store.write(batch)  # compacted: past compact_rows
            await store.write(batch[:1_000])  # in the inbox
            counts = await minutes(store, "m", {}, n=10, aggregate="count")
            assert counts == [20_100.0] * 10
            assert len(await store.series("m")) == 100
            with closing(sqlite3.connect(tmp_path / "db")) as db:
                assert db.execute("SELECT COUNT(*) FROM points").fetchone() == (200_000,)
                assert db.execute("SELECT COUNT(*) FROM inbox").fetchone() == (1_000,)
            assert await minutes(store, "m", {"host": "h3"}, aggregate="max") == [None] * 3 + [6.0]

    run(test)


def test_failed_batch_stores_nothing(tmp_path: Path) -> None:
    """A batch that fails midway is rolled back whole, and the store stays usable."""

    async def test() -> None:
        async with opened(tmp_path / "db", clock=Clock()) as store:
            broken: Event = {"name": "m", "value": 1}  # no time: not a valid event
            with pytest.raises(KeyError):
                await store.write([ev("new", 1, 0), broken])
            assert await store.series() == []
            await store.write([ev("new", 1, 0), ev("new", 2, 0)])
            assert await minutes(store, "new", {}, n=1, aggregate="count") == [2.0]

    run(test)


def test_other_store_on_same_file_sees_new_series(tmp_path: Path) -> None:
    """A second store on the same file (a reader) picks up series the writer adds later."""

    async def test() -> None:
        path = tmp_path / "db"
        async with opened(path, clock=Clock()) as writer, opened(path, clock=Clock()) as reader:
            await writer.write([ev("m", 1, 0, host="a")])
            assert await minutes(reader, "m", {}, n=1) == [1.0]
            await writer.write([ev("m", 3, 0, host="b")])
            assert await minutes(reader, "m", {}, n=1) == [2.0]
            assert len(await reader.series("m")) == 2

    run(test)


def test_bad_arguments_rejected(tmp_path: Path) -> None:
    """Nonsense buckets, aggregates, bucket counts and retentions raise ValueError."""
    with pytest.raises(ValueError, match="retention_ms"):
        SQLiteStore(tmp_path / "db", retention_ms=0)

    async def test() -> None:
        async with opened(tmp_path / "db", clock=Clock()) as store:
            with pytest.raises(ValueError, match="bucket"):
                await store.query("m", {}, start=0, end=10, bucket=0)
            with pytest.raises(ValueError, match="aggregate"):
                await store.query("m", {}, start=0, end=10, bucket=1, aggregate="sum")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="limit"):
                await store.query("m", {}, start=0, end=10**12, bucket=1)

    run(test)


def test_closed_store(tmp_path: Path) -> None:
    """A closed store refuses work; closing again, or closing unused, is harmless."""

    async def test() -> None:
        store = SQLiteStore(tmp_path / "db", clock=Clock())
        await store.write([ev("m", 1, 0)])
        await store.close()
        await store.close()
        with pytest.raises(RuntimeError, match="closed"):
            await store.series()
        await SQLiteStore(tmp_path / "unused", clock=Clock()).close()
        assert not (tmp_path / "unused").exists()

    run(test)


def test_to_point_mapping() -> None:
    """to_point keeps name, time and a float value; tags are sorted text; heartbeats are None."""
    event = ev("a.b", 2, 7, z="1", a=1, f=1.5, t=False, ttl=3.0)
    event |= {"description": "d", "message": "m"}
    assert to_point(event) == (
        "a.b",
        (("a", "1"), ("f", "1.5"), ("t", "false"), ("z", "1")),
        7,
        2.0,
    )
    assert to_point(ev("x.heartbeat", 1, 0)) is None
    assert to_point(ev("heartbeatx", 1, 0)) is not None


# -- what a write left out, text fields, schema upgrade --------------------------------


def test_write_counts_written_skipped_and_expired(tmp_path: Path) -> None:
    """write() says how many points it stored, skipped (heartbeats) and found expired."""

    async def test() -> None:
        async with opened(tmp_path / "db", clock=Clock(2 * HOUR), retention_ms=HOUR) as store:
            got = await store.write(
                [
                    ev("m", 1, 2 * HOUR),
                    ev("m", 2, HOUR - 1),  # one ms past the retention
                    ev("app.heartbeat", 1, 2 * HOUR),
                    ev("m", 3, HOUR),  # the oldest kept
                ]
            )
            assert got == WriteResult(written=2, skipped=1, expired=1)
            assert await store.write([]) == WriteResult(0, 0, 0)
            got_count = await store.query("m", {}, start=0, end=3 * HOUR, bucket=3 * HOUR)
            assert values(got_count) == [2.0]

    run(test)


NOTES = [
    ev("deploy", 1, 1_000, host="a", app="web", description="v1.2 to a"),
    ev("deploy", 1, 2_000, host="b", app="web", message="rollback", description="v1.1"),
    ev("deploy", 1, 2_000, host="b", app="web"),  # no text: not an annotation
    ev("deploy.db", 1, 3_000, host="a", message=404),  # text that is not a string
    ev("web.requests", 5, 3_000, host="a"),
]


def test_text_fields_are_stored_and_read_back(tmp_path: Path) -> None:
    """description and message are kept (not as tags) and come back as annotations."""

    async def test() -> None:
        async with opened(tmp_path / "db", clock=Clock()) as store:
            await store.write(NOTES)
            assert await store.series("deploy") == [
                Series("deploy", (("app", "web"), ("host", "a"))),
                Series("deploy", (("app", "web"), ("host", "b"))),
            ]
            web_a = (("app", "web"), ("host", "a"))
            web_b = (("app", "web"), ("host", "b"))
            assert await store.annotations(start=0, end=MINUTE) == [
                Annotation(1_000, "deploy", web_a, {"description": "v1.2 to a"}),
                Annotation(2_000, "deploy", web_b, {"description": "v1.1", "message": "rollback"}),
                Annotation(3_000, "deploy.db", (("host", "a"),), {"message": "404"}),
            ]
            deploys = await store.annotations("deploy", start=0, end=MINUTE)
            assert [a.time for a in deploys] == [1_000, 2_000]
            got = await store.annotations("deploy*", {"host": "a"}, start=0, end=MINUTE)
            assert [a.time for a in got] == [1_000, 3_000]
            got = await store.annotations("*", start=1_001, end=3_000)
            assert [a.time for a in got] == [2_000]
            got = await store.annotations(start=0, end=MINUTE, limit=2)
            assert [a.time for a in got] == [2_000, 3_000]  # the newest two
            assert await store.annotations("web.*", start=0, end=MINUTE) == []
            with pytest.raises(ValueError, match="limit"):
                await store.annotations(start=0, end=MINUTE, limit=0)

    run(test)


def test_texts_are_pruned_with_their_points(tmp_path: Path) -> None:
    """Texts older than the retention go with their points; newer ones stay."""

    async def test() -> None:
        clock = Clock(HOUR)
        async with opened(tmp_path / "db", clock=clock, retention_ms=HOUR) as store:
            await store.write([ev("deploy", 1, 0, description="old"), ev("deploy", 1, HOUR)])
            await store.write([ev("deploy", 1, HOUR + 1, description="new")])
            clock.now = 2 * HOUR
            assert await store.prune() == 1
            got = await store.annotations(start=0, end=3 * HOUR)
            assert [a.fields for a in got] == [{"description": "new"}]

    run(test)


def test_failed_batch_stores_no_text(tmp_path: Path) -> None:
    """A batch rolled back takes its texts with it."""

    async def test() -> None:
        async with opened(tmp_path / "db", clock=Clock()) as store:
            broken: Event = {"name": "m", "value": 1, "description": "x"}  # no time
            with pytest.raises(KeyError):
                await store.write([ev("m", 1, 0, description="lost"), broken])
            assert await store.annotations(start=0, end=MINUTE) == []

    run(test)


# The embedded store's schema as numbat 0.x wrote it, before texts (version 1).
SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO meta VALUES ('version', 1), ('seq', 2);
CREATE TABLE series (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    measurement TEXT NOT NULL,
    tags TEXT NOT NULL,
    UNIQUE (measurement, tags)
);
CREATE TABLE points (
    series_id INTEGER NOT NULL, time INTEGER NOT NULL, seq INTEGER NOT NULL,
    value REAL NOT NULL, PRIMARY KEY (series_id, time, seq)
) WITHOUT ROWID;
CREATE TABLE inbox (
    series_id INTEGER NOT NULL, time INTEGER NOT NULL, seq INTEGER NOT NULL,
    value REAL NOT NULL, PRIMARY KEY (time, series_id, seq)
) WITHOUT ROWID;
INSERT INTO series VALUES (1, 'm', '{"host":"a"}');
INSERT INTO points VALUES (1, 1000, 0, 4.0);
INSERT INTO inbox VALUES (1, 2000, 1, 6.0);
"""


def test_a_version_1_file_is_upgraded_and_keeps_its_points(tmp_path: Path) -> None:
    """A file from before texts opens: its points read back, texts can be stored."""
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(SCHEMA_V1)

    async def test() -> None:
        async with opened(path, clock=Clock()) as store:
            assert await minutes(store, "m", {"host": "a"}, n=1) == [5.0]
            await store.write([ev("m", 8, 3_000, host="a", description="after")])
            assert await minutes(store, "m", {"host": "a"}, n=1, aggregate="count") == [3.0]
        async with opened(path, clock=Clock()) as again:  # opens as version 2 now
            (note,) = await again.annotations(start=0, end=MINUTE)
            assert note == Annotation(3_000, "m", (("host", "a"),), {"description": "after"})

    run(test)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone() == (2,)


def test_a_file_from_a_newer_numbat_is_refused(tmp_path: Path) -> None:
    """A schema version this numbat does not know is an error naming the file and version."""
    path = tmp_path / "new.db"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(SCHEMA_V1.replace("('version', 1)", "('version', 99)"))

    async def test() -> None:
        store = SQLiteStore(path, clock=Clock())
        try:
            with pytest.raises(RuntimeError, match=r"new\.db: schema version 99, not 2"):
                await store.open()
        finally:
            await store.close()

    run(test)
