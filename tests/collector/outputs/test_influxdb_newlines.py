"""The InfluxDB output with text fields that hold newlines (line protocol carries them
inside the quotes), against real influxd: every cut of a batch (batch_bytes, a 413) falls
between points, every point is stored once with its full text, and counts are right."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from numbat.collector.daemon import STATS_PREFIX
from numbat.collector.fanout import OutputQueue
from numbat.collector.outputs import Batch
from numbat.collector.outputs.influxdb import InfluxDBOutput
from numbat.config import InfluxDBOutputConfig
from numbat.event import Event
from numbat.server.stats import Stats
from numbat.store.spool import Spool
from tests.collector.outputs.test_influxdb import (
    T0,
    _options,
    _spool_before_start,
    scripted_influx,
)
from tests.collector.outputs.test_influxdb_disk import _reported_drops
from tests.helpers import wait_until
from tests.store.conftest import (
    _INFLUXD_CONFIG,
    INFLUXD,
    InfluxDatabase,
    InfluxServer,
    _start,
    free_port,
)
from tests.store.scanline import scan_line_ends

BODY_LIMIT = 3_000  # influxd's max-body-size in the 413 test, in bytes


def _events(n: int) -> list[Event]:
    """Errors with multi-line descriptions (quotes, commas, '=' in them too), between
    one-line ones and events without text; ten a millisecond."""
    events: list[Event] = []
    for i in range(n):
        event: Event = {"name": "web.errors", "value": i, "time": T0 + i // 10, "host": "h1"}
        if i % 3 == 0:
            event["description"] = f'error {i}\nat line {i}, x="y"\n\n  in module m=1\n'
        elif i % 3 == 1:
            event["description"] = f"plain {i}"
        if i % 5 == 0:
            event["message"] = "two\nlines"
        events.append(event)
    return events


def _stored(influx: InfluxDatabase) -> list[tuple[Any, ...]]:
    """Each stored point's value and text fields, by value."""
    rows = influx.rows("web.errors")
    return sorted((r["value"], r.get("description"), r.get("message")) for r in rows)


def _expected(events: list[Event]) -> list[tuple[Any, ...]]:
    return sorted((e["value"], e.get("description"), e.get("message")) for e in events)


async def _write_all(options: InfluxDBOutputConfig, events: list[Event]) -> InfluxDBOutput:
    """Write ``events`` in one batch, wait until all are settled, close; the output."""
    output = InfluxDBOutput(options, backoff=lambda attempt: 0.0)
    await output.start()
    await output.write(Batch(events))
    await output.flush()
    counters = output.senders[0].counters
    settled = lambda: counters.written + counters.rejected >= len(events)  # noqa: E731
    await asyncio.to_thread(wait_until, settled, 20.0, "every point settled")
    await output.close()
    return output


def test_batches_cut_by_batch_bytes_keep_multi_line_texts_whole(
    influx_db: InfluxDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """300 events, a third with multi-line descriptions, in requests of at most 1,500
    bytes: each request is cut between points and counts its points as influxd does, and
    every point is stored once with its full text; before, cuts fell inside descriptions
    (both halves refused) and records counted newlines as points."""
    records: list[tuple[bytes, int]] = []
    append = Spool.append

    def spy(spool: Spool, payload: bytes, points: int) -> Any:
        records.append((payload, points))
        return append(spool, payload, points)

    monkeypatch.setattr(Spool, "append", spy)
    options = _options([influx_db.server.url], tmp_path, database=influx_db.name, batch_bytes=1_500)
    events = _events(300)

    output = asyncio.run(_write_all(options, events))

    counters = output.senders[0].counters
    assert (counters.written, counters.rejected) == (300, 0)
    assert _stored(influx_db) == _expected(events)
    assert len(records) > 10
    for payload, points in records:
        assert points == len(scan_line_ends(payload))
        assert len(payload) <= 1_500 or points == 1


@pytest.fixture(scope="module")
def small_body_influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """An influxd that answers 413 to a request body over BODY_LIMIT bytes."""
    root = tmp_path_factory.mktemp("influxd-small-body")

    def make_args() -> tuple[list[str], str]:
        http_port, rpc_port = free_port(), free_port()
        config = root / "influxd.conf"
        text = _INFLUXD_CONFIG.format(root=root, http_port=http_port, rpc_port=rpc_port)
        config.write_text(text.replace("[http]\n", f"[http]\n  max-body-size = {BODY_LIMIT}\n"))
        return [INFLUXD, "run", "-config", str(config)], f"http://127.0.0.1:{http_port}"

    process, url = _start(make_args, "/ping", 204, root / "influxd.log")
    yield InfluxServer(url)
    process.stop()


def test_a_batch_split_by_a_413_keeps_multi_line_texts_whole(
    small_body_influxd: InfluxServer, tmp_path: Path
) -> None:
    """A batch of 300 events (about 40 kB) to an influxd whose body limit is 3,000 bytes:
    it is halved at point ends until influxd takes each part, and every point is stored
    once with its full text; before, halves cut inside descriptions were refused (400)."""
    influx = small_body_influxd.database()
    options = _options([small_body_influxd.url], tmp_path, database=influx.name)
    events = _events(300)

    output = asyncio.run(_write_all(options, events))

    counters = output.senders[0].counters
    assert (counters.written, counters.rejected, counters.retries) == (300, 0, 0)
    assert _stored(influx) == _expected(events)


def test_a_line_influxd_cannot_parse_counts_once_whatever_newlines_it_holds(
    influx_db: InfluxDatabase, tmp_path: Path
) -> None:
    """A line influxd cannot parse, with newlines in its description, is one point
    rejected: the point after it is stored and counted written; before, each line of the
    description counted as a point refused."""
    options = _options([influx_db.server.url], tmp_path, database=influx_db.name)
    t = T0 * 1_000_000
    bad = b'web.errors value=1,description="a\nb\nc",x=zz %d\n' % t  # zz: not a value
    good = b"web.errors value=2 %d\n" % (t + 1)

    async def main() -> InfluxDBOutput:
        output = InfluxDBOutput(options)
        await output.start()
        await output.senders[0].append([(bad + good, 2)])  # as if spooled
        await output.close()
        return output

    counters = asyncio.run(main()).senders[0].counters
    assert [row["value"] for row in influx_db.rows("web.errors")] == [2]
    assert (counters.written, counters.rejected) == (1, 1)


def test_a_damaged_record_with_multi_line_texts_counts_its_points(tmp_path: Path) -> None:
    """A spool record whose header is damaged is estimated from its payload: as many
    points as influxd would find in it (4), not its newlines (16)."""
    stats = Stats("test", STATS_PREFIX)
    t = T0 * 1_000_000
    batches = [
        b"".join(
            b'm value=%d,description="one\nthree\nfour\n" %d\n' % (i, t + i)
            for i in range(n, n + 4)
        )
        for n in (0, 4, 8)
    ]

    async def main() -> None:
        async with scripted_influx() as server:
            options = _options([server.url], tmp_path, create_database=False)
            segment = _spool_before_start(options, server.url, tmp_path, batches)
            where = 20 + len(batches[0]) + 9  # the second record's point count
            data = bytearray(segment.read_bytes())
            data[where] ^= 0xFF
            segment.write_bytes(bytes(data))
            output = InfluxDBOutput(options)
            await output.start()
            OutputQueue(options.label, output, 1_000, stats)
            await output.close()
            assert server.bodies == [batches[0], batches[2]]
            name = output.senders[0].name
            assert _reported_drops(output, stats) == {("spool_corrupt", name): 4}

    asyncio.run(main())
