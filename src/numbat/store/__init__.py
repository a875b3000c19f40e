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
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, NamedTuple

from numbat.event import Event

Aggregate = Literal["mean", "min", "max", "count", "last"]
AGGREGATES: tuple[Aggregate, ...] = ("mean", "min", "max", "count", "last")
MAX_BUCKETS = 1_000_000
ANNOTATIONS_LIMIT = 1_000


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

    async def close(self) -> None:
        """Release connections and files."""
