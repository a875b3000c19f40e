"""A durable, bounded, on-disk FIFO of batches for one destination host.

The InfluxDB output parks batches here while their host is down and replays them in order
when it is back. The spool survives a restart of the collector.

Layout of a spool directory (one per host)::

    00000000000000000001.seg   segments: append-only files of records, named by a
    00000000000000000002.seg   sequence number that only ever grows
    cursor                     where reading resumes: the next unacknowledged record
    lock                       flock(2)ed while a Spool has the directory open

A record is a 20-byte header then the payload. The header is five big-endian fields:
``magic`` (``b"NBS\\x02"``, the last byte is the format version), payload ``length``
(u32), ``points`` (u32), the ``crc32`` of the payload and the ``crc32`` of the 16 header
bytes before it. The header's own checksum is what lets a damaged record be skipped
alone: a sound header gives the record's exact extent, and after a damaged header the
next record is found by searching for the next ``b"NBS"`` that starts a sound header.
Records of the first format (``b"NBS\\x01"``: a 16-byte header of magic, length, points
and one crc32 over the packed length, points and payload) are still read, so a spool
written by an older numbat is drained as it is; appends always use the current format.
The cursor file is 24 bytes: ``b"NBC\\x01"``, segment (u64), offset (u64) and the crc32
of those 20 bytes; it is replaced atomically (write a temporary file, rename).

What a crash can lose:

* ``kill -9`` of the collector: nothing that :meth:`Spool.append` returned for, whatever
  ``fsync_interval`` is, because every append is a ``pwrite(2)`` into the kernel before
  it returns. An append cut short leaves a torn record, which the next open truncates
  (its caller never saw it succeed). At most the one record whose :meth:`Spool.ack` was
  under way is sent again.
* Power loss or an OS crash: the records appended since the last fsync of the current
  segment. That fsync happens in the first append, ack, peek or :meth:`Spool.sync_if_due`
  call made ``fsync_interval`` seconds or more after the previous fsync, so an owner that
  calls ``sync_if_due`` every ``fsync_interval`` loses at most about two intervals
  (``fsync_interval=0``: nothing that ``append`` returned for). Full segments are fsynced
  before the next one starts, so loss is only ever at the tail, never a hole. Records
  acknowledged since the cursor's last fsync may be sent again (duplicates, not loss:
  InfluxDB overwrites a point with the same series and time). This assumes storage that
  honours fsync.

Damage (bit rot, a bad sector, a stray write): a record whose checksum fails is skipped
and counted (``corrupt_records``, ``corrupt_points``) and logged with its segment and
offset; every record before and after it is kept. On open the newest segment is read
whole (payloads checked) and the others' headers are checked; a damaged payload in an
older segment is found when it is read. An invalid tail of the newest segment with no
sound record after it is an append a crash cut short: it is cut off and not counted as
damage (``truncated_bytes``).

A full or failing disk: :meth:`Spool.append` raises the ``OSError`` (ENOSPC, EDQUOT,
EIO, ...) and leaves no partial record, so the owner can keep the batch elsewhere and
append again later. An acknowledgement never raises for the disk: the read position
moves on in memory and the cursor file is rewritten by the next ack or sync (until then
a restart sends those records again). A failed fsync after a successful append is
logged, not raised: the record is in the spool, only its durability is in doubt.

Size: appends go to the newest segment until the next record would take it past
``segment_bytes`` (a bigger record gets a segment of its own). When the segment files
would exceed ``max_bytes``, whole oldest segments are deleted and their unacknowledged
points added to ``Spool.dropped_points``: a bounded disk beats a full one. Fully
acknowledged segments are deleted as reading leaves them. The counters are per open, not
persisted.

POSIX only: it uses ``pread``/``pwrite``, ``flock`` and fsync of directories.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Self

from numbat._ratelimit import RateLimitedLog
from numbat.errors import NumbatError

__all__ = ["Record", "RecordId", "Spool", "SpoolError"]

log = logging.getLogger(__name__)

MiB = 1024 * 1024
GiB = 1024 * MiB
RECORD_MAGIC = b"NBS\x02"
LEGACY_MAGIC = b"NBS\x01"  # the first format: read, never written
CURSOR_MAGIC = b"NBC\x01"
_SYNC = b"NBS"  # every record starts with it: what the search after damage looks for
_HEADER = struct.Struct(">4sIIII")  # magic, length, points, crc32 of payload, of the 16 before
_LEGACY = struct.Struct(">4sIII")  # magic, payload length, points, crc32
_COUNTS = struct.Struct(">II")  # the part of a legacy header its crc covers
_CURSOR = struct.Struct(">4sQQI")  # magic, segment, offset, crc32 of the rest
_U32_MAX = 2**32 - 1
_SEGMENT_SUFFIX = ".seg"
_WINDOW = 64 * 1024  # bytes read at a time by a scan: many small records per pread
_CHUNK = MiB  # bytes searched at a time for the next record after damage


class SpoolError(NumbatError):
    """The spool directory cannot be used (another Spool holds it)."""


class RecordId(NamedTuple):
    """Where a record starts: its segment's sequence number and byte offset (ordered)."""

    segment: int
    offset: int


class Record(NamedTuple):
    """One spooled batch: its id (for :meth:`Spool.ack`), payload and number of points."""

    id: RecordId
    payload: bytes
    points: int


@dataclass(slots=True)
class _Segment:
    """A segment file: its size on disk and what it holds that is not yet acknowledged."""

    seq: int
    size: int = 0
    records: int = 0
    points: int = 0
    payload_bytes: int = 0
    # Damaged stretches found (and counted) on open, where reading jumps: start -> end.
    gaps: dict[int, int] = field(default_factory=dict)

    def add(self, length: int, points: int, sign: int = 1) -> None:
        self.records += sign
        self.points += sign * points
        self.payload_bytes += sign * length


class _Entry(NamedTuple):
    """A record whose header is sound (its extent can be trusted)."""

    offset: int
    header: int  # the header's size: 20, or 16 for a legacy record
    length: int
    points: int
    crc: int

    @property
    def body(self) -> int:
        return self.offset + self.header

    @property
    def end(self) -> int:
        return self.body + self.length

    def intact(self, payload: bytes) -> bool:
        if self.header == _LEGACY.size:
            return _legacy_crc(self.length, self.points, payload) == self.crc
        return zlib.crc32(payload) == self.crc


class _Damage(NamedTuple):
    """Bytes that hold no sound record: ``points`` when the header survived, and
    ``tail`` when no sound record follows in the segment."""

    offset: int
    end: int
    points: int | None = None
    tail: bool = False


def _legacy_crc(length: int, points: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(_COUNTS.pack(length, points)))


def _encode(payload: bytes, points: int) -> bytes:
    head = _HEADER.pack(RECORD_MAGIC, len(payload), points, zlib.crc32(payload), 0)[:16]
    return head + struct.pack(">I", zlib.crc32(head)) + payload


def _parse(data: bytes, offset: int) -> _Entry | None:
    """The header at the start of ``data`` (read at ``offset``), if it is a sound one. A
    legacy header has no checksum of its own: it is taken as it is (see _header_at)."""
    magic = data[:4]
    if magic == RECORD_MAGIC and len(data) >= _HEADER.size:
        _, length, points, crc, check = _HEADER.unpack_from(data)
        if zlib.crc32(data[:16]) == check:
            return _Entry(offset, _HEADER.size, length, points, crc)
    elif magic == LEGACY_MAGIC and len(data) >= _LEGACY.size:
        _, length, points, crc = _LEGACY.unpack_from(data)
        return _Entry(offset, _LEGACY.size, length, points, crc)
    return None


class _Reader:
    """Reads of one segment file at any offset, through a window so that a scan of small
    records costs one pread per ``window`` bytes, not one per record. Only for bytes that
    no longer change: a reader lives for one scan or one read."""

    def __init__(self, fd: int, window: int = _WINDOW) -> None:
        self.fd = fd
        self.window = window
        self._start = 0
        self._data = b""

    def read(self, offset: int, size: int) -> bytes:
        begin = offset - self._start
        if begin >= 0 and begin + size <= len(self._data):
            return self._data[begin : begin + size]
        if size >= self.window:
            return os.pread(self.fd, size, offset)
        self._start, self._data = offset, os.pread(self.fd, self.window, offset)
        return self._data[:size]


def _header_at(reader: _Reader, offset: int, size: int) -> _Entry | None:
    """The record at ``offset`` if its header is sound and it ends within ``size``. A
    legacy record is trusted only with its payload (its one crc covers both)."""
    entry = _parse(reader.read(offset, _HEADER.size), offset)
    if entry is None or entry.end > size:
        return None
    if entry.header == _LEGACY.size and not entry.intact(reader.read(entry.body, entry.length)):
        return None
    return entry


def _next_record(reader: _Reader, start: int, size: int) -> int | None:
    """Where the first sound record at or after ``start`` begins: the resync after damage."""
    while start + len(_SYNC) <= size:
        data = reader.read(start, min(_CHUNK, size - start))
        found = data.find(_SYNC)
        if found >= 0 and _header_at(reader, start + found, size) is not None:
            return start + found
        if found >= 0:
            start += found + 1
        elif len(data) <= len(_SYNC):
            return None  # the file is shorter than its recorded size
        else:
            start += len(data) - len(_SYNC) + 1  # a marker may straddle the chunks
    return None


def _scan(
    reader: _Reader, size: int, *, verify: bool, start: int = 0
) -> Iterator[_Entry | _Damage]:
    """A segment's sound records and damaged stretches in order, from ``start``.

    ``verify``: check every payload too (else only headers, and a damaged payload is
    found when the record is read). A stretch with no sound record after it is a tail.
    """
    offset = start
    while offset < size:
        entry = _header_at(reader, offset, size)
        if entry is not None and (
            not verify
            or entry.header == _LEGACY.size  # a legacy one was checked whole
            or entry.intact(reader.read(entry.body, entry.length))
        ):
            yield entry
            offset = entry.end
        elif entry is not None:  # a sound header: exactly this record is damaged
            yield _Damage(offset, entry.end, entry.points)
            offset = entry.end
        elif (following := _next_record(reader, offset + 1, size)) is not None:
            yield _Damage(offset, following)
            offset = following
        else:
            yield _Damage(offset, size, tail=True)
            return


def _torn(tail: bytes) -> bool:
    """Whether the invalid tail of the newest segment is what an append cut short leaves
    (not damage): a record's beginning, or zeros (a power cut: the file grew, its data
    never landed). A legacy header has no checksum, so it counts as a beginning."""
    if tail.count(0) == len(tail):
        return True
    if len(tail) < _HEADER.size:
        return RECORD_MAGIC.startswith(tail[:4]) or LEGACY_MAGIC.startswith(tail[:4])
    return _parse(tail, 0) is not None


def _segment_name(seq: int) -> str:
    return f"{seq:020d}{_SEGMENT_SUFFIX}"


def _parse_segment_name(name: str) -> int | None:
    stem = name.removesuffix(_SEGMENT_SUFFIX)
    if stem == name or len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _fsync_dir(directory: Path) -> None:
    # A new or renamed file survives power loss only once its directory entry is synced.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """A durable FIFO of batches (payload bytes plus a count of points) in ``directory``.

    ``append`` adds a batch; ``peek`` returns the oldest unacknowledged one and ``ack``
    removes it once it has been written. Reading resumes at the same record after a restart.
    Disk use stays within ``max_bytes`` by dropping the oldest segments (their points are
    added to ``dropped_points``). See the module docstring for what a crash, damage and a
    full disk can lose. ``count_points`` (optional): how many points a payload holds, to
    estimate what a record lost with its header held (otherwise counted as 0 points).

    Plain blocking file I/O, and not thread-safe: calls must not overlap. Confine a spool
    to one thread (for instance a single-worker executor) for both appending and reading.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp, Spool(Path(tmp) / "influx-1") as spool:
    ...     spool.append(b"cpu value=1 1000\\ncpu value=2 2000\\n", 2)
    ...     spool.append(b"cpu value=3 3000\\n", 1)
    ...     first = spool.peek()
    ...     spool.ack(first.id)
    ...     print(len(spool), spool.pending_points, spool.peek().payload)
    1 1 b'cpu value=3 3000\\n'
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = GiB,
        segment_bytes: int = 16 * MiB,
        fsync_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        count_points: Callable[[bytes], int] | None = None,
    ) -> None:
        if max_bytes <= 0 or segment_bytes <= 0 or fsync_interval < 0:
            raise ValueError("max_bytes and segment_bytes must be > 0, fsync_interval >= 0")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync_interval = fsync_interval
        self._clock = clock
        self._count_points = count_points
        self.dropped_points = 0
        """Points dropped to stay within ``max_bytes`` since open."""
        self.corrupt_records = 0
        """Damaged records skipped since open (found on open or on read); every record
        around them is kept."""
        self.corrupt_points = 0
        """Points in those records (estimated with ``count_points`` for a record whose
        header was damaged too)."""
        self.truncated_bytes = 0
        """Bytes of torn or invalid tail cut off segments while opening."""
        self._segments: dict[int, _Segment] = {}  # oldest first; reading is in the oldest
        self._read_offset = 0
        self._read_fd: tuple[int, int] | None = None  # (segment, fd)
        self._head: tuple[Record, int] | None = None  # the oldest record and its size
        self._active: _Segment | None = None  # the segment appends go to
        self._write_fd = -1
        self._next_seq = 1
        self._disk_bytes = 0
        self._segment_dirty = self._cursor_dirty = False
        self._cursor_stale = False  # the cursor file could not be rewritten: do it again
        self._segment_synced_at = self._cursor_synced_at = clock()
        self._closed = False
        self._warn = RateLimitedLog(log)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._lock()
        try:
            self._recover()
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- public API ----------------------------------------------------------------------

    def append(self, payload: bytes, points: int) -> None:
        """Add a batch at the tail; fsync if ``fsync_interval`` has passed since the last.

        A batch bigger than ``max_bytes`` cannot be kept: it is counted in
        ``dropped_points`` and dropped. Raises ``OSError`` (ENOSPC, EDQUOT, EIO, ...)
        when the disk does not take it; nothing of it is then left in the spool.
        """
        self._check_open()
        if not 0 <= points <= _U32_MAX or len(payload) > _U32_MAX:
            raise ValueError("points and the payload length must fit in 32 bits")
        size = _HEADER.size + len(payload)
        if size > self.max_bytes:
            self._drop(points, f"a {size}-byte batch is over max_bytes={self.max_bytes}")
            return
        self._make_room(size)
        self._write(self._writable(size), payload, points)
        self._sync_quietly()

    def peek(self) -> Record | None:
        """The oldest unacknowledged record, or None when the spool is empty.

        Damaged records on the way are skipped (and counted). Raises ``OSError`` when
        the disk cannot be read.
        """
        self._check_open()
        self._sync_quietly()
        while self._head is None and (segment := self._oldest()) is not None:
            if self._read_offset < segment.size:
                self._head = self._read(segment)
            elif segment is self._active:
                return None  # caught up with the writer
            else:
                self._advance()  # e.g. an empty segment left by a crash
        return None if self._head is None else self._head[0]

    def ack(self, record_id: RecordId) -> None:
        """Remove the record ``record_id`` (it must be what ``peek`` returns) for good.

        Acknowledging a record that is already gone (acked, or dropped for space) does
        nothing, so a retried ack is harmless.
        """
        self._check_open()
        if record_id < self._position():
            return
        self.peek()
        segment = self._oldest()
        if self._head is None or segment is None or self._head[0].id != record_id:
            raise ValueError(f"{record_id} is not the oldest pending record")
        head, size = self._head
        self._consume(segment, size, head.points, len(head.payload))
        self._write_cursor()

    def __len__(self) -> int:
        """Records pending."""
        return sum(segment.records for segment in self._segments.values())

    @property
    def pending_points(self) -> int:
        """Points in the pending records."""
        return sum(segment.points for segment in self._segments.values())

    @property
    def pending_bytes(self) -> int:
        """Payload bytes in the pending records (what replaying them will send)."""
        return sum(segment.payload_bytes for segment in self._segments.values())

    @property
    def disk_bytes(self) -> int:
        """Bytes of segment files on disk: what ``max_bytes`` bounds."""
        return self._disk_bytes

    def sync_if_due(self) -> None:
        """Fsync unsynced appends and acks older than ``fsync_interval``.

        Appends, acks and peeks call this (and log a failure instead of raising it); an
        owner that may go quiet should also call it every ``fsync_interval`` so that the
        last appends before a lull are made durable. Raises ``OSError`` if the disk fails.
        """
        self._check_open()
        if self._cursor_stale:
            self._write_cursor()
        if self._segment_dirty and self._due(self._segment_synced_at):
            self._sync_segment()
        if self._cursor_dirty and self._due(self._cursor_synced_at):
            self._sync_cursor()

    def sync(self) -> None:
        """Fsync everything now; raises ``OSError`` if the disk fails."""
        self._check_open()
        if self._cursor_stale:
            self._write_cursor()
        if self._segment_dirty:
            self._sync_segment()
        if self._cursor_dirty:
            self._sync_cursor()

    def close(self) -> None:
        """Fsync and close the files; a second call does nothing. The files are closed
        even when the fsync raises ``OSError``."""
        if self._closed:
            return
        try:
            self.sync()
        finally:
            self._closed = True
            self._close_reader()
            if self._active is not None:
                os.close(self._write_fd)
                self._active = None
            os.close(self._lock_fd)  # releases the flock

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Spool({str(self.directory)!r}, records={len(self)}, bytes={self._disk_bytes})"

    # -- opening -------------------------------------------------------------------------

    def _lock(self) -> int:
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolError(f"spool {self.directory} is open elsewhere") from None
        return fd

    def _recover(self) -> None:
        (self.directory / "cursor.tmp").unlink(missing_ok=True)
        cursor = self._read_cursor()
        seqs = sorted(
            seq
            for path in self.directory.iterdir()
            if (seq := _parse_segment_name(path.name)) is not None
        )
        self._next_seq = max([*seqs, cursor.segment if cursor else 0]) + 1
        for seq in seqs:
            if cursor is not None and seq < cursor.segment:
                self._path(seq).unlink()  # fully acked; a crash came before its deletion
            else:
                self._load(seq, newest=seq == seqs[-1], cursor=cursor)
        if seqs and seqs[-1] in self._segments:
            # Appends go to a new segment; seal this one so loss is only ever at the tail.
            self._fsync_path(self._path(seqs[-1]))
        self._advance()

    def _read_cursor(self) -> RecordId | None:
        try:
            data = (self.directory / "cursor").read_bytes()
        except FileNotFoundError:
            return None
        if len(data) == _CURSOR.size:
            magic, seq, offset, crc = _CURSOR.unpack(data)
            if magic == CURSOR_MAGIC and zlib.crc32(data[:-4]) == crc:
                return RecordId(seq, offset)
        # Replaying from the oldest segment sends duplicates but loses nothing.
        log.warning("spool %s: unreadable cursor, replaying from the start", self.directory)
        return None

    def _load(self, seq: int, *, newest: bool, cursor: RecordId | None) -> None:
        """Index segment ``seq``: count its pending records, note (and count) damaged
        stretches, cut off an invalid tail. The newest segment's payloads are checked too:
        a crash may have cut its last append short."""
        segment = _Segment(seq)
        acked_to = cursor.offset if cursor is not None and cursor.segment == seq else 0
        read_from: int | None = None
        tail: _Damage | None = None
        path = self._path(seq)
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            reader = _Reader(fd)
            for item in _scan(reader, size, verify=newest):
                if isinstance(item, _Damage) and item.tail:
                    tail = item
                    break
                segment.size = item.end
                if item.end <= acked_to:
                    continue  # acknowledged before: neither pending nor lost
                read_from = item.offset if read_from is None else read_from
                if isinstance(item, _Entry):  # a record the cursor cuts through is replayed
                    segment.add(item.length, item.points)
                else:
                    segment.gaps[item.offset] = item.end
                    self._damaged(seq, item, reader)
            if tail is not None and tail.end > acked_to:
                data = reader.read(tail.offset, tail.end - tail.offset)
                # A sealed segment was fsynced whole: anything invalid in it is damage.
                if not (newest and _torn(data)):
                    self._damaged(seq, tail, reader)
        finally:
            os.close(fd)
        if tail is not None:
            self._truncate(path, segment.size, size)
        if not self._segments:
            self._read_offset = segment.size if read_from is None else read_from
        self._segments[seq] = segment
        self._disk_bytes += segment.size

    def _damaged(self, seq: int, damage: _Damage, reader: _Reader) -> None:
        """Count and log a damaged stretch found on open that held pending data."""
        points = damage.points
        if points is None and self._count_points is not None:
            # Past a header's worth of bytes: its binary fields are no payload.
            start = damage.offset + _HEADER.size
            points = self._count_points(reader.read(start, max(damage.end - start, 0)))
        self._lost(seq, damage.offset, damage.end - damage.offset, 1, points or 0)

    def _lost(self, seq: int, offset: int, size: int, records: int, points: int) -> None:
        self.corrupt_records += records
        self.corrupt_points += points
        self._warn.warning(
            "corrupt",
            "spool %s: damaged record at segment %d offset %d skipped "
            "(%d bytes, %d record(s), %d points lost)",
            self.directory,
            seq,
            offset,
            size,
            records,
            points,
        )

    def _truncate(self, path: Path, size: int, was: int) -> None:
        log.warning("spool %s: cut %d invalid bytes at offset %d", path, was - size, size)
        self.truncated_bytes += was - size
        os.truncate(path, size)

    # -- appending -----------------------------------------------------------------------

    def _make_room(self, size: int) -> None:
        while self._segments and self._disk_bytes + size > self.max_bytes:
            segment = next(iter(self._segments.values()))
            if segment.records:
                reason = f"max_bytes={self.max_bytes} reached, segment {segment.seq} dropped"
                self._drop(segment.points, reason)
            self._delete_oldest()

    def _drop(self, points: int, reason: str) -> None:
        self.dropped_points += points
        log.warning("spool %s: %s (%d points lost)", self.directory, reason, points)

    def _writable(self, size: int) -> _Segment:
        active = self._active
        if active is not None and active.size and active.size + size > self.segment_bytes:
            self._seal()
            active = None
        if active is None:
            active = self._create()
        return active

    def _seal(self) -> None:
        if self._segment_dirty:
            self._sync_segment()
        os.close(self._write_fd)
        self._active = None
        self._advance()  # it may be fully acked already

    def _create(self) -> _Segment:
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        self._write_fd = os.open(self._path(seq), flags, 0o644)
        self._active = self._segments[seq] = _Segment(seq)
        _fsync_dir(self.directory)  # after the above: a failure here leaks no descriptor
        return self._active

    def _write(self, segment: _Segment, payload: bytes, points: int) -> None:
        record = _encode(payload, points)
        try:
            _pwrite_all(self._write_fd, record, segment.size)
        except OSError:
            self._roll_back(segment)
            raise
        segment.size += len(record)
        segment.add(len(payload), points)
        self._disk_bytes += len(record)
        self._segment_dirty = True

    def _roll_back(self, segment: _Segment) -> None:
        # ENOSPC and friends: do not leave half a record before the next one. Shrinking a
        # file needs no space; if even that fails, the next record overwrites the half.
        try:
            os.ftruncate(self._write_fd, segment.size)
        except OSError as exc:
            self._warn.warning(
                "truncate", "spool %s: cannot cut a failed append: %s", self.directory, exc
            )

    # -- reading -------------------------------------------------------------------------

    def _oldest(self) -> _Segment | None:
        return next(iter(self._segments.values()), None)

    def _position(self) -> RecordId:
        segment = self._oldest()
        if segment is None:
            return RecordId(self._next_seq, 0)
        return RecordId(segment.seq, self._read_offset)

    def _reader(self, seq: int) -> int:
        if self._read_fd is None or self._read_fd[0] != seq:
            self._close_reader()
            self._read_fd = (seq, os.open(self._path(seq), os.O_RDONLY))
        return self._read_fd[1]

    def _read(self, segment: _Segment) -> tuple[Record, int] | None:
        """The record at the read offset and its size; None (skipping it) when damaged."""
        offset = self._read_offset
        if offset in segment.gaps:  # found and counted on open
            self._skip(segment.gaps.pop(offset))
            return None
        reader = _Reader(self._reader(segment.seq), _HEADER.size)  # header, then payload
        entry = _header_at(reader, offset, segment.size)
        if entry is None:
            # A header damaged since open: skip to the next sound record.
            self._skip_damaged(segment, reader, _next_record(reader, offset + 1, segment.size))
            return None
        payload = reader.read(entry.body, entry.length)
        if not entry.intact(payload):
            self._lost(segment.seq, offset, entry.end - offset, 1, entry.points)
            self._consume(segment, entry.end - offset, entry.points, entry.length)
            return None
        return Record(RecordId(segment.seq, offset), payload, entry.points), entry.end - offset

    def _skip_damaged(self, segment: _Segment, reader: _Reader, following: int | None) -> None:
        """Read on from ``following`` (None: the segment's end); what the records skipped
        held is what the segment counted as pending less what is left after them."""
        left = _Segment(segment.seq)
        end = segment.size if following is None else following
        gaps: dict[int, int] = {}
        for item in _scan(reader, segment.size, verify=False, start=end):
            if isinstance(item, _Entry):
                left.add(item.length, item.points)
            else:
                gaps[item.offset] = item.end
        records = max(segment.records - left.records, 1)
        self._lost(
            segment.seq,
            self._read_offset,
            end - self._read_offset,
            records,
            max(segment.points - left.points, 0),
        )
        segment.records, segment.points = left.records, left.points
        segment.payload_bytes, segment.gaps = left.payload_bytes, gaps
        self._skip(end)

    def _skip(self, offset: int) -> None:
        """Read on at ``offset`` of the oldest segment."""
        self._read_offset = offset
        self._head = None
        self._advance()

    def _consume(self, segment: _Segment, size: int, points: int, length: int) -> None:
        """Move reading past the pending record at the read offset (``size`` bytes)."""
        segment.add(length, points, sign=-1)
        self._skip(self._read_offset + size)

    def _advance(self) -> None:
        """Delete fully read segments that will not grow again."""
        while (segment := self._oldest()) is not None:
            if segment is self._active or self._read_offset < segment.size:
                return
            self._delete_oldest()

    def _delete_oldest(self) -> None:
        segment = self._segments.pop(next(iter(self._segments)))
        if self._read_fd is not None and self._read_fd[0] == segment.seq:
            self._close_reader()
        if segment is self._active:
            os.close(self._write_fd)
            self._active = None
            self._segment_dirty = False  # nothing left to sync
        try:
            self._path(segment.seq).unlink()
        except OSError as exc:  # EIO, EROFS: the cursor is past it, the next open deletes it
            self._warn.warning(
                "unlink", "spool %s: cannot delete a read segment: %s", self.directory, exc
            )
        self._disk_bytes -= segment.size
        self._read_offset = 0
        self._head = None

    def _close_reader(self) -> None:
        if self._read_fd is not None:
            os.close(self._read_fd[1])
            self._read_fd = None

    # -- durability ----------------------------------------------------------------------

    def _due(self, synced_at: float) -> bool:
        return self._clock() - synced_at >= self.fsync_interval

    def _sync_quietly(self) -> None:
        """sync_if_due for append, peek and ack: what they did is done; a failed fsync
        only puts its durability in doubt, which is logged."""
        try:
            self.sync_if_due()
        except OSError as exc:
            self._warn.warning("fsync", "spool %s: fsync failed: %s", self.directory, exc)

    def _sync_segment(self) -> None:
        os.fsync(self._write_fd)
        self._segment_dirty = False
        self._segment_synced_at = self._clock()

    def _sync_cursor(self) -> None:
        self._fsync_path(self.directory / "cursor")
        self._sync_cursor_rename()

    def _sync_cursor_rename(self) -> None:
        _fsync_dir(self.directory)
        self._cursor_dirty = False
        self._cursor_synced_at = self._clock()

    def _write_cursor(self) -> None:
        """Persist the read position: atomically always, durably when the interval is up.

        A disk that refuses it is logged, not raised: the position has moved on in memory
        and the next ack or sync writes the cursor again (a restart before that resends
        the records acknowledged since: duplicates, not loss)."""
        try:
            self._replace_cursor()
        except OSError as exc:
            self._cursor_stale = True
            self._warn.warning(
                "cursor", "spool %s: cannot write the cursor: %s", self.directory, exc
            )
        else:
            self._cursor_stale = False

    def _replace_cursor(self) -> None:
        body = _CURSOR.pack(CURSOR_MAGIC, *self._position(), 0)[:-4]
        durable = self._due(self._cursor_synced_at)
        tmp = self.directory / "cursor.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _pwrite_all(fd, body + struct.pack(">I", zlib.crc32(body)), 0)
            if durable:
                os.fsync(fd)  # before the rename, so the name never points at no data
        finally:
            os.close(fd)
        os.replace(tmp, self.directory / "cursor")
        self._cursor_dirty = True
        if durable:
            self._sync_cursor_rename()

    @staticmethod
    def _fsync_path(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _path(self, seq: int) -> Path:
        return self.directory / _segment_name(seq)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"spool {self.directory} is closed")
