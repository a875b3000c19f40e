"""Retry delays: the emitter's reconnect backoff (the original numbat-emitter's formula)."""

from __future__ import annotations

import pytest

from numbat._backoff import reconnect

SAMPLES = 500


@pytest.mark.parametrize("retries", range(12))
def test_reconnect_is_jittered_across_10_to_20_ms_times_2_to_the_retries(retries: int) -> None:
    """Delays for retry n vary and fill [10, 20] * 2^n ms: jittered, doubling per retry."""
    low, high = 10 * 2**retries / 1000, 20 * 2**retries / 1000  # seconds
    delays = [reconnect(retries) for _ in range(SAMPLES)]
    assert all(low <= d <= high for d in delays), (low, high, min(delays), max(delays))
    assert len(set(delays)) > SAMPLES // 2, "no jitter"
    # Uniform over the range: 500 draws all missing its bottom or top 5% has odds of 1e-11.
    spread = high - low
    assert min(delays) < low + 0.05 * spread and max(delays) > high - 0.05 * spread


def test_reconnect_is_capped_at_60_s() -> None:
    """Past 40.96 s the range meets the 60 s cap: delays stop there, then are exactly 60 s."""
    delays = [reconnect(12) for _ in range(SAMPLES)]  # (rand + 1) * 40.96 s, capped
    assert all(40.96 <= d <= 60.0 for d in delays)
    assert max(delays) == 60.0 and min(delays) < 60.0
    for retries in (13, 14, 20, 32, 33, 100, 10_000):
        assert {reconnect(retries) for _ in range(50)} == {60.0}, retries
