"""``type = "graphite"``: the plaintext protocol, ``path value unix_seconds`` per line.

Over TCP (``tcp://host:2003``) one persistent connection carries the lines, re-established
with the original backoff formula; while carbon is away up to ``max_backlog`` lines wait
(oldest dropped first, counted). Over UDP (``udp://host:2003``) lines are packed into
datagrams of at most :data:`MAX_DATAGRAM` bytes and sent fire-and-forget, as the original
collector did.

Metric paths: ``prefix.`` + the event name, with every character graphite cannot store
in a path (anything but ``A-Z a-z 0-9 . _ -``) replaced by ``_`` and empty path segments
(``a..b``, a leading or trailing dot) removed, since carbon would make them empty
directory names. Values are written in positional notation (never ``1e+20``); events
whose value is not a finite number are skipped and counted as ``invalid``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Final
from urllib.parse import urlsplit

from numbat._backoff import Backoff
from numbat._backoff import reconnect as default_backoff
from numbat._ratelimit import RateLimitedLog
from numbat.collector.outputs import Batch, Output
from numbat.collector.outputs._sender import (
    FLUSH_TIMEOUT,
    FlowControl,
    LineSender,
    close_transport,
    host_port,
)
from numbat.config import GraphiteOutputConfig
from numbat.event import Event
from numbat.server import ProcessContext

log = logging.getLogger(__name__)

# Fits one Ethernet frame with IP and UDP headers, so no datagram is ever fragmented.
MAX_DATAGRAM: Final = 1400

_NOT_PATH = re.compile(r"[^A-Za-z0-9._-]")


@functools.lru_cache(maxsize=65_536)
def graphite_path(name: str) -> str:
    """A metric path graphite can store: bad characters -> ``_``, no empty segments.

    >>> graphite_path("web.GET /users.time ms")
    'web.GET__users.time_ms'
    >>> graphite_path(".a..b.é")
    'a.b._'
    """
    path = _NOT_PATH.sub("_", name)
    if path.startswith(".") or path.endswith(".") or ".." in path:
        path = ".".join(part for part in path.split(".") if part)
    return path or "_"


def graphite_value(value: object) -> str | None:
    """A number as graphite reads it, in positional notation; None if not a finite number.

    >>> graphite_value(3), graphite_value(0.25), graphite_value(1e20), graphite_value(1.5e-7)
    ('3', '0.25', '100000000000000000000', '0.00000015')
    >>> graphite_value(float("nan")), graphite_value(True), graphite_value("3")
    (None, None, None)
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(int(value))
    if not isinstance(value, float) or value - value != 0:  # not a number, NaN or infinite
        return None
    text = repr(value)
    if "e" in text:
        # The shortest digits that round-trip, written out without an exponent.
        text = format(Decimal(text), "f")
    return text


def unix_seconds(time_ms: object, now: float) -> int:
    """Event time (ms since the epoch) -> whole seconds; ``now`` when absent or odd."""
    if isinstance(time_ms, bool) or not isinstance(time_ms, int | float):
        return int(now)
    if time_ms < 0 or time_ms - time_ms != 0:  # negative, NaN or infinite
        return int(now)
    return int(time_ms // 1000)


def pack(lines: Iterable[str], limit: int = MAX_DATAGRAM) -> list[bytes]:
    """Greedily pack whole lines (ASCII) into datagrams of at most ``limit`` bytes.

    A line longer than ``limit`` travels alone rather than being cut.

    >>> pack(["a 1 2\\n"] * 3, limit=12)
    [b'a 1 2\\na 1 2\\n', b'a 1 2\\n']
    """
    datagrams: list[bytes] = []
    current: list[str] = []
    size = 0
    for line in lines:
        if current and size + len(line) > limit:
            datagrams.append("".join(current).encode("ascii"))
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        datagrams.append("".join(current).encode("ascii"))
    return datagrams


class _Datagrams(FlowControl, asyncio.DatagramProtocol):
    """A connected UDP socket's protocol: flow control and (logged) ICMP errors."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label
        self.errors = 0
        self._warn = RateLimitedLog(log)

    def error_received(self, exc: Exception) -> None:
        # Typically ECONNREFUSED from an ICMP "port unreachable": carbon is not there.
        self.errors += 1
        self._warn.warning("udp", "output %s: send failed: %s", self.label, exc)


class UDPSender:
    """Sends lines packed into datagrams to one address; never raises for a missing peer.

    Example::

        sender = UDPSender("127.0.0.1", 2003, label="graphite")
        await sender.send(["a.b 1 1700000000\\n"])
        await sender.close()
    """

    def __init__(self, host: str, port: int, *, label: str) -> None:
        self.host = host
        self.port = port
        self.label = label
        self.dropped = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _Datagrams | None = None
        self._warn = RateLimitedLog(log)

    async def open(self) -> bool:
        """Create the socket (resolving the host); False, logged, if that fails."""
        if self._transport is not None:
            return True
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self.label), remote_addr=(self.host, self.port)
            )
        except OSError as exc:
            self._warn.warning(
                "open", "output %s: cannot reach %s:%s: %s", self.label, self.host, self.port, exc
            )
            return False
        self._transport, self._protocol = transport, protocol
        return True

    async def send(self, lines: list[str]) -> None:
        if not await self.open():
            # UDP keeps nothing back: these lines are lost; the next batch tries again.
            self.dropped += len(lines)
            return
        assert self._transport is not None and self._protocol is not None
        for datagram in pack(lines):
            # The transport buffers what the socket will not take: wait rather than grow it.
            await self._protocol.writable.wait()
            if self._transport.is_closing():
                return
            self._transport.sendto(datagram)

    async def close(self) -> None:
        transport, protocol = self._transport, self._protocol
        if transport is None or protocol is None:
            return
        await close_transport(transport, protocol.closed)

    def stats(self) -> dict[str, float]:
        errors = self._protocol.errors if self._protocol is not None else 0
        return {"backlog": 0, "dropped": self.dropped, "send_errors": errors}


class GraphiteOutput(Output):
    """Sends every event with a numeric value to graphite (carbon) as a plaintext line.

    Config::

        [[collector.outputs]]
        type = "graphite"
        uri = "tcp://carbon.internal:2003"   # or udp://carbon.internal:2003
        prefix = "numbat"                    # paths become numbat.<event name>
        max_backlog = 100000                 # lines kept while carbon is unreachable (tcp)

    An event ``{"name": "web.requests", "value": 3, "time": 1700000000123}`` becomes
    ``numbat.web.requests 3 1700000000``. ``stats()`` reports ``backlog`` (lines
    waiting), ``dropped`` (lines lost to a full backlog or shutdown, since start) and
    ``invalid`` (events skipped because their value is not a finite number).
    """

    Options = GraphiteOutputConfig
    options: GraphiteOutputConfig

    def __init__(
        self,
        options: GraphiteOutputConfig,
        *,
        backoff: Backoff = default_backoff,
        flush_timeout: float = FLUSH_TIMEOUT,
        context: ProcessContext | None = None,
    ) -> None:
        super().__init__(options, context=context)
        host, port = host_port(options.uri)
        self.prefix = graphite_path(options.prefix) + "." if options.prefix else ""
        self.flush_timeout = flush_timeout
        self.invalid = 0
        self.tcp: LineSender | None = None
        self.udp: UDPSender | None = None
        if urlsplit(options.uri).scheme == "udp":
            self.udp = UDPSender(host, port, label=options.label)
        else:
            self.tcp = LineSender(
                host, port, max_backlog=options.max_backlog, label=options.label, backoff=backoff
            )

    async def start(self) -> None:
        if self.tcp is not None:
            self.tcp.start()
        else:
            assert self.udp is not None
            await self.udp.open()  # a failure is logged and retried with the first write

    def lines(self, events: list[Event]) -> list[str]:
        """One ``path value seconds\\n`` line per event with a finite numeric value."""
        now = time.time()
        prefix = self.prefix
        out: list[str] = []
        for event in events:
            value = graphite_value(event.get("value"))
            name = event.get("name")
            if value is None or not isinstance(name, str):
                self.invalid += 1
                continue
            seconds = unix_seconds(event.get("time"), now)
            out.append(f"{prefix}{graphite_path(name)} {value} {seconds}\n")
        return out

    async def write(self, batch: Batch) -> None:
        lines = self.lines(batch.events)
        if not lines:
            return
        if self.tcp is not None:
            await self.tcp.send("".join(lines).encode("ascii"), len(lines))
        else:
            assert self.udp is not None
            await self.udp.send(lines)

    async def flush(self) -> None:
        if self.tcp is not None:
            await self.tcp.flush(self.flush_timeout)

    async def finish(self, timeout: float) -> int:
        """As :meth:`Output.finish`; what is left is counted in lines (an event may
        make several)."""
        if self.tcp is None:
            return 0
        await self.tcp.flush(min(self.flush_timeout, timeout))
        self.flush_timeout = 0.0  # close() drops the rest at once: counted by the report
        return self.tcp.queued

    async def close(self) -> None:
        if self.tcp is not None:
            await self.tcp.close(self.flush_timeout)
        if self.udp is not None:
            await self.udp.close()

    def adopt(self, old: Output) -> None:
        if isinstance(old, GraphiteOutput) and old.tcp is not None and self.tcp is not None:
            self.tcp.adopt(old.tcp)

    def stats(self) -> dict[str, float]:
        sender = self.tcp or self.udp
        assert sender is not None
        return {**sender.stats(), "invalid": self.invalid}

    def lost(self) -> dict[tuple[str, str], int]:
        """Lines lost: the tcp backlog was full (carbon down or slow), or a datagram could
        not be sent (udp)."""
        if self.tcp is not None:
            return {("backlog_full", ""): self.tcp.dropped}
        assert self.udp is not None
        return {("send_error", ""): self.udp.dropped}
