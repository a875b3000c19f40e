"""Reloading the collector with a changed InfluxDB output, against real influxd servers:
the replacement takes over the running output's spools and senders (its directory is
locked), so nothing is lost, nothing is stored twice, and a failed reload changes
nothing."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from numbat.collector.daemon import STATS_PREFIX, Collector, ReloadError
from numbat.collector.fanout import OutputQueue
from numbat.collector.outputs.influxdb import InfluxDBOutput, spool_name
from numbat.config import Config, from_dict
from numbat.server.stats import Stats
from numbat.store.spool import Spool
from tests.collector.outputs.conftest import LOOPBACK, free_port
from tests.collector.outputs.test_influxdb import (  # noqa: F401
    RestartableInflux,
    _options,
    _spool_before_start,
    restartable,
    scripted_influx,
)
from tests.helpers import wait_until
from tests.store.conftest import InfluxDatabase

T0 = 1_700_000_000_000
NAME = "reload.events"


def _config(port: int, influx: dict[str, Any], *others: dict[str, Any]) -> Config:
    output = {"type": "influxdb", "name": "influx", "timeout": 2.0, **influx}
    listen = [f"tcp://{LOOPBACK}:{port}"]
    return from_dict({"collector": {"listen": listen, "outputs": [output, *others]}})


def _lines(start: int, stop: int) -> bytes:
    # Ten events a millisecond of one series: each start of an output must render them
    # at offsets of its own, or one life's points overwrite another's.
    return b"".join(
        b'{"name":"%s","value":%d,"time":%d,"host":"h1"}\n' % (NAME.encode(), i, T0 + i // 10)
        for i in range(start, stop)
    )


def _send(port: int, start: int, stop: int, chunk: int = 1) -> None:
    """Events ``start``..``stop`` over one connection, ``chunk`` at a time."""
    with socket.create_connection((LOOPBACK, port)) as sock:
        for first in range(start, stop, chunk):
            sock.sendall(_lines(first, min(first + chunk, stop)))


def _stored(db: InfluxDatabase) -> tuple[int, int]:
    """Points of the test's measurement, and their distinct values."""
    q = f'SELECT count("value"), count(distinct("value")) FROM "{NAME}"'
    series = db.query(q).get("series")
    if not series:
        return 0, 0
    _, count, distinct = series[0]["values"][0]
    # Either may come back null while influxd is still taking a write.
    return int(count or 0), int(distinct or 0)


def _influx(collector: Collector) -> InfluxDBOutput:
    output = collector.queues["influx"].output
    assert isinstance(output, InfluxDBOutput)
    return output


def _received(collector: Collector) -> int:
    (listener,) = collector.listeners.values()
    return collector.stats.get("received", listener=listener.label)


CHANGES: list[dict[str, Any]] = [
    {"batch_size": 7},
    {"flush_interval": 0.2},
    {"timeout": 3.0},
    {"gzip": True, "batch_bytes": 300},
]


@pytest.mark.parametrize("change", CHANGES, ids="+".join)
def test_a_reload_changing_the_options_stores_every_event_once(
    influx_db: InfluxDatabase, tmp_path: Path, change: dict[str, Any]
) -> None:
    """batch_size, flush_interval, timeout or gzip changed by a reload while events flow:
    the reload succeeds (its spool is taken over, not opened twice), the new settings
    apply, and every event sent before, during and after is stored exactly once."""
    port = free_port()
    influx = {
        "urls": [influx_db.server.url],
        "database": influx_db.name,
        "spool_dir": str(tmp_path / "spool"),
        "batch_size": 50,
        "flush_interval": 0.05,
    }
    total = 3_000

    async def main() -> None:
        collector = Collector(_config(port, influx), hostname="test")
        await collector.start()
        try:
            await asyncio.to_thread(_send, port, 0, 1_000, 100)
            await asyncio.to_thread(wait_until, lambda: _received(collector) == 1_000)
            old = _influx(collector)
            client = old.senders[0].clients[0]
            during = threading.Thread(target=_send, args=(port, 1_000, 2_000))
            during.start()
            try:
                await collector.reload(_config(port, {**influx, **change}))
            finally:
                await asyncio.to_thread(during.join)
            new = _influx(collector)
            assert new is not old
            assert collector.stats.get("reload_failed") == 0
            # The spool is the one the old output had open, the new settings apply to it.
            assert [s.spool for s in new.senders] == [s.spool for s in old.senders]
            for key, value in change.items():
                assert getattr(new.options, key) == value
            # The sender takes a client with the new settings before its next POST.
            await asyncio.to_thread(wait_until, lambda: new.senders[0].clients[0] is not client)
            taken = new.senders[0].clients[0]
            assert (taken.timeout, taken.gzip) == (new.options.timeout, new.options.gzip)
            await asyncio.to_thread(_send, port, 2_000, total, 100)
            await asyncio.to_thread(
                wait_until, lambda: _stored(influx_db)[0] >= total, 30.0, "every event"
            )
        finally:
            await collector.stop()

    asyncio.run(main())
    assert _stored(influx_db) == (total, total)


def test_the_pending_batch_of_the_replaced_output_is_stored(
    influx_db: InfluxDatabase, tmp_path: Path
) -> None:
    """Events gathered in the old output's batch (its flush_interval not yet due) when a
    reload replaces it are stored, once, beside what the new output writes."""
    port = free_port()
    influx = {
        "urls": [influx_db.server.url],
        "database": influx_db.name,
        "spool_dir": str(tmp_path / "spool"),
        "flush_interval": 3600.0,
    }

    async def main() -> None:
        collector = Collector(_config(port, influx), hostname="test")
        await collector.start()
        try:
            await asyncio.to_thread(_send, port, 0, 30)
            old = _influx(collector)
            await asyncio.to_thread(wait_until, lambda: old._pending_points == 30)
            await collector.reload(_config(port, {**influx, "flush_interval": 0.05}))
            await asyncio.to_thread(_send, port, 30, 60)
            await asyncio.to_thread(wait_until, lambda: _stored(influx_db)[0] >= 60, 10.0)
            assert collector.stats.get("reload_failed") == 0
        finally:
            await collector.stop()

    asyncio.run(main())
    assert _stored(influx_db) == (60, 60)


def test_a_reload_to_another_server_leaves_the_old_spool_for_that_server(
    restartable: RestartableInflux,  # noqa: F811
    influx_db: InfluxDatabase,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """urls moved to another server while the old one is down: new events go to the new
    server; what the old server's spool holds is logged as left there, and is sent when a
    reload names that server again."""
    caplog.set_level(logging.INFO)
    port = free_port()
    spool = str(tmp_path / "spool")
    old_server = {"urls": [restartable.url], "database": influx_db.name, "spool_dir": spool}
    new_server = {**old_server, "urls": [influx_db.server.url]}
    restartable.stop()

    async def main() -> None:
        collector = Collector(
            _config(port, {**old_server, "flush_interval": 0.05}), hostname="test"
        )
        await collector.start()
        try:
            await asyncio.to_thread(_send, port, 0, 40)
            sender = _influx(collector).senders[0]
            await asyncio.to_thread(wait_until, lambda: sender.spool.pending_points == 40)
            await collector.reload(_config(port, {**new_server, "timeout": 0.5}))
            assert collector.stats.get("reload_failed") == 0
            assert "40 points stay in its spool" in caplog.text
            await asyncio.to_thread(_send, port, 40, 70)
            await asyncio.to_thread(wait_until, lambda: _stored(influx_db)[0] >= 30, 10.0)
            await asyncio.to_thread(restartable.start)
            await collector.reload(_config(port, {**old_server, "timeout": 0.5}))
            await asyncio.to_thread(
                wait_until, lambda: restartable.count(influx_db.name, NAME) >= 40, 10.0
            )
        finally:
            await collector.stop()

    asyncio.run(main())
    assert _stored(influx_db) == (30, 30)
    assert restartable.count(influx_db.name, NAME) == 40


def test_a_failed_reload_keeps_the_influxdb_output_running(
    influx_db: InfluxDatabase, tmp_path: Path
) -> None:
    """A reload that changes the influxdb output and adds an output that cannot start is
    refused for that output alone (counted); the running influxdb output, its spool and
    its sender are untouched and go on storing every event."""
    port = free_port()
    influx = {
        "urls": [influx_db.server.url],
        "database": influx_db.name,
        "spool_dir": str(tmp_path / "spool"),
        "flush_interval": 0.05,
    }
    broken = {"type": "tests.plugins.broken:NoStartOutput", "name": "broken"}

    async def main() -> None:
        collector = Collector(_config(port, influx), hostname="test")
        await collector.start()
        try:
            await asyncio.to_thread(_send, port, 0, 20)
            output = _influx(collector)
            [sender] = output.senders
            client = sender.clients[0]
            with pytest.raises(ReloadError) as raised:
                await collector.reload(_config(port, {**influx, "batch_size": 7}, broken))
            assert str(raised.value).startswith(r"collector.outputs[1] (broken): cannot start")
            assert "collector.outputs[0]" not in str(raised.value)
            assert collector.stats.get("reload_failed") == 1
            assert _influx(collector) is output and output.senders == [sender]
            assert sender.clients[0] is client  # the staged output's clients never went in
            await asyncio.to_thread(_send, port, 20, 40)
            await asyncio.to_thread(wait_until, lambda: _stored(influx_db)[0] >= 40, 10.0)
        finally:
            await collector.stop()

    asyncio.run(main())
    assert _stored(influx_db) == (40, 40)


def test_what_a_sender_lost_before_a_reload_is_counted_once(tmp_path: Path) -> None:
    """A damaged record in the spool (4 points, dropped as spool_corrupt) and then a
    reload of the output: the sender moves to the new output with its running totals,
    and the loss is counted once, not again by the output that took it over."""
    stats = Stats("test", STATS_PREFIX)
    batches = [
        b"".join(b"m value=%d %d\n" % (i, T0 * 10**6 + i) for i in range(n, n + 4)) for n in (0, 4)
    ]

    async def main() -> None:
        async with scripted_influx() as server:
            options = _options([server.url], tmp_path, create_database=False)
            segment = _spool_before_start(options, server.url, tmp_path, batches)
            data = bytearray(segment.read_bytes())
            data[20 + 3] ^= 0xFF  # inside the first record's payload
            segment.write_bytes(bytes(data))
            queue = OutputQueue(options.label, InfluxDBOutput(options), 1_000, stats)
            await queue.start()
            name = queue.output.server_stats().popitem()[0]
            await asyncio.to_thread(wait_until, lambda: len(server.lines) == 4)
            stats.report(10.0)
            await queue.replace_output(
                InfluxDBOutput(
                    _options([server.url], tmp_path, batch_size=7, create_database=False)
                )
            )
            stats.report(10.0)
            assert (
                stats.get("dropped", output=options.label, reason="spool_corrupt", server=name) == 4
            )
            await queue.stop()
            assert (
                stats.get("dropped", output=options.label, reason="spool_corrupt", server=name) == 4
            )

    asyncio.run(main())


def test_a_start_that_fails_part_way_leaves_no_spool_locked(tmp_path: Path) -> None:
    """Replicate to two servers, the second one's spool directory unusable: start()
    raises, and the first server's spool, opened already, is closed again (unlocked),
    so the same output can start once the cause is fixed (a reload tried again)."""
    urls = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    options = _options(urls, tmp_path, create_database=False)
    root = tmp_path / options.label / "worker-0"
    first, second = (root / spool_name([url.removeprefix("http://")], "numbat") for url in urls)
    root.mkdir(parents=True)
    second.write_text("not a directory")

    async def main() -> None:
        output = InfluxDBOutput(options)
        with pytest.raises(OSError):
            await output.start()
        Spool(first).close()  # raises SpoolError if still locked
        second.unlink()
        again = InfluxDBOutput(options)
        await again.start()
        await again.close()

    asyncio.run(main())
