"""Retry delays (numbat._backoff): full jitter's spread and growth, by sampling."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from numbat._backoff import full_jitter

SAMPLES = 2_000
# The upper bound per attempt (1, 2, ...): 0.1 s * 2**attempt, doubling until the 30 s cap.
BOUNDS = [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0]


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
