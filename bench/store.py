"""Embedded store benchmark: numbat.store.sqlite.SQLiteStore against raw sqlite3.

    python bench/store.py            # full run (about a minute on 2 cores)
    python bench/store.py --quick    # smaller numbers, for a smoke test

(a) Write rate: ``--events`` events (default 1,000,000) in batches of ``--batch`` (5,000)
    into a fresh store in a temporary directory, 1,000 series (``bench.write``, tags
    ``host`` x ``app``), each series one point a second. Events/s = events / (time spent
    in ``write()`` + a final ``compact()``, so that every point has reached the
    series-ordered table). Building the batches is not timed. Baseline, in the same
    process: raw ``sqlite3`` ``executemany`` of the same rows ``(series_id, time, value)``
    into a bare table (no index, no store logic, same pragmas), one transaction a batch.
    ``--runs`` runs each, alternating; medians with [min..max].
(b) Query time: a store holding a day of data for 1,000 series (``bench.query``, tag
    ``host``, one point per series per minute: 1,440,000 points, written through
    ``write()`` in batches of 5,000; its rate is shown too), clock at the end of the day.
    Timed: ``query()`` of one hour in one-minute buckets, ``mean``, over all 1,000 series
    (one call; the measurement's 1,000 series all match) and over one series (tag
    ``host``), for the last hour of the day (partly in the inbox: see
    numbat/store/sqlite.py) and an hour at midday; ``--repeats`` times each, median ms
    with [min..max]. Baselines, in the same process: the same GROUP BY in plain SQL over a
    bare table (no index) holding the same rows, and the store's own SQL run directly on
    its file (no executor hop, no series lookup, no bucket filling).

(c) Dashboard queries, on the same store: one series (tag ``host``) over the whole day
    in five-minute buckets (288: one graph), ``mean`` (the plain query), ``p50``,
    ``p99`` and ``rate``; ``query_by`` host (the ten busiest of the 1,000) over the last
    hour; ``series_info`` of all 1,000 series. ``--graph-repeats`` times each (default
    100); p50 and p95 ms, and the ratio of each p50 to the plain ``mean`` one's (p95s
    swing more with what else runs on the machine).

Ratios: "x baseline" is store figure / baseline figure for rates (>1: store faster) and
baseline ms / store ms for queries (>1: store faster).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Final

from numbat.event import Event
from numbat.store.sqlite import SQLiteStore

MINUTE: Final = 60_000
HOUR: Final = 60 * MINUTE
DAY: Final = 24 * HOUR
T0: Final = 1_764_028_800_000  # 2025-11-25T00:00:00Z
SERIES: Final = 1_000
PRAGMAS: Final = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL")

Row = tuple[int, int, float]


def write_events(first: int, count: int) -> list[Event]:
    """Events ``first..first+count`` of the write run: 1,000 series, each one a second."""
    return [
        {
            "name": "bench.write",
            "value": float(i % 997),
            "time": T0 + i // SERIES * 1_000,
            "host": f"host{i % 100}",
            "app": f"app{i // 100 % 10}",
        }
        for i in range(first, first + count)
    ]


def write_rows(first: int, count: int) -> list[Row]:
    """The rows a bare table gets for the same events."""
    return [
        (i % SERIES, T0 + i // SERIES * 1_000, float(i % 997)) for i in range(first, first + count)
    ]


def day_events(first: int, count: int) -> list[Event]:
    """Points ``first..first+count`` of the day: minute by minute, all 1,000 series each."""
    return [
        {
            "name": "bench.query",
            "value": float(i % 1_013),
            "time": T0 + i // SERIES * MINUTE + i % SERIES * 50,
            "host": f"h{i % SERIES:03d}",
        }
        for i in range(first, first + count)
    ]


def day_rows(first: int, count: int) -> list[Row]:
    return [
        (i % SERIES, T0 + i // SERIES * MINUTE + i % SERIES * 50, float(i % 1_013))
        for i in range(first, first + count)
    ]


def batches(total: int, size: int) -> Iterator[tuple[int, int]]:
    for first in range(0, total, size):
        yield first, min(size, total - first)


def bare_table(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in PRAGMAS:
        db.execute(pragma)
    db.execute("CREATE TABLE points (series_id INTEGER, time INTEGER, value REAL)")
    return db


def fill_bare(
    db: sqlite3.Connection, make: Callable[[int, int], list[Row]], total: int, size: int
) -> float:
    """Insert ``total`` rows in transactions of ``size``; return the seconds spent inserting."""
    spent = 0.0
    for first, count in batches(total, size):
        rows = make(first, count)
        started = time.perf_counter()
        db.execute("BEGIN")
        db.executemany("INSERT INTO points VALUES (?, ?, ?)", rows)
        db.execute("COMMIT")
        spent += time.perf_counter() - started
    return spent


async def fill_store(
    store: SQLiteStore, make: Callable[[int, int], list[Event]], total: int, size: int
) -> float:
    """Write ``total`` events in batches of ``size``, then compact; return seconds spent."""
    spent = 0.0
    for first, count in batches(total, size):
        events = make(first, count)
        started = time.perf_counter()
        await store.write(events)
        spent += time.perf_counter() - started
    started = time.perf_counter()
    await store.compact()
    return spent + time.perf_counter() - started


async def bench_write(
    tmp: Path, total: int, size: int, runs: int
) -> tuple[list[float], list[float]]:
    """(a): events/s of the store and rows/s of the bare baseline, one figure per run."""
    ours: list[float] = []
    base: list[float] = []
    for run in range(runs):
        store = SQLiteStore(tmp / f"write{run}.db", clock=lambda: T0 + DAY)
        try:
            ours.append(total / await fill_store(store, write_events, total, size))
        finally:
            await store.close()
        db = bare_table(tmp / f"bare{run}.db")
        try:
            base.append(total / fill_bare(db, write_rows, total, size))
        finally:
            db.close()
        print(f"  (a) run {run + 1}: store {ours[-1]:,.0f} events/s, bare {base[-1]:,.0f} rows/s")
    return ours, base


async def timed(call: Callable[[], Awaitable[object]], repeats: int) -> list[float]:
    """Milliseconds per call, ``repeats`` times (after one untimed warm-up call)."""
    await call()
    spent = []
    for _ in range(repeats):
        started = time.perf_counter()
        await call()
        spent.append((time.perf_counter() - started) * 1_000)
    return spent


def sql_timed(db: sqlite3.Connection, sql: str, start: int, repeats: int) -> list[float]:
    """Milliseconds per run of ``sql`` over ``[start, start + HOUR)``, as :func:`timed`."""
    bounds = (start, start + HOUR)
    db.execute(sql, bounds).fetchall()
    spent = []
    for _ in range(repeats):
        started = time.perf_counter()
        db.execute(sql, bounds).fetchall()
        spent.append((time.perf_counter() - started) * 1_000)
    return spent


GROUP_SQL: Final = (
    "SELECT (time - ?1) / 60000 AS bucket, AVG(value) FROM points"
    " WHERE {where} time >= ?1 AND time < ?2 GROUP BY bucket"
)
STORE_SQL: Final = (
    "SELECT (time - ?1) / 60000 AS bucket, AVG(value) FROM ("
    "SELECT time, value FROM points WHERE series_id IN ({ids}) AND time >= ?1 AND time < ?2"
    " UNION ALL SELECT time, value FROM inbox WHERE series_id IN ({ids})"
    " AND time >= ?1 AND time < ?2) GROUP BY bucket"
)


async def build_day(store: SQLiteStore, bare: sqlite3.Connection) -> float:
    """Write the day into the store (return events/s) and into the bare table."""
    total = SERIES * DAY // MINUTE
    spent = 0.0
    for first, count in batches(total, 5_000):
        events = day_events(first, count)
        started = time.perf_counter()
        await store.write(events)
        spent += time.perf_counter() - started
    fill_bare(bare, day_rows, total, 5_000)
    return total / spent


GRAPH_BUCKET: Final = 5 * MINUTE


async def bench_dashboard(store: SQLiteStore, repeats: int) -> dict[str, list[float]]:
    """(c): ms per dashboard query, ``repeats`` times each."""
    results: dict[str, list[float]] = {}
    day = {"start": T0, "end": T0 + DAY, "bucket": GRAPH_BUCKET}
    for aggregate in ("mean", "p50", "p99", "rate"):
        query = partial(store.query, "bench.query", {"host": "h500"}, aggregate=aggregate, **day)
        results[f"graph: day, one series, {aggregate}"] = await timed(query, repeats)
    by = partial(
        store.query_by,
        "bench.query",
        {},
        "host",
        start=T0 + DAY - HOUR,
        end=T0 + DAY,
        bucket=MINUTE,
        limit=10,
    )
    results["graph: last hour by host, 10 busiest, mean"] = await timed(by, repeats)
    info = partial(store.series_info, "bench.query")
    results["series_info: 1,000 series"] = await timed(info, max(3, repeats // 10))
    return results


async def bench_query(
    tmp: Path, repeats: int, args_repeats: int = 100
) -> tuple[dict[str, list[float]], float, int]:
    """(b): ms per query for each case; also the build rate and the inbox size."""
    store = SQLiteStore(tmp / "day.db", clock=lambda: T0 + DAY)
    bare = bare_table(tmp / "day-bare.db")
    raw = sqlite3.connect(tmp / "day.db")
    try:
        build_rate = await build_day(store, bare)
        inbox = raw.execute("SELECT COUNT(*) FROM inbox").fetchone()[0]
        every = ",".join(str(i) for (i,) in raw.execute("SELECT id FROM series ORDER BY id"))
        (one,) = raw.execute(
            "SELECT id FROM series WHERE tags = ?", ('{"host":"h500"}',)
        ).fetchone()
        cases: tuple[tuple[str, dict[str, str], str, str], ...] = (
            ("all 1,000 series", {}, every, ""),
            ("one series", {"host": "h500"}, str(one), "series_id = 500 AND"),
        )
        results: dict[str, list[float]] = {}
        for label, start in (("last hour", T0 + DAY - HOUR), ("midday hour", T0 + 12 * HOUR)):
            for who, tags, ids, where in cases:
                query = partial(
                    store.query, "bench.query", tags, start=start, end=start + HOUR, bucket=MINUTE
                )
                results[f"{label}, {who}: store"] = await timed(query, repeats)
                sql = STORE_SQL.format(ids=ids)
                results[f"{label}, {who}: its SQL, direct"] = sql_timed(raw, sql, start, repeats)
                sql = GROUP_SQL.format(where=where)
                results[f"{label}, {who}: bare table"] = sql_timed(bare, sql, start, repeats)
        results.update(await bench_dashboard(store, args_repeats))
        return results, build_rate, inbox
    finally:
        raw.close()
        bare.close()
        await store.close()


def p95(values: list[float]) -> float:
    """The 95th percentile, nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, -(-95 * len(ordered) // 100) - 1)]


def spread(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}..{max(values):{fmt}}]"


def machine() -> str:
    return (
        f"nproc {os.cpu_count()}, {platform.machine()}, Linux {platform.release()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )


async def main(args: argparse.Namespace) -> None:
    began = time.perf_counter()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="numbat-bench-store-") as name:
        tmp = Path(name)
        print(f"(a) writing {args.events:,} events in batches of {args.batch:,}, {args.runs} runs")
        ours, base = await bench_write(tmp, args.events, args.batch, args.runs)
        print(f"(b) a day of 1,000 series, one point a minute; {args.repeats} repeats per query")
        queries, build_rate, inbox = await bench_query(tmp, args.repeats, args.graph_repeats)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [
        "SUMMARY: medians, [min..max]",
        f"(a) store write: {spread(ours, ',.0f')} events/s",
        f"    bare executemany: {spread(base, ',.0f')} rows/s",
        f"    ratio store/bare: {statistics.median(ours) / statistics.median(base):.2f}x",
        f"(b) building the day through write(): {build_rate:,.0f} events/s"
        f" (1,440,000 points; {inbox:,} left in the inbox)",
    ]
    plain = statistics.median(queries["graph: day, one series, mean"])
    for key, spent in queries.items():
        if key.startswith(("graph:", "series_info:")):
            lines.append(
                f"(c) {key}: p50 {statistics.median(spent):.2f} ms, p95 {p95(spent):.2f} ms"
                f" (p50 {statistics.median(spent) / plain:.2f}x the plain mean query's)"
            )
            continue
        lines.append(f"    {key}: {spread(spent, '.2f')} ms")
        if key.endswith(": store"):
            prefix = key.removesuffix("store")
            store_ms = statistics.median(spent)
            for other in ("bare table", "its SQL, direct"):
                ratio = statistics.median(queries[prefix + other]) / store_ms
                lines.append(f"      ratio {other} / store: {ratio:.2f}x")
    lines += [f"peak RSS {rss:,.0f} MiB; total {time.perf_counter() - began:.0f} s", machine()]
    print("\n".join(lines))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller numbers (smoke test)")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--graph-repeats", type=int, default=100)
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.runs, args.repeats, args.graph_repeats = 100_000, 1, 3, 10
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
