"""AsyncEmitter: the same API, sending from a task on the running loop."""

from __future__ import annotations

import asyncio
import json

import pytest

from numbat import AsyncEmitter


class _Server:
    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.arrived = asyncio.Event()
        self.want = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for line in reader:
            self.lines.append(line)
            if len(self.lines) >= self.want:
                self.arrived.set()
        writer.close()


async def _serve() -> tuple[_Server, asyncio.Server, str]:
    state = _Server()
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return state, server, f"tcp://127.0.0.1:{port}"


def test_async_emitter_sends_over_tcp() -> None:
    """Events from an asyncio program arrive as NDJSON, and aclose() reports success."""

    async def main() -> bool:
        state, server, uri = await _serve()
        state.want = 50
        em = AsyncEmitter(uri, app="aio", host="h")
        for i in range(50):
            em.metric("n", value=i)
        await asyncio.wait_for(state.arrived.wait(), 10)
        ok = await em.aclose()
        server.close()
        assert [json.loads(line)["value"] for line in state.lines] == list(range(50))
        return ok

    assert asyncio.run(main())


def test_async_emitter_created_outside_loop_starts_in_context_manager() -> None:
    """Events queued before the loop runs are sent once the emitter starts inside it."""
    em: AsyncEmitter | None = None

    async def main() -> None:
        state, server, uri = await _serve()
        state.want = 2
        nonlocal em
        em = AsyncEmitter(uri, app="pre")
        em.metric("before-start")
        async with em:
            em.metric("inside")
            await asyncio.wait_for(state.arrived.wait(), 10)
        server.close()
        assert [json.loads(line)["name"] for line in state.lines] == [
            "pre.before-start",
            "pre.inside",
        ]

    asyncio.run(main())
    assert em is not None and em.state == "closed"


def test_async_emitter_fails_after_retries() -> None:
    """With nothing listening the async emitter gives up after max_retries, without raising."""

    async def main() -> AsyncEmitter:
        _, server, uri = await _serve()
        server.close()
        await server.wait_closed()
        em = AsyncEmitter(uri, app="f", max_retries=2, backoff=lambda r: 0.001)
        em.metric("x")
        while em.state != "failed":
            await asyncio.sleep(0.005)
        assert await em.aclose(0) is False
        return em

    em = asyncio.run(main())
    assert em.dropped["failed"] == 1


@pytest.mark.parametrize("count", [1, 3000])
def test_async_flush_waits_for_delivery(count: int) -> None:
    """flush() returns True only once everything queued has been written."""

    async def main() -> None:
        state, server, uri = await _serve()
        state.want = count
        async with AsyncEmitter(uri, app="fl") as em:
            for i in range(count):
                em.metric("n", value=i)
            assert await em.flush(10)
            assert em.sent == count
            await asyncio.wait_for(state.arrived.wait(), 10)
        server.close()

    asyncio.run(main())
