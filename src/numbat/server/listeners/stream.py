"""Stream listeners (tcp, unix): NDJSON, any number of events per connection.

:class:`StreamProtocol` frames one connection's bytes into lines and tracks its
idleness; :class:`StreamListener` caps connections (at the cap a newcomer evicts an
idle connection), closes idle ones and accepts through an
:class:`~numbat.server.listeners.accept.Acceptor`. A stream kind (``tcp.py``,
``unix.py``) only says how to bind its listening sockets (``_bind``), as pystatsd's
``StreamClientBase`` serves its tcp and unix clients.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from abc import abstractmethod
from collections import Counter
from typing import Any, cast

from numbat.config import ListenerConfig
from numbat.server.framing import LineFramer
from numbat.server.listeners import Limits, Listener, choose_victims, peer_name
from numbat.server.listeners.accept import Acceptor

REQUEST_LINE = re.compile(rb"[A-Z][A-Z_-]{0,23} [\x21-\x7e]+ HTTP/\d(?:\.\d)?\r?")
"""An HTTP request line (RFC 9112 section 3: method SP request-target SP HTTP-version):
what a browser's request, cross-site or not, always starts with."""


def looks_like_http(line: bytes) -> bool:
    """True if ``line`` (a connection's first, without its newline) is an HTTP request
    line: a web page's request (a cross-site POST reaches any port), whose body must
    not become events. Neither a JSON object nor an emitter's junk is one.

    >>> looks_like_http(b"POST / HTTP/1.1"), looks_like_http(b"PROPFIND /dav HTTP/1.1\\r")
    (True, True)
    >>> looks_like_http(b'{"name": "GET / HTTP/1.1"}'), looks_like_http(b"OPTIONS ")
    (False, False)
    """
    return REQUEST_LINE.fullmatch(line) is not None


class StreamProtocol(asyncio.Protocol):
    """One connection: frames lines, reports overlong and truncated ones, tracks idleness."""

    def __init__(self, listener: StreamListener) -> None:
        self.listener = listener
        self.framer = LineFramer(listener.max_line)
        self.peer = "?"
        self.host = ""  # the peer's address without its port ("" for a unix socket)
        # Of the last read that yielded a valid event (or of the connect): the idle
        # deadline counts from it.
        self.last_read = time.monotonic()
        self.last_line = self.last_read  # the same, for eviction (choose_victim)
        # When the line now buffered began to arrive (None: nothing buffered): a line
        # must complete within line_timeout, however slowly its bytes trickle in.
        self.line_started: float | None = None
        self.transport: asyncio.Transport | None = None
        self.first_line = True  # none complete yet: the next is checked for HTTP

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: trust the protocol.
        transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer_name(peer)
        self.host = str(peer[0]) if isinstance(peer, tuple) else ""
        if not self.listener.admit(peer) or not self.listener.register(self):
            transport.abort()
            return
        self.transport = transport
        self._loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        now = self.listener.last_read = time.monotonic()
        framer = self.framer
        overlong = framer.overlong
        lines = framer.feed(data)
        if lines and self.first_line:
            self.first_line = False
            if looks_like_http(lines[0]):
                self._refuse_http(lines[0])
                return
        if framer.overlong != overlong:
            self._overlong(framer.overlong - overlong)
        # Only a valid event is activity: bare newlines or rejected lines sent every
        # second renew neither the idle deadline nor the eviction age (a slow loris).
        if lines and self.listener.receive(lines, self.peer):
            self.last_read = self.last_line = now
        if not framer.in_line:
            self.line_started = None
        elif lines or self.line_started is None:
            self.line_started = now
        # uvloop reads a busy socket up to 32 times per loop turn: pausing after each
        # read lets the fan-out hand batches over and the outputs write in between.
        if self.transport is not None:
            self.transport.pause_reading()
            self._loop.call_soon(self._resume)

    def reading(self) -> bool:
        """Open and reading (not paused)."""
        return self.transport is not None and self.transport.is_reading()

    def _resume(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.listener.gate.is_open:
            self.transport.resume_reading()
        else:  # an output is full: read again once it has room (backpressure)
            self.listener.gate.when_open(self._unblocked)

    def _unblocked(self) -> None:
        # The wait was ours, not the peer's: its idle and line deadlines start again.
        self.last_read = self.last_line = time.monotonic()
        if self.line_started is not None:
            self.line_started = self.last_read
        self._resume()

    def eof_received(self) -> bool:
        self._finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        # A reset (RST) mid-stream lands here too: keep what was complete, carry on.
        self._finish()
        if self.transport is not None:
            self.listener.unregister(self)
            self.transport = None

    def _finish(self) -> None:
        rest = self.framer.finish()
        if rest.strip():
            self.listener.receive([rest], self.peer, truncated=True)

    def _refuse_http(self, first: bytes) -> None:
        """An HTTP request: closed at once (RST), nothing of it kept, counted and logged."""
        self.framer.finish()  # its body is not read as events, nor as a truncated line
        self.listener.refused_http(self.peer, first)
        if self.transport is not None:
            self.listener.unregister(self)
            transport, self.transport = self.transport, None
            transport.abort()

    def _overlong(self, count: int) -> None:
        message = f"line over {self.listener.max_line} bytes"
        self.listener.reject("line_too_long", message, b"", self.peer, count)


class StreamListener(Listener):
    """Shared by TCP and unix sockets: connection limit and idle timeout."""

    server: Acceptor | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: set[StreamProtocol] = set()
        self._per_peer: Counter[str] = Counter()
        self._sweeper: asyncio.Task[None] | None = None

    def register(self, proto: StreamProtocol) -> bool:
        if proto.host and self._per_peer[proto.host] >= self.limits.max_connections_per_peer:
            self.stats.count("refused", listener=self.label, reason="too_many_from_peer")
            self._warn.warning(
                "peer",
                "%s: refused %s: %d connections from it",
                self.label,
                proto.peer,
                self._per_peer[proto.host],
            )
            return False
        full = len(self.connections) >= self.limits.max_connections
        if full and not self.make_room("too_many_connections", proto.peer):
            self.stats.count("refused", listener=self.label, reason="too_many_connections")
            self._warn.warning(
                "full",
                "%s: refused %s: %d connections open",
                self.label,
                proto.peer,
                len(self.connections),
            )
            return False
        self.connections.add(proto)
        self._per_peer[proto.host] += 1
        return True

    def refused_http(self, peer: str, first: bytes) -> None:
        """Count (``refused``, ``http_request``) and log, rate-limited, a connection
        closed for opening with an HTTP request; only the method is logged (the
        request line may carry credentials)."""
        self.stats.count("refused", listener=self.label, reason="http_request")
        self._warn.warning(
            "http",
            "%s: closed %s: it sent an HTTP request (%r ...), not NDJSON events",
            self.label,
            peer,
            first.split(b" ", 1)[0][:16],
        )

    def unregister(self, proto: StreamProtocol) -> None:
        self.evicting.discard(proto)
        if proto in self.connections:
            self.connections.discard(proto)
            self._per_peer[proto.host] -= 1
            if not self._per_peer[proto.host]:
                del self._per_peer[proto.host]

    def make_room(self, reason: str, newcomer: str = "a waiting peer", count: int = 1) -> int:
        if not self.gate.is_open:  # nobody reads while blocked: none is idle
            return 0
        now = time.monotonic()
        # One not reading (paused: the outputs are behind) may hold unread lines: busy.
        candidates = [(p, p.host, p.last_line) for p in self.connections if p.reading()]
        gone = 0
        # At the cap a hog gives way too, to a newcomer from another address.
        fair_to = newcomer.rpartition(":")[0] if reason == "too_many_connections" else None
        for victim in choose_victims(candidates, now, count, fair_to=fair_to):
            if victim.transport is None:
                continue
            self.unregister(victim)  # its slot is the newcomer's from now on
            self.evicting.add(victim)  # until its descriptor is released (connection_lost)
            self.evicted(reason, victim.peer, now - victim.last_line, newcomer)
            victim.transport.close()
            gone += 1
        return gone

    def protocol(self) -> StreamProtocol:
        return StreamProtocol(self)

    async def start(self) -> None:
        self.server = Acceptor(
            await self._bind(), self.protocol, self.accept_failed, self.accept_retry
        )
        self.server.listen()
        if self.limits.idle_timeout or self.limits.line_timeout:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def reconfigure(self, options: ListenerConfig, limits: Limits) -> bool:
        """Live: caps and timeouts apply from now on, to open connections too (their
        line cap included); the sweeper restarts at the new timeouts' pace."""
        self.adopt(options, limits)
        for proto in self.connections:
            proto.framer.max_line = limits.max_line_bytes
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self.server is not None and (limits.idle_timeout or limits.line_timeout):
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return True

    @abstractmethod
    async def _bind(self) -> list[socket.socket]:
        """The listening sockets (non-blocking) whose connections :meth:`protocol` serves."""

    async def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()  # the listening socket only: open connections go on

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.stop_accepting()
        if self.server is not None:
            await self.server.wait_closed()  # connections accepted before: cut them too
        cut = [p for p in self.connections if p.transport is not None]
        if cut:
            # Peers still connected when the drain ends (an emitter keeps its connection
            # open): what they send from now on is not read. Counted, not judged.
            self.stats.count("closed_at_shutdown", len(cut), listener=self.label)
        for proto in cut:
            assert proto.transport is not None
            proto.transport.close()

    async def _sweep(self) -> None:
        """Close connections silent for longer than idle_timeout, and those whose line
        has not completed within line_timeout (a slow-loris peer holding a slot)."""
        timeouts = [t for t in (self.limits.idle_timeout, self.limits.line_timeout) if t]
        while True:
            await asyncio.sleep(min(*(t / 4 for t in timeouts), 5.0))
            if not self.gate.is_open:  # nobody reads while blocked: none is idle
                continue
            now = time.monotonic()
            for proto in list(self.connections):
                if self._expired(proto, now) and proto.transport is not None:
                    proto.transport.close()

    def _expired(self, proto: StreamProtocol, now: float) -> bool:
        idle, line = self.limits.idle_timeout, self.limits.line_timeout
        if idle and proto.last_read < now - idle:
            self.stats.count("closed_idle", listener=self.label)
            self._warn.warning(
                "idle",
                "%s: closed %s: no event for %ss (idle_timeout)",
                self.label,
                proto.peer,
                idle,
            )
            return True
        if line and proto.line_started is not None and proto.line_started < now - line:
            self.stats.count("closed_slow", listener=self.label)
            self._warn.warning(
                "slow",
                "%s: closed %s: a line took over %ss to arrive (line_timeout)",
                self.label,
                proto.peer,
                line,
            )
            proto.framer.finish()  # counted as closed_slow: not again as truncated
            return True
        return False
