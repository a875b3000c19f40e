"""The Store methods the dashboard reads through: percentiles and rate per bucket,
series with their display hints and newest point, and queries grouped by a tag; the
same answers from SQLite and a real influxd."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from numbat.store import MAX_GROUPS, MAX_SERIES, Bucket, SeriesInfo, Store
from tests.store.conftest import InfluxDatabase
from tests.store.stores import HOUR, T0, ev, influx, run, sqlite

SECOND = 1_000


LATENCY_A = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10]  # sorted: 1..10
LATENCY_B = [30, 10, 20, 40, 50, 60, 70]  # p50 rank 4 -> 40, p90 rank 6 -> 60
EVENTS = [
    *(ev("web.latency", v, T0 + i * SECOND, host="a") for i, v in enumerate(LATENCY_A)),
    *(ev("web.latency", v, T0 + 10 * SECOND + i, host="b") for i, v in enumerate(LATENCY_B)),
    ev("web.latency", 99, T0, host="c", region="x"),
    ev("web.latency", 1, T0, region="x"),  # no host: left out of groups by host
    # A running total with a reset at 11 s: 10 -> 20 (+10), 20 -> 5 (reset: +5), 5 -> 15 (+10).
    ev("net.bytes", 10, T0, host="a"),
    ev("net.bytes", 20, T0 + SECOND, host="a"),
    ev("net.bytes", 5, T0 + 11 * SECOND, host="a"),
    ev("net.bytes", 15, T0 + 12 * SECOND, host="a"),
    # A second series of the same total, in the same buckets: +4 at 2 s.
    ev("net.bytes", 1, T0 + SECOND, host="b"),
    ev("net.bytes", 5, T0 + 2 * SECOND, host="b"),
    # Increments, as the emitter's counter() sends them (type=counter): summed.
    ev("web.requests", 1, T0, host="a", type="counter"),
    ev("web.requests", 3, T0 + SECOND, host="a", type="counter"),
    ev("web.requests", 2, T0 + 12 * SECOND, host="a", type="counter"),
    ev("web.requests", 1, T0 + 19 * SECOND, host="b", type="counter"),
    ev("db.query", 3, T0, timing=True),
    ev("db.query", 2, T0 + SECOND, timing=True),
    ev("jobs.done", 1, T0, app="w"),  # no hint, rising: a counter
    ev("jobs.done", 4, T0 + SECOND, app="w"),
    ev("jobs.done", 4, T0 + 2 * SECOND, app="w"),
    ev("deploy", 1, T0 + 3 * SECOND, app="w", description="v1.2"),  # text only
    ev("temp", 3, T0, app="w"),
    ev("temp", 3, T0 + SECOND, app="w"),  # never moved: a gauge
]


async def answers(store: Store) -> dict[str, Any]:
    """Everything the new methods answer on EVENTS, to compare backends."""
    window: dict[str, Any] = {"start": T0, "end": T0 + 20 * SECOND, "bucket": 10 * SECOND}
    found: dict[str, Any] = {}
    for aggregate in ("p50", "p90", "p99", "mean", "rate"):
        found[f"latency {aggregate}"] = await store.query(
            "web.latency", {}, aggregate=aggregate, **window
        )
        found[f"latency a {aggregate}"] = await store.query(
            "web.latency", {"host": "a"}, aggregate=aggregate, **window
        )
    found["bytes rate"] = await store.query("net.bytes", {}, aggregate="rate", **window)
    found["requests rate"] = await store.query("web.requests", {}, aggregate="rate", **window)
    found["info"] = await store.series_info()
    found["info web"] = await store.series_info("web.*", limit=3)
    found["by host"] = await store.query_by("web.latency", {}, "host", aggregate="p90", **window)
    found["by host 1"] = await store.query_by(
        "web.latency", {"region": "x"}, "host", aggregate="max", limit=1, **window
    )
    return found


def test_sqlite_percentiles_are_nearest_rank(tmp_path: Path) -> None:
    """p50/p90/p99 per bucket pick the value at rank floor(n * p / 100 + 0.5)."""

    async def test() -> None:
        async with sqlite(tmp_path) as store:
            await store.write(EVENTS)
            found = await answers(store)
        assert found["latency a p50"] == [Bucket(T0, 5.0), Bucket(T0 + 10 * SECOND, None)]
        assert found["latency a p90"][0] == Bucket(T0, 9.0)
        assert found["latency a p99"][0] == Bucket(T0, 10.0)
        # Bucket 0 of all hosts: a's ten, c's 99 and the host-less 1 (12 points).
        assert found["latency p50"] == [Bucket(T0, 5.0), Bucket(T0 + 10 * SECOND, 40.0)]
        assert found["latency p90"] == [Bucket(T0, 10.0), Bucket(T0 + 10 * SECOND, 60.0)]
        assert found["latency p99"][0] == Bucket(T0, 99.0)

    run(test)


def test_sqlite_rate_counts_resets_from_zero(tmp_path: Path) -> None:
    """rate: a total's increases per second, a drop counted from zero; increments summed."""

    async def test() -> None:
        async with sqlite(tmp_path) as store:
            await store.write(EVENTS)
            found = await answers(store)
        # Bucket 0: a +10, b +4 -> 14 / 10 s; bucket 1: a +5 (reset) +10 -> 15 / 10 s.
        assert found["bytes rate"] == [Bucket(T0, 1.4), Bucket(T0 + 10 * SECOND, 1.5)]
        # Increments: bucket 0: 1 + 3; bucket 1: 2 + 1 (two series).
        assert found["requests rate"] == [Bucket(T0, 0.4), Bucket(T0 + 10 * SECOND, 0.3)]

    run(test)


def test_sqlite_series_info_hints_and_newest(tmp_path: Path) -> None:
    """series_info: own hints (type field, flag tag), guessed ones, the newest point."""

    async def test() -> None:
        async with sqlite(tmp_path) as store:
            await store.write(EVENTS)
            found = await answers(store)
        info = {(i.measurement, i.tags): i for i in found["info"]}
        assert [i.measurement for i in found["info"]] == sorted(
            i.measurement for i in found["info"]
        )
        assert info["web.requests", (("host", "a"), ("type", "counter"))] == SeriesInfo(
            "web.requests", (("host", "a"), ("type", "counter")), "counter", T0 + 12 * SECOND, 2.0
        )
        assert info["db.query", (("timing", "true"),)].hint == "timing"
        assert info["jobs.done", (("app", "w"),)].hint == "counter"
        assert info["net.bytes", (("host", "a"),)].hint == "gauge"  # a reset in sight
        assert info["deploy", (("app", "w"),)].hint == "annotation"
        assert info["temp", (("app", "w"),)].hint == "gauge"
        assert info["web.latency", (("host", "a"),)].hint == "gauge"
        assert info["web.latency", (("host", "a"),)].newest_value == 10.0
        assert [(i.measurement, i.tags) for i in found["info web"]] == [
            ("web.latency", (("host", "a"),)),
            ("web.latency", (("host", "b"),)),
            ("web.latency", (("host", "c"), ("region", "x"))),
        ]

    run(test)


def test_sqlite_query_by_groups_busiest_first(tmp_path: Path) -> None:
    """query_by: one bucket list per tag value, busiest first, cut at limit."""

    async def test() -> None:
        async with sqlite(tmp_path) as store:
            await store.write(EVENTS)
            found = await answers(store)
        assert list(found["by host"]) == ["a", "b", "c"]  # 10, 7, 1 points
        assert found["by host"]["b"] == [Bucket(T0, None), Bucket(T0 + 10 * SECOND, 60.0)]
        assert found["by host 1"] == {"c": [Bucket(T0, 99.0), Bucket(T0 + 10 * SECOND, None)]}

    run(test)


def test_influx_answers_same_as_sqlite(influx_db: InfluxDatabase, tmp_path: Path) -> None:
    """Percentiles, rate, series_info and query_by agree between SQLite and influxd."""

    async def test() -> None:
        async with sqlite(tmp_path) as lite:
            await lite.write(EVENTS)
            expected = await answers(lite)
        async with influx(influx_db) as store:
            await store.write(EVENTS)
            found = await answers(store)
        for key, value in expected.items():
            assert found[key] == value, key

    run(test)


def test_percentile_ranks_match_influxd_on_many_sizes(
    influx_db: InfluxDatabase, tmp_path: Path
) -> None:
    """Nearest rank agrees with influxd's PERCENTILE() for buckets of 1 to 40 points."""
    events = [
        ev("m", (i * 37) % 101, T0 + size * HOUR // 100 + i, size=str(size))
        for size in range(1, 41)
        for i in range(size)
    ]
    window: dict[str, Any] = {"start": T0, "end": T0 + HOUR // 2, "bucket": HOUR // 100}

    async def test() -> None:
        for aggregate in ("p50", "p90", "p99"):
            async with sqlite(tmp_path) as lite:
                if aggregate == "p50":
                    await lite.write(events)
                expected = await lite.query("m", {}, aggregate=aggregate, **window)
            async with influx(influx_db) as store:
                if aggregate == "p50":
                    await store.write(events)
                found = await store.query("m", {}, aggregate=aggregate, **window)
            assert found == expected, aggregate
            assert sum(b.value is not None for b in found) == 40

    run(test)


@pytest.mark.parametrize("backend", ["sqlite", "influx"])
def test_bad_arguments_name_the_argument(
    backend: str, influx_db: InfluxDatabase, tmp_path: Path
) -> None:
    """Limits past the bounds, an empty tag and too many buckets raise ValueError."""

    async def test() -> None:
        context = sqlite(tmp_path) if backend == "sqlite" else influx(influx_db)
        async with context as store:
            window: dict[str, Any] = {"start": T0, "end": T0 + HOUR, "bucket": 60_000}
            with pytest.raises(ValueError, match=r"^limit"):
                await store.series_info(limit=MAX_SERIES + 1)
            with pytest.raises(ValueError, match=r"^limit"):
                await store.series_info(limit=0)
            with pytest.raises(ValueError, match=r"^by"):
                await store.query_by("m", {}, "", **window)
            with pytest.raises(ValueError, match=r"^limit"):
                await store.query_by("m", {}, "host", limit=MAX_GROUPS + 1, **window)
            with pytest.raises(ValueError, match=r"^limit"):
                await store.query_by("m", {}, "host", start=0, end=HOUR, bucket=10)
            with pytest.raises(ValueError, match="aggregate"):
                await store.query_by("m", {}, "host", aggregate="p42", **window)  # type: ignore[arg-type]

    run(test)


def test_empty_store_answers_nothing(influx_db: InfluxDatabase, tmp_path: Path) -> None:
    """A fresh store (a database not created yet) has no series and no groups."""

    async def test() -> None:
        for context in (sqlite(tmp_path), influx(influx_db)):
            async with context as store:
                assert await store.series_info() == []
                assert await store.query_by("m", {}, "host", start=0, end=HOUR, bucket=HOUR) == {}

    run(test)


def test_sqlite_series_info_reads_both_point_tables(tmp_path: Path) -> None:
    """series_info finds the newest point whether compacted or still in the inbox."""

    async def test() -> None:
        async with sqlite(tmp_path) as store:
            await store.write([ev("m", v, T0 + v * SECOND, host="a") for v in range(1, 6)])
            await store.write([ev("m", 9, T0, host="b")])
            await store.compact()  # every point so far in the series-ordered table
            await store.write([ev("m", 0.5, T0 + 10 * SECOND, host="a")])  # a drop, newest
            await store.write([ev("m", 7, T0 - SECOND, host="b")])  # late: older than 9
            found = await store.series_info("m")
        assert found == [
            SeriesInfo("m", (("host", "a"),), "gauge", T0 + 10 * SECOND, 0.5),
            SeriesInfo("m", (("host", "b"),), "counter", T0, 9.0),
        ]

    run(test)
