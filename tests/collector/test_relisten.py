"""Reloads that change a listener's settings: live options are applied to the running
listener, its connections kept; a listener that must be rebound (or is removed) is
drained as at shutdown, so nothing its peers had sent is lost."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from numbat.config import ListenerConfig
from numbat.server.listeners import Limits
from numbat.server.listeners.tcp import TCPListener
from tests.collector.conftest import (
    LOOPBACK,
    address,
    config,
    connections,
    line,
    listener,
    memory,
    rejected,
    running,
    seqs,
    until,
)
from tests.collector.test_listeners import closed_by_peer, send, tcp_connect

TCP = f"tcp://{LOOPBACK}:0"
RIGID = "tests.collector.test_relisten:RigidTCP"


class RigidTCP(TCPListener):
    """A test-only TCP listener that takes no setting live: every change rebinds it."""

    def reconfigure(self, options: ListenerConfig, limits: Limits) -> bool:
        return False


def counted(collector: Any, name: str) -> int:
    return int(collector.stats.get(name, listener=TCP))


def test_a_stream_arrives_whole_through_reloads_of_live_options() -> None:
    """Six reloads toggling idle_timeout (and other live options) mid-stream: one
    connection, never closed, delivers every event in order."""
    settings: list[dict[str, Any]] = [
        {"uri": TCP},
        {
            "uri": TCP,
            "idle_timeout": 200,
            "line_timeout": 30,
            "max_connections": 50,
            "max_connections_per_peer": 10,
            "max_line_bytes": 4096,
            "allow": ["127.0.0.0/8"],
        },
    ]
    total = 20_000

    async def main() -> None:
        async with running(config([settings[0]])) as collector:
            sock = await tcp_connect(address(collector, "tcp"))
            await until(lambda: len(connections(collector, "tcp")) == 1, what="the connection")
            (conn,) = connections(collector, "tcp")
            payload = [b"".join(line(i) for i in range(s, s + 100)) for s in range(0, total, 100)]
            sender = asyncio.create_task(send(sock, *payload))
            for i in range(1, 7):
                part = i * total // 8
                await until(lambda: len(memory(collector).traffic()) > part, what=f"{part}")  # noqa: B023
                await collector.reload(config([settings[i % 2]]))
            await sender
            await until(lambda: len(memory(collector).traffic()) == total, what="every event")
            assert connections(collector, "tcp") == [conn]  # the same connection, open
            sock.close()
            assert seqs(memory(collector).traffic()) == list(range(total))
            assert counted(collector, "closed_at_shutdown") == 0

    asyncio.run(main())


def test_a_lowered_idle_timeout_closes_an_idle_connection() -> None:
    """A reload lowering idle_timeout applies to a connection already open."""

    async def main() -> None:
        async with running(config([{"uri": TCP, "idle_timeout": 300}])) as collector:
            sock = await tcp_connect(address(collector, "tcp"))
            await send(sock, line(0))
            await until(lambda: len(memory(collector).traffic()) == 1, what="the event")
            await collector.reload(config([{"uri": TCP, "idle_timeout": 0.2}]))
            assert await closed_by_peer(sock, timeout=5)
            sock.close()
            assert counted(collector, "closed_idle") == 1
            assert counted(collector, "closed_at_shutdown") == 0

    asyncio.run(main())


def test_an_idle_timeout_set_from_none_starts_closing_idle_connections() -> None:
    """idle_timeout and line_timeout 0 (no sweeper), then set by a reload: it applies."""

    async def main() -> None:
        off = {"uri": TCP, "idle_timeout": 0, "line_timeout": 0}
        async with running(config([off])) as collector:
            sock = await tcp_connect(address(collector, "tcp"))
            await send(sock, line(0))
            await until(lambda: len(memory(collector).traffic()) == 1, what="the event")
            await collector.reload(config([{**off, "idle_timeout": 0.2}]))
            assert await closed_by_peer(sock, timeout=5)
            sock.close()
            assert counted(collector, "closed_idle") == 1

    asyncio.run(main())


def test_a_lowered_line_cap_rejects_a_long_line_on_an_open_connection() -> None:
    """A reload lowering max_line_bytes: the next long line on the same connection is
    rejected (line_too_long), the lines around it kept."""
    long = line(1, pad="x" * 300)

    async def main() -> None:
        async with running(config([{"uri": TCP, "max_line_bytes": 1000}])) as collector:
            sock = await tcp_connect(address(collector, "tcp"))
            await send(sock, line(0), long)
            await until(lambda: len(memory(collector).traffic()) == 2, what="two events")
            await collector.reload(config([{"uri": TCP, "max_line_bytes": 200}]))
            await send(sock, line(2), line(3, pad="x" * 300), line(4))
            await until(lambda: len(memory(collector).traffic()) == 4, what="four events")
            assert rejected(collector, "line_too_long") == 1
            sock.close()
            assert seqs(memory(collector).traffic()) == [0, 1, 2, 4]
            assert listener(collector, "tcp").max_line == 200

    asyncio.run(main())


@pytest.mark.parametrize("change", ["rebind", "remove"])
def test_a_rebound_or_removed_listener_loses_nothing_already_sent(change: str) -> None:
    """A listener that cannot take its new settings live (rebound), or that the config
    drops: what its peer had sent, still unread in the kernel, is read before it
    closes; the connection left open is counted as cut."""

    async def main() -> None:
        first = config([{"uri": TCP, "type": RIGID}, f"udp://{LOOPBACK}:0"])
        async with running(first) as collector:
            sock = await tcp_connect(address(collector, "tcp"))
            await until(lambda: len(connections(collector, "tcp")) == 1, what="the connection")
            data = b"".join(line(i) for i in range(1000))
            # Into the kernel's buffers without yielding: the collector has read none of it.
            assert sock.send(data) == len(data)
            kept = [] if change == "remove" else [{"uri": TCP, "type": RIGID, "idle_timeout": 9}]
            await collector.reload(config([*kept, f"udp://{LOOPBACK}:0"]))
            await until(lambda: len(memory(collector).traffic()) == 1000, what="every event")
            assert seqs(memory(collector).traffic()) == list(range(1000))
            assert counted(collector, "closed_at_shutdown") == 1
            assert await closed_by_peer(sock)
            sock.close()
            if change == "rebind":
                assert listener(collector, "tcp").limits.idle_timeout == 9
                with socket.create_connection(address(collector, "tcp")) as again:
                    again.sendall(line(1000))
                await until(lambda: len(memory(collector).traffic()) == 1001, what="new event")

    asyncio.run(main())
