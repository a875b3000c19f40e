"""Retry delays (numbat._backoff): both formulas' spread, growth and cap, by sampling."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from numbat._backoff import full_jitter, reconnect

SAMPLES = 2_000
# full_jitter's upper bound per attempt (1, 2, ...): 0.1 s * 2**attempt, to the 30 s cap.
BOUNDS = [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0]
RECONNECT_SAMPLES = 500


@pytest.fixture
def seeded() -> Iterator[None]:
    """A fixed seed (the same samples on every run), the global generator restored after."""
    state = random.getstate()
    random.seed(20150304)
    yield
    random.setstate(state)


@pytest.mark.usefixtures("seeded")
def test_full_jitter_spreads_and_doubles_up_to_the_cap() -> None:
    """Delays vary over all of [0, bound], mean near half, bound doubling per attempt to 30 s."""
    for attempt, bound in enumerate(BOUNDS, start=1):
        delays = [full_jitter(attempt) for _ in range(SAMPLES)]
        assert all(0 <= delay <= bound for delay in delays), attempt
        assert len(set(delays)) > SAMPLES * 0.99, attempt
        assert min(delays) < 0.05 * bound and max(delays) > 0.95 * bound, attempt
        assert 0.45 * bound < sum(delays) / SAMPLES < 0.55 * bound, attempt
    assert max(full_jitter(10_000) for _ in range(SAMPLES)) <= 30.0


@pytest.mark.parametrize("retries", range(12))
def test_reconnect_is_jittered_across_10_to_20_ms_times_2_to_the_retries(retries: int) -> None:
    """Delays for retry n vary and fill [10, 20] * 2^n ms: jittered, doubling per retry."""
    low, high = 10 * 2**retries / 1000, 20 * 2**retries / 1000  # seconds
    delays = [reconnect(retries) for _ in range(RECONNECT_SAMPLES)]
    assert all(low <= d <= high for d in delays), (low, high, min(delays), max(delays))
    assert len(set(delays)) > RECONNECT_SAMPLES // 2, "no jitter"
    # Uniform over the range: 500 draws all missing its bottom or top 5% has odds of 1e-11.
    spread = high - low
    assert min(delays) < low + 0.05 * spread and max(delays) > high - 0.05 * spread


def test_reconnect_is_capped_at_60_s() -> None:
    """Past 40.96 s the range meets the 60 s cap: delays stop there, then are exactly 60 s."""
    delays = [reconnect(12) for _ in range(RECONNECT_SAMPLES)]  # (rand + 1) * 40.96 s, capped
    assert all(40.96 <= d <= 60.0 for d in delays)
    assert max(delays) == 60.0 and min(delays) < 60.0
    for retries in (13, 14, 20, 32, 33, 100, 10_000):
        assert {reconnect(retries) for _ in range(50)} == {60.0}, retries
