"""Storage: the :class:`Store` interface that the dashboard and the analyzer read through.

Two backends implement it: InfluxDB 1.x (``numbat.store.influx``, InfluxQL over HTTP)
and an embedded SQLite store (``numbat.store.sqlite``) for one machine with no
database server. Events become points the same way for both (``numbat.store.points``):
measurement = event ``name``, one numeric field ``value``, time = the event's ``time``,
other scalar fields as tags, free-text fields (``description``, ``message``) as fields,
which :meth:`Store.annotations` reads back (a deploy note on a graph).
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Literal, NamedTuple

from numbat.event import Event, Scalar
from numbat.hints import Hint, guess, hint_of

Aggregate = Literal["mean", "min", "max", "count", "last", "p50", "p90", "p99", "rate"]
AGGREGATES: tuple[Aggregate, ...] = (
    "mean",
    "min",
    "max",
    "count",
    "last",
    "p50",
    "p90",
    "p99",
    "rate",
)
PERCENTILES: Mapping[str, int] = {"p50": 50, "p90": 90, "p99": 99}
MAX_BUCKETS = 1_000_000
MAX_SERIES = 10_000
"""Most series one :meth:`Store.series_info` answers."""
MAX_GROUPS = 1_000
"""Most groups one :meth:`Store.query_by` answers."""
MAX_RATE_POINTS = 2_000_000
"""Most points one ``rate`` query reads (it reads them all, per series)."""
RECENT_POINTS = 20
"""The newest points of a series that :meth:`Store.series_info` guesses a hint from."""
ANNOTATIONS_LIMIT = 1_000
EVENTS_PAGE = 5_000
"""Points per read of :meth:`Store.events` (what it holds in memory at a time)."""


def bucket_count(start: int, end: int, bucket: int, aggregate: str) -> int:
    """How many buckets a query returns; ValueError for arguments no backend accepts.

    >>> bucket_count(0, 3_600_000, 60_000, "mean")
    60
    """
    if bucket <= 0:
        raise ValueError(f"bucket must be a positive number of ms, got {bucket}")
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}; got {aggregate!r}")
    count = max(0, -(-(end - start) // bucket))
    if count > MAX_BUCKETS:
        raise ValueError(f"start, end, bucket: {count} buckets; the limit is {MAX_BUCKETS}")
    return count


class Series(NamedTuple):
    """One series: a measurement and its tag set (sorted by key)."""

    measurement: str
    tags: tuple[tuple[str, str], ...]


class Bucket(NamedTuple):
    """One time bucket of a range query: its start (ms) and the aggregate, if any points."""

    start: int
    value: float | None


class SeriesInfo(NamedTuple):
    """One series with its display hint (its own, else guessed from its newest
    :data:`RECENT_POINTS` points: see :mod:`numbat.hints`) and its newest point (time in
    ms and value; None when it has none)."""

    measurement: str
    tags: tuple[tuple[str, str], ...]
    hint: Hint
    newest_time: int | None
    newest_value: float | None


def series_hint(tags: Iterable[tuple[str, str]], values: Sequence[float], has_text: bool) -> Hint:
    """A series' own hint (from its tags), else the one :func:`numbat.hints.guess` gives
    from its recent ``values`` (oldest first) and whether any of them has text."""
    return hint_of(dict(tags)) or guess(values, has_text)


def check_series_limit(limit: int) -> None:
    """ValueError unless ``1 <= limit <= MAX_SERIES``."""
    if not 1 <= limit <= MAX_SERIES:
        raise ValueError(f"limit must be between 1 and {MAX_SERIES} series, got {limit}")


def check_groups(by: str, limit: int, buckets: int) -> None:
    """ValueError for a :meth:`Store.query_by` that names no tag or asks too much:
    ``limit`` outside 1..MAX_GROUPS, or ``limit`` x buckets past MAX_BUCKETS."""
    if not by:
        raise ValueError("by must name a tag, got ''")
    if not 1 <= limit <= MAX_GROUPS:
        raise ValueError(f"limit must be between 1 and {MAX_GROUPS} groups, got {limit}")
    if limit * buckets > MAX_BUCKETS:
        raise ValueError(
            f"limit: {limit} groups of {buckets} buckets; the limit is {MAX_BUCKETS} buckets"
        )


def busiest(counts: Mapping[str, int], limit: int) -> list[str]:
    """The ``limit`` tag values with the most points (ties by value), busiest first;
    values with no point are left out.

    >>> busiest({"a": 3, "b": 5, "c": 3, "d": 0}, 2)
    ['b', 'a']
    """
    ranked = sorted((-n, value) for value, n in counts.items() if n > 0)
    return [value for _, value in ranked[:limit]]


def nearest_rank(count: int, percentile: int) -> int:
    """The 1-based rank of the ``percentile`` of ``count`` sorted values, as InfluxDB's
    ``PERCENTILE()`` picks it: ``floor(count * percentile / 100 + 0.5)`` (computed in
    floating point in that order, as influxd does).

    >>> nearest_rank(10, 90), nearest_rank(1, 99), nearest_rank(4, 50)
    (9, 1, 2)
    """
    return math.floor(count * percentile / 100.0 + 0.5)


def rate_buckets(
    series: Iterable[tuple[Iterable[tuple[str, str]], Sequence[tuple[int, float]]]],
    start: int,
    bucket: int,
) -> dict[int, float]:
    """The ``rate`` aggregate per bucket index, from each series' tags and its points in
    the query's range (time ms, value), in time order (a millisecond's points in write
    order). Per second, in two ways by what the series' values are:

    * Increments (a series whose own hint is ``counter``: what the emitter's
      ``counter()`` sends, as StatsD counters are): every point adds its value to its
      bucket.
    * Running totals (any other series: a counter read from a device, guessed from its
      rising values): every point after the series' first in the range adds its increase
      over the point before it to its own bucket: ``value - previous``, or ``value``
      when the value dropped (a counter reset counts from zero).

    A bucket's rate is the sum of what it got, over all series, divided by the bucket's
    length in seconds; a bucket that got nothing has no value. Sums are exact
    (:func:`math.fsum`), so the order series come in does not change the answer.

    >>> totals = ((), [(0, 5.0), (500, 7.0), (1_500, 1.0)])
    >>> rate_buckets([totals], 0, 1_000)
    {0: 2.0, 1: 1.0}
    >>> rate_buckets([((("type", "counter"),), [(0, 1.0), (500, 1.0), (1_500, 3.0)])], 0, 1_000)
    {0: 2.0, 1: 3.0}
    """
    increases: dict[int, list[float]] = {}
    for tags, points in series:
        if hint_of(dict(tags)) == "counter":
            for time, value in points:
                increases.setdefault((time - start) // bucket, []).append(value)
            continue
        for (_, before), (time, value) in pairwise(points):
            step = value - before if value >= before else value
            increases.setdefault((time - start) // bucket, []).append(step)
    seconds = bucket / 1000
    return {index: math.fsum(steps) / seconds for index, steps in sorted(increases.items())}


def check_rate_points(count: int) -> None:
    """ValueError when a ``rate`` query would read more than MAX_RATE_POINTS points."""
    if count > MAX_RATE_POINTS:
        raise ValueError(
            f"start, end: the range holds more than {MAX_RATE_POINTS} points for aggregate"
            " 'rate'; ask for a shorter range"
        )


class WriteResult(NamedTuple):
    """What :meth:`Store.write` did with the events it was given, in points.

    ``written``: stored. ``skipped``: not meant to be stored (heartbeats, a time the
    backend cannot hold). ``expired``: older than the store's retention, so not stored
    (SQLite: ``retention_ms``; InfluxDB: its retention policy's duration).
    """

    written: int
    skipped: int = 0
    expired: int = 0


class Annotation(NamedTuple):
    """One stored point's text: its time (ms), measurement, tags (sorted by key) and its
    text fields (``{"description": "deployed v1.2"}``): what a graph shows as a note."""

    time: int
    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: dict[str, str]


def glob_regex(pattern: str) -> str:
    r"""A measurement pattern as an anchored regular expression that Python and Go
    (InfluxQL) read alike: ``*`` is any text, ``?`` one character, the rest literal.
    ASCII punctuation is escaped with a backslash (the one escape both read as the
    character itself), ``/`` too, so the expression can stand in InfluxQL's ``/.../``.

    >>> glob_regex("deploy.*"), glob_regex("a/b?")
    ('^deploy\\..*$', '^a\\/b.$')
    """
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        elif char.isascii() and not char.isalnum() and char != "_":
            parts.append("\\" + char)  # punctuation escaped means itself in both
        else:
            parts.append(char)
    return "^" + "".join(parts) + "$"


def glob_matcher(pattern: str) -> re.Pattern[str]:
    """:func:`glob_regex` compiled, for matching measurement names in Python."""
    return re.compile(glob_regex(pattern), re.DOTALL)


def newest(found: Iterable[Annotation], limit: int) -> list[Annotation]:
    """The ``limit`` newest annotations in time order; ties by measurement and tags, and
    within one series in the order they come (the order the store keeps them)."""
    ordered = sorted(found, key=lambda a: (a.time, a.measurement, a.tags))
    return ordered[-limit:] if limit else []


def point_event(
    measurement: str,
    tags: Iterable[tuple[str, str]],
    time: int,
    value: float,
    texts: Mapping[str, Scalar] | None = None,
) -> Event:
    """A stored point as an event (see :meth:`Store.events`).

    >>> point_event("web.requests", (("host", "a"),), 5, 2.0, {"message": "x"})
    {'name': 'web.requests', 'value': 2.0, 'time': 5, 'host': 'a', 'message': 'x'}
    """
    event: Event = {"name": measurement, "value": value, "time": time}
    event.update(tags)
    if texts:
        event.update(texts)
    return event


class Page(NamedTuple):
    """One read of :func:`paged_events`: ``(sort key, event)`` pairs in the order the
    backend keeps them (each series' points in the order written), and the time (ms)
    up to which they are all there: every point before ``complete`` in the window was
    returned (``complete`` is the window's end unless a limit cut the read short)."""

    rows: list[tuple[tuple[int, str, tuple[tuple[str, str], ...]], Event]]
    complete: int


FIRST_WINDOW = 60_000  # ms read by the first query of paged_events


async def paged_events(
    fetch: Callable[[int, int, int | None], Awaitable[Page]],
    start: int,
    end: int,
    page: int,
) -> AsyncIterator[Event]:
    """:meth:`Store.events` for any backend, given ``fetch(low, high, limit)``: the
    points in ``[low, high)``, at most ``limit`` (None: all) per read.

    Reads a time window at a time, halving the window when a read comes back cut
    short (too dense) and doubling it while reads come back less than half full, so
    each read holds about ``page`` points and a sparse range costs few reads. Points
    past where a cut-short read is complete are read again with the next window, so
    every millisecond is sorted whole (by measurement, then tags)."""
    if page < 1:
        raise ValueError(f"page must be a positive number of points, got {page}")
    low, window = start, FIRST_WINDOW
    while low < end:
        high = min(end, low + window)
        found = await fetch(low, high, page)
        if found.complete <= low:  # one millisecond holds more than a page: read it whole
            high = low + 1
            found = await fetch(low, high, None)
        done = found.complete
        ready = [row for row in found.rows if row[0][0] < done]
        ready.sort(key=lambda row: row[0])  # stable: a series keeps its written order
        for _, event in ready:
            yield event
        if done < high:
            window = max(1, (done - low) // 2 or 1)
        elif 2 * len(found.rows) <= page:
            window *= 2
        low = done


def check_limit(limit: int) -> None:
    """ValueError unless ``limit`` is a positive number of annotations."""
    if limit <= 0:
        raise ValueError(f"limit must be a positive number of annotations, got {limit}")


class Store(ABC):
    """Write events, list series, and query a series over time in buckets.

    Example::

        await store.write(events)  # WriteResult(written=..., skipped=..., expired=...)
        for series in await store.series("web.requests"):
            buckets = await store.query(series.measurement, dict(series.tags),
                                        start=t0, end=t1, bucket=60_000, aggregate="mean")
        notes = await store.annotations("deploy.*", start=t0, end=t1)
        infos = await store.series_info("web.*")  # [SeriesInfo(..., hint="counter", ...)]
        by_host = await store.query_by("web.latency", {}, "host", start=t0, end=t1,
                                       bucket=60_000, aggregate="p99")

    Aggregates (``value`` per bucket): ``mean``, ``min``, ``max``, ``count``, ``last``;
    ``p50``, ``p90``, ``p99``: the nearest-rank percentile of the bucket's points (the
    value at rank :func:`nearest_rank` of them sorted, as InfluxDB's ``PERCENTILE()``);
    ``rate``: increase per second, counter resets counted from zero (see
    :func:`rate_buckets`).
    """

    @abstractmethod
    async def write(self, events: Sequence[Event]) -> WriteResult:
        """Store events (each a valid event: see numbat.event); how many points were
        written, skipped and expired."""

    @abstractmethod
    async def series(self, measurement: str | None = None) -> list[Series]:
        """Every series, or those of one measurement."""

    @abstractmethod
    async def query(
        self,
        measurement: str,
        tags: Mapping[str, str],
        *,
        start: int,
        end: int,
        bucket: int,
        aggregate: Aggregate = "mean",
    ) -> list[Bucket]:
        """``aggregate`` of ``value`` per ``bucket`` ms in ``[start, end)`` (ms since the
        epoch), over the points of ``measurement`` whose tags include ``tags``; one
        Bucket per interval, ``value`` None where there was no point."""

    @abstractmethod
    async def annotations(
        self,
        pattern: str = "*",
        tags: Mapping[str, str] | None = None,
        *,
        start: int,
        end: int,
        limit: int = ANNOTATIONS_LIMIT,
    ) -> list[Annotation]:
        """The points with text (``description``, ``message``: the text fields) in
        ``[start, end)`` ms, of the measurements matching ``pattern`` (``*`` any text,
        ``?`` one character) whose tags include ``tags``: the ``limit`` newest, in time
        order (see :func:`newest`). ValueError for a ``limit`` below 1."""

    @abstractmethod
    def events(
        self, *, start: int, end: int, pattern: str = "*", page: int = EVENTS_PAGE
    ) -> AsyncIterator[Event]:
        """The stored points in ``[start, end)`` ms of the measurements matching
        ``pattern``, back as events, in time order (ties by measurement, then tags,
        then the order they were written): ``{"name": measurement, "value": float,
        "time": ms, **tags, **text fields}``. Tag values come back as the text they
        were stored as (``"4"``, ``"true"``); number fields (``ttl``) come back where
        the backend keeps them (InfluxDB; SQLite does not). Reads ``page`` points at a
        time (more only when one millisecond holds more), so memory stays bounded
        however long the range.
        ValueError for a ``page`` below 1."""

    @abstractmethod
    async def series_info(self, pattern: str = "*", *, limit: int = MAX_SERIES) -> list[SeriesInfo]:
        """Every series of the measurements matching ``pattern`` (``*`` any text, ``?``
        one character) with its display hint (its own from its tags, else guessed from
        its newest :data:`RECENT_POINTS` points) and its newest point; sorted by
        measurement then tags, the first ``limit``. ValueError for a ``limit`` outside
        1..MAX_SERIES."""

    @abstractmethod
    async def query_by(
        self,
        measurement: str,
        tags: Mapping[str, str],
        by: str,
        *,
        start: int,
        end: int,
        bucket: int,
        aggregate: Aggregate = "mean",
        limit: int = MAX_GROUPS,
    ) -> dict[str, list[Bucket]]:
        """:meth:`query` once per value of the tag ``by`` (``web.latency`` by ``host``),
        over the series whose tags include ``tags``: ``{tag value: buckets}``, the
        ``limit`` values with the most points in ``[start, end)`` (ties by value),
        busiest first; series without the tag and values with no point in the range are
        left out. ValueError for an empty ``by``, a ``limit`` outside 1..MAX_GROUPS, or
        more than MAX_BUCKETS buckets in all (``limit`` x buckets), and as :meth:`query`."""

    async def close(self) -> None:
        """Release connections and files."""
