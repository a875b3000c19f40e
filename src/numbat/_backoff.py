"""Retry delays, in seconds: the one place numbat computes how long to wait before retrying.

Two formulas, each with its source:

* :func:`reconnect` is the original numbat-emitter's reconnect delay (``(rand + 1) * 10 *
  2**retries`` ms, capped at 60 s), used by every numbat client and the collector's
  TCP senders, so a fleet reconnecting to a restarted peer spreads out.
* :func:`full_jitter` is "exponential backoff with full jitter" (AWS Architecture Blog,
  *Exponential Backoff And Jitter*, 2015): uniform in ``[0, min(cap, base * 2**attempt)]``,
  used for HTTP retries (InfluxDB), where many writers hitting one struggling server must
  not retry in step.
"""

from __future__ import annotations

import random
from collections.abc import Callable

Backoff = Callable[[int], float]
"""``delay(attempt) -> seconds``: what every retry loop takes, so tests can inject one."""

RECONNECT_CAP_MS = 60_000.0
JITTER_BASE = 0.1
JITTER_CAP = 30.0


def reconnect(retries: int) -> float:
    """Seconds before reconnect attempt ``retries`` (0, 1, ...): the original's formula.

    ``min((rand + 1) * 10 * 2**retries, 60000)`` milliseconds, so between 10 and 20 ms
    for the first attempt, doubling, capped at 60 s.

    >>> 0.010 <= reconnect(0) <= 0.020, 0.080 <= reconnect(3) <= 0.160, reconnect(40)
    (True, True, 60.0)
    """
    millis = (random.random() + 1) * 10 * 2.0 ** min(retries, 32)
    return min(millis, RECONNECT_CAP_MS) / 1000


def full_jitter(attempt: int, base: float = JITTER_BASE, cap: float = JITTER_CAP) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): uniform in
    ``[0, min(cap, base * 2**attempt)]``.

    >>> all(0 <= full_jitter(3) <= 0.8 for _ in range(100)), full_jitter(1, cap=0)
    (True, 0.0)
    """
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 30)))
