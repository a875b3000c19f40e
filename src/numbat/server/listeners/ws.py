"""``ws://host:port/path``: one JSON object per websocket message (text or binary).

The server pings every ``ping_interval`` seconds (20 by default) and drops a client
that has not answered within as long again, as the original collector's keep-alive
did. With ``token`` set, clients must connect with ``?key=TOKEN`` (the original
example's spelling) or ``?token=TOKEN``.

Connections are accepted by an :class:`~numbat.server.listeners.accept.Acceptor` (so
running out of file descriptors is counted), and handed to the websockets library as
its own server would hand them.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from numbat.config import ListenerConfig, WebSocketListenerConfig
from numbat.server.listeners import Limits, Listener, choose_victims, peer_name
from numbat.server.listeners.accept import Acceptor, bind_tcp

CLOSE_TIMEOUT = 10.0  # seconds a closing handshake may take (the library's default)
OPEN_TIMEOUT = 10.0  # seconds an opening handshake may take (the library's default)
# An evicted connection's: its slot is already taken, its descriptor is wanted back soon.
EVICT_CLOSE_TIMEOUT = 1.0
# Seconds between looks at an open connection's idleness, at most: the most a lowered
# idle_timeout takes to reach a connection that was already waiting.
IDLE_CHECK = 5.0

# Request lines carry the token: keep the library's own access logging quiet.
_quiet = logging.getLogger(f"{__name__}.access")
_quiet.setLevel(logging.WARNING)


class _Connection(ServerConnection):
    """A ServerConnection that tells its listener when its TCP connection opens and
    closes, so one still in its opening handshake holds (and may lose) a slot."""

    numbat: WebSocketListener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.numbat.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.numbat.handshaking.pop(self, None)


def _host(conn: ServerConnection) -> str:
    peer = conn.transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) else ""


class WebSocketListener(Listener):
    """Websocket listener with path and token checks, a connection limit and idle timeout."""

    Options = WebSocketListenerConfig
    options: WebSocketListenerConfig
    _server: Server | None = None
    _acceptor: Acceptor | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: set[ServerConnection] = set()
        # time.monotonic() of each connection's last message (or of its opening).
        self.last_message: dict[ServerConnection, float] = {}
        # Connections in their opening handshake: time.monotonic() of their connect.
        # They count toward max_connections and are evicted before any open one
        # (the library closes them after OPEN_TIMEOUT anyway).
        self.handshaking: dict[ServerConnection, float] = {}
        self._admitting: ServerConnection | None = None  # the one _check is judging
        self._closing: set[asyncio.Task[None]] = set()  # evicted, in their closing handshake
        self.path = urlsplit(self.options.uri).path or "/"
        # A message may hold several lines; past this the library must close the
        # connection (it cannot skip a frame), which is counted as message_too_big.
        self.max_message = max(self.max_line * 16, 1 << 20)

    async def start(self) -> None:
        parts = urlsplit(self.options.uri)
        sockets = await bind_tcp(parts.hostname, parts.port or 0, reuse_port=self.reuse_port)
        # serve() keeps its connection factory to itself and binds through the loop:
        # the Server it returns (websockets >= 17.4: not awaited yet, its create_server
        # a function) is given our accept loop instead, and connections built as its
        # factory builds them (the handshake, process_request and handler stay its).
        server = serve(
            self._handle, process_request=self._check, logger=_quiet, open_timeout=OPEN_TIMEOUT
        )

        def connection() -> ServerConnection:
            protocol = ServerProtocol(max_size=self.max_message, logger=_quiet)  # no deflate
            conn = _Connection(
                protocol,
                server,
                ping_interval=self.options.ping_interval,
                ping_timeout=self.options.ping_interval,
                # A client that missed its pong will not answer a close frame either.
                close_timeout=min(self.options.ping_interval, CLOSE_TIMEOUT),
            )
            conn.numbat = self
            return conn

        async def accept() -> Acceptor:
            self._acceptor = Acceptor(sockets, connection, self.accept_failed, self.accept_retry)
            self._acceptor.listen()
            return self._acceptor

        server.create_server = cast(Callable[[], Coroutine[Any, Any, asyncio.Server]], accept)
        self._server = await server

    def reconfigure(self, options: ListenerConfig, limits: Limits) -> bool:
        """Live: the limits, token, origins and allow-list apply to the next request
        and message; open connections take the new message cap, ping interval and
        idle timeout too (this one within :data:`IDLE_CHECK` seconds)."""
        self.adopt(options, limits)
        self.max_message = max(self.max_line * 16, 1 << 20)
        ping = self.options.ping_interval
        for conn in self.connections:
            conn.protocol.max_message_size = self.max_message
            conn.ping_interval = conn.ping_timeout = ping
            conn.close_timeout = min(ping, conn.close_timeout or CLOSE_TIMEOUT)
        return True

    def _idle_wait(self, conn: ServerConnection) -> float:
        """Seconds to wait for ``conn``'s next message before looking again: at most
        :data:`IDLE_CHECK`, so a reload's idle_timeout applies to open connections."""
        idle = self.limits.idle_timeout
        if not idle:
            return IDLE_CHECK
        return min(max(self.last_message[conn] + idle - time.monotonic(), 0.0), IDLE_CHECK)

    def _is_idle(self, conn: ServerConnection) -> bool:
        idle = self.limits.idle_timeout
        return bool(idle) and time.monotonic() - self.last_message[conn] >= idle

    async def stop_accepting(self) -> None:
        # The listening sockets only. (Not the library's close(close_connections=False):
        # its first close() is the only one, so stop() could no longer close the
        # connections, and a client that stays connected would hold shutdown forever.)
        if self._acceptor is not None:
            self._acceptor.close()

    async def stop(self) -> None:
        if self.connections:
            self.stats.count("closed_at_shutdown", len(self.connections), listener=self.label)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _check(self, conn: ServerConnection, request: Request) -> Response | None:
        peer = conn.remote_address
        if not self.admit(peer):
            return conn.respond(HTTPStatus.FORBIDDEN, "peer not allowed\n")
        origin = request.headers.get("Origin")
        if origin is not None and origin not in self.options.origins:
            # A browser page: only those listed may send (emitters send no Origin).
            self.stats.count("refused", listener=self.label, reason="bad_origin")
            self._warn.warning(
                "origin",
                "%s: refused %s: Origin %r not allowed",
                self.label,
                peer_name(peer),
                origin,
            )
            return conn.respond(HTTPStatus.FORBIDDEN, "origin not allowed\n")
        target = urlsplit(request.path)
        if target.path != self.path:
            self.stats.count("refused", listener=self.label, reason="bad_path")
            return conn.respond(HTTPStatus.NOT_FOUND, f"events go to {self.path}\n")
        if self.options.token is not None and not self._token_ok(target.query):
            self.stats.count("refused", listener=self.label, reason="bad_token")
            self._warn.warning(
                "token", "%s: refused %s: missing or wrong token", self.label, peer_name(peer)
            )
            return conn.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")
        host = peer[0] if isinstance(peer, tuple) else ""
        same = sum(1 for c in self.connections if c.remote_address[0] == host)
        if host and same >= self.limits.max_connections_per_peer:
            self.stats.count("refused", listener=self.label, reason="too_many_from_peer")
            return conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n")
        # This connection is among those handshaking: the others hold slots too.
        held = len(self.connections) + len(self.handshaking) - 1
        full = held >= self.limits.max_connections
        self._admitting = conn
        try:
            room = not full or self.make_room("too_many_connections", peer_name(peer))
        finally:
            self._admitting = None
        if not room:
            self.stats.count("refused", listener=self.label, reason="too_many_connections")
            return conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n")
        return None

    def opened(self, conn: ServerConnection) -> None:
        """A TCP connection is in: it holds a slot while it handshakes; over the cap,
        one handshaking for :data:`EVICT_AFTER` seconds makes room (open ones wait
        for its request, :meth:`_check`)."""
        self.handshaking[conn] = time.monotonic()
        if len(self.connections) + len(self.handshaking) > self.limits.max_connections:
            newcomer = peer_name(conn.remote_address)
            self._evict_handshaking("too_many_connections", newcomer, 1, spare=conn)

    def _evict_handshaking(
        self, reason: str, newcomer: str, count: int, spare: ServerConnection | None
    ) -> int:
        """Drop (RST) up to ``count`` connections that never finished their opening
        handshake, the heaviest peer's oldest first, never ``spare`` (the newcomer);
        how many."""
        now = time.monotonic()
        stale = [(c, _host(c), t) for c, t in self.handshaking.items() if c is not spare]
        victims = choose_victims(stale, now, count)
        for victim in victims:
            idle = now - self.handshaking.pop(victim)
            self.evicted(reason, peer_name(victim.remote_address), idle, newcomer)
            victim.transport.abort()
        return len(victims)

    def make_room(self, reason: str, newcomer: str = "a waiting peer", count: int = 1) -> int:
        # A connection that never finished its handshake goes first: it sent no event.
        if gone := self._evict_handshaking(reason, newcomer, count, self._admitting):
            return gone
        if not self.gate.is_open:  # nobody reads while blocked: none is idle
            return 0
        now = time.monotonic()
        # One not reading (its queue of messages is full) has unread messages: busy.
        candidates = [
            (c, c.remote_address[0], self.last_message[c])
            for c in self.connections
            if c.transport.is_reading()
        ]
        # At the cap a hog gives way too, to a newcomer from another address.
        fair_to = newcomer.rpartition(":")[0] if reason == "too_many_connections" else None
        victims = choose_victims(candidates, now, count, fair_to=fair_to)
        for victim in victims:
            self.connections.discard(victim)  # its slot is the newcomer's from now on
            self.evicting.add(victim)  # until its handler ends (the socket is closed)
            idle = now - self.last_message[victim]
            self.evicted(reason, peer_name(victim.remote_address), idle, newcomer)
            if reason == "emfile":
                # Out of descriptors a closing handshake would hold this one a second
                # more: dropped at once (the client sees 1006 and reconnects).
                victim.transport.abort()
                continue
            victim.close_timeout = min(victim.close_timeout or CLOSE_TIMEOUT, EVICT_CLOSE_TIMEOUT)
            task = asyncio.ensure_future(victim.close(CloseCode.TRY_AGAIN_LATER, "evicted"))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return len(victims)

    def _count_failure(self, exc: ConnectionClosed, peer: str) -> None:
        """A frame the library refused closes the connection: count it by reason."""
        code = exc.sent.code if exc.sent is not None else None
        if code == CloseCode.MESSAGE_TOO_BIG:
            message = f"message over {self.max_message} bytes: connection closed"
            self.reject("message_too_big", message, b"", peer)
        elif code == CloseCode.INVALID_DATA:  # a text frame that is not UTF-8
            self.reject("not_utf8", "a text frame that is not UTF-8: connection closed", b"", peer)
        elif code == CloseCode.PROTOCOL_ERROR:
            self.reject("bad_frame", f"websocket protocol error: {exc.sent}", b"", peer)

    def _token_ok(self, query: str) -> bool:
        params = parse_qs(query)
        given = (params.get("key") or params.get("token") or [""])[0]
        assert self.options.token is not None
        return hmac.compare_digest(given.encode(), self.options.token.encode())

    async def _handle(self, conn: ServerConnection) -> None:
        self.handshaking.pop(conn, None)
        self.connections.add(conn)
        self.last_message[conn] = time.monotonic()
        peer = peer_name(conn.remote_address)
        try:
            while True:
                if not self.gate.is_open:  # an output is full: the client waits
                    await self.gate.wait_open()
                    self.last_message[conn] = time.monotonic()  # the wait was ours
                try:  # recv() is cancel-safe: a message is never lost to a timeout
                    message = await asyncio.wait_for(conn.recv(), self._idle_wait(conn))
                except TimeoutError:
                    if self._is_idle(conn):
                        raise
                    continue
                now = self.last_read = time.monotonic()
                data = message.encode() if isinstance(message, str) else message
                if self.receive_message(data, peer):
                    self.last_message[conn] = now
        except TimeoutError:
            self.stats.count("closed_idle", listener=self.label)
            self._warn.warning("idle", "%s: closed %s: no event (idle_timeout)", self.label, peer)
            await conn.close(1001, "idle")
        except ConnectionClosed as exc:
            self._count_failure(exc, peer)
        finally:
            self.connections.discard(conn)
            self.evicting.discard(conn)
            del self.last_message[conn]
