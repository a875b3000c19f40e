"""A daemon's own counters and gauges, turned into events for its pipeline (self-monitoring).

Every figure is named ``<prefix>.<metric>`` (``numbat.collector.received``,
``numbat.analyzer.rules.errors``); what it is about (a listener, an output, a server it
sends to) goes in tags, never in the name, so one measurement holds every instance and
a rule or a graph can select or group them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from numbat._ratelimit import RateLimitedLog
from numbat.event import Event, now_ms

Key = tuple[str, tuple[tuple[str, str], ...]]
T = TypeVar("T")
log = logging.getLogger(__name__)


class Stats:
    """Counters by metric and tags, reported as deltas since the previous report.

    >>> stats = Stats(host="h1", prefix="numbat.collector", clock=lambda: 1000)
    >>> stats.count("received", listener="tcp://127.0.0.1:3333", amount=5)
    >>> received, heartbeat = stats.report(interval=10.0)
    >>> received["name"], received["value"], received["listener"]
    ('numbat.collector.received', 5, 'tcp://127.0.0.1:3333')
    >>> heartbeat["name"], heartbeat["ttl"]
    ('numbat.collector.heartbeat', 25000)
    """

    def __init__(
        self,
        host: str,
        prefix: str,
        clock: Callable[[], int] = now_ms,
        tags: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self.prefix = prefix
        self.tags = tags or {}
        self.totals: Counter[Key] = Counter()
        self._reported: Counter[Key] = Counter()
        self._gauges: dict[Key, Callable[[], float]] = {}
        self._gauge_sets: dict[Key, Callable[[], dict[str, float]]] = {}
        self._gauge_groups: dict[Key, tuple[str, Callable[[], dict[str, dict[str, float]]]]] = {}
        self._hooks: dict[Key, Callable[[], None]] = {}
        # Counters kept elsewhere (the kernel's): their reader and the last total read.
        self._followed: dict[Key, tuple[Callable[[], int | None], int]] = {}
        self._clock = clock
        self._warn = RateLimitedLog(log)

    def count(self, metric: str, amount: int = 1, **tags: str) -> None:
        self.totals[self.key(metric, **tags)] += amount

    @staticmethod
    def key(metric: str, **tags: str) -> Key:
        """A counter's key, for :meth:`add` on hot paths (building it sorts the tags)."""
        return (metric, tuple(sorted(tags.items())))

    def add(self, key: Key, amount: int) -> None:
        self.totals[key] += amount

    def get(self, metric: str, **tags: str) -> int:
        return self.totals[(metric, tuple(sorted(tags.items())))]

    def sum(self, metric: str) -> int:
        """Total of ``metric`` over every tag combination."""
        return sum(n for (name, _), n in self.totals.items() if name == metric)

    def gauge(self, metric: str, read: Callable[[], float], **tags: str) -> None:
        """Report ``read()`` under ``metric`` at every report (e.g. a queue depth)."""
        self._gauges[(metric, tuple(sorted(tags.items())))] = read

    def gauges(self, prefix: str, read: Callable[[], dict[str, float]], **tags: str) -> None:
        """Report every ``name: value`` of ``read()`` as ``prefix + name`` at every report."""
        self._gauge_sets[(prefix, tuple(sorted(tags.items())))] = read

    def gauges_by(
        self, prefix: str, tag: str, read: Callable[[], dict[str, dict[str, float]]], **tags: str
    ) -> None:
        """Like :meth:`gauges`, for figures per peer: ``read()`` gives ``{peer: {name:
        value}}`` and each figure carries the peer as the tag ``tag`` (never in its name).
        """
        self._gauge_groups[(prefix, tuple(sorted(tags.items())))] = (tag, read)

    def before_report(self, run: Callable[[], None], **tags: str) -> None:
        """Call ``run()`` at the start of every report, to count what is only known on
        demand (what an output lost inside itself); one per set of ``tags``."""
        self._hooks[("", tuple(sorted(tags.items())))] = run

    def follow(self, metric: str, read: Callable[[], int | None], **tags: str) -> None:
        """Count into ``metric`` what a counter kept elsewhere adds (the kernel's drops of
        a socket): ``read()`` gives its running total, or None when it cannot be read
        now; at every report, and a last time at :meth:`forget`, its growth since the
        previous reading is added to ``metric`` (so it is reported as a delta too).
        """
        self._followed[self.key(metric, **tags)] = (read, self._read(read, None) or 0)

    def forget(self, **tags: str) -> None:
        """Stop reporting gauges (and calling hooks) carrying these tags (a removed
        listener or output); a followed counter carrying them is read one last time
        first."""
        wanted = set(tags.items())
        gone = [k for k in self._followed if wanted <= set(k[1])]
        self._catch_up(gone)
        for key in gone:
            del self._followed[key]
        for table in (self._gauges, self._gauge_sets, self._gauge_groups, self._hooks):
            for key in [k for k in table if wanted <= set(k[1])]:
                del table[key]

    def _catch_up(self, keys: list[Key]) -> None:
        """Add to each followed counter what its outside total grew by since last read."""
        for key in keys:
            read, last = self._followed[key]
            total = self._read(read, None)
            if total is None:
                continue
            # A total that went down was reset (a new socket): count from it afresh.
            self.totals[key] += max(total - last, 0)
            self._followed[key] = (read, total)

    def report(self, interval: float) -> list[Event]:
        """Events for what changed since the last report, the gauges, and a heartbeat.

        A gauge whose reader (or a hook) raises (a plug-in's ``stats()``) is left out of
        this report, counted as ``stats_errors`` and logged: the rest, and the heartbeat,
        still go.
        """
        for run in list(self._hooks.values()):
            self._read(run, None)
        now = self._clock()
        self._catch_up(list(self._followed))
        events = [
            self._event(key, total - self._reported[key], now)
            for key, total in self.totals.items()
            if total != self._reported[key]
        ]
        self._reported = Counter(self.totals)
        for key, read in self._gauges.items():
            value = self._read(read, None)
            if value is not None:
                events.append(self._event(key, value, now))
        for (prefix, tags), read_all in self._gauge_sets.items():
            figures: dict[str, float] = self._read(read_all, {})
            events += [self._event((prefix + n, tags), v, now) for n, v in figures.items()]
        for (prefix, tags), (tag, read_groups) in self._gauge_groups.items():
            groups: dict[str, dict[str, float]] = self._read(read_groups, {})
            for peer, figures in groups.items():
                peer_tags = tuple(sorted((*tags, (tag, peer))))
                events += [self._event((prefix + n, peer_tags), v, now) for n, v in figures.items()]
        # The ttl spans two reports: missing both means the collector is gone.
        heartbeat = self._event(("heartbeat", ()), 1, now)
        heartbeat["ttl"] = round(interval * 2500)
        events.append(heartbeat)
        return events

    def _read(self, read: Callable[[], T], default: T) -> T:
        try:
            return read()
        except Exception as exc:
            self.count("stats_errors")
            self._warn.warning("read", "a self-monitoring figure failed: %r", exc)
            return default

    def _event(self, key: Key, value: float, now: int) -> Event:
        metric, tags = key
        event: Event = {"name": f"{self.prefix}.{metric}", "host": self.host, "time": now}
        event.update(self.tags)
        event.update(tags)
        event["value"] = value
        return event
