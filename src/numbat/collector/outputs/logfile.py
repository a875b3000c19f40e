"""``type = "logfile"``: JSON lines appended to a file, reopened on SIGHUP for logrotate."""

from __future__ import annotations

import asyncio
import os
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
        await asyncio.to_thread(_write_all, fd, batch.ndjson)

    def reopen(self) -> None:
        # Done by the next write, never while a write is in flight on the old descriptor.
        self._reopen = True

    async def close(self) -> None:
        self._close()

    def _open(self) -> int:
        make_parent(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
