"""``tcp://host:port``: newline-delimited JSON over TCP, the original collector's default."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from numbat.server.listeners.stream import StreamListener


class TCPListener(StreamListener):
    """NDJSON over TCP, as the original collector's default listener."""

    async def _serve(self) -> asyncio.Server:
        parts = urlsplit(self.options.uri)
        return await asyncio.get_running_loop().create_server(
            self.protocol,
            parts.hostname,
            int(parts.port or 0),
            reuse_address=True,
            reuse_port=self.reuse_port or None,
            backlog=1024,
        )
