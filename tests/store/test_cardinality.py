"""Tags influxd refused new values of: its answers read, our lines read back, the
durable list of demotions, and the renderer applying them."""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings

from numbat.event import Event
from numbat.store.cardinality import (
    SERIES,
    VALUES,
    Demotion,
    DemotionFile,
    Refusal,
    TagDemotions,
    parse_line,
    parse_refusal,
    split_lines,
    to_event,
)
from numbat.store.lineprotocol import LineRenderer, stored_text
from tests.helpers import fill, tmpfs
from tests.store.conftest import InfluxServer, start_influxd
from tests.store.test_lineprotocol import batches

T0 = 1_700_000_000_000


@pytest.fixture(scope="module")
def tiny_influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """An influxd that takes two values per tag and eight series per database."""
    process, server = start_influxd(
        tmp_path_factory.mktemp("influxd-tiny"),
        "max-values-per-tag = 2\n  max-series-per-database = 8",
    )
    yield server
    process.stop()


# -- influxd's answers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("web.requests", "reqid"),
        ('we b,"q"\\x\\', 'k"e y=\\'),
        ("é😀\ttab", "ключ\u2028"),
        ("#hash", "a\\,b"),
    ],
)
def test_a_values_refusal_names_what_the_renderer_demotes(
    tiny_influxd: InfluxServer, name: str, key: str
) -> None:
    """influxd's max-values-per-tag answer (Go-quoted names) is read back to the very
    measurement and tag our renderer wrote, so demoting them takes the tag out."""
    db = tiny_influxd.database()
    try:
        renderer = LineRenderer()

        def event(i: int) -> Event:
            return {"name": name, "value": i, "time": T0 + i, key: f"v{i}"}

        assert db.server.write(db.name, renderer.render([event(0), event(1)]).data)[0] == 204
        status, body = db.server.write(db.name, renderer.render([event(2)]).data)
        assert status == 400, body
        refusal = parse_refusal(json.loads(body)["error"])
        measurement, tag = stored_text(name, "measurement"), stored_text(key, "key")
        assert refusal == Refusal(VALUES, measurement, tag)
        assert renderer.demote(measurement, tag)
        line = parse_line(renderer.render([event(3)]).data)
        assert line.series.tags == () and (tag, "v3") in line.fields
    finally:
        tiny_influxd.drop_database(db.name)


def test_a_series_refusal_is_read(tiny_influxd: InfluxServer) -> None:
    """influxd's max-series-per-database answer is read as such (it names no tag)."""
    db = tiny_influxd.database()
    try:
        data = b"".join(b"m%d value=1 1\n" % i for i in range(9))
        status, body = db.server.write(db.name, data)
        assert status == 400, body
        assert parse_refusal(json.loads(body)["error"]) == Refusal(SERIES)
    finally:
        tiny_influxd.drop_database(db.name)


@pytest.mark.parametrize(
    "message",
    [
        'partial write: field type conflict: input field "value" on measurement "m" is '
        "type string, already exists as type float dropped=1",
        "partial write: points beyond retention policy dropped=3",
        "unable to parse 'm value=': missing field value",
        'max-values-per-tag limit exceeded (5/5): measurement="m" tag="t" value="v"',
    ],
)
def test_other_errors_are_not_refusals(message: str) -> None:
    """Only a partial write refused for a cardinality limit is one."""
    assert parse_refusal(message) is None


# -- our lines read back ------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(events=batches())
def test_lines_read_back_render_the_same_bytes(events: list[Event]) -> None:
    """Random events: the rendered lines are cut where influxd cuts them (descriptions
    may hold newlines), and each read back renders the very same bytes again."""
    data = LineRenderer().render(events).data
    renderer = LineRenderer()
    each = [renderer.render([event]).data for event in events]
    assert split_lines(data) == [line for line in each if line]
    again = LineRenderer().render([to_event(parse_line(line)) for line in split_lines(data)])
    assert again.data == data


def test_tags_moved_to_fields_come_back_as_tags() -> None:
    """A tag the guard wrote as a field is read back as a tag, so the renderer decides
    again; text fields stay fields."""
    renderer = LineRenderer(max_series_per_measurement=1)
    events: list[Event] = [
        {"name": "m", "value": 1, "time": T0, "pid": 1, "description": "up"},
        {"name": "m", "value": 2, "time": T0, "pid": 2, "description": "down"},
    ]
    moved = split_lines(renderer.render(events).data)[1]
    assert b'pid="2"' in moved
    assert to_event(parse_line(moved)) == {
        "name": "m",
        "time": T0,
        "value": 2.0,
        "pid": "2",
        "description": "down",
    }


@pytest.mark.parametrize(
    "line",
    [b"m value=1.0\n", b"m value=abc 1\n", b'm value="x 1\n', b"m 1\n", b"no-fields\n"],
)
def test_lines_not_ours_are_a_value_error(line: bytes) -> None:
    """A line that is not one our renderer writes is a ValueError, never a guess."""
    with pytest.raises(ValueError):
        parse_line(line)


# -- the renderer -----------------------------------------------------------------------


def test_a_server_demotion_applies_to_every_series_of_the_measurement() -> None:
    """Once demoted, the tag is a field in every point of the measurement, in series
    written before too (unlike the per-process guard); other measurements keep it."""
    renderer = LineRenderer()
    before = renderer.render([{"name": "m", "time": T0, "reqid": "a", "host": "h"}])
    assert before.data.startswith(b"m,host=h,reqid=a ")
    assert renderer.demote("m", "reqid") and not renderer.demote("m", "reqid")
    after = renderer.render(
        [
            {"name": "m", "time": T0, "reqid": "a", "host": "h"},
            {"name": "m", "time": T0, "reqid": "b", "host": "h"},
            {"name": "other", "time": T0, "reqid": "a"},
        ]
    )
    assert after.data.decode().splitlines() == [  # the next offsets of the millisecond
        f'm,host=h value=1.0,reqid="a" {T0}000001',
        f'm,host=h value=1.0,reqid="b" {T0}000002',
        f"other,reqid=a value=1.0 {T0}000003",
    ]
    assert after.demoted == 2


def test_a_server_demotion_with_drop_leaves_the_tag_out() -> None:
    """on_cardinality = "drop": a tag a server refused is left out, as the guard does."""
    renderer = LineRenderer(on_cardinality="drop")
    renderer.demote("m", "reqid")
    result = renderer.render([{"name": "m", "time": T0, "reqid": "a", "host": "h"}])
    assert result.data == f"m,host=h value=1.0 {T0}000000\n".encode()
    assert renderer.dropped_tags == 1


# -- the durable list -----------------------------------------------------------------


def _demotion(measurement: str = "m", tag: str = "reqid") -> Demotion:
    return Demotion(measurement, tag, VALUES, "influx:8086", T0)


def test_the_file_keeps_demotions_per_database(tmp_path: Path) -> None:
    """Added demotions are loaded back, those of another database kept but not loaded;
    adding one again adds nothing; no temporary file is left behind."""
    path = tmp_path / "out" / "demotions.json"
    numbat, other = DemotionFile(path, "numbat"), DemotionFile(path, "other")
    both = [_demotion(), _demotion(tag="sid")]
    assert numbat.load() == []
    assert numbat.add(both) == (both, both)
    assert other.add([_demotion()]) == ([_demotion()], [_demotion()])
    assert numbat.add([_demotion()]) == ([], both)
    assert numbat.load() == both
    assert other.load() == [_demotion()]
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "demotions.json",
        "demotions.json.lock",
    ]
    body = json.loads(path.read_text())
    assert body["version"] == 1 and body["demotions"][0] == {
        "database": "numbat",
        "measurement": "m",
        "tag": "reqid",
        "limit": VALUES,
        "server": "influx:8086",
        "since_ms": T0,
    }


@pytest.mark.parametrize(
    "content", [b"{not json", b'{"version": 2, "demotions": []}', b'{"version": 1}', b"[]"]
)
def test_a_file_that_cannot_be_read_is_set_aside(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A damaged file is logged naming it, set aside (.bad) and taken as empty; the next
    demotion starts a good one."""
    path = tmp_path / "demotions.json"
    path.write_bytes(content)
    file = DemotionFile(path, "numbat")
    with caplog.at_level(logging.ERROR):
        assert file.load() == []
    assert str(path) in caplog.text and "cannot read" in caplog.text
    assert (tmp_path / "demotions.json.bad").read_bytes() == content
    assert file.add([_demotion()]) == ([_demotion()], [_demotion()])
    assert file.load() == [_demotion()]


class BrokenFile:
    """A DemotionFile's writes fail with ``code`` while ``broken`` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
        self.broken = True
        self.refused = 0
        real = DemotionFile._write

        def write(file: DemotionFile, entries: list[tuple[str, Demotion]]) -> None:
            if self.broken:
                self.refused += 1
                raise OSError(code, os.strerror(code))
            real(file, entries)

        monkeypatch.setattr(DemotionFile, "_write", write)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_demotion_the_file_refuses_applies_at_once_and_is_written_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    """A demotions file that cannot be written (full disk, I/O error) raises nothing: the
    demotion applies to the renderer at once and is logged once; the next learn and
    retry() try the file again, and once it takes writes both demotions are in it."""
    path = tmp_path / "demotions.json"
    disk = BrokenFile(monkeypatch, code)
    demotions = TagDemotions(DemotionFile(path, "numbat"), LineRenderer(), threading.Lock())
    with caplog.at_level(logging.WARNING):
        assert demotions.learn(VALUES, "influx:8086", [("m", "reqid")]) == 1
        assert demotions.learn(VALUES, "influx:8086", [("m", "sid")]) == 1
        assert demotions.retry() == 0
    assert demotions.renderer.server_demotions == {"m": frozenset({"reqid", "sid"})}
    assert demotions.unsaved and demotions.learned == 2 and disk.refused == 3
    assert not path.exists() and os.strerror(code) in caplog.text
    assert sum("not remembered yet" in r.getMessage() for r in caplog.records) == 2
    caplog.clear()
    disk.broken = False
    with caplog.at_level(logging.WARNING):
        assert demotions.retry() == 0
    assert not demotions.unsaved and caplog.records == []  # not logged twice
    assert [(d.measurement, d.tag) for d in DemotionFile(path, "numbat").load()] == [
        ("m", "reqid"),
        ("m", "sid"),
    ]
    assert demotions.retry() == 0 and disk.refused == 3  # nothing left to write: no I/O


def test_a_demotion_on_a_full_tmpfs_leaves_no_temporary_file(tmp_path: Path) -> None:
    """On a really full disk learn() raises nothing and leaves no half-written temporary
    file; freed, retry() writes the file; a file that cannot be read at load is read
    again by retry()."""
    with tmpfs(tmp_path / "disk", "1m") as disk:
        path = disk / "out" / "demotions.json"
        DemotionFile(path, "numbat").load()  # the directory and lock file, before filling
        filler = fill(disk)
        demotions = TagDemotions(DemotionFile(path, "numbat"), LineRenderer(), threading.Lock())
        assert demotions.learn(VALUES, "influx:8086", [("m", "reqid")]) == 1
        assert sorted(p.name for p in path.parent.iterdir()) == ["demotions.json.lock"]
        assert demotions.unsaved
        filler.unlink()
        demotions.retry()
        assert not demotions.unsaved
        assert [d.tag for d in DemotionFile(path, "numbat").load()] == ["reqid"]


def test_a_demotions_file_that_cannot_be_read_at_start_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load() of a file that raises OSError (EIO) starts with no demotions instead of
    raising; retry() reads it again and applies what it holds."""
    path = tmp_path / "demotions.json"
    DemotionFile(path, "numbat").add([_demotion()])
    real = DemotionFile._read
    failing = [True]

    def read(file: DemotionFile) -> list[tuple[str, Demotion]]:
        if failing[0]:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(file)

    monkeypatch.setattr(DemotionFile, "_read", read)
    demotions = TagDemotions(DemotionFile(path, "numbat"), LineRenderer(), threading.Lock())
    assert demotions.load() == 0 and demotions.unsaved
    failing[0] = False
    assert demotions.retry() == 1
    assert demotions.renderer.server_demotions == {"m": frozenset({"reqid"})}


def test_a_demotion_is_logged_once_across_workers_and_restarts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two workers (one file) learning the same demotion log it once, at WARNING; a
    restarted one loads it without logging; each applies it to its renderer."""
    path = tmp_path / "demotions.json"

    def worker() -> TagDemotions:
        return TagDemotions(DemotionFile(path, "numbat"), LineRenderer(), threading.Lock())

    first, second = worker(), worker()
    with caplog.at_level(logging.WARNING):
        first.learn(VALUES, "influx:8086", [("m", "reqid")])
        first.learn(SERIES, "influx:8086", [("jobs", "job")])
        second.learn(VALUES, "influx:8086", [("m", "reqid")])
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 2
    assert "'reqid'" in caplog.text and "'m'" in caplog.text and str(path) in caplog.text
    assert (first.learned, second.learned) == (2, 0)
    caplog.clear()
    restarted = worker()
    assert restarted.load() == 2 and caplog.records == []
    # The second worker took the demotion the first added meanwhile along.
    for demotions in (first, second, restarted):
        assert demotions.renderer.server_demotions == {
            "m": frozenset({"reqid"}),
            "jobs": frozenset({"job"}),
        }
