"""Our emitters against the original Node numbat-collector 1.1.0 (and a websocket peer).

Each test sends real events over a real socket to a real peer and fails if any event
is not received intact.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.server import Server, ServerConnection, serve

import numbat
from numbat.event import now_ms
from tests.helpers import wait_until
from tests.interop.nodepeers import Listener, node_collector

HOST = socket.gethostname()
CLOCK_SLACK_MS = 5


def send_sample(em: numbat.BaseEmitter) -> None:
    """The three kinds of event every test sends."""
    em.metric("plain")
    em.metric({"name": "request", "value": 2.5, "route": "/a", "code": 200})
    em.metric("health", status="warning", ttl=16000, description="disk 91% full")


def by_name(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    named = {str(ev["name"]): ev for ev in events}
    assert len(named) == len(events), f"duplicate events: {events}"
    return named


def check_sample(events: list[dict[str, Any]], before_ms: int, after_ms: int) -> None:
    """Assert the three sample events arrived with every field as the emitter set it."""
    got = by_name(events)
    assert set(got) == {"interop.plain", "interop.request", "interop.health"}
    for ev in got.values():
        assert ev["host"] == HOST
        assert ev["node"] == "n1"
        assert isinstance(ev["time"], int), ev
        assert before_ms - CLOCK_SLACK_MS <= ev["time"] <= after_ms + CLOCK_SLACK_MS, ev
    plain, request, health = got["interop.plain"], got["interop.request"], got["interop.health"]
    assert plain["value"] == 1
    assert request["value"] == 2.5
    assert request["route"] == "/a"
    assert request["code"] == 200
    assert health["value"] == 1
    assert health["status"] == "warning"
    assert health["ttl"] == 16000
    assert health["description"] == "disk 91% full"
    # Nothing the emitter did not send: the log line is the event plus bole's own fields.
    bole = {"hostname", "pid", "level"}
    assert set(plain) - bole == {"name", "value", "time", "host", "node"}
    assert set(request) - bole == {"name", "value", "time", "host", "node", "route", "code"}


@pytest.mark.parametrize("kind", ["tcp", "udp", "unix"])
def test_emitter_to_node_collector(kind: Listener) -> None:
    """Emitter events reach the Node collector over tcp/udp/unix with every field intact."""
    with node_collector(kind) as collector:
        em = numbat.Emitter(collector.uri, app="interop", node="n1")
        try:
            before = now_ms()
            send_sample(em)
            after = now_ms()
            assert em.flush(10), em.stats()
            events = collector.wait_for_events(3)
        finally:
            em.close(timeout=1)
        assert sum(em.stats()["dropped"].values()) == 0, em.stats()
        assert em.sent == 3
        check_sample(events, before, after)


def test_async_emitter_to_node_collector() -> None:
    """AsyncEmitter events reach the Node collector over tcp with every field intact."""
    with node_collector("tcp") as collector:
        times: list[int] = []

        async def main() -> numbat.AsyncEmitter:
            async with numbat.AsyncEmitter(collector.uri, app="interop", node="n1") as em:
                times.append(now_ms())
                send_sample(em)
                times.append(now_ms())
                assert await em.flush(10), em.stats()
            return em

        em = asyncio.run(main())
        assert sum(em.stats()["dropped"].values()) == 0, em.stats()
        check_sample(collector.wait_for_events(3), times[0], times[1])


class WebSocketPeer:
    """A plain websockets server that records every message and the request path."""

    def __init__(self) -> None:
        self.messages: list[str | bytes] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self.server: Server = serve(self._handle, "127.0.0.1", 0, compression=None)
        self.port: int = self.server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        with self._lock:
            self.paths.append(ws.request.path)
        for message in ws:
            with self._lock:
                self.messages.append(message)

    def received(self) -> list[str | bytes]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.server.shutdown()
        self._thread.join(5)


@pytest.fixture
def ws_peer() -> Iterator[WebSocketPeer]:
    peer = WebSocketPeer()
    yield peer
    peer.close()


def test_emitter_to_websocket(ws_peer: WebSocketPeer) -> None:
    """Emitter sends each event over ws as one binary message: the JSON object plus "\\n"."""
    em = numbat.Emitter(f"ws://127.0.0.1:{ws_peer.port}/path", app="interop", node="n1")
    try:
        before = now_ms()
        send_sample(em)
        after = now_ms()
        assert em.flush(10), em.stats()
        wait_until(lambda: len(ws_peer.received()) >= 3, 10, "3 websocket messages")
        time.sleep(0.05)  # a fourth (duplicate) message would show up here
    finally:
        em.close(timeout=1)
    messages = ws_peer.received()
    assert ws_peer.paths == ["/path"]
    assert len(messages) == 3, messages
    events = []
    for message in messages:
        assert isinstance(message, bytes), f"text frame, wanted binary: {message!r}"
        assert message.endswith(b"\n") and message.count(b"\n") == 1, message
        event = json.loads(message)
        assert isinstance(event, dict)
        events.append(event)
    check_sample(events, before, after)
