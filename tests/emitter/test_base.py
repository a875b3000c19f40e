"""The emitter's public API: building events, the backlog, the timer, the global emitter."""

from __future__ import annotations

import threading
import time

import pytest

import numbat
from numbat._backoff import reconnect as backoff
from numbat.emitter.base import Backlog, Emitter
from numbat.errors import URIError
from numbat.testing import CaptureEmitter, capture_metrics


def test_name_is_prefixed_with_app_unless_already_there() -> None:
    """Names get ``app.`` in front, except ones already under the app's namespace."""
    em = CaptureEmitter(app="web")
    em.metric("requests")
    em.metric("web.latency")
    em.metric("web")
    em.metric("webhooks.sent")  # starts with "web" but is not under "web."
    assert [e["name"] for e in em.events] == [
        "web.requests",
        "web.latency",
        "web",
        "web.webhooks.sent",
    ]


def test_defaults_are_filled_and_caller_fields_win() -> None:
    """host, node, time and value are filled in; fields the caller gives override them."""
    em = CaptureEmitter(app="web", node="n1", host="h1")
    em.metric("a")
    em.metric({"name": "b", "host": "other", "value": 7})
    first, second = em.events
    assert first["host"] == "h1" and first["node"] == "n1" and first["value"] == 1
    assert isinstance(first["time"], int) and first["time"] > 1_600_000_000_000
    assert second["host"] == "other" and second["value"] == 7


def test_metric_accepts_mapping_string_and_keywords_without_mutating_input() -> None:
    """A dict, a bare name or keywords all work, and the caller's dict is left alone."""
    em = CaptureEmitter(app="web")
    attrs = {"name": "a", "value": 2}
    em.metric(attrs, route="/x")
    em.metric(name="b", value=3)
    assert attrs == {"name": "a", "value": 2}
    assert em.events[0]["route"] == "/x" and em.events[1]["name"] == "web.b"


@pytest.mark.parametrize(
    "bad",
    [
        {"value": 1},
        {"name": ""},
        {"name": "x", "value": float("nan")},
        {"name": "x", "tags": [1]},
        42,
    ],
)
def test_invalid_metric_is_dropped_and_counted_never_raised(bad: object) -> None:
    """Bad input never raises into the caller: it returns None and counts under 'invalid'."""
    em = CaptureEmitter()
    assert em.metric(bad) is None  # type: ignore[arg-type]
    assert em.events == [] and em.dropped["invalid"] == 1


def test_backlog_drops_oldest_by_count_and_by_bytes() -> None:
    """A full backlog discards its oldest payloads, whether the bound is count or bytes."""
    by_count = Backlog(max_items=3, max_bytes=1 << 20)
    dropped = sum(by_count.push(bytes([i])) for i in range(5))
    assert dropped == 2 and by_count.take(100) == [b"\x02", b"\x03", b"\x04"]
    by_bytes = Backlog(max_items=None, max_bytes=10)
    dropped = sum(by_bytes.push(b"abcd") for _ in range(4))
    assert dropped == 2 and by_bytes.nbytes == 8 and len(by_bytes) == 2


def test_backlog_putback_restores_order_at_the_front() -> None:
    """An unsent batch goes back in front of newer payloads, in its original order."""
    backlog = Backlog(max_items=None, max_bytes=1 << 20)
    for item in (b"a", b"b", b"c"):
        backlog.push(item)
    batch = backlog.take(2)
    backlog.push(b"d")
    assert backlog.putback(batch) == 0
    assert backlog.take(100) == [b"a", b"b", b"c", b"d"]


def test_backoff_follows_the_original_formula() -> None:
    """Delay is (rand+1) * 10ms * 2^retries, capped at 60 s."""
    assert 0.02 <= backoff(1) <= 0.04
    assert 0.16 <= backoff(4) <= 0.32
    assert backoff(30) == 60.0 and backoff(10_000) == 60.0


def test_timer_emits_elapsed_ms_as_context_manager_and_decorator() -> None:
    """timer() works both ways, and concurrent decorated calls each time themselves."""
    em = CaptureEmitter(app="svc")
    with em.timer("block", kind="cm"):
        pass
    gate = threading.Barrier(2)

    @em.timer("call", kind="deco")
    def work() -> None:
        gate.wait(5)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = sorted(e["name"] for e in em.events)
    assert names == ["svc.block", "svc.call", "svc.call"]
    assert all(isinstance(e["value"], float) and e["value"] >= 0 for e in em.events)
    assert sorted(e["kind"] for e in em.events) == ["cm", "deco", "deco"]  # fields kept


def test_global_emitter_routes_numbat_metric() -> None:
    """numbat.metric() goes to the global emitter, and is a no-op without one."""
    numbat.set_global_emitter(None)
    assert numbat.metric("lost") is None
    with capture_metrics(app="g") as events:
        numbat.metric("found", value=3)
    assert [(e["name"], e["value"]) for e in events] == [("g.found", 3)]
    assert numbat.get_global_emitter() is None


@pytest.mark.parametrize(
    "uri",
    ["http://127.0.0.1:80", "nsq://127.0.0.1:4150", "tcp://127.0.0.1", "tcp://:80", "socket:", 5],
)
def test_bad_uri_raises_at_construction(uri: object) -> None:
    """An unsupported or incomplete destination is a clear error when the emitter is built."""
    with pytest.raises(URIError, match="uri"):
        Emitter(uri, app="x")  # type: ignore[arg-type]


def test_stats_reports_counters() -> None:
    """stats() exposes state, queue depth and drop counts by reason."""
    em = CaptureEmitter()
    em.metric("ok")
    em.metric({})
    stats = em.stats()
    assert stats["sent"] == 1 and stats["dropped"]["invalid"] == 1 and stats["queued"] == 0


def test_timer_value_is_in_milliseconds() -> None:
    """A block that sleeps 50 ms is reported as >= 50 (ms), never as 0.05 (seconds)."""
    em = CaptureEmitter(app="svc")

    @em.timer("call")
    def work() -> None:
        time.sleep(0.05)

    outer = time.perf_counter()
    with em.timer("block"):
        time.sleep(0.05)
    block_ms = (time.perf_counter() - outer) * 1000
    outer = time.perf_counter()
    work()
    call_ms = (time.perf_counter() - outer) * 1000
    block, call = (e["value"] for e in em.events)
    assert isinstance(block, float) and isinstance(call, float)
    # The timer runs inside the outer measurement, so the outer time bounds it above.
    assert 50 <= block <= block_ms, (block, block_ms)
    assert 50 <= call <= call_ms, (call, call_ms)


def test_backlog_counts_bytes_across_take_putback_and_trim() -> None:
    """nbytes stays the sum of what is queued through take/putback, a backlog exactly at
    its byte cap keeps everything, and a trim reports every payload it dropped."""
    backlog = Backlog(max_items=None, max_bytes=6)
    assert (backlog.push(b"aaa"), backlog.push(b"bb")) == (0, 0)
    batch = backlog.take(4)  # b"aaa" and b"bb": take goes past max_bytes by one payload
    assert (batch, backlog.nbytes) == ([b"aaa", b"bb"], 0)
    assert backlog.push(b"c") == 0
    assert backlog.putback(batch) == 0  # 3 + 2 + 1 = 6 bytes: exactly the cap, all kept
    assert (len(backlog), backlog.nbytes) == (3, 6)
    assert backlog.push(b"dddd") == 2  # 10 bytes: the two oldest (aaa, bb) go
    assert (backlog.take(100), backlog.nbytes) == ([b"c", b"dddd"], 0)
