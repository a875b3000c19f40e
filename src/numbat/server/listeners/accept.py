"""Accepting connections with numbat's own accept loop, so that running out of file
descriptors is seen, counted and survived.

On ``EMFILE`` asyncio's server only reports "socket.accept() out of system resource" to
the loop's exception handler, and uvloop's (libuv's) accepts the waiting connections and
closes them at once, silently: neither counts, neither can make room. An
:class:`Acceptor` accepts on listening sockets of its own (through ``loop.add_reader``,
which every loop has) and hands each connection to the loop with
``connect_accepted_socket``, so every listener's connections are the loop's usual
transports. When ``accept()`` fails it calls its ``failed`` callback (the listener
counts, logs, and makes room) and stops accepting for ``retry`` seconds; the peer waits
in the kernel's listen queue meanwhile, as nginx and haproxy leave it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

BACKLOG = 1024
"""The kernel's queue of connections not accepted yet (capped by net.core.somaxconn)."""
BATCH = 100
"""Most connections accepted per wake-up: others wait their turn behind ready reads."""


class Acceptor:
    """A server accepting on ``sockets`` (listening, non-blocking), each connection served
    by a protocol from ``factory``; ``failed(exc)`` is told of each ``accept()`` that
    raised an OSError, after which accepting pauses for ``retry`` seconds.

    It has the part of :class:`asyncio.Server` that numbat and websockets use:
    ``sockets``, ``close``, ``wait_closed``, ``is_serving``, ``start_serving``,
    ``get_loop``.
    """

    def __init__(
        self,
        sockets: Iterable[socket.socket],
        factory: Callable[[], asyncio.BaseProtocol],
        failed: Callable[[OSError], None],
        retry: float = 0.1,
    ) -> None:
        self.sockets = tuple(sockets)
        self._factory = factory
        self._failed = failed
        self._retry = retry
        self._loop = asyncio.get_running_loop()
        self._started = False
        self._reading = False  # False while paused after a failed accept()
        self._closed = False
        self._paused: asyncio.TimerHandle | None = None
        # Accepted connections being handed to the loop (a task each, as the handing is
        # a coroutine in asyncio and uvloop alike).
        self._pending: set[asyncio.Task[None]] = set()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._started and not self._closed

    async def start_serving(self) -> None:
        self.listen()

    def listen(self) -> None:
        """Begin (or resume) accepting."""
        if self._closed or self._reading:
            return
        self._started = self._reading = True
        for sock in self.sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def close(self) -> None:
        """Stop accepting and close the listening sockets (not the connections)."""
        self._stop_reading()
        self._closed = True
        if self._paused is not None:
            self._paused.cancel()
        for sock in self.sockets:
            sock.close()

    async def wait_closed(self) -> None:
        """Wait until the connections accepted before :meth:`close` are handed over."""
        if self._pending:
            await asyncio.wait(set(self._pending))

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            for sock in self.sockets:
                self._loop.remove_reader(sock.fileno())

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # nobody else waiting
            except ConnectionAbortedError:
                continue  # the peer gave up while it waited
            except OSError as exc:
                # EMFILE, ENFILE, ENOBUFS, ENOMEM: the socket stays readable, so
                # accepting again at once would spin; the peer waits in the queue.
                self._stop_reading()
                self._paused = self._loop.call_later(self._retry, self.listen)
                self._failed(exc)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._hand_over(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _hand_over(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn)
        except OSError as exc:  # the peer reset meanwhile; the loop out of memory
            conn.close()
            self._failed(exc)
        except Exception:
            conn.close()
            log.exception("a connection could not be set up")


async def bind_tcp(
    host: str | None, port: int, *, reuse_port: bool = False, backlog: int = BACKLOG
) -> list[socket.socket]:
    """Listening sockets on ``host:port``, one per address the host resolves to, bound as
    ``loop.create_server`` binds them (``SO_REUSEADDR``; an IPv6 socket IPv6 only).

    Raises OSError naming the address (``error while attempting to bind on address
    ('127.0.0.1', 3333): address already in use``), every socket closed.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            _bind(sock, address, backlog)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def bind_unix(path: str, backlog: int = BACKLOG) -> socket.socket:
    """A listening unix stream socket at ``path`` (which must not exist)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _bind(sock, path, backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind(sock: socket.socket, address: Any, backlog: int) -> None:
    try:
        sock.bind(address)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        message = f"error while attempting to bind on address {address!r}: {reason}"
        raise OSError(exc.errno, message) from None
    sock.listen(backlog)
    sock.setblocking(False)
