"""The InfluxDB output against real influxd (and VictoriaMetrics) servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from aiohttp import web

from numbat.collector.daemon import STATS_PREFIX, Collector
from numbat.collector.fanout import OutputQueue
from numbat.collector.outputs import Batch
from numbat.collector.outputs.influxdb import (
    RENDER_CHUNK,
    InfluxDBOutput,
    claim_generation,
    spool_name,
)
from numbat.config import InfluxDBOutputConfig, from_dict
from numbat.event import Event
from numbat.server.stats import Stats
from numbat.store.influx import InfluxStore, StoreError, basic_auth
from numbat.store.lineprotocol import RenderResult
from numbat.store.spool import Spool
from numbat.store.sqlite import SQLiteStore
from tests.helpers import wait_until
from tests.store.conftest import (
    _INFLUXD_CONFIG,
    ADMIN,
    INFLUXD,
    PASSWORD,
    InfluxDatabase,
    InfluxServer,
    VictoriaMetrics,
    _Process,
    free_port,
)

T0 = 1_700_000_000_000


class RestartableInflux:
    """An influxd that a test can stop and start again on the same port and files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = root / "influxd.conf"
        config.write_text(
            _INFLUXD_CONFIG.format(root=root, http_port=self.port, rpc_port=free_port())
        )
        self.args = [INFLUXD, "run", "-config", str(config)]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = InfluxServer(self.url)
        self.process: _Process | None = None

    def start(self) -> RestartableInflux:
        self.process = _Process(self.args, self.root / "influxd.log")
        assert self.process.wait_ready(self.url + "/ping", 204), (
            self.root / "influxd.log"
        ).read_text()
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def count(self, db: str, measurement: str) -> int:
        try:
            result = self.server.query(f'SELECT count("value") FROM "{measurement}"', db=db)
        except AssertionError:
            return 0
        series = result.get("series") or [{"values": [[0, 0]]}]
        return int(series[0]["values"][0][1])


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[RestartableInflux]:
    server = RestartableInflux(tmp_path / "influx")
    yield server.start()
    server.stop()


def _options(urls: list[str], spool: Path, **extra: Any) -> InfluxDBOutputConfig:
    raw = {
        "type": "influxdb",
        "urls": urls,
        "spool_dir": str(spool),
        "flush_interval": 0.05,
        "timeout": 2.0,
        **extra,
    }
    output = from_dict({"collector": {"listen": [], "outputs": [raw]}}).collector.outputs[0]
    assert isinstance(output, InfluxDBOutputConfig)
    return output


def _spool_before_start(
    options: InfluxDBOutputConfig, url: str, root: Path, payloads: list[bytes], points: int = 4
) -> Path:
    """Spool ``payloads`` (``points`` each) where an output with ``options`` sending to
    ``url`` finds them at start, as a previous run left them; the segment file."""
    netloc = url.removeprefix("http://")
    directory = root / options.label / "worker-0" / spool_name([netloc], options.database)
    with Spool(directory) as spool:
        for payload in payloads:
            spool.append(payload, points)
    return next(directory.glob("*.seg"))


def _events(n: int, **fields: Any) -> list[Event]:
    # Ten events per millisecond of one series: the tie-breaker must keep them all.
    return [
        {"name": "web.requests", "value": i, "time": T0 + i // 10, "host": "h1", **fields}
        for i in range(n)
    ]


async def _write(options: InfluxDBOutputConfig, events: list[Event]) -> InfluxDBOutput:
    output = InfluxDBOutput(options)
    await output.start()
    await output.write(Batch(events))
    await output.flush()
    return output


class ScriptedInflux:
    """A loopback ``/write`` endpoint on the test's loop that answers with the statuses it
    is given, in order, then 204; it records every status, every request's body and the
    lines it took (2xx). ``max_bytes``: a body over it gets 413, as from nginx's
    client_max_body_size. For exact control of what a server answers, which influxd does
    not give."""

    def __init__(self, statuses: Sequence[int], max_bytes: int | None = None) -> None:
        self.statuses = list(statuses)
        self.max_bytes = max_bytes
        self.answered: list[int] = []
        self.bodies: list[bytes] = []
        self.lines: list[bytes] = []
        self.url = ""
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_post("/write", self._write)
        self._runner = web.AppRunner(app)

    async def _write(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append(body)
        if self.max_bytes is not None and len(body) > self.max_bytes:
            status = 413
        else:
            status = self.statuses.pop(0) if self.statuses else 204
        self.answered.append(status)
        if status == 204:
            self.lines += body.splitlines()
            return web.Response(status=204)
        return web.json_response({"error": f"scripted {status}"}, status=status)

    async def start(self) -> ScriptedInflux:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        await self._runner.cleanup()


@contextlib.asynccontextmanager
async def scripted_influx(
    *statuses: int, max_bytes: int | None = None
) -> AsyncIterator[ScriptedInflux]:
    server = await ScriptedInflux(statuses, max_bytes).start()
    try:
        yield server
    finally:
        await server.stop()


def _settled(output: InfluxDBOutput, points: int) -> Callable[[], bool]:
    """Whether the output's first sender has settled ``points`` (written or rejected)."""
    counters = output.senders[0].counters
    return lambda: counters.written + counters.rejected >= points


async def _send(output: InfluxDBOutput, events: list[Event], settled: int) -> None:
    """Write and flush ``events``; return once ``settled`` points are settled in all."""
    await output.write(Batch(events))
    await output.flush()
    await asyncio.to_thread(wait_until, _settled(output, settled), 10.0)


def test_events_are_stored_with_text_fields_as_fields(
    influx_db: InfluxDatabase, tmp_path: Path
) -> None:
    """Tags, a float value, description as a field, every same-ms event kept."""
    options = _options([influx_db.server.url], tmp_path, database=influx_db.name)

    async def main() -> None:
        output = await _write(options, _events(30, route="/a", description="slow, then fast"))
        await output.close()
        assert output.senders[0].counters.written == 30

    asyncio.run(main())
    rows = influx_db.rows("web.requests")
    assert sorted(r["value"] for r in rows) == list(range(30))
    assert {(r["host"], r["route"], r["description"]) for r in rows} == {
        ("h1", "/a", "slow, then fast")
    }
    tags = influx_db.query('SHOW TAG KEYS FROM "web.requests"')["series"][0]["values"]
    assert sorted(t[0] for t in tags) == ["host", "route"]


def test_heartbeats_are_not_written(influx_db: InfluxDatabase, tmp_path: Path) -> None:
    """Events named *.heartbeat are skipped by default, as in the original."""
    options = _options([influx_db.server.url], tmp_path, database=influx_db.name)

    async def main() -> InfluxDBOutput:
        output = await _write(
            options,
            [
                {"name": "svc.heartbeat", "value": 1, "time": T0},
                {"name": "svc.up", "value": 1, "time": T0},
            ],
        )
        await output.close()
        return output

    assert asyncio.run(main()).skipped == 1
    assert influx_db.measurements() == ["svc.up"]


def test_replicate_writes_every_point_to_every_host(
    influx_db: InfluxDatabase, restartable: RestartableInflux, tmp_path: Path
) -> None:
    """mode=replicate: two servers each get every point."""
    options = _options(
        [influx_db.server.url, restartable.url], tmp_path, database=influx_db.name, mode="replicate"
    )

    async def main() -> None:
        output = await _write(options, _events(200))
        await output.close()

    asyncio.run(main())
    assert len(influx_db.rows("web.requests")) == 200
    assert restartable.count(influx_db.name, "web.requests") == 200


def test_failover_skips_a_dead_host(influx_db: InfluxDatabase, tmp_path: Path) -> None:
    """mode=failover: with the first server down, the second takes every batch."""
    dead = f"http://127.0.0.1:{free_port()}"
    options = _options(
        [dead, influx_db.server.url], tmp_path, database=influx_db.name, mode="failover"
    )

    async def main() -> None:
        output = await _write(options, _events(100))
        await output.close()

    asyncio.run(main())
    assert len(influx_db.rows("web.requests")) == 100


def test_spooled_batches_survive_a_restart(restartable: RestartableInflux, tmp_path: Path) -> None:
    """Written while influxd is down, closed, reopened later: every point arrives."""
    restartable.stop()
    options = _options([restartable.url], tmp_path / "spool", database="survive")

    async def first_run() -> None:
        output = await _write(options, _events(500))
        await output.close()  # influxd is down: the points stay in the spool
        assert output.senders[0].spool.pending_points == 500

    async def second_run() -> None:
        output = InfluxDBOutput(options)
        await output.start()
        await output.close()

    asyncio.run(first_run())
    restartable.start()
    asyncio.run(second_run())
    assert restartable.count("survive", "web.requests") == 500


def test_partial_write_keeps_the_good_points(influx_db: InfluxDatabase, tmp_path: Path) -> None:
    """One point InfluxDB refuses (a field type clash) does not cost the rest of the batch."""
    # A float description in the same shard (same week) makes a text one a type clash.
    influx_db.write(b"web.requests,host=h1 description=1.5 %d\n" % (T0 * 1_000_000 + 999_999))
    options = _options([influx_db.server.url], tmp_path, database=influx_db.name)
    events = _events(5)
    events[2]["description"] = "text where InfluxDB already has a float"

    async def main() -> InfluxDBOutput:
        output = await _write(options, events)
        await output.close()
        return output

    output = asyncio.run(main())
    assert output.senders[0].counters.rejected == 1
    assert output.senders[0].counters.written == 4
    assert len([r for r in influx_db.rows("web.requests") if "value" in r]) == 4


def test_client_errors_are_not_retried(influxd: InfluxServer, tmp_path: Path) -> None:
    """A 4xx (here: no such database, creation off) is counted and dropped, not retried."""
    options = _options([influxd.url], tmp_path, database="nowhere", create_database=False)

    async def main() -> InfluxDBOutput:
        output = await _write(options, _events(10))
        sender = output.senders[0]
        await asyncio.to_thread(wait_until, lambda: sender.counters.rejected == 10, 10.0)
        await output.close()
        return output

    output = asyncio.run(main())
    assert output.senders[0].counters.retries == 0 and output.senders[0].spool.pending_points == 0


def test_gzip_and_victoria_metrics(victoria_metrics: VictoriaMetrics, tmp_path: Path) -> None:
    """VictoriaMetrics takes the same line protocol, gzip-compressed, as a cluster-ready target."""
    options = _options([victoria_metrics.url], tmp_path, create_database=False, gzip=True)

    async def main() -> None:
        output = await _write(options, _events(20, route="/vm"))
        await output.close()
        assert output.senders[0].counters.written == 20

    asyncio.run(main())
    victoria_metrics.flush()
    series = victoria_metrics.export('{__name__="web.requests_value",route="/vm"}')
    assert sorted(v for s in series for v in s["values"]) == list(range(20))


def test_no_loss_while_influxd_is_down(restartable: RestartableInflux, tmp_path: Path) -> None:
    """50,000 events through the collector while influxd stops and starts: each stored once."""
    port = free_port()
    raw = {
        "type": "influxdb",
        "urls": [restartable.url],
        "database": "outage",
        "spool_dir": str(tmp_path / "spool"),
        "flush_interval": 0.05,
        "timeout": 2.0,
    }
    config = from_dict({"collector": {"listen": [f"tcp://127.0.0.1:{port}"], "outputs": [raw]}})
    total = 50_000

    def send(start: int, stop: int) -> None:
        lines = b"".join(
            b'{"name":"outage.events","value":%d,"time":%d,"host":"h1"}\n' % (i, T0 + i // 10)
            for i in range(start, stop)
        )
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(lines)

    async def main() -> None:
        collector = Collector(config, hostname="test")
        await collector.start()
        try:
            await asyncio.to_thread(send, 0, total // 2)
            await asyncio.to_thread(restartable.stop)
            await asyncio.to_thread(send, total // 2, total)
            await asyncio.to_thread(restartable.start)
            await asyncio.to_thread(
                wait_until, lambda: restartable.count("outage", "outage.events") >= total, 60.0
            )
        finally:
            await collector.stop()

    asyncio.run(main())
    assert restartable.count("outage", "outage.events") == total


def test_credentials_are_sent_and_never_logged(
    secure_influxd: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """username/password reach an auth-enabled influxd; a wrong password is never logged."""
    good = _options(
        [secure_influxd], tmp_path / "a", database="authdb", username=ADMIN, password=PASSWORD
    )
    bad = _options(
        [secure_influxd], tmp_path / "b", database="authdb", username=ADMIN, password="wrong-secret"
    )

    async def main() -> tuple[InfluxDBOutput, InfluxDBOutput]:
        ok = await _write(good, _events(10))
        await ok.close()
        refused = await _write(bad, _events(10))
        sender = refused.senders[0]
        await asyncio.to_thread(wait_until, lambda: sender.counters.rejected == 10, 10.0)
        await refused.close()
        return ok, refused

    ok, _ = asyncio.run(main())
    assert ok.senders[0].counters.written == 10
    assert "wrong-secret" not in caplog.text and PASSWORD not in caplog.text


@pytest.mark.parametrize(
    ("on_cardinality", "counted"), [("field", "demoted"), ("drop", "dropped_tags")]
)
def test_figures_are_reported_with_the_server_as_a_tag(
    influx_db: InfluxDatabase, tmp_path: Path, on_cardinality: str, counted: str
) -> None:
    """The collector reports demoted (or dropped_tags) output-wide and written per server,
    in a server tag."""
    options = _options(
        [influx_db.server.url],
        tmp_path,
        database=influx_db.name,
        max_series_per_measurement=3,
        on_cardinality=on_cardinality,
    )
    # Ten pids, a new series each: past three series the pid tag is demoted (7 points).
    events: list[Event] = [
        {"name": "proc.mem", "value": p, "time": T0, "pid": p} for p in range(10)
    ]
    stats = Stats("test", STATS_PREFIX)

    async def main() -> list[Event]:
        output = await _write(options, events)
        OutputQueue(options.label, output, 1_000, stats)  # what the collector reports
        sender = output.senders[0]
        # Written, and acknowledged: nothing left in the spool.
        done = lambda: sender.counters.written == 10 and not sender.pending()  # noqa: E731
        await asyncio.to_thread(wait_until, done, 10.0)
        reported = stats.report(10.0)
        await output.close()
        return reported

    reported = {
        (event["name"], event.get("server")): event["value"]
        for event in asyncio.run(main())
        if event.get("output") == options.label
    }
    server = urlsplit(influx_db.server.url).netloc
    other = "dropped_tags" if counted == "demoted" else "demoted"
    assert reported[(f"numbat.collector.output.{counted}", None)] == 7
    assert reported[(f"numbat.collector.output.{other}", None)] == 0
    assert reported[("numbat.collector.output.skipped", None)] == 0
    assert reported[("numbat.collector.output.written", server)] == 10
    assert reported[("numbat.collector.output.spooled", server)] == 0
    assert not any(server in str(name) for name, _ in reported)


def _chain(exc: BaseException | None) -> str:
    """An exception's message and repr, and those of its causes."""
    text = ""
    while exc is not None:
        text += f"{exc}\n{exc!r}\n"
        exc = exc.__cause__ or exc.__context__
    return text


def _said(record: logging.LogRecord) -> str:
    """Everything a log record carries: message, arguments, attributes, exception."""
    text = record.getMessage() + repr(vars(record))
    if record.exc_info:
        text += logging.Formatter().formatException(record.exc_info) + _chain(record.exc_info[1])
    return text


def test_password_is_never_logged_at_any_level(
    secure_influxd: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With auth, a dead server and user:password@ URLs, no log record down to DEBUG and no
    exception message shows the password (as given, URL-quoted, or as its Basic header)."""
    caplog.set_level(logging.DEBUG)
    secrets = [PASSWORD, quote(PASSWORD), basic_auth(ADMIN, PASSWORD).split()[1]]
    creds = f"{ADMIN}:{quote(PASSWORD)}@"
    dead = f"http://{creds}127.0.0.1:{free_port()}"
    live = f"http://{creds}{urlsplit(secure_influxd).netloc}"
    failover = _options([dead, live], tmp_path / "a", database="authdb", mode="failover")
    # The dead server's spool has no room for two batches: the spool warns, naming its
    # directory.
    full = _options(
        [dead], tmp_path / "b", database="authdb", spool_max_bytes=1, batch_size=5, timeout=0.5
    )
    errors: list[BaseException] = []

    async def main() -> None:
        ok = await _write(failover, _events(10))
        sender = ok.senders[0]
        await asyncio.to_thread(wait_until, lambda: sender.counters.written == 10, 10.0)
        await ok.close()
        dropping = await _write(full, _events(10))
        await asyncio.to_thread(
            wait_until, lambda: dropping.senders[0].spool.dropped_points > 0, 5.0
        )
        await dropping.close()
        store = InfluxStore(dead, "authdb", timeout=2.0)
        try:
            await store.write(_events(1))
        except StoreError as exc:
            errors.append(exc)
        finally:
            await store.close()

    asyncio.run(main())
    said = [_said(record) for record in caplog.records] + [_chain(exc) for exc in errors]
    assert errors and any("spool" in text for text in said)  # the failures were reported
    assert [text for text in said if any(secret in text for secret in secrets)] == []


@pytest.mark.parametrize("legacy", ["0-u_pw@{host}", "0-{host}"], ids=["credentials", "address"])
def test_a_spool_of_an_older_name_is_renamed_and_sent(
    influx_db: InfluxDatabase, tmp_path: Path, legacy: str
) -> None:
    """A spool named the old ways (with the URL's user:password@, or by position and
    address) is renamed to the digest name and drained; no file name holds a password."""
    netloc = urlsplit(influx_db.server.url).netloc
    options = _options([f"http://u:pw@{netloc}"], tmp_path, database=influx_db.name)
    root = tmp_path / options.label / "worker-0"
    old = root / legacy.format(host=netloc.replace(":", "_"))
    new = root / spool_name([netloc], influx_db.name)
    with Spool(old) as spool:
        spool.append(b"legacy value=1.0 %d\n" % (T0 * 1_000_000), 1)

    async def main() -> None:
        output = InfluxDBOutput(options)
        await output.start()
        await output.close()

    asyncio.run(main())
    assert len(influx_db.rows("legacy")) == 1
    assert not old.exists() and new.is_dir()
    assert not [p for p in tmp_path.rglob("*") if "pw" in p.name]


def test_the_spool_survives_a_password_change() -> None:
    """The spool's name depends on the servers and the database, not on credentials or on
    the position in urls."""
    one = spool_name(["a:8086"], "numbat")
    assert one == spool_name(["a:8086"], "numbat")
    assert one != spool_name(["a:8086"], "other") != spool_name(["b:8086"], "numbat")
    assert spool_name(["a:8086", "b:8086"], "numbat") != spool_name(["b:8086", "a:8086"], "numbat")


def test_5xx_is_retried_until_stored(tmp_path: Path) -> None:
    """A server answering 503 twice then 204 ends up with every point, after two retries."""
    attempts: list[int] = []

    def backoff(attempt: int) -> float:
        attempts.append(attempt)
        return 0.0

    async def main() -> InfluxDBOutput:
        async with scripted_influx(503, 503) as server:
            options = _options([server.url], tmp_path, create_database=False)
            output = InfluxDBOutput(options, backoff=backoff)
            await output.start()
            await _send(output, _events(50), 50)
            await output.close()
        assert server.answered == [503, 503, 204]
        assert len(server.lines) == 50
        return output

    counters = asyncio.run(main()).senders[0].counters
    assert (counters.written, counters.rejected, counters.retries) == (50, 0, 2)
    assert attempts == [1, 2]


def test_a_server_back_after_failures_is_logged_once_and_again_when_caught_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After 503s: one INFO line when the server takes batches again, one when the spool
    has drained (an operator sees the outage end, not only begin)."""
    caplog.set_level(logging.INFO, logger="numbat.collector.outputs.influxdb")

    async def main() -> None:
        async with scripted_influx(503, 503) as server:
            options = _options([server.url], tmp_path, create_database=False)
            output = InfluxDBOutput(options, backoff=lambda attempt: 0.0)
            await output.start()
            await _send(output, _events(50), 50)
            await output.close()

    asyncio.run(main())
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    again = [m for m in messages if "writing again after 2 failed attempts" in m]
    drained = [m for m in messages if "caught up, the spool is drained" in m]
    assert len(again) == 1 and len(drained) == 1, messages


def test_dropped_database_is_created_again(influx_db: InfluxDatabase, tmp_path: Path) -> None:
    """A database dropped while the output runs is created again by the next batch's 404."""
    options = _options([influx_db.server.url], tmp_path, database=influx_db.name)
    events = _events(20)

    async def main() -> InfluxDBOutput:
        output = InfluxDBOutput(options)
        await output.start()
        await _send(output, events[:10], 10)
        await asyncio.to_thread(influx_db.server.drop_database, influx_db.name)
        await _send(output, events[10:], 20)
        await output.close()
        return output

    counters = asyncio.run(main()).senders[0].counters
    assert (counters.written, counters.rejected) == (20, 0)
    assert sorted(r["value"] for r in influx_db.rows("web.requests")) == list(range(10, 20))


def test_failover_starts_with_the_server_that_took_the_last_batch(tmp_path: Path) -> None:
    """After server A fails and B takes a batch, the next batch goes to B first, not A."""

    async def main() -> None:
        async with scripted_influx(503) as a, scripted_influx() as b:
            options = _options([a.url, b.url], tmp_path, mode="failover", create_database=False)
            output = InfluxDBOutput(options, backoff=lambda attempt: 0.0)
            await output.start()
            await _send(output, _events(10), 10)
            await _send(output, _events(20)[10:], 20)
            await output.close()
        assert a.answered == [503]
        assert b.answered == [204, 204]
        assert len(b.lines) == 20

    asyncio.run(main())


def _lines(events: list[Event], output: InfluxDBOutput) -> list[bytes]:
    """The line protocol ``output`` makes of ``events`` (with its generation), one line
    each."""
    renderer = InfluxDBOutput(_options(["http://127.0.0.1:1"], Path("unused"))).renderer
    renderer.start_generation(output.renderer.generation)
    return renderer.render(events).data.splitlines()


def _through_scripted(
    tmp_path: Path, *statuses: int, max_bytes: int, count: int = 300
) -> tuple[InfluxDBOutput, ScriptedInflux]:
    """``count`` events through an output into a scripted server answering ``statuses``
    first and 413 to bodies over ``max_bytes``; the output (closed) and the server."""

    async def main() -> tuple[InfluxDBOutput, ScriptedInflux]:
        async with scripted_influx(*statuses, max_bytes=max_bytes) as server:
            options = _options([server.url], tmp_path, create_database=False)
            output = InfluxDBOutput(options, backoff=lambda attempt: 0.0)
            await output.start()
            await _send(output, _events(count), count)
            await output.close()
        return output, server

    return asyncio.run(main())


def test_a_batch_over_the_body_limit_is_split_until_stored(tmp_path: Path) -> None:
    """A 413 (body over the server's limit) splits the batch into halves until every point
    is stored, none rejected, in order; today the whole batch is dropped as a 4xx."""

    output, server = _through_scripted(tmp_path, max_bytes=2_000)
    counters = output.senders[0].counters
    assert (counters.written, counters.rejected, counters.retries) == (300, 0, 0)
    assert server.lines == _lines(_events(300), output)
    assert server.answered[0] == 413 and server.answered.count(204) > 1


def test_a_single_point_over_the_body_limit_is_rejected_alone(tmp_path: Path) -> None:
    """One point larger than the server's body limit is the only one rejected (and
    counted); the others are stored; today all 50 are dropped with it."""
    events = _events(50)
    events[20]["description"] = "x" * 3_000

    async def main() -> tuple[InfluxDBOutput, ScriptedInflux]:
        async with scripted_influx(max_bytes=2_000) as server:
            options = _options([server.url], tmp_path, create_database=False)
            output = InfluxDBOutput(options, backoff=lambda attempt: 0.0)
            await output.start()
            await _send(output, events, 50)
            await output.close()
        return output, server

    output, server = asyncio.run(main())
    counters = output.senders[0].counters
    assert (counters.written, counters.rejected, counters.retries) == (49, 1, 0)
    expected = _lines(events, output)
    assert server.lines == expected[:20] + expected[21:]
    assert output.server_stats()[output.senders[0].name]["rejected"] == 1


@pytest.mark.parametrize("batch_bytes", [1_000_000, 60_000], ids=["points", "bytes"])
def test_no_request_exceeds_batch_size_or_batch_bytes(tmp_path: Path, batch_bytes: int) -> None:
    """12,000 events in batches of 700: every request holds at most batch_size points and
    batch_bytes bytes; today whole rendered chunks overshoot (5,600 points)."""
    events = _events(12_000)

    async def main() -> tuple[ScriptedInflux, InfluxDBOutput]:
        async with scripted_influx() as server:
            options = _options(
                [server.url],
                tmp_path,
                create_database=False,
                batch_size=5_000,
                batch_bytes=batch_bytes,
                flush_interval=60.0,
            )
            output = InfluxDBOutput(options)
            await output.start()
            for start in range(0, len(events), 700):
                await output.write(Batch(events[start : start + 700]))
            await output.flush()
            await asyncio.to_thread(wait_until, _settled(output, 12_000), 10.0)
            await output.close()
        return server, output

    server, output = asyncio.run(main())
    assert server.lines == _lines(events, output)
    sizes = [(body.count(b"\n"), len(body)) for body in server.bodies]
    assert all(points <= 5_000 and size <= batch_bytes for points, size in sizes), sizes
    if batch_bytes > len(b"".join(server.bodies)):  # the points bind: full batches
        assert [points for points, _ in sizes] == [5_000, 5_000, 2_000]
    else:  # the bytes bind: each request but the last as full as whole lines allow
        assert all(size > batch_bytes - 100 for _, size in sizes[:-1]), sizes


def test_a_split_batch_retried_after_a_5xx_resends_only_its_unstored_parts(
    tmp_path: Path,
) -> None:
    """A 503 midway through a 413-split batch: the record stays spooled, and the retry
    sends only the parts not stored yet (each point stored and counted once)."""

    output, server = _through_scripted(tmp_path, 204, 503, max_bytes=2_000)
    counters = output.senders[0].counters
    assert (counters.written, counters.rejected, counters.retries) == (300, 0, 1)
    assert server.lines == _lines(_events(300), output)
    assert 503 in server.answered and output.senders[0].spool.pending_points == 0


def test_a_partial_write_with_lines_influxd_cannot_parse_counts_what_it_stored(
    influx_db: InfluxDatabase, tmp_path: Path
) -> None:
    """influxd stores the lines it can parse of a batch: written and rejected match what
    it stored (not the whole batch refused, nor all written)."""
    options = _options([influx_db.server.url], tmp_path, database=influx_db.name)
    t = T0 * 1_000_000
    payload = b'm value=1 %d\nm value= %d\nm value=3 %d\nm,x value="a %d\nm value=5 %d\n' % (
        t,
        t + 1,
        t + 2,
        t + 3,
        t + 4,
    )

    async def main() -> InfluxDBOutput:
        output = InfluxDBOutput(options)
        await output.start()
        await output.senders[0].append([(payload, 5)])  # as if rendered and spooled
        await output.close()
        return output

    counters = asyncio.run(main()).senders[0].counters
    assert len(influx_db.rows("m")) == 2
    # The unclosed quote takes the line after it: 3 lines refused, 2 stored.
    assert (counters.written, counters.rejected) == (2, 3)


# -- rendering off the critical path, and timestamps across restarts ---------------------


def test_a_large_batch_is_rendered_in_chunks_with_the_loop_turning_between(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20,000 new series in one batch are rendered RENDER_CHUNK events at a time, and
    another task runs between every two chunks: no batch holds the event loop."""
    events: list[Event] = [
        {"name": "web.requests", "value": 1, "time": T0, "request": f"r{i}"} for i in range(20_000)
    ]
    chunks: list[tuple[int, int]] = []  # (events, turns of the other task so far)

    async def main() -> None:
        turns = 0

        async def other() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        async with scripted_influx() as server:
            output = InfluxDBOutput(_options([server.url], tmp_path, create_database=False))
            await output.start()
            render = output.renderer.render

            def spy(batch: Sequence[Event]) -> RenderResult:
                chunks.append((len(batch), turns))
                return render(batch)

            monkeypatch.setattr(output.renderer, "render", spy)
            task = asyncio.get_running_loop().create_task(other())
            await asyncio.sleep(0)
            await _send(output, events, 20_000)
            task.cancel()
            await output.close()

    asyncio.run(main())
    assert sum(size for size, _ in chunks) == 20_000
    assert max(size for size, _ in chunks) <= RENDER_CHUNK
    assert all(before < after for (_, before), (_, after) in itertools.pairwise(chunks))


def test_each_start_renders_with_the_next_generation(tmp_path: Path) -> None:
    """Starts count on from the generation on disk (per output and worker); a file
    that holds no count is logged and counting goes on from another number."""
    options = _options(["http://127.0.0.1:1"], tmp_path, create_database=False)

    async def start_and_close() -> int:
        output = InfluxDBOutput(options)
        await output.start()
        await output.close()
        return output.renderer.generation

    first = asyncio.run(start_and_close())
    assert [asyncio.run(start_and_close()) for _ in range(2)] == [first + 1, first + 2]
    path = tmp_path / options.label / "worker-0" / "generation"
    assert path.read_text() == f"{first + 2}\n"
    path.write_bytes(b"\xff\xfe")
    generation = claim_generation(path.parent)
    assert generation > 0 and path.read_text() == f"{generation}\n"
    assert claim_generation(path.parent) == generation + 1


def test_a_new_directory_starts_from_a_seeded_generation(tmp_path: Path) -> None:
    """A spool directory without a count (new, or lost with an ephemeral volume) starts
    from a clock/random seed, not from 1 (which took the offsets of every earlier life
    of a lost directory again, and of another collector writing the same series)."""
    firsts = [claim_generation(tmp_path / f"dir-{i}") for i in range(3)]
    assert 1 not in firsts and len(set(firsts)) == 3, firsts
    assert all(1 <= g < 2**31 for g in firsts)
    assert claim_generation(tmp_path / "seeded", seed=lambda: 7) == 7
    assert claim_generation(tmp_path / "seeded", seed=lambda: 7) == 8
    assert sorted(p.name for p in (tmp_path / "seeded").iterdir()) == ["generation"]


def test_same_millisecond_events_survive_a_collector_restart_as_in_sqlite(
    influx_db: InfluxDatabase, tmp_path: Path
) -> None:
    """Two events in one ms, a restart of the collector, two more in that ms (one a copy
    of the first): InfluxDB keeps all four, as the embedded store does (the second life
    used to start its offsets at zero again, overwriting the first's points)."""
    port = free_port()
    influx = {
        "type": "influxdb",
        "urls": [influx_db.server.url],
        "database": influx_db.name,
        "spool_dir": str(tmp_path / "spool"),
        "flush_interval": 0.05,
        "timeout": 2.0,
    }
    sqlite = {"type": "sqlite", "path": str(tmp_path / "numbat.db")}
    config = from_dict(
        {"collector": {"listen": [f"tcp://127.0.0.1:{port}"], "outputs": [influx, sqlite]}}
    )
    now = int(time.time() * 1000)  # within the embedded store's retention

    def line(value: int) -> bytes:
        return b'{"name":"web.hits","value":%d,"time":%d,"host":"a"}\n' % (value, now)

    def send(data: bytes) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(data)

    async def life(data: bytes, stored: int) -> None:
        collector = Collector(config, hostname="test")
        await collector.start()
        try:
            await asyncio.to_thread(send, data)
            await asyncio.to_thread(
                wait_until, lambda: len(influx_db.rows("web.hits")) >= stored, 10.0
            )
        finally:
            await collector.stop()

    async def stored_in_sqlite() -> float | None:
        store = SQLiteStore(tmp_path / "numbat.db")
        try:
            [bucket] = await store.query(
                "web.hits", {}, start=now, end=now + 1, bucket=1, aggregate="count"
            )
        finally:
            await store.close()
        return bucket.value

    asyncio.run(life(line(1) + line(2), 2))
    asyncio.run(life(line(3) + line(1), 4))
    values = sorted(row["value"] for row in influx_db.rows("web.hits"))
    assert values == [1, 1, 2, 3]
    assert asyncio.run(stored_in_sqlite()) == 4


def test_a_batch_spooled_before_a_restart_is_sent_once_beside_the_new_life(
    restartable: RestartableInflux, tmp_path: Path
) -> None:
    """Points spooled by one life (influxd down) and sent by the next, which writes in the
    same millisecond too: every point stored once, none overwritten, none doubled."""
    restartable.stop()
    options = _options([restartable.url], tmp_path / "spool", database="lives")

    async def first_life() -> None:
        output = await _write(options, _events(20))  # 10 a millisecond
        await output.close()
        assert output.senders[0].spool.pending_points == 20

    async def second_life() -> None:
        output = await _write(options, _events(20))
        await asyncio.to_thread(wait_until, _settled(output, 40), 10.0)
        await output.close()

    asyncio.run(first_life())
    restartable.start()
    asyncio.run(second_life())
    assert restartable.count("lives", "web.requests") == 40
