"""Room for new peers: idle connections filling a listener's cap, and a process out of
file descriptors, never lock a legitimate sender out (tcp, unix, ws; real sockets)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import resource
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from numbat.server import listeners
from tests.collector.conftest import (
    LOOPBACK,
    Daemon,
    address,
    config,
    line,
    listener,
    memory,
    read_jsonl,
    refused,
    running,
    seqs,
    start,
    toml,
    until,
)
from tests.collector.outputs.conftest import free_port
from tests.collector.test_listeners import closed_by_peer, send, tcp_connect
from tests.helpers import wait_until

KINDS = ["tcp", "unix", "ws"]


# ---------------------------------------------------------------- helpers


def uri(kind: str, where: Path | int) -> str:
    if kind == "unix":
        return f"unix://{where}"
    path = "/events" if kind == "ws" else ""
    return f"{kind}://{LOOPBACK}:{where}{path}"


async def idle_connection(kind: str, addr: Any, source: str) -> socket.socket:
    """A connection that sends nothing more (a ws one after its opening handshake, which
    must succeed: AssertionError with the response otherwise)."""
    sock = await tcp_connect(addr, None if kind == "unix" else source)
    try:
        if kind == "ws":
            await _ws_handshake(sock)
    except BaseException:
        sock.close()
        raise
    return sock


async def _ws_handshake(sock: socket.socket) -> None:
    key = base64.b64encode(os.urandom(16))
    await send(
        sock,
        b"GET /events HTTP/1.1\r\nHost: numbat\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n",
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await asyncio.get_running_loop().sock_recv(sock, 4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head


class Sender:
    """A well-behaved peer from 127.0.0.1: a websocket client, or a plain socket."""

    def __init__(self, kind: str, conn: Any) -> None:
        self.kind, self.conn = kind, conn

    @classmethod
    async def connect(cls, kind: str, addr: Any) -> Sender:
        if kind == "ws":
            uri = f"ws://{addr[0]}:{addr[1]}/events"
            return cls(kind, await connect(uri, proxy=None, compression=None))
        return cls(kind, await tcp_connect(addr, None if kind == "unix" else LOOPBACK))

    async def send(self, data: bytes) -> None:
        if self.kind == "ws":
            await self.conn.send(data)
        else:
            await send(self.conn, data)

    async def close(self) -> None:
        if self.kind == "ws":
            await self.conn.close()
        else:
            self.conn.close()


def short_of_files(
    kind: str, short_dir: Path, daemons: list[Daemon], spare: int
) -> tuple[Daemon, Any, Path]:
    """A collector subprocess with one ``kind`` listener and a logfile output, its
    open-file limit lowered to what it holds plus ``spare``: the daemon, the listener's
    address and the logfile."""
    events = short_dir / "events.jsonl"
    where: Path | int = short_dir / "c.sock" if kind == "unix" else free_port()
    text = toml([uri(kind, where)], [{"type": "logfile", "path": str(events)}], stats_interval=0.2)
    daemon = start(daemons, short_dir, text)
    addr: Any = str(where) if kind == "unix" else (LOOPBACK, where)
    in_use = len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))
    resource.prlimit(daemon.proc.pid, resource.RLIMIT_NOFILE, (in_use + spare, in_use + spare))
    return daemon, addr, events


async def arrived(collector: Any, count: int) -> None:
    """Wait until events 0 .. count-1 have arrived, in order."""
    want = list(range(count))
    await until(lambda: seqs(memory(collector).traffic()) == want, what=f"{count} events")


def open_connections(collector: Any, kind: str) -> int:
    return len(listener(collector, kind).connections)  # type: ignore[attr-defined]


def evicted(collector: Any, kind: str, reason: str = "too_many_connections") -> int:
    label = listener(collector, kind).label
    return int(collector.stats.get("evicted", listener=label, reason=reason))


def evictions(collector: Any, kind: str, count: int) -> Callable[[], bool]:
    """A predicate: ``count`` connections evicted for the cap so far."""
    return lambda: evicted(collector, kind) == count


@pytest.fixture
def evict_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every connection counts as idle enough to evict: the choice is then by peer and age
    alone (the legitimate sender's recent lines keep it last in line)."""
    monkeypatch.setattr(listeners, "EVICT_AFTER", 0.0)


@pytest.fixture
def many_files() -> Iterator[None]:
    """Room for 2 x 1,100 sockets in this process: the soft open-file limit raised."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096
    assert hard == resource.RLIM_INFINITY or hard >= wanted, f"hard open-file limit {hard}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ---------------------------------------------------------------- the connection cap


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("cap", "per_peer", "steps"),
    [(32, 8, 40), (1024, 128, 20)],
    ids=["small", "real-scale"],
)
def test_idle_connections_at_the_cap_never_lock_a_sender_out(
    kind: str,
    cap: int,
    per_peer: int,
    steps: int,
    short_dir: Path,
    evict_at_once: None,
    many_files: None,
) -> None:
    """The cap filled with idle connections (from several addresses; unix: one peer), a
    new sender still gets in, evicting one (counted), and every event it sends arrives
    while more idle connections keep coming, each evicting another idle one, never it."""

    async def main() -> None:
        table: dict[str, Any] = {"uri": uri(kind, short_dir / "s.sock" if kind == "unix" else 0)}
        if cap != 1024:  # the real scale is the defaults'
            table |= {"max_connections": cap, "max_connections_per_peer": per_peer}
        async with running(config([table])) as collector:
            addr = address(collector, kind)
            peers = [f"127.0.1.{1 + n // per_peer}" for n in range(cap)]  # per_peer each
            idle = []
            for start_at in range(0, cap, 64):
                batch = peers[start_at : start_at + 64]
                idle += await asyncio.gather(*(idle_connection(kind, addr, p) for p in batch))
            await until(lambda: open_connections(collector, kind) == cap, what="the cap filled")

            legit = await Sender.connect(kind, addr)
            for i in range(steps):
                await legit.send(line(i))
                await arrived(collector, i + 1)
                # another idle peer arrives: it evicts an idle connection, not the sender
                idle.append(await idle_connection(kind, addr, f"127.0.2.{1 + i}"))
                await until(evictions(collector, kind, i + 2), what="an eviction")
            await legit.send(line(steps))
            await arrived(collector, steps + 1)
            assert open_connections(collector, kind) == cap
            assert refused(collector, "too_many_connections", kind) == 0
            assert refused(collector, "too_many_from_peer", kind) == 0
            for sock in idle:
                sock.close()
            await legit.close()

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 30  # the real scale, too, runs in seconds


@pytest.mark.parametrize("kind", ["tcp", "ws"])
def test_at_the_cap_a_busy_connection_is_never_evicted(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a connection without a complete line for EVICT_AFTER seconds makes room: with
    the cap held by one idle and one busy connection a newcomer evicts the idle one; once
    only busy ones are left, the next newcomer is refused (counted) instead."""
    monkeypatch.setattr(listeners, "EVICT_AFTER", 0.5)

    async def main() -> None:
        async with running(config([{"uri": uri(kind, 0), "max_connections": 2}])) as collector:
            addr = address(collector, kind)
            quiet = await idle_connection(kind, addr, "127.0.1.1")
            busy = await Sender.connect(kind, addr)
            await until(lambda: open_connections(collector, kind) == 2, what="the cap filled")
            opened = time.monotonic()
            n = 0
            # the busy peer sends a line every 50 ms until the quiet one is idle enough
            while time.monotonic() - opened < listeners.EVICT_AFTER * 1.5:
                await busy.send(line(n))
                n += 1
                await arrived(collector, n)
                await asyncio.sleep(0.05)  # the busy peer's pace, not a wait for a result
            newcomer = await idle_connection(kind, addr, "127.0.1.2")  # quiet makes room
            # At once another one: the newcomer is not idle yet, busy never is: refused.
            if kind == "ws":
                with pytest.raises(AssertionError, match="503"):
                    await idle_connection(kind, addr, "127.0.1.3")
            else:
                third = await idle_connection(kind, addr, "127.0.1.3")
                assert await closed_by_peer(third)
                third.close()
            assert await closed_by_peer(quiet)
            assert (evicted(collector, kind), refused(collector, "too_many_connections", kind)) == (
                1,
                1,
            )
            await busy.send(line(n))  # the busy one is still in
            await arrived(collector, n + 1)
            for sock in (quiet, newcomer):
                sock.close()
            await busy.close()

    asyncio.run(main())


def test_a_connection_whose_reading_is_paused_is_never_evicted(evict_at_once: None) -> None:
    """A connection paused (back-pressure: the outputs are behind) may hold unread lines
    in the kernel: it is passed over, though it is the longest idle of the heaviest peer."""

    async def main() -> None:
        async with running(config([{"uri": uri("tcp", 0), "max_connections": 3}])) as collector:
            addr = address(collector, "tcp")
            held = [await idle_connection("tcp", addr, "127.0.1.1") for _ in range(2)]
            other = await idle_connection("tcp", addr, "127.0.1.2")
            await until(lambda: open_connections(collector, "tcp") == 3, what="the cap filled")
            for proto in listener(collector, "tcp").connections:  # type: ignore[attr-defined]
                if proto.host == "127.0.1.1":
                    proto.transport.pause_reading()
            newcomer = await idle_connection("tcp", addr, "127.0.1.3")
            assert await closed_by_peer(other)
            assert evicted(collector, "tcp") == 1
            for sock in [*held, other, newcomer]:
                sock.close()

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["tcp", "ws"])
def test_while_the_outputs_block_reading_nobody_is_evicted(kind: str, evict_at_once: None) -> None:
    """While the backpressure gate is closed nobody is read, so nobody counts as idle: a
    newcomer at the cap is refused; once the gate opens, the next one evicts."""

    async def main() -> None:
        async with running(config([{"uri": uri(kind, 0), "max_connections": 1}])) as collector:
            addr = address(collector, kind)
            first = await idle_connection(kind, addr, "127.0.1.1")
            await until(lambda: open_connections(collector, kind) == 1, what="the cap filled")
            gate = listener(collector, kind).gate
            gate.hold("test")
            if kind == "ws":
                with pytest.raises(AssertionError, match="503"):
                    await idle_connection(kind, addr, "127.0.1.2")
            else:
                second = await idle_connection(kind, addr, "127.0.1.2")
                assert await closed_by_peer(second)
                second.close()
            assert (evicted(collector, kind), refused(collector, "too_many_connections", kind)) == (
                0,
                1,
            )
            gate.release("test")
            third = await idle_connection(kind, addr, "127.0.1.3")
            assert await closed_by_peer(first)
            assert evicted(collector, kind) == 1
            for sock in (first, third):
                sock.close()

    asyncio.run(main())


# ---------------------------------------------------------------- out of file descriptors


def _stats(path: Path, name: str) -> int:
    """The total of ``numbat.collector.<name>`` (reason ``emfile``) in the stats events."""
    return sum(
        int(e["value"])
        for e in read_jsonl(path)
        if e["name"] == f"numbat.collector.{name}" and e.get("reason") == "emfile"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_out_of_file_descriptors_is_counted_logged_and_survived(
    kind: str, short_dir: Path, daemons: list[Daemon]
) -> None:
    """A collector (uvloop, in a subprocess) whose open-file limit is lowered runs out of
    descriptors: each failed accept() is counted (accept_failed, emfile) and logged once
    (rate-limited); idle connections make room (evicted, emfile), so a sender waiting in
    the kernel's queue gets in and all its events arrive; once the idle peers leave,
    accepting goes on without a failure."""
    daemon, addr, events = short_of_files(kind, short_dir, daemons, spare=8)

    async def main() -> None:
        idle = [await idle_connection(kind, addr, LOOPBACK) for _ in range(8)]
        # No descriptor left for it: it waits in the kernel's queue until one idles out.
        legit = await Sender.connect(kind, addr)
        for i in range(20):
            await legit.send(line(i))
        wait_until(lambda: len(seqs(read_jsonl(events))) == 20, 20, "the sender's events")
        for sock in idle:
            sock.close()
        mark = heartbeats()
        wait_until(lambda: heartbeats() >= mark + 2, 10, "2 reports")  # all counts are in
        failed, made_room = _stats(events, "accept_failed"), _stats(events, "evicted")
        assert failed > 0
        assert made_room > 0
        # The idle peers gone, descriptors are free: a new peer gets in at once.
        late = await Sender.connect(kind, addr)
        await late.send(json.dumps({"name": "t.late", "time": 1}).encode() + b"\n")
        wait_until(lambda: any(e["name"] == "t.late" for e in read_jsonl(events)), 10, "late")
        mark = heartbeats()
        wait_until(lambda: heartbeats() >= mark + 2, 10, "2 more reports")
        assert (_stats(events, "accept_failed"), _stats(events, "evicted")) == (failed, made_room)
        for peer in (legit, late):
            await peer.close()
        log = daemon.stderr()
        assert 0 < log.count("cannot accept a connection: Too many open files") < failed, log
        assert "raise ulimit -n" in log

    def heartbeats() -> int:
        """Stats reports written so far."""
        return sum(1 for e in read_jsonl(events) if e["name"] == "numbat.collector.heartbeat")

    asyncio.run(main())
    assert seqs(read_jsonl(events)) == list(range(20))


# ---------------------------------------------------------------- lines that are no activity

# What a slow-loris peer sends every 0.1 s: a bare newline, or a line that is rejected.
NOISE = [b"\n", b"not json\n"]


def ws_frame(payload: bytes) -> bytes:
    """A client's text frame holding ``payload`` (under 126 bytes), masked with zeros."""
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


async def make_noise(kind: str, socks: list[socket.socket], stop: asyncio.Event) -> None:
    """Send each socket a bare newline or a bad line (ws: as a message) every 0.1 s."""
    while not stop.is_set():
        for n, sock in enumerate(socks):
            data = NOISE[n % 2]
            with contextlib.suppress(OSError):  # closed by the server: it is the point
                await send(sock, ws_frame(data) if kind == "ws" else data)
        await asyncio.sleep(0.1)  # the attacker's pace, not a wait for a result


@pytest.mark.parametrize("kind", KINDS)
def test_bare_newlines_and_bad_lines_do_not_keep_a_slot_at_the_cap(
    kind: str, short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections filling the cap and sending only bare newlines or rejected lines stay
    idle: a new sender evicts one of them and all its events arrive, none refused."""
    monkeypatch.setattr(listeners, "EVICT_AFTER", 0.5)

    async def main() -> None:
        table = {
            "uri": uri(kind, short_dir / "s.sock" if kind == "unix" else 0),
            "max_connections": 16,
            "max_connections_per_peer": 4,
        }
        async with running(config([table])) as collector:
            addr = address(collector, kind)
            noisy = [await idle_connection(kind, addr, f"127.0.1.{1 + n // 4}") for n in range(16)]
            await until(lambda: open_connections(collector, kind) == 16, what="the cap filled")
            stop = asyncio.Event()
            noise = asyncio.create_task(make_noise(kind, noisy, stop))
            await asyncio.sleep(listeners.EVICT_AFTER * 2)  # long enough to be idle
            legit = await Sender.connect(kind, addr)
            for i in range(5):
                await legit.send(line(i))
            await arrived(collector, 5)
            assert evicted(collector, kind) >= 1
            assert refused(collector, "too_many_connections", kind) == 0
            stop.set()
            await noise
            for sock in noisy:
                sock.close()
            await legit.close()

    asyncio.run(main())


@pytest.mark.parametrize("kind", KINDS)
def test_bare_newlines_and_bad_lines_do_not_renew_the_idle_timeout(
    kind: str, short_dir: Path
) -> None:
    """A peer sending a bare newline or a rejected line every 0.1 s is closed by
    idle_timeout (closed_idle), as a silent one is."""

    async def main() -> None:
        where = short_dir / "s.sock" if kind == "unix" else 0
        async with running(config([{"uri": uri(kind, where), "idle_timeout": 0.5}])) as collector:
            addr = address(collector, kind)
            noisy = [await idle_connection(kind, addr, LOOPBACK) for _ in range(2)]
            stop = asyncio.Event()
            noise = asyncio.create_task(make_noise(kind, noisy, stop))
            label = listener(collector, kind).label
            await until(
                lambda: collector.stats.get("closed_idle", listener=label) == 2,
                what="both closed as idle",
            )
            stop.set()
            await noise
            for sock in noisy:
                sock.close()

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_out_of_file_descriptors_a_queued_sender_gets_in_within_seconds(
    kind: str, short_dir: Path, daemons: list[Daemon], many_files: None
) -> None:
    """A collector out of descriptors, every one held by an idle connection and 512 more
    idle ones queued in the kernel ahead of a sender: several idle connections go per
    failed accept(), so the queue drains and the sender's events arrive within seconds
    (one eviction per 0.1 s retry took a minute)."""
    _, addr, events = short_of_files(kind, short_dir, daemons, spare=256)

    async def main() -> None:
        # 64 per source address: under max_connections_per_peer (unix: one peer)
        idle = [await idle_connection(kind, addr, f"127.0.1.{1 + n // 64}") for n in range(768)]
        legit = await Sender.connect(kind, addr)  # queued behind 512 idle connections
        queued = time.monotonic()
        for i in range(20):
            await legit.send(line(i))
        wait_until(lambda: len(seqs(read_jsonl(events))) == 20, 8, "the sender's events")
        took = time.monotonic() - queued
        assert took < 8, took
        for sock in idle:
            sock.close()
        await legit.close()

    asyncio.run(main())
    assert seqs(read_jsonl(events)) == list(range(20))


# ---------------------------------------------------------------- ws: never upgraded


def test_ws_connections_in_the_handshake_hold_slots_and_go_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TCP connections that never send the upgrade request count toward the cap, and
    one of them is evicted for a newcomer before any idle open websocket."""
    monkeypatch.setattr(listeners, "EVICT_AFTER", 0.3)

    async def main() -> None:
        async with running(config([{"uri": uri("ws", 0), "max_connections": 4}])) as collector:
            addr = address(collector, "ws")
            opened = [await idle_connection("ws", addr, f"127.0.1.{n}") for n in (1, 2)]
            mute = [await tcp_connect(addr, "127.0.2.1") for _ in range(2)]
            # all four idle enough (the two mute ones accepted meanwhile, on loopback)
            await asyncio.sleep(listeners.EVICT_AFTER * 1.5)
            legit = await Sender.connect("ws", addr)
            await legit.send(line(0))
            await arrived(collector, 1)
            assert evicted(collector, "ws") == 1
            gone = [await closed_by_peer(sock, timeout=0.5) for sock in mute]
            assert sorted(gone) == [False, True]
            assert [await closed_by_peer(sock, timeout=0.2) for sock in opened] == [False, False]
            for sock in [*opened, *mute]:
                sock.close()
            await legit.close()

    asyncio.run(main())


def test_ws_out_of_file_descriptors_connections_never_upgraded_go_first(
    short_dir: Path, daemons: list[Daemon]
) -> None:
    """A ws collector out of descriptors, most held by TCP connections that never send
    the upgrade request: those are evicted (not the open websockets), so a queued
    sender gets in within seconds, not after the 10 s opening timeout."""
    _, addr, events = short_of_files("ws", short_dir, daemons, spare=32)

    async def main() -> None:
        opened = [await idle_connection("ws", addr, f"127.0.1.{n}") for n in range(8)]
        mute = [await tcp_connect(addr, f"127.0.2.{n // 8}") for n in range(40)]
        queued = time.monotonic()
        legit = await Sender.connect("ws", addr)  # its handshake waits for an accept()
        for i in range(20):
            await legit.send(line(i))
        wait_until(lambda: len(seqs(read_jsonl(events))) == 20, 6, "the sender's events")
        assert time.monotonic() - queued < 6
        assert [await closed_by_peer(sock, timeout=0.1) for sock in opened] == [False] * 8
        for sock in [*opened, *mute]:
            sock.close()
        await legit.close()

    asyncio.run(main())
    assert seqs(read_jsonl(events)) == list(range(20))


@pytest.mark.parametrize("kind", ["tcp", "ws"])
def test_a_peer_holding_most_slots_with_young_connections_still_makes_room(kind: str) -> None:
    """An attacker that reconnects as fast as it is evicted never has an idle connection;
    holding more than half of the slots, it gives up its least recently active one to a
    newcomer from another address, whose events arrive."""

    async def main() -> None:
        cfg = config([{"uri": uri(kind, 0), "max_connections": 8}])
        async with running(cfg) as collector:
            addr = address(collector, kind)
            hog = [await idle_connection(kind, addr, "127.0.1.1") for _ in range(8)]
            await until(lambda: open_connections(collector, kind) == 8, what="the cap filled")
            sender = await Sender.connect(kind, addr)  # at once: no hog connection is idle
            await sender.send(line(0))
            await arrived(collector, 1)
            assert evicted(collector, kind) == 1
            assert refused(collector, "too_many_connections", kind) == 0
            await sender.close()
            for sock in hog:
                sock.close()

    asyncio.run(main())
