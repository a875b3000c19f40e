"""Emitter transports: a registry of URI scheme -> ``"module:Class"``.

Transports are imported only when an emitter is built for their scheme, so
``import numbat`` costs the stdlib and nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from numbat._importer import import_from_string
from numbat._redact import redact_url, scrub, unsplittable
from numbat.errors import URIError

if TYPE_CHECKING:
    from numbat.emitter.transport import Transport

SCHEMES: dict[str, str] = {
    "tcp": "numbat.emitter.tcp:TCPTransport",
    "udp": "numbat.emitter.udp:UDPTransport",
    "socket": "numbat.emitter.unix:UnixTransport",
    "sock": "numbat.emitter.unix:UnixTransport",
    "unix": "numbat.emitter.unix:UnixTransport",
    "ws": "numbat.emitter.ws:WebSocketTransport",
    "wss": "numbat.emitter.ws:WebSocketTransport",
    "statsd": "numbat.emitter.statsd:StatsdTransport",
}

# Sized so that a burst of 200,000 typical events (about 130 bytes each) from one
# thread is held whole while the sender catches up; see docs/emitter.md for the cost.
DEFAULT_MAX_BACKLOG_BYTES = 64 * 1024 * 1024


def make_transport(uri: str) -> Transport:
    """Build the transport for ``uri``, or raise URIError naming the supported schemes."""
    if not isinstance(uri, str):
        raise URIError(f"destination uri must be a string, got {type(uri).__name__}")
    if problem := unsplittable(uri):
        raise URIError(f"malformed destination uri {redact_url(uri)!r}: {problem}")
    try:
        parts = urlsplit(uri)
    except ValueError as exc:  # e.g. an unclosed [ipv6 address
        reason = scrub(str(exc), uri)
        raise URIError(f"malformed destination uri {redact_url(uri)!r}: {reason}") from None
    target = SCHEMES.get(parts.scheme.lower())
    if target is None:
        allowed = ", ".join(f"{s}:" for s in SCHEMES)
        shown = redact_url(uri)
        raise URIError(f"unsupported destination uri: {shown!r}; supported schemes: {allowed}")
    cls: type[Transport] = import_from_string(target)
    return cls(uri, parts)
