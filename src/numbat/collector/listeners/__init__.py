"""Collector listeners: the :class:`Listener` ABC and a registry of scheme -> class path.

Every listener frames what arrives, turns it into events with
:func:`~numbat.collector.framing.parse_lines` and hands them to the fan-out; bad input
is counted by reason (``rejected``) and logged, rate-limited, with the peer.
"""

from __future__ import annotations

import importlib
import ipaddress
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from numbat._ratelimit import RateLimitedLog
from numbat.collector.framing import parse_lines
from numbat.collector.stats import Stats
from numbat.config import CollectorConfig, ListenerConfig
from numbat.event import Event

LISTENERS: dict[str, str] = {
    "tcp": "numbat.collector.listeners.tcp:TCPListener",
    "unix": "numbat.collector.listeners.unix:UnixListener",
    "udp": "numbat.collector.listeners.udp:UDPListener",
    "ws": "numbat.collector.listeners.ws:WebSocketListener",
}

Sink = Callable[[list[Event]], None]
log = logging.getLogger("numbat.collector")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Listener(ABC):
    """Accepts events on one address; ``start`` binds (raising OSError), ``stop`` closes.

    >>> sorted(LISTENERS)
    ['tcp', 'udp', 'unix', 'ws']
    """

    def __init__(
        self,
        config: ListenerConfig,
        collector: CollectorConfig,
        sink: Sink,
        stats: Stats,
        *,
        reuse_port: bool = False,
    ) -> None:
        self.config = config
        # Several worker processes bind the same address; the kernel spreads the load.
        self.reuse_port = reuse_port
        self.collector_config = collector
        self.label = config.uri
        self.max_line = config.max_line_bytes or collector.max_line_bytes
        self.sink = sink
        self.stats = stats
        self._allow: list[Network] = [ipaddress.ip_network(n, strict=False) for n in config.allow]
        self._warn = RateLimitedLog(log)
        self._received = stats.key("received", listener=self.label)

    @abstractmethod
    async def start(self) -> None:
        """Bind and begin accepting; raise OSError if the address cannot be used."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop accepting and close every connection."""

    def admit(self, peer: Any) -> bool:
        """Check the allow-list; count and log a refused peer."""
        if not self._allow or not isinstance(peer, tuple):
            return True
        try:
            address = ipaddress.ip_address(peer[0])
        except ValueError:
            return False
        if any(address in net for net in self._allow):
            return True
        self.stats.count("refused", listener=self.label, reason="not_allowed")
        self._warn.warning("refused", "%s: refused %s: not in the allow list", self.label, peer[0])
        return False

    def receive(self, lines: list[bytes], peer: Any, *, truncated: bool = False) -> None:
        """Parse complete lines from ``peer`` and pass the good events on."""
        self.deliver(self.parse(lines, peer, truncated=truncated))

    def parse(self, lines: list[bytes], peer: Any, *, truncated: bool = False) -> list[Event]:
        """The valid events among ``lines``; each bad line is rejected (counted, logged).

        ``truncated``: the lines are what was left when the stream ended inside a line;
        a whole event there is kept, anything else is rejected as ``truncated``.
        """

        def reject(reason: str, message: str, sample: bytes) -> None:
            if truncated:
                reason, message = "truncated", f"stream ended inside a line ({message})"
            self.reject(reason, message, sample, peer)

        return parse_lines(lines, reject)

    def deliver(self, events: list[Event]) -> None:
        if events:
            self.stats.add(self._received, len(events))
            self.sink(events)

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


def listener_class(scheme: str) -> type[Listener]:
    module, _, name = LISTENERS[scheme].partition(":")
    cls: type[Listener] = getattr(importlib.import_module(module), name)
    return cls


def peer_name(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "local")
