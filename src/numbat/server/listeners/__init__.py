"""Listeners: the :class:`Listener` base; one module per kind (``tcp``, ``unix``, ``udp``,
``ws``), registered in :data:`numbat.config.LISTENERS` with the options each takes.

Every listener frames what arrives, turns it into events with
:func:`~numbat.server.framing.parse_lines` and hands them to its sink; bad input is
counted by reason (``rejected``) and logged, rate-limited, with the peer. A time sent in
seconds, microseconds or nanoseconds is converted to ms by the event model; the
listener counts it (``time_unit_converted``, tagged with the unit) and logs it once
per peer address. A listener knows its own options and :class:`Limits`, the stats it
counts into and the sink it feeds, nothing of the daemon that runs it.
"""

from __future__ import annotations

import dataclasses
import errno
import heapq
import ipaddress
import logging
import resource
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from numbat._importer import import_from_string
from numbat._ratelimit import RateLimitedLog
from numbat._redact import redact_url
from numbat.config import LISTENERS, ListenerConfig
from numbat.errors import NumbatError
from numbat.event import Event
from numbat.server.flow import Gate
from numbat.server.framing import parse_lines, split_message
from numbat.server.stats import Stats

T = TypeVar("T")
Sink = Callable[[list[Event]], None]
"""Where a listener hands the valid events of one read (never blocks, never raises)."""

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_TOLD = 10_000
"""Peer addresses remembered as told about their time unit; past that, the set starts
over (a peer may be logged again, memory stays bounded)."""

UNIT_NAMES = {"s": "seconds", "us": "microseconds", "ns": "nanoseconds"}

QUIET = 0.05
"""Seconds without a read after which a listener has read all its peers sent: the
event loop reads every ready socket each turn, so a socket silent this long while the
loop ran has nothing left in the kernel's buffer."""

EVICT_AFTER = 1.0
"""Seconds without a line (or message) that yields a valid event after which a
connection may be closed to let a new peer in (:func:`choose_victim`). One that sent an
event more recently is busy: when every connection is, a newcomer is refused instead,
so busy peers never push each other out in turn. Empty and rejected lines are no
activity: a peer sending bare newlines (or garbage) stays idle, evictable and subject
to ``idle_timeout``."""

EMFILE_EVICT = 64
"""Idle connections closed per failed ``accept()`` when the process is out of file
descriptors: with hundreds of idle peers queued in the kernel ahead of a sender, one
eviction per retry (0.1 s) would keep it waiting minutes; this many let the queue
drain at hundreds of connections a second."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one listener lets a peer cost: the caps it enforces.

    ``max_line_bytes``: one event line (bytes); ``max_connections``: open connections
    (stream and websocket listeners; at the cap an idle one is evicted for a newcomer,
    see :func:`choose_victim`), ``max_connections_per_peer`` of them from one peer
    address (so one host cannot hold them all); ``idle_timeout``: seconds of
    silence before a connection is closed (0: never); ``line_timeout``: seconds a line
    may take to arrive whole (0: no limit; a byte every few minutes does not renew it);
    ``receive_buffer_bytes``: the kernel's receive buffer (``SO_RCVBUF``) of a datagram
    socket.

    >>> Limits(max_line_bytes=1024).max_connections
    1024
    """

    max_line_bytes: int = 65_536
    max_connections: int = 1024
    max_connections_per_peer: int = 128
    idle_timeout: float = 300.0
    line_timeout: float = 60.0
    receive_buffer_bytes: int = 8 * 1024 * 1024


class Listener(ABC):
    """Accepts events on one address; ``start`` binds (raising OSError), ``stop`` closes.

    A plug-in subclasses it, implements ``start`` and ``stop``, calls :meth:`receive`
    with complete lines, may take a reload's settings live (:meth:`reconfigure`; else
    a reload that changes them drains and rebinds it), and may declare ``Options`` (a subclass of
    :class:`numbat.config.ListenerConfig`) for keys of its own.

    >>> class Null(Listener):
    ...     async def start(self): pass
    ...     async def stop(self): pass
    >>> from numbat.server.stats import Stats
    >>> lis = Null(ListenerConfig(uri="tcp://127.0.0.1:1"), Limits(), print, Stats("h", "x"))
    >>> lis.receive([b'{"name": "a", "time": 1}', b"oops"], peer=None)  # sink, then count
    [{'name': 'a', 'time': 1, 'value': 1}]
    1
    >>> lis.stats.get("rejected", listener="tcp://127.0.0.1:1", reason="bad_json")
    1
    """

    Options: ClassVar[type[ListenerConfig]] = ListenerConfig
    #: ``time.monotonic()`` of the last bytes read from any peer (0: none yet).
    last_read: float = 0.0
    #: Seconds between attempts while ``accept()`` fails (out of file descriptors).
    accept_retry: float = 0.1

    def __init__(
        self,
        options: ListenerConfig,
        limits: Limits,
        sink: Sink,
        stats: Stats,
        *,
        reuse_port: bool = False,
        gate: Gate | None = None,
    ) -> None:
        self.options = options
        # Stream listeners stop reading while the gate is closed (their daemon's
        # outputs are full): the kernel and the peers hold the data meanwhile.
        self.gate = gate if gate is not None else Gate()
        self.limits = limits
        # Several worker processes bind the same address; the kernel spreads the load.
        self.reuse_port = reuse_port
        self.label = options.uri
        self.max_line = limits.max_line_bytes
        self.sink = sink
        self.stats = stats
        self._allow: list[Network] = [ipaddress.ip_network(n, strict=False) for n in options.allow]
        self._warn = RateLimitedLog(log)
        self._received = stats.key("received", listener=self.label)
        self._converted = {
            unit: stats.key("time_unit_converted", listener=self.label, unit=unit)
            for unit in UNIT_NAMES
        }
        self._told: set[str] = set()  # peer addresses logged as sending another time unit
        # Connections evicted whose file descriptor is not released yet (a websocket
        # closing handshake): out of descriptors, one eviction at a time is enough.
        self.evicting: set[Any] = set()

    @abstractmethod
    async def start(self) -> None:
        """Bind and begin accepting; raise OSError if the address cannot be used."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop accepting and close every connection."""

    def reconfigure(self, options: ListenerConfig, limits: Limits) -> bool:
        """A reload changed this listener's settings, not its address or type: apply
        ``options`` and ``limits`` to it running, its open connections kept, and return
        True; False if it cannot (the daemon then drains it and binds a new one).

        The base class says False: a plug-in that reads its settings at use time
        overrides this to call :meth:`adopt` and return True.
        """
        return False

    def adopt(self, options: ListenerConfig, limits: Limits) -> None:
        """Take ``options`` and ``limits`` as this listener's own from now on: the line
        cap and the allow-list apply to the next line and the next peer."""
        self.options = options
        self.limits = limits
        self.max_line = limits.max_line_bytes
        self._allow = [ipaddress.ip_network(n, strict=False) for n in options.allow]

    async def stop_accepting(self) -> None:
        """Shutdown, first step: take no new peers, keep reading those already in, so
        what they sent before the stop is not lost (see :meth:`busy`)."""

    def busy(self) -> bool:
        """True while peers may still have unread bytes: a read within :data:`QUIET`."""
        return time.monotonic() - self.last_read < QUIET

    def admit(self, peer: Any) -> bool:
        """Check the allow-list; count and log a refused peer."""
        if not self._allow or not isinstance(peer, tuple):
            return True
        try:
            address = ipaddress.ip_address(peer[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # an IPv4 peer of a dual-stack [::] socket
        if any(address in net for net in self._allow):
            return True
        self.stats.count("refused", listener=self.label, reason="not_allowed")
        self._warn.warning("refused", "%s: refused %s: not in the allow list", self.label, peer[0])
        return False

    def make_room(self, reason: str, newcomer: str = "a waiting peer", count: int = 1) -> int:
        """Close up to ``count`` idle connections (:func:`choose_victims`) so ``newcomer``
        gets in, each counted as ``evicted`` with ``reason``; how many went (0: none
        may go)."""
        return 0

    def evicted(self, reason: str, victim: str, idle: float, newcomer: str) -> None:
        """Count and log (rate-limited) the eviction of ``victim``, idle ``idle`` seconds."""
        self.stats.count("evicted", listener=self.label, reason=reason)
        self._warn.warning(
            f"evict:{reason}",
            "%s: closed %s, no complete line for %.1f s, to let %s in (%s)",
            self.label,
            victim,
            idle,
            newcomer,
            reason,
        )

    def accept_failed(self, exc: OSError) -> None:
        """``accept()`` failed (retried after :attr:`accept_retry` seconds, the peer
        waiting in the kernel's queue meanwhile): counted as ``accept_failed`` by errno
        (``emfile``, ``enfile``, ...) and logged, rate-limited; when this process is out
        of file descriptors, up to :data:`EMFILE_EVICT` idle connections make room
        (``evicted``, ``emfile``)."""
        reason = errno.errorcode.get(exc.errno or 0, "oserror").lower()
        self.stats.count("accept_failed", listener=self.label, reason=reason)
        why = ""
        if exc.errno == errno.EMFILE:
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            why = f" (the process is at its limit of {limit} open files: raise ulimit -n)"
        elif exc.errno == errno.ENFILE:
            why = " (the system's open-file table is full: fs.file-max)"
        self._warn.warning(
            f"accept:{reason}",
            "%s: cannot accept a connection: %s%s; retrying every %.1f s",
            self.label,
            exc.strerror or exc,
            why,
            self.accept_retry,
        )
        if exc.errno == errno.EMFILE and not self.evicting:
            self.make_room("emfile", count=EMFILE_EVICT)

    def receive(self, lines: list[bytes], peer: Any, *, truncated: bool = False) -> int:
        """Parse complete lines from ``peer`` and pass the good events on; the number of
        valid events (0: only empty or rejected lines, which are no activity)."""
        return self.deliver(self.parse(lines, peer, truncated=truncated))

    def receive_message(self, data: bytes, peer: Any) -> int:
        """One message (a datagram, a websocket message): its lines, capped, then
        :meth:`receive`; each line over the cap is rejected alone. The number of valid
        events it held."""
        return self.deliver(self.parse_message(data, peer))

    def parse_message(self, data: bytes, peer: Any) -> list[Event]:
        """The valid events of one message; overlong and bad lines rejected (counted)."""
        lines, overlong = split_message(data, self.max_line)
        if overlong:
            self.reject("line_too_long", f"line over {self.max_line} bytes", b"", peer, overlong)
        return self.parse(lines, peer)

    def parse(self, lines: list[bytes], peer: Any, *, truncated: bool = False) -> list[Event]:
        """The valid events among ``lines``; each bad line is rejected (counted, logged).

        ``truncated``: the lines are what was left when the stream ended inside a line;
        a whole event there is kept, anything else is rejected as ``truncated``.
        """

        def reject(reason: str, message: str, sample: bytes) -> None:
            if truncated:
                reason, message = "truncated", f"stream ended inside a line ({message})"
            self.reject(reason, message, sample, peer)

        def converted(unit: str) -> None:
            self.time_converted(unit, peer)

        return parse_lines(lines, reject, converted=converted)

    def time_converted(self, unit: str, peer: Any) -> None:
        """Count an event whose time came in ``unit`` (``s``, ``us``, ``ns``) and was
        converted to ms; log it the first time a peer address does it."""
        self.stats.add(self._converted[unit], 1)
        address = peer_address(peer)
        if address in self._told:
            return
        if len(self._told) >= MAX_TOLD:
            self._told.clear()
        self._told.add(address)
        log.warning(
            "%s: %s sends times in %s; converting them to ms (see docs/events.md)",
            self.label,
            peer_name(peer),
            UNIT_NAMES[unit],
        )

    def deliver(self, events: list[Event]) -> int:
        """Hand ``events`` to the sink (counted as received); their number."""
        if events:
            self.stats.add(self._received, len(events))
            self.sink(events)
        return len(events)

    def reject(self, reason: str, message: str, sample: bytes, peer: Any, count: int = 1) -> None:
        self.stats.count("rejected", count, listener=self.label, reason=reason)
        self._warn.warning(
            f"reject:{reason}",
            "%s: rejected input from %s: %s (%r)",
            self.label,
            peer_name(peer),
            message,
            sample[:80],
        )


def choose_victim(connections: Iterable[tuple[T, str, float]], now: float) -> T | None:
    """The connection to close so that a new peer gets in, from ``(connection, peer
    address, time.monotonic() of its last complete line, or of its connect)``: of the
    address holding the most idle connections (no complete line for :data:`EVICT_AFTER`
    seconds), the one idle longest; None if none is idle.

    One address holding many idle connections is a slow-loris peer's mark, and it loses
    them first; a peer that sends now and then keeps its connection.

    >>> conns = [("a1", "a", 5.0), ("a2", "a", 8.0), ("b1", "b", 0.0), ("c1", "c", 9.5)]
    >>> choose_victim(conns, now=10.0)  # a holds 2 idle, b 1, c1 is busy
    'a1'
    >>> choose_victim([("c1", "c", 9.5)], now=10.0) is None
    True
    """
    victims = choose_victims(connections, now, 1)
    return victims[0] if victims else None


def choose_victims(
    connections: Iterable[tuple[T, str, float]],
    now: float,
    count: int,
    *,
    fair_to: str | None = None,
) -> list[T]:
    """Up to ``count`` connections to close, in the order :func:`choose_victim` gives
    (the addresses holding the most idle connections first, the longest idle first);
    the idle counts are those before any goes. With none idle and ``fair_to`` (at the
    connection cap: the newcomer's address), another address holding more than half of
    the connections, two or more, gives up its least recently active ones.

    >>> conns = [("a1", "a", 5.0), ("a2", "a", 8.0), ("b1", "b", 0.0), ("c1", "c", 9.5)]
    >>> choose_victims(conns, now=10.0, count=5)
    ['a1', 'a2', 'b1']
    """
    connections = list(connections)
    idle = [(conn, host, last) for conn, host, last in connections if last <= now - EVICT_AFTER]
    if not idle:
        return [] if fair_to is None else _hog(connections, count, fair_to)
    per_peer = Counter(host for _, host, _ in idle)

    def key(c: tuple[T, str, float]) -> tuple[int, float]:
        return (-per_peer[c[1]], c[2])

    if count == 1:  # the common case (at the cap): one pass, no heap
        return [min(idle, key=key)[0]]
    return [c[0] for c in heapq.nsmallest(count, idle, key=key)]


def _hog(connections: list[tuple[T, str, float]], count: int, newcomer: str) -> list[T]:
    """None idle: if one address holds more than half of the connections (a peer that
    reconnects as fast as it is evicted, so none of its connections ever ages), its
    least recently active ones go, so a ``newcomer`` from another address still gets
    in. Unix peers share the address "": nothing to be fair about among them.

    >>> _hog([("a1", "a", 9.0), ("a2", "a", 9.5), ("b1", "b", 9.9)], 1, newcomer="c")
    ['a1']
    >>> _hog([("a1", "a", 9.0), ("a2", "a", 9.5), ("b1", "b", 9.9)], 1, newcomer="a")
    []
    """
    held = Counter(host for _, host, _ in connections if host)
    if not held:
        return []
    host, most = held.most_common(1)[0]
    if most < 2 or most * 2 <= len(connections) or host == newcomer:
        return []
    theirs = [c for c in connections if c[1] == host]
    return [c[0] for c in heapq.nsmallest(count, theirs, key=lambda c: c[2])]


class ListenError(NumbatError):
    """A listener could not bind its address (in use, no permission, bad path); the
    message names the address, never a credential."""


async def start_listener(listener: Listener) -> None:
    """``listener.start()``; an OSError becomes a :class:`ListenError` naming its URI."""
    try:
        await listener.start()
    except OSError as exc:
        uri = redact_url(listener.options.uri)
        raise ListenError(f"cannot listen on {uri}: {exc.strerror or exc}") from None


def limits_of(
    options: ListenerConfig, max_line_bytes: int, udp_buffer_bytes: int | None = None
) -> Limits:
    """A listener's :class:`Limits` from its options, with the daemon-wide
    ``max_line_bytes`` (when the listener sets none) and UDP receive buffer (bytes;
    None: the :class:`Limits` default)."""
    limits = Limits(
        max_line_bytes=options.max_line_bytes or max_line_bytes,
        max_connections=options.max_connections,
        max_connections_per_peer=options.max_connections_per_peer,
        idle_timeout=options.idle_timeout,
        line_timeout=options.line_timeout,
    )
    if udp_buffer_bytes is None:
        return limits
    return dataclasses.replace(limits, receive_buffer_bytes=udp_buffer_bytes)


def listener_class(kind: str) -> type[Listener]:
    """The class for a listener ``type``: a registered scheme or ``"module:Class"``.

    >>> listener_class("tcp").__name__
    'TCPListener'
    """
    entry = LISTENERS.get(kind)
    cls = import_from_string(entry.path if entry is not None else kind)
    if not (isinstance(cls, type) and issubclass(cls, Listener)):
        raise TypeError(f"{kind!r} is not a numbat.server.listeners.Listener subclass")
    return cls


def peer_name(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "local")


def peer_address(peer: Any) -> str:
    """The peer's address without its port: ``("10.0.0.1", 5000)`` or ``"10.0.0.1:5000"``
    (as :func:`peer_name` writes it) both give ``"10.0.0.1"``; a unix peer ``"local"``.

    >>> peer_address(("::1", 5000, 0, 0)), peer_address("::1:5000"), peer_address("")
    ('::1', '::1', 'local')
    """
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    name = str(peer or "local")
    return name.rpartition(":")[0] or name
