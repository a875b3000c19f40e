"""``type = "influxdb"``: line protocol over HTTP ``/write`` to InfluxDB 1.x, never losing a batch.

Events are rendered to line protocol (``numbat.store.lineprotocol``), RENDER_CHUNK at
a time with a turn of the event loop between, with timestamps of a generation of their
own at each start of the output (:func:`claim_generation`), gathered into batches of
``batch_size`` points or ``flush_interval`` seconds, and appended to an on-disk spool
per server (``numbat.store.spool``). A :class:`SpoolSender` per spool
posts the oldest spooled batch through :class:`~numbat.store.influx.InfluxClient` and
removes it only once a server has stored it, so a server that is down, slow or
restarting costs nothing but disk: its batches are replayed in order when it answers
again, also after a restart of the collector.

A batch is at most ``batch_size`` points and ``batch_bytes`` bytes (cut between
points: a text field may hold a newline, which line protocol carries inside its quotes;
a single point larger goes alone). Answers: 2xx stored; a partial write (400 naming
dropped points) stored the rest, the dropped ones are counted; one naming points
"beyond retention policy" dropped the oldest, counted ``expired`` (``dropped``,
``reason=expired``, per server), and the rest is posted again (that answer hides
lines influxd could not parse); a 413 (too large
for the server's or a proxy's body limit) splits the batch in two and posts the halves,
down to single points, and a single point refused so is counted as rejected; a 404
"database not found" creates the database and writes again (unless
``create_database = false``); a partial write refused for a cardinality limit
(``max-values-per-tag``, ``max-series-per-database``) demotes the tag for good and
re-sends the refused points with it as a field (``numbat.store.cardinality``); other
4xx are not retried (counted as rejected); 5xx, timeouts and connection errors are
retried with exponential backoff and full jitter.
``mode = "replicate"`` writes every batch to every server (a cluster of open-source
InfluxDBs); ``mode = "failover"`` sends each batch to the first server that takes it,
starting with the one that took the last.

A spool whose disk refuses writes (full, over quota, failing) stops nothing: the
batches it refuses are sent from memory, up to ``queue_size`` points per server, and
those beyond are dropped and counted (``dropped``, ``reason=spool_full``); the spool
is used again by itself once it takes writes. Records damaged on disk are skipped
alone and counted (``reason=spool_corrupt``). See docs/storage.md.

A reload that changes the output's settings never opens a spool twice (it is locked):
the new output shares the running one's sender of each spool it keeps (same servers
and database), and takes it over at the swap with its own settings, spool, batches in
flight and counts included; the old output's last gathered batch goes to the same
senders as it closes. A server left out gets ``min(timeout, 5)`` seconds to take what
its spool holds; the rest stays there until an output with that server runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import itertools
import logging
import math
import os
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from numbat._backoff import Backoff, full_jitter
from numbat._loop import new_loop
from numbat._ratelimit import RateLimitedLog
from numbat.collector.outputs import Batch, Output
from numbat.config import InfluxDBOutputConfig
from numbat.server import ProcessContext
from numbat.store.cardinality import DemotionFile, Refusal, TagDemotions, parse_refusal, resolve
from numbat.store.influx import InfluxClient, Reply, StoreError
from numbat.store.lineprotocol import LineRenderer, PointEnds, count_lines, split_lines
from numbat.store.spool import Record, RecordId, Spool, SpoolError

log = logging.getLogger(__name__)

T = TypeVar("T")
Part = tuple[bytes, int]  # line protocol and its number of points (lines as influxd cuts them)
# Events rendered between two turns of the event loop: about 1.3 µs each of a known
# series and 4 µs of a new one, so a chunk holds the loop 0.7 to 2 ms (docs/benchmarks.md).
RENDER_CHUNK = 500
# Points held in memory while the spool refuses writes, unless the output has a queue_size.
MEMORY_POINTS = 100_000
# A disk that refuses these stops nothing: batches are held in memory meanwhile.
DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})
SPOOL_RETRY = 1.0  # seconds between attempts to write to a spool that refused a write
_HELD = -1  # the segment of the RecordId of a batch held in memory (never a real segment)
_PARTIAL = re.compile(r"partial write.*dropped=(\d+)", re.DOTALL)
_UNPARSED = re.compile(r"unable to parse '(.*?)': ", re.DOTALL)
_LINE_END = re.compile(rb" -?\d+\n\Z")  # the end of a line of ours: its timestamp


class SpoolToBe:
    """Stands in for a spool whose directory could not be made (the disk is full, out of
    inodes, failing): it holds nothing and refuses every append with the error that
    stopped it, so the sender keeps batches in memory; :meth:`SpoolSender` tries
    :meth:`open` again whenever it would append, and from then on uses the real spool.

    ``open``: makes the real one (the same arguments as :class:`Spool`); raises
    ``OSError`` while the disk still refuses.
    """

    pending_points = dropped_points = corrupt_points = disk_bytes = 0

    def __init__(self, directory: Path, error: OSError, open_spool: Callable[[], Spool]) -> None:
        self.directory = directory
        self.error = error
        self.max_bytes, self.fsync_interval = 0, 0.0  # a reload's, for the real one
        self._open = open_spool

    def open(self) -> Spool:
        spool = self._open()
        if self.max_bytes:
            spool.max_bytes, spool.fsync_interval = self.max_bytes, self.fsync_interval
        return spool

    def __len__(self) -> int:
        return 0

    def append(self, payload: bytes, points: int) -> None:
        raise self.error

    def peek(self) -> Record | None:
        return None

    def ack(self, record_id: RecordId) -> None:
        raise ValueError(f"nothing was spooled: {record_id}")

    def sync_if_due(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class Counters:
    """What happened to the points of one sender."""

    written: int = 0
    rejected: int = 0  # 4xx (a 413 of a single point): refused, and not taken on a retry
    expired: int = 0  # dropped by the server as older than its retention policy
    retries: int = 0  # rounds in which no server took the batch (each waits a backoff)
    resent: int = 0  # refused for a cardinality limit, sent again with the tag demoted


class SpoolSender:
    """A spool and the task that drains it into one server, or into the first of several
    that takes each batch (failover), starting with the one that took the last.

    ``clients``: one per server, in failover order. ``create_database``: create it on
    every server at start (best effort), and again when a write finds it missing.
    ``backoff``: seconds to wait before retry ``attempt`` (1, 2, ...) of a batch no
    server took. ``demotions``: where a partial write refused for a cardinality limit
    is settled (the tag demoted, the refused points rendered again and sent in the
    batch's place); without it such a write is counted like any other partial write.
    Everything it needs comes in here; it never calls back into the output.

    The task runs on an event loop of its own, in a thread of its own: the collector's
    loop, busy reading and rendering events, would give it a turn too seldom (every
    POST takes several) and the spool would grow while the server sits idle. The
    clients make their HTTP sessions on that loop and are closed on it.

    A spool that cannot be written (ENOSPC, EDQUOT, EIO, ...) stops nothing: batches it
    refuses are held in memory, sent from there first, up to ``memory_points`` points (past
    that they are dropped and counted in ``spool_full``); the spool is tried again every
    ``SPOOL_RETRY`` seconds, and once it takes batches the held ones move into it. A
    :class:`SpoolToBe` (the spool's directory could not even be made) is treated the same
    way: it refuses everything until the real spool can be opened.

    ``name`` is the server's ``host:port`` (``a:8086+b:8086`` for a failover group);
    :meth:`figures` are its counts, in points.

    Example::

        sender = SpoolSender([InfluxClient("http://127.0.0.1:8086", "numbat")], spool)
        sender.start()
        await sender.append([(b"cpu value=1.0 1700000000000000000\n", 1)])
        await sender.drain(5.0)  # True: stored
        sender.figures()  # {'written': 1, 'rejected': 0, 'retries': 0, 'spooled': 0, ...}
        await sender.stop()
    """

    def __init__(
        self,
        clients: Sequence[InfluxClient],
        spool: Spool | SpoolToBe,
        *,
        create_database: bool = True,
        backoff: Backoff = full_jitter,
        demotions: TagDemotions | None = None,
        memory_points: int = MEMORY_POINTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not clients:
            raise ValueError("a sender needs at least one server")
        self.clients = list(clients)
        self.name = "+".join(client.address for client in self.clients)
        self.spool = spool
        self.create_database = create_database
        self.demotions = demotions
        self.counters = Counters()
        self.memory_points = memory_points
        self.spool_full = 0
        """Points dropped: the spool refused them and memory was full (or at shutdown)."""
        self._backoff = backoff
        self._clock = clock
        self._warn = RateLimitedLog(log)  # called on the sender's thread only
        # On the spool's thread only: the batches the spool refused, oldest first, with a
        # number each; the one being sent (always the first) never moves to the spool.
        self._held: deque[tuple[int, Part]] = deque()
        self._held_points = 0
        self._held_numbers = itertools.count()
        self._sending_held = False
        self._refused_at: float | None = None  # when the spool last refused a write
        self._io_warn = RateLimitedLog(log)
        self._wakeup = asyncio.Event()  # used on the sender's loop only
        # Set while the sender waits for work (all it took is settled and said): drain()
        # must not stop it between an ack and what it logs about that ack.
        self._idle = threading.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the sender's
        self._thread: threading.Thread | None = None
        self._current = 0  # failover: the server that took the last batch goes first
        # A reload's clients (new settings), taken between two POSTs; on the sender's loop.
        self._next_clients: list[InfluxClient] | None = None
        # What is left to send of the record being sent: parts already stored (of one
        # split by a 413) are not sent again when the rest is retried.
        self._unsettled: tuple[RecordId, list[Part]] | None = None
        self._catching_up = False  # a server failed and its spool has not drained since
        # The spool is not thread-safe: every call goes through this one thread, in order.
        self._io = ThreadPoolExecutor(1, thread_name_prefix=f"numbat-spool-{self.name}")

    def figures(self) -> dict[str, float]:
        """Points written, rejected (4xx), retries, re-sent with a tag demoted, still
        spooled, held in memory (the spool refused them), dropped by a full spool
        (``spool_max_bytes``)."""
        return {
            "written": self.counters.written,
            "rejected": self.counters.rejected,
            "retries": self.counters.retries,
            "resent": self.counters.resent,
            "spooled": self.spool.pending_points,
            "unspooled": self._held_points,
            "spool_dropped": self.spool.dropped_points,
        }

    def lost(self) -> dict[str, int]:
        """Points lost since start, by reason: ``spool_full`` (neither the spool nor
        memory could hold them), ``spool_corrupt`` (damaged on disk), ``expired`` (the
        server dropped them as older than its retention policy), ``rejected`` (refused
        by a 4xx: unparsable, a field type conflict, a single point over the body
        limit)."""
        return {
            "spool_full": self.spool_full,
            "spool_corrupt": self.spool.corrupt_points,
            "expired": self.counters.expired,
            "rejected": self.counters.rejected,
        }

    async def io(self, call: Callable[..., T], *args: Any) -> T:
        """Run a spool call on the spool's own thread (disk I/O never blocks the loop)."""
        return await asyncio.get_running_loop().run_in_executor(self._io, call, *args)

    async def append(self, records: list[Part]) -> None:
        """Spool batches (payload, points), in order, in one trip to the spool's thread;
        those the spool refuses are held in memory (see the class)."""
        self._idle.clear()
        await self.io(self._append, records)
        self.wake()

    @property
    def held_points(self) -> int:
        """Points held in memory because the spool's disk refused them."""
        return self._held_points

    async def tick(self) -> None:
        """Every so often: fsync what is due, and move held batches into the spool if it
        takes writes again (also when no new batch comes to try it)."""
        await self.io(self._tick)

    def reconfigure(
        self,
        clients: Sequence[InfluxClient],
        *,
        create_database: bool,
        demotions: TagDemotions | None,
        memory_points: int,
        backoff: Backoff,
        max_bytes: int,
        fsync_interval: float,
    ) -> None:
        """A reload: the sender carries on, spool, batches in flight and figures
        included, with the settings of the output that takes it over (called from the
        collector's loop). ``clients`` (the same servers in the same order, else
        ValueError; new timeout, gzip, credentials, ...) replace the current ones before
        the next POST; the spool's ``max_bytes`` and ``fsync_interval`` change on its
        thread, before its next call."""
        if [client.address for client in clients] != [c.address for c in self.clients]:
            raise ValueError(f"a sender keeps its servers: {self.name}")
        self.create_database = create_database
        self.demotions = demotions
        self.memory_points = memory_points
        self._backoff = backoff
        self._io.submit(self._limit_spool, max_bytes, fsync_interval)
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed: stopped
                self._loop.call_soon_threadsafe(self._offer_clients, list(clients))

    # -- on the spool's thread ------------------------------------------------------------

    def _append(self, records: list[Part]) -> None:
        self._spool_held()
        for index, part in enumerate(records):
            # Behind held batches, never before them: they are older.
            if len(self._held) > self._sending_held or not self._spool_part(part):
                for rest in records[index:]:
                    self._hold(rest)
                return

    def _limit_spool(self, max_bytes: int, fsync_interval: float) -> None:
        self.spool.max_bytes, self.spool.fsync_interval = max_bytes, fsync_interval

    def _tick(self) -> None:
        try:
            self.spool.sync_if_due()
        except OSError as exc:
            self._io_warn.warning("fsync", "influxdb %s: spool fsync failed: %s", self.name, exc)
        self._spool_held()

    def _spool_part(self, part: Part) -> bool:
        """Append to the spool; False if it refused (then it is not tried again for
        ``SPOOL_RETRY`` seconds)."""
        if self._refused_at is not None and self._clock() - self._refused_at < SPOOL_RETRY:
            return False
        try:
            if isinstance(self.spool, SpoolToBe):
                self.spool = self.spool.open()
                log.info("influxdb %s: the spool %s is made", self.name, self.spool.directory)
            self.spool.append(*part)
        except SpoolError as exc:  # another collector took the directory meanwhile
            self._refused_at = self._clock()
            self._io_warn.warning(
                "taken",
                "influxdb %s: %s (two collectors with one spool_dir?): batches go to the "
                "server from memory, up to %d points",
                self.name,
                exc,
                self.memory_points,
            )
            return False
        except OSError as exc:
            self._refused_at = self._clock()
            self._io_warn.warning(
                "refused",
                "influxdb %s: the spool cannot be written (%s): batches go to the server "
                "from memory, up to %d points",
                self.name,
                exc.strerror or exc,
                self.memory_points,
            )
            return False
        if self._refused_at is not None:
            self._refused_at = None
            log.info("influxdb %s: the spool takes batches again", self.name)
        return True

    def _spool_held(self) -> None:
        """Move held batches (not the one being sent) into the spool while it takes them."""
        first = int(self._sending_held)
        while len(self._held) > first and self._spool_part(self._held[first][1]):
            _, (_, points) = self._held[first]
            del self._held[first]
            self._held_points -= points

    def _hold(self, part: Part) -> None:
        points = part[1]
        if self._held and self._held_points + points > self.memory_points:
            self.spool_full += points
            self._io_warn.warning(
                "spool_full",
                "influxdb %s: the spool cannot be written and memory holds %d points: "
                "points dropped (spool_full)",
                self.name,
                self._held_points,
            )
            return
        self._held.append((next(self._held_numbers), part))
        self._held_points += points

    def _next(self) -> Record | None:
        """What to send next: the oldest held batch (memory is all it has), else the
        oldest spooled one."""
        self._sending_held = bool(self._held)
        if self._held:
            number, (payload, points) = self._held[0]
            return Record(RecordId(_HELD, number), payload, points)
        return self.spool.peek()

    def _release(self) -> None:
        self._sending_held = False

    def _ack_and_next(self, record_id: RecordId) -> Record | None:
        if record_id.segment != _HELD:
            self.spool.ack(record_id)
        elif self._sending_held:  # it is the first held batch
            _, (_, points) = self._held.popleft()
            self._held_points -= points
        return self._next()

    def _close(self) -> None:
        """Spool what is still held if the disk takes it now (else it is lost, counted
        as spool_full), then close the spool."""
        self._sending_held, self._refused_at = False, None
        self._spool_held()
        if self._held:
            self.spool_full += self._held_points
            log.warning(
                "influxdb %s: %d points held in memory could not be spooled at shutdown "
                "(spool_full)",
                self.name,
                self._held_points,
            )
            self._held.clear()
            self._held_points = 0
        try:
            self.spool.close()
        except OSError as exc:
            log.warning("influxdb %s: closing the spool: %s", self.name, exc)

    # -- on the sender's thread -----------------------------------------------------------

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
        try:
            await self._run()
        finally:
            for client in [*self.clients, *(self._next_clients or [])]:
                await client.close()  # their sessions belong to this loop

    def _offer_clients(self, clients: list[InfluxClient]) -> None:
        self._next_clients = clients
        self._wakeup.set()  # an idle sender takes them now

    async def _take_clients(self) -> None:
        """A reload's clients take over, between two POSTs (never under one); the old
        ones are closed here, on the loop their sessions belong to."""
        if self._next_clients is None:
            return
        old, self.clients, self._next_clients = self.clients, self._next_clients, None
        for client in old:
            await client.close()

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
        await self.io(self._close)
        self._io.shutdown(wait=True)

    def pending(self) -> bool:
        """Whether batches wait to be sent (spooled or held in memory), or the sender is
        still busy with the last one."""
        return bool(len(self.spool) or self._held) or not self._idle.is_set()

    async def drain(self, timeout: float) -> bool:
        """Wait until nothing is pending (everything stored), at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.pending() and time.monotonic() < deadline:
            self.wake()
            await asyncio.sleep(0.05)
        return not self.pending()

    async def _run(self) -> None:
        if self.create_database:
            # At start, so readers find the database before the first point; a failure
            # (no admin rights, server down) is retried only when a write says 404.
            for client in self.clients:
                await self._create_database(client)
        attempt = 0
        record: Record | None = None
        while True:
            await self._take_clients()
            if record is None:
                self._wakeup.clear()  # before peeking: an append from now on wakes us
                record = await self._from_spool(self._next)
                if record is None:
                    self._idle.set()
                    await self._wakeup.wait()
                    continue
                self._idle.clear()
            if await self._deliver(self._parts(record)):
                # Each trip to the spool's thread waits for a turn of a busy loop:
                # acknowledge and take the next batch in one.
                record = await self._from_spool(self._ack_and_next, record.id)
                self._recovered(attempt, drained=record is None)
                attempt = 0
                continue
            attempt += 1
            self.counters.retries += 1
            await self.io(self._release)  # a held batch may move to the spool meanwhile
            # A plain sleep: new batches arriving must not cut the backoff short, or a
            # struggling server would be retried at the rate events come in.
            await asyncio.sleep(self._backoff(attempt))
            record = None  # peek again: the spool may have dropped it to make room

    async def _from_spool(self, call: Callable[..., Record | None], *args: Any) -> Record | None:
        """``call`` on the spool's thread; a disk that cannot be read is logged and tried
        again after a backoff, for as long as it takes (the sender never stops on it)."""
        failures = 0
        while True:
            try:
                return await self.io(call, *args)
            except OSError as exc:
                failures += 1
                self._warn.warning(
                    "read", "influxdb %s: cannot read the spool: %s; will retry", self.name, exc
                )
                await asyncio.sleep(self._backoff(failures))

    def _recovered(self, failed: int, *, drained: bool) -> None:
        """Say when a server takes batches again, and when it has caught up."""
        if failed:
            self._catching_up = True
            log.info(
                "influxdb %s: writing again after %d failed attempts; %d points spooled",
                self.name,
                failed,
                self.spool.pending_points,
            )
        if drained and self._catching_up:
            self._catching_up = False
            log.info("influxdb %s: caught up, the spool is drained", self.name)

    def _parts(self, record: Record) -> list[Part]:
        """What is left to send of ``record``: all of it, unless an earlier attempt
        settled some of its parts."""
        if self._unsettled is None or self._unsettled[0] != record.id:
            self._unsettled = (record.id, [(record.payload, record.points)])
        return self._unsettled[1]

    async def _deliver(self, parts: list[Part]) -> bool:
        """Post a batch's parts; True when all are settled (stored, or refused for good).
        Settled parts leave ``parts``: a server that fails midway leaves the rest to the
        next (failover) or to a retry."""
        count = len(self.clients)
        for step in range(count):
            index = (self._current + step) % count
            if await self._deliver_to(self.clients[index], parts):
                self._current = index
                return True
        return False

    async def _deliver_to(self, client: InfluxClient, parts: list[Part]) -> bool:
        """Post the parts to one server in order; one it finds too large (413) is split
        in two at a point's end and the halves posted in its place, down to single
        points; of one it stored but for points older than its retention, the rest is
        posted again (:meth:`_expire`)."""
        while parts:
            payload, points = parts[0]
            reply = await self._post(client, payload)
            if reply is None:
                return False
            if reply.status == 413 and (halves := _halves(payload, points)):
                parts[0:1] = halves
                continue
            if reply.expired:
                parts[0:1] = self._expire(client, payload, points, reply.expired)
                continue
            if (refusal := self._cardinality(reply)) is not None:
                settled = await self._demote(client, parts, reply, refusal)
                if settled is None:
                    return False
                if settled:
                    continue
            if not self._settle(client, reply, payload, points):
                return False
            del parts[0]
        return True

    def _expire(
        self, client: InfluxClient, payload: bytes, points: int, dropped: int
    ) -> list[Part]:
        """Count the ``dropped`` points a server refused as older than its retention
        policy (``expired``): the oldest of ``payload``, as it drops every point before
        a time. Its answer then says nothing of lines it could not parse (influxd
        1.6.7), so unless every line expired the rest is posted again, and its answer
        settles it (points stored are overwritten at no cost). What is left to send."""
        lines = split_lines(payload) if dropped < points else []
        expired = dropped if dropped < len(lines) else points
        self.counters.expired += expired
        self._warn.warning(
            f"expired:{client.address}",
            "influxdb %s dropped %d of %d points as older than its retention policy (expired)",
            client.address,
            expired,
            points,
        )
        if expired == points:
            return []
        order = sorted(range(len(lines)), key=lambda i: _timestamp(lines[i]))
        oldest = set(order[:dropped])
        rest = b"".join(line for i, line in enumerate(lines) if i not in oldest)
        return [(rest, points - expired)]

    async def _post(self, client: InfluxClient, payload: bytes) -> Reply | None:
        """The server's reply, or None when it could not be had (will retry)."""
        try:
            return await client.write(payload, create_database=self.create_database)
        except StoreError as exc:  # unreachable, or the database could not be created
            kind = "down" if exc.status is None else "create"
            self._warn.warning(f"{kind}:{client.address}", "%s; will retry", exc)
            return None

    def _cardinality(self, reply: Reply) -> Refusal | None:
        if self.demotions is None or reply.status != 400:
            return None
        return parse_refusal(reply.message)

    async def _demote(
        self, client: InfluxClient, parts: list[Part], reply: Reply, refusal: Refusal
    ) -> bool | None:
        """Settle ``parts[0]``, refused in part for a cardinality limit: its stored points
        are counted, its refused points, rendered again with the tag demoted, take its
        place. None: retry later; False: not our line protocol, settle it as usual."""
        assert self.demotions is not None
        payload, points = parts[0]
        post = partial(self._post, client)
        try:
            found = await resolve(post, payload, reply, refusal, self.demotions, client.address)
        except ValueError:
            return False
        if found is None:
            return None
        self.counters.written += found.stored
        self.counters.rejected += found.rejected
        self.counters.resent += found.demoted
        parts[0:1] = [(found.resend, found.resend_points)] if found.resend_points else []
        if found.rejected:
            self._warn.warning(
                f"cardinality:{client.address}",
                "influxdb %s refused %d of %d points (%s) and no tag demotion changes "
                "their series: dropped",
                client.address,
                found.rejected,
                points,
                refusal.limit,
            )
        return True

    def _settle(self, client: InfluxClient, reply: Reply, payload: bytes, points: int) -> bool:
        """Count a reply; True when the part is settled (stored, or refused for good)."""
        if reply.ok:
            self.counters.written += points
            return True
        if reply.status == 413:
            self.counters.rejected += points
            self._warn.warning(
                f"413:{client.address}",
                "influxdb %s refused %d point(s) of %d bytes as too large (413): over "
                "its or a proxy's request body limit",
                client.address,
                points,
                len(payload),
            )
            return True
        if reply.status >= 500:
            self._warn.warning(
                f"5xx:{client.address}",
                "influxdb %s: %d %s; will retry",
                client.address,
                reply.status,
                reply.message,
            )
            return False
        stored = min(max(stored_points(reply.message, payload), 0), points)
        self.counters.written += stored
        self.counters.rejected += points - stored
        self._warn.warning(
            f"4xx:{client.address}",
            "influxdb %s refused %d of %d points: %d %s",
            client.address,
            points - stored,
            points,
            reply.status,
            reply.message,
        )
        return True

    async def _create_database(self, client: InfluxClient) -> None:
        try:
            await client.create_database()
        except StoreError as exc:
            kind = "down" if exc.status is None else "create"
            self._warn.warning(f"{kind}:{client.address}", "%s (CREATE DATABASE at start)", exc)


class InfluxDBOutput(Output):
    """Writes every event to one or several InfluxDB 1.x servers, spooling to disk first.

    ``backoff`` (for tests): seconds before retry ``attempt`` of a batch no server took.

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
        self,
        options: InfluxDBOutputConfig,
        *,
        context: ProcessContext | None = None,
        backoff: Backoff = full_jitter,
    ) -> None:
        super().__init__(options, context=context)
        self.renderer = self._renderer()
        # The senders render refused points again on their threads (TagDemotions).
        self._render_lock = threading.Lock()
        self.demotions = TagDemotions(
            DemotionFile(self._root() / "demotions.json", options.database),
            self.renderer,
            self._render_lock,
        )
        self.senders: list[SpoolSender] = []
        # The senders close() stops: not those borrowed from the output this one replaces
        # (until adopt() hands them over), nor those handed over to this one's successor.
        self._owned: set[SpoolSender] = set()
        self._drain_time = min(options.timeout, 5.0)  # seconds senders get at shutdown
        self._previous: InfluxDBOutput | None = None  # the output this one is to replace
        self._borrowed: dict[SpoolSender, list[InfluxClient]] = {}  # -> the clients to use
        # A sender's losses (lost()) before this output took it, and when it handed it over.
        self._lost_before: dict[SpoolSender, dict[str, int]] = {}
        self._lost_handed: dict[SpoolSender, dict[str, int]] = {}
        self.skipped = 0
        self._backoff = backoff
        self._pending: list[bytes] = []
        self._pending_points = 0
        self._pending_bytes = 0
        self._first_pending = 0.0
        self._flusher: asyncio.Task[None] | None = None
        self._warn = RateLimitedLog(log)
        self._rendering = False  # a write is between two chunks
        self._demotions_retry_at = 0.0  # monotonic

    def borrow_from(self, old: Output) -> None:
        """Reload: a spool directory ``old`` has open (the same servers and database) is
        not opened again: :meth:`start` shares ``old``'s sender of it, and
        :meth:`adopt` takes it over with this output's settings."""
        if isinstance(old, InfluxDBOutput):
            self._previous = old

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self._stop_senders(0.0)  # no spool of a failed start stays locked
            raise

    async def _start(self) -> None:
        # Every start renders with timestamps of its own (see claim_generation).
        generation = await asyncio.to_thread(claim_generation, self._worker_dir())
        self.renderer.start_generation(generation)
        if remembered := await asyncio.to_thread(self.demotions.load):
            log.info(
                "%s: %d tag demotion(s) remembered in %s are applied",
                self.options.label,
                remembered,
                self.demotions.file.path,
            )
        for index, urls in enumerate(self._groups()):
            clients = [self._client(url) for url in urls]
            addresses = [client.address for client in clients]
            sender = self._running_sender(self._spool_path(addresses))
            if sender is not None:
                self._borrowed[sender] = clients  # handed over by adopt()
            else:
                spool = await asyncio.to_thread(self._open_spool, index, urls[0], addresses)
                sender = SpoolSender(
                    clients,
                    spool,
                    create_database=self.options.create_database,
                    backoff=self._backoff,
                    demotions=self.demotions,
                    memory_points=self._memory_points(),
                )
                sender.start()
                self._owned.add(sender)
            self.senders.append(sender)
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    def adopt(self, old: Output) -> None:
        """Reload: the senders borrowed from ``old`` are this output's from now on, with
        its settings (:meth:`SpoolSender.reconfigure`); what ``old`` still gathers goes
        to them when it closes. Tag demotions ``old`` learned since this output read
        them are applied here too."""
        if old is not self._previous or not isinstance(old, InfluxDBOutput):
            return
        for sender, clients in self._borrowed.items():
            self._lost_before[sender] = old._hand_over(sender)
            sender.reconfigure(
                clients,
                create_database=self.options.create_database,
                demotions=self.demotions,
                memory_points=self._memory_points(),
                backoff=self._backoff,
                max_bytes=self.options.spool_max_bytes,
                fsync_interval=self.options.fsync_interval,
            )
            self._owned.add(sender)
        self._borrowed.clear()
        self._previous = None
        with old._render_lock:
            learned = list(old.renderer.server_demotions.items())
        with self._render_lock:
            for measurement, tags in learned:
                for tag in tags:
                    self.renderer.demote(measurement, tag)

    async def write(self, batch: Batch) -> None:
        events = batch.events
        full: list[Part] = []
        start = 0
        self._rendering = True
        try:
            while start < len(events):
                if start:
                    # A turn of the loop between chunks: a large batch of new series
                    # must not hold the listeners and the other outputs up.
                    await asyncio.sleep(0)
                # Never more events than the pending batch has room for: it stays
                # within batch_size points however the events come in.
                room = self.options.batch_size - self._pending_points
                stop = start + min(room, RENDER_CHUNK)
                with self._render_lock:
                    result = self.renderer.render(events[start:stop])
                self.skipped += result.skipped
                ends = PointEnds(result.data, result.ends)
                self._gather(result.data, result.points, ends, full)
                start = stop
        finally:
            self._rendering = False
        # One trip to the spool's thread for the whole batch: each waits for a turn of
        # the loop, which the listeners make long under load.
        await self._spool(full)

    async def flush(self) -> None:
        await self._spool_pending()
        for sender in self.senders:
            sender.wake()

    async def finish(self, timeout: float) -> int:
        """Shutdown, before the last report: spool the batch being gathered, give the
        senders this output owns up to ``min(options.timeout, 5, timeout)`` seconds to
        send, and move what the spool's full disk made them hold in memory into the
        spool if it takes it now; the points still held (close() drops them:
        ``spool_full``) are returned."""
        await self.flush()
        owned = [sender for sender in self.senders if sender in self._owned]
        wait = min(self._drain_time, timeout)
        await asyncio.gather(*(sender.drain(wait) for sender in owned))
        for sender in owned:
            await sender.tick()
        return sum(sender.held_points for sender in owned)

    async def close(self) -> None:
        """Spool the batch being gathered (to every sender, handed over or not); give the
        senders this output still owns ``min(timeout, 5)`` seconds to send what they
        hold (the last report, after :meth:`finish`), stop them, and log what stays in a
        spool (sent at the next start of an output with those servers and database)."""
        if self._flusher is not None:
            self._flusher.cancel()
        await self._spool_pending()
        await self._stop_senders(self._drain_time)

    async def _stop_senders(self, timeout: float) -> None:
        """Stop the senders this output owns after up to ``timeout`` seconds of sending."""
        owned = [sender for sender in self.senders if sender in self._owned]
        self._owned.clear()
        await asyncio.gather(*(sender.drain(timeout) for sender in owned))
        await asyncio.gather(*(sender.stop() for sender in owned))
        for sender in owned:
            if left := sender.spool.pending_points:
                log.warning(
                    "influxdb %s: %d points stay in its spool %s; they are sent when an "
                    "influxdb output with this server and database runs again",
                    sender.name,
                    left,
                    sender.spool.directory,
                )

    def stats(self) -> dict[str, float]:
        """Output-wide figures: events skipped; points written with a growing tag as a
        field (``demoted``, ``on_cardinality = "field"``) or without it
        (``dropped_tags``, ``on_cardinality = "drop"``); tags demoted because a server
        refused their new values (``tags_demoted``, since start)."""
        renderer = self.renderer
        return {
            "skipped": self.skipped,
            "demoted": renderer.demoted,
            "dropped_tags": renderer.dropped_tags,
            "tags_demoted": self.demotions.learned,
        }

    def server_stats(self) -> dict[str, dict[str, float]]:
        """Each sender's figures under its server (``a:8086+b:8086`` for failover)."""
        return {sender.name: sender.figures() for sender in self.senders}

    def lost(self) -> dict[tuple[str, str], int]:
        """Points lost per server since start, by reason (see :meth:`SpoolSender.lost`):
        ``spool_full``, ``spool_corrupt``, ``expired``, ``rejected``."""
        totals: dict[tuple[str, str], int] = {}
        for sender in self.senders:
            # A sender a reload moved between outputs: each counts its own stretch.
            handed = self._lost_handed.get(sender)
            before = self._lost_before.get(sender, {})
            for reason, points in (sender.lost() if handed is None else handed).items():
                totals[(reason, sender.name)] = points - before.get(reason, 0)
        return totals

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

    def _hand_over(self, sender: SpoolSender) -> dict[str, int]:
        """Reload: ``sender`` is the successor's now; its losses so far (returned) stay
        counted here, later ones are the successor's."""
        self._owned.discard(sender)
        lost = self._lost_handed[sender] = sender.lost()
        return lost

    def _running_sender(self, directory: Path) -> SpoolSender | None:
        """The sender of the output this one is to replace that has ``directory`` open."""
        previous = self._previous
        if previous is None:
            return None
        for sender in previous.senders:
            if sender in previous._owned and sender.spool.directory.resolve() == directory:
                return sender
        return None

    def _memory_points(self) -> int:
        return self.options.queue_size or MEMORY_POINTS

    def _worker_dir(self) -> Path:
        """This worker's directory under the output's (its spools are in it)."""
        return self._root() / f"worker-{self.context.worker}"

    def _client(self, url: str) -> InfluxClient:
        options = self.options
        return InfluxClient(
            url,
            options.database,
            username=options.username,
            password=options.password,
            retention_policy=options.retention_policy,
            timeout=options.timeout,
            gzip=options.gzip,
        )

    def _groups(self) -> list[list[str]]:
        """Replicate: a spool per server. Failover: one spool, the servers in order."""
        urls = self.options.urls
        return [[url] for url in urls] if self.options.mode == "replicate" else [urls]

    def _root(self) -> Path:
        """The output's directory under spool_dir, shared by its worker processes."""
        return Path(self.options.spool_dir) / self.options.label

    def _spool_path(self, addresses: list[str]) -> Path:
        """The spool directory of a server (or failover group), absolute. Per output,
        worker and server: two processes never share a spool directory."""
        return (self._worker_dir() / spool_name(addresses, self.options.database)).resolve()

    def _open_spool(self, index: int, url: str, addresses: list[str]) -> Spool | SpoolToBe:
        """The server's spool; a stand-in if the disk is too full (or failing) to make
        its directory, so the output starts and sends from memory meanwhile."""
        directory = self._spool_path(addresses)
        root = directory.parent
        # Spools used to be named by position and address, once with the URL's
        # user:password@ too: such a spool is renamed, its batches kept.
        for old in (urlsplit(url).netloc, addresses[0]):
            _move(root / f"{index}-{old.replace(':', '_')}", directory)
        open_spool = partial(
            Spool,
            directory,
            max_bytes=self.options.spool_max_bytes,
            fsync_interval=self.options.fsync_interval,
            count_points=_count_points,
        )
        try:
            return open_spool()
        except OSError as exc:
            if exc.errno not in DISK_ERRORS:
                raise
            log.warning(
                "%s: cannot make the spool %s (%s): batches go to the server from memory, "
                "up to %d points, until it can be made",
                self.options.label,
                directory,
                exc.strerror or exc,
                self._memory_points(),
            )
            return SpoolToBe(directory, exc, open_spool)

    async def _spool_pending(self) -> None:
        if self._pending:
            await self._spool([self._take_pending()])

    def _gather(self, data: bytes, points: int, ends: PointEnds, full: list[Part]) -> None:
        """Add rendered points to the pending batch, moving it to ``full`` each time it
        reaches ``batch_size`` points or ``batch_bytes`` bytes (cut at a point's end:
        ``ends``, as a string field may hold a newline)."""
        start, size = 0, len(data)
        while start < size:
            cut = self._fit(start, size, ends)
            count = ends.count(start, cut) if cut < size else points
            points -= count
            if cut > start:
                self._put(data[start:cut], count)
            start = cut
            if start < size or self._full():
                full.append(self._take_pending())

    def _fit(self, start: int, size: int, ends: PointEnds) -> int:
        """Up to where the points from ``start`` on go into the pending batch: all that
        fit; at least one when the batch is empty (a point over batch_bytes goes
        alone); none (``start``) when the batch must be sent first."""
        limit = start + self.options.batch_bytes - self._pending_bytes
        if size <= limit:
            return size
        cut = ends.last(start, limit)
        if cut == start and not self._pending:
            return ends.first(start)
        return cut

    def _put(self, data: bytes, points: int) -> None:
        if not self._pending:
            self._first_pending = time.monotonic()
        self._pending.append(data)
        self._pending_points += points
        self._pending_bytes += len(data)

    def _full(self) -> bool:
        points, size = self._pending_points, self._pending_bytes
        return points >= self.options.batch_size or size >= self.options.batch_bytes

    def _take_pending(self) -> Part:
        record = b"".join(self._pending), self._pending_points
        self._pending, self._pending_points, self._pending_bytes = [], 0, 0
        return record

    async def _spool(self, records: list[Part]) -> None:
        if not records:
            return
        if len(self.senders) == 1:
            await self.senders[0].append(records)  # without gather's task: no extra turn
        else:
            await asyncio.gather(*(sender.append(records) for sender in self.senders))

    async def _flush_loop(self) -> None:
        interval = self.options.flush_interval
        while True:
            await asyncio.sleep(interval / 4)
            try:
                await self._flush_due(interval)
            except Exception as exc:  # a bug must not stop the flushing for good
                self._warn.warning("flush", "influxdb output: flush failed: %r", exc)

    async def _flush_due(self, interval: float) -> None:
        # (Not while a write renders: its full batches go to the spool first.)
        due = time.monotonic() - self._first_pending >= interval
        if self._pending and due and not self._rendering:
            await self._spool_pending()
        for sender in self.senders:  # bounds what a power cut can take from a quiet spool
            await sender.tick()
        if self.demotions.unsaved and time.monotonic() >= self._demotions_retry_at:
            # The demotions file refused a write (a full disk): tried again each second.
            self._demotions_retry_at = time.monotonic() + SPOOL_RETRY
            await asyncio.to_thread(self.demotions.retry)


def _halves(payload: bytes, points: int) -> list[Part] | None:
    """``payload`` cut in two at the point's end nearest before its middle (after its
    first point if that is longer), with their points; None for a single point. A
    string field may hold a newline: the cut is where influxd ends a line.

    >>> _halves(b"a 1\\nb 2\\nc 3\\n", 3)
    [(b'a 1\\n', 1), (b'b 2\\nc 3\\n', 2)]
    >>> _halves(b'a x="1\\n2\\n3" 1\\nb x=1 2\\n', 2)
    [(b'a x="1\\n2\\n3" 1\\n', 1), (b'b x=1 2\\n', 1)]
    >>> _halves(b"a 1\\n", 1) is None
    True
    """
    if points < 2:
        return None
    ends = PointEnds.of(payload, points)
    cut = ends.last(0, len(payload) // 2) or ends.first(0)
    if not 0 < cut < len(payload):
        return None
    first = min(max(ends.count(0, cut), 1), points - 1)
    return [(payload[:cut], first), (payload[cut:], points - first)]


def stored_points(error: str, payload: bytes) -> int:
    """How many lines of ``payload`` influxd 1.x stored, from its 400 error text: none
    when the text does not say.

    A partial write stores every line it could parse and names each it could not
    (``unable to parse '<line>'``; a line with an unclosed quote takes the next ones
    with it), then adds ``dropped=N`` for points refused for another reason (a field
    type conflict). Lines are cut where influxd cuts them (:func:`count_lines`): a
    string field may hold a newline. Seen from influxd 1.6.7.

    >>> stored_points("partial write: unable to parse 'm value=': missing field value "
    ...               "dropped=0", b"m value=\\nm value=1 1\\n")
    1
    >>> stored_points("partial write: field type conflict dropped=1",
    ...               b'm value=1,description="a\\nb" 1\\nm value=2 2\\nm value=3 3\\n')
    2
    >>> stored_points("unable to parse 'a x=\\"1\\nb x=2': unbalanced quotes", b'a x="1\\nb x=2\\n')
    0
    """
    unparsed: list[str] = _UNPARSED.findall(error)
    dropped = _PARTIAL.search(error)
    if dropped is None and not unparsed:
        return 0
    return count_lines(payload) - len(unparsed) - (int(dropped[1]) if dropped else 0)


def _timestamp(line: bytes) -> float:
    """A line's timestamp (ns); a line without one, which influxd stamps with the time it
    arrives, is the newest."""
    stamp = line.rstrip(b"\n").rpartition(b" ")[2]
    return int(stamp) if stamp.removeprefix(b"-").isdigit() else math.inf


def _count_points(payload: bytes) -> int:
    """Points in line protocol, estimated (the spool's count for a damaged record): the
    lines influxd would cut it into when each ends with a timestamp, else its newlines
    (damage can open a quote and take every line after it in)."""
    lines = split_lines(payload)
    if all(_LINE_END.search(line) for line in lines):
        return len(lines)
    return payload.count(b"\n")


def spool_name(addresses: list[str], database: str) -> str:
    """A spool directory's name: a digest of the servers (``host:port``, in order) and
    the database, so no credential is ever in a file name, a password change keeps the
    spool, and reordering ``urls`` in replicate mode does not orphan one.

    >>> spool_name(["influx-1:8086"], "numbat")
    'spool-90b1da5f75e174d3'
    """
    key = "\n".join([*addresses, database]).encode()
    return f"spool-{hashlib.sha256(key).hexdigest()[:16]}"


def claim_generation(directory: Path, *, seed: Callable[[], int] | None = None) -> int:
    """The generation this start of the output renders with: one more than the last
    start's, counted in ``directory/generation``; a first one from ``seed``
    (:func:`fresh_generation` by default) when the directory holds no count. Blocking
    I/O; raises nothing for it.

    Every start (after a restart or a reload) takes a new generation, so the points it
    writes in a millisecond do not overwrite those written in the same millisecond
    before (see numbat.store.lineprotocol). The count is on disk before it is used:
    written to a temporary file, fsynced and renamed over the old one, so a crash at any
    point leaves the old count or the new. A directory without a count (new, or lost
    with an ephemeral volume) starts from a seed, not from 1, so it does not take the
    offsets an earlier life in a lost directory took, nor those of another collector
    writing the same series; a file that does not hold a count (not written by numbat)
    is logged and counting starts again from a seed. When the count cannot be read or
    written (a full disk, an I/O error), this start renders with a seed, logged, and
    leaves no temporary file behind.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     [claim_generation(Path(tmp), seed=lambda: 41) for _ in range(3)]
    [41, 42, 43]
    """
    fresh = seed or fresh_generation
    path = directory / "generation"
    temporary = path.with_name("generation.tmp")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        generation = _next_generation(path, fresh)
        _write_count(directory, path, temporary, generation)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        generation = fresh()
        log.warning(
            "%s: cannot keep the generation count (%s); this start renders with "
            "generation %d, taken from the clock",
            path,
            exc,
            generation,
        )
    return generation


def fresh_generation() -> int:
    """A first generation, 1 to 2**31 - 1: the clock in ns mixed with 31 random bits,
    so that it differs from any earlier one with high probability and its base slot
    falls anywhere in the millisecond (docs/storage.md says what chance of a collision
    remains)."""
    return (time.time_ns() ^ secrets.randbits(31)) % (2**31 - 1) + 1


def _next_generation(path: Path, fresh: Callable[[], int]) -> int:
    """One more than the count in ``path``; ``fresh()`` when there is none or it is not
    a count (logged). OSError when it cannot be read."""
    try:
        last = int(path.read_text(encoding="ascii"))
        if last < 0:
            raise ValueError(f"negative: {last}")
    except FileNotFoundError:
        return fresh()
    except ValueError as exc:  # UnicodeDecodeError included
        generation = fresh()
        log.warning("%s holds no generation count (%s); counting on from %d", path, exc, generation)
        return generation
    return last + 1


def _write_count(directory: Path, path: Path, temporary: Path, generation: int) -> None:
    """Replace ``path`` with ``generation``, durably (see :func:`claim_generation`)."""
    with temporary.open("w", encoding="ascii") as out:
        out.write(f"{generation}\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)  # the rename itself
    finally:
        os.close(handle)


def _move(old: Path, new: Path) -> None:
    if old != new and old.is_dir() and not new.exists():
        old.rename(new)
