"""The InfluxDB output when its spool's disk fails or holds damage: nothing stops, every
loss is counted by reason. Faults are injected into the spool's write function, and one
test runs a real collector and influxd over a small tmpfs that fills up."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from numbat.collector.daemon import STATS_PREFIX
from numbat.collector.fanout import OutputQueue
from numbat.collector.outputs import Batch
from numbat.collector.outputs import influxdb as influxdb_module
from numbat.collector.outputs.influxdb import InfluxDBOutput
from numbat.server.stats import Stats
from numbat.store import spool as spool_module
from numbat.store.spool import Spool
from tests.collector.conftest import Daemon, start, toml
from tests.collector.outputs.test_influxdb import (
    T0,
    RestartableInflux,
    _events,
    _lines,
    _options,
    _send,
    _spool_before_start,
    scripted_influx,
)
from tests.helpers import fill, tmpfs, use_up_inodes, wait_until
from tests.store.conftest import free_port, http

DOWN = [503] * 1_000_000  # a scripted server's answers until the test clears them


class Disk:
    """The spool's writes (segments and cursor) fail with ``code`` while ``full`` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, code: int = errno.ENOSPC) -> None:
        self.full = False
        self.refused = 0
        real = spool_module._pwrite_all

        def write(fd: int, data: bytes, offset: int) -> None:
            if self.full:
                self.refused += 1
                raise OSError(code, os.strerror(code))
            real(fd, data, offset)

        monkeypatch.setattr(spool_module, "_pwrite_all", write)


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Disk:
    # Tests free the disk and expect the spool tried at once, not a second later.
    monkeypatch.setattr(influxdb_module, "SPOOL_RETRY", 0.0, raising=False)
    return Disk(monkeypatch)


def _reported_drops(output: InfluxDBOutput, stats: Stats) -> dict[tuple[Any, Any], Any]:
    """``numbat.collector.dropped`` of one report, by (reason, server)."""
    return {
        (event["reason"], event["server"]): event["value"]
        for event in stats.report(10.0)
        if event["name"] == f"{STATS_PREFIX}.dropped" and event["output"] == output.options.label
    }


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EIO])
def test_a_spool_that_cannot_be_written_sends_from_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    """While the spool refuses writes every batch goes to the server from memory, in order,
    said once in the log; once the disk takes writes the spool is used again by itself."""
    caplog.set_level(logging.INFO, logger=influxdb_module.__name__)
    monkeypatch.setattr(influxdb_module, "SPOOL_RETRY", 0.0, raising=False)
    disk = Disk(monkeypatch, code)
    events = _events(600)

    async def main() -> None:
        async with scripted_influx() as server:
            options = _options([server.url], tmp_path, create_database=False, batch_size=50)
            output = InfluxDBOutput(options, backoff=lambda attempt: 0.0)
            await output.start()
            sender = output.senders[0]
            disk.full = True
            await _send(output, events[:300], 300)
            assert disk.refused and sender.spool.disk_bytes == 0
            disk.full = False
            await _send(output, events[300:], 600)
            assert sender.spool.disk_bytes > 0, "spooled again"
            await output.close()
            assert server.lines == _lines(events, output)
            assert output.lost() == {
                ("spool_full", sender.name): 0,
                ("spool_corrupt", sender.name): 0,
                ("expired", sender.name): 0,
                ("rejected", sender.name): 0,
            }

    asyncio.run(main())
    said = [r.getMessage() for r in caplog.records if r.name == influxdb_module.__name__]
    assert len([m for m in said if "the spool cannot be written" in m]) == 1, said
    assert len([m for m in said if "the spool takes batches again" in m]) == 1, said


def test_memory_is_bounded_by_queue_size_and_the_rest_counted_as_spool_full(
    tmp_path: Path, disk: Disk, caplog: pytest.LogCaptureFixture
) -> None:
    """Disk full and server down: queue_size points wait in memory, the rest are dropped
    and counted (dropped, reason=spool_full, per server); the held ones reach the server
    when it is back."""
    events = _events(500)
    stats = Stats("test", STATS_PREFIX)

    async def main() -> None:
        async with scripted_influx(*DOWN) as server:
            options = _options(
                [server.url], tmp_path, create_database=False, batch_size=10, queue_size=100
            )
            output = InfluxDBOutput(options, backoff=lambda attempt: 0.01)
            await output.start()
            OutputQueue(options.label, output, 1_000, stats)
            sender = output.senders[0]
            disk.full = True
            await output.write(Batch(events))
            await output.flush()
            assert output.server_stats()[sender.name]["unspooled"] == 100
            assert _reported_drops(output, stats) == {("spool_full", sender.name): 400}
            server.statuses.clear()
            await asyncio.to_thread(wait_until, lambda: sender.counters.written == 100, 10.0)
            assert _reported_drops(output, stats) == {}, "counted once"
            await output.close()
            assert server.lines == _lines(events, output)[:100]

    asyncio.run(main())
    assert "points dropped (spool_full)" in caplog.text


def test_the_sender_carries_on_when_acks_cannot_write_the_cursor(
    tmp_path: Path, disk: Disk
) -> None:
    """Batches spooled while the server was down are all sent once the disk is full: an ack
    whose cursor cannot be written does not stop the sender (it used to end its thread)."""
    events = _events(300)

    async def main() -> None:
        async with scripted_influx(*DOWN) as server:
            options = _options([server.url], tmp_path, create_database=False, batch_size=30)
            output = InfluxDBOutput(options, backoff=lambda attempt: 0.01)
            await output.start()
            await output.write(Batch(events))
            await output.flush()
            assert output.senders[0].spool.pending_points == 300
            disk.full = True
            server.statuses.clear()
            await _send(output, [], 300)
            assert disk.refused, "the acks tried to write the cursor"
            await _send(output, _events(330)[300:], 330)
            await output.close()
            assert server.lines == _lines(_events(330), output)

    asyncio.run(main())


def test_the_flush_loop_carries_on_when_the_disk_is_full(tmp_path: Path, disk: Disk) -> None:
    """A partial batch is flushed on time although the spool refuses it, and the next too
    (the flush loop used to die on the first)."""

    async def main() -> None:
        async with scripted_influx() as server:
            options = _options([server.url], tmp_path, create_database=False)
            output = InfluxDBOutput(options, backoff=lambda attempt: 0.0)
            await output.start()
            disk.full = True
            for count in (5, 10):
                await output.write(Batch(_events(10)[count - 5 : count]))  # no flush()
                arrived = lambda count=count: len(server.lines) == count  # noqa: E731
                await asyncio.to_thread(wait_until, arrived, 10.0)
            await output.close()
            assert server.lines == _lines(_events(10), output)

    asyncio.run(main())


def test_held_batches_move_to_the_spool_once_the_disk_takes_writes(
    tmp_path: Path, disk: Disk
) -> None:
    """Batches held in memory while the disk was full are spooled when it has room again,
    with no new batch to prompt it (the one being retried too), so a restart keeps them."""
    events = _events(50)

    async def main() -> tuple[Path, InfluxDBOutput]:
        async with scripted_influx(*DOWN) as server:
            options = _options(
                [server.url], tmp_path, create_database=False, batch_size=10, timeout=0.2
            )
            output = InfluxDBOutput(options, backoff=lambda attempt: 0.01)
            await output.start()
            sender = output.senders[0]
            disk.full = True
            await output.write(Batch(events))
            await output.flush()
            assert sender.figures()["unspooled"] == 50
            disk.full = False
            await asyncio.to_thread(wait_until, lambda: sender.spool.pending_points == 50, 10.0)
            assert sender.figures()["unspooled"] == 0
            await output.close()
            assert server.lines == []
            return sender.spool.directory, output

    directory, output = asyncio.run(main())
    with Spool(directory) as spool:
        kept = []
        while (record := spool.peek()) is not None:
            spool.ack(record.id)
            kept += record.payload.splitlines()
    # The one being retried may move after the others (order means nothing to InfluxDB:
    # every point carries its time).
    assert sorted(kept) == sorted(_lines(events, output))


def test_what_is_held_at_shutdown_on_a_full_disk_is_counted(tmp_path: Path, disk: Disk) -> None:
    """Closing with batches in memory, the server down and the disk still full: close
    returns (no exception) and the points it had to drop are counted as spool_full."""

    async def main() -> None:
        async with scripted_influx(*DOWN) as server:
            options = _options([server.url], tmp_path, create_database=False, timeout=0.2)
            output = InfluxDBOutput(options, backoff=lambda attempt: 0.01)
            await output.start()
            disk.full = True
            await output.write(Batch(_events(40)))
            await output.close()
            assert output.lost()[("spool_full", output.senders[0].name)] == 40

    asyncio.run(main())


def test_damaged_spool_records_are_skipped_and_counted_as_spool_corrupt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A flipped byte in a spool left from the last run costs the one batch it is in: the
    others are sent, its points are counted (dropped, reason=spool_corrupt) and the log
    names its segment and offset."""
    stats = Stats("test", STATS_PREFIX)
    batches = [
        b"".join(b"m value=%d %d\n" % (i, T0 * 10**6 + i) for i in range(n, n + 4))
        for n in (0, 4, 8)
    ]

    async def main() -> None:
        async with scripted_influx() as server:
            options = _options([server.url], tmp_path, create_database=False)
            segment = _spool_before_start(options, server.url, tmp_path, batches)
            where = 20 + len(batches[0]) + 20 + 3  # inside the second record's payload
            data = bytearray(segment.read_bytes())
            data[where] ^= 0xFF
            segment.write_bytes(bytes(data))
            output = InfluxDBOutput(options)
            await output.start()
            OutputQueue(options.label, output, 1_000, stats)
            await output.close()
            assert server.lines == (batches[0] + batches[2]).splitlines()
            name = output.senders[0].name
            assert _reported_drops(output, stats) == {("spool_corrupt", name): 4}

    asyncio.run(main())
    assert f"damaged record at segment 1 offset {20 + len(batches[0])}" in caplog.text


# -- a real collector, a real influxd, a real full disk ----------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "4m") as path:
        yield path


def _count(influx: RestartableInflux, where: str) -> int:
    """Points of the test's events stored in influxd, of the phases ``where`` names."""
    query = f'SELECT count("value") FROM "disk.events" WHERE {where}'
    try:
        result = influx.server.query(query, db="disk")
    except AssertionError:  # no database yet
        return 0
    series = result.get("series") or [{"values": [[0, 0]]}]
    return int(series[0]["values"][0][1])


def _send_phase(port: int, phase: int, count: int, arrived: Callable[[int], bool]) -> None:
    """``count`` events tagged ``phase``, 500 at a time, each chunk awaited with
    ``arrived(events of the phase sent so far)`` (a burst is not what this is about)."""
    for first in range(0, count, 500):
        lines = b"".join(
            b'{"name":"disk.events","value":%d,"time":%d,"phase":"%d"}\n'
            % (i, T0 + phase * count + i, phase)
            for i in range(first, first + 500)
        )
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(lines)
        sent = first + 500
        wait_until(lambda: arrived(sent), 30.0, f"{sent} events of phase {phase}")  # noqa: B023


def _lines_in(path: Path) -> int:
    try:
        return sum(b'"disk.events"' in line for line in path.read_bytes().splitlines())
    except FileNotFoundError:
        return 0


def _dropped(path: Path) -> dict[str, float]:
    """The collector's dropped counts for the influxdb output in its log file, by reason."""
    out: dict[str, float] = {}
    for line in path.read_bytes().splitlines():
        event = json.loads(line)
        if event["name"] == f"{STATS_PREFIX}.dropped" and event.get("output") == "influxdb":
            out[event["reason"]] = out.get(event["reason"], 0) + event["value"]
    return out


def test_a_full_disk_under_the_spool_loses_nothing_uncounted(
    small_disk: Path, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A collector whose spool's tmpfs is full: with influxd up every event is stored from
    memory; with it down too, queue_size points wait and the rest are counted; freed, the
    spool takes batches again by itself (an outage then costs nothing); SIGTERM exits 0."""
    influx = RestartableInflux(tmp_path / "influx").start()
    try:
        port, log = free_port(), tmp_path / "events.jsonl"
        influxdb: dict[str, Any] = {
            "type": "influxdb",
            "urls": [influx.url],
            "database": "disk",
            "spool_dir": str(small_disk / "spool"),
            "flush_interval": 0.05,
            "batch_size": 200,
            "queue_size": 2000,
            "timeout": 2.0,
        }
        logfile = {"type": "logfile", "path": str(log)}
        # One report, at SIGTERM: then every drop it counts is an event of this test.
        config = toml([f"tcp://127.0.0.1:{port}"], [influxdb, logfile], stats_interval=3600)
        daemon = start(daemons, tmp_path, config)
        filler = fill(small_disk)
        logged = [0]

        def in_log(sent: int) -> bool:  # each phase's events reached the log file output
            return _lines_in(log) >= logged[0] + sent

        # Disk full, influxd up: every event is stored, from memory.
        _send_phase(port, 1, 3000, lambda sent: _count(influx, "phase = '1'") >= sent)
        daemon.wait_log("the spool cannot be written")
        assert "spool_full" not in daemon.stderr()
        logged[0] += 3000

        # Disk full, influxd down: memory fills up (queue_size points), the rest is dropped.
        influx.stop()
        _send_phase(port, 2, 5000, in_log)
        daemon.wait_log("(spool_full)")
        logged[0] += 5000

        # Room again: the spool takes batches by itself, an outage costs nothing again.
        filler.unlink()
        daemon.wait_log("the spool takes batches again")
        _send_phase(port, 3, 5000, in_log)
        influx.start()
        wait_until(lambda: _count(influx, "phase = '3'") == 5000, 60.0, "phase 3 stored")
        wait_until(lambda: _count(influx, "phase = '2'") >= 2000, 60.0, "held phase 2 stored")

        daemon.signal(signal.SIGTERM)
        assert daemon.wait(30) == 0, daemon.stderr()
        assert "Traceback" not in daemon.stderr()
        dropped = _dropped(log)
        assert set(dropped) <= {"spool_full", "queue_full"} and dropped.get("spool_full"), dropped
        stored = _count(influx, "phase = '1' OR phase = '2'")
        assert stored + sum(dropped.values()) == 8000, (stored, dropped)
        # The counts reached the store too, as the collector's own events.
        where = "reason = 'spool_full'"
        query = urlencode(
            {"db": "disk", "q": f'SELECT sum(value) FROM "{STATS_PREFIX}.dropped" WHERE {where}'}
        )
        status, body = http("GET", f"{influx.url}/query?{query}")
        assert status == 200
        assert json.loads(body)["results"][0]["series"][0]["values"][0][1] == dropped["spool_full"]
    finally:
        influx.stop()


def test_logs_name_no_credentials_on_a_full_disk(
    tmp_path: Path, disk: Disk, caplog: pytest.LogCaptureFixture
) -> None:
    """The full-disk and spool_full lines name the server by host:port, never user:password."""
    caplog.set_level(logging.INFO)

    async def main() -> None:
        async with scripted_influx(*DOWN) as server:
            url = server.url.replace("http://", "http://user:s3cret@")
            options = _options([url], tmp_path, create_database=False, queue_size=5, timeout=0.2)
            output = InfluxDBOutput(options, backoff=lambda attempt: 0.01)
            await output.start()
            disk.full = True
            await output.write(Batch(_events(20)))
            await output.flush()
            await output.close()

    asyncio.run(main())
    assert "spool_full" in caplog.text and "s3cret" not in caplog.text


@pytest.mark.parametrize("spool_before", [True, False])
def test_an_output_starts_on_a_full_disk(
    small_disk: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, spool_before: bool
) -> None:
    """With the spool's disk full the output starts all the same (it used to fail with
    ENOSPC writing its generation, leaving generation.tmp): the generation comes from
    the clock, logged; no temporary file is left; the spool opens (an existing one, or
    a new one) and batches reach the server from memory."""
    caplog.set_level(logging.WARNING)
    events = _events(100)

    async def main() -> None:
        async with scripted_influx() as server:
            options = _options([str(server.url)], small_disk / "spool", create_database=False)
            if spool_before:  # a spool and a count from an earlier run
                output = InfluxDBOutput(options)
                await output.start()
                await output.close()
            fill(small_disk)
            output = InfluxDBOutput(options, backoff=lambda attempt: 0.0)
            await output.start()
            await _send(output, events, 100)
            await output.close()
            assert server.lines == _lines(events, output)
            assert output.senders[0].counters.written == 100

    asyncio.run(main())
    worker = small_disk / "spool" / "influxdb" / "worker-0"
    assert not (worker / "generation.tmp").exists()
    assert "cannot keep the generation count" in caplog.text
    assert "No space left on device" in caplog.text


@pytest.mark.parametrize("out_of", ["inodes", "blocks and inodes"])
def test_an_output_starts_when_its_spool_directory_cannot_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, out_of: str
) -> None:
    """A new output on a disk with no inode left (its spool directory cannot be made)
    starts all the same, says so, sends from memory, holds queue_size points while the
    server is down and counts the rest spool_full; once files can be made again the spool
    is made by itself, takes the held batches, and they reach the server when it is back."""
    monkeypatch.setattr(influxdb_module, "SPOOL_RETRY", 0.0, raising=False)
    caplog.set_level(logging.INFO, logger=influxdb_module.__name__)
    events = _events(300)

    async def main(disk: Path) -> None:
        async with scripted_influx() as server:
            options = _options(
                [server.url], disk / "spool", create_database=False, batch_size=10, queue_size=50
            )
            filler = fill(disk) if out_of != "inodes" else None
            inodes = use_up_inodes(disk)
            output = InfluxDBOutput(options, backoff=lambda attempt: 0.01)
            await output.start()
            sender = output.senders[0]
            assert not (disk / "spool").exists()
            await _send(output, events[:40], 40)  # from memory
            server.statuses.extend(DOWN)
            await output.write(Batch(events[40:]))
            await output.flush()
            await asyncio.to_thread(wait_until, lambda: sender.spool_full == 210, 10.0)
            for path in [*inodes, *([filler] if filler else [])]:
                path.unlink()
            await asyncio.to_thread(wait_until, lambda: sender.spool.disk_bytes > 0, 10.0)
            assert isinstance(sender.spool, Spool) and sender.spool.pending_points >= 40
            server.statuses.clear()
            await asyncio.to_thread(wait_until, lambda: sender.counters.written == 90, 10.0)
            await output.close()
            assert server.lines == _lines(events, output)[:90]
            assert output.lost()[("spool_full", sender.name)] == 210

    with tmpfs(tmp_path / "disk", "4m", inodes=64) as disk:
        asyncio.run(main(disk))
    assert "cannot make the spool" in caplog.text
    assert "the spool takes batches again" in caplog.text


def test_a_spool_directory_another_collector_took_meanwhile_is_refused_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Started with no spool (no inode left), then another process opens that spool
    directory: batches stay in memory (the rest counted spool_full), a line says why,
    and the output still closes cleanly."""
    monkeypatch.setattr(influxdb_module, "SPOOL_RETRY", 0.0, raising=False)
    events = _events(100)

    async def main(disk: Path) -> None:
        async with scripted_influx(*DOWN) as server:
            options = _options(
                [server.url], disk / "spool", create_database=False, batch_size=10, queue_size=30
            )
            inodes = use_up_inodes(disk)
            output = InfluxDBOutput(options, backoff=lambda attempt: 0.01)
            await output.start()
            sender = output.senders[0]
            for path in inodes:
                path.unlink()
            with Spool(sender.spool.directory):  # the other collector
                await output.write(Batch(events))
                await output.flush()
                await asyncio.to_thread(wait_until, lambda: sender.spool_full == 70, 10.0)
                assert sender.held_points == 30
                server.statuses.clear()
                await asyncio.to_thread(wait_until, lambda: sender.counters.written == 30, 10.0)
                await output.close()

    with tmpfs(tmp_path / "disk", "4m", inodes=64) as disk:
        asyncio.run(main(disk))
    assert "is open elsewhere (two collectors with one spool_dir?)" in caplog.text
