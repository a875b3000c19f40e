"""``tcp://host:port``: newline-delimited JSON over TCP, the original collector's default."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from numbat.server.listeners.accept import bind_tcp
from numbat.server.listeners.stream import StreamListener


class TCPListener(StreamListener):
    """NDJSON over TCP, as the original collector's default listener."""

    async def _bind(self) -> list[socket.socket]:
        parts = urlsplit(self.options.uri)
        return await bind_tcp(parts.hostname, int(parts.port or 0), reuse_port=self.reuse_port)
