"""The InfluxDB output when influxd refuses new tag values (max-values-per-tag) or new
series (max-series-per-database): the tag is demoted, the refused points re-sent, every
point stored exactly once, the demotion remembered across restarts."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from numbat.collector.outputs import Batch
from numbat.collector.outputs.influxdb import InfluxDBOutput
from numbat.config import InfluxDBOutputConfig, from_dict
from numbat.event import Event
from numbat.store.cardinality import Demotion, DemotionFile
from tests.helpers import wait_until
from tests.store.conftest import InfluxDatabase, InfluxServer, start_influxd

T0 = 1_700_000_000_000
LIMIT = 50  # the servers' max-values-per-tag
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def limited_influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """An influxd that takes at most 50 values per tag of a measurement."""
    process, server = start_influxd(
        tmp_path_factory.mktemp("influxd-limited"), f"max-values-per-tag = {LIMIT}"
    )
    yield server
    process.stop()


@pytest.fixture
def limited_db(limited_influxd: InfluxServer) -> Iterator[InfluxDatabase]:
    db = limited_influxd.database()
    yield db
    limited_influxd.drop_database(db.name)


def _options(url: str, spool: Path, database: str, **extra: Any) -> InfluxDBOutputConfig:
    raw = {
        "type": "influxdb",
        "urls": [url],
        "database": database,
        "spool_dir": str(spool),
        "flush_interval": 0.05,
        "timeout": 5.0,
        "batch_size": 25,  # many batches: influxd checks its limits once per batch
        **extra,
    }
    output = from_dict({"collector": {"listen": [], "outputs": [raw]}}).collector.outputs[0]
    assert isinstance(output, InfluxDBOutputConfig)
    return output


def _requests(host: str, n: int, start: int = 0, **fields: Any) -> list[Event]:
    """``n`` events with a unique reqid each, ten per millisecond."""
    return [
        {
            "name": "web.requests",
            "value": i,
            "time": T0 + i // 10,
            "host": host,
            "reqid": f"{host}-{i}",
            **fields,
        }
        for i in range(start, start + n)
    ]


def _settled(output: InfluxDBOutput, points: int) -> Callable[[], bool]:
    counters = output.senders[0].counters
    return lambda: counters.written + counters.rejected >= points


async def _run(output: InfluxDBOutput, events: list[Event], chunk: int = 40) -> None:
    """Write ``events`` in chunks (yielding between them) and wait until all are settled."""
    for start in range(0, len(events), chunk):
        await output.write(Batch(events[start : start + chunk]))
        await asyncio.sleep(0.01)
    await output.flush()
    await asyncio.to_thread(wait_until, _settled(output, len(events)), 30.0)


def _rows(db: InfluxDatabase, measurement: str = "web.requests") -> list[dict[str, Any]]:
    return db.rows(measurement)


def _reqids(rows: list[dict[str, Any]]) -> Counter[str]:
    """How often each reqid is stored, as a field or as a tag (``SELECT *`` names a field
    ``reqid`` and, when the measurement has both, the tag ``reqid_1``)."""
    return Counter(str(row.get("reqid_1", row.get("reqid"))) for row in rows)


def _count(db: InfluxDatabase, measurement: str = "web.requests") -> int:
    result = db.query(f'SELECT count("value") FROM "{measurement}"')
    series = result.get("series") or [{"values": [[0, 0]]}]
    return int(series[0]["values"][0][1])


def _tag_values(db: InfluxDatabase, tag: str) -> int:
    result = db.query(f'SHOW TAG VALUES FROM "web.requests" WITH KEY = "{tag}"')
    return sum(len(s["values"]) for s in result.get("series", []))


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_two_collectors_lose_nothing_at_max_values_per_tag(
    limited_db: InfluxDatabase, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two collectors writing unique reqids to one influxd with max-values-per-tag = 50:
    every point is stored exactly once (today most past the limit are lost), the tag is
    demoted once per collector, and its points keep their reqid as a field."""
    url, db = limited_db.server.url, limited_db.name
    outputs = [InfluxDBOutput(_options(url, tmp_path / host, db)) for host in ("host-a", "host-b")]
    sent = {"host-a": _requests("host-a", 600), "host-b": _requests("host-b", 600)}

    async def main() -> None:
        for output in outputs:
            await output.start()
        await asyncio.gather(*(_run(o, sent[h]) for o, h in zip(outputs, sent, strict=True)))
        for output in outputs:
            await output.close()

    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    rows = _rows(limited_db)
    assert _count(limited_db) == 1_200
    assert _reqids(rows) == Counter(e["reqid"] for events in sent.values() for e in events)
    assert sorted(r["value"] for r in rows) == sorted(e["value"] for v in sent.values() for e in v)
    assert _tag_values(limited_db, "reqid") <= 2 * LIMIT  # what each batch overshot by
    for output in outputs:
        counters = output.senders[0].counters
        assert (counters.written, counters.rejected) == (600, 0)
        assert counters.resent > 0
        assert output.stats()["tags_demoted"] == 1
        assert output.server_stats()[output.senders[0].name]["resent"] == counters.resent
    demoted = [w for w in _warnings(caplog) if "refused new values of tag 'reqid'" in w]
    assert len(demoted) == 2, _warnings(caplog)
    for host in sent:
        file = json.loads((tmp_path / host / "influxdb" / "demotions.json").read_text())
        [entry] = file["demotions"]
        assert (entry["database"], entry["measurement"], entry["tag"], entry["limit"]) == (
            db,
            "web.requests",
            "reqid",
            "max-values-per-tag",
        )


def test_a_restarted_collector_applies_the_demotion_without_logging_it_again(
    limited_db: InfluxDatabase, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After a restart the remembered demotion applies from the first point: nothing is
    refused, re-sent or logged at WARNING again, every point stored."""
    options = _options(limited_db.server.url, tmp_path, limited_db.name)

    async def run(events: list[Event]) -> InfluxDBOutput:
        output = InfluxDBOutput(options)
        await output.start()
        await _run(output, events)
        await output.close()
        return output

    first = asyncio.run(run(_requests("h", 300)))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        second = asyncio.run(run(_requests("h", 300, start=300)))
    rows = _rows(limited_db)
    assert _count(limited_db) == 600
    assert _reqids(rows) == Counter(f"h-{i}" for i in range(600))
    assert first.stats()["tags_demoted"] == 1
    counters = second.senders[0].counters
    assert (counters.written, counters.rejected, counters.resent) == (300, 0, 0)
    assert second.stats()["tags_demoted"] == 0
    assert _warnings(caplog) == []
    assert any("1 tag demotion(s) remembered" in r.getMessage() for r in caplog.records)
    # Every point of the second run carries reqid as a field, none as a tag (reqid_1).
    assert all("reqid_1" not in row for row in rows if row["value"] >= 300)


def test_points_with_known_values_stay_tags_and_are_not_stored_twice(
    limited_db: InfluxDatabase, tmp_path: Path
) -> None:
    """A batch mixing tag values the server knows with new ones past the limit: the known
    ones are stored once, as tags; only the refused new ones are re-sent, as fields."""
    known = [f"user-{i}" for i in range(LIMIT)]
    limited_db.write(
        b"".join(b"web.requests,user=%s value=0 1\n" % user.encode() for user in known)
    )
    events: list[Event] = [
        {
            "name": "web.requests",
            "value": i,
            "time": T0 + i // 5,
            "user": known[i % LIMIT] if i % 3 else f"new-{i}",
        }
        for i in range(1, 301)
    ]
    options = _options(limited_db.server.url, tmp_path, limited_db.name, batch_size=300)

    async def main() -> InfluxDBOutput:
        output = InfluxDBOutput(options)
        await output.start()
        await _run(output, events, chunk=300)  # one batch, rendered before any refusal
        await output.close()
        return output

    counters = asyncio.run(main()).senders[0].counters
    rows = [row for row in _rows(limited_db) if row["time"] > 1]
    assert len(rows) == _count(limited_db) - LIMIT == 300
    as_tag = {row["value"]: row["user_1"] for row in rows if "user_1" in row}
    as_field = {row["value"]: row["user"] for row in rows if "user" in row}
    assert as_tag == {e["value"]: e["user"] for e in events if e["value"] % 3}
    assert as_field == {e["value"]: e["user"] for e in events if not e["value"] % 3}
    assert (counters.written, counters.rejected, counters.resent) == (300, 0, 100)


def test_a_batch_over_two_shards_is_settled_though_influxd_counts_one(
    limited_db: InfluxDatabase, tmp_path: Path
) -> None:
    """influxd's dropped=N counts the refused points of one shard only: points refused in
    the other shard of the same batch are found and re-sent all the same."""
    limited_db.write(b"".join(b"web.requests,reqid=old-%d value=0 1\n" % i for i in range(LIMIT)))
    events = _requests("h", 100)
    for event in events[1::2]:
        event["time"] = int(event["time"]) + 8 * DAY_MS  # another week: another shard
    options = _options(limited_db.server.url, tmp_path, limited_db.name, batch_size=100)

    async def main() -> InfluxDBOutput:
        output = InfluxDBOutput(options)
        await output.start()
        await _run(output, events, chunk=100)
        await output.close()
        return output

    counters = asyncio.run(main()).senders[0].counters
    assert _count(limited_db) == LIMIT + 100
    assert _reqids([r for r in _rows(limited_db) if r["time"] > 1]) == Counter(
        e["reqid"] for e in events
    )
    assert (counters.written, counters.rejected, counters.resent) == (100, 0, 100)


def test_tags_at_their_limit_in_two_measurements_of_one_batch_are_both_demoted(
    limited_db: InfluxDatabase, tmp_path: Path
) -> None:
    """influxd's answer names one refused point's tag only: a second measurement whose
    tag is at its limit too, in the same batch, is found, demoted and re-sent as well."""
    limited_db.write(
        b"".join(b"web.requests,reqid=old-%d value=0 1\n" % i for i in range(LIMIT))
        + b"".join(b"jobs,job=old-%d value=0 1\n" % i for i in range(LIMIT))
    )
    events: list[Event] = []
    for event in _requests("h", 100):
        events += [event, {"name": "jobs", "value": event["value"], "time": event["time"],
                           "job": f"j-{event['value']}"}]  # fmt: skip
    options = _options(limited_db.server.url, tmp_path, limited_db.name, batch_size=200)

    async def main() -> InfluxDBOutput:
        output = InfluxDBOutput(options)
        await output.start()
        await _run(output, events, chunk=200)
        await output.close()
        return output

    output = asyncio.run(main())
    assert _count(limited_db) == LIMIT + 100
    assert _count(limited_db, "jobs") == LIMIT + 100
    counters = output.senders[0].counters
    assert (counters.written, counters.rejected, counters.resent) == (200, 0, 200)
    assert output.renderer.server_demotions == {
        "web.requests": frozenset({"reqid"}),
        "jobs": frozenset({"job"}),
    }


class LosingProxy:
    """Forwards ``/write`` and ``/query`` to an influxd, but answers 503 to the first
    write whose body ``lose`` matches after influxd has stored it: the answer is lost,
    not the data, as when a timeout strikes after the server has written."""

    def __init__(self, target: str, lose: Callable[[bytes], bool]) -> None:
        self.target = target
        self.lose = lose
        self.lost: list[bytes] = []
        self.bodies: list[bytes] = []
        self.url = ""
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_post("/write", self._forward)
        app.router.add_post("/query", self._forward)
        self._runner = web.AppRunner(app)
        self._session: aiohttp.ClientSession | None = None

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        assert self._session is not None
        url = f"{self.target}{request.path}"
        async with self._session.post(url, params=request.query, data=body) as answer:
            status, text = answer.status, await answer.text()
        if request.path == "/write":
            self.bodies.append(body)
            if not self.lost and self.lose(body):
                self.lost.append(body)
                return web.Response(status=503, text="lost answer")
        return web.Response(status=status, text=text, content_type="application/json")

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LosingProxy]:
        self._session = aiohttp.ClientSession()
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        try:
            yield self
        finally:
            await self._runner.cleanup()
            await self._session.close()


def test_a_resend_whose_answer_is_lost_is_retried_with_the_same_bytes(
    limited_db: InfluxDatabase, tmp_path: Path
) -> None:
    """The re-sent points are stored but the answer is lost (503): the retry posts the very
    same bytes, so influxd overwrites them and nothing is stored twice."""
    limited_db.write(b"".join(b"web.requests,reqid=old-%d value=0 1\n" % i for i in range(LIMIT)))
    events = _requests("h", 200)

    def resend(body: bytes) -> bool:
        return b'reqid="' in body

    async def main() -> tuple[InfluxDBOutput, LosingProxy]:
        async with LosingProxy(limited_db.server.url, resend).running() as proxy:
            options = _options(proxy.url, tmp_path, limited_db.name, batch_size=200)
            output = InfluxDBOutput(options, backoff=lambda attempt: 0.0)
            await output.start()
            await _run(output, events, chunk=200)
            await output.close()
        return output, proxy

    output, proxy = asyncio.run(main())
    assert _count(limited_db) == LIMIT + 200
    assert _reqids([r for r in _rows(limited_db) if r["time"] > 1]) == Counter(
        e["reqid"] for e in events
    )
    counters = output.senders[0].counters
    assert (counters.written, counters.rejected, counters.retries) == (200, 0, 1)
    [lost] = proxy.lost
    assert proxy.bodies.count(lost) == 2  # lost, then posted again unchanged


@pytest.fixture(scope="module")
def full_influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """An influxd that takes at most 40 series per database."""
    process, server = start_influxd(
        tmp_path_factory.mktemp("influxd-full"), "max-series-per-database = 40"
    )
    yield server
    process.stop()


def test_max_series_per_database_demotes_the_busiest_tag(
    full_influxd: InfluxServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database at max-series-per-database: the refused points' busiest tag (reqid) is
    demoted and they are stored in their existing series; points whose series would
    still be new cannot be stored and are counted rejected, not lost silently."""
    db = full_influxd.database()
    try:
        db.write(b"web.requests,host=h value=0 1\n")  # the series the points fit into
        db.write(b"".join(b"filler,n=%d value=0 1\n" % i for i in range(39)))
        events = _requests("h", 120)
        orphans: list[Event] = [
            {"name": "jobs", "value": i, "time": T0 + i, "job": f"j-{i}"} for i in range(20)
        ]
        options = _options(full_influxd.url, tmp_path, db.name, batch_size=200)

        async def main() -> InfluxDBOutput:
            output = InfluxDBOutput(options)
            await output.start()
            await _run(output, events + orphans, chunk=200)
            await output.close()
            return output

        with caplog.at_level(logging.WARNING):
            output = asyncio.run(main())
        assert _count(db) == 121
        assert _reqids([r for r in _rows(db) if r["time"] > 1]) == Counter(
            e["reqid"] for e in events
        )
        counters = output.senders[0].counters
        assert (counters.written, counters.rejected) == (120, 20)
        file = json.loads((tmp_path / "influxdb" / "demotions.json").read_text())
        demoted = {(e["measurement"], e["tag"], e["limit"]) for e in file["demotions"]}
        assert demoted == {
            ("web.requests", "reqid", "max-series-per-database"),
            ("jobs", "job", "max-series-per-database"),
        }
        assert any("refused 20 of 140 points" in w for w in _warnings(caplog))
    finally:
        full_influxd.drop_database(db.name)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_demotions_file_that_cannot_be_written_does_not_stop_the_sender(
    limited_db: InfluxDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """The demotions file refuses writes (a full disk used to end the sender's thread
    with a traceback, and nothing reached influxd again): every point is stored, the tag
    demoted in memory; once the file takes writes again, a tick writes it."""
    refused = [0]
    broken = [True]
    real = DemotionFile._write

    def write(file: DemotionFile, entries: list[tuple[str, Demotion]]) -> None:
        if broken[0]:
            refused[0] += 1
            raise OSError(code, os.strerror(code))
        real(file, entries)

    monkeypatch.setattr(DemotionFile, "_write", write)
    output = InfluxDBOutput(_options(limited_db.server.url, tmp_path, limited_db.name))
    path = tmp_path / "influxdb" / "demotions.json"

    async def main() -> None:
        await output.start()
        await _run(output, _requests("h", 300))
        assert output.demotions.unsaved and not path.exists()
        await _run(output, _requests("h", 100, start=300))  # the sender goes on
        broken[0] = False
        await asyncio.to_thread(wait_until, path.exists, 10.0, "the demotions file written")
        await output.close()

    asyncio.run(main())
    assert refused[0] > 0
    assert _count(limited_db) == 400
    assert _reqids(_rows(limited_db)) == Counter(f"h-{i}" for i in range(400))
    counters = output.senders[0].counters
    assert (counters.written, counters.rejected) == (400, 0)
    assert output.stats()["tags_demoted"] == 1
    assert [d.tag for d in DemotionFile(path, limited_db.name).load()] == ["reqid"]
