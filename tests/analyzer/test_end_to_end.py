"""Black box, real processes: emitter -> collector -> analyzer -> a local webhook server,
through our collector and through the original Node ``numbat-collector@1.1.0``; a
restart by SIGKILL neither pages twice nor loses the resolve."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from numbat import Emitter
from tests.analyzer.harness import Process, WebhookReceiver, analyzer_toml, api
from tests.helpers import wait_until
from tests.interop.nodepeers import free_port, node_collector

TTL = 1_000  # ms: the heartbeats' ttl in these tests


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.kill()


def _analyzer(
    tmp_path: Path, processes: list[Process], webhook: WebhookReceiver, listen: int, http: int
) -> Process:
    config = tmp_path / "analyzer.toml"
    config.write_text(
        analyzer_toml(listen=listen, http=http, data_dir=tmp_path / "state", webhook=webhook.url)
    )
    process = Process(["analyzer", "-c", str(config)], tmp_path, "analyzer")
    processes.append(process)
    process.wait_log("analyzer listening on")
    return process


def _collector(tmp_path: Path, processes: list[Process], port: int, analyzer: int) -> Process:
    config = tmp_path / "collector.toml"
    config.write_text(
        f"""
[collector]
listen = ["tcp://127.0.0.1:{port}"]
[[collector.outputs]]
type = "analyzer"
uri = "tcp://127.0.0.1:{analyzer}"
"""
    )
    process = Process(["collector", "-c", str(config)], tmp_path, "collector")
    processes.append(process)
    process.wait_log("collector listening on")
    return process


def _beat(emitter: Emitter, count: int = 1) -> float:
    """Send heartbeats of web-1's "web" app; the monotonic time the last was flushed."""
    for _ in range(count):
        emitter.metric("heartbeat", ttl=TTL)
    assert emitter.flush(5.0)
    return time.monotonic()


INCIDENT = "web-1.web.heartbeat"


def _silence_then_resume(webhook: WebhookReceiver, uri: str) -> None:
    """Beat, fall silent until the critical arrives (within ttl + 1 s of the last beat),
    beat again until the resolve arrives, shut down; exactly one message of each."""
    emitter = Emitter(uri, app="web", host="web-1")
    try:
        _beat(emitter, 3)
        last = _beat(emitter)
        webhook.wait(lambda: bool(webhook.changes("new", INCIDENT)), 10.0, "the critical")
        took = time.monotonic() - last
        assert took <= TTL / 1000 + 1.0, f"the critical took {took:.2f}s after the last beat"
        [critical] = webhook.changes("new", INCIDENT)
        assert critical["status"] == "critical" and "heartbeat not heard" in critical["message"]
        _beat(emitter)
        webhook.wait(lambda: bool(webhook.changes("resolved", INCIDENT)), 10.0, "the resolve")
        emitter.metric("shutdown")  # a clean stop: tracking ends without an alert
        assert emitter.flush(5.0)
        time.sleep(2 * TTL / 1000)  # nothing more may come: it would be a second page
        assert len(webhook.changes("new", INCIDENT)) == 1
        assert len(webhook.changes("resolved", INCIDENT)) == 1
    finally:
        emitter.close()


def test_a_silent_host_pages_once_and_resolves_once(
    tmp_path: Path, processes: list[Process], webhook: WebhookReceiver
) -> None:
    """emitter -> our collector -> analyzer -> webhook: one critical when the beats stop,
    one resolve when they resume."""
    listen, http, port = free_port(), free_port(), free_port()
    _analyzer(tmp_path, processes, webhook, listen, http)
    _collector(tmp_path, processes, port, listen)
    _silence_then_resume(webhook, f"tcp://127.0.0.1:{port}")
    assert api(http, "/incidents?state=resolved")["incidents"][0]["id"] == INCIDENT


def test_the_original_node_collector_feeds_the_analyzer(
    tmp_path: Path, processes: list[Process], webhook: WebhookReceiver
) -> None:
    """The Node numbat-collector's analyzer output, unchanged, feeds our analyzer."""
    listen, http = free_port(), free_port()
    _analyzer(tmp_path, processes, webhook, listen, http)
    feed = [{"type": "analyzer", "host": "127.0.0.1", "port": listen}]
    with node_collector("tcp", outputs=feed) as node:
        _silence_then_resume(webhook, node.uri)


def _sent(port: int) -> int:
    counters = api(port, "/stats")["counters"]
    return sum(
        c["value"]
        for c in counters
        if c["metric"] == "notifications" and c["tags"].get("outcome") == "sent"
    )


def test_a_restart_by_sigkill_neither_pages_twice_nor_loses_the_resolve(
    tmp_path: Path, processes: list[Process], webhook: WebhookReceiver
) -> None:
    """Critical notified; analyzer SIGKILLed; the condition clears while it is down (the
    collector holds the events); on restart no second critical, and one resolve."""
    listen, http, port = free_port(), free_port(), free_port()
    analyzer = _analyzer(tmp_path, processes, webhook, listen, http)
    _collector(tmp_path, processes, port, listen)
    emitter = Emitter(f"tcp://127.0.0.1:{port}", app="db", host="db-1")
    try:
        emitter.metric("disk", value=0.97, status="critical", description="disk 97% full")
        assert emitter.flush(5.0)
        incident = "db-1.db.disk"
        webhook.wait(lambda: bool(webhook.changes("new", incident)), 10.0, "the critical")
        # Notified, as the analyzer knows it: the sent notification is on its disk.
        wait_until(lambda: _sent(http) == 1, 10.0, "the notification recorded as sent")
        analyzer.kill()
        emitter.metric("disk", value=0.42, status="ok", description="cleaned up")
        assert emitter.flush(5.0)
        _analyzer(tmp_path, processes, webhook, listen, http)
        webhook.wait(lambda: bool(webhook.changes("resolved", incident)), 20.0, "the resolve")
        time.sleep(1.0)
        assert len(webhook.changes("new", incident)) == 1
        assert len(webhook.changes("resolved", incident)) == 1
    finally:
        emitter.close()
