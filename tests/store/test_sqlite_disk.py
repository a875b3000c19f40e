"""The SQLite store when a write fails (a full disk, a lock held by another process):
the error raised is the real one, and the series ids and points stay right afterwards."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from numbat.event import Event
from numbat.store import Series, WriteResult
from numbat.store.sqlite import BUSY_TIMEOUT_S, SQLiteStore
from tests.helpers import fill, tmpfs
from tests.store.stores import ev, run
from tests.store.test_sqlite import Clock, opened

FULL = "database or disk is full"


class FullDisk:
    """Wraps the store's connection: while ``full``, a statement starting with ``fails``
    fails as SQLite fails on a full disk, having already rolled the transaction back."""

    def __init__(self, db: sqlite3.Connection, fails: str) -> None:
        self.db = db
        self.fails = fails
        self.full = False

    def _check(self, sql: str) -> None:
        if self.full and sql.lstrip().startswith(self.fails):
            self.db.execute("ROLLBACK")
            raise sqlite3.OperationalError(FULL)

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self.db.execute(sql, *args)

    def executemany(self, sql: str, rows: Iterable[Any]) -> sqlite3.Cursor:
        self._check(sql)
        return self.db.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


async def wrap(store: SQLiteStore, fails: str, monkeypatch: pytest.MonkeyPatch) -> FullDisk:
    await store.open()
    disk = FullDisk(store._db, fails)  # type: ignore[arg-type]
    monkeypatch.setattr(store, "_db", disk)
    return disk


def burst(name: str, count: int, series: int, value: float = 1.0, time: int = 0) -> list[Event]:
    """``count`` events of ``name`` spread over ``series`` hosts, one ms apart."""
    return [ev(name, value, time + i, host=f"h{i % series}") for i in range(count)]


def check_file(path: Path) -> dict[str, tuple[int, float]]:
    """Every point's series exists; (point count, value sum) by measurement."""
    with closing(sqlite3.connect(path)) as db:
        orphans = db.execute(
            "SELECT COUNT(*) FROM (SELECT series_id FROM inbox UNION ALL"
            " SELECT series_id FROM points) WHERE series_id NOT IN (SELECT id FROM series)"
        ).fetchone()[0]
        assert orphans == 0, f"{orphans} points of a series that does not exist"
        rows = db.execute(
            "SELECT measurement, COUNT(*), SUM(value) FROM series JOIN ("
            "SELECT series_id, value FROM inbox UNION ALL SELECT series_id, value FROM points"
            ") ON series_id = id GROUP BY measurement"
        ).fetchall()
    return {name: (count, total) for name, count, total in rows}


def test_a_write_that_sqlite_rolled_back_leaves_no_stale_series_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a full disk rolled a write back, its series ids are not reused for others."""

    async def test() -> None:
        async with opened(tmp_path / "db", clock=Clock()) as store:
            disk = await wrap(store, "INSERT INTO inbox", monkeypatch)
            await store.write(burst("app.base", 10, 2))
            disk.full = True
            with pytest.raises(sqlite3.OperationalError) as raised:
                await store.write(burst("burst.l2", 500, 5, value=2.0))
            disk.full = False
            await store.write(burst("burst.l3", 100, 3, value=3.0))
            await store.write(burst("burst.l2", 40, 5, value=2.0))
            await store.write([ev("numbat.collector.dropped", 500, 9, reason="write_error")])
            names = {s.measurement for s in await store.series()}
            assert names == {"app.base", "burst.l2", "burst.l3", "numbat.collector.dropped"}
            got = await store.query(
                "burst.l3", {}, start=0, end=1000, bucket=1000, aggregate="count"
            )
            assert got[0].value == 100
        assert check_file(tmp_path / "db") == {
            "app.base": (10, 10.0),
            "burst.l2": (40, 80.0),
            "burst.l3": (100, 300.0),
            "numbat.collector.dropped": (1, 500.0),
        }
        assert str(raised.value) == FULL  # not the ROLLBACK's "no transaction is active"

    run(test)


def test_a_failed_commit_restores_the_sequence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A COMMIT that fails on a full disk raises its own error and keeps no point or seq."""

    async def test() -> None:
        async with opened(tmp_path / "db", clock=Clock()) as store:
            disk = await wrap(store, "COMMIT", monkeypatch)
            disk.full = True
            with pytest.raises(sqlite3.OperationalError, match=FULL):
                await store.write(burst("burst.l2", 50, 5))
            disk.full = False
            # Same series, same milliseconds: a reused seq would collide with nothing
            # stored, but a stale one would show as a gap or a clash in later writes.
            await store.write(burst("burst.l2", 50, 5))
            await store.write(burst("burst.l2", 50, 5))
        with closing(sqlite3.connect(tmp_path / "db")) as db:
            seqs = [row[0] for row in db.execute("SELECT seq FROM inbox ORDER BY seq")]
            (stored,) = db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
        assert seqs == list(range(100)) and stored == 100
        assert check_file(tmp_path / "db") == {"burst.l2": (100, 100.0)}

    run(test)


def test_a_failed_compaction_raises_its_own_error_and_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compaction that a full disk rolled back raises that error; the next one moves all."""

    async def test() -> None:
        async with opened(tmp_path / "db", clock=Clock(), compact_rows=10**9) as store:
            disk = await wrap(store, "INSERT INTO points", monkeypatch)
            await store.write(burst("app.base", 30, 3))
            disk.full = True
            with pytest.raises(sqlite3.OperationalError, match=FULL):
                await store.compact()
            disk.full = False
            await store.compact()
        with closing(sqlite3.connect(tmp_path / "db")) as db:
            counts = [
                db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("inbox", "points")
            ]
        assert counts == [0, 30]

    run(test)


def test_a_real_full_disk_keeps_series_and_points_right(tmp_path: Path) -> None:
    """On a tmpfs that fills up: the write fails with SQLite's full-disk error, and once
    space is back every point is under its own series and none points nowhere."""

    async def test(mount: Path) -> None:
        async with opened(mount / "numbat.db", clock=Clock()) as store:
            await store.write(burst("app.base", 1_000, 10))
            filler = fill(mount)
            errors = []
            for start in range(0, 50_000, 5_000):  # the collector's batches, each refused
                try:
                    await store.write(burst("burst.l2", 5_000, 50, value=2.0, time=start))
                except sqlite3.OperationalError as exc:
                    errors.append(str(exc))
            filler.unlink()
            await store.write(burst("burst.l3", 1_000, 10, value=3.0))
            await store.write([ev("numbat.collector.dropped", 5, 9, reason="write_error")])
            await store.write(burst("burst.l2", 100, 50, value=2.0, time=60_000))
            series = await store.series("burst.l3")
            assert series == [Series("burst.l3", (("host", f"h{i}"),)) for i in range(10)]
        found = check_file(mount / "numbat.db")
        assert found["app.base"] == (1_000, 1_000.0)
        assert found["burst.l3"] == (1_000, 3_000.0)
        assert found["numbat.collector.dropped"] == (1, 5.0)
        count, total = found["burst.l2"]
        assert total == 2.0 * count and count >= 100
        assert errors and set(errors) == {FULL}, errors

    with tmpfs(tmp_path / "small", "1m") as mount:
        asyncio.run(test(mount))


def test_a_batch_waits_for_another_process_lock(tmp_path: Path) -> None:
    """A write while another connection holds an exclusive lock for 1 s waits and stores."""

    async def test() -> None:
        async with opened(tmp_path / "db", clock=Clock()) as store:
            await store.write(burst("app.base", 1, 1))

            def busy() -> int:
                db = store._connect()
                return int(db.execute("PRAGMA busy_timeout").fetchone()[0])

            assert await store._call(busy) == BUSY_TIMEOUT_S * 1000 >= 30_000
            locked, release = threading.Event(), threading.Event()

            def hold() -> None:
                with closing(sqlite3.connect(tmp_path / "db", isolation_level=None)) as other:
                    other.execute("BEGIN EXCLUSIVE")
                    locked.set()
                    release.wait(1.0)
                    other.execute("COMMIT")

            holder = threading.Thread(target=hold)
            holder.start()
            try:
                assert await asyncio.to_thread(locked.wait, 10)
                began = time.monotonic()
                result = await store.write(burst("app.locked", 1_000, 10))
                assert time.monotonic() - began >= 0.5  # it did wait for the lock
            finally:
                release.set()
                holder.join()
            assert result.written == 1_000
        assert check_file(tmp_path / "db")["app.locked"] == (1_000, 1_000.0)

    run(test)


def test_a_compaction_that_fails_after_a_write_does_not_fail_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The batch is stored, so the write returns it written; the compaction is logged and
    retried once prune_interval_ms has passed, not at every write."""
    clock = Clock()

    async def test() -> None:
        options: dict[str, Any] = {"clock": clock, "compact_rows": 10, "prune_interval_ms": 1000}
        async with opened(tmp_path / "db", **options) as store:
            disk = await wrap(store, "INSERT INTO points", monkeypatch)
            disk.full = True
            assert await store.write(burst("app.base", 20, 2)) == WriteResult(20)
            assert await store.write(burst("app.base", 5, 2, time=20)) == WriteResult(5)
            disk.full = False
            clock.now = 1000
            assert await store.write(burst("app.base", 5, 2, time=25)) == WriteResult(5)
        with closing(sqlite3.connect(tmp_path / "db")) as db:
            counts = [
                db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("inbox", "points")
            ]
        assert counts == [0, 30]

    run(test)
    failed = [r for r in caplog.records if "compact failed, retried later" in r.getMessage()]
    assert len(failed) == 1 and FULL in failed[0].getMessage()


def test_a_series_another_process_adds_after_a_failed_write_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The id a rolled-back write had taken, reused by another process's series, is read."""

    async def test() -> None:
        async with (
            opened(tmp_path / "db", clock=Clock()) as store,
            opened(tmp_path / "db", clock=Clock()) as other,
        ):
            disk = await wrap(store, "INSERT INTO inbox", monkeypatch)
            await store.write(burst("app.base", 1, 1))
            disk.full = True
            with pytest.raises(sqlite3.OperationalError, match=FULL):
                await store.write(burst("burst.l2", 3, 3))
            disk.full = False
            await other.write(burst("burst.l3", 4, 1, value=3.0))
            got = await store.query("burst.l3", {}, start=0, end=10, bucket=10, aggregate="count")
            assert got[0].value == 4

    run(test)
