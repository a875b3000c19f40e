"""Rate-limited logging: one line per key per interval, then the held-back count."""

from __future__ import annotations

import logging

import pytest

from numbat._ratelimit import RateLimitedLog


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    messages = [r.getMessage() for r in caplog.records if r.name == "tests.ratelimit"]
    caplog.clear()
    return messages


def test_logs_again_once_the_interval_has_passed_with_the_held_back_count(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """After the interval the next message is logged, saying how many were held back."""
    caplog.set_level(logging.WARNING, logger="tests.ratelimit")
    limiter = RateLimitedLog(logging.getLogger("tests.ratelimit"), interval=10.0, clock=clock)
    limiter.warning("k", "bad %s", "one")
    assert _messages(caplog) == ["bad one"]
    for _ in range(3):
        clock.now += 3.0  # 9 s after the first: still within the interval
        limiter.warning("k", "bad %s", "held")
    assert _messages(caplog) == []
    clock.now += 1.0  # exactly one interval after the first
    limiter.warning("k", "bad %s", "again")
    assert _messages(caplog) == ["bad again (3 similar messages suppressed)"]
    # A new interval starts there; the count starts again from zero.
    clock.now += 9.5
    limiter.warning("k", "bad %s", "held")
    assert _messages(caplog) == []
    clock.now += 0.5
    limiter.warning("k", "bad %s", "third")
    assert _messages(caplog) == ["bad third (1 similar messages suppressed)"]
    clock.now += 60.0
    limiter.warning("k", "bad %s", "quiet")
    assert _messages(caplog) == ["bad quiet"]


def test_keys_are_limited_separately(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    """One noisy key does not hold back a message under another key."""
    caplog.set_level(logging.WARNING, logger="tests.ratelimit")
    limiter = RateLimitedLog(logging.getLogger("tests.ratelimit"), interval=10.0, clock=clock)
    limiter.warning("a", "a %d", 1)
    limiter.warning("a", "a %d", 2)
    limiter.warning("b", "b %d", 1)
    assert _messages(caplog) == ["a 1", "b 1"]
    clock.now += 10.0
    limiter.warning("b", "b %d", 2)
    limiter.warning("a", "a %d", 3)
    assert _messages(caplog) == ["b 2", "a 3 (1 similar messages suppressed)"]
