"""Fan-out: every event to every output; a slow, stalled or failing output hurts only itself."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest

from numbat.collector.daemon import Collector
from numbat.collector.fanout import COALESCE_EVENTS, Fanout, OutputQueue
from numbat.collector.outputs import Batch, Output
from numbat.config import OutputConfig
from numbat.event import Event
from numbat.server import ProcessContext
from numbat.server.stats import Stats
from tests.collector.conftest import (
    LOOPBACK,
    MEMORY,
    MemoryOutput,
    address,
    config,
    line,
    memory,
    seqs,
    started,
    until,
)
from tests.collector.test_listeners import send, tcp_connect

STALL = "tests.collector.test_fanout:StallOutput"
FAILING = "tests.collector.test_fanout:FailingOutput"


class StallOptions(OutputConfig, kw_only=True):
    """Where the stalled output connects: a TCP peer that never reads."""

    uri: str


class StallOutput(Output):
    """A test-only output writing NDJSON to a TCP peer, waiting for the peer to take it."""

    Options = StallOptions
    options: StallOptions

    def __init__(self, options: StallOptions, *, context: ProcessContext | None = None) -> None:
        super().__init__(options, context=context)
        self.writer: asyncio.StreamWriter | None = None
        self.bytes_handed = 0

    async def start(self) -> None:
        parts = urlsplit(self.options.uri)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # stall sooner
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
        except BaseException:
            sock.close()
            raise
        _, self.writer = await asyncio.open_connection(sock=sock)

    async def write(self, batch: Batch) -> None:
        assert self.writer is not None
        self.writer.write(batch.ndjson)
        self.bytes_handed += len(batch.ndjson)
        await self.writer.drain()

    def backed_up(self) -> int:
        """Bytes waiting in our transport because the peer does not read."""
        assert self.writer is not None
        return self.writer.transport.get_write_buffer_size()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()  # the peer will never take the rest
            self.writer = None


class FailingOutput(Output):
    """A test-only output whose every write fails, like a sink that is down."""

    Options = OutputConfig

    async def write(self, batch: Batch) -> None:
        raise ConnectionRefusedError("the sink is down")


@pytest.fixture
def deaf_peer() -> Iterator[str]:
    """A TCP listener that never accepts or reads: its buffers fill and writers stall."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server.bind((LOOPBACK, 0))
    server.listen(4)
    yield "tcp://{}:{}".format(*server.getsockname())
    server.close()


def test_stalled_output_does_not_slow_the_healthy_one(deaf_peer: str) -> None:
    """A peer that never reads fills one output's queue; the other gets all 20,000 in order."""
    total = 20_000

    async def main() -> None:
        cfg = config(
            [f"tcp://{LOOPBACK}:0"],
            [
                {"type": MEMORY, "name": "mem"},
                {"type": STALL, "name": "stall", "uri": deaf_peer, "queue_size": 500},
            ],
        )
        collector = Collector(cfg, hostname="test-host")
        async with started(collector):
            stall = collector.queues["stall"]
            stalled = stall.output
            assert isinstance(stalled, StallOutput)
            mem = memory(collector)
            sock = await tcp_connect(address(collector, "tcp"))
            for start in range(0, total, 1000):
                await send(sock, b"".join(line(i) for i in range(start, start + 1000)))
            sock.close()
            await until(lambda: len(mem.traffic()) == total, what=f"{total} events at mem")
            assert seqs(mem.traffic()) == list(range(total))
            # ... while the stalled output is still stuck with most of them.
            assert stalled.backed_up() > 0
            dropped = collector.stats.get("dropped", output="stall", reason="queue_full")
            assert dropped > 0
            assert stall.queued <= 500
            assert collector.stats.get("dropped", output="mem", reason="queue_full") == 0
            assert collector.stats.get("written", output="mem") == total
            assert collector.stats.get("written", output="stall") < total
            # Every event is accounted for: written, queued (one batch may be mid-write), dropped.
            assert collector.stats.get("written", output="stall") + stall.queued + dropped == total
            assert stalled.bytes_handed < total * len(line(0))
            # The stalled output cannot drain: stop gives up after the timeout and says so.
            assert await collector.stop(drain_timeout=0.2) is False
            assert collector.stats.get("dropped", output="stall", reason="shutdown") > 0

    asyncio.run(main())


def test_failing_output_counts_its_losses_and_the_others_get_everything() -> None:
    """Writes that raise are counted as write_error for that output alone; the rest flow."""

    async def main() -> None:
        cfg = config(
            [f"tcp://{LOOPBACK}:0"],
            [{"type": MEMORY, "name": "mem"}, {"type": FAILING, "name": "down"}],
        )
        collector = Collector(cfg, hostname="test-host")
        async with started(collector):
            mem = memory(collector)

            def has(count: int) -> Callable[[], bool]:
                return lambda: len(mem.traffic()) == count

            for batch in range(5):  # separate connections, separate batches
                sock = await tcp_connect(address(collector, "tcp"))
                await send(sock, b"".join(line(batch * 100 + i) for i in range(100)))
                sock.close()
                await until(has(100 * (batch + 1)), what="a batch")
            await until(
                lambda: collector.stats.get("dropped", output="down", reason="write_error") == 500,
                what="500 write errors",
            )
            assert seqs(mem.traffic()) == list(range(500))
            assert collector.stats.get("written", output="down") == 0
            assert await collector.stop(drain_timeout=1) is True

    asyncio.run(main())


# ---------------------------------------------------------------- units


class GateOutput(Output):
    """Writes wait until the test opens the gate; records what it wrote."""

    Options = OutputConfig

    def __init__(self, options: OutputConfig, *, context: ProcessContext | None = None) -> None:
        super().__init__(options, context=context)
        self.gate = asyncio.Event()
        self.writing = asyncio.Event()
        self.batches: list[list[Event]] = []
        self.closed = False

    async def write(self, batch: Batch) -> None:
        self.writing.set()
        await self.gate.wait()
        if self.closed:
            raise OSError("write on a closed output")
        self.batches.append(batch.events)

    async def close(self) -> None:
        self.closed = True


def events(start: int, count: int) -> list[Event]:
    return [{"name": "t", "value": i, "time": 1} for i in range(start, start + count)]


def values(batches: list[list[Event]]) -> list[object]:
    return [e["value"] for batch in batches for e in batch]


def test_output_queue_keeps_what_fits_and_counts_the_rest_as_dropped() -> None:
    """Past max_events new events are dropped (queue_full); what fits is written in order."""

    async def main() -> None:
        stats = Stats("h", "numbat.collector")
        out = GateOutput(OutputConfig(type="gate"))
        queue = OutputQueue("gate", out, max_events=10, stats=stats)
        await queue.start()
        queue.offer(Batch(events(0, 4)))
        await out.writing.wait()  # batch 0-3 is in the output's hands, still counted
        queue.offer(Batch(events(4, 4)))
        queue.offer(Batch(events(8, 3)))  # room for 2: event 10 is dropped
        assert queue.queued == 10
        assert stats.get("dropped", output="gate", reason="queue_full") == 1
        queue.offer(Batch(events(11, 1)))  # no room at all
        assert stats.get("dropped", output="gate", reason="queue_full") == 2
        out.gate.set()
        assert await queue.drain(5)
        assert values(out.batches) == list(range(10))
        assert out.batches[1:] == [events(4, 4) + events(8, 2)]  # queued batches coalesce
        assert queue.queued == 0
        assert stats.get("written", output="gate") == 10
        await queue.stop()
        assert out.closed

    asyncio.run(main())


def test_output_queue_takes_a_batch_bigger_than_its_whole_queue_in_part() -> None:
    """A batch larger than max_events fills the queue instead of being lost entirely."""

    async def main() -> None:
        stats = Stats("h", "numbat.collector")
        out = MemoryOutput(OutputConfig(type="mem"))
        queue = OutputQueue("mem", out, max_events=5, stats=stats)
        await queue.start()
        queue.offer(Batch(events(0, 8)))
        assert await queue.drain(5)
        assert [e["value"] for e in out.events] == [0, 1, 2, 3, 4]
        assert stats.get("dropped", output="mem", reason="queue_full") == 3
        await queue.stop()

    asyncio.run(main())


def test_output_queue_drain_times_out_and_stop_counts_the_rest_as_dropped() -> None:
    """drain() gives up after its timeout; stop() closes the output and counts the leftovers."""

    async def main() -> None:
        stats = Stats("h", "numbat.collector")
        out = GateOutput(OutputConfig(type="gate"))
        queue = OutputQueue("gate", out, max_events=100, stats=stats)
        await queue.start()
        assert await queue.drain(0.01)  # nothing queued: drained at once
        queue.offer(Batch(events(0, 3)))
        queue.offer(Batch(events(3, 3)))
        assert await queue.drain(0.05) is False
        await queue.stop()
        assert stats.get("dropped", output="gate", reason="shutdown") == 6
        assert out.closed and out.batches == []

    asyncio.run(main())


def test_output_queue_coalesces_small_batches_up_to_the_limit() -> None:
    """Batches queued behind a write are merged, never beyond COALESCE_EVENTS per write."""

    async def main() -> None:
        stats = Stats("h", "numbat.collector")
        out = GateOutput(OutputConfig(type="gate"))
        queue = OutputQueue("gate", out, max_events=10 * COALESCE_EVENTS, stats=stats)
        await queue.start()
        queue.offer(Batch(events(0, 1)))
        await out.writing.wait()
        per = COALESCE_EVENTS // 4
        for i in range(6):
            queue.offer(Batch(events(1 + i * per, per)))
        out.gate.set()
        assert await queue.drain(5)
        assert [len(b) for b in out.batches] == [1, 4 * per, 2 * per]
        assert values(out.batches) == list(range(1 + 6 * per))
        await queue.stop()

    asyncio.run(main())


def test_replacing_an_output_closes_the_old_one_only_after_its_write() -> None:
    """Reload swaps the output at once but closes the old one when its write has ended."""

    async def main() -> None:
        stats = Stats("h", "numbat.collector")
        old = GateOutput(OutputConfig(type="gate"))
        queue = OutputQueue("out", old, max_events=100, stats=stats)
        await queue.start()
        queue.offer(Batch(events(0, 3)))
        await old.writing.wait()
        new = MemoryOutput(OutputConfig(type="mem"))
        # A stuck write must not hold up the reload ...
        await asyncio.wait_for(queue.replace_output(new), 1)
        assert queue.output is new
        # ... nor be cut off under it.
        assert not old.closed
        queue.offer(Batch(events(3, 2)))
        old.gate.set()
        assert await queue.drain(5)
        assert old.closed
        assert values(old.batches) == [0, 1, 2]
        assert [e["value"] for e in new.events] == [3, 4]
        assert stats.get("dropped", output="out", reason="write_error") == 0
        await queue.stop()
        assert new.closed

    asyncio.run(main())


def test_replacing_an_idle_output_closes_it_at_once() -> None:
    """With no write in progress, the replaced output is closed by replace_output itself."""

    async def main() -> None:
        old = MemoryOutput(OutputConfig(type="mem"))
        queue = OutputQueue("out", old, max_events=100, stats=Stats("h", "numbat.collector"))
        await queue.start()
        await queue.replace_output(MemoryOutput(OutputConfig(type="mem")))
        assert old.closed
        await queue.stop()

    asyncio.run(main())


def test_fanout_batches_one_loop_iteration_for_every_output() -> None:
    """Events submitted in one loop turn become one batch, offered to each output alike."""

    async def main() -> None:
        stats = Stats("h", "numbat.collector")
        fanout = Fanout()
        outs = []
        for label in ("a", "b"):
            out = MemoryOutput(OutputConfig(type="mem"))
            queue = OutputQueue(label, out, max_events=1000, stats=stats)
            await queue.start()
            fanout.queues[label] = queue
            outs.append(out)
        fanout.submit(events(0, 2))
        fanout.submit(events(2, 3))
        await until(lambda: all(len(o.events) == 5 for o in outs), what="5 events each")
        fanout.submit(events(5, 1))
        await until(lambda: all(len(o.events) == 6 for o in outs), what="6 events each")
        for out in outs:
            assert [e["value"] for e in out.events] == list(range(6))
            assert out.batches == 2
        for queue in fanout.queues.values():
            await queue.stop()

    asyncio.run(main())


def test_batch_encodes_ndjson_once_for_all_outputs() -> None:
    """Batch.ndjson is one JSON line per event, computed once and shared."""
    batch = Batch([{"name": "a", "value": 1}, {"name": "b", "value": 2.5, "ok": True}])
    first = batch.ndjson
    assert first == b'{"name":"a","value":1}\n{"name":"b","value":2.5,"ok":true}\n'
    assert batch.ndjson is first
    assert len(Batch.merge([batch, Batch([{"name": "c"}])])) == 3


def test_the_daemons_own_figures_take_the_reserved_room_of_a_full_queue() -> None:
    """A full queue still takes a self-monitoring report (reserved), never counting it as
    queue_full; the data after it is dropped as before."""

    async def main() -> None:
        stats = Stats("h", "numbat.collector")
        out = GateOutput(OutputConfig(type="gate"))
        queue = OutputQueue("gate", out, max_events=10, stats=stats)
        fanout = Fanout()
        fanout.queues["gate"] = queue
        await queue.start()
        fanout.submit(events(0, 10))
        fanout.flush()
        fanout.submit_reserved(events(100, 3))  # the report
        assert queue.queued == 13
        assert stats.get("dropped", output="gate", reason="queue_full") == 0
        fanout.submit(events(10, 2))
        fanout.flush()
        assert stats.get("dropped", output="gate", reason="queue_full") == 2
        out.gate.set()
        assert await queue.drain(5)
        assert values(out.batches) == [*range(10), 100, 101, 102]
        await queue.stop()

    asyncio.run(main())


class LosingOutput(MemoryOutput):
    """A test-only output that loses events inside itself, as its ``lost()`` says."""

    def __init__(self, options: OutputConfig, *, context: ProcessContext | None = None) -> None:
        super().__init__(options, context=context)
        self.losses: dict[tuple[str, str], int] = {}

    def lost(self) -> dict[tuple[str, str], int]:
        return dict(self.losses)

    async def close(self) -> None:
        self.losses[("at_close", "")] = 2  # lost on the way out
        await super().close()


def test_what_an_output_loses_inside_itself_is_counted_as_dropped_by_reason() -> None:
    """An output's lost() totals reach numbat.collector.dropped as deltas, by reason and
    server, at each report; a replaced output's last losses (at close) are counted too."""

    async def main() -> None:
        stats = Stats("h", "numbat.collector", clock=lambda: 1)
        old = LosingOutput(OutputConfig(type="losing"))
        queue = OutputQueue("out", old, max_events=100, stats=stats)
        await queue.start()
        old.losses[("spool_full", "a:8086")] = 5
        first = stats.report(10.0)
        old.losses[("spool_full", "a:8086")] = 7
        old.losses[("spool_corrupt", "a:8086")] = 3
        second = stats.report(10.0)
        third = stats.report(10.0)
        await queue.replace_output(MemoryOutput(OutputConfig(type="mem")))
        fourth = stats.report(10.0)
        await queue.stop()
        dropped = [
            [
                (e["reason"], e.get("server"), e["value"])
                for e in report
                if e["name"] == "numbat.collector.dropped"
            ]
            for report in (first, second, third, fourth)
        ]
        assert dropped == [
            [("spool_full", "a:8086", 5)],
            [("spool_full", "a:8086", 2), ("spool_corrupt", "a:8086", 3)],
            [],
            [("at_close", None, 2)],
        ]

    asyncio.run(main())
