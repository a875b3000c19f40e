"""Storage: the :class:`Store` interface that the dashboard and the analyzer read through.

Two backends implement it: InfluxDB 1.x (``numbat.store.influx``, InfluxQL over HTTP)
and an embedded SQLite store (``numbat.store.sqlite``) for one machine with no
database server. Events become points the same way for both (``numbat.store.points``):
measurement = event ``name``, one numeric field ``value``, time = the event's ``time``,
other scalar fields as tags, free-text fields (``description``, ``message``) as fields.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

from numbat.event import Event

Aggregate = Literal["mean", "min", "max", "count", "last"]
AGGREGATES: tuple[Aggregate, ...] = ("mean", "min", "max", "count", "last")
MAX_BUCKETS = 1_000_000


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


class Store(ABC):
    """Write events, list series, and query a series over time in buckets.

    Example::

        await store.write(events)
        for series in await store.series("web.requests"):
            buckets = await store.query(series.measurement, dict(series.tags),
                                        start=t0, end=t1, bucket=60_000, aggregate="mean")
    """

    @abstractmethod
    async def write(self, events: Sequence[Event]) -> None:
        """Store events (each a valid event: see numbat.event)."""

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

    async def close(self) -> None:
        """Release connections and files."""
