"""``type = "logfile"``: JSON lines appended to a file, reopened on SIGHUP for logrotate."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import stat
from pathlib import Path

from numbat.collector.outputs import Batch, Output, make_parent
from numbat.config import LogfileOutputConfig
from numbat.server import ProcessContext


class LogfileOutput(Output):
    """One JSON object per line per event, appended with ``O_APPEND`` writes.

    Config::

        [[collector.outputs]]
        type = "logfile"
        path = "/var/log/numbat/events.jsonl"

    After logrotate moves the file, SIGHUP makes the collector reopen ``path``.

    A batch is appended whole or not at all: a write that fails part way (ENOSPC) is
    cut back off the file, so the file always ends at a complete line, and the error
    (OSError) is raised for the whole batch to be counted dropped (``write_error``).
    """

    Options = LogfileOutputConfig
    options: LogfileOutputConfig

    def __init__(
        self, options: LogfileOutputConfig, *, context: ProcessContext | None = None
    ) -> None:
        super().__init__(options, context=context)
        self.path = Path(options.path)
        self._fd: int | None = None
        self._reopen = False

    async def start(self) -> None:
        self._open()

    async def write(self, batch: Batch) -> None:
        if self._reopen:
            self._reopen = False
            self._close()
        fd = self._fd if self._fd is not None else self._open()
        # In a thread: a slow disk (or an NFS stall) must hold up this output only,
        # never the event loop that ingests.
        await asyncio.to_thread(_append, fd, batch.ndjson)

    def reopen(self) -> None:
        # Done by the next write, never while a write is in flight on the old descriptor.
        self._reopen = True

    async def close(self) -> None:
        self._close()

    def _open(self) -> int:
        make_parent(self.path)
        flags = os.O_APPEND | os.O_CREAT
        try:
            # Readable too, to see whether the file ends mid-line (see _append).
            self._fd = os.open(self.path, os.O_RDWR | flags, 0o644)
        except PermissionError:
            self._fd = os.open(self.path, os.O_WRONLY | flags, 0o644)
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _append(fd: int, data: bytes) -> None:
    """Append ``data`` (whole lines) to the end of the file, all or nothing.

    A write that fails part way (ENOSPC, EDQUOT, EIO) is truncated back off, then its
    OSError raised: a torn line would glue the next batch's first event onto it. The
    lock keeps the other workers appending to the same file out between the size read
    and the cut, whose lines it would take with it. A file found ending mid-line (a
    cut that failed, a writer killed mid-write) gets a newline first, so our lines
    stay whole. A pipe or device (``/dev/stdout``) is written as it is.
    """
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        _write_all(fd, data)
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        size = os.fstat(fd).st_size
        if size and _ends_mid_line(fd, size):
            data = b"\n" + data
        try:
            _write_all(fd, data)
        except OSError:
            with contextlib.suppress(OSError):  # the write's error is the one to report
                os.ftruncate(fd, size)
            raise
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _ends_mid_line(fd: int, size: int) -> bool:
    try:
        return os.pread(fd, 1, size - 1) != b"\n"
    except OSError:  # opened write-only (no read permission): trust the cuts
        return False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
