"""Each transport's exact wire format, against real loopback sockets."""

from __future__ import annotations

import json
import socket

from numbat import Emitter
from tests.helpers import DatagramReceiver, StreamReceiver


def _send(uri: str, *events: dict[str, object]) -> Emitter:
    em = Emitter(uri, app="t", host="h1")
    for event in events:
        em.metric(event)
    assert em.flush(10), em.stats()
    return em


def test_tcp_sends_ndjson_lines_in_order(tcp_receiver: StreamReceiver) -> None:
    """tcp:// writes one JSON object per line, in the order metric() was called."""
    em = _send(tcp_receiver.uri, *({"name": "n", "value": i, "time": 5} for i in range(100)))
    lines = tcp_receiver.wait_for(100)
    assert [json.loads(line)["value"] for line in lines] == list(range(100))
    assert json.loads(lines[0]) == {"name": "t.n", "value": 0, "time": 5, "host": "h1"}
    assert em.close(1)


def test_unix_socket_uris_both_spellings(unix_receiver: StreamReceiver) -> None:
    """socket:/path (the original's) and unix:///path both reach a unix stream socket."""
    for count, uri in enumerate((f"socket:{unix_receiver.path}", unix_receiver.uri), 1):
        _send(uri, {"name": "u", "via": uri}).close(1)
        # Each emitter has its own connection, read by its own thread: wait for this
        # line before sending the next, so the order below is the order sent.
        lines = unix_receiver.wait_for(count)
    assert [json.loads(line)["via"] for line in lines][:2] == [
        f"socket:{unix_receiver.path}",
        unix_receiver.uri,
    ]


def test_udp_sends_one_object_per_datagram(udp_receiver: DatagramReceiver) -> None:
    """udp:// sends each event as its own datagram, JSON plus a newline like the original."""
    _send(udp_receiver.uri(), {"name": "a", "value": 1, "time": 9}, {"name": "b", "time": 9}).close(
        1
    )
    datagrams = udp_receiver.wait_for(2)
    assert datagrams == [
        b'{"name":"t.a","value":1,"time":9,"host":"h1"}\n',
        b'{"name":"t.b","time":9,"host":"h1","value":1}\n',
    ]


def test_tcp_unicode_and_escapes_survive(tcp_receiver: StreamReceiver) -> None:
    """Non-ASCII text and characters that need JSON escaping arrive unchanged."""
    text = 'naïve "quoted" \\ tab\tnewline\n 🦘'
    _send(tcp_receiver.uri, {"name": "u", "description": text, "tag": "ü"}).close(1)
    (line,) = tcp_receiver.wait_for(1)
    event = json.loads(line)
    assert event["description"] == text and event["tag"] == "ü"


def test_ipv6_loopback() -> None:
    """A bracketed IPv6 literal in the URI connects over IPv6."""
    server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    server.bind(("::1", 0))
    server.listen()
    port = server.getsockname()[1]
    em = Emitter(f"tcp://[::1]:{port}", app="v6")
    em.metric("x")
    conn, _ = server.accept()
    conn.settimeout(10)
    assert json.loads(conn.recv(4096))["name"] == "v6.x"
    em.close(1)
    conn.close()
    server.close()
