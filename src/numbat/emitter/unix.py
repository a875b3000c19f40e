"""``socket:/path`` (also ``sock:/path`` and ``unix:///path``): NDJSON over a unix socket."""

from __future__ import annotations

import socket
from urllib.parse import SplitResult

from numbat._redact import redact_url
from numbat.emitter.transport import SocketTransport
from numbat.errors import URIError


class UnixTransport(SocketTransport):
    """NDJSON over a unix stream socket, the cheapest way to reach the host's collector.

    >>> from urllib.parse import urlsplit
    >>> UnixTransport("socket:/run/numbat.sock", urlsplit("socket:/run/numbat.sock")).address()
    '/run/numbat.sock'
    """

    family = socket.AF_UNIX
    kind = socket.SOCK_STREAM

    def __init__(self, uri: str, parts: SplitResult) -> None:
        super().__init__(uri, parts)
        if not parts.path or parts.netloc:
            raise URIError(
                f"destination uri {redact_url(uri)!r} needs an absolute socket path, "
                "e.g. socket:/run/numbat.sock or unix:///run/numbat.sock"
            )
        self._path = parts.path

    def address(self) -> str:
        return self._path
