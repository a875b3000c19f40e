"""Backpressure: a full ``when_full = "block"`` output stops the stream listeners from
reading (nothing dropped); ``drop_newest`` drops and counts; a stalled blocking output
gives up blocking after ``block_timeout``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect

from numbat.collector.daemon import Collector
from numbat.collector.fanout import BLOCK_SLACK_EVENTS, FullPolicy, OutputQueue
from numbat.collector.outputs import Batch
from numbat.config import OutputConfig
from numbat.server.flow import Gate
from numbat.server.stats import Stats
from tests.collector.conftest import (
    LOOPBACK,
    MEMORY,
    Daemon,
    address,
    config,
    line,
    memory,
    read_jsonl,
    received,
    seqs,
    start,
    started,
    toml,
    until,
)
from tests.collector.test_fanout import GateOutput, events

GATE = "tests.collector.test_fanout:GateOutput"
BLOCK = FullPolicy("block", block_timeout=0)


async def _queue(max_events: int, policy: FullPolicy, gate: Gate) -> tuple[OutputQueue, Stats]:
    stats = Stats("h", "numbat.collector")
    out = GateOutput(OutputConfig(type="gate"))
    queue = OutputQueue("gate", out, max_events, stats, policy=policy, gate=gate)
    await queue.start()
    return queue, stats


def _output(queue: OutputQueue) -> GateOutput:
    assert isinstance(queue.output, GateOutput)
    return queue.output


def test_a_blocking_queue_holds_the_gate_until_it_has_drained_to_half() -> None:
    """Full: the gate closes and nothing is dropped; it opens once half is written."""

    async def main() -> None:
        gate = Gate()
        queue, stats = await _queue(10, BLOCK, gate)
        queue.offer(Batch(events(0, 4)))
        await _output(queue).writing.wait()  # 0-3 in the output's hands
        queue.offer(Batch(events(4, 5)))
        assert gate.is_open  # 9 of 10
        queue.offer(Batch(events(9, 7)))  # past max_events: kept, and the gate closes
        assert not gate.is_open and queue.blocking
        assert stats.get("dropped", output="gate", reason="queue_full") == 0
        assert stats.get("blocked", output="gate") == 1
        _output(queue).gate.set()
        await gate.wait_open()
        assert queue.queued <= 5
        assert await queue.drain(5)
        assert [e["value"] for b in _output(queue).batches for e in b] == list(range(16))
        await queue.stop()

    asyncio.run(main())


def test_a_drop_newest_queue_never_holds_the_gate() -> None:
    """drop_newest: a full queue drops (queue_full) and ingest is never held up."""

    async def main() -> None:
        gate = Gate()
        queue, stats = await _queue(10, FullPolicy("drop_newest"), gate)
        queue.offer(Batch(events(0, 25)))
        assert gate.is_open and not queue.blocking
        assert stats.get("dropped", output="gate", reason="queue_full") == 15
        await queue.stop()

    asyncio.run(main())


def test_a_blocking_queue_takes_reads_in_flight_only_up_to_its_slack() -> None:
    """Past queue_size plus BLOCK_SLACK_EVENTS even a blocking queue drops (queue_full)."""

    async def main() -> None:
        queue, stats = await _queue(10, BLOCK, Gate())
        queue.offer(Batch(events(0, 10 + BLOCK_SLACK_EVENTS + 3)))
        assert queue.queued == 10 + BLOCK_SLACK_EVENTS
        assert stats.get("dropped", output="gate", reason="queue_full") == 3
        await queue.stop()
        assert stats.get("dropped", output="gate", reason="shutdown") == queue.queued

    asyncio.run(main())


def test_a_stalled_blocking_output_drops_after_block_timeout_then_blocks_again() -> None:
    """No write done for block_timeout while full: the gate opens, new events are dropped
    (block_timeout); once the output writes and drains, a full queue blocks again."""

    async def main() -> None:
        gate = Gate()
        queue, stats = await _queue(10, FullPolicy("block", block_timeout=0.1), gate)
        queue.offer(Batch(events(0, 12)))
        assert not gate.is_open
        await asyncio.wait_for(gate.wait_open(), 5)  # the timeout gave up on the stall
        queue.offer(Batch(events(12, 3)))
        assert stats.get("dropped", output="gate", reason="block_timeout") == 3
        _output(queue).gate.set()
        assert await queue.drain(5)
        queue.offer(Batch(events(100, 11)))
        assert queue.blocking and not gate.is_open  # blocking again
        assert await queue.drain(5)
        assert gate.is_open
        await queue.stop()

    asyncio.run(main())


def test_a_blocking_output_that_writes_slowly_keeps_blocking_past_block_timeout() -> None:
    """Writes that complete, however slowly, are progress: no fall back to dropping."""

    async def main() -> None:
        gate = Gate()
        queue, stats = await _queue(4, FullPolicy("block", block_timeout=0.2), gate)
        queue.offer(Batch(events(0, 1)))
        await _output(queue).writing.wait()
        queue.offer(Batch(events(1, 1)))
        queue.offer(Batch(events(2, 1)))
        queue.offer(Batch(events(3, 1)))  # 4 queued: full
        out = _output(queue)
        out.gate.set()
        for _ in range(4):  # a write every 0.1 s, each within block_timeout of the last
            out.gate.clear()
            await asyncio.sleep(0.1)
            queue.offer(Batch(events(10, 3)))
            out.gate.set()
            await asyncio.sleep(0)
        assert stats.get("dropped", output="gate", reason="block_timeout") == 0
        await queue.stop()

    asyncio.run(main())


async def _open_gate_output(collector: Collector) -> None:
    output = collector.queues["gate"].output
    assert isinstance(output, GateOutput)
    output.gate.set()


async def _send_tcp(addr: Any, data: bytes) -> None:
    _, writer = await asyncio.open_connection(*addr)
    writer.write(data)
    await writer.drain()  # waits while the collector is not reading: that is the point
    writer.close()
    await writer.wait_closed()


async def _send_unix(path: str, data: bytes) -> None:
    _, writer = await asyncio.open_unix_connection(path)
    writer.write(data)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def _send_ws(addr: Any, data: bytes) -> None:
    uri = f"ws://{addr[0]}:{addr[1]}/"
    async with ws_connect(uri, compression=None) as ws:
        chunk = data.split(b"\n")
        for i in range(0, len(chunk), 100):
            await ws.send(b"\n".join(chunk[i : i + 100]))


@pytest.mark.parametrize("scheme", ["tcp", "unix", "ws"])
def test_stream_listeners_stop_reading_while_a_blocking_output_is_full(
    scheme: str, short_dir: Path
) -> None:
    """A stalled blocking output: the listener stops reading (the sender waits), nothing
    is dropped; when the output writes again every event arrives, in order."""
    uri = {
        "tcp": f"tcp://{LOOPBACK}:0",
        "unix": f"unix://{short_dir}/c.sock",
        "ws": f"ws://{LOOPBACK}:0/",
    }[scheme]
    total = 200_000

    async def main() -> None:
        outputs = [
            {"type": GATE, "name": "gate", "when_full": "block", "queue_size": 1000},
            {"type": MEMORY, "name": "mem", "when_full": "drop_newest", "queue_size": 10**6},
        ]
        collector = Collector(config([uri], outputs), hostname="h")
        async with started(collector):
            addr = address(collector, scheme)
            send = {"tcp": _send_tcp, "unix": _send_unix, "ws": _send_ws}[scheme]
            sender = asyncio.create_task(send(addr, b"".join(line(i) for i in range(total))))
            await until(lambda: not collector.gate.is_open, what="the gate closing")
            await asyncio.sleep(0.3)  # a stalled output: reading must stay stopped
            held = received(collector, scheme)
            assert held <= 1000 + BLOCK_SLACK_EVENTS < total
            await asyncio.sleep(0.2)
            assert received(collector, scheme) == held  # not one read while closed
            assert not sender.done()
            await _open_gate_output(collector)
            await asyncio.wait_for(sender, 60)
            mem = memory(collector)
            await until(lambda: len(mem.traffic()) == total, 30, what="every event")
            assert seqs(mem.traffic()) == list(range(total))
            assert collector.stats.get("dropped", output="gate", reason="queue_full") == 0
            assert await collector.queues["gate"].drain(30)

    asyncio.run(main())


def _burst(port: int, total: int, connections: int) -> threading.Thread:
    """Send ``total`` events over ``connections`` TCP connections as fast as the
    collector takes them (blocking sends), each connection its own share of seqs."""

    def one(first: int, stop: int) -> None:
        with socket.create_connection((LOOPBACK, port)) as sock:
            step = 10_000
            for start_at in range(first, stop, step):
                chunk = b"".join(line(i) for i in range(start_at, min(start_at + step, stop)))
                sock.sendall(chunk)

    share = total // connections
    threads = [
        threading.Thread(target=one, args=(i * share, (i + 1) * share)) for i in range(connections)
    ]

    def run_all() -> None:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    runner = threading.Thread(target=run_all)
    runner.start()
    return runner


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


class _Blackhole:
    """A TCP peer that accepts and never reads: a stalled best-effort output's server."""

    def __init__(self) -> None:
        self.server = socket.create_server((LOOPBACK, 0))
        self.port = self.server.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        # Wake the accept() first and wait for the thread: a connection it took after
        # the list was walked would be left open (a ResourceWarning in a later test).
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        self.thread.join(5)
        for conn in self.conns:
            conn.close()


@pytest.mark.parametrize("stalled_peer", [False, True], ids=["logfile", "logfile+stalled"])
def test_a_burst_faster_than_the_logfile_is_delivered_whole(
    stalled_peer: bool, short_dir: Path, daemons: list[Daemon]
) -> None:
    """2,000,000 events offered as fast as 4 connections can send into a logfile-only
    collector (and beside a best-effort analyzer output whose peer never reads): every
    event reaches the logfile, through SIGTERM; nothing dropped for the logfile."""
    total = 2_000_000
    port = _free_port()
    log = short_dir / "events.jsonl"
    outputs: list[dict[str, Any]] = [{"type": "logfile", "path": str(log)}]
    hole = _Blackhole()
    if stalled_peer:
        outputs.append({"type": "analyzer", "uri": f"tcp://{LOOPBACK}:{hole.port}"})
    try:
        daemon = start(
            daemons,
            short_dir,
            # What the kernel still holds at SIGTERM (MiBs per connection) is read
            # within drain_timeout: room for a slow, shared CI machine.
            toml([f"tcp://{LOOPBACK}:{port}"], outputs, stats_interval=1, drain_timeout=120),
        )
        _burst(port, total, connections=4).join(300)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(120) == 0, daemon.stderr()
    finally:
        hole.close()
    rows = read_jsonl(log)
    got = sorted(e["seq"] for e in rows if e["name"] == "t.ev")
    assert got == list(range(total))
    own = [e for e in rows if e["name"] == "numbat.collector.dropped"]
    assert not [e for e in own if e.get("output") == "logfile"]
    if stalled_peer:  # the analyzer's losses are counted, and they did not hold ingest up
        assert sum(e["value"] for e in own if e.get("output") == "analyzer") > 0


def test_a_reload_that_removes_or_relaxes_a_blocking_output_lets_reading_go_on() -> None:
    """A stalled blocking output switched to drop_newest by a reload, or removed by one,
    no longer holds the stream listeners up."""

    async def main() -> None:
        gate_out = {"type": GATE, "name": "gate", "when_full": "block", "queue_size": 10}
        mem = {"type": MEMORY, "name": "mem"}
        collector = Collector(config([f"tcp://{LOOPBACK}:0"], [gate_out, mem]), hostname="h")
        async with started(collector):
            collector.queues["gate"].offer(Batch(events(0, 20)))
            assert not collector.gate.is_open
            listen = list(collector.listeners)
            await collector.reload(config(listen, [{**gate_out, "when_full": "drop_newest"}, mem]))
            assert collector.gate.is_open
            collector.queues["gate"].configure(10, BLOCK)
            collector.queues["gate"].offer(Batch(events(20, 5)))
            assert not collector.gate.is_open
            stalled = _output(collector.queues["gate"])
            reload = asyncio.create_task(collector.reload(config(listen, [mem])))
            await until(lambda: "gate" not in collector.queues, what="the output removed")
            assert collector.gate.is_open  # while the removed output still drains
            stalled.gate.set()
            await asyncio.wait_for(reload, 10)

    asyncio.run(main())


def test_what_a_best_effort_output_still_holds_at_shutdown_is_in_the_last_report(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An analyzer output whose peer never reads: at stop, the events its backlog still
    holds are counted in the last report (held_at_shutdown), exactly those its close
    then drops."""
    caplog.set_level(logging.WARNING)
    hole = _Blackhole()

    async def main() -> int:
        outputs = [
            {"type": "analyzer", "uri": f"tcp://{LOOPBACK}:{hole.port}", "queue_size": 10**6},
            {"type": MEMORY, "name": "mem", "queue_size": 10**6},
        ]
        collector = Collector(config([f"tcp://{LOOPBACK}:0"], outputs), hostname="h")
        await collector.start()
        await _send_tcp(address(collector, "tcp"), b"".join(line(i) for i in range(200_000)))
        mem = memory(collector)
        await until(lambda: len(mem.traffic()) == 200_000, 30, what="every event")
        await collector.stop(drain_timeout=1)
        held = [e for e in mem.own("dropped") if e.get("reason") == "held_at_shutdown"]
        (report,) = held
        return int(report["value"])

    try:
        held = asyncio.run(main())
    finally:
        hole.close()
    closing = [r.getMessage() for r in caplog.records if "lines (shutdown)" in r.getMessage()]
    assert held > 0
    assert closing == [f"output analyzer: dropped {held} lines (shutdown)"]
