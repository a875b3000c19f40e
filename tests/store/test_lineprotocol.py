"""InfluxDB line protocol: exact bytes, timestamps, the cardinality guard, and a real influxd."""

from __future__ import annotations

import gc
import itertools
import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numbat.event import Event, Scalar, normalize
from numbat.store.lineprotocol import (
    MAX_PREFIX_BYTES,
    MAX_TIME_MS,
    NS_PER_MS,
    CardinalityReport,
    LineRenderer,
    escape_key,
    escape_measurement,
    escape_tag_value,
    quote_string,
    stored_text,
)
from numbat.store.points import is_heartbeat, scalar_text
from tests.store.conftest import InfluxDatabase, InfluxServer, VictoriaMetrics

T0 = 1_700_000_000_000  # 2023-11-14, ms


def lines(data: bytes) -> list[str]:
    return data.decode().splitlines(keepends=True)


def timestamps(data: bytes) -> list[int]:
    return [int(line.rsplit(" ", 1)[1]) for line in lines(data)]


# -- escaping: exact bytes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "written"),
    [
        ("web.requests", "web.requests"),
        ("web requests,total", "web\\ requests\\,total"),
        ("a=b", "a=b"),
        ('q"x', 'q"x'),
        (" lead", "\\ lead"),
        ("a\\b", "a\\b"),
        ("a\\ b", "a\uff3c\\ b"),
        ("a\\,b", "a\uff3c\\,b"),
        ("a\\=b", "a\uff3c=b"),
        ("end\\", "end\uff3c"),
        ("#tag", "\uff03tag"),
        ("x#y", "x#y"),
        ("é😀", "é😀"),
    ],
)
def test_escape_measurement(name: str, written: str) -> None:
    """A measurement escapes comma and space; unrepresentable backslashes and # are replaced."""
    assert escape_measurement(name) == written


@pytest.mark.parametrize(
    ("key", "written"),
    [
        ("host", "host"),
        ("a b,c=d", "a\\ b\\,c\\=d"),
        ('a"b', 'a"b'),
        ("x\\y", "x\\y"),
        ("x\\\\y", "x\\\\y"),
        ("a\\=b", "a\uff3c\\=b"),
        ('a\\"b', 'a\uff3c"b'),
        ("end\\", "end\uff3c"),
        ("#k", "#k"),
    ],
)
def test_escape_key(key: str, written: str) -> None:
    """Tag and field keys escape comma, equals and space."""
    assert escape_key(key) == written


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("GET /a?x=1, ok", "GET\\ /a?x\\=1\\,\\ ok"),
        ("two\nlines", "two\\nlines"),
        ("tab\there\r\x00", "tab\there\r\x00"),
        ('say "x"', 'say\\ "x"'),
        ("C:\\dir\\", "C:\\dir\uff3c"),
        ("C:\\a b", "C:\\a\\ b"),
        ("\\\\ x", "\\\uff3c\\ x"),
    ],
)
def test_escape_tag_value(value: str, written: str) -> None:
    """Tag values escape like keys; a newline becomes the two characters backslash-n."""
    assert escape_tag_value(value) == written


def test_quote_string() -> None:
    """String fields are quoted with backslash and quote escaped; anything else is as is."""
    assert quote_string('a"b\\c\nd\te,f=g h') == '"a\\"b\\\\c\nd\te,f=g h"'
    assert quote_string("") == '""'


def test_stored_text_is_identity_for_representable_text() -> None:
    """stored_text changes only the sequences line protocol cannot carry."""
    for text in ("plain", "a b,c=d", 'q"', "x\\y", "é😀", "tab\t"):
        for part in ("measurement", "key", "tag_value"):
            assert stored_text(text, part) == text


def test_render_exact_line() -> None:
    """One event with every kind of field renders to these exact bytes."""
    event = normalize(
        {
            "name": "web requests",
            "value": 2,
            "time": T0 + 123,
            "host": "h 1",
            "route": "/a,b",
            "q": "x=1",
            "ok": True,
            "code": 200,
            "ratio": 0.5,
            "empty": "",
            "description": 'said "hi"\n\\o/',
            "ttl": 16000,
        }
    )
    data = LineRenderer().render([event]).data
    assert data == (
        b"web\\ requests,code=200,host=h\\ 1,ok=true,q=x\\=1,ratio=0.5,route=/a\\,b "
        b'value=2.0,description="said \\"hi\\"\n\\\\o/",ttl=16000.0 1700000000123000000\n'
    )


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (1, "1.0"),
        (-0.5, "-0.5"),
        (0.1, "0.1"),
        (2**63 - 1, "9.223372036854776e+18"),
        (1e-7, "1e-07"),
    ],
)
def test_value_is_a_float_that_reads_back_exactly(value: float, written: str) -> None:
    """value is always a float field, written as repr (what Go parses back exactly)."""
    data = LineRenderer().render([{"name": "m", "value": value, "time": 1}]).data
    assert data == f"m value={written} 1000000\n".encode()


def test_text_fields_are_configurable() -> None:
    """Configured text fields become string fields; the rest stay tags."""
    renderer = LineRenderer(text_fields=("stack",), number_fields=())
    event: Event = {"name": "m", "value": 1, "time": 1, "stack": "a\nb", "message": "x y"}
    assert renderer.render([event]).data == b'm,message=x\\ y value=1.0,stack="a\nb" 1000000\n'


def test_skipped_events() -> None:
    """Heartbeats, events without a name and times influxd cannot store are skipped."""
    renderer = LineRenderer()
    events: list[Event] = [
        {"name": "web.heartbeat", "value": 1, "time": 1},
        {"value": 1, "time": 1},
        {"name": "m", "value": 1, "time": MAX_TIME_MS + 1},
        {"name": "m", "value": 1, "time": MAX_TIME_MS},
        {"name": "web.heartbeats", "value": 1, "time": 1},
    ]
    result = renderer.render(events)
    assert (result.points, result.skipped) == (2, 3)
    assert timestamps(result.data) == [MAX_TIME_MS * NS_PER_MS, NS_PER_MS]
    assert (renderer.points, renderer.skipped) == (2, 3)


def test_heartbeats_written_when_configured() -> None:
    """write_heartbeats=True stores heartbeats like any event."""
    result = LineRenderer(write_heartbeats=True).render([{"name": "a.heartbeat", "time": 1}])
    assert result.data == b"a.heartbeat value=1.0 1000000\n"


def test_event_without_time_gets_now() -> None:
    """The (invalid) event without a time is written at the renderer's clock."""
    renderer = LineRenderer(now_ms=lambda: 42)
    assert renderer.render([{"name": "m", "value": 1}]).data == b"m value=1.0 42000000\n"


def test_equal_python_values_are_different_tags() -> None:
    """True, 1 and 1.0 are equal in Python but render as different tags (true, 1, 1.0)."""
    events: list[Event] = [
        {"name": "m", "value": 1, "time": 1, "x": v} for v in (True, 1, 1.0, -0.0)
    ]
    assert [line.split(" ")[0] for line in lines(LineRenderer().render(events).data)] == [
        "m,x=true",
        "m,x=1",
        "m,x=1.0",
        "m,x=-0.0",
    ]


# -- timestamps: the tie-breaker -------------------------------------------------------


def test_same_millisecond_gets_distinct_nanoseconds() -> None:
    """Three events of one series in one ms get ns offsets 0, 1, 2; a new ms starts at 0."""
    event: Event = {"name": "hits", "value": 1, "time": T0, "host": "a"}
    later: Event = {**event, "time": T0 + 1}
    data = LineRenderer().render([event, event, event, later]).data
    base = T0 * NS_PER_MS
    assert timestamps(data) == [base, base + 1, base + 2, base + NS_PER_MS]


def test_offsets_count_per_millisecond_over_all_series() -> None:
    """Offsets count the points of a millisecond, whatever their series: a, b, a, b take 0-3."""
    a: Event = {"name": "hits", "value": 1, "time": T0, "host": "a"}
    b: Event = {**a, "host": "b"}
    base = T0 * NS_PER_MS
    stamps = timestamps(LineRenderer().render([a, b, a, b]).data)
    assert stamps == [base, base + 1, base + 2, base + 3]


def test_replay_through_fresh_renderer_is_identical() -> None:
    """Rendering the same batch again from a fresh renderer gives the same bytes."""
    events: list[Event] = [
        {"name": "hits", "value": i % 3, "time": T0 + i // 4, "host": f"h{i % 2}"}
        for i in range(40)
    ]
    assert LineRenderer().render(events).data == LineRenderer().render(events).data


def test_two_workers_never_collide() -> None:
    """Worker k of n uses offsets k, k+n, k+2n...: two workers' points never share a ns."""
    events: list[Event] = [{"name": "hits", "value": 1, "time": T0, "host": "a"}] * 3
    first = timestamps(LineRenderer(worker=0, workers=2).render(events).data)
    second = timestamps(LineRenderer(worker=1, workers=2).render(events).data)
    base = T0 * NS_PER_MS
    assert first == [base, base + 2, base + 4]
    assert second == [base + 1, base + 3, base + 5]


def test_late_events_count_on_in_their_millisecond() -> None:
    """An event older than the latest ms counts on in its own ms, clear of what it has."""
    now: Event = {"name": "hits", "value": 1, "time": T0 + 1, "host": "a"}
    late: Event = {**now, "time": T0}
    stamps = timestamps(LineRenderer().render([late, now, late, now, late]).data)
    base = T0 * NS_PER_MS
    assert stamps == [base, base + NS_PER_MS, base + 1, base + NS_PER_MS + 1, base + 2]


def test_a_millisecond_counted_out_counts_down_from_the_base() -> None:
    """Past counted_ms newer milliseconds, a point in an old one takes the next slot down
    from the base (of every such point), clear of the slots counted up there."""
    renderer = LineRenderer(counted_ms=2)
    at = [T0, T0, T0 + 1, T0 + 2, T0, T0, T0 + 1]  # T0 is counted out once T0 + 2 comes
    events: list[Event] = [{"name": "hits", "value": 1, "time": t, "host": "a"} for t in at]
    stamps = timestamps(renderer.render(events).data)
    base = T0 * NS_PER_MS
    assert stamps == [
        base,
        base + 1,
        base + NS_PER_MS,
        base + 2 * NS_PER_MS,
        base + 999_999,
        base + 999_998,
        base + NS_PER_MS + 1,
    ]
    assert len(renderer._counts) == 2


def test_generations_never_share_a_nanosecond() -> None:
    """A thousand points in one ms from each of two successive generations (a restart
    between them) never share a nanosecond, with one worker or eight."""
    events: list[Event] = [{"name": "hits", "value": 1, "time": T0, "host": "a"}] * 1_000
    for workers in (1, 8):
        lives = [
            set(timestamps(LineRenderer(generation=g, workers=workers).render(events).data))
            for g in range(30)
        ]
        assert all(len(life) == 1_000 for life in lives)
        assert all(not before & after for before, after in itertools.pairwise(lives))


def test_slots_wrap_past_the_end_of_the_millisecond() -> None:
    """A base near the end of the slots wraps to the start: every point stays in its
    millisecond, on its worker's nanoseconds, whether rendered at once or one by one."""
    events: list[Event] = [{"name": "hits", "value": 1, "time": T0, "host": "a"}] * 6
    # 10,000 workers: 100 slots a worker; generation 29 starts at slot 98.
    at_once = LineRenderer(worker=3, workers=10_000, generation=29)
    one_by_one = LineRenderer(worker=3, workers=10_000, generation=29)
    stamps = timestamps(at_once.render(events).data)
    assert stamps == [T0 * NS_PER_MS + slot * 10_000 + 3 for slot in (98, 99, 0, 1, 2, 3)]
    assert [timestamps(one_by_one.render([e]).data)[0] for e in events] == stamps


def test_generation_zero_writes_as_before_and_a_negative_one_is_refused() -> None:
    """Generation 0 starts at offset 0 (as numbat did before it had generations)."""
    event: Event = {"name": "hits", "value": 1, "time": T0}
    assert timestamps(LineRenderer().render([event]).data) == [T0 * NS_PER_MS]
    with pytest.raises(ValueError, match="generation"):
        LineRenderer(generation=-1)


def test_bad_worker_numbers_are_refused() -> None:
    """worker must be in [0, workers)."""
    with pytest.raises(ValueError, match="worker"):
        LineRenderer(worker=2, workers=2)


def test_a_small_cache_changes_no_line() -> None:
    """A cache of 4 entries for 60 combinations of tags renders the same bytes as a large
    one, and holds no more than its size, the half being freed included."""
    events: list[Event] = [
        {"name": f"m{i % 3}", "value": i, "time": T0 + i // 7, "host": f"h{i % 20}"}
        for i in range(600)
    ]
    small = LineRenderer(cache_size=4)
    data = b"".join(small.render(events[i : i + 50]).data for i in range(0, 600, 50))
    assert data == LineRenderer().render(events).data
    assert len(small._cache) + len(small._old_cache) + len(small._dying) <= 4


def test_the_cache_is_invisible_to_the_garbage_collector() -> None:
    """After a collection no cache key or entry is tracked: however many series are
    cached, a full collection does not walk them (100,000 held the loop for 0.1 s)."""
    renderer = LineRenderer()
    events: list[Event] = [
        {"name": "req", "value": 1, "time": T0, "host": "a", "id": f"r{i}"} for i in range(1_000)
    ]
    renderer.render(events)
    renderer.render(events)  # seen twice: cached
    gc.collect()
    gc.collect()  # a key's inner tuple goes untracked first, then the key
    cached = [*renderer._cache.items(), *renderer._old_cache.items()]
    assert len(cached) == 1_000
    assert not any(gc.is_tracked(key) or gc.is_tracked(entry) for key, entry in cached)


def test_series_seen_once_are_not_cached() -> None:
    """A new series, or a new value of a demoted tag, is cached when it comes again: a
    tag of unique values (request ids) does not churn the cache."""
    renderer = LineRenderer(max_series_per_measurement=10)
    events: list[Event] = [
        {"name": "req", "value": 1, "time": T0, "host": "a", "id": f"r{i}"} for i in range(30)
    ]
    renderer.render(events)  # 10 new series, then 20 new values of a demoted tag
    assert not renderer._cache
    renderer.render(events[:5] + events[20:25])
    assert len(renderer._cache) == 10


def test_a_full_cache_is_freed_two_entries_a_miss() -> None:
    """When the young half fills, the old one is freed two entries per new series, never
    all at once: a miss does a bounded amount of work whatever the cache size."""
    renderer = LineRenderer(cache_size=200)

    def new(i: int) -> list[Event]:
        return [{"name": "req", "value": 1, "time": T0, "id": f"r{i}"}]

    for i in range(200):  # the young half fills, then the old one (seen twice: cached)
        renderer.render(new(i) * 2)
    sizes = []
    for i in range(200, 300):
        renderer.render(new(i) * 2)
        sizes.append(len(renderer._dying))
    assert sizes[0] == 98  # the half that went (100), less two
    assert all(a - b in (0, 2) for a, b in itertools.pairwise(sizes))
    assert sizes[49] == 0


# -- the cardinality guard -------------------------------------------------------------


def pids(count: int, start: int = 1) -> list[Event]:
    return [
        {"name": "proc.mem", "value": pid, "time": T0 + pid, "host": "h", "pid": pid}
        for pid in range(start, start + count)
    ]


def test_growing_tag_is_demoted_to_a_field(caplog: pytest.LogCaptureFixture) -> None:
    """Past the cap, new series carry the growing tag as a field; old series keep it."""
    renderer = LineRenderer(max_series_per_measurement=3)
    with caplog.at_level(logging.WARNING, logger="numbat.store.lineprotocol"):
        result = renderer.render([*pids(5), *pids(1)])
    assert [line.rsplit(" ", 1)[0] for line in lines(result.data)] == [
        "proc.mem,host=h,pid=1 value=1.0",
        "proc.mem,host=h,pid=2 value=2.0",
        "proc.mem,host=h,pid=3 value=3.0",
        'proc.mem,host=h value=4.0,pid="4"',
        'proc.mem,host=h value=5.0,pid="5"',
        "proc.mem,host=h,pid=1 value=1.0",
    ]
    assert (result.demoted, renderer.demoted, renderer.dropped_tags) == (2, 2, 0)
    assert renderer.cardinality_reports == [CardinalityReport("proc.mem", "pid", 3, 3, "field")]
    [record] = [r for r in caplog.records if r.name == "numbat.store.lineprotocol"]
    assert "'proc.mem'" in record.getMessage()
    assert "'pid'" in record.getMessage()


def test_guard_logs_once_and_spares_other_measurements(caplog: pytest.LogCaptureFixture) -> None:
    """More new series after the demotion log nothing new; another measurement is untouched."""
    renderer = LineRenderer(max_series_per_measurement=3)
    other: list[Event] = [
        {"name": "other", "value": 1, "time": T0, "pid": pid} for pid in range(1, 4)
    ]
    with caplog.at_level(logging.WARNING, logger="numbat.store.lineprotocol"):
        renderer.render(pids(4))
        result = renderer.render([*pids(20, start=10), *other])
    assert len([r for r in caplog.records if r.name == "numbat.store.lineprotocol"]) == 1
    assert result.demoted == 20
    assert all(line.startswith("other,pid=") for line in lines(result.data)[-3:])


def test_drop_mode_leaves_the_tag_out() -> None:
    """on_cardinality="drop": past the cap the growing tag is not written at all."""
    renderer = LineRenderer(max_series_per_measurement=3, on_cardinality="drop")
    result = renderer.render(pids(5))
    assert [line.rsplit(" ", 1)[0] for line in lines(result.data)][3:] == [
        "proc.mem,host=h value=4.0",
        "proc.mem,host=h value=5.0",
    ]
    assert (result.demoted, renderer.demoted, renderer.dropped_tags) == (2, 0, 2)
    assert renderer.cardinality_reports[0].action == "drop"


def test_the_tag_with_most_values_is_demoted() -> None:
    """Of several tags, the one with the most distinct values goes; the others stay tags."""
    renderer = LineRenderer(max_series_per_measurement=4)
    events: list[Event] = [
        {"name": "req", "value": 1, "time": T0, "host": f"h{i % 2}", "id": f"r{i}"}
        for i in range(8)
    ]
    data = renderer.render(events).data
    assert [r.tag for r in renderer.cardinality_reports] == ["id"]
    assert lines(data)[5].startswith('req,host=h1 value=1.0,id="r5" ')


def test_a_value_from_before_the_demotion_is_demoted_in_a_new_series() -> None:
    """A demoted tag's value that an old series was written with stays a tag in that
    series only: with other tags it is a new series, and carries it as a field."""
    renderer = LineRenderer(max_series_per_measurement=3)
    renderer.render(pids(4))  # pid 1, 2 and 3 written as tags; pid demoted at 4
    again: list[Event] = [
        {"name": "proc.mem", "value": 1, "time": T0 + 9, "host": "h", "pid": 1},
        {"name": "proc.mem", "value": 1, "time": T0 + 9, "host": "h2", "pid": 1},
        {"name": "proc.mem", "value": 1, "time": T0 + 9, "host": "h2", "pid": 9},
    ]
    assert [line.rsplit(" ", 1)[0] for line in lines(renderer.render(again).data)] == [
        "proc.mem,host=h,pid=1 value=1.0",
        'proc.mem,host=h2 value=1.0,pid="1"',
        'proc.mem,host=h2 value=1.0,pid="9"',
    ]


# -- a real influxd --------------------------------------------------------------------


def test_busy_counter_keeps_every_point_and_replays_do_not_duplicate(
    influx_db: InfluxDatabase,
) -> None:
    """Five events of one series in one ms are five points; sending the rendered batch
    again adds none; the same events from the next generation (after a restart) are
    five more, as the embedded store keeps every event it is given."""
    events: list[Event] = [{"name": "web.hits", "value": 1, "time": T0, "host": "a"}] * 5
    data = LineRenderer(generation=1).render(events).data
    influx_db.write(data)
    influx_db.write(data)  # a retry of the same batch, as the spool sends it again
    assert sorted(r["time"] for r in influx_db.rows("web.hits")) == [
        T0 * NS_PER_MS + 618_034 + k for k in range(5)
    ]
    influx_db.write(LineRenderer(generation=2).render(events).data)
    assert len(influx_db.rows("web.hits")) == 10


def test_guard_in_influxd(influx_db: InfluxDatabase) -> None:
    """Past the cap influxd gets one more series, not one per pid, and keeps every point."""
    renderer = LineRenderer(max_series_per_measurement=3)
    events: list[Event] = [
        {"name": "proc.mem", "value": pid, "time": T0, "host": "h", "pid": pid} for pid in range(10)
    ]
    influx_db.write(renderer.render(events).data)
    series = influx_db.query('SHOW SERIES FROM "proc.mem"')["series"][0]["values"]
    assert sorted(s[0] for s in series) == [
        "proc.mem,host=h",
        "proc.mem,host=h,pid=0",
        "proc.mem,host=h,pid=1",
        "proc.mem,host=h,pid=2",
    ]
    rows = influx_db.rows("proc.mem")
    # SELECT * names the field "pid" and the tag of the same name "pid_1".
    pids_seen = sorted(int(r.get("pid") or r["pid_1"]) for r in rows)
    assert pids_seen == list(range(10))
    assert sorted(r["value"] for r in rows) == list(range(10))


def test_long_tags_become_fields_so_influxd_takes_the_point(influx_db: InfluxDatabase) -> None:
    """Tags too long for influxd's 64 KiB series key are written as fields instead."""
    event = normalize(
        {
            "name": "big",
            "value": 1,
            "time": T0,
            **{f"t{i:02}": chr(97 + i) * 4000 for i in range(20)},
        }
    )
    renderer = LineRenderer()
    result = renderer.render([event])
    assert result.demoted == 1
    assert len(result.data.split(b" ", 1)[0]) <= MAX_PREFIX_BYTES
    influx_db.write(result.data)
    [row] = influx_db.rows("big")
    assert {k: v for k, v in row.items() if k.startswith("t") and k != "time"} == {
        f"t{i:02}": chr(97 + i) * 4000 for i in range(20)
    }


def test_control_characters_and_newlines_in_influxd(influx_db: InfluxDatabase) -> None:
    """Every control character survives in text fields; in tag values all but newline do."""
    text = "".join(chr(c) for c in range(32)) + "\x7f\x85\u2028 é😀 \"'\\,= end"
    event = normalize({"name": "ctl", "value": 1, "time": T0, "tag": text, "description": text})
    influx_db.write(LineRenderer().render([event]).data)
    [row] = influx_db.rows("ctl")
    assert row["description"] == text
    # The newline becomes backslash-n; the backslash before a comma, U+FF3C.
    assert row["tag"] == text.replace("\n", "\\n").replace("\\,", "\uff3c,")
    assert row["tag"] == stored_text(text, "tag_value")


def test_victoria_metrics_takes_the_lines(victoria_metrics: VictoriaMetrics) -> None:
    """VictoriaMetrics reads the rendered lines: escaped tags, both points of one ms."""
    events: list[Event] = [
        {"name": "vm.test", "value": v, "time": T0, "host": "a b,c", "description": "x"}
        for v in (1.5, 2.5)
    ]
    victoria_metrics.write(LineRenderer().render(events).data)
    victoria_metrics.flush()
    [series] = victoria_metrics.export('{__name__="vm.test_value"}')
    assert series["metric"] == {"__name__": "vm.test_value", "host": "a b,c"}
    assert sorted(series["values"]) == [1.5, 2.5]
    assert series["timestamps"] == [T0, T0]


# -- the property: random events come back from influxd as they were --------------------

_SPECIAL = st.sampled_from([",", "=", " ", '"', "'", "\\", "#", "é", "😀", "\u2028", "."])
_CONTROL = st.sampled_from(["\n", "\r", "\t", "\x00", "\x1b", "\x85"])
_PRINTABLE = st.characters(blacklist_categories=("Cc", "Cs"))
_ANY = st.characters(codec="utf-8")
_NOT_TAGS = {"name", "value", "time", "ttl", "status", "host", "app", "node", "description"}
_NOT_TAGS |= {"message"}

names = st.text(st.one_of(_SPECIAL, _PRINTABLE), min_size=1, max_size=16).filter(
    lambda n: not is_heartbeat(n)
)
keys = st.text(st.one_of(_SPECIAL, _PRINTABLE), min_size=1, max_size=8).filter(
    lambda k: k not in _NOT_TAGS
)
tag_values: st.SearchStrategy[Scalar] = st.one_of(
    st.text(st.one_of(_SPECIAL, _CONTROL, _ANY), max_size=12),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
numbers: st.SearchStrategy[Scalar] = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False)
)


@st.composite
def batches(draw: st.DrawFn) -> list[Event]:
    """A few series (random names and tags), each sending events in a few ms."""
    series = st.builds(
        lambda name, tags: {**tags, "name": name},
        names,
        st.dictionaries(keys, tag_values, max_size=4),
    )
    templates = draw(st.lists(series, min_size=1, max_size=4))
    events: list[Event] = []
    for _ in range(draw(st.integers(1, 12))):
        event = dict(draw(st.sampled_from(templates)))
        event["value"] = draw(numbers)
        event["time"] = T0 + draw(st.integers(0, 2))
        description = draw(st.none() | st.text(st.one_of(_SPECIAL, _CONTROL, _ANY), max_size=20))
        if description is not None:
            event["description"] = description
        events.append(normalize(event))
    return events


def expected_row(event: Event) -> tuple[Any, ...]:
    """What influxd should return for an event: time (ms), value, description, tags."""
    tags = {
        stored_text(key, "key"): stored_text(scalar_text(val), "tag_value")
        for key, val in event.items()
        if key not in ("name", "value", "time", "description") and scalar_text(val)
    }
    return (
        event["time"],
        float(event["value"]),
        event.get("description"),
        tuple(sorted(tags.items())),
    )


def actual_row(row: dict[str, Any]) -> tuple[Any, ...]:
    tags = {k: v for k, v in row.items() if k not in ("time", "value", "description")}
    return (
        row["time"] // NS_PER_MS,
        float(row["value"]),
        row.get("description"),
        tuple(sorted(tags.items())),
    )


def series_times(points: Iterable[tuple[Any, int]]) -> dict[Any, list[int]]:
    """The sorted timestamps of each series, from (series tags, ns) pairs."""
    times: dict[Any, list[int]] = {}
    for series, ns in points:
        times.setdefault(series, []).append(ns)
    return {series: sorted(ns) for series, ns in times.items()}


@settings(max_examples=30, deadline=None)
@given(events=batches())
def test_random_events_come_back_from_influxd(influxd: InfluxServer, events: list[Event]) -> None:
    """Random events written to a real influxd read back identical, every point kept."""
    db = influxd.database()
    try:
        data = LineRenderer().render(events).data
        db.write(data)
        # One event per call gives the same bytes, and each point's line (so its ns).
        renderer = LineRenderer()
        singles = [renderer.render([event]).data for event in events]
        assert b"".join(singles) == data and all(singles)
        by_measurement: dict[str, list[Event]] = {}
        written_at: dict[str, list[int]] = {}  # the ns each point was written with
        for event, line in zip(events, singles, strict=True):
            stored = stored_text(str(event["name"]), "measurement")
            by_measurement.setdefault(stored, []).append(event)
            written_at.setdefault(stored, []).append(int(line.rsplit(b" ", 1)[1]))
        for measurement, written in by_measurement.items():
            rows = db.rows(measurement)
            assert Counter(actual_row(r) for r in rows) == Counter(expected_row(e) for e in written)
            # Every point of a series was written at its own nanosecond, and is stored there.
            written_ns = series_times(
                (expected_row(e)[3], ns)
                for e, ns in zip(written, written_at[measurement], strict=True)
            )
            assert all(len(set(times)) == len(times) for times in written_ns.values())
            assert series_times((actual_row(r)[3], r["time"]) for r in rows) == written_ns
        assert sorted(db.measurements()) == sorted(by_measurement)
    finally:
        influxd.drop_database(db.name)
