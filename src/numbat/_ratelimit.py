"""Rate-limited logging: one line per key per interval, with a count of what was held back."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """Log at most one message per ``key`` every ``interval`` seconds.

    >>> import sys
    >>> demo, handler = logging.getLogger("demo"), logging.StreamHandler(sys.stdout)
    >>> demo.addHandler(handler)  # print what is logged
    >>> demo.propagate = False
    >>> now = 0.0
    >>> log = RateLimitedLog(demo, interval=60.0, clock=lambda: now)
    >>> log.warning("bad_json", "rejected %s", "a line")  # logged
    rejected a line
    >>> log.warning("bad_json", "rejected %s", "a line")  # held back and counted
    >>> log.warning("bad_frame", "rejected %s", "a frame")  # another key: logged
    rejected a frame
    >>> now = 60.0
    >>> log.warning("bad_json", "rejected %s", "a line")  # a minute later: logged
    rejected a line (1 similar messages suppressed)
    >>> demo.removeHandler(handler)
    >>> demo.propagate = True
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = self._clock()
        if now < self._next.get(key, 0.0):
            self._held[key] = self._held.get(key, 0) + 1
            return
        self._next[key] = now + self._interval
        held = self._held.pop(key, 0)
        if held:
            msg += " (%d similar messages suppressed)"
            args = (*args, held)
        self._logger.warning(msg, *args)
