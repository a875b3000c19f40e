"""Loopback peers for output tests: a TCP line server that can go away and come back,
and a UDP socket that keeps each datagram whole. Both live on the test's event loop
(tests drive outputs inside ``asyncio.run``) and let tests await what arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import cast

from numbat.collector.outputs import Batch
from numbat.event import Event

LOOPBACK = "127.0.0.1"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing listens on right now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def batch(*events: Event) -> Batch:
    return Batch(list(events))


class _Changes:
    """Lets coroutines wait for a predicate over state that callbacks change."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


class _LineProtocol(asyncio.Protocol):
    def __init__(self, server: LineServer) -> None:
        self.server = server
        self.partial = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections += 1
        self.server.transports.add(self.transport)
        self.server.changes.notify()

    def data_received(self, data: bytes) -> None:
        *lines, self.partial = (self.partial + data).split(b"\n")
        self.server.lines += lines
        self.server.changes.notify()

    def connection_lost(self, exc: Exception | None) -> None:
        assert self.transport is not None
        self.server.transports.discard(self.transport)
        self.server.changes.notify()


class LineServer:
    """A loopback TCP server that records every complete line it reads, in order.

    ``stop()`` closes the listener and resets every connection (the peer "goes away");
    ``start()`` listens again on the same port.
    """

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.lines: list[bytes] = []
        self.connections = 0
        self.transports: set[asyncio.Transport] = set()
        self.changes = _Changes()
        self._server: asyncio.Server | None = None

    @property
    def uri(self) -> str:
        return f"tcp://{LOOPBACK}:{self.port}"

    async def start(self) -> LineServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _LineProtocol(self), LOOPBACK, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for transport in list(self.transports):
            transport.abort()
        await self.changes.until(lambda: not self.transports, 5.0, "connections to close")

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[bytes]:
        await self.changes.until(lambda: len(self.lines) >= count, timeout, f"{count} lines")
        return list(self.lines)

    async def until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        await self.changes.until(predicate, timeout, "the server's state")


@contextlib.asynccontextmanager
async def line_server(port: int = 0) -> AsyncIterator[LineServer]:
    server = await LineServer(port).start()
    try:
        yield server
    finally:
        await server.stop()


class DatagramServer(asyncio.DatagramProtocol):
    """A loopback UDP socket that keeps every datagram whole, in arrival order."""

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []
        self.changes = _Changes()
        self.port = 0
        self.closed = asyncio.Event()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.datagrams.append(data)
        self.changes.notify()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[bytes]:
        what = f"{count} datagrams"
        await self.changes.until(lambda: len(self.datagrams) >= count, timeout, what)
        return list(self.datagrams)


@contextlib.asynccontextmanager
async def datagram_server() -> AsyncIterator[DatagramServer]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        DatagramServer, local_addr=(LOOPBACK, 0)
    )
    server = protocol
    server.port = transport.get_extra_info("sockname")[1]
    try:
        yield server
    finally:
        transport.close()
        await server.closed.wait()  # the socket really is closed: no ResourceWarning


# The real servers of the storage tests, for the InfluxDB output's tests.
from tests.store.conftest import (  # noqa: E402, F401
    influx_db,
    influxd,
    secure_influxd,
    victoria_metrics,
)
