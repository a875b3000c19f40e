"""Fan-out: every batch to every output, through one bounded queue and task per output.

What an output's full queue does depends on its ``when_full`` policy (after Vector's
buffers):

- ``drop_newest`` (best-effort outputs: analyzer, graphite, prettylog): the events of a
  new batch that do not fit are dropped for that output alone and counted (``dropped``,
  ``reason=queue_full``); ingest and the other outputs carry on at full speed.
- ``block`` (durable outputs: logfile, sqlite, influxdb): the queue holds the
  :class:`~numbat.server.flow.Gate`, so stream listeners stop reading until it has
  drained to half; senders wait in the kernel's buffers and their own backlogs.
  Events already read when it filled still go in, up to :data:`BLOCK_SLACK_EVENTS`
  past ``queue_size`` (beyond: ``queue_full``). An output that writes nothing for
  ``block_timeout`` seconds while full stops blocking and drops instead
  (``reason=block_timeout``) until it has drained, so a stuck disk cannot stall ingest
  for ever.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from numbat._ratelimit import RateLimitedLog
from numbat.collector.outputs import Batch, Output
from numbat.event import Event
from numbat.server.flow import Gate
from numbat.server.stats import Stats

log = logging.getLogger(__name__)

COALESCE_EVENTS = 20_000
FLUSH_EVENTS = 20_000
CLOSE_TIMEOUT = 10.0  # seconds an output's close() may take at stop
FINISH_SLACK = 1.0  # seconds past its own timeout an output's finish() may take
BLOCK_SLACK_EVENTS = 100_000
"""How far past ``queue_size`` a blocking queue takes what was already read when it
filled (every connection read once that loop turn: up to 256 KiB each)."""


@dataclass(frozen=True, slots=True)
class FullPolicy:
    """What an output queue does when full: ``when_full`` (``"block"`` or
    ``"drop_newest"``) and ``block_timeout`` (seconds without a completed write,
    while blocking, before it drops instead; 0: block for ever).

    >>> FullPolicy("block").block_timeout
    30.0
    """

    when_full: Literal["block", "drop_newest"] = "drop_newest"
    block_timeout: float = 30.0


class OutputQueue:
    """One output's bounded queue (counted in events) and the task that drains it."""

    def __init__(
        self,
        label: str,
        output: Output,
        max_events: int,
        stats: Stats,
        *,
        policy: FullPolicy | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.label = label
        self.output = output
        self.max_events = max_events
        self.policy = policy or FullPolicy()
        self.queued = 0
        self._stats = stats
        self._gate = gate or Gate()
        self._queue: deque[Batch] = deque()
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._writing: Output | None = None  # the output a write is in progress on
        self._warn = RateLimitedLog(log)
        self.blocking = False  # holding the gate: stream listeners are not reading
        self._gave_up = False  # blocked past block_timeout: dropping until drained
        self._blocked_at = 0.0
        self._wrote_at = 0.0  # loop time of the last completed write
        self._timer: asyncio.TimerHandle | None = None
        # What each output (a reload replaces it) had lost inside itself when last counted.
        self._lost: dict[int, dict[tuple[str, str], int]] = {}
        stats.before_report(lambda: self.count_lost(self.output), output=label)
        stats.gauge("output.queued", lambda: self.queued, output=label)
        stats.gauge("output.blocking", lambda: int(self.blocking), output=label)
        # An output's own figures (e.g. a reconnecting output's backlog and its drops).
        # Lambdas, not bound methods: self.output is replaced on reload.
        stats.gauges("output.", lambda: self.output.stats(), output=label)  # noqa: PLW0108
        stats.gauges_by("output.", "server", lambda: self.output.server_stats(), output=label)  # noqa: PLW0108

    async def start(self) -> None:
        await self.output.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.label)

    def offer(self, batch: Batch, *, reserved: bool = False) -> None:
        """Queue ``batch``; what does not fit in the queue is dropped and counted.

        ``reserved``: the daemon's own figures, which take the reserved room past
        ``max_events`` (a report is small and periodic): a full queue must not hide the
        very counts that say it is dropping.
        """
        room = self._limit() - self.queued
        if len(batch) > room and not reserved:
            # Keep the part that fits: a batch bigger than the whole queue must not be
            # lost entirely by an output that is keeping up.
            kept = max(room, 0)
            reason = "block_timeout" if self._gave_up else "queue_full"
            self._stats.count("dropped", len(batch) - kept, output=self.label, reason=reason)
            self._warn.warning(reason, "output %s: queue full, dropping events", self.label)
            if not kept:
                return
            batch = Batch(batch.events[:kept])
        self._queue.append(batch)
        self.queued += len(batch)
        self._idle.clear()
        self._ready.set()
        if self.queued >= self.max_events and self._blocks():
            self._block()

    def configure(self, max_events: int, policy: FullPolicy) -> None:
        """A reload: the new size and policy apply from the next batch on."""
        self.max_events, self.policy = max_events, policy
        if not self._blocks():
            self._unblock()

    def _blocks(self) -> bool:
        return self.policy.when_full == "block" and not self._gave_up

    def _limit(self) -> int:
        """Events the queue takes: past max_events only while blocking (reads in flight)."""
        return self.max_events + BLOCK_SLACK_EVENTS if self._blocks() else self.max_events

    def _block(self) -> None:
        if self.blocking:
            return
        loop = asyncio.get_running_loop()
        self.blocking, self._blocked_at = True, loop.time()
        self._gate.hold(self)
        self._stats.count("blocked", output=self.label)
        if self.policy.block_timeout:
            self._timer = loop.call_later(self.policy.block_timeout, self._check_stalled)

    def _unblock(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.blocking:
            self.blocking = False
            self._gate.release(self)

    def _check_stalled(self) -> None:
        """Still full, and no write done for block_timeout: stop holding ingest up."""
        self._timer = None
        if not self.blocking:
            return
        loop = asyncio.get_running_loop()
        since = max(self._wrote_at, self._blocked_at)
        wait = since + self.policy.block_timeout - loop.time()
        if wait > 0:  # writes go on, just slower than reads: keep blocking
            self._timer = loop.call_later(wait, self._check_stalled)
            return
        self._gave_up = True
        self._unblock()
        log.warning(
            "output %s: no write done for %ss while full: dropping new events instead of "
            "blocking ingest, until it drains",
            self.label,
            self.policy.block_timeout,
        )

    def _wrote(self, count: int) -> None:
        """After a write (done or failed): the queue has room again below half."""
        self.queued -= count
        self._wrote_at = asyncio.get_running_loop().time()
        if self.queued > self.max_events // 2:
            return
        self._unblock()
        if self._gave_up:
            self._gave_up = False
            log.warning("output %s: drained: blocking ingest again when full", self.label)

    async def drain(self, timeout: float) -> bool:
        """Wait until everything queued is written; False if ``timeout`` ran out first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def finish(self, timeout: float) -> None:
        """Shutdown, after the drain: the output pushes out what it holds inside itself
        (:meth:`Output.finish`); what it still holds is counted now as ``dropped``
        (``held_at_shutdown``: events it had taken, or was taking in a write still in
        progress, that its close will drop), so the last report says so."""
        try:
            # The output bounds its own wait; this bound is for one that does not.
            held = await asyncio.wait_for(self.output.finish(timeout), timeout + FINISH_SLACK)
        except Exception as exc:  # a timeout too: it will be closed anyway
            self._warn.warning("finish", "output %s: finishing: %r", self.label, exc)
            return
        if held:
            self._stats.count("dropped", held, output=self.label, reason="held_at_shutdown")
            log.warning("output %s: %d events it held were not sent at shutdown", self.label, held)

    def abandon(self) -> int:
        """Shutdown, after the drain: drop what is still waiting (not a write in
        progress), counted as ``shutdown`` now, so the final report can say so."""
        self._unblock()
        lost = sum(len(batch) for batch in self._queue)
        if lost:
            self._queue.clear()
            self.queued -= lost
            self._stats.count("dropped", lost, output=self.label, reason="shutdown")
            log.warning("output %s: %d events not written at shutdown", self.label, lost)
        return lost

    async def stop(self, reason: str = "shutdown") -> None:
        """Cancel the task and close the output; what is still queued is counted as
        dropped with ``reason`` (``shutdown``, or ``removed`` by a reload)."""
        self._unblock()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.queued:
            self._stats.count("dropped", self.queued, output=self.label, reason=reason)
            # The last self-monitoring report may have gone: say it where it is seen.
            log.warning("output %s: %d events not written (%s)", self.label, self.queued, reason)
        try:  # a close stuck behind a write (a stalled disk) must not hold up the stop
            await asyncio.wait_for(self.output.close(), CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning(
                "output %s: close did not finish in %ss: left behind", self.label, CLOSE_TIMEOUT
            )
        self._stats.forget(output=self.label)

    def count_lost(self, output: Output) -> None:
        """Count in ``dropped`` what ``output`` lost inside itself since the last call."""
        seen = self._lost.setdefault(id(output), {})
        for (reason, server), total in output.lost().items():
            if total > seen.get((reason, server), 0):
                tags = {"server": server} if server else {}
                amount = total - seen.get((reason, server), 0)
                self._stats.count("dropped", amount, output=self.label, reason=reason, **tags)
            seen[(reason, server)] = total

    async def _close(self, output: Output) -> None:
        """Close an output and count what it lost on the way out (a replaced one's)."""
        try:
            await output.close()
        finally:
            self.count_lost(output)
            del self._lost[id(output)]

    async def replace_output(self, output: Output, *, started: bool = False) -> None:
        """Reload: the queue stays and the next write goes to ``output`` (started here
        unless ``started``: then it borrows from the old one first, see
        :meth:`~numbat.collector.outputs.Output.borrow_from`).

        The old output is closed at once if idle, else as soon as its current write ends
        (never under it, and without making the reload wait for a stuck write).
        """
        if not started:
            if type(self.output) is type(output):
                output.borrow_from(self.output)
            await output.start()
        old, self.output = self.output, output
        if type(old) is type(output):
            output.adopt(old)  # an internal backlog (a peer that is down) moves over too
        if self._writing is not old:
            await self._close(old)

    def _take(self) -> Batch:
        first = self._queue.popleft()
        if not self._queue or len(first) >= COALESCE_EVENTS:
            return first
        batches = [first]
        size = len(first)
        while self._queue and size + len(self._queue[0]) <= COALESCE_EVENTS:
            size += len(self._queue[0])
            batches.append(self._queue.popleft())
        return Batch.merge(batches) if len(batches) > 1 else first

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._ready.clear()
                self._idle.set()
                await self._ready.wait()
                continue
            batch = self._take()
            output = self._writing = self.output
            try:
                lost = await output.write(batch)
            except asyncio.CancelledError:
                self._queue.appendleft(batch)
                raise
            except Exception as exc:
                self._stats.count("dropped", len(batch), output=self.label, reason="write_error")
                self._warn.warning("write", "output %s: write failed: %r", self.label, exc)
            else:
                self._count_written(len(batch), lost)
            finally:
                self._writing = None
                if output is not self.output:  # replaced during the write: close it now
                    await self._close_replaced(output)
            self._wrote(len(batch))

    def _count_written(self, size: int, lost: Mapping[str, int] | None) -> None:
        """``written``, less what the output says it left out (``dropped`` by reason)."""
        for reason, count in (lost or {}).items():
            if count > 0:
                self._stats.count("dropped", count, output=self.label, reason=reason)
                size -= count
        self._stats.count("written", size, output=self.label)

    async def _close_replaced(self, output: Output) -> None:
        # A failing close must not end the task that serves the new output.
        try:
            await self._close(output)
        except Exception as exc:
            self._warn.warning("close", "output %s: closing the old output: %r", self.label, exc)


class Fanout:
    """Collects events submitted during one loop iteration into a batch for every output."""

    def __init__(self) -> None:
        self.queues: dict[str, OutputQueue] = {}
        self._pending: list[Event] = []
        self._scheduled = False

    def submit(self, events: list[Event]) -> None:
        self._pending += events
        if len(self._pending) >= FLUSH_EVENTS:
            # A busy loop turn can read far more than a queue holds: hand over now.
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def submit_reserved(self, events: list[Event]) -> None:
        """The daemon's own figures: handed over now, after the data before them,
        taking the queues' reserved room (see :meth:`OutputQueue.offer`)."""
        self.flush()
        batch = Batch(events)
        for queue in self.queues.values():
            queue.offer(batch, reserved=True)

    def flush(self) -> None:
        """Hand what this loop turn collected to the queues now (also run, scheduled,
        at the end of each loop turn that submitted events)."""
        self._scheduled = False
        if not self._pending:
            return
        batch, self._pending = Batch(self._pending), []
        for queue in self.queues.values():
            queue.offer(batch)
