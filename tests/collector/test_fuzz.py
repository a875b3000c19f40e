"""Property tests: arbitrary bytes interleaved with valid events over real tcp and udp.

One collector runs on its own loop in a thread for the whole test; every hypothesis
example is a new connection (or a new udp sender) whose valid events carry that
example's ``conn`` id and a ``seq``. The properties: the daemon keeps serving, every
valid event arrives exactly once, and in order for its connection.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from numbat.collector.daemon import Collector
from numbat.config import Config
from tests.collector.conftest import (
    LOOPBACK,
    MemoryOutput,
    address,
    config,
    connections,
    memory,
    seqs,
)
from tests.helpers import wait_until

CAP = 256  # small, so that overlong lines are common

# Bytes that exercise the framer and parser edges, mixed with arbitrary binary.
JUNK = st.one_of(
    st.binary(max_size=120),
    st.sampled_from(
        [
            b"\n",
            b"\r\n",
            b"{",
            b'{"name":',
            b'{"name":"x"',
            b"\xff\xfe",
            b"\xc3",
            b"[]\n",
            b"null\n",
            b'{"name":""}\n',
            b'{"value":1}\n',
            b"x" * (CAP + 1),
            b"y" * (3 * CAP),
            b'"' * 10,
        ]
    ),
)
# True: one valid event; bytes: junk.
ITEMS = st.lists(st.one_of(st.just(True), JUNK), max_size=30)


class BackgroundCollector:
    """A collector on its own loop (``asyncio.run`` in a thread) for blocking test clients."""

    def __init__(self, cfg: Config) -> None:
        self.collector = Collector(cfg, hostname="fuzz")
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await self.collector.start()
        self._ready.set()
        await self._stop.wait()
        await self.collector.stop(drain_timeout=5)

    def __enter__(self) -> BackgroundCollector:
        self._thread.start()
        assert self._ready.wait(10) and self.error is None, self.error
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)
        assert not self._thread.is_alive()
        assert self.error is None, self.error

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.error is None

    @property
    def memory(self) -> MemoryOutput:
        return memory(self.collector)


@contextmanager
def background(listen: str) -> Iterator[BackgroundCollector]:
    with BackgroundCollector(config([listen], max_line_bytes=CAP)) as bg:
        yield bg


def event(conn: int, seq: int) -> bytes:
    return json.dumps({"name": "fuzz", "conn": conn, "seq": seq}).encode() + b"\n"


def build(conn: int, items: list[bool | bytes], first: int = 0) -> tuple[bytes, list[int]]:
    """The bytes to send and the seqs (counting from ``first``) that must arrive.

    Each event starts with a newline, so whatever junk came before it is a line of its
    own; the junk after it starts a new line because the event ends with one.
    """
    out: list[bytes] = []
    want: list[int] = []
    for item in items:
        if item is True:
            seq = first + len(want)
            out.append(b"\n" + event(conn, seq))
            want.append(seq)
        else:
            assert isinstance(item, bytes)
            out.append(item)
    return b"".join(out), want


def check_all_exactly_once(bg: BackgroundCollector, expected: dict[int, list[int]]) -> None:
    """Every connection's events arrived exactly once, in order; nothing counted was lost."""
    label = next(iter(bg.collector.listeners))
    received = bg.collector.stats.get("received", listener=label)
    # Junk may happen to hold a valid event too: it counts, and must arrive like any other.
    wait_until(lambda: len(bg.memory.traffic()) >= received, 10, "every received event")
    got = list(bg.memory.traffic())
    assert len(got) == received
    for conn, want in expected.items():
        assert seqs(got, conn=conn) == want, conn


def test_tcp_junk_between_events_never_loses_or_duplicates_one() -> None:
    """Arbitrary bytes and cuts on tcp: the daemon lives; valid events arrive once, in order."""
    conn_ids = itertools.count()
    expected: dict[int, list[int]] = {}
    with background(f"tcp://{LOOPBACK}:0") as bg:
        addr = address(bg.collector, "tcp")

        @settings(
            max_examples=150,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(items=ITEMS, cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=12))
        @example(items=[b"OPTIONS ", True, True], cuts=[])  # once taken for an HTTP request
        def check(items: list[bool | bytes], cuts: list[int]) -> None:
            conn = next(conn_ids)
            data, want = build(conn, items)
            expected[conn] = want
            bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
            with socket.create_connection(addr, timeout=10) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for start, end in itertools.pairwise(bounds):
                    sock.sendall(data[start:end])
            # The server has read everything once it has dropped the connection.
            wait_until(lambda: not connections(bg.collector, "tcp"), 10, "the close")
            wait_until(
                lambda: len(seqs(bg.memory.traffic(), conn=conn)) >= len(want),
                10,
                f"{len(want)} events of connection {conn}",
            )
            assert seqs(bg.memory.traffic(), conn=conn) == want
            assert bg.alive

        check()
        check_all_exactly_once(bg, expected)
        assert bg.collector.stats.sum("rejected") > 0  # the junk was seen and counted


def test_udp_junk_between_events_never_loses_or_duplicates_one() -> None:
    """Arbitrary datagrams and mixed lines on udp: valid events arrive once, in order."""
    conn_ids = itertools.count()
    expected: dict[int, list[int]] = {}
    with background(f"udp://{LOOPBACK}:0") as bg:
        addr = address(bg.collector, "udp")

        @settings(
            max_examples=150,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        # Small enough that one example's datagrams fit any socket receive buffer.
        @given(
            datagrams=st.lists(st.lists(st.one_of(st.just(True), JUNK), max_size=15), max_size=5)
        )
        def check(datagrams: list[list[bool | bytes]]) -> None:
            conn = next(conn_ids)
            want: list[int] = []
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for items in datagrams:
                    data, more = build(conn, items, first=len(want))
                    want += more
                    sock.sendto(data, addr)
            expected[conn] = want
            wait_until(
                lambda: len(seqs(bg.memory.traffic(), conn=conn)) >= len(want),
                10,
                f"{len(want)} events of sender {conn}",
            )
            assert seqs(bg.memory.traffic(), conn=conn) == want
            assert bg.alive

        check()
        check_all_exactly_once(bg, expected)
        assert bg.collector.stats.sum("rejected") > 0
