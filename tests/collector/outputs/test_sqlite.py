"""End to end: events over TCP through a real collector into the embedded store."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from numbat.collector.daemon import Collector
from numbat.collector.outputs import Batch, Output
from numbat.collector.outputs.sqlite import SQLiteOutput
from numbat.config import Config, from_dict
from numbat.store import Annotation
from numbat.store.sqlite import SQLiteStore
from tests.collector.conftest import until
from tests.collector.outputs.conftest import LOOPBACK, free_port

DAY_MS = 86_400_000


async def send(port: int, events: list[dict[str, Any]]) -> None:
    _, writer = await asyncio.open_connection(LOOPBACK, port)
    writer.write(b"".join(json.dumps(event).encode() + b"\n" for event in events))
    await writer.drain()
    writer.close()
    await writer.wait_closed()


def test_seconds_expired_points_and_text_through_the_sqlite_output(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A time in seconds is stored as ms with its description; points past the retention
    are counted dropped (expired), not written, and logged once per burst."""
    caplog.set_level(logging.WARNING)
    path = tmp_path / "numbat.db"
    now = time.time()  # Python's seconds, as a cron job would send them
    old_ms = round(now * 1000) - 2 * DAY_MS
    events = [
        {"name": "cron.backup.done", "value": 1, "time": now, "description": "nightly"},
        {"name": "cron.backup.done", "value": 1, "time": old_ms},
        {"name": "cron.backup.done", "value": 1, "time": old_ms // 1000, "message": "late"},
        {"name": "cron.backup.size", "value": 42},
    ]

    async def main() -> tuple[dict[str, int], list[Annotation], float | None]:
        port = free_port()
        config = from_dict(
            {
                "collector": {
                    "listen": [f"tcp://{LOOPBACK}:{port}"],
                    "outputs": [
                        {"type": "sqlite", "name": "db", "path": str(path), "retention_days": 1}
                    ],
                }
            }
        )
        collector = Collector(config, hostname="test-host")
        await collector.start()
        stats = collector.stats
        try:
            await send(port, events)
            await until(lambda: stats.sum("written") + stats.sum("dropped") >= 4, what="4 events")
            await send(port, events[1:3])  # expired again: counted, the log holds back
            await until(
                lambda: stats.get("dropped", output="db", reason="expired") == 4, what="4 expired"
            )
            counts = {
                "written": stats.get("written", output="db"),
                "expired": stats.get("dropped", output="db", reason="expired"),
                "converted": stats.sum("time_unit_converted"),
            }
        finally:
            await collector.stop(drain_timeout=5)
        store = SQLiteStore(path)
        try:
            notes = await store.annotations("cron.*", start=0, end=round(now * 1000) + 1)
            start = round(now * 1000)
            (bucket,) = await store.query(
                "cron.backup.done", {}, start=start, end=start + 1, bucket=1, aggregate="count"
            )
        finally:
            await store.close()
        return counts, notes, bucket.value

    counts, notes, stored = asyncio.run(main())
    assert counts == {"written": 2, "expired": 4, "converted": 3}
    assert notes == [
        Annotation(round(now * 1000), "cron.backup.done", (), {"description": "nightly"})
    ]
    assert stored == 1.0
    logs = [r.getMessage() for r in caplog.records if "older than retention" in r.getMessage()]
    assert len(logs) == 1, logs
    assert f"sqlite {path}: 2 events older than retention_days = 1 not stored" in logs[0]


def test_the_sqlite_output_keeps_the_text_fields_it_is_configured_with(tmp_path: Path) -> None:
    """text_fields = ["note"] on the sqlite output: a note is stored as text and read
    back as an annotation."""
    path = tmp_path / "numbat.db"
    now_ms = round(time.time() * 1000)

    async def main() -> list[Annotation]:
        port = free_port()
        output = {"type": "sqlite", "name": "db", "path": str(path), "text_fields": ["note"]}
        config = from_dict(
            {"collector": {"listen": [f"tcp://{LOOPBACK}:{port}"], "outputs": [output]}}
        )
        collector = Collector(config, hostname="test-host")
        await collector.start()
        try:
            await send(port, [{"name": "deploy", "time": now_ms, "note": "v2 out"}])
            await until(lambda: collector.stats.get("written", output="db") >= 1, what="written")
        finally:
            await collector.stop(drain_timeout=5)
        store = SQLiteStore(path)
        try:
            return await store.annotations("deploy", start=0, end=now_ms + 1)
        finally:
            await store.close()

    (note,) = asyncio.run(main())
    assert note.fields == {"note": "v2 out"}


class HeldStart(Output):
    """A test output whose start() waits for ``release``: holds a reload between the
    start of its outputs and their swap."""

    started: asyncio.Event
    release: asyncio.Event

    async def start(self) -> None:
        HeldStart.started.set()
        await HeldStart.release.wait()

    async def write(self, batch: Batch) -> None:
        pass


def test_a_reload_of_the_sqlite_output_takes_over_its_open_store(tmp_path: Path) -> None:
    """retention_days changed by a reload while the old output writes on between the new
    one's start and the swap: every event is stored (the new output takes the open store
    over; its own connection, opened beside, would reuse the keys of the old one's last
    points and lose its first batch to a write error), and the new retention applies."""
    path = tmp_path / "numbat.db"
    now_ms = round(time.time() * 1000)
    events = [{"name": "t.same", "value": i, "time": now_ms, "host": "a"} for i in range(7)]
    port = free_port()
    db = {"type": "sqlite", "name": "db", "path": str(path)}
    held = {"type": "tests.collector.outputs.test_sqlite:HeldStart", "name": "held"}

    def config(*outputs: dict[str, Any]) -> Config:
        listen = [f"tcp://{LOOPBACK}:{port}"]
        return from_dict({"collector": {"listen": listen, "outputs": list(outputs)}})

    async def main() -> float | None:
        HeldStart.started, HeldStart.release = asyncio.Event(), asyncio.Event()
        collector = Collector(config(db), hostname="test-host")
        await collector.start()
        stats = collector.stats
        try:
            await send(port, events[:1])
            await until(lambda: stats.get("written", output="db") == 1, what="the first")
            reload = asyncio.ensure_future(
                collector.reload(config({**db, "retention_days": 3}, held))
            )
            await HeldStart.started.wait()  # the new sqlite output has started
            await send(port, events[1:4])
            await until(lambda: stats.get("written", output="db") == 4, what="three more")
            HeldStart.release.set()
            await reload
            await send(port, events[4:])

            def settled() -> bool:
                return stats.get("written", output="db") + stats.sum("dropped") >= 7

            await until(settled, what="every event settled")
            assert stats.get("written", output="db") == 7
            output = collector.queues["db"].output
            assert isinstance(output, SQLiteOutput) and output.store is not None
            assert output.store.retention_ms == 3 * DAY_MS
        finally:
            await collector.stop(drain_timeout=5)
        store = SQLiteStore(path)
        try:
            (bucket,) = await store.query(
                "t.same", {}, start=now_ms, end=now_ms + 1, bucket=1, aggregate="count"
            )
        finally:
            await store.close()
        return bucket.value

    assert asyncio.run(main()) == 7
