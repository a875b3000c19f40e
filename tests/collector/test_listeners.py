"""Each listener over real loopback sockets: framing, bad input, resets, limits and auth."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from numbat.collector.daemon import Collector
from numbat.server import listeners
from numbat.server.listeners import ListenError
from numbat.server.listeners.ws import WebSocketListener
from tests.collector.conftest import (
    LOOPBACK,
    address,
    config,
    connections,
    line,
    listener,
    memory,
    received,
    refused,
    rejected,
    running,
    seqs,
    started,
    until,
)

MiB = 1024 * 1024
TCP = f"tcp://{LOOPBACK}:0"
UDP = f"udp://{LOOPBACK}:0"
OTHER_LOOPBACK = "127.0.0.2"  # Linux answers the whole of 127/8: a second peer address


# ---------------------------------------------------------------- client helpers


async def tcp_connect(addr: Any, source: str | None = None) -> socket.socket:
    """A non-blocking client socket connected to ``addr`` (from ``source`` if given)."""
    family = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source is not None:
            sock.bind((source, 0))
    try:
        await asyncio.get_running_loop().sock_connect(sock, addr)
    except BaseException:
        sock.close()
        raise
    return sock


async def send(sock: socket.socket, *chunks: bytes) -> None:
    loop = asyncio.get_running_loop()
    for chunk in chunks:
        await loop.sock_sendall(sock, chunk)


async def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True once the server closes or resets the connection (read gives EOF or RST)."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def udp_send(addr: Any, *datagrams: bytes, source: str = LOOPBACK) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        for datagram in datagrams:
            sock.sendto(datagram, addr)


async def still_serving(collector: Collector, scheme: str = "tcp") -> None:
    """The listener accepts a new connection and delivers an event sent on it."""
    probe = 10**6 + len(memory(collector).events)
    sock = await tcp_connect(address(collector, scheme))
    try:
        await send(sock, line(probe))
    finally:
        sock.close()
    await until(lambda: probe in seqs(memory(collector).events), what="the probe event")


def reject_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "rejected input from" in r.getMessage()]


# ---------------------------------------------------------------- tcp


def test_tcp_events_arrive_in_order_and_are_counted() -> None:
    """1,000 lines written in one go arrive once each, in order, and are counted as received."""

    async def main() -> None:
        async with running(config([TCP])) as collector:
            sock = await tcp_connect(address(collector, "tcp"))
            await send(sock, b"".join(line(i) for i in range(1000)))
            sock.close()
            mem = memory(collector)
            await until(lambda: len(mem.traffic()) >= 1000, what="1000 events")
            assert seqs(mem.traffic()) == list(range(1000))
            assert mem.traffic()[0] == {"name": "t.ev", "seq": 0, "time": 1000, "value": 1}
            assert received(collector) == 1000

    asyncio.run(main())


def test_tcp_bad_lines_are_counted_by_reason_and_the_connection_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each bad line is counted under its reason and logged with the peer; good ones flow on."""

    async def main() -> None:
        async with running(config([TCP])) as collector:
            sock = await tcp_connect(address(collector, "tcp"))
            peer = "{}:{}".format(*sock.getsockname())
            await send(
                sock,
                line(0) + b"{oops\n" + line(1) + b"[1,2]\n" + line(2),
                b'{"value":3}\n' + b"\xff\xfe\xfd\n" + line(3) + b'{"name":"x","ttl":-1}\n',
            )
            mem = memory(collector)
            await until(lambda: len(mem.traffic()) == 4, what="4 good events")
            # The same connection keeps working after all that.
            await send(sock, line(4))
            await until(lambda: len(mem.traffic()) == 5, what="an event after the bad lines")
            sock.close()
            assert seqs(mem.traffic()) == [0, 1, 2, 3, 4]
            for reason in ("bad_json", "not_object", "missing_name", "not_utf8", "bad_ttl"):
                assert rejected(collector, reason) == 1, reason
            assert collector.stats.sum("rejected") == 5
            logs = reject_logs(caplog)
            assert len(logs) == 5
            assert all(peer in msg for msg in logs), logs

    asyncio.run(main())


def test_tcp_rejection_logs_are_rate_limited_but_counts_are_exact(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """200 bad lines from one peer: all 200 counted, one log line for the burst."""

    async def main() -> None:
        async with running(config([TCP])) as collector:
            sock = await tcp_connect(address(collector, "tcp"))
            await send(sock, b"nope\n" * 200 + line(0))
            sock.close()
            await until(lambda: len(memory(collector).traffic()) == 1, what="the good event")
            assert rejected(collector, "bad_json") == 200
            assert len(reject_logs(caplog)) == 1

    asyncio.run(main())


def test_tcp_line_split_across_many_sends_arrives_once() -> None:
    """Lines cut into 1-7 byte sends (TCP_NODELAY) are reassembled, each exactly once."""

    async def main() -> None:
        async with running(config([TCP])) as collector:
            sock = await tcp_connect(address(collector, "tcp"))
            data = b"".join(line(i, pad="p" * 300) for i in range(5))
            sizes = [1, 2, 3, 5, 7]
            pos = 0
            i = 0
            while pos < len(data):
                await send(sock, data[pos : pos + sizes[i % len(sizes)]])
                pos += sizes[i % len(sizes)]
                i += 1
            sock.close()
            await until(lambda: len(memory(collector).traffic()) == 5, what="5 events")
            assert seqs(memory(collector).traffic()) == [0, 1, 2, 3, 4]
            assert collector.stats.sum("rejected") == 0

    asyncio.run(main())


def test_tcp_truncated_last_line_is_rejected_but_a_whole_last_object_is_kept() -> None:
    """At EOF a cut-off line counts as truncated; a complete object without newline is kept."""

    async def main() -> None:
        async with running(config([TCP])) as collector:
            addr = address(collector, "tcp")
            cut = await tcp_connect(addr)
            await send(cut, line(0) + b'{"name":"t.ev","se')
            cut.shutdown(socket.SHUT_WR)
            assert await closed_by_peer(cut)
            cut.close()
            whole = await tcp_connect(addr)
            await send(whole, line(1) + line(2).rstrip(b"\n"))
            whole.shutdown(socket.SHUT_WR)
            assert await closed_by_peer(whole)
            whole.close()
            mem = memory(collector)
            await until(lambda: len(mem.traffic()) == 3, what="3 events")
            assert seqs(mem.traffic()) == [0, 1, 2]
            assert rejected(collector, "truncated") == 1
            assert collector.stats.sum("rejected") == 1

    asyncio.run(main())


def test_tcp_reset_mid_line_keeps_complete_events_and_serves_on() -> None:
    """A peer that sends RST inside a line: earlier events kept, the stub counted, no leak."""

    async def main() -> None:
        async with running(config([TCP])) as collector:
            sock = await tcp_connect(address(collector, "tcp"))
            await send(sock, line(0) + line(1) + b'{"name":"t.ev","seq":2,')
            await until(
                lambda: any(p.framer.buffered for p in connections(collector, "tcp")),
                what="the partial line to be read",
            )
            reset(sock)
            await until(lambda: not connections(collector, "tcp"), what="the connection to go")
            assert seqs(memory(collector).traffic()) == [0, 1]
            assert rejected(collector, "truncated") == 1
            await still_serving(collector)

    asyncio.run(main())


def test_tcp_16_mib_line_without_newline_costs_bounded_memory() -> None:
    """16 MiB with no newline: counted once as too long, <= cap kept, later events arrive."""

    async def main() -> None:
        async with running(config([TCP])) as collector:
            sock = await tcp_connect(address(collector, "tcp"))
            await send(sock, line(0))
            await until(lambda: len(connections(collector, "tcp")) == 1, what="the connection")
            (proto,) = connections(collector, "tcp")
            cap = collector.config.max_line_bytes
            max_buffered = 0
            done = asyncio.Event()

            async def sample() -> None:
                nonlocal max_buffered
                while not done.is_set():
                    max_buffered = max(max_buffered, proto.framer.buffered)
                    await asyncio.sleep(0)

            sampler = asyncio.get_running_loop().create_task(sample())
            # The line starts small (held as a partial), then grows past the cap.
            await send(sock, b"x" * 1000)
            await until(lambda: proto.framer.buffered == 1000, what="a partial line held")
            chunk = b"x" * (256 * 1024)
            tracemalloc.start()
            try:
                for _ in range(16 * MiB // len(chunk)):
                    await send(sock, chunk)
                await send(sock, b"\n" + line(1))
                mem = memory(collector)
                await until(lambda: len(mem.traffic()) == 2, what="the event after the line")
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
                done.set()
                await sampler
                sock.close()
            assert seqs(mem.traffic()) == [0, 1]
            assert rejected(collector, "line_too_long") == 1
            assert collector.stats.sum("rejected") == 1
            assert 1000 <= max_buffered <= cap
            assert proto.framer.buffered == 0
            assert peak < 4 * MiB, peak

    asyncio.run(main())


def test_tcp_per_listener_line_cap_overrides_the_collector_default() -> None:
    """max_line_bytes on the listener: a 200-byte line is too long, a 50-byte one is fine."""

    async def main() -> None:
        cfg = config([{"uri": TCP, "max_line_bytes": 100}])
        async with running(cfg) as collector:
            sock = await tcp_connect(address(collector, "tcp"))
            await send(sock, line(0, pad="p" * 200) + line(1))
            sock.close()
            await until(lambda: len(memory(collector).traffic()) == 1, what="the short event")
            assert seqs(memory(collector).traffic()) == [1]
            assert rejected(collector, "line_too_long") == 1

    asyncio.run(main())


def test_tcp_max_connections_refuses_the_extra_peer_and_counts_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With max_connections=2 a third peer is cut off and counted while neither open
    connection is idle enough to make room (EVICT_AFTER); a slot frees on close."""
    monkeypatch.setattr(listeners, "EVICT_AFTER", 60.0)

    async def main() -> None:
        async with running(config([{"uri": TCP, "max_connections": 2}])) as collector:
            addr = address(collector, "tcp")
            first = await tcp_connect(addr)
            second = await tcp_connect(addr)
            await until(lambda: len(connections(collector, "tcp")) == 2, what="2 connections")
            third = await tcp_connect(addr)
            assert await closed_by_peer(third)
            third.close()
            assert refused(collector, "too_many_connections") == 1
            await send(second, line(0))
            await until(lambda: len(memory(collector).traffic()) == 1, what="an event")
            first.close()
            await until(lambda: len(connections(collector, "tcp")) == 1, what="a free slot")
            await still_serving(collector)
            second.close()
            assert refused(collector, "too_many_connections") == 1

    asyncio.run(main())


def test_tcp_idle_connection_is_closed_but_a_busy_one_is_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """idle_timeout closes a silent peer (counted, logged); a peer that keeps sending
    stays open."""
    caplog.set_level(logging.WARNING)

    async def main() -> None:
        async with running(config([{"uri": TCP, "idle_timeout": 0.5}])) as collector:
            addr = address(collector, "tcp")
            quiet = await tcp_connect(addr)
            busy = await tcp_connect(addr)
            for i in range(8):  # 0.8 s of traffic, never more than 0.1 s apart
                await send(busy, line(i))
                await asyncio.sleep(0.1)
            assert await closed_by_peer(quiet, timeout=2)
            quiet.close()
            label = next(iter(collector.listeners))
            assert collector.stats.get("closed_idle", listener=label) == 1
            assert "no event for 0.5s (idle_timeout)" in caplog.text
            await send(busy, line(8))
            await until(lambda: len(memory(collector).traffic()) == 9, what="9 events")
            busy.close()
            assert seqs(memory(collector).traffic()) == list(range(9))

    asyncio.run(main())


def test_tcp_allow_list_refuses_peers_outside_it(caplog: pytest.LogCaptureFixture) -> None:
    """A peer outside the allowed networks is cut off, counted and logged; one inside is served."""

    async def main() -> None:
        cfg = config([{"uri": TCP, "allow": [f"{LOOPBACK}/32"]}])
        async with running(cfg) as collector:
            addr = address(collector, "tcp")
            stranger = await tcp_connect(addr, source=OTHER_LOOPBACK)
            await send(stranger, line(0))
            assert await closed_by_peer(stranger)
            stranger.close()
            friend = await tcp_connect(addr, source=LOOPBACK)
            await send(friend, line(1))
            friend.close()
            await until(lambda: len(memory(collector).traffic()) == 1, what="the friend's event")
            assert seqs(memory(collector).traffic()) == [1]
            assert refused(collector, "not_allowed") == 1
            assert any(OTHER_LOOPBACK in r.getMessage() for r in caplog.records)

    asyncio.run(main())


def test_tcp_many_peers_at_once_each_keep_their_order() -> None:
    """20 concurrent connections interleaving writes: every event once, in order per peer."""

    async def main() -> None:
        async with running(config([TCP])) as collector:
            addr = address(collector, "tcp")
            socks = [await tcp_connect(addr) for _ in range(20)]
            for i in range(50):
                for peer, sock in enumerate(socks):
                    await send(sock, line(i, peer=peer))
            for sock in socks:
                sock.close()
            mem = memory(collector)
            await until(lambda: len(mem.traffic()) == 1000, what="1000 events")
            for peer in range(20):
                assert seqs(mem.traffic(), peer=peer) == list(range(50))

    asyncio.run(main())


def test_times_in_other_units_are_converted_counted_and_logged_once_per_peer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Times in s, us and ns arrive as ms, counted by listener and unit; the log names
    each peer address once, however many connections and events it sends."""
    ms = 1_795_996_339_260
    lines = line(0, time=ms / 1000) + line(1, time=ms * 1000) + line(2, time=ms * 10**6)
    lines += line(3, time=ms)

    async def main() -> None:
        async with running(config([TCP, UDP])) as collector:
            for source in (LOOPBACK, OTHER_LOOPBACK, LOOPBACK):
                sock = await tcp_connect(address(collector, "tcp"), source)
                await send(sock, lines)
                sock.close()
            await udp_send(address(collector, "udp"), line(4, time=ms // 1000))
            mem = memory(collector)
            await until(lambda: len(mem.traffic()) == 13, what="13 events")
            assert {e["time"] for e in mem.traffic()} == {ms, ms - 260}
            tcp, udp = listener(collector, "tcp").label, listener(collector, "udp").label
            for unit in ("s", "us", "ns"):
                assert collector.stats.get("time_unit_converted", listener=tcp, unit=unit) == 3
            assert collector.stats.get("time_unit_converted", listener=udp, unit="s") == 1
            assert collector.stats.sum("time_unit_converted") == 10
            logs = [r.getMessage() for r in caplog.records if "sends times in" in r.getMessage()]
            assert len(logs) == 3, logs  # two addresses on tcp, one on udp
            assert sum(OTHER_LOOPBACK in msg for msg in logs) == 1
            assert any(msg.startswith(udp) and "in seconds" in msg for msg in logs)

    asyncio.run(main())


# ---------------------------------------------------------------- udp


def test_udp_takes_several_objects_per_datagram_and_drops_only_bad_lines() -> None:
    """Newline-separated objects in one datagram all count; bad lines cost only themselves."""

    async def main() -> None:
        cfg = config([{"uri": UDP, "max_line_bytes": 200}])
        async with running(cfg) as collector:
            addr = address(collector, "udp")
            await udp_send(
                addr,
                line(0),  # one object with the original's trailing newline
                line(1).rstrip(b"\n"),  # one object, no newline
                line(2) + line(3) + line(4),  # several per datagram
                line(5) + b"junk\n" + line(6, pad="p" * 300) + line(7),  # bad and too long
                b"\xff\xfe\n" + line(8),  # bad UTF-8 then a good line
                b"[1]",
                b"",
                line(9),
            )
            mem = memory(collector)
            await until(lambda: len(mem.traffic()) == 9, what="9 events")
            assert seqs(mem.traffic()) == [0, 1, 2, 3, 4, 5, 7, 8, 9]
            for reason in ("bad_json", "line_too_long", "not_utf8", "not_object"):
                assert rejected(collector, reason, "udp") == 1, reason
            assert received(collector, "udp") == 9

    asyncio.run(main())


def test_udp_allow_list_drops_and_counts_datagrams_from_outside() -> None:
    """Datagrams from a peer outside the allow list are dropped and counted as refused."""

    async def main() -> None:
        cfg = config([{"uri": UDP, "allow": [f"{LOOPBACK}/32"]}])
        async with running(cfg) as collector:
            addr = address(collector, "udp")
            await udp_send(addr, line(0), line(1), source=OTHER_LOOPBACK)
            await until(lambda: refused(collector, "not_allowed", "udp") == 2, what="2 refusals")
            await udp_send(addr, line(2), source=LOOPBACK)
            await until(lambda: len(memory(collector).traffic()) == 1, what="the allowed event")
            assert seqs(memory(collector).traffic()) == [2]

    asyncio.run(main())


def test_udp_kernel_drops_are_counted_and_reach_the_stats_events() -> None:
    """Datagrams the kernel drops while the loop is busy (a tiny receive buffer) are
    counted as kernel_drops in the stats events: received + dropped = sent."""

    async def main() -> None:
        cfg = config([UDP], udp_buffer_bytes=4096, stats_interval=0.05)
        async with running(cfg) as collector:
            # Sent while the loop is held by this very coroutine: nothing is read meanwhile.
            await udp_send(address(collector, "udp"), *(line(i) for i in range(2000)))
            mem = memory(collector)

            def dropped() -> int:
                return sum(int(e["value"]) for e in mem.own("kernel_drops"))

            await until(lambda: len(mem.traffic()) + dropped() == 2000, what="all accounted")
            assert dropped() > 0
            assert {e["listener"] for e in mem.own("kernel_drops")} == {
                listener(collector, "udp").label
            }
            assert received(collector, "udp") == len(mem.traffic())

    asyncio.run(main())


# ---------------------------------------------------------------- unix


def test_unix_stale_socket_file_is_replaced_and_removed_at_stop(short_dir: Path) -> None:
    """A socket file nobody listens on is taken over; events flow; stop removes the file."""
    path = short_dir / "c.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays behind, as after a crash
    assert path.is_socket()

    async def main() -> None:
        async with running(config([f"unix://{path}"])) as collector:
            sock = await tcp_connect(str(path))
            await send(sock, line(0) + b"bad\n" + line(1))
            sock.close()
            await until(lambda: len(memory(collector).traffic()) == 2, what="2 events")
            assert seqs(memory(collector).traffic()) == [0, 1]
            assert rejected(collector, "bad_json", "unix") == 1
        assert not path.exists()

    asyncio.run(main())


def test_unix_socket_in_use_by_a_live_process_is_refused(short_dir: Path) -> None:
    """A socket file another process answers on is never taken over: ListenError, file kept."""
    path = short_dir / "live.sock"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(path))
    live.listen(1)
    try:

        async def main() -> None:
            collector = Collector(config([f"unix://{path}"]))
            with pytest.raises(ListenError, match="in use"):
                await collector.start()
            assert not collector.listeners and not collector.queues

        asyncio.run(main())
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with probe:
            probe.connect(str(path))  # the live server still owns its socket
    finally:
        live.close()


def test_unix_path_that_is_a_regular_file_is_left_alone(short_dir: Path) -> None:
    """A non-socket file at the path is an error naming it, and the file is not deleted."""
    path = short_dir / "data.txt"
    path.write_text("precious")

    async def main() -> None:
        with pytest.raises(ListenError, match="not a socket"):
            await Collector(config([f"unix://{path}"])).start()

    asyncio.run(main())
    assert path.read_text() == "precious"


# ---------------------------------------------------------------- websocket


def ws_uri(collector: Collector, path: str = "/events", query: str = "") -> str:
    host, port = address(collector, "ws")[:2]
    return f"ws://{host}:{port}{path}{query}"


async def ws_status(uri: str, **kwargs: Any) -> int:
    """The HTTP status the handshake to ``uri`` is refused with (101 if it is accepted)."""
    try:
        async with connect(uri, proxy=None, compression=None, **kwargs):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def ws_send(uri: str, *messages: bytes | str) -> None:
    async with connect(uri, proxy=None, compression=None) as ws:
        for message in messages:
            await ws.send(message)


WS_TOKEN = {"uri": f"ws://{LOOPBACK}:0/events", "token": "s3cret"}


def test_ws_token_is_required_and_checked() -> None:
    """No key or a wrong key is refused with 401 and counted; ?key= and ?token= get in."""

    async def main() -> None:
        async with running(config([WS_TOKEN])) as collector:
            assert await ws_status(ws_uri(collector)) == 401
            assert await ws_status(ws_uri(collector, query="?key=wrong")) == 401
            assert await ws_status(ws_uri(collector, query="?key=s3cre")) == 401
            assert refused(collector, "bad_token", "ws") == 3
            await ws_send(ws_uri(collector, query="?key=s3cret"), line(0))
            await ws_send(ws_uri(collector, query="?token=s3cret"), line(1))
            await until(lambda: len(memory(collector).traffic()) == 2, what="2 events")
            assert sorted(seqs(memory(collector).traffic())) == [0, 1]
            assert refused(collector, "bad_token", "ws") == 3

    asyncio.run(main())


def test_ws_token_never_reaches_a_log_record(caplog: pytest.LogCaptureFixture) -> None:
    """With every logger at DEBUG, neither a wrong nor the right token shows in any record."""
    token = "tok-9f3a1c"
    caplog.set_level(logging.DEBUG)
    client_log = logging.getLogger("tests.ws.client")  # the test's own client logs its URIs

    async def main() -> None:
        cfg = config([{"uri": f"ws://{LOOPBACK}:0/events", "token": token}])
        async with running(cfg) as collector:
            for query in ("?key=tok-9f3a1", f"?token={token}x", "?key="):
                assert await ws_status(ws_uri(collector, query=query), logger=client_log) == 401
            assert (
                await ws_status(ws_uri(collector, "/x", f"?key={token}"), logger=client_log) == 404
            )
            async with connect(
                ws_uri(collector, query=f"?key={token}"), proxy=None, logger=client_log
            ) as ws:
                await ws.send(line(0))
                await until(lambda: len(memory(collector).traffic()) == 1, what="the event")

    asyncio.run(main())
    server_records = [r for r in caplog.records if not r.name.startswith("tests.")]
    assert any(r.name.startswith("numbat.") for r in server_records)  # something was logged
    for record in server_records:
        assert "tok-9f3a1" not in record.getMessage(), (record.name, record.getMessage())


async def _raw_ws_handshake(host: str, port: int) -> asyncio.StreamWriter:
    """A websocket client that completes the handshake and then never reads (no pongs)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"GET /events HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return writer


def test_ws_pings_drop_a_silent_client_and_keep_a_live_one() -> None:
    """The server pings every ping_interval: a client that never answers is dropped, one
    that answers (pongs) stays connected."""

    async def main() -> None:
        cfg = config([{"uri": f"ws://{LOOPBACK}:0/events", "ping_interval": 0.2}])
        async with running(cfg) as collector:
            lis = listener(collector, "ws")
            assert isinstance(lis, WebSocketListener)
            async with connect(ws_uri(collector), proxy=None) as live:
                await until(lambda: len(lis.connections) == 1, what="the live client")
                (server_side,) = lis.connections
                silent = await _raw_ws_handshake(*address(collector, "ws")[:2])
                await until(lambda: len(lis.connections) == 2, what="the silent client")
                # latency is set when a pong comes back: the live client was pinged.
                await until(lambda: server_side.latency > 0, what="a pong from the live client")
                await until(lambda: len(lis.connections) == 1, what="the silent client dropped")
                assert lis.connections == {server_side}
                await live.send(line(0))
                await until(lambda: len(memory(collector).traffic()) == 1, what="the event")
                silent.close()

    asyncio.run(main())


def test_ws_wrong_path_is_refused_with_404() -> None:
    """Only the configured path accepts events; another path is refused and counted."""

    async def main() -> None:
        async with running(config([WS_TOKEN])) as collector:
            assert await ws_status(ws_uri(collector, "/other", "?key=s3cret")) == 404
            assert await ws_status(ws_uri(collector, "/", "?key=s3cret")) == 404
            assert refused(collector, "bad_path", "ws") == 2
            assert await ws_status(ws_uri(collector, query="?key=s3cret")) == 101

    asyncio.run(main())


def test_ws_bad_messages_are_rejected_and_the_connection_stays_open() -> None:
    """Bad messages are counted by reason; text, binary and multi-line messages all count."""

    async def main() -> None:
        async with running(config([f"ws://{LOOPBACK}:0/events"])) as collector:
            mem = memory(collector)
            async with connect(ws_uri(collector), proxy=None, compression=None) as ws:
                await ws.send(line(0))  # binary, as the Node emitter sends
                await ws.send(b"{broken")
                await ws.send(b"\xff\xfe")
                await ws.send(line(1).decode())  # text frame
                await ws.send(line(2) + b"[]\n" + line(3))
                await until(lambda: len(mem.traffic()) == 4, what="4 events")
                await ws.send(line(4))
                await until(lambda: len(mem.traffic()) == 5, what="an event on the same socket")
            assert seqs(mem.traffic()) == [0, 1, 2, 3, 4]
            for reason in ("bad_json", "not_utf8", "not_object"):
                assert rejected(collector, reason, "ws") == 1, reason

    asyncio.run(main())


def test_ws_allow_list_refuses_with_403() -> None:
    """A websocket peer outside the allow list is refused (403) and counted."""

    async def main() -> None:
        cfg = config([{"uri": f"ws://{LOOPBACK}:0/", "allow": [f"{LOOPBACK}/32"]}])
        async with running(cfg) as collector:
            uri = ws_uri(collector, "/")
            assert await ws_status(uri, local_addr=(OTHER_LOOPBACK, 0)) == 403
            assert refused(collector, "not_allowed", "ws") == 1
            assert await ws_status(uri, local_addr=(LOOPBACK, 0)) == 101

    asyncio.run(main())


def test_ws_max_connections_refuses_with_503(monkeypatch: pytest.MonkeyPatch) -> None:
    """With max_connections=1 a second websocket is refused (503) and counted while the
    first is not idle enough to make room (EVICT_AFTER)."""
    monkeypatch.setattr(listeners, "EVICT_AFTER", 60.0)

    async def main() -> None:
        cfg = config([{"uri": f"ws://{LOOPBACK}:0/", "max_connections": 1}])
        async with running(cfg) as collector:
            uri = ws_uri(collector, "/")
            lis = listener(collector, "ws")
            assert isinstance(lis, WebSocketListener)
            async with connect(uri, proxy=None, compression=None):
                await until(lambda: len(lis.connections) == 1, what="1 connection")
                assert await ws_status(uri) == 503
            assert refused(collector, "too_many_connections", "ws") == 1

    asyncio.run(main())


def test_ws_client_still_connected_at_stop_is_closed_and_counted() -> None:
    """Shutdown closes a websocket client that stays connected (1001, counted as
    closed_at_shutdown) after reading what it sent, instead of waiting on it forever."""

    async def main() -> None:
        collector = Collector(config([f"ws://{LOOPBACK}:0/"]), hostname="test-host")
        async with started(collector):
            mem = memory(collector)
            async with connect(ws_uri(collector, "/"), proxy=None) as ws:
                await ws.send(line(0))
                await asyncio.wait_for(collector.stop(drain_timeout=1), 5)
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
            assert seqs(mem.traffic()) == [0]
            assert collector.stats.get("closed_at_shutdown", listener=f"ws://{LOOPBACK}:0/") == 1

    asyncio.run(main())


def test_ws_idle_connection_is_closed() -> None:
    """A websocket that sends nothing for idle_timeout is closed with 1001 and counted."""

    async def main() -> None:
        cfg = config([{"uri": f"ws://{LOOPBACK}:0/", "idle_timeout": 0.2}])
        async with running(cfg) as collector:
            async with connect(ws_uri(collector, "/"), proxy=None, compression=None) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
            label = cfg.collector.listeners[0].uri
            assert collector.stats.get("closed_idle", listener=label) == 1

    asyncio.run(main())


def test_ws_message_with_an_overlong_line_keeps_its_short_lines() -> None:
    """A line over the cap inside a message is dropped and counted; the rest is kept."""

    async def main() -> None:
        cfg = config([{"uri": f"ws://{LOOPBACK}:0/", "max_line_bytes": 100}])
        async with running(cfg) as collector:
            await ws_send(ws_uri(collector, "/"), line(0) + line(1, pad="p" * 200) + line(2))
            await until(lambda: len(memory(collector).traffic()) == 2, what="2 events")
            assert seqs(memory(collector).traffic()) == [0, 2]
            assert rejected(collector, "line_too_long", "ws") == 1

    asyncio.run(main())


def test_listeners_of_every_kind_feed_one_pipeline(short_dir: Path) -> None:
    """tcp, udp, unix and ws listeners side by side all deliver to the same output."""

    async def main() -> None:
        path = short_dir / "all.sock"
        cfg = config([TCP, UDP, f"unix://{path}", f"ws://{LOOPBACK}:0/"])
        async with running(cfg) as collector:
            sock = await tcp_connect(address(collector, "tcp"))
            await send(sock, line(0, via="tcp"))
            sock.close()
            await udp_send(address(collector, "udp"), line(0, via="udp"))
            usock = await tcp_connect(str(path))
            await send(usock, line(0, via="unix"))
            usock.close()
            await ws_send(ws_uri(collector, "/"), line(0, via="ws"))
            mem = memory(collector)
            await until(lambda: len(mem.traffic()) == 4, what="one event per listener")
            assert sorted(str(e["via"]) for e in mem.traffic()) == ["tcp", "udp", "unix", "ws"]
            for scheme in ("tcp", "udp", "unix", "ws"):
                assert received(collector, scheme) == 1, scheme

    asyncio.run(main())


def test_listener_logging_names_the_listener_and_reason(caplog: pytest.LogCaptureFixture) -> None:
    """The rejection log line carries the listener URI, the peer and a sample of the input."""
    caplog.set_level(logging.WARNING, logger="numbat")

    async def main() -> None:
        async with running(config([UDP])) as collector:
            await udp_send(address(collector, "udp"), b"definitely not json")
            await until(lambda: rejected(collector, "bad_json", "udp") == 1, what="a rejection")

    asyncio.run(main())
    (msg,) = reject_logs(caplog)
    assert msg.startswith(f"{UDP}: rejected input from {LOOPBACK}:")
    assert "definitely not json" in msg


def test_allow_list_matches_an_ipv4_peer_of_a_dual_stack_socket() -> None:
    """An IPv4 client of a [::] socket shows as ::ffff:a.b.c.d; the IPv4 allow list applies."""
    from numbat.config import ListenerConfig
    from numbat.server.listeners import Limits
    from numbat.server.listeners.tcp import TCPListener
    from numbat.server.stats import Stats

    options = ListenerConfig(uri="tcp://[::]:1", allow=["127.0.0.0/8"])
    stats = Stats("h", "numbat.collector")
    lis = TCPListener(options, Limits(), lambda events: None, stats)
    assert lis.admit(("::ffff:127.0.0.1", 5000, 0, 0))
    assert not lis.admit(("::ffff:10.0.0.1", 5000, 0, 0))
    assert not lis.admit(("::1", 5000, 0, 0))
    assert stats.get("refused", listener="tcp://[::]:1", reason="not_allowed") == 2


def test_ws_message_over_the_size_cap_is_counted_when_the_connection_closes() -> None:
    """A ws message past the library's size cap closes the connection (code 1009): the loss
    is counted as rejected message_too_big, and a new connection works."""

    async def main() -> None:
        async with running(config([f"ws://{LOOPBACK}:0/events"])) as collector:
            lis = listener(collector, "ws")
            assert isinstance(lis, WebSocketListener)
            async with connect(ws_uri(collector), proxy=None, max_size=None) as ws:
                await ws.send(line(0))
                await ws.send(b"x" * (lis.max_message + 1))
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
            await until(lambda: rejected(collector, "message_too_big", "ws") == 1, what="counted")
            await ws_send(ws_uri(collector), line(1))
            await until(lambda: len(memory(collector).traffic()) == 2, what="both events")

    asyncio.run(main())


def test_ws_refuses_browser_origins_not_listed_and_counts_them() -> None:
    """A page in a browser sends an Origin: refused (403, bad_origin) unless listed;
    emitters send none and get in."""

    async def main() -> None:
        cfg = config([{"uri": f"ws://{LOOPBACK}:0/events", "origins": ["https://ops.example.com"]}])
        async with running(cfg) as collector:
            uri = ws_uri(collector)
            assert await ws_status(uri, origin="https://evil.example.net") == 403
            assert await ws_status(uri, origin="http://localhost:8000") == 403
            assert refused(collector, "bad_origin", "ws") == 2
            assert await ws_status(uri, origin="https://ops.example.com") == 101
            assert await ws_status(uri) == 101  # no Origin: an emitter

    asyncio.run(main())


def test_ws_text_frame_that_is_not_utf8_is_counted() -> None:
    """A text frame with invalid UTF-8 closes the connection (1007) and counts not_utf8."""

    async def main() -> None:
        async with running(config([f"ws://{LOOPBACK}:0/events"])) as collector:
            writer = await _raw_ws_handshake(*address(collector, "ws")[:2])
            payload, mask = b"\xff\xfe{}", b"\x01\x02\x03\x04"
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)  # FIN, text
            await writer.drain()
            writer.close()  # no closing handshake to wait for: the server sees EOF
            await until(lambda: rejected(collector, "not_utf8", "ws") == 1, what="counted")

    asyncio.run(main())


def test_one_peer_cannot_take_every_connection_and_slow_lines_are_cut(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Slow loris: past max_connections_per_peer one address is refused (counted) while
    another address still gets in; a line trickling in slower than line_timeout is
    closed (closed_slow, logged) although bytes keep arriving."""
    caplog.set_level(logging.WARNING)

    async def main() -> None:
        cfg = config([{"uri": TCP, "max_connections_per_peer": 3, "line_timeout": 0.3}])
        async with running(cfg) as collector:
            tcp_addr = address(collector, "tcp")
            socks = [await tcp_connect(tcp_addr) for _ in range(5)]  # from 127.0.0.1
            await until(lambda: refused(collector, "too_many_from_peer") == 2, what="2 refused")
            other = socket.create_connection(tcp_addr, source_address=(OTHER_LOOPBACK, 0))
            other.sendall(line(1))
            await until(lambda: len(memory(collector).traffic()) == 1, what="the other peer")

            async def trickle(sock: socket.socket) -> None:
                with contextlib.suppress(OSError):
                    while True:  # a byte every 0.05 s: never idle, never a whole line
                        await send(sock, b"{")
                        await asyncio.sleep(0.05)

            task = asyncio.ensure_future(trickle(socks[0]))
            await until(lambda: collector.stats.get("closed_slow", listener=TCP) == 1)
            assert await closed_by_peer(socks[0])
            assert "a line took over 0.3s to arrive (line_timeout)" in caplog.text
            task.cancel()
            assert len(connections(collector, "tcp")) == 3  # 2 from 127.0.0.1, 1 other
            for sock in [*socks, other]:
                sock.close()

    asyncio.run(main())


def test_a_line_past_the_cap_trickling_in_is_still_cut_by_line_timeout() -> None:
    """An overlong line being skipped is still a line in progress: trickling it forever
    does not hold the connection past line_timeout."""

    async def main() -> None:
        cfg = config([{"uri": TCP, "line_timeout": 0.3, "max_line_bytes": 100}])
        async with running(cfg) as collector:
            sock = await tcp_connect(address(collector, "tcp"))
            await send(sock, b"x" * 200)  # over the cap: skipped up to its newline

            async def trickle() -> None:
                with contextlib.suppress(OSError):
                    while True:
                        await send(sock, b"x")
                        await asyncio.sleep(0.05)

            task = asyncio.ensure_future(trickle())
            await until(lambda: collector.stats.get("closed_slow", listener=TCP) == 1)
            assert await closed_by_peer(sock)
            task.cancel()
            sock.close()

    asyncio.run(main())
