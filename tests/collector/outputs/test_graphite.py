"""The graphite output: exact plaintext lines over TCP and UDP, sanitising, reconnect, backlog."""

from __future__ import annotations

import asyncio
import socket

import pytest

from numbat.collector.outputs.graphite import GraphiteOutput, graphite_path, graphite_value
from numbat.config import GraphiteOutputConfig
from numbat.event import Event
from tests.collector.outputs.conftest import (
    LOOPBACK,
    batch,
    datagram_server,
    free_port,
    line_server,
)

T = 1_700_000_000_999  # ms: 1700000000 whole seconds


def _output(uri: str, prefix: str = "", max_backlog: int = 100_000) -> GraphiteOutput:
    options = GraphiteOutputConfig(type="graphite", uri=uri, prefix=prefix, max_backlog=max_backlog)
    return GraphiteOutput(options, backoff=lambda retries: 0.01)


def _counter(values: range) -> list[Event]:
    return [{"name": "app.count", "value": v, "time": T} for v in values]


def test_tcp_lines_are_exact_sanitised_and_in_seconds() -> None:
    """Paths are prefix + sanitised name, values positional, times whole seconds."""
    events: list[Event] = [
        {"name": "web.GET /users", "value": 3, "time": T},
        {"name": "db.query time", "value": 12.5, "time": T + 1},
        {"name": "huge", "value": 1e20, "time": T},
        {"name": "tiny", "value": 1.5e-7, "time": T},
        {"name": "bad", "value": float("nan"), "time": T},
        {"name": "caf\u00e9..ms.", "value": -2, "time": 999},
    ]

    async def main() -> None:
        async with line_server() as server:
            out = _output(server.uri, prefix="nb")
            await out.start()
            await out.write(batch(*events))
            lines = await server.wait_for(5)
            assert lines == [
                b"nb.web.GET__users 3 1700000000",
                b"nb.db.query_time 12.5 1700000001",
                b"nb.huge 100000000000000000000 1700000000",
                b"nb.tiny 0.00000015 1700000000",
                b"nb.caf_.ms -2 0",
            ]
            assert out.stats() == {"backlog": 0, "dropped": 0, "invalid": 1}
            await out.close()

    asyncio.run(main())


def test_tcp_backlog_is_delivered_in_order_after_restart_and_overflow_counted() -> None:
    """While carbon is down writes return at once; the newest max_backlog lines arrive later."""

    async def main() -> None:
        async with line_server() as server:
            out = _output(server.uri, max_backlog=4)
            await out.start()
            await out.write(batch(*_counter(range(2))))
            await server.wait_for(2)

            await server.stop()
            sender = out.tcp
            assert sender is not None
            await sender.until(lambda: not sender.connected, timeout=10)
            for values in (range(2, 5), range(5, 8)):
                await asyncio.wait_for(out.write(batch(*_counter(values))), timeout=1.0)
            assert out.stats() == {"backlog": 4, "dropped": 2, "invalid": 0}

            await server.start()
            lines = await server.wait_for(6)
            assert [int(raw.split()[1]) for raw in lines] == [0, 1, 4, 5, 6, 7]
            assert out.stats() == {"backlog": 0, "dropped": 2, "invalid": 0}
            await out.close()

    asyncio.run(main())


def test_udp_packs_lines_into_datagrams_of_at_most_1400_bytes() -> None:
    """Whole lines are packed greedily into datagrams; the bytes are exactly the lines."""
    events: list[Event] = [
        {"name": f"host.disk.sda{i:03d}", "value": 1000 + i, "time": T} for i in range(100)
    ]
    expected = [f"g.host.disk.sda{i:03d} {1000 + i} 1700000000\n".encode() for i in range(100)]
    per_datagram = 1400 // len(expected[0])  # every line has the same length

    async def main() -> None:
        async with datagram_server() as server:
            out = _output(f"udp://{LOOPBACK}:{server.port}", prefix="g")
            await out.start()
            await out.write(batch(*events))
            want = [
                b"".join(expected[i : i + per_datagram])
                for i in range(0, len(expected), per_datagram)
            ]
            assert await server.wait_for(len(want)) == want
            assert all(len(datagram) <= 1400 for datagram in want)
            await out.close()

    asyncio.run(main())


def test_udp_without_a_listener_never_raises() -> None:
    """Writes to a UDP port nobody listens on are fire-and-forget: nothing reaches the worker."""

    async def main() -> None:
        out = _output(f"udp://{LOOPBACK}:{free_port(socket.SOCK_DGRAM)}")
        await out.start()
        for _ in range(3):
            await out.write(batch(*_counter(range(5))))
        await out.close()
        assert out.stats()["dropped"] == 0

    asyncio.run(main())


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("a.b.c", "a.b.c"),
        ("with space", "with_space"),
        ("tab\there", "tab_here"),
        ("semi;colon=x", "semi_colon_x"),
        ("\u00fcber.m\u00e9tric", "_ber.m_tric"),
        ("..lead.trail..", "lead.trail"),
        ("...", "_"),
        ("keep-dash_and.dot", "keep-dash_and.dot"),
    ],
)
def test_graphite_path_sanitises(name: str, path: str) -> None:
    """Anything outside [A-Za-z0-9._-] becomes _, and empty path segments disappear."""
    assert graphite_path(name) == path


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (-17, "-17"),
        (2**62, str(2**62)),
        (0.1, "0.1"),
        (3.0, "3.0"),
        (1e16, "10000000000000000"),
        (-2.5e-9, "-0.0000000025"),
        (float("inf"), None),
        (False, None),
        (None, None),
    ],
)
def test_graphite_value_has_no_exponent(value: object, text: str | None) -> None:
    """Finite numbers are written in positional notation; anything else is refused."""
    assert graphite_value(value) == text
