"""The on-disk spool: FIFO order, restarts, crash recovery, size bound and fsync policy."""

from __future__ import annotations

import errno
import os
import signal
import struct
import subprocess
import sys
import tempfile
import zlib
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numbat.store import spool as spool_module
from numbat.store.spool import Record, RecordId, Spool, SpoolError
from tests.helpers import fill, tmpfs

HEADER = 20  # magic, length, points, crc32 of the payload, crc32 of the header
LEGACY_HEADER = 16  # the first format: magic, length, points, crc32


class FakeClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def encode(payload: bytes, points: int) -> bytes:
    """A record exactly as the spool lays it out on disk."""
    head = b"NBS\x02" + struct.pack(">III", len(payload), points, zlib.crc32(payload))
    return head + struct.pack(">I", zlib.crc32(head)) + payload


def encode_legacy(payload: bytes, points: int) -> bytes:
    """A record as the first format laid it out (numbat before the header checksum)."""
    crc = zlib.crc32(payload, zlib.crc32(struct.pack(">II", len(payload), points)))
    return b"NBS\x01" + struct.pack(">III", len(payload), points, crc) + payload


def line(i: int, size: int = 20) -> bytes:
    """A distinct payload of ``size`` bytes that says which batch it is."""
    return f"{i:>{size - 1}}\n".encode()


def drain(spool: Spool, limit: int | None = None) -> list[Record]:
    """Peek and ack until the spool is empty (or ``limit`` records); them, in order."""
    out: list[Record] = []
    while len(out) != limit and (record := spool.peek()) is not None:
        spool.ack(record.id)
        out.append(record)
    return out


def payloads(records: list[Record]) -> list[bytes]:
    return [record.payload for record in records]


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def flip_byte(path: Path, offset: int) -> None:
    """Invert one byte of a file in place, as bit rot would."""
    with path.open("r+b") as file:
        file.seek(offset)
        byte = file.read(1)[0]
        file.seek(offset)
        file.write(bytes([byte ^ 0xFF]))


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool(tmp_path / "spool", segment_bytes=1024) as spool:
        yield spool


def test_empty_spool_peeks_none(spool: Spool) -> None:
    """A new spool has nothing pending and peek returns None."""
    assert spool.peek() is None
    assert (len(spool), spool.pending_points, spool.pending_bytes) == (0, 0, 0)


def test_record_layout_on_disk(tmp_path: Path) -> None:
    """A segment is records of header (magic, length, points, payload crc32, header crc32)
    then payload."""
    with Spool(tmp_path) as spool:
        spool.append(b"cpu value=1 1\n", 1)
        spool.append(b"", 0)
    [segment] = segments(tmp_path)
    assert segment.name == "00000000000000000001.seg"
    assert segment.read_bytes() == encode(b"cpu value=1 1\n", 1) + encode(b"", 0)


def test_cursor_layout_on_disk(tmp_path: Path) -> None:
    """The cursor is magic, segment, offset of the next record to read, and their crc32."""
    with Spool(tmp_path) as spool:
        spool.append(b"abc", 1)
        spool.append(b"def", 1)
        head = spool.peek()
        assert head == (RecordId(1, 0), b"abc", 1)
        spool.ack(head.id)
    body = b"NBC\x01" + struct.pack(">QQ", 1, HEADER + 3)
    assert (tmp_path / "cursor").read_bytes() == body + struct.pack(">I", zlib.crc32(body))


def test_fifo_order_across_segments(spool: Spool) -> None:
    """Records come out in append order, interleaved appends included, over many segments."""
    for i in range(60):
        spool.append(line(i), i)
    first = [spool.peek() for _ in range(2)]
    assert first[0] == first[1], "peek does not consume"
    out = drain(spool, 30)
    for i in range(60, 90):
        spool.append(line(i), i)
    out += drain(spool)
    assert payloads(out) == [line(i) for i in range(90)]
    assert [record.points for record in out] == list(range(90))
    assert len(segments(spool.directory)) == 1, "fully acked segments are deleted"


def test_counts_follow_appends_and_acks(spool: Spool) -> None:
    """len, pending_points and pending_bytes count the unacknowledged records only."""
    spool.append(b"abc", 3)
    spool.append(b"defgh", 5)
    assert (len(spool), spool.pending_points, spool.pending_bytes) == (2, 8, 8)
    head = spool.peek()
    assert head is not None
    spool.ack(head.id)
    assert (len(spool), spool.pending_points, spool.pending_bytes) == (1, 5, 5)
    assert spool.disk_bytes == 2 * HEADER + 8


def test_pending_records_survive_reopen(tmp_path: Path) -> None:
    """Records still pending at close come back, in order and with the same ids."""
    with Spool(tmp_path, segment_bytes=100) as spool:
        for i in range(10):
            spool.append(line(i), 2)
        before = spool.peek()
    with Spool(tmp_path, segment_bytes=100) as spool:
        assert spool.peek() == before
        assert (len(spool), spool.pending_points) == (10, 20)
        spool.append(line(10), 2)
        assert payloads(drain(spool)) == [line(i) for i in range(11)]


def test_acked_records_are_not_replayed_after_reopen(tmp_path: Path) -> None:
    """The cursor file keeps the read position: acked records stay acked across restarts."""
    with Spool(tmp_path, segment_bytes=100) as spool:
        for i in range(10):
            spool.append(line(i), 1)
        assert len(drain(spool, 7)) == 7
    with Spool(tmp_path, segment_bytes=100) as spool:
        assert len(spool) == 3
        assert payloads(drain(spool)) == [line(7), line(8), line(9)]


def test_fully_acked_spool_reopens_empty_and_keeps_counting_up(tmp_path: Path) -> None:
    """After everything is acked, later appends are never mistaken for acked ones."""
    with Spool(tmp_path) as spool:
        spool.append(b"one", 1)
        drain(spool)
    for word in (b"two", b"three"):
        with Spool(tmp_path) as spool:
            assert spool.peek() is None
            assert segments(tmp_path) == [], "the fully acked segment is deleted on open"
            spool.append(word, 1)
        with Spool(tmp_path) as spool:
            assert payloads(drain(spool)) == [word]


def test_unreadable_cursor_replays_from_the_oldest_record(tmp_path: Path) -> None:
    """A damaged cursor costs duplicates, never loss: reading restarts at the oldest record."""
    with Spool(tmp_path) as spool:
        for i in range(3):
            spool.append(line(i), 1)
        drain(spool)
        spool.append(line(3), 1)
    (tmp_path / "cursor").write_bytes(b"garbage")
    with Spool(tmp_path) as spool:
        assert payloads(drain(spool)) == [line(i) for i in range(4)]


def test_ack_must_name_the_oldest_record_and_repeats_are_harmless(spool: Spool) -> None:
    """Acking a later record raises; acking one already gone does nothing."""
    spool.append(b"a", 1)
    spool.append(b"b", 1)
    first = spool.peek()
    assert first is not None
    with pytest.raises(ValueError, match="not the oldest"):
        spool.ack(RecordId(first.id.segment, first.id.offset + HEADER + 1))
    spool.ack(first.id)
    spool.ack(first.id)
    assert payloads(drain(spool)) == [b"b"]
    with pytest.raises(ValueError, match="not the oldest"):
        spool.ack(RecordId(first.id.segment + 5, 0))


def lines_in(payload: bytes) -> int:
    """Points in a payload of line protocol: its lines (what the InfluxDB output passes)."""
    return payload.count(b"\n")


def write_records(directory: Path, count: int, record_bytes: int, **options: Any) -> int:
    """``count`` records of ``line(i)`` (``10 + i`` points) in segments of ``record_bytes``
    records each; the size of one record."""
    record = HEADER + 20
    with Spool(directory, segment_bytes=record_bytes * record, **options) as spool:
        for i in range(count):
            spool.append(line(i), 10 + i)
    return record


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(b"NBS", id="partial-header"),
        pytest.param(encode(line(99), 1)[: HEADER + 7], id="half-a-record"),
        pytest.param(encode(line(99), 1)[:HEADER], id="header-only"),
        pytest.param(encode_legacy(line(99), 1)[:-1] + b"!", id="legacy-bad-crc"),
        pytest.param(b"\0" * 4096, id="zeros"),
    ],
)
def test_torn_tail_is_truncated_and_earlier_records_kept(tmp_path: Path, tail: bytes) -> None:
    """After a crash mid-append the invalid tail is cut off; every earlier record survives."""
    with Spool(tmp_path) as spool:
        for i in range(3):
            spool.append(line(i), 1)
    [segment] = segments(tmp_path)
    size = segment.stat().st_size
    with segment.open("ab") as file:
        file.write(tail)
    with Spool(tmp_path) as spool:
        assert spool.truncated_bytes == len(tail)
        assert spool.corrupt_records == 0, "a torn tail is an unfinished append, not damage"
        assert segment.stat().st_size == size
        spool.append(line(3), 1)
    with Spool(tmp_path) as spool:
        assert spool.truncated_bytes == 0
        assert payloads(drain(spool)) == [line(i) for i in range(4)]


@pytest.mark.parametrize(
    ("tail", "cut"),
    [
        pytest.param(bytes(range(256)) * 3, True, id="garbage"),
        pytest.param(encode(line(99), 7)[:-1] + b"!", False, id="bad-payload-crc"),
    ],
)
def test_a_damaged_tail_is_counted_not_taken_for_a_torn_append(
    tmp_path: Path, tail: bytes, cut: bool
) -> None:
    """Bytes after the last record that no torn append leaves (garbage, or a whole record
    whose payload fails its checksum) are damage: skipped, counted, earlier records kept."""
    with Spool(tmp_path) as spool:
        for i in range(3):
            spool.append(line(i), 1)
    [segment] = segments(tmp_path)
    with segment.open("ab") as file:
        file.write(tail)
    with Spool(tmp_path, count_points=lines_in) as spool:
        assert spool.corrupt_records == 1
        assert spool.truncated_bytes == (len(tail) if cut else 0)
        assert payloads(drain(spool)) == [line(i) for i in range(3)]
        # Garbage: one newline per 256 bytes, the first within a header's worth (not counted).
        assert spool.corrupt_points == (2 if cut else 7)


def test_crc_mismatch_in_last_segment_skips_only_that_record(tmp_path: Path) -> None:
    """One flipped byte in the newest segment loses the record it is in, not the records
    after it (issue 8: it used to cut the segment there, and count nothing)."""
    record = write_records(tmp_path, 5, 10)
    [segment] = segments(tmp_path)
    flip_byte(segment, record + HEADER + 5)  # inside record 1's payload
    with Spool(tmp_path) as spool:
        assert payloads(drain(spool)) == [line(i) for i in (0, 2, 3, 4)]
        assert (spool.corrupt_records, spool.corrupt_points, spool.truncated_bytes) == (1, 11, 0)
        assert spool.dropped_points == 0, "a damaged record is no drop for space"


@pytest.mark.parametrize(
    "field", [0, 5, 9, 13, 17], ids=["magic", "length", "points", "crc", "check"]
)
@pytest.mark.parametrize("newest", [True, False], ids=["newest", "sealed"])
def test_damaged_header_loses_only_its_record(tmp_path: Path, field: int, newest: bool) -> None:
    """A flipped byte in any header field (a wrong length too) loses that record alone: the
    header checksum catches it and reading resumes at the next sound header."""
    record = write_records(tmp_path, 6, 3)
    damaged = segments(tmp_path)[1 if newest else 0]
    flip_byte(damaged, record + field)  # the second record's header in that segment
    lost = 4 if newest else 1
    with Spool(tmp_path, segment_bytes=3 * record, count_points=lines_in) as spool:
        assert (spool.corrupt_records, spool.corrupt_points) == (1, 1), "estimated: 1 line"
        assert payloads(drain(spool)) == [line(i) for i in range(6) if i != lost]
        assert spool.truncated_bytes == 0


def test_damage_already_acknowledged_is_not_counted(tmp_path: Path) -> None:
    """A record damaged after it was sent and acked costs nothing and counts nothing."""
    record = write_records(tmp_path, 4, 10)
    with Spool(tmp_path) as spool:
        assert len(drain(spool, 2)) == 2
    [segment] = segments(tmp_path)
    flip_byte(segment, record + HEADER + 5)  # record 1: acked
    with Spool(tmp_path) as spool:
        assert spool.corrupt_records == 0
        assert payloads(drain(spool)) == [line(2), line(3)]


def test_crc_mismatch_in_sealed_segment_skips_that_record(tmp_path: Path) -> None:
    """A damaged payload in an older segment is detected on read, skipped and counted."""
    record = write_records(tmp_path, 5, 2)
    assert len(segments(tmp_path)) == 3
    flip_byte(segments(tmp_path)[0], HEADER + 3)  # record 0's payload
    with Spool(tmp_path, segment_bytes=2 * record) as spool:
        assert spool.corrupt_records == 0, "not read yet"
        assert payloads(drain(spool)) == [line(i) for i in range(1, 5)]
        assert (spool.corrupt_records, spool.corrupt_points) == (1, 10)


def test_crc_mismatch_while_open_is_detected_on_read(spool: Spool) -> None:
    """A record damaged on disk after it was written is skipped, not returned."""
    for i in range(3):
        spool.append(line(i), 1)
    [segment] = segments(spool.directory)
    flip_byte(segment, HEADER + 20 + HEADER + 5)
    assert payloads(drain(spool)) == [line(0), line(2)]
    assert (spool.corrupt_records, spool.corrupt_points) == (1, 1)


def test_header_damaged_while_open_loses_only_its_record(spool: Spool) -> None:
    """A header damaged after open (its length unusable) is skipped to the next sound
    record; what it held is counted from what the spool had counted as pending."""
    for i in range(4):
        spool.append(line(i), 10 + i)
    [segment] = segments(spool.directory)
    flip_byte(segment, HEADER + 20 + 6)  # record 1's length
    assert payloads(drain(spool)) == [line(0), line(2), line(3)]
    assert (spool.corrupt_records, spool.corrupt_points) == (1, 11)
    assert (len(spool), spool.pending_points, spool.pending_bytes) == (0, 0, 0)


def test_damage_to_the_end_of_a_segment_while_open_loses_its_rest(spool: Spool) -> None:
    """A damaged header with no sound record after it in its segment: the rest of that
    segment is skipped and counted, later segments are read."""
    for i in range(60):
        spool.append(line(i), 1)
    first = segments(spool.directory)[0]
    per_segment = first.stat().st_size // (HEADER + 20)
    for i in range(1, per_segment):
        flip_byte(first, i * (HEADER + 20))  # every magic but the first
    out = payloads(drain(spool))
    assert out == [line(0)] + [line(i) for i in range(per_segment, 60)]
    assert (spool.corrupt_records, spool.corrupt_points) == (per_segment - 1, per_segment - 1)


def test_several_damaged_records_are_each_skipped_and_counted(tmp_path: Path) -> None:
    """Damage in four places of one segment costs exactly those four records; two damaged
    headers side by side make one damaged stretch (their points are estimated together)."""
    record = write_records(tmp_path, 20, 100)
    [segment] = segments(tmp_path)
    for i, where in ((3, 2), (4, 7), (11, HEADER + 4), (15, 9)):
        flip_byte(segment, i * record + where)
    with Spool(tmp_path, count_points=lines_in) as spool:
        # Records 3 and 4 (one line each), 11 (21 points in its sound header), 15 (a line).
        assert (spool.corrupt_records, spool.corrupt_points) == (3, 2 + 21 + 1)
        lost = (3, 4, 11, 15)
        assert payloads(drain(spool)) == [line(i) for i in range(20) if i not in lost]


def test_a_legacy_spool_is_read_and_drained(tmp_path: Path) -> None:
    """Segments of the first format (16-byte header, one crc) written by an older numbat
    are read in order after the upgrade; new appends use the new format after them."""
    old = b"".join(encode_legacy(line(i), 1) for i in range(3))
    (tmp_path / "00000000000000000001.seg").write_bytes(old)
    (tmp_path / "00000000000000000002.seg").write_bytes(encode_legacy(line(3), 1))
    body = b"NBC\x01" + struct.pack(">QQ", 1, LEGACY_HEADER + 20)  # record 0 acked
    (tmp_path / "cursor").write_bytes(body + struct.pack(">I", zlib.crc32(body)))
    with Spool(tmp_path) as spool:
        assert (len(spool), spool.truncated_bytes, spool.corrupt_records) == (3, 0, 0)
        spool.append(line(4), 1)
        assert payloads(drain(spool, 1)) == [line(1)]
    assert segments(tmp_path)[-1].read_bytes() == encode(line(4), 1)
    with Spool(tmp_path) as spool:
        assert payloads(drain(spool)) == [line(i) for i in range(2, 5)]


def test_a_damaged_legacy_record_is_skipped_alone(tmp_path: Path) -> None:
    """In a legacy segment, a record that fails its crc is skipped and the next record
    found by its magic and crc."""
    records = [encode_legacy(line(i), 1) for i in range(4)]
    (tmp_path / "00000000000000000001.seg").write_bytes(b"".join(records))
    (tmp_path / "00000000000000000002.seg").write_bytes(b"".join(records))
    for seq in (1, 2):
        flip_byte(tmp_path / f"{seq:020d}.seg", len(records[0]) + 6)  # record 1's length
    with Spool(tmp_path, count_points=lines_in) as spool:
        assert (spool.corrupt_records, spool.corrupt_points) == (2, 2)
        expected = [line(i) for i in (0, 2, 3)]
        assert payloads(drain(spool)) == expected + expected


DAMAGE = st.tuples(st.integers(2, 40), st.integers(1, 5), st.data())


@settings(max_examples=150, deadline=None)
@given(DAMAGE)
def test_one_flipped_byte_anywhere_costs_exactly_its_record(case: tuple[int, int, Any]) -> None:
    """Whatever byte of whichever record is flipped, every other record comes out in order
    and the damaged one is counted once, with its points."""
    count, per_segment, data = case
    sizes = data.draw(st.lists(st.integers(0, 60), min_size=count, max_size=count))
    payload = [b"%d:" % i + b"x\n" * size for i, size in enumerate(sizes)]
    victim = data.draw(st.integers(0, count - 1))
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        options: dict[str, Any] = {"segment_bytes": per_segment * 160, "count_points": lines_in}
        with Spool(directory, **options) as spool:
            where: list[tuple[Path, int]] = []
            for body in payload:
                spool.append(body, lines_in(body))
                path = segments(directory)[-1]
                where.append((path, path.stat().st_size - HEADER - len(body)))
        path, offset = where[victim]
        flip_byte(path, offset + data.draw(st.integers(0, HEADER + len(payload[victim]) - 1)))
        with Spool(directory, **options) as spool:
            out = payloads(drain(spool))
            counted = (spool.corrupt_records, spool.corrupt_points, spool.dropped_points)
    assert out == payload[:victim] + payload[victim + 1 :]
    assert counted == (1, lines_in(payload[victim]), 0)


def test_max_bytes_drops_oldest_segments_and_counts_points(tmp_path: Path) -> None:
    """Over max_bytes, whole oldest segments go; only their unacked points are counted."""
    record = HEADER + 100
    with Spool(tmp_path, segment_bytes=4 * record, max_bytes=10 * record) as spool:
        for i in range(1, 11):
            spool.append(line(i, 100), i)
        head = spool.peek()
        assert head is not None
        spool.ack(head.id)  # record 1: acked, so not counted when its segment goes
        assert spool.dropped_points == 0
        spool.append(line(11, 100), 11)
        assert spool.dropped_points == 2 + 3 + 4
        assert spool.disk_bytes <= spool.max_bytes
        assert payloads(drain(spool)) == [line(i, 100) for i in range(5, 12)]


def test_max_bytes_can_drop_the_segment_being_written(tmp_path: Path) -> None:
    """With one big segment, the bound drops it whole and appending carries on in a new one."""
    record = HEADER + 100
    with Spool(tmp_path, max_bytes=3 * record) as spool:
        for i in range(4):
            spool.append(line(i, 100), 5)
        assert (spool.dropped_points, len(spool)) == (15, 1)
        assert payloads(drain(spool)) == [line(3, 100)]


def test_empty_segment_in_the_middle_is_skipped(tmp_path: Path) -> None:
    """An empty segment (a crash right after creating it) does not hide the ones after it."""
    record = HEADER + 20
    (tmp_path / "00000000000000000001.seg").write_bytes(encode(line(0), 1))
    (tmp_path / "00000000000000000002.seg").touch()
    (tmp_path / "00000000000000000003.seg").write_bytes(encode(line(1), 1))
    with Spool(tmp_path, segment_bytes=2 * record, max_bytes=3 * record) as spool:
        spool.append(line(2), 1)
        spool.append(line(3), 1)  # over max_bytes: drops the first segment
        assert spool.dropped_points == 1
        assert payloads(drain(spool)) == [line(1), line(2), line(3)]


def test_batch_bigger_than_max_bytes_is_dropped_and_counted(tmp_path: Path) -> None:
    """A batch that could never fit is counted as dropped; the rest of the spool is kept."""
    with Spool(tmp_path, max_bytes=1000) as spool:
        spool.append(b"small", 1)
        spool.append(b"x" * 1000, 7)
        assert spool.dropped_points == 7
        assert payloads(drain(spool)) == [b"small"]


def test_payload_bigger_than_segment_bytes_gets_its_own_segment(tmp_path: Path) -> None:
    """An oversized batch is written whole into a segment of its own, in order."""
    big = b"x" * 5000
    with Spool(tmp_path, segment_bytes=64) as spool:
        spool.append(line(0), 1)
        spool.append(big, 100)
        spool.append(line(1), 1)
        sizes = [path.stat().st_size for path in segments(tmp_path)]
        assert sizes == [HEADER + 20, HEADER + len(big), HEADER + 20]
    with Spool(tmp_path, segment_bytes=64) as spool:
        assert payloads(drain(spool)) == [line(0), big, line(1)]


def test_many_small_records(tmp_path: Path) -> None:
    """Ten thousand small records keep their order and counts across a reopen."""
    count, acked = 10_000, 3_500
    with Spool(tmp_path, segment_bytes=16 * 1024, fsync_interval=3600) as spool:
        for i in range(count):
            spool.append(b"%d" % i, 2)
        assert payloads(drain(spool, acked)) == [b"%d" % i for i in range(acked)]
        assert len(segments(tmp_path)) > 3
    with Spool(tmp_path, segment_bytes=16 * 1024, fsync_interval=3600) as spool:
        assert (len(spool), spool.pending_points) == (count - acked, 2 * (count - acked))
        assert payloads(drain(spool)) == [b"%d" % i for i in range(acked, count)]
        assert segments(tmp_path) == [], "the last segment was sealed on open, then acked"


def test_fsync_interval_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Appends fsync at most once per interval, a quiet spool syncs on its next call."""
    clock = FakeClock()
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    spool = Spool(tmp_path, fsync_interval=1.0, clock=clock)
    spool.append(b"a", 1)  # creates the segment (and fsyncs the directory)

    def fsyncs_after(now: float, action: str = "append") -> int:
        clock.now, before = now, len(synced)
        if action == "append":
            spool.append(b"b", 1)
        else:
            spool.sync_if_due()
        return len(synced) - before

    assert [fsyncs_after(t) for t in (0.5, 0.999, 1.0, 1.5, 1.99, 2.0)] == [0, 0, 1, 0, 0, 1]
    assert fsyncs_after(2.5) == 0
    assert fsyncs_after(3.0, "tick") == 1, "the append at 2.5 is synced by a later call"
    assert fsyncs_after(9.0, "tick") == 0, "nothing dirty, nothing to sync"
    assert fsyncs_after(9.5) == 1, "the first append after a lull syncs at once"
    assert fsyncs_after(9.6) == 0
    before = len(synced)
    spool.close()
    assert len(synced) > before, "close syncs what is pending"


def test_fsync_interval_zero_syncs_every_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsync_interval=0 makes each append durable before it returns."""
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    with Spool(tmp_path, fsync_interval=0, clock=FakeClock()) as spool:
        spool.append(b"first", 1)
        before = len(synced)
        for _ in range(5):
            spool.append(b"more", 1)
        assert len(synced) - before == 5


def test_cursor_is_fsynced_on_the_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Acks rewrite the cursor every time but fsync it at most once per interval."""
    clock = FakeClock()
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    with Spool(tmp_path, fsync_interval=1.0, clock=clock) as spool:
        for i in range(4):
            spool.append(line(i), 1)
        before = len(synced)
        for _ in range(3):
            head = spool.peek()
            assert head is not None
            spool.ack(head.id)
        assert len(synced) == before
        clock.now = 1.0
        spool.sync_if_due()
        assert len(synced) - before == 3, "segment, cursor and directory"


def test_segments_are_fsynced_when_sealed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A segment is made durable before appends move on to the next, on rotation and on open.

    That is what keeps power loss to the tail: never a hole before records that survived.
    """
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.fstat(fd).st_ino))
    clock = FakeClock()
    with Spool(tmp_path, segment_bytes=HEADER + 20, fsync_interval=3600, clock=clock) as spool:
        spool.append(line(0), 1)
        spool.append(line(1), 1)  # rotates
        first, second = segments(tmp_path)
        assert first.stat().st_ino in synced
        assert second.stat().st_ino not in synced
        synced.clear()
        spool.close()
        assert second.stat().st_ino in synced, "close syncs the open segment"
    synced.clear()
    Spool(tmp_path, fsync_interval=3600, clock=clock).close()
    assert second.stat().st_ino in synced, "the last segment of a crashed run is sealed"


def test_failed_append_leaves_no_partial_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails halfway (disk full) is rolled back, so later records stay readable."""
    real_pwrite = os.pwrite

    def disk_full(fd: int, data: bytes, offset: int) -> int:
        real_pwrite(fd, bytes(data[:-1]), offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    with Spool(tmp_path) as spool:
        spool.append(line(0), 1)
        monkeypatch.setattr(os, "pwrite", disk_full)
        with pytest.raises(OSError, match="No space"):
            spool.append(line(1, 100), 1)
        monkeypatch.undo()
        spool.append(b"short", 1)
    with Spool(tmp_path) as spool:
        assert spool.truncated_bytes == 0, "no stale bytes after the last record"
        assert payloads(drain(spool)) == [line(0), b"short"]


def test_a_full_disk_refuses_appends_and_takes_them_again_once_freed(tmp_path: Path) -> None:
    """On a full tmpfs an append raises ENOSPC and leaves nothing; acks still work (the
    cursor is written once there is room); freed, the spool takes appends again and a
    reopen finds exactly the records that were taken."""
    big = b"x" * 9000  # more than the free part of any page the segment already has
    with tmpfs(tmp_path / "disk", "1m") as disk:
        with Spool(disk / "spool", fsync_interval=0) as spool:
            for i in range(3):
                spool.append(line(i), 1)
            filler = fill(disk)
            with pytest.raises(OSError) as refused:
                spool.append(big, 7)
            assert refused.value.errno == errno.ENOSPC
            assert (len(spool), spool.pending_points) == (3, 3)
            assert payloads(drain(spool, 1)) == [line(0)], "an ack needs no room"
            filler.unlink()
            spool.append(big, 7)
            spool.sync()  # writes the cursor the full disk refused
        with Spool(disk / "spool") as spool:
            assert (spool.truncated_bytes, spool.corrupt_records) == (0, 0)
            assert payloads(drain(spool)) == [line(1), line(2), big]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EIO])
def test_an_ack_survives_a_cursor_that_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    """ack never raises for the disk: the position moves on in memory, the failure is
    logged, and the next sync writes the cursor (no replay after a reopen)."""
    real = spool_module._pwrite_all

    def refuse(fd: int, data: bytes, offset: int) -> None:
        raise OSError(code, os.strerror(code))

    with Spool(tmp_path) as spool:
        for i in range(3):
            spool.append(line(i), 1)
        monkeypatch.setattr(spool_module, "_pwrite_all", refuse)
        assert payloads(drain(spool, 2)) == [line(0), line(1)]
        assert "cannot write the cursor" in caplog.text
        monkeypatch.setattr(spool_module, "_pwrite_all", real)
        spool.sync()
    with Spool(tmp_path) as spool:
        assert payloads(drain(spool)) == [line(2)]


def test_a_failed_fsync_does_not_undo_an_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An fsync that fails (EIO) after a good append is logged, not raised: the record is
    in the spool and an owner must not keep a second copy of it."""

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with Spool(tmp_path, fsync_interval=0) as spool:
        spool.append(line(0), 1)
        monkeypatch.setattr(os, "fsync", broken)
        spool.append(line(1), 1)
        assert payloads(drain(spool)) == [line(0), line(1)]
        assert "fsync failed" in caplog.text
        monkeypatch.undo()


def test_directory_is_locked_while_open(tmp_path: Path) -> None:
    """A second Spool on the same directory is refused until the first is closed."""
    first = Spool(tmp_path)
    with pytest.raises(SpoolError, match="open elsewhere"):
        Spool(tmp_path)
    first.close()
    first.close()
    with pytest.raises(ValueError, match="closed"):
        first.append(b"late", 1)
    Spool(tmp_path).close()


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    """Sizes must be positive and the fsync interval not negative."""
    with pytest.raises(ValueError, match="must be"):
        Spool(tmp_path, max_bytes=0)
    with pytest.raises(ValueError, match="must be"):
        Spool(tmp_path, segment_bytes=-1)
    with pytest.raises(ValueError, match="must be"):
        Spool(tmp_path, fsync_interval=-0.1)


CHILD = """
import sys
from pathlib import Path
from numbat.store.spool import Spool

spool = Spool(Path(sys.argv[1]), segment_bytes=2048, fsync_interval=float(sys.argv[2]))
appends, stop = 0, int(sys.argv[3])
while True:
    spool.append(b"%d" % appends, 1)
    print("append", appends, flush=True)
    appends += 1
    if appends % 2:
        head = spool.peek()
        spool.ack(head.id)
        print("ack", int(head.payload), flush=True)
    if appends == stop:
        print("ready", flush=True)
        sys.stdin.read()  # park until killed
"""


def start_child(directory: Path, fsync_interval: float, stop: int) -> subprocess.Popen[bytes]:
    """Run CHILD on ``directory``; it reports each append and ack on its stdout."""
    args = [sys.executable, "-c", CHILD, str(directory), str(fsync_interval), str(stop)]
    return subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=directory.parent
    )


def kill(child: subprocess.Popen[bytes]) -> list[bytes]:
    """SIGKILL the child; the complete lines it printed that were not read yet."""
    assert child.stdout is not None and child.stdin is not None
    child.send_signal(signal.SIGKILL)
    rest = child.stdout.read()
    child.wait()
    child.stdin.close()
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    return rest.splitlines(keepends=True)


def test_sigkill_right_after_append_loses_nothing(tmp_path: Path) -> None:
    """kill -9 of a process parked right after its appends loses no record and replays no ack."""
    directory = tmp_path / "spool"
    child = start_child(directory, 0.0, stop=300)
    assert child.stdout is not None
    while (reported := child.stdout.readline()) != b"ready\n":
        assert reported, "the child died on its own"
    assert kill(child) == []
    with Spool(directory) as spool:
        assert spool.truncated_bytes == 0
        assert payloads(drain(spool)) == [b"%d" % i for i in range(150, 300)]


@pytest.mark.parametrize("fsync_interval", [0.0, 3600.0])
def test_sigkill_mid_stream_loses_nothing_returned(tmp_path: Path, fsync_interval: float) -> None:
    """Killed at any moment, what append returned for survives, whatever the fsync interval."""
    directory = tmp_path / "spool"
    child = start_child(directory, fsync_interval, stop=0)
    assert child.stdout is not None
    seen = [child.stdout.readline() for _ in range(600)]
    seen += kill(child)
    done = [reported.split() for reported in seen if reported.endswith(b"\n")]
    appended = max(int(n) for kind, n in done if kind == b"append")
    acked = max(int(n) for kind, n in done if kind == b"ack")
    with Spool(directory) as spool:
        out = [int(payload) for payload in payloads(drain(spool))]
    # The append and the ack under way when the kill came may have landed too.
    assert out == list(range(out[0], out[-1] + 1)), "contiguous: no gap, no duplicate"
    assert out[0] in (acked + 1, acked + 2)
    assert out[-1] in (appended, appended + 1)


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 300), st.integers(0, 9)),
        st.tuples(st.sampled_from(["ack", "reopen"]), st.just(0), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=75, deadline=None)
@given(OPS)
def test_spool_behaves_like_a_queue(ops: list[tuple[str, int, int]]) -> None:
    """Any mix of appends, acks and reopens matches an in-memory deque."""
    model: deque[tuple[bytes, int]] = deque()
    with tempfile.TemporaryDirectory() as tmp:
        spool = Spool(Path(tmp), segment_bytes=256, fsync_interval=3600)
        try:
            for n, (op, size, points) in enumerate(ops):
                if op == "append":
                    model.append((b"%d:" % n + b"x" * size, points))
                    spool.append(*model[-1])
                elif op == "ack" and (head := spool.peek()) is not None:
                    spool.ack(head.id)
                    assert (head.payload, head.points) == model.popleft()
                elif op == "reopen":
                    spool.close()
                    spool = Spool(Path(tmp), segment_bytes=256, fsync_interval=3600)
                assert len(spool) == len(model)
                assert spool.pending_points == sum(points for _, points in model)
                assert spool.pending_bytes == sum(len(payload) for payload, _ in model)
        finally:
            spool.close()
