"""End to end: events sent to a real collector reach fake graphite and analyzer servers."""

from __future__ import annotations

import asyncio
import json

from numbat.collector.daemon import Collector
from numbat.config import from_dict
from tests.collector.outputs.conftest import LOOPBACK, free_port, line_server

T = 1_700_000_000_000


def test_collector_delivers_to_graphite_and_analyzer_outputs() -> None:
    """NDJSON sent over TCP arrives as plaintext lines at graphite and as JSON at the analyzer."""

    async def main() -> None:
        async with line_server() as graphite, line_server() as analyzer:
            port = free_port()
            config = from_dict(
                {
                    "collector": {
                        "listen": [f"tcp://{LOOPBACK}:{port}"],
                        "outputs": [
                            {"type": "graphite", "uri": graphite.uri, "prefix": "nb"},
                            {"type": "analyzer", "uri": analyzer.uri},
                        ],
                    }
                }
            )
            collector = Collector(config, hostname="test-host")
            await collector.start()
            try:
                _, writer = await asyncio.open_connection(LOOPBACK, port)
                for i in range(10):
                    event = {"name": "e2e.requests", "value": i, "time": T + i, "host": "h"}
                    writer.write(json.dumps(event).encode() + b"\n")
                await writer.drain()
                writer.close()
                await writer.wait_closed()

                def ours(lines: list[bytes], marker: bytes) -> list[bytes]:
                    return [raw for raw in lines if marker in raw]

                await graphite.until(lambda: len(ours(graphite.lines, b"nb.e2e.")) == 10)
                await analyzer.until(lambda: len(ours(analyzer.lines, b"e2e.requests")) == 10)
            finally:
                drained = await collector.stop(drain_timeout=5)

            assert drained

            assert ours(graphite.lines, b"nb.e2e.") == [
                f"nb.e2e.requests {i} 1700000000".encode() for i in range(10)
            ]
            received = [json.loads(raw) for raw in ours(analyzer.lines, b"e2e.requests")]
            assert [e["value"] for e in received] == list(range(10))
            assert all(e["host"] == "h" and e["time"] == T + e["value"] for e in received)
            # stop() reports the collector's own counters through the same outputs.
            await analyzer.until(lambda: any(b"numbat.collector." in raw for raw in analyzer.lines))

    asyncio.run(main())
