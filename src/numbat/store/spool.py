"""A durable, bounded, on-disk FIFO of batches for one destination host.

The InfluxDB output parks batches here while their host is down and replays them in order
when it is back. The spool survives a restart of the collector.

Layout of a spool directory (one per host)::

    00000000000000000001.seg   segments: append-only files of records, named by a
    00000000000000000002.seg   sequence number that only ever grows
    cursor                     where reading resumes: the next unacknowledged record
    lock                       flock(2)ed while a Spool has the directory open

A record is a 16-byte header then the payload. The header is four big-endian fields:
``magic`` (``b"NBS\\x01"``, the last byte is the format version), payload ``length``
(u32), ``points`` (u32) and ``crc32`` over the packed length, the packed points and the
payload. The cursor file is 24 bytes: ``b"NBC\\x01"``, segment (u64), offset (u64) and
the crc32 of those 20 bytes; it is replaced atomically (write a temporary file, rename).

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
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, NamedTuple, Self

from numbat.errors import NumbatError

__all__ = ["Record", "RecordId", "Spool", "SpoolError"]

log = logging.getLogger(__name__)

MiB = 1024 * 1024
GiB = 1024 * MiB
RECORD_MAGIC = b"NBS\x01"
CURSOR_MAGIC = b"NBC\x01"
_HEADER = struct.Struct(">4sIII")  # magic, payload length, points, crc32
_COUNTS = struct.Struct(">II")  # the part of the header the crc covers
_CURSOR = struct.Struct(">4sQQI")  # magic, segment, offset, crc32 of the rest
_U32_MAX = 2**32 - 1
_SEGMENT_SUFFIX = ".seg"


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

    def add(self, length: int, points: int, sign: int = 1) -> None:
        self.records += sign
        self.points += sign * points
        self.payload_bytes += sign * length


class _Entry(NamedTuple):
    offset: int
    length: int
    points: int

    @property
    def end(self) -> int:
        return self.offset + _HEADER.size + self.length


def _crc(length: int, points: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(_COUNTS.pack(length, points)))


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


def _scan(file: BinaryIO, size: int, *, verify: bool) -> Iterator[_Entry]:
    """The records of a segment in order, up to the first that is torn or invalid."""
    offset = 0
    while offset + _HEADER.size <= size:
        magic, length, points, crc = _HEADER.unpack(file.read(_HEADER.size))
        entry = _Entry(offset, length, points)
        if magic != RECORD_MAGIC or entry.end > size:
            return
        if verify:
            if _crc(length, points, file.read(length)) != crc:
                return
        else:
            file.seek(length, os.SEEK_CUR)  # cheap: mostly within the read buffer
        yield entry
        offset = entry.end


class Spool:
    """A durable FIFO of batches (payload bytes plus a count of points) in ``directory``.

    ``append`` adds a batch; ``peek`` returns the oldest unacknowledged one and ``ack``
    removes it once it has been written. Reading resumes at the same record after a restart.
    Disk use stays within ``max_bytes`` by dropping the oldest segments (their points are
    added to ``dropped_points``). See the module docstring for what a crash can lose.

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
    ) -> None:
        if max_bytes <= 0 or segment_bytes <= 0 or fsync_interval < 0:
            raise ValueError("max_bytes and segment_bytes must be > 0, fsync_interval >= 0")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync_interval = fsync_interval
        self._clock = clock
        self.dropped_points = 0
        """Points dropped to stay within ``max_bytes``, or lost to corruption, since open."""
        self.corrupt_records = 0
        """Damaged records met since open: on open, an invalid record in a sealed segment
        (the segment is cut there); on read, a bad checksum (that record is skipped) or a
        bad header (the rest of its segment is skipped)."""
        self.truncated_bytes = 0
        """Bytes of torn or invalid tail cut off segments while opening."""
        self._segments: dict[int, _Segment] = {}  # oldest first; reading is in the oldest
        self._read_offset = 0
        self._read_fd: tuple[int, int] | None = None  # (segment, fd)
        self._head: Record | None = None
        self._active: _Segment | None = None  # the segment appends go to
        self._write_fd = -1
        self._next_seq = 1
        self._disk_bytes = 0
        self._segment_dirty = self._cursor_dirty = False
        self._segment_synced_at = self._cursor_synced_at = clock()
        self._closed = False
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
        ``dropped_points`` and dropped.
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
        self.sync_if_due()

    def peek(self) -> Record | None:
        """The oldest unacknowledged record, or None when the spool is empty."""
        self._check_open()
        self.sync_if_due()
        while self._head is None and (segment := self._oldest()) is not None:
            if self._read_offset < segment.size:
                self._head = self._read(segment)
            elif segment is self._active:
                return None  # caught up with the writer
            else:
                self._advance()  # e.g. an empty segment left by a crash
        return self._head

    def ack(self, record_id: RecordId) -> None:
        """Remove the record ``record_id`` (it must be what ``peek`` returns) for good.

        Acknowledging a record that is already gone (acked, or dropped for space) does
        nothing, so a retried ack is harmless.
        """
        self._check_open()
        if record_id < self._position():
            return
        head, segment = self.peek(), self._oldest()
        if head is None or segment is None or head.id != record_id:
            raise ValueError(f"{record_id} is not the oldest pending record")
        length = len(head.payload)
        self._consume(segment, _HEADER.size + length, head.points, length)
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

        Appends, acks and peeks call this; an owner that may go quiet should also call it
        every ``fsync_interval`` so that the last appends before a lull are made durable.
        """
        self._check_open()
        if self._segment_dirty and self._due(self._segment_synced_at):
            self._sync_segment()
        if self._cursor_dirty and self._due(self._cursor_synced_at):
            self._sync_cursor()

    def sync(self) -> None:
        """Fsync everything now."""
        self._check_open()
        if self._segment_dirty:
            self._sync_segment()
        if self._cursor_dirty:
            self._sync_cursor()

    def close(self) -> None:
        """Fsync and close the files; a second call does nothing."""
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
                self._load(seq, verify=seq == seqs[-1], cursor=cursor)
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

    def _load(self, seq: int, *, verify: bool, cursor: RecordId | None) -> None:
        """Index segment ``seq``: count its pending records, cut off an invalid tail."""
        segment = _Segment(seq)
        acked_to = cursor.offset if cursor is not None and cursor.segment == seq else 0
        read_from: int | None = None
        path = self._path(seq)
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            for entry in _scan(file, size, verify=verify):
                segment.size = entry.end
                if entry.end > acked_to:  # a record the cursor cuts through is replayed
                    segment.add(entry.length, entry.points)
                    read_from = entry.offset if read_from is None else read_from
        if segment.size < size:
            self._truncate(path, segment.size, size, sealed=not verify)
        if not self._segments:
            self._read_offset = segment.size if read_from is None else read_from
        self._segments[seq] = segment
        self._disk_bytes += segment.size

    def _truncate(self, path: Path, size: int, was: int, *, sealed: bool) -> None:
        # The last segment's tail is an append a crash cut short; a sealed one was fsynced
        # whole, so an invalid record there is damage (what followed it is lost).
        log.warning("spool %s: cut %d invalid bytes at offset %d", path, was - size, size)
        self.truncated_bytes += was - size
        self.corrupt_records += int(sealed)
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
        _fsync_dir(self.directory)
        self._active = self._segments[seq] = _Segment(seq)
        return self._active

    def _write(self, segment: _Segment, payload: bytes, points: int) -> None:
        crc = _crc(len(payload), points, payload)
        record = _HEADER.pack(RECORD_MAGIC, len(payload), points, crc) + payload
        try:
            _pwrite_all(self._write_fd, record, segment.size)
        except OSError:
            # ENOSPC and friends: do not leave half a record before the next one.
            os.ftruncate(self._write_fd, segment.size)
            raise
        segment.size += len(record)
        segment.add(len(payload), points)
        self._disk_bytes += len(record)
        self._segment_dirty = True

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

    def _read(self, segment: _Segment) -> Record | None:
        """The record at the read offset; None (skipping it) when it is damaged."""
        fd, offset = self._reader(segment.seq), self._read_offset
        header = os.pread(fd, _HEADER.size, offset)
        magic, length, points, crc = _HEADER.unpack(header.ljust(_HEADER.size, b"\0"))
        end = offset + _HEADER.size + length
        if magic != RECORD_MAGIC or end > segment.size:
            self._skip_segment_rest(segment)
            return None
        payload = os.pread(fd, length, offset + _HEADER.size)
        if _crc(length, points, payload) != crc:
            self.corrupt_records += 1
            self._drop(points, f"damaged record at {segment.seq}:{offset} skipped")
            self._consume(segment, end - offset, points, length)
            return None
        return Record(RecordId(segment.seq, offset), payload, points)

    def _skip_segment_rest(self, segment: _Segment) -> None:
        # Without a trustworthy length the next record cannot be found: skip the segment.
        self.corrupt_records += 1
        self._drop(segment.points, f"damaged header at {segment.seq}:{self._read_offset}")
        segment.records = segment.points = segment.payload_bytes = 0
        self._read_offset = segment.size
        self._advance()

    def _consume(self, segment: _Segment, size: int, points: int, length: int) -> None:
        """Move reading past the pending record at the read offset (``size`` bytes)."""
        segment.add(length, points, sign=-1)
        self._read_offset += size
        self._head = None
        self._advance()

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
        self._path(segment.seq).unlink()
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
        """Persist the read position: atomically always, durably when the interval is up."""
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
