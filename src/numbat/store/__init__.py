"""Storage: the :class:`Store` interface that the dashboard and the analyzer read through.

Two backends implement it: InfluxDB 1.x (``numbat.store.influx``, InfluxQL over HTTP)
and an embedded SQLite store (``numbat.store.sqlite``) for one machine with no
database server. Events become points the same way for both (``numbat.store.points``):
measurement = event ``name``, one numeric field ``value``, time = the event's ``time``,
other scalar fields as tags, free-text fields (``description``, ``message``) as fields,
which :meth:`Store.annotations` reads back (a deploy note on a graph).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Literal, NamedTuple

from numbat.event import Event, Scalar

Aggregate = Literal["mean", "min", "max", "count", "last"]
AGGREGATES: tuple[Aggregate, ...] = ("mean", "min", "max", "count", "last")
MAX_BUCKETS = 1_000_000
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
        raise ValueError(f"{count} buckets; the limit is {MAX_BUCKETS}")
    return count


class Series(NamedTuple):
    """One series: a measurement and its tag set (sorted by key)."""

    measurement: str
    tags: tuple[tuple[str, str], ...]


class Bucket(NamedTuple):
    """One time bucket of a range query: its start (ms) and the aggregate, if any points."""

    start: int
    value: float | None


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

    async def close(self) -> None:
        """Release connections and files."""
