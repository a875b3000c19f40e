"""Reconnect, backlog and give-up behaviour against a real server that goes away."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from numbat import Emitter
from numbat.emitter.tcp import TCPTransport
from numbat.emitter.transport import SendError
from tests.helpers import StreamReceiver, wait_until


def _values(receiver: StreamReceiver) -> list[int]:
    return [json.loads(p)["value"] for p in receiver.payloads]


def test_server_restart_delivers_backlog_and_counts_overflow(tcp_receiver: StreamReceiver) -> None:
    """While the server is down the newest events that fit are kept, and arrive after it returns."""
    em = Emitter(tcp_receiver.uri, app="r", max_backlog=30, backoff=lambda retries: 0.02)
    for i in range(10):
        em.metric("n", value=i)
    tcp_receiver.wait_for(10)

    tcp_receiver.stop()
    for i in range(10, 60):
        em.metric("n", value=i)  # returns at once, whatever the connection does
    assert em.wait_for_state("disconnected", timeout=10)
    assert em.dropped["backlog_full"] == 20 and em.queued == 30

    tcp_receiver.start()
    tcp_receiver.wait_for(40)
    assert em.flush(10)
    assert _values(tcp_receiver) == list(range(10)) + list(range(30, 60))
    assert em.reconnects >= 1 and em.state == "ready"
    assert em.close(1)


def test_metric_never_blocks_while_sender_is_stuck(tcp_receiver: StreamReceiver) -> None:
    """A peer that stops reading stalls the sender thread, never the caller."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    em = Emitter(f"tcp://127.0.0.1:{listener.getsockname()[1]}", app="s", max_backlog_bytes=1 << 20)
    conn, _ = listener.accept()  # accepted, never read: the kernel buffers fill up
    filler = "x" * 1000
    for i in range(20_000):  # ~20 MB: far beyond the socket buffers and the backlog
        em.metric("fill", value=i, pad=filler)
    assert em.dropped["backlog_full"] > 0
    assert em.backlog.nbytes <= 1 << 20
    conn.close()
    listener.close()
    em.close(0)


def test_gives_up_after_max_retries_and_reports_failed() -> None:
    """After max_retries refused connects the state is 'failed' and later events are counted."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens on this port now
    em = Emitter(f"tcp://127.0.0.1:{port}", app="f", max_retries=3, backoff=lambda r: 0.001)
    em.metric("queued")
    assert em.wait_for_state("failed", timeout=10)
    assert em.metric("late") is None
    assert em.dropped["failed"] == 2
    assert em.close(0) is False


def test_close_reports_unsent_events(tcp_receiver: StreamReceiver) -> None:
    """close() returns False when events could not be delivered within the timeout."""
    tcp_receiver.stop()
    em = Emitter(tcp_receiver.uri, app="c", backoff=lambda r: 0.01)
    em.metric("never")
    assert em.close(0.2) is False
    assert em.dropped["closed"] == 1
    assert em.metric("after") is None and em.dropped["closed"] == 2


def test_reconnect_waits_then_succeeds_when_server_appears(tcp_receiver: StreamReceiver) -> None:
    """An emitter started before its collector connects once the collector is up."""
    tcp_receiver.stop()
    em = Emitter(tcp_receiver.uri, app="late", backoff=lambda r: 0.02)
    em.metric("early", value=1)
    assert em.wait_for_state("disconnected", timeout=10)
    tcp_receiver.start()
    tcp_receiver.wait_for(1)
    wait_until(lambda: em.state == "ready", what="ready")
    assert json.loads(tcp_receiver.payloads[0])["name"] == "late.early"
    em.close(1)


class _AcceptsButNeverDelivers(TCPTransport):
    """Connects fine, then every write fails: a broken proxy, a full disk behind a ws."""

    connects = 0

    def connect(self, timeout: float) -> None:
        self.connects += 1

    def send(self, payloads: Sequence[bytes]) -> None:
        raise ConnectionResetError("write failed")


def test_peer_that_accepts_but_never_delivers_is_backed_off_and_given_up() -> None:
    """Connects that succeed but whose sends always fail count as retries, not a fresh start."""
    uri = "tcp://127.0.0.1:9"
    transport = _AcceptsButNeverDelivers(uri, urlsplit(uri))
    delays: list[int] = []

    def backoff(retries: int) -> float:
        delays.append(retries)
        return 0.001

    em = Emitter(uri, app="h", max_retries=3, backoff=backoff, transport=transport)
    em.metric("x")
    assert em.wait_for_state("failed", timeout=10)
    assert delays == [1, 2, 3] and transport.connects == 4
    assert em.dropped["failed"] == 1 and em.sent == 0 and em.send_errors == 4


def test_udp_batch_refused_by_the_host_is_kept_and_sent_after_reconnect() -> None:
    """A datagram refused (ECONNREFUSED from an earlier ICMP) is retried, not dropped."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens on this port now
    receiver_up = threading.Event()

    def backoff(retries: int) -> float:
        # The sender thread waits here, after the refusal, until the receiver is bound:
        # the retry must reach it, not go into the void again.
        receiver_up.wait(10)
        return 0.0

    def settled(count: int) -> Callable[[], bool]:
        return lambda: em.sent + em.send_errors >= count

    em = Emitter(f"udp://127.0.0.1:{port}", app="u", backoff=backoff)
    # The first datagram is accepted by the kernel and lost; the host answers with an
    # ICMP port unreachable, so a following send is refused. Send one at a time until
    # one is.
    refused = None
    for i in range(100):
        em.metric("n", value=i)
        wait_until(settled(i + 1), what="the event sent or refused")
        if em.send_errors:
            refused = i
            break
    assert refused is not None and refused >= 1, "no send was refused"
    assert em.wait_for_state("disconnected", timeout=10)
    assert em.queued == 1  # the refused event went back into the backlog
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", port))
    receiver.settimeout(10)
    try:
        receiver_up.set()
        datagram = receiver.recv(65536)
        assert json.loads(datagram)["value"] == refused
        assert em.flush(10) and em.sent == refused + 1 and em.send_errors == 1
        assert em.dropped == {"backlog_full": 0, "invalid": 0, "failed": 0, "closed": 0}
    finally:
        receiver_up.set()
        receiver.close()
        em.close(1)


class _FailsHalfwayOnce(TCPTransport):
    delivered: list[bytes]
    go: threading.Event

    """The first send delivers two payloads of the batch and then fails (as a datagram
    socket that gets ECONNREFUSED midway); later sends deliver everything."""

    failed = False

    def connect(self, timeout: float) -> None:
        self.go.wait(timeout)  # the test queues the whole batch first

    def send(self, payloads: Sequence[bytes]) -> None:
        if not self.failed and len(payloads) > 2:
            self.failed = True
            self.delivered.extend(payloads[:2])
            raise SendError(2, "refused midway")
        self.delivered.extend(payloads)


def test_a_batch_that_fails_midway_counts_what_went_and_resends_only_the_rest() -> None:
    """SendError(sent=2): those two count as sent, the rest is put back and sent once."""
    uri = "tcp://127.0.0.1:9"
    transport = _FailsHalfwayOnce(uri, urlsplit(uri))
    transport.delivered = []
    transport.go = threading.Event()
    em = Emitter(uri, app="h", backoff=lambda retries: 0.001, transport=transport)
    for i in range(5):
        em.metric("x", value=i)
    transport.go.set()
    assert em.flush(5)
    values = [json.loads(p)["value"] for p in transport.delivered]
    assert values == [0, 1, 2, 3, 4]
    assert (em.sent, em.send_errors, sum(em.dropped.values())) == (5, 1, 0)
    em.close(1)
