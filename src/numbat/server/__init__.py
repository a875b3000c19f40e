"""What every numbat daemon stands on: framing, listeners, self-monitoring, lifecycle.

The collector, the analyzer and the dashboard import this package; it imports none of
them (``tests/test_layers.py`` keeps it so). Modules:

* :mod:`~numbat.server.framing`: bytes -> lines (with a cap) -> events, reject reasons;
* :mod:`~numbat.server.stats`: counters and gauges -> ``numbat.<daemon>.*`` events;
* :mod:`~numbat.server.listeners`: the :class:`Listener` base and tcp, unix, udp, ws;
* :mod:`~numbat.server.lifecycle`: start / serve / reload / drain / stop, signals set once;
* :mod:`~numbat.server.supervisor`: several worker processes of one daemon.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProcessContext:
    """Which of a daemon's worker processes this code runs in (``workers = N``).

    Given to plug-ins at construction, so that one which keeps files per process (the
    InfluxDB output's spool) or writes series keys (its tie-breaker) can tell its
    process apart.

    >>> ProcessContext(worker=1, workers=2).shared
    True
    """

    worker: int = 0
    workers: int = 1

    @property
    def shared(self) -> bool:
        """Several processes serve the same addresses (SO_REUSEPORT)."""
        return self.workers > 1
