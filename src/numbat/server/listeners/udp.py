"""``udp://host:port``: one JSON object per datagram, or several separated by newlines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from numbat.config import ListenerConfig
from numbat.event import Event
from numbat.server.listeners import Limits, Listener

log = logging.getLogger(__name__)


class _Datagrams(asyncio.DatagramProtocol):
    """Gathers the datagrams of one loop turn and parses them together.

    Per datagram only a list append happens here; counting, fan-out and the
    allow-list cache are paid once per turn, which is what keeps up with a flood.
    """

    def __init__(self, listener: UDPListener) -> None:
        self.listener = listener
        self._pending: list[tuple[bytes, Any]] = []
        self._loop = asyncio.get_running_loop()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self._pending:
            self._loop.call_soon(self._process)
        self._pending.append((data, addr))

    def _process(self) -> None:
        pending, self._pending = self._pending, []
        listener = self.listener
        listener.last_read = time.monotonic()
        events: list[Event] = []
        for data, addr in pending:
            if listener.has_allow_list and not listener.admit(addr):
                continue
            events += listener.parse_message(data, addr)
        listener.deliver(events)

    def error_received(self, exc: Exception) -> None:
        self.listener.stats.count("socket_errors", listener=self.listener.label)


class UDPListener(Listener):
    """UDP: no connections, so no connection limit or idle timeout; the allow list applies.

    UDP cannot push back: a datagram that finds the socket's receive buffer full is
    dropped by the kernel. Those drops are counted too, as ``kernel_drops``: the
    kernel's own count for the socket, read from ``/proc/net/udp`` (``udp6``) at every
    stats report (Linux; elsewhere nothing is reported).
    """

    _transport: asyncio.DatagramTransport | None = None

    @property
    def has_allow_list(self) -> bool:
        return bool(self.options.allow)

    async def start(self) -> None:
        parts = urlsplit(self.options.uri)
        family = socket.AF_INET6 if ":" in (parts.hostname or "") else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            _grow_buffer(sock, self.limits.receive_buffer_bytes)
            if self.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((parts.hostname, parts.port))
        except OSError:
            sock.close()
            raise
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Datagrams(self), sock=sock
        )
        self._transport = transport
        table = Path("/proc/self/net", "udp6" if family == socket.AF_INET6 else "udp")
        inode = os.fstat(sock.fileno()).st_ino
        self.stats.follow("kernel_drops", lambda: kernel_drops(table, inode), listener=self.label)

    def reconfigure(self, options: ListenerConfig, limits: Limits) -> bool:
        """Live: the allow-list and line cap apply to the next datagram; a new receive
        buffer size is set on the open socket (the datagrams it holds stay)."""
        grow = limits.receive_buffer_bytes != self.limits.receive_buffer_bytes
        self.adopt(options, limits)
        if grow and self._transport is not None:
            sock = cast(socket.socket, self._transport.get_extra_info("socket"))
            try:
                _grow_buffer(sock, limits.receive_buffer_bytes)
            except OSError as exc:
                log.warning("%s: cannot set the receive buffer: %s", self.label, exc)
        return True

    async def stop(self) -> None:
        self.stats.forget(listener=self.label)  # its last drops counted, while it is open
        if self._transport is not None:
            self._transport.close()
            self._transport = None


def _grow_buffer(sock: socket.socket, size: int) -> None:
    """A large receive buffer absorbs bursts; root may exceed net.core.rmem_max."""
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    if force is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, force, size)
            return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def kernel_drops(table: Path, inode: int) -> int | None:
    """The datagrams the kernel dropped for the socket ``inode`` since it was opened (its
    receive buffer was full): the ``drops`` column of ``table`` (``/proc/net/udp`` or
    ``udp6``); None where there is no such table or socket."""
    try:
        text = table.read_text()
    except OSError:
        return None
    wanted = str(inode)
    for row in text.splitlines()[1:]:
        if f" {wanted} " not in row:
            continue  # a busy host has thousands of UDP sockets: split only likely rows
        fields = row.split()
        # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
        if len(fields) > 12 and fields[9] == wanted:
            return int(fields[12])
    return None
