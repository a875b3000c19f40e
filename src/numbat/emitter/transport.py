"""The transport interface: how events are framed and put on the wire.

A transport knows one destination. The emitter engines call ``connect`` then ``send``
(or their ``a``-prefixed twins from asyncio) and handle retries, backlog and backoff;
a transport only moves bytes and raises :class:`OSError` when it cannot.
"""

from __future__ import annotations

import select
import socket
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import SplitResult

from numbat._encode import dumps
from numbat._redact import redact_url
from numbat.errors import URIError
from numbat.event import Event

if TYPE_CHECKING:
    import asyncio


class SendError(OSError):
    """Sending failed after the first ``sent`` payloads of the batch went out."""

    def __init__(self, sent: int, cause: BaseException | str) -> None:
        super().__init__(str(cause))
        self.sent = sent


class Transport(ABC):
    """One destination. Subclasses implement ``connect`` and ``send`` (and async twins).

    ``encode`` turns a valid event into the bytes of one payload; the default is the
    original numbat-emitter's framing, ``JSON + "\\n"``, for every JSON transport.
    """

    def __init__(self, uri: str, parts: SplitResult) -> None:
        self.uri = uri
        self.parts = parts

    def encode(self, event: Event, raw: Mapping[str, Any]) -> bytes:
        """The payload for ``event``; ``raw`` is what the caller passed, before defaults."""
        return dumps(event) + b"\n"

    @abstractmethod
    def connect(self, timeout: float) -> None:
        """Open the connection; raise OSError on failure."""

    @abstractmethod
    def send(self, payloads: Sequence[bytes]) -> None:
        """Send every payload; raise SendError (or OSError: nothing known sent) on failure."""

    def close(self) -> None:
        """Release the connection; never raises."""

    async def aconnect(self, timeout: float) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no asyncio support")

    async def asend(self, payloads: Sequence[bytes]) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no asyncio support")

    async def aclose(self) -> None:
        self.close()


class SocketTransport(Transport):
    """A transport over one BSD socket; subclasses give the family, kind and address."""

    family: int = socket.AF_INET
    kind: ClassVar[int] = socket.SOCK_STREAM
    send_timeout: ClassVar[float] = 30.0
    _sock: socket.socket | None = None

    @abstractmethod
    def address(self) -> Any:
        """The address to connect to, as ``socket.connect`` takes it."""

    def connect(self, timeout: float) -> None:
        self.close()
        sock = self._open()
        sock.settimeout(timeout)
        try:
            sock.connect(self.address())
        except BaseException:
            sock.close()
            raise
        sock.settimeout(self.send_timeout)
        self._sock = sock

    def send(self, payloads: Sequence[bytes]) -> None:
        sock = self._require()
        if self.kind == socket.SOCK_STREAM:
            _raise_if_peer_closed(sock)
            sock.sendall(b"".join(payloads))
            return
        for sent, payload in enumerate(payloads):
            try:
                sock.send(payload)
            except OSError as exc:
                raise SendError(sent, exc) from exc

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def aconnect(self, timeout: float) -> None:
        self.close()
        sock = self._open()
        sock.setblocking(False)
        try:
            await _asyncio().wait_for(_loop().sock_connect(sock, self.address()), timeout)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    async def asend(self, payloads: Sequence[bytes]) -> None:
        sock, loop = self._require(), _loop()
        if self.kind == socket.SOCK_STREAM:
            _raise_if_peer_closed(sock)
            data = b"".join(payloads)
            await _asyncio().wait_for(loop.sock_sendall(sock, data), self.send_timeout)
            return
        for sent, payload in enumerate(payloads):
            try:
                await loop.sock_sendall(sock, payload)
            except OSError as exc:
                raise SendError(sent, exc) from exc

    def _open(self) -> socket.socket:
        return socket.socket(self.family, self.kind)

    def _require(self) -> socket.socket:
        if self._sock is None:
            raise ConnectionError("not connected")
        return self._sock


class InetTransport(SocketTransport):
    """A ``scheme://host:port`` destination; IPv6 literals go in brackets."""

    def __init__(self, uri: str, parts: SplitResult) -> None:
        super().__init__(uri, parts)
        self._address = host_port(uri, parts)
        if ":" in self._address[0]:
            self.family = socket.AF_INET6

    def address(self) -> tuple[str, int]:
        return self._address


def host_port(uri: str, parts: SplitResult) -> tuple[str, int]:
    """``(host, port)`` of a ``scheme://host:port`` URI, or a URIError naming what is missing."""
    try:
        port = parts.port
    except ValueError:
        raise URIError(f"bad port in destination uri {redact_url(uri)!r}") from None
    if not parts.hostname or port is None:
        raise URIError(
            f"destination uri {redact_url(uri)!r} needs a host and a port, "
            "e.g. tcp://127.0.0.1:3333"
        )
    return parts.hostname, port


def _raise_if_peer_closed(sock: socket.socket) -> None:
    """Notice a peer that closed before writing into the void.

    A write to a socket whose peer has gone succeeds once and is lost; checking for a
    pending EOF first turns that loss into a retry on a fresh connection.
    """
    readable, _, _ = select.select([sock], [], [], 0)
    if readable and not sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
        raise ConnectionResetError("peer closed the connection")


def _asyncio() -> Any:
    # Imported on first use: ``import numbat`` must stay cheap for sync-only services.
    import asyncio

    return asyncio


def _loop() -> asyncio.AbstractEventLoop:
    return _asyncio().get_running_loop()  # type: ignore[no-any-return]
