"""``tcp://host:port``: newline-delimited JSON over one TCP connection."""

from __future__ import annotations

import socket

from numbat.emitter.transport import InetTransport


class TCPTransport(InetTransport):
    """NDJSON over TCP, byte for byte as the original numbat-emitter writes it.

    >>> from urllib.parse import urlsplit
    >>> TCPTransport("tcp://127.0.0.1:3333", urlsplit("tcp://127.0.0.1:3333")).address()
    ('127.0.0.1', 3333)
    """

    kind = socket.SOCK_STREAM
