"""Points older than the server's retention policy, against a real influxd with a policy of
one hour (the least it takes): counted ``expired`` per server (``dropped``), never
``written``, and logged rate-limited; lines influxd hides in the same answer are found."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from numbat.collector.daemon import STATS_PREFIX
from numbat.collector.fanout import OutputQueue
from numbat.collector.outputs import Batch
from numbat.collector.outputs.influxdb import InfluxDBOutput
from numbat.event import Event, now_ms
from numbat.server.stats import Stats
from tests.collector.outputs.test_influxdb import _options
from tests.collector.outputs.test_influxdb_disk import _reported_drops
from tests.helpers import wait_until
from tests.store.conftest import InfluxDatabase

HOUR_MS = 3_600_000
RP = "hour"


@pytest.fixture
def hour_db(influx_db: InfluxDatabase) -> InfluxDatabase:
    """The test's database with a retention policy ``hour`` of one hour."""
    influx_db.query(
        f'CREATE RETENTION POLICY "{RP}" ON "{influx_db.name}" DURATION 1h REPLICATION 1'
    )
    return influx_db


def _stored(influx: InfluxDatabase, measurement: str) -> list[float]:
    """The values stored in the one-hour policy, in order."""
    result = influx.query(f'SELECT "value" FROM "{RP}"."{measurement}"')
    return sorted(row[1] for series in result.get("series", []) for row in series["values"])


async def _settle(output: InfluxDBOutput, events: list[Event]) -> None:
    """Write ``events`` and wait until each is counted written, expired or rejected."""
    counters = output.senders[0].counters

    def settled() -> int:
        return counters.written + counters.expired + counters.rejected

    goal = settled() + len(events)
    await output.write(Batch(events))
    await output.flush()
    await asyncio.to_thread(wait_until, lambda: settled() >= goal, 10.0, "points settled")


def test_points_past_the_retention_are_counted_expired_not_written(
    hour_db: InfluxDatabase, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch of fresh points and points two hours old, then one of old points only: the
    fresh ones are stored and counted written, the old ones counted expired for the
    server (reported as dropped, reason=expired), and one line is logged for both
    batches; before, they were counted rejected, and never reported as dropped."""
    stats = Stats("test", STATS_PREFIX)
    now = now_ms()
    mixed: list[Event] = [
        {"name": "m", "value": i, "time": now - (2 * HOUR_MS if i % 3 == 0 else 0) + i % 3}
        for i in range(60)
    ]
    old: list[Event] = [
        {"name": "m", "value": 100 + i, "time": now - 2 * HOUR_MS} for i in range(25)
    ]
    options = _options([hour_db.server.url], tmp_path, database=hour_db.name, retention_policy=RP)

    async def main() -> InfluxDBOutput:
        output = InfluxDBOutput(options)
        await output.start()
        OutputQueue(options.label, output, 1_000, stats)
        for events in (mixed, old):
            await _settle(output, events)
        await output.close()
        return output

    with caplog.at_level(logging.WARNING):
        output = asyncio.run(main())

    assert _stored(hour_db, "m") == [float(i) for i in range(60) if i % 3]
    counters = output.senders[0].counters
    assert (counters.written, counters.expired, counters.rejected) == (40, 20 + 25, 0)
    name = output.senders[0].name
    assert output.lost()[("expired", name)] == 45
    assert _reported_drops(output, stats) == {("expired", name): 45}
    said = [r for r in caplog.records if "older than its retention policy" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].getMessage() == (
        f"influxdb {name} dropped 20 of 60 points as older than its retention policy (expired)"
    )


def test_lines_influxd_cannot_parse_beside_expired_points_are_not_counted_written(
    hour_db: InfluxDatabase, tmp_path: Path
) -> None:
    """influxd 1.6.7 answers a batch with an unparsable line and points past its retention
    with "points beyond retention policy dropped=2" alone; the line it could not parse
    is found (the rest is posted again) and counted rejected, not written; before, it
    was counted written."""
    options = _options([hour_db.server.url], tmp_path, database=hour_db.name, retention_policy=RP)
    new, old = now_ms() * 1_000_000, (now_ms() - 2 * HOUR_MS) * 1_000_000
    payload = b"".join(
        [
            b"m value=1 %d\n" % new,
            b"m value=2 %d\n" % old,
            b"m value= %d\n" % (new + 1),  # no value: influxd cannot parse it
            b'm value=4,description="a\nb" %d\n' % (new + 2),
            b"m value=5 %d\n" % (old + 1),
        ]
    )

    async def main() -> InfluxDBOutput:
        output = InfluxDBOutput(options)
        await output.start()
        await output.senders[0].append([(payload, 5)])  # as if spooled
        await output.close()
        return output

    counters = asyncio.run(main()).senders[0].counters
    assert _stored(hour_db, "m") == [1.0, 4.0]
    assert (counters.written, counters.expired, counters.rejected) == (2, 2, 1)
