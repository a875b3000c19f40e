"""``udp://host:port``: one JSON object per datagram, or several separated by newlines."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any
from urllib.parse import urlsplit

from numbat.collector.listeners import Listener, peer_name


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, listener: UDPListener) -> None:
        self.listener = listener

    def datagram_received(self, data: bytes, addr: Any) -> None:
        listener = self.listener
        if listener.has_allow_list and not listener.admit(addr):
            return
        lines = data.split(b"\n")
        limit = listener.max_line
        if len(data) > limit:
            # The cap is per line: good lines beside an overlong one are kept.
            kept = [line for line in lines if len(line) <= limit]
            if len(kept) != len(lines):
                listener.reject(
                    "line_too_long",
                    f"line over {limit} bytes",
                    b"",
                    peer_name(addr),
                    len(lines) - len(kept),
                )
            lines = kept
        listener.receive(lines, peer_name(addr))

    def error_received(self, exc: Exception) -> None:
        self.listener.stats.count("socket_errors", listener=self.listener.label)


class UDPListener(Listener):
    """UDP: no connections, so no connection limit or idle timeout; the allow list applies."""

    _transport: asyncio.DatagramTransport | None = None

    @property
    def has_allow_list(self) -> bool:
        return bool(self.config.allow)

    async def start(self) -> None:
        parts = urlsplit(self.config.uri)
        family = socket.AF_INET6 if ":" in (parts.hostname or "") else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            _grow_buffer(sock, self._buffer_bytes)
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

    @property
    def _buffer_bytes(self) -> int:
        return self.collector_config.udp_buffer_bytes

    async def stop(self) -> None:
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
