"""Our emitter into our collector, over every transport the two share."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from numbat import AsyncEmitter, Emitter
from numbat.event import Event
from tests.collector.conftest import address, config, memory, running, until


def _uri(scheme: str, where: object) -> str:
    if scheme == "unix":
        return f"unix://{where}"
    host, port = where[:2]  # type: ignore[index]
    return f"{scheme}://{host}:{port}" + ("/metrics" if scheme == "ws" else "")


@pytest.mark.parametrize("scheme", ["tcp", "udp", "unix", "ws"])
def test_emitter_events_arrive_at_the_collector(scheme: str, short_dir: Path) -> None:
    """Every event sent by numbat.Emitter is received whole by the collector."""
    listen = {
        "tcp": "tcp://127.0.0.1:0",
        "udp": "udp://127.0.0.1:0",
        "unix": f"unix://{short_dir / 'c.sock'}",
        "ws": "ws://127.0.0.1:0/metrics",
    }[scheme]

    async def main() -> list[Event]:
        async with running(config([listen])) as collector:
            emitter = Emitter(_uri(scheme, address(collector, scheme)), app="e2e", node="n1")
            for i in range(50):
                emitter.metric("hits", value=i, route="/a", status="warning")
            out = memory(collector)
            await until(lambda: len(out.events) >= 50, what="50 events")
            assert await asyncio.to_thread(emitter.close, 5)
            return list(out.events)

    events = asyncio.run(main())
    assert [e["value"] for e in events] == list(range(50))
    assert {(e["name"], e["node"], e["route"], e["status"]) for e in events} == {
        ("e2e.hits", "n1", "/a", "warning")
    }


def test_async_emitter_into_the_collector_over_ws() -> None:
    """AsyncEmitter on the collector's own loop reaches its websocket listener."""

    async def main() -> list[Event]:
        async with running(config(["ws://127.0.0.1:0/metrics"])) as collector:
            uri = _uri("ws", address(collector, "ws"))
            async with AsyncEmitter(uri, app="e2e") as emitter:
                for i in range(20):
                    emitter.metric("aio", value=i)
                out = memory(collector)
                await until(lambda: len(out.events) >= 20, what="20 events")
            return list(out.events)

    assert [e["value"] for e in asyncio.run(main())] == list(range(20))
