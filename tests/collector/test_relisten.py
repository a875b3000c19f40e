"""Reloads that change a listener's settings: live options are applied to the running
listener, its connections kept; a listener that must be rebound (or is removed) is
drained as at shutdown, so nothing its peers had sent is lost."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from numbat.config import ListenerConfig
from numbat.server.listeners import Limits, ws
from numbat.server.listeners.tcp import TCPListener
from numbat.server.listeners.udp import UDPListener
from tests.collector.conftest import (
    LOOPBACK,
    Daemon,
    address,
    config,
    connections,
    line,
    listener,
    memory,
    read_jsonl,
    rejected,
    running,
    seqs,
    start,
    until,
)
from tests.collector.test_daemon import events, traffic, wait_events
from tests.collector.test_listeners import closed_by_peer, send, tcp_connect, ws_uri

TCP = f"tcp://{LOOPBACK}:0"
WS = f"ws://{LOOPBACK}:0/"
UDP = f"udp://{LOOPBACK}:0"
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


def test_a_websocket_takes_a_reload_of_its_limits_on_its_open_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reload lowering max_line_bytes and idle_timeout (and changing ping_interval,
    origins): the open websocket stays, its next long line is rejected, and it is then
    closed as idle (1001, closed_idle)."""
    monkeypatch.setattr(ws, "IDLE_CHECK", 0.05, raising=False)  # how often to look

    async def main() -> None:
        first = {"uri": WS, "idle_timeout": 300, "max_line_bytes": 1000}
        async with running(config([first])) as collector:
            async with connect(ws_uri(collector, "/"), proxy=None, compression=None) as client:
                await client.send(line(0) + line(1, pad="x" * 300))
                await until(lambda: len(memory(collector).traffic()) == 2, what="two events")
                lowered = {
                    "uri": WS,
                    "idle_timeout": 0.3,
                    "max_line_bytes": 200,
                    "ping_interval": 5,
                    "origins": ["https://ops.example.com"],
                }
                await collector.reload(config([lowered]))
                await client.send(line(2) + line(3, pad="x" * 300) + line(4))
                await until(lambda: len(memory(collector).traffic()) == 4, what="four events")
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(client.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
            assert seqs(memory(collector).traffic()) == [0, 1, 2, 4]
            assert rejected(collector, "line_too_long", "ws") == 1
            assert collector.stats.get("closed_idle", listener=WS) == 1
            assert collector.stats.get("closed_at_shutdown", listener=WS) == 0

    asyncio.run(main())


def test_a_udp_reload_keeps_the_socket_and_what_it_holds() -> None:
    """A reload changing the receive buffer and allow-list: the same socket goes on (its
    SO_RCVBUF set live), and datagrams it held unread are delivered."""

    async def main() -> None:
        small, large = 1 << 20, 4 << 20
        async with running(config([UDP], udp_buffer_bytes=small)) as collector:
            lis = listener(collector, "udp")
            assert isinstance(lis, UDPListener) and lis._transport is not None
            sock = lis._transport.get_extra_info("socket")
            before = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                for i in range(100):  # unread until the loop runs again
                    client.sendto(line(i), address(collector, "udp"))
            cfg = config([{"uri": UDP, "allow": ["127.0.0.0/8"]}], udp_buffer_bytes=large)
            await collector.reload(cfg)
            assert listener(collector, "udp") is lis
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) > before
            await until(lambda: len(memory(collector).traffic()) == 100, what="100 datagrams")
            assert seqs(memory(collector).traffic()) == list(range(100))

    asyncio.run(main())


def test_sighups_toggling_idle_timeout_lose_nothing_of_a_stream(
    short_dir: Path, daemons: list[Daemon]
) -> None:
    """The tester's case, end to end: 6 SIGHUPs alternating ``listen`` between a URI and
    a table with idle_timeout while one connection streams; every event arrives, in
    order, and no connection is cut."""
    path, log = short_dir / "c.sock", short_dir / "events.jsonl"
    output = f'[[collector.outputs]]\ntype = "logfile"\npath = "{log}"\n'
    files = [
        f'[collector]\nlisten = ["unix://{path}"]\n{output}',
        f'[collector]\nlisten = [{{uri = "unix://{path}", idle_timeout = 200}}]\n{output}',
    ]
    daemon = start(daemons, short_dir, files[0])
    sent, done = [0], threading.Event()

    def stream(client: socket.socket) -> None:
        while not done.is_set():  # 100 events every few ms, through all the reloads
            client.sendall(events(sent[0], sent[0] + 100))
            sent[0] += 100
            time.sleep(0.002)

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(path))
        sender = threading.Thread(target=stream, args=(client,))
        sender.start()
        try:
            for i in range(1, 7):
                wait_events(log, len(traffic(log)) + 1000)  # the stream flows meanwhile
                (short_dir / "numbat.toml").write_text(files[i % 2])
                daemon.signal(signal.SIGHUP)
                daemon.wait_log("config reloaded", count=i)
            wait_events(log, len(traffic(log)) + 1000)
        finally:
            done.set()
            sender.join(30)
        total = sent[0]
    assert wait_events(log, total) == list(range(total))
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.stderr()
    assert "new settings applied, connections kept" in daemon.stderr()
    cut = [e for e in read_jsonl(log) if e["name"] == "numbat.collector.closed_at_shutdown"]
    assert cut == [], cut
