"""The InfluxDB store on a real influxd: series keys, aggregates, buckets, SQLite parity."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from numbat.event import Event, Scalar, now_ms
from numbat.store import AGGREGATES, Aggregate, Bucket, Series, Store, WriteResult
from numbat.store.influx import InfluxStore, StoreError, parse_series_key
from numbat.store.sqlite import SQLiteStore
from tests.store.conftest import ADMIN, PASSWORD, InfluxDatabase, free_port
from tests.store.stores import ev, run
from tests.store.stores import influx as opened

SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
T0 = 1_700_000_040_000  # a whole minute, ms
ONE_MINUTE: dict[str, Any] = {"start": T0, "end": T0 + MINUTE, "bucket": MINUTE}


def values(buckets: list[Bucket]) -> list[float | None]:
    """The aggregates of the buckets, without their starts."""
    return [b.value for b in buckets]


# -- series keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "series"),
    [
        ("cpu", Series("cpu", ())),
        ("cpu,host=a", Series("cpu", (("host", "a"),))),
        (r"a\ b\,c=d,k=v", Series("a b,c=d", (("k", "v"),))),
        (r"m,k\ 1\=x=v\,1\ 2\=3", Series("m", (("k 1=x", "v,1 2=3"),))),
        ('m,q="x\'"', Series("m", (("q", '"x\'"'),))),
        (r"m,p=C:\dir\x,z=1", Series("m", (("p", r"C:\dir\x"), ("z", "1")))),
        (r"m,p=a\\\,b", Series("m", (("p", "a\\\\,b"),))),
        ("m,b=2,a=1", Series("m", (("a", "1"), ("b", "2")))),
    ],
)
def test_parse_series_key(key: str, series: Series) -> None:
    """Series keys split at unescaped commas and equals; escapes are undone, tags sorted."""
    assert parse_series_key(key) == series


# -- writing and listing --------------------------------------------------------------


def test_write_and_list_series(influx_db: InfluxDatabase) -> None:
    """Tags with commas, spaces, equals, quotes and backslashes come back from SHOW SERIES."""
    odd: dict[str, Scalar] = {"path": "/a b,c=d", 'q"k': 'it\'s "x"', "dir": "C:\\t\\x"}
    events = [
        ev("web ms,x=1", 1, T0, ok=True, **odd),
        ev('db "q"', 2, T0, host="a", description="free text, not a tag"),
        ev('db "q"', 3, T0 + 1, host="b", code=404),
        ev("web.heartbeat", 1, T0, host="a"),
    ]

    async def test() -> None:
        async with opened(influx_db) as store:
            await store.write(events)
            odd_tags = tuple(sorted([*((k, str(v)) for k, v in odd.items()), ("ok", "true")]))
            assert await store.series() == [
                Series('db "q"', (("code", "404"), ("host", "b"))),
                Series('db "q"', (("host", "a"),)),
                Series("web ms,x=1", odd_tags),
            ]
            assert await store.series("web ms,x=1") == [Series("web ms,x=1", odd_tags)]
            assert await store.series("nothing") == []
            assert values(await store.query("web ms,x=1", dict(odd_tags), **ONE_MINUTE)) == [1.0]

    run(test)


def test_text_fields_are_not_tags(influx_db: InfluxDatabase) -> None:
    """The configured text fields are stored as fields, and every other field as a tag."""

    async def test() -> None:
        async with opened(influx_db, text_fields=("note",)) as store:
            await store.write([ev("m", 1, T0, host="a", note="n 1", description="d")])
            assert await store.series() == [Series("m", (("description", "d"), ("host", "a")))]
            assert influx_db.rows("m")[0]["note"] == "n 1"
            assert values(await store.query("m", {"note": "n 1"}, **ONE_MINUTE)) == [None]

    run(test)


def test_write_creates_missing_database(influx_db: InfluxDatabase) -> None:
    """A write to a database that does not exist creates it; reads before that are empty."""
    influx_db.server.drop_database(influx_db.name)

    async def test() -> None:
        async with opened(influx_db) as store:
            assert await store.series() == []
            assert values(await store.query("m", {}, **ONE_MINUTE)) == [None]
            await store.write([ev("m", 4, T0, host="a")])
            assert influx_db.rows("m") == [{"time": T0 * 1_000_000, "host": "a", "value": 4}]

    run(test)


def test_same_millisecond_points_are_all_kept(influx_db: InfluxDatabase) -> None:
    """Points of one series in one millisecond are all stored, as in SQLite."""

    async def test() -> None:
        async with opened(influx_db) as store:
            await store.write([ev("m", v, T0 + 5, host="a") for v in (1, 2, 3)])
            await store.write([ev("m", 4, T0 + 5, host="a")])
            got = await store.query("m", {"host": "a"}, **ONE_MINUTE, aggregate="count")
            assert values(got) == [4.0]
            got = await store.query("m", {"host": "a"}, **ONE_MINUTE, aggregate="last")
            assert values(got) == [4.0]  # the last one written

    run(test)


def test_write_error_is_a_store_error(influx_db: InfluxDatabase) -> None:
    """A write influxd refuses raises StoreError with the server's message and status."""

    async def test() -> None:
        async with opened(influx_db, retention_policy="nosuch") as store:
            with pytest.raises(StoreError, match="retention policy not found: nosuch") as info:
                await store.write([ev("m", 1, T0)])
            assert info.value.status is not None and info.value.status >= 400
            with pytest.raises(StoreError, match="retention policy not found"):
                await store.query("m", {}, **ONE_MINUTE)

    run(test)


def test_retention_policy(influx_db: InfluxDatabase) -> None:
    """With a retention policy, points are written to it and read back from it."""
    influx_db.query(
        f'CREATE RETENTION POLICY "keep" ON "{influx_db.name}" DURATION INF REPLICATION 1'
    )

    async def test() -> None:
        async with opened(influx_db, retention_policy="keep") as store:
            await store.write([ev("m", 6, T0, host="a")])
            assert values(await store.query("m", {"host": "a"}, **ONE_MINUTE)) == [6.0]
        async with opened(influx_db) as default:
            assert values(await default.query("m", {"host": "a"}, **ONE_MINUTE)) == [None]

    run(test)


def test_unreachable_server_hides_credentials() -> None:
    """Connection failures are StoreErrors naming the host, never the password in the URL."""

    async def test() -> None:
        store = InfluxStore(f"http://bob:s3cret@127.0.0.1:{free_port()}/", "db", timeout=5)
        try:
            with pytest.raises(StoreError, match=r"influxdb 127\.0\.0\.1:") as info:
                await store.write([ev("m", 1, T0)])
            assert "s3cret" not in str(info.value) and "bob" not in str(info.value)
            assert "s3cret" not in store.url
        finally:
            await store.close()

    run(test)


def test_basic_auth(secure_influxd: str) -> None:
    """Credentials (arguments or in the URL) are sent as Basic auth; a wrong password is a
    StoreError that does not show it."""

    async def use(store: InfluxStore) -> list[Series]:
        try:
            await store.write([ev("m", 1, T0, host="a")])
            return await store.series("m")
        finally:
            await store.close()

    async def test() -> None:
        store = InfluxStore(secure_influxd, "secure", username=ADMIN, password=PASSWORD)
        assert await use(store) == [Series("m", (("host", "a"),))]
        netloc = f"{ADMIN}:{quote(PASSWORD)}@{urlsplit(secure_influxd).netloc}"
        store = InfluxStore(f"http://{netloc}", "secure")
        assert await use(store) == [Series("m", (("host", "a"),))]
        for user, password in ((None, None), (ADMIN, "wrong horse")):
            store = InfluxStore(secure_influxd, "secure", username=user, password=password)
            with pytest.raises(
                StoreError, match=r"401 .*(credentials|authorization failed)"
            ) as info:
                await use(store)
            assert info.value.status == 401
            assert "wrong" not in str(info.value)

    run(test)


def test_closed_store_refuses_calls(influx_db: InfluxDatabase) -> None:
    """After close, calls raise RuntimeError; closing twice is fine."""

    async def test() -> None:
        store = InfluxStore(influx_db.server.url, influx_db.name)
        await store.write([ev("m", 1, T0)])
        await store.close()
        await store.close()
        with pytest.raises(RuntimeError, match="closed"):
            await store.series()

    run(test)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bucket": 0}, "bucket must be a positive"),
        ({"bucket": -5}, "bucket must be a positive"),
        ({"bucket": 1, "end": T0 + 2_000_000}, "the limit is"),
        ({"aggregate": "median"}, "aggregate must be one of"),
    ],
)
def test_invalid_query_arguments(kwargs: dict[str, Any], message: str) -> None:
    """Bad buckets and unknown aggregates raise ValueError before any request."""

    async def test() -> None:
        store = InfluxStore(f"http://127.0.0.1:{free_port()}", "db")
        try:
            args: dict[str, Any] = {**ONE_MINUTE, **kwargs}
            with pytest.raises(ValueError, match=message):
                await store.query("m", {}, **args)
        finally:
            await store.close()

    run(test)


# -- queries ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aggregate", "expected"),
    [
        ("mean", [2.0, None, 7.5, 0.5]),
        ("min", [1.0, None, 5.0, -4.0]),
        ("max", [3.0, None, 10.0, 5.0]),
        ("count", [3.0, None, 2.0, 2.0]),
        ("last", [1.0, None, 10.0, -4.0]),
    ],
)
def test_aggregates(influx_db: InfluxDatabase, aggregate: Aggregate, expected: list[float]) -> None:
    """Each aggregate gives exact per-minute values, None for a minute with no point."""
    points = [(2, 0), (3, 10 * SECOND), (1, MINUTE - 1), (5, 2 * MINUTE), (10, 3 * MINUTE - 1)]
    points += [(5, 3 * MINUTE), (-4, 3 * MINUTE + 30 * SECOND), (99, 4 * MINUTE)]

    async def test() -> None:
        async with opened(influx_db) as store:
            await store.write([ev("m", v, T0 + t, host="a") for v, t in points])
            got = await store.query(
                "m",
                {"host": "a"},
                start=T0,
                end=T0 + 4 * MINUTE,
                bucket=MINUTE,
                aggregate=aggregate,
            )
            assert got == [Bucket(T0 + i * MINUTE, v) for i, v in enumerate(expected)]

    run(test)


def test_tag_subset_filter(influx_db: InfluxDatabase) -> None:
    """A filter takes every series whose tags include it, aggregated together."""
    events = [
        ev("m", 1, T0, host="a", dc="x"),
        ev("m", 3, T0, host="a", dc="y", role="db"),
        ev("m", 10, T0, host="b", dc="x"),
        ev("m", 100, T0, host="a b,c=d", dc="x"),
        ev("m", 7, T0, host="c", description="x"),
        ev("other", 1000, T0, host="a", dc="x"),
    ]
    cases: list[tuple[dict[str, str], float | None, float | None]] = [  # tags, count, mean
        ({}, 5.0, 24.2),
        ({"host": "a"}, 2.0, 2.0),
        ({"dc": "x"}, 3.0, 37.0),
        ({"host": "a", "dc": "y"}, 1.0, 3.0),
        ({"role": "db", "host": "a"}, 1.0, 3.0),
        ({"host": "a b,c=d"}, 1.0, 100.0),
        ({"host": "a", "dc": "z"}, None, None),
        ({"nosuch": "a"}, None, None),
        ({"description": "x"}, None, None),  # a field, never a tag
        ({"time": "x"}, None, None),
    ]

    async def test() -> None:
        async with opened(influx_db) as store:
            await store.write(events)
            for tags, count, mean in cases:
                got = await store.query("m", tags, **ONE_MINUTE, aggregate="count")
                assert values(got) == [count], tags
                got = await store.query("m", tags, **ONE_MINUTE, aggregate="mean")
                assert values(got) == [pytest.approx(mean)], tags

    run(test)


def test_empty_buckets_are_none(influx_db: InfluxDatabase) -> None:
    """Every interval gets a Bucket; those without points, and all of an empty range, are None."""

    async def test() -> None:
        async with opened(influx_db) as store:
            await store.write([ev("m", 2, T0 + 2 * MINUTE), ev("m", 4, T0 + 5 * MINUTE + 1)])
            got = await store.query("m", {}, start=T0, end=T0 + 7 * MINUTE, bucket=MINUTE)
            assert values(got) == [None, None, 2.0, None, None, 4.0, None]
            assert [b.start for b in got] == [T0 + i * MINUTE for i in range(7)]
            got = await store.query("m", {}, start=T0 + HOUR, end=T0 + HOUR + 3, bucket=2)
            assert got == [Bucket(T0 + HOUR, None), Bucket(T0 + HOUR + 2, None)]
            assert await store.query("m", {}, start=T0, end=T0, bucket=MINUTE) == []
            assert await store.query("m", {}, start=T0, end=T0 - 5, bucket=MINUTE) == []

    run(test)


def test_buckets_align_to_start_not_the_epoch(influx_db: InfluxDatabase) -> None:
    """Buckets are counted from ``start`` (90 s) even though InfluxDB aligns to the epoch."""
    points = [(1, 89_999), (2, 90_000), (4, 149_999), (8, 150_000), (16, 209_999), (32, 210_000)]

    async def test() -> None:
        async with opened(influx_db) as store:
            await store.write([ev("m", v, t) for v, t in points])
            got = await store.query(
                "m", {}, start=90_000, end=210_000, bucket=MINUTE, aggregate="count"
            )
            assert got == [Bucket(90_000, 2.0), Bucket(150_000, 2.0)]
            got = await store.query("m", {}, start=90_000, end=215_000, bucket=MINUTE)
            assert values(got) == [3.0, 12.0, 32.0]  # the last bucket is cut short by end
            got = await store.query("m", {}, start=89_999, end=150_000, bucket=7, aggregate="max")
            assert (got[0], got[1], got[-1]) == (
                Bucket(89_999, 2.0),
                Bucket(90_006, None),
                Bucket(149_996, 4.0),  # 89_999 + 8_571 * 7; holds 149_999
            )

    run(test)


def test_ranges_beyond_influxdb_time(influx_db: InfluxDatabase) -> None:
    """Ranges before 1970 or past InfluxDB's last time, and huge buckets, still count from start."""

    async def test() -> None:
        async with opened(influx_db) as store:
            await store.write([ev("m", 1, 0), ev("m", 2, 30_000), ev("m", 3, T0)])
            got = await store.query(
                "m", {}, start=-90_000, end=MINUTE, bucket=MINUTE, aggregate="count"
            )
            assert got == [Bucket(-90_000, None), Bucket(-30_000, 1.0), Bucket(30_000, 1.0)]
            got = await store.query(
                "m", {}, start=-(2**62), end=2**62, bucket=2**63, aggregate="count"
            )
            assert got == [Bucket(-(2**62), 3.0)]
            got = await store.query("m", {}, start=0, end=2**62, bucket=2**61, aggregate="max")
            assert values(got) == [3.0, None]

    run(test)


# -- the same answers as SQLite ------------------------------------------------------


def sample_events(seed: int = 7) -> list[Event]:
    """Deterministic events: two measurements, several tags, same-millisecond duplicates."""
    rng = random.Random(seed)
    names = ["web.ms", "db query,slow"]
    hosts = ["a", "b c", "d=e", 'q"1']
    events: list[Event] = []
    for i in range(600):
        time = T0 + rng.randrange(0, 10 * MINUTE, 250)  # coarse: many share a millisecond
        fields: dict[str, Scalar] = {"host": rng.choice(hosts), "dc": rng.choice(["x", "y"])}
        if i % 5 == 0:
            fields["role"] = "db"
        if i % 7 == 0:
            fields["description"] = f"event {i}"
        events.append(ev(rng.choice(names), round(rng.uniform(-50, 50), 3), time, **fields))
        if i % 40 == 0:  # the same series and millisecond again
            events.append({**events[-1], "value": round(rng.uniform(-50, 50), 3)})
    return events


FILTERS: list[dict[str, str]] = [
    {},
    {"host": "a"},
    {"host": "b c", "dc": "y"},
    {"role": "db"},
    {"host": 'q"1', "dc": "x", "role": "db"},
    {"host": "nobody"},
]
WINDOWS: list[tuple[int, int, int]] = [  # start, end, bucket
    (T0, T0 + 10 * MINUTE, MINUTE),
    (T0 - 45_000, T0 + 11 * MINUTE + 3, 13_000),
    (T0 + 7_777, T0 + 8 * MINUTE, 250),
    (0, T0 + HOUR, T0 + HOUR),
]


def last_candidates(
    events: list[Event], measurement: str, tags: dict[str, str], window: tuple[int, int, int]
) -> list[set[float]]:
    """Per bucket, the values at its latest millisecond: what either store may call last."""
    start, end, bucket = window
    latest: dict[int, tuple[int, set[float]]] = {}
    for event in events:
        when = int(event["time"])
        if event["name"] != measurement or not start <= when < end:
            continue
        if any(event.get(k) != v for k, v in tags.items()):
            continue
        index = (when - start) // bucket
        best = latest.get(index)
        if best is None or when > best[0]:
            latest[index] = (when, {float(event["value"])})
        elif when == best[0]:
            best[1].add(float(event["value"]))
    count = -(-(end - start) // bucket)
    return [latest[i][1] if i in latest else set() for i in range(count)]


async def query_all(
    store: Store, measurement: str, tags: dict[str, str], aggregate: Aggregate
) -> list[list[Bucket]]:
    """The buckets of every window in WINDOWS."""
    return [
        await store.query(measurement, tags, start=s, end=e, bucket=b, aggregate=aggregate)
        for s, e, b in WINDOWS
    ]


def test_same_answers_as_sqlite(influx_db: InfluxDatabase, tmp_path: Path) -> None:
    """The same events give the same series and, for every aggregate, the same buckets."""
    events = sample_events()
    same_ms = {(e["name"], e["host"], e["dc"], e.get("role"), e["time"]) for e in events}
    assert len(same_ms) < len(events)  # the sample has same-series same-millisecond points

    async def test() -> None:
        lite = SQLiteStore(tmp_path / "numbat.db", clock=lambda: T0 + HOUR)
        try:
            async with opened(influx_db) as influx:
                for store in (lite, influx):
                    await store.write(events[:250])
                    await store.write(events[250:])
                await compare(lite, influx, events)
        finally:
            await lite.close()

    run(test)


def _approx(numbers: list[float | None]) -> list[object]:
    """Floats compared to 1e-9, empty buckets (None) exactly: pytest >= 9.2 refuses None
    inside approx()."""
    return [None if n is None else pytest.approx(n, rel=1e-9, abs=1e-9) for n in numbers]


async def compare(lite: SQLiteStore, influx: InfluxStore, events: list[Event]) -> None:
    """Series, and every filter, aggregate and window of both stores, side by side."""
    series = await influx.series()
    assert series == await lite.series()
    assert len(series) > 20
    for measurement in ("web.ms", "db query,slow", "nothing"):
        assert await influx.series(measurement) == await lite.series(measurement)
        for tags in FILTERS:
            for aggregate in AGGREGATES:
                got = await query_all(influx, measurement, tags, aggregate)
                want = await query_all(lite, measurement, tags, aggregate)
                where = (measurement, tags, aggregate)
                assert [[b.start for b in w] for w in got] == [[b.start for b in w] for w in want]
                if aggregate == "last":
                    check_last(got, want, events, measurement, tags)
                else:
                    assert [_approx(values(g)) for g in got] == [
                        _approx(values(w)) for w in want
                    ], where


def check_last(
    got: list[list[Bucket]],
    want: list[list[Bucket]],
    events: list[Event],
    measurement: str,
    tags: dict[str, str],
) -> None:
    """Both stores pick one of the values at a bucket's latest millisecond."""
    for window, influx_buckets, lite_buckets in zip(WINDOWS, got, want, strict=True):
        candidates = last_candidates(events, measurement, tags, window)
        for options, a, b in zip(candidates, influx_buckets, lite_buckets, strict=True):
            assert (a.value is None) == (b.value is None) == (not options)
            assert a.value is None or a.value in options
            assert b.value is None or b.value in options


# -- write results and annotations ---------------------------------------------------


def test_write_counts_points_beyond_the_retention_policy_as_expired(
    influx_db: InfluxDatabase,
) -> None:
    """Points influxd drops as older than its retention policy are expired, not written."""
    influx_db.query(
        f'CREATE RETENTION POLICY "hour" ON "{influx_db.name}" DURATION 1h REPLICATION 1'
    )
    now = now_ms()

    async def test() -> None:
        async with opened(influx_db, retention_policy="hour") as store:
            got = await store.write(
                [ev("m", 1, now), ev("m", 2, T0), ev("m.heartbeat", 1, now), ev("m", 3, now - 1)]
            )
            assert got == WriteResult(written=2, skipped=1, expired=1)
            counted = await store.query("m", {}, start=T0, end=now + 1, bucket=now + 1 - T0)
            assert values(counted) == [2.0]
            assert await store.write([ev("m", 4, now + 1)]) == WriteResult(1, 0, 0)

    run(test)


def note_events() -> list[Event]:
    """Events with and without text, in measurements whose names need escaping."""
    events = sample_events()
    names = ["deploy", "deploy.db", "a/b.c", "back\\slash", "star*x", "dé ploy"]
    for i in range(60):
        fields: dict[str, Scalar] = {"host": ["a", "b c"][i % 2]}
        if i % 5 != 4:
            fields["description"] = f'deploy {i} "quoted" \\ back\nslash'
        if i % 4 == 0:
            fields["message"] = i
        events.append(ev(names[i % len(names)], 1, T0 + (i // 2) * SECOND, **fields))
    return events


PATTERNS = [
    "*",
    "deploy",
    "deploy*",
    "de?loy*",
    "a/b.c",
    "a/b?c",
    "back\\*",
    "star\\*x",
    "star*",
    "dé*",
    "db query,*",
    "web.ms",
    "nothing*",
    "?",
]


def test_annotations_same_answers_as_sqlite(influx_db: InfluxDatabase, tmp_path: Path) -> None:
    """Both stores give the same annotations for every pattern, tag filter, range and limit."""
    events = note_events()

    async def test() -> None:
        lite = SQLiteStore(tmp_path / "numbat.db", clock=lambda: T0 + HOUR)
        try:
            async with opened(influx_db) as influx:
                for store in (lite, influx):
                    assert (await store.write(events)).written == len(events)
                matched = set()
                for pattern in PATTERNS:
                    for tags in [{}, {"host": "a"}, {"host": "b c", "dc": "x"}]:
                        for start, end in [(T0, T0 + HOUR), (T0 + 7 * SECOND, T0 + 20 * SECOND)]:
                            for limit in (1000, 7, 1):
                                where = (pattern, tags, start, end, limit)
                                got = await influx.annotations(
                                    pattern, tags, start=start, end=end, limit=limit
                                )
                                want = await lite.annotations(
                                    pattern, tags, start=start, end=end, limit=limit
                                )
                                assert got == want, where
                                matched |= {pattern} if got else set()
                # No escape for "*": star\*x wants a backslash the name does not have.
                assert set(PATTERNS) - matched == {"nothing*", "?", "star\\*x"}
                window = {"start": T0 + SECOND, "end": T0 + SECOND + 1}
                (note,) = await influx.annotations("a/b.c", {"host": "a"}, **window)
                assert note.fields == {"description": 'deploy 2 "quoted" \\ back\nslash'}
                (note,) = await influx.annotations("deploy", {"host": "a"}, start=T0, end=T0 + 1)
                assert note.fields == {
                    "description": 'deploy 0 "quoted" \\ back\nslash',
                    "message": "0",
                }
        finally:
            await lite.close()

    run(test)
