"""Store.events: stored points back as events, in time order, paged, the same from
SQLite and a real influxd."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from numbat.event import Event
from numbat.store import Page, Store
from numbat.store.influx import InfluxStore
from tests.store.conftest import InfluxDatabase
from tests.store.stores import HOUR, T0, ev, influx, run, sqlite


async def collect(store: Store, **kwargs: Any) -> list[Event]:
    return [event async for event in store.events(**kwargs)]


# Written out of order; two series of web.requests, two points of one series in one
# millisecond (kept in write order), texts, a tag that looks like a number, a heartbeat.
EVENTS = [
    ev("web.requests", 3, T0 + 2_000, host="b", code=500),
    ev("web.requests", 1, T0 + 1_000, host="a", code=200, message="first"),
    ev("web.requests", 2, T0 + 1_000, host="a", code=200, message="second"),
    ev("db.query", 7.5, T0 + 1_000, host="a", description="slow query"),
    ev("load-average.1", 4, T0, host="a", **{"meta.nprocs": 4}),
    ev("web.heartbeat", 1, T0, host="a", ttl=10_000),
    ev("web.requests", 9, T0 + 10 * HOUR, host="a", code=200),
    ev("web.requests", 5, T0 - 1, host="a", code=200),
]
EXPECTED = [
    ev("load-average.1", 4.0, T0, host="a", **{"meta.nprocs": "4"}),
    ev("db.query", 7.5, T0 + 1_000, host="a", description="slow query"),
    ev("web.requests", 1.0, T0 + 1_000, code="200", host="a", message="first"),
    ev("web.requests", 2.0, T0 + 1_000, code="200", host="a", message="second"),
    ev("web.requests", 3.0, T0 + 2_000, code="500", host="b"),
]


def test_sqlite_events_in_time_order(tmp_path: Path) -> None:
    """SQLite gives the points of [start, end) back as events: time order, ties by
    measurement then tags then write order, tags as text, texts as fields, no heartbeat."""

    async def test() -> None:
        async with sqlite(tmp_path) as store:
            await store.write(EVENTS)
            assert await collect(store, start=T0, end=T0 + HOUR) == EXPECTED

    run(test)


def test_influx_events_same_as_sqlite(influx_db: InfluxDatabase, tmp_path: Path) -> None:
    """influxd answers the same events as SQLite for the same data, ranges and patterns."""

    async def test() -> None:
        async with sqlite(tmp_path) as lite, influx(influx_db) as flux:
            await lite.write(EVENTS)
            await flux.write(EVENTS)
            assert await collect(flux, start=T0, end=T0 + HOUR) == EXPECTED
            for kwargs in (
                {"start": T0 - HOUR, "end": T0 + 11 * HOUR},
                {"start": T0 + 1_000, "end": T0 + 1_001},
                {"start": T0, "end": T0 + HOUR, "pattern": "web.*"},
                {"start": T0, "end": T0 + HOUR, "pattern": "nothing"},
                {"start": T0 - HOUR, "end": T0 + 11 * HOUR, "page": 1},
            ):
                assert await collect(flux, **kwargs) == await collect(lite, **kwargs), kwargs

    run(test)


def test_influx_missing_database_reads_empty(influx_db: InfluxDatabase) -> None:
    """A database not created yet gives no events, as a fresh SQLite file does."""

    async def test() -> None:
        store = InfluxStore(influx_db.server.url, influx_db.name + "_missing")
        try:
            assert await collect(store, start=T0, end=T0 + HOUR) == []
        finally:
            await store.close()

    run(test)


def test_sqlite_pages_are_bounded_and_complete(tmp_path: Path) -> None:
    """With a small page every read holds at most a page (or one whole millisecond),
    and the events still come whole and in order, across compacted and inbox points."""
    events = [ev("m", i, T0 + (i // 3) * 100, host=f"h{i % 3}") for i in range(300)]
    events += [ev("m", 1000 + i, T0 + 5_000, host=f"x{i:02}") for i in range(12)]  # one ms > page

    async def test() -> None:
        async with sqlite(tmp_path, compact_rows=150) as store:
            await store.write(events[:200])
            await store.write(events[200:])
            sizes: list[tuple[int | None, int]] = []
            read = store._events

            def spy(pattern: str, low: int, high: int, limit: int | None) -> Page:
                page = read(pattern, low, high, limit)
                sizes.append((limit, len(page.rows)))
                return page

            store._events = spy  # type: ignore[method-assign]
            got = await collect(store, start=T0, end=T0 + HOUR, page=10)
        want = sorted(events, key=lambda e: (e["time"], e["host"]))
        assert got == [{**e, "value": float(e["value"])} for e in want]
        assert all(n <= 10 for limit, n in sizes if limit is not None)
        assert (None, 15) in sizes  # the dense millisecond, read whole
        assert len(sizes) < 200  # windows adapt: not one read per point

    run(test)


def test_events_rejects_bad_page(tmp_path: Path) -> None:
    """A page below 1 is a ValueError naming it."""

    async def test() -> None:
        async with sqlite(tmp_path) as store:
            with pytest.raises(ValueError, match="page must be a positive"):
                await collect(store, start=T0, end=T0 + 1, page=0)

    run(test)


def test_number_fields_come_back_from_influx_only(
    influx_db: InfluxDatabase, tmp_path: Path
) -> None:
    """influxd keeps a ttl and gives it back (whole: an int), heartbeats too when the
    output stored them (write_heartbeats); SQLite keeps neither."""
    events = [ev("web.heartbeat", 1, T0, host="a", ttl=15_000), ev("m", 1, T0, ttl=2.5)]

    async def test() -> None:
        async with sqlite(tmp_path) as lite, influx(influx_db) as flux:
            await lite.write(events)
            await flux.write(events)
            # as the influxdb output writes it with write_heartbeats = true
            influx_db.write(f"web.heartbeat,host=a ttl=15000,value=1 {(T0 + 1) * 10**6}\n".encode())
            got = await collect(flux, start=T0, end=T0 + HOUR)
            assert got == [
                ev("m", 1.0, T0, ttl=2.5),
                ev("web.heartbeat", 1.0, T0 + 1, host="a", ttl=15_000),
            ]
            assert isinstance(got[1]["ttl"], int)
            assert await collect(lite, start=T0, end=T0 + HOUR) == [ev("m", 1.0, T0)]

    run(test)
