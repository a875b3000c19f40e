"""``type = "influxdb"``: line protocol over HTTP ``/write`` to InfluxDB 1.x, never losing a batch.

Events are rendered to line protocol (``numbat.store.lineprotocol``), gathered into
batches of ``batch_size`` points or ``flush_interval`` seconds, and appended to an
on-disk spool per host (``numbat.store.spool``). A sender task per host posts the
oldest spooled batch and removes it only once the host has stored it, so a host that
is down, slow or restarting costs nothing but disk: its batches are replayed in order
when it answers again, also after a restart of the collector.

Answers: 2xx stored; a partial write (400 naming dropped points) stored the rest, the
dropped ones are counted; other 4xx are not retried (counted as rejected); 5xx,
timeouts and connection errors are retried with exponential backoff and full jitter.
``mode = "replicate"`` writes every batch to every host (a cluster of open-source
InfluxDBs); ``mode = "failover"`` sends each batch to the first host that takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp

from numbat._backoff import full_jitter
from numbat._loop import new_loop
from numbat._ratelimit import RateLimitedLog
from numbat.collector.outputs import Batch, Output
from numbat.config import InfluxDBOutputConfig
from numbat.server import ProcessContext
from numbat.store.influx import basic_auth
from numbat.store.lineprotocol import LineRenderer
from numbat.store.spool import Record, RecordId, Spool

log = logging.getLogger(__name__)

T = TypeVar("T")
_PARTIAL = re.compile(r"partial write.*dropped=(\d+)")


@dataclass
class Counters:
    """What happened to the points of one host."""

    written: int = 0
    rejected: int = 0  # 4xx: points the host refused and will not take on a retry
    retries: int = 0


class Host:
    """A spool and the task that drains it into one server, or the first of several
    that takes each batch (failover).

    The task runs on an event loop of its own, in a thread of its own: the collector's
    loop, busy reading and rendering events, would give it a turn too seldom (every
    POST takes several) and the spool would grow while the server sits idle.
    """

    def __init__(self, urls: list[str], spool: Spool, output: InfluxDBOutput) -> None:
        self.urls = [url.rstrip("/") for url in urls]
        self.name = "+".join(_host(url) for url in self.urls)
        self.spool = spool
        self.counters = Counters()
        self._output = output
        self._wakeup = asyncio.Event()  # used on the sender's loop only
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the sender's
        self._thread: threading.Thread | None = None
        self.session: aiohttp.ClientSession | None = None  # bound to the sender's loop
        self._current = 0  # failover: the server that took the last batch goes first
        # The spool is not thread-safe: every call goes through this one thread, in order.
        self._io = ThreadPoolExecutor(1, thread_name_prefix=f"numbat-spool-{self.name}")

    async def io(self, call: Callable[..., T], *args: Any) -> T:
        """Run a spool call on the spool's own thread (disk I/O never blocks the loop)."""
        return await asyncio.get_running_loop().run_in_executor(self._io, call, *args)

    async def append(self, records: list[tuple[bytes, int]]) -> None:
        """Spool batches (payload, points), in order, in one trip to the spool's thread."""
        await self.io(self._append, records)
        self.wake()

    def _append(self, records: list[tuple[bytes, int]]) -> None:
        for payload, points in records:
            self.spool.append(payload, points)

    def _ack_and_peek(self, record_id: RecordId) -> Record | None:
        self.spool.ack(record_id)
        return self.spool.peek()

    def start(self) -> None:
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._main, args=(started,), name=f"numbat-send-{self.name}", daemon=True
        )
        self._thread.start()
        started.wait()

    def _main(self, started: threading.Event) -> None:
        """The sender's thread: its loop runs the task until it is cancelled."""
        loop = self._loop = new_loop()
        try:
            self._task = loop.create_task(self._serve(), name=self.name)
            started.set()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self._task)
        finally:
            started.set()
            loop.close()

    async def _serve(self) -> None:
        self.session = self._output.new_session()
        try:
            await self._run()
        finally:
            await self.session.close()

    def wake(self) -> None:
        """Wake the sender (from any thread): there is something to send."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed: stopped
                self._loop.call_soon_threadsafe(self._wakeup.set)

    async def stop(self) -> None:
        if self._loop is not None and self._task is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._task.cancel)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        await self.io(self.spool.close)
        self._io.shutdown(wait=True)

    async def drain(self, timeout: float) -> bool:
        """Wait until the spool is empty (everything stored), at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while len(self.spool) and time.monotonic() < deadline:
            self.wake()
            await asyncio.sleep(0.05)
        return not len(self.spool)

    async def _run(self) -> None:
        if self._output.options.create_database:
            # At start, so readers find the database before the first point; a failure
            # (no admin rights, server down) is retried only when a write says 404.
            for url in self.urls:
                await self._create_database(url)
        attempt = 0
        record: Record | None = None
        while True:
            if record is None:
                self._wakeup.clear()  # before peeking: an append from now on wakes us
                record = await self.io(self.spool.peek)
                if record is None:
                    await self._wakeup.wait()
                    continue
            if await self._deliver(record.payload, record.points):
                # Each trip to the spool's thread waits for a turn of a busy loop:
                # acknowledge and take the next batch in one.
                record = await self.io(self._ack_and_peek, record.id)
                attempt = 0
                continue
            attempt += 1
            self.counters.retries += 1
            # A plain sleep: new batches arriving must not cut the backoff short, or a
            # struggling server would be retried at the rate events come in.
            await asyncio.sleep(full_jitter(attempt))
            record = None  # peek again: the spool may have dropped it to make room

    async def _deliver(self, payload: bytes, points: int) -> bool:
        """Post one batch; True when it is settled (stored, or refused for good)."""
        count = len(self.urls)
        for step in range(count):
            url = self.urls[(self._current + step) % count]
            if await self._deliver_to(url, payload, points):
                self._current = (self._current + step) % count
                return True
        return False

    async def _deliver_to(self, url: str, payload: bytes, points: int) -> bool:
        # Write first, create the database only when told it is missing: a user with
        # write but no admin rights works as long as the database exists.
        answer = await self._post(url, payload)
        if answer is None:
            return False
        status, text = answer
        if status == 404 and "database not found" in text and self._output.options.create_database:
            if not await self._create_database(url):
                return False
            answer = await self._post(url, payload)
            if answer is None:
                return False
            status, text = answer
        return self._settle(url, status, text, points)

    async def _post(self, url: str, payload: bytes) -> tuple[int, str] | None:
        try:
            assert self.session is not None
            return await self._output.post(self.session, url, payload)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._output.warn(f"down:{url}", "influxdb %s: %s; will retry", _host(url), exc)
            return None

    def _settle(self, url: str, status: int, text: str, points: int) -> bool:
        if 200 <= status < 300:
            self.counters.written += points
            return True
        if status >= 500:
            self._output.warn(
                f"5xx:{url}", "influxdb %s: %d %s; will retry", _host(url), status, text[:200]
            )
            return False
        dropped = _partial_dropped(text)
        stored = points - dropped if dropped is not None else 0
        self.counters.written += stored
        self.counters.rejected += points - stored
        self._output.warn(
            f"4xx:{url}",
            "influxdb %s refused %d of %d points: %d %s",
            _host(url),
            points - stored,
            points,
            status,
            text[:300],
        )
        return True

    async def _create_database(self, url: str) -> bool:
        query = f'CREATE DATABASE "{_quote(self._output.options.database)}"'
        try:
            assert self.session is not None
            status, text = await self._output.query(self.session, url, query)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._output.warn(f"down:{url}", "influxdb %s: %s; will retry", _host(url), exc)
            return False
        if 200 <= status < 300:
            return True
        self._output.warn(
            f"create:{url}", "influxdb %s: CREATE DATABASE: %d %s", _host(url), status, text[:200]
        )
        return False


class InfluxDBOutput(Output):
    """Writes every event to one or several InfluxDB 1.x hosts, spooling to disk first.

    Config::

        [[collector.outputs]]
        type = "influxdb"
        urls = ["http://influx-1:8086", "http://influx-2:8086"]
        mode = "replicate"
        database = "numbat"
        spool_dir = "/var/lib/numbat/spool"
    """

    Options = InfluxDBOutputConfig
    options: InfluxDBOutputConfig

    def __init__(
        self, options: InfluxDBOutputConfig, *, context: ProcessContext | None = None
    ) -> None:
        super().__init__(options, context=context)
        self.renderer = self._renderer()
        self.hosts: list[Host] = []
        self.skipped = 0
        self._pending: list[bytes] = []
        self._pending_points = 0
        self._first_pending = 0.0
        self._flusher: asyncio.Task[None] | None = None
        self._warn = RateLimitedLog(log)
        self._headers = (
            {"Authorization": basic_auth(options.username, options.password)}
            if options.username is not None
            else {}
        )

    async def start(self) -> None:
        for index, urls in enumerate(self._groups()):
            spool = await asyncio.to_thread(self._open_spool, index, urls[0])  # before any I/O
            host = Host(urls, spool, self)
            host.start()
            self.hosts.append(host)
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def write(self, batch: Batch) -> None:
        size = self.options.batch_size
        events = batch.events
        full: list[tuple[bytes, int]] = []
        for start in range(0, len(events), size):
            result = self.renderer.render(events[start : start + size])
            self.skipped += result.skipped
            if result.points:
                if not self._pending:
                    self._first_pending = time.monotonic()
                self._pending.append(result.data)
                self._pending_points += result.points
            if self._pending_points >= size:
                full.append(self._take_pending())
        # One trip to the spool's thread for the whole batch: each waits for a turn of
        # the loop, which the listeners make long under load.
        await self._spool(full)

    async def flush(self) -> None:
        await self._spool_pending()
        for host in self.hosts:
            host.wake()

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        await self._spool_pending()
        await asyncio.gather(*(h.drain(min(self.options.timeout, 5.0)) for h in self.hosts))
        await asyncio.gather(*(h.stop() for h in self.hosts))

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {"skipped": self.skipped, "demoted": self.renderer.demoted}
        for host in self.hosts:
            out[f"{host.name}.written"] = host.counters.written
            out[f"{host.name}.rejected"] = host.counters.rejected
            out[f"{host.name}.retries"] = host.counters.retries
            out[f"{host.name}.spooled"] = host.spool.pending_points
            out[f"{host.name}.spool_dropped"] = host.spool.dropped_points
        return out

    # -- used by Host ---------------------------------------------------------------

    def new_session(self) -> aiohttp.ClientSession:
        """An HTTP session for a host's sender, on the sender's (running) loop."""
        timeout = aiohttp.ClientTimeout(total=self.options.timeout)
        return aiohttp.ClientSession(timeout=timeout, headers=self._headers)

    async def post(
        self, session: aiohttp.ClientSession, url: str, payload: bytes
    ) -> tuple[int, str]:
        params = {"db": self.options.database, "precision": "ns"}
        if self.options.retention_policy:
            params["rp"] = self.options.retention_policy
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.options.gzip:
            payload = gzip.compress(payload, 1)  # on the host's sender thread
            headers["Content-Encoding"] = "gzip"
        async with session.post(
            f"{url}/write", params=params, data=payload, headers=headers
        ) as resp:
            return resp.status, await resp.text()

    async def query(self, session: aiohttp.ClientSession, url: str, q: str) -> tuple[int, str]:
        async with session.post(f"{url}/query", data={"q": q}) as resp:
            return resp.status, await resp.text()

    def warn(self, key: str, msg: str, *args: object) -> None:
        self._warn.warning(key, msg, *args)

    # -- internals ------------------------------------------------------------------

    def _renderer(self) -> LineRenderer:
        options = self.options
        return LineRenderer(
            text_fields=tuple(options.text_fields),
            write_heartbeats=options.write_heartbeats,
            max_series_per_measurement=options.max_series_per_measurement,
            on_cardinality=options.on_cardinality,
            worker=self.context.worker,
            workers=self.context.workers,
        )

    def _groups(self) -> list[list[str]]:
        """Replicate: a spool per server. Failover: one spool, the servers in order."""
        urls = self.options.urls
        return [[url] for url in urls] if self.options.mode == "replicate" else [urls]

    def _open_spool(self, index: int, url: str) -> Spool:
        # Per output, worker and server: two processes never share a spool directory.
        name = f"{index}-{urlsplit(url).netloc.replace(':', '_')}"
        root = Path(self.options.spool_dir) / self.options.label / f"worker-{self.context.worker}"
        return Spool(
            root / name,
            max_bytes=self.options.spool_max_bytes,
            fsync_interval=self.options.fsync_interval,
        )

    async def _spool_pending(self) -> None:
        if self._pending:
            await self._spool([self._take_pending()])

    def _take_pending(self) -> tuple[bytes, int]:
        record = b"".join(self._pending), self._pending_points
        self._pending, self._pending_points = [], 0
        return record

    async def _spool(self, records: list[tuple[bytes, int]]) -> None:
        if not records:
            return
        if len(self.hosts) == 1:
            await self.hosts[0].append(records)  # without gather's task: no extra turn
        else:
            await asyncio.gather(*(host.append(records) for host in self.hosts))

    async def _flush_loop(self) -> None:
        interval = self.options.flush_interval
        while True:
            await asyncio.sleep(interval / 4)
            if self._pending and time.monotonic() - self._first_pending >= interval:
                await self._spool_pending()
            for host in self.hosts:  # bounds what a power cut can take from a quiet spool
                await host.io(host.spool.sync_if_due)


def _partial_dropped(text: str) -> int | None:
    match = _PARTIAL.search(text)
    return int(match.group(1)) if match else None


def _host(url: str) -> str:
    """The server as logs show it: no credentials, no query string."""
    return urlsplit(url).netloc.rpartition("@")[2]


def _quote(identifier: str) -> str:
    return identifier.replace("\\", "\\\\").replace('"', '\\"')
