"""The analyzer output against real loopback servers: framing, reconnect, backlog, close."""

from __future__ import annotations

import asyncio
import json
import socket

from numbat.collector.fanout import OutputQueue
from numbat.collector.outputs._sender import LineBacklog
from numbat.collector.outputs.analyzer import AnalyzerOutput
from numbat.config import AnalyzerOutputConfig
from numbat.event import Event
from numbat.server.stats import Stats
from tests.collector.outputs.conftest import LOOPBACK, LineServer, batch, line_server


def _events(values: range, pad: str = "") -> list[Event]:
    return [
        {
            "name": "web.requests",
            "value": v,
            "time": 1_700_000_000_000 + v,
            "host": "h1",
            "pad": pad,
        }
        for v in values
    ]


def _values(lines: list[bytes]) -> list[int]:
    return [json.loads(raw)["value"] for raw in lines]


def _output(
    uri: str, max_backlog: int = 100_000, backoff: float = 0.01, flush_timeout: float = 2.0
) -> AnalyzerOutput:
    options = AnalyzerOutputConfig(type="analyzer", uri=uri, max_backlog=max_backlog)
    return AnalyzerOutput(options, backoff=lambda retries: backoff, flush_timeout=flush_timeout)


def test_sends_each_event_as_one_json_line() -> None:
    """What arrives is exactly the batch's NDJSON, one object per line, in order."""

    async def main() -> None:
        async with line_server() as server:
            out = _output(server.uri)
            await out.start()
            sent = batch(*_events(range(3)), {"name": "odd \u00e9", "value": 0.5, "time": 5})
            await out.write(sent)
            lines = await server.wait_for(4)
            assert b"".join(raw + b"\n" for raw in lines) == sent.ndjson
            assert out.stats() == {"backlog": 0, "dropped": 0}
            await out.close()

    asyncio.run(main())


def test_backlog_goes_first_in_order_after_restart_and_overflow_is_counted() -> None:
    """While the peer is down writes return at once; the newest max_backlog events arrive later."""

    async def main() -> None:
        async with line_server() as server:
            out = _output(server.uri, max_backlog=5)
            await out.start()
            await out.write(batch(*_events(range(3))))
            await server.wait_for(3)

            await server.stop()
            await out.sender.until(lambda: not out.sender.connected, timeout=10)
            for values in (range(3, 7), range(7, 11)):
                await asyncio.wait_for(out.write(batch(*_events(values))), timeout=1.0)
            assert out.stats() == {"backlog": 5, "dropped": 3}

            await server.start()
            await server.wait_for(8)
            await out.write(batch(*_events(range(11, 12))))
            lines = await server.wait_for(9)
            assert _values(lines) == [0, 1, 2, 6, 7, 8, 9, 10, 11]
            assert out.stats() == {"backlog": 0, "dropped": 3}
            await out.close()

    asyncio.run(main())


def test_batch_that_failed_mid_write_is_sent_again_whole() -> None:
    """A peer that stalls and resets in the middle of a write loses nothing: it is resent."""

    async def main() -> None:
        # A listener that never accepts: the kernel completes the connection, buffers a
        # little, then stalls the sender; closing the listener resets the connection.
        stalled = socket.socket()
        stalled.bind((LOOPBACK, 0))
        stalled.listen()
        port = stalled.getsockname()[1]
        out = _output(f"tcp://{LOOPBACK}:{port}")
        await out.start()
        await out.sender.until(lambda: out.sender.connected, timeout=10)
        # Far more than the loopback socket buffers hold, so the write is in progress.
        events = _events(range(60_000), pad="x" * 400)
        write = asyncio.create_task(out.write(batch(*events)))
        await out.sender.until(lambda: out.sender.inflight > 0, timeout=10)
        assert not write.done()

        stalled.close()  # resets the connection mid-write
        await asyncio.wait_for(write, timeout=10)  # returns: the batch waits in the backlog
        async with line_server(port) as server:
            lines = await server.wait_for(len(events), timeout=60)
            assert _values(lines) == list(range(60_000))
            assert out.stats() == {"backlog": 0, "dropped": 0}
            assert out.sender.delivered == 60_000
            await out.close()

    asyncio.run(main())


def test_close_is_bounded_when_the_peer_is_down_and_counts_what_is_left() -> None:
    """close() gives up after flush_timeout and reports undelivered events as dropped."""

    async def main() -> None:
        server = await LineServer().start()
        await server.stop()  # nothing listens on server.port now
        out = _output(server.uri, flush_timeout=0.2)
        await out.start()
        await asyncio.wait_for(out.write(batch(*_events(range(2)))), timeout=1.0)
        await asyncio.wait_for(out.close(), timeout=2.0)
        assert out.stats() == {"backlog": 0, "dropped": 2}

    asyncio.run(main())


def test_close_delivers_the_backlog_without_waiting_out_the_backoff() -> None:
    """A peer back during a long backoff pause still gets the backlog when close() flushes."""

    async def main() -> None:
        server = await LineServer().start()
        await server.stop()
        out = _output(server.uri, backoff=30.0, flush_timeout=5.0)
        await out.start()
        await out.write(batch(*_events(range(4))))
        await out.sender.until(lambda: out.sender.retries > 0, timeout=10)  # now pausing 30 s

        await server.start()
        try:
            await asyncio.wait_for(out.close(), timeout=4.0)
            assert _values(await server.wait_for(4)) == [0, 1, 2, 3]
            assert out.stats() == {"backlog": 0, "dropped": 0}
        finally:
            await server.stop()

    asyncio.run(main())


def test_reconnects_after_the_peer_hangs_up_while_idle() -> None:
    """A connection the peer closed between batches is noticed; later events use a new one."""

    async def main() -> None:
        async with line_server() as server:
            out = _output(server.uri)
            await out.start()
            await out.write(batch(*_events(range(1))))
            await server.wait_for(1)
            for transport in list(server.transports):
                transport.close()
            await out.sender.until(lambda: not out.sender.connected, timeout=10)
            await out.write(batch(*_events(range(1, 3))))
            assert _values(await server.wait_for(3)) == [0, 1, 2]
            assert server.connections == 2
            await out.close()

    asyncio.run(main())


def test_line_backlog_trims_oldest_lines_inside_a_chunk() -> None:
    """Trimming cuts the oldest chunk at a line boundary and keeps the rest in order."""
    backlog = LineBacklog(max_lines=4)
    backlog.push(b"1\n2\n3\n", 3)
    backlog.push(b"4\n5\n", 2)
    assert backlog.trim() == 1
    data, count = backlog.take(2)  # at least one chunk, whatever the byte limit
    assert (data, count) == (b"2\n3\n", 2)
    backlog.putback(data, count)
    backlog.push(b"6\n7\n8\n", 3)
    assert backlog.trim() == 3
    assert backlog.take(1 << 20) == (b"5\n6\n7\n8\n", 4)
    assert len(backlog) == 0


def test_reload_hands_the_backlog_to_the_new_output() -> None:
    """Options changed while the analyzer is down: its buffered events are not lost."""

    async def main() -> list[int]:
        async with line_server() as server:
            await server.stop()  # the analyzer is down from the start
            queue = OutputQueue(
                "analyzer", _output(server.uri), 1000, Stats("h", "numbat.collector")
            )
            await queue.start()
            queue.offer(batch(*_events(range(5))))
            assert await queue.drain(5)  # written into the output's own backlog
            assert queue.output.stats()["backlog"] == 5
            await queue.replace_output(_output(server.uri, max_backlog=50))
            queue.offer(batch(*_events(range(5, 8))))
            await server.start()
            lines = await server.wait_for(8)
            await queue.stop()
            return _values(lines)

    assert asyncio.run(main()) == list(range(8))
