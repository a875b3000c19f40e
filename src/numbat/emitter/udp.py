"""``udp://host:port``: one JSON object per datagram."""

from __future__ import annotations

import socket

from numbat.emitter.transport import InetTransport


class UDPTransport(InetTransport):
    """One event per datagram, ``JSON + "\\n"`` as the original numbat-emitter sends it.

    A send refused by the host (nothing listening) is retried after a reconnect, so a
    collector restart loses at most the datagram that revealed it.

    >>> from urllib.parse import urlsplit
    >>> UDPTransport("udp://[::1]:3333", urlsplit("udp://[::1]:3333")).family == socket.AF_INET6
    True
    """

    kind = socket.SOCK_DGRAM
