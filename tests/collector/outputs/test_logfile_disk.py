"""The logfile output on a full disk: a write that fails part way is cut back off, so the
file holds only whole lines, its events are counted dropped and the next ones written."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from numbat.collector.daemon import STATS_PREFIX
from numbat.collector.fanout import OutputQueue
from numbat.collector.outputs import Batch
from numbat.collector.outputs import logfile as logfile_module
from numbat.collector.outputs.logfile import LogfileOutput
from numbat.config import LogfileOutputConfig
from numbat.event import Event
from numbat.server.stats import Stats
from tests.helpers import fill, tmpfs

LABEL = "logfile"


def _events(name: str, count: int) -> list[Event]:
    return [{"name": name, "value": i, "time": 1_700_000_000_000 + i} for i in range(count)]


def _lines(path: Path) -> list[dict[str, Any]]:
    """Every line of the file as JSON (a torn line fails the test here)."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), data[-80:]
    return [json.loads(line) for line in data.splitlines()]


def _counted(stats: Stats) -> dict[str, Any]:
    """``written`` and ``dropped`` by reason, from one report."""
    found: dict[str, Any] = {}
    for event in stats.report(10.0):
        if event["name"] == f"{STATS_PREFIX}.written":
            found["written"] = event["value"]
        elif event["name"] == f"{STATS_PREFIX}.dropped":
            found[f"dropped.{event['reason']}"] = event["value"]
    return found


class Writer:
    """A logfile output behind the collector's queue, which counts what it writes."""

    def __init__(self, path: Path) -> None:
        options = LogfileOutputConfig(type="logfile", path=str(path))
        self.stats = Stats("test", STATS_PREFIX)
        self.queue = OutputQueue(LABEL, LogfileOutput(options), 1_000_000, self.stats)

    async def send(self, events: list[Event]) -> None:
        self.queue.offer(Batch(events))
        assert await self.queue.drain(10.0)


def test_a_write_torn_by_a_full_disk_is_cut_off(tmp_path: Path) -> None:
    """On a tmpfs that fills mid-batch: the torn batch is cut off and counted dropped,
    and once space is back the file holds whole lines, every event counted written."""

    async def main(mount: Path) -> None:
        log = mount / "events.jsonl"
        writer = Writer(log)
        await writer.queue.start()
        try:
            await writer.send(_events("app.base", 100))
            filler = fill(mount)
            os.truncate(filler, filler.stat().st_size - 8192)  # room for part of a batch
            await writer.send(_events("burst.l2", 2_000))  # about 100 kB
            filler.unlink()
            await writer.send(_events("burst.l3", 100))
        finally:
            await writer.queue.stop()
        names = [event["name"] for event in _lines(log)]
        assert names == ["app.base"] * 100 + ["burst.l3"] * 100
        assert _counted(writer.stats) == {"written": 200, "dropped.write_error": 2_000}

    with tmpfs(tmp_path / "small", "1m") as mount:
        asyncio.run(main(mount))


def test_a_failed_write_raises_its_error_and_leaves_whole_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that stops half way with ENOSPC raises it; the half is gone from the file."""
    real = logfile_module._write_all

    def half_then_full(fd: int, data: bytes) -> None:
        real(fd, data[: len(data) // 2 + 3])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    async def main() -> None:
        log = tmp_path / "events.jsonl"
        output = LogfileOutput(LogfileOutputConfig(type="logfile", path=str(log)))
        await output.start()
        await output.write(Batch(_events("app.base", 3)))
        monkeypatch.setattr(logfile_module, "_write_all", half_then_full)
        with pytest.raises(OSError) as raised:
            await output.write(Batch(_events("burst.l2", 10)))
        assert raised.value.errno == errno.ENOSPC
        monkeypatch.setattr(logfile_module, "_write_all", real)
        await output.write(Batch(_events("burst.l3", 2)))
        await output.close()
        assert [e["name"] for e in _lines(log)] == ["app.base"] * 3 + ["burst.l3"] * 2

    asyncio.run(main())


def test_a_file_left_mid_line_gets_a_newline_first(tmp_path: Path) -> None:
    """A file ending in a torn line (a writer killed mid-write): our lines start afresh."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(b'{"name":"old","value":1}\n{"name":"torn","val')

    async def main() -> None:
        output = LogfileOutput(LogfileOutputConfig(type="logfile", path=str(log)))
        await output.start()
        await output.write(Batch(_events("burst.l3", 2)))
        await output.close()

    asyncio.run(main())
    lines = log.read_bytes().splitlines()
    assert lines[1] == b'{"name":"torn","val'
    assert [json.loads(line)["name"] for line in lines[2:]] == ["burst.l3"] * 2
