"""What one graph shows, as JSON for the page: the series (one a group, or the
p50/p90/p99 of a timing), drawn by their display hint, the annotations of the same app
and host, the incidents of the series as bands, and a Grafana link."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

from numbat.config import DashboardConfig
from numbat.dashboard import compat
from numbat.dashboard.sources import AnalyzerClient, AnalyzerError
from numbat.store import Bucket, Store

MAX_POINTS = 400
"""Buckets a graph asks for at most, whatever its range (uPlot draws a point a pixel)."""
MAX_GROUPS = 20
"""Lines on one graph grouped by a tag, at most (the first in tag order)."""
MAX_MARKERS = 200
"""Annotation markers on one graph, at most (the newest)."""
MAX_SERIES = 2000
"""Series the series list holds, at most."""
OWN = ("numbat.alert", "numbat.alerts")
DEFAULT_VALUE = 1.0
"""The value an event sent without one is stored with (numbat.event.normalize)."""


def app_of(measurement: str) -> str:
    """The app a measurement belongs to: its first dotted part (``web`` of ``web.latency``)."""
    return measurement.split(".", 1)[0]


def bucket_for(start: int, end: int) -> int:
    """Bucket ms for ``[start, end)``: at most MAX_POINTS buckets, whole seconds."""
    return max(1000, math.ceil((end - start) / MAX_POINTS / 1000) * 1000)


async def series_list(store: Store, query: str = "") -> list[dict[str, Any]]:
    """Every series (measurement, tags, app, host), those whose name or tag values hold
    ``query`` (case-insensitive), at most MAX_SERIES, sorted."""
    needle = query.lower()
    found = []
    for series in await store.series():
        tags = dict(series.tags)
        text = " ".join([series.measurement, *tags.values()]).lower()
        if needle and needle not in text:
            continue
        found.append(
            {
                "measurement": series.measurement,
                "tags": tags,
                "app": app_of(series.measurement),
                "host": tags.get("host", ""),
            }
        )
        if len(found) >= MAX_SERIES:
            break
    return sorted(found, key=lambda s: (s["app"], s["host"], s["measurement"], sorted(s["tags"])))


async def hint_for(
    store: Store,
    config: DashboardConfig,
    measurement: str,
    tags: Mapping[str, str],
    buckets: list[Bucket],
    has_text: bool,
) -> str:
    """The configured hint, else the series' own, else: text whose every value is the
    default one (sent with no value) is an annotation, other series are guessed from
    ``buckets`` (their max per bucket)."""
    configured = compat.configured_hint(measurement, config.hints)
    if configured:
        return configured
    for series in await store.series(measurement):
        own = compat.hint_of(dict(series.tags))
        if own and all(dict(series.tags).get(k) == v for k, v in tags.items()):
            return own
    values = [b.value for b in buckets if b.value is not None]
    if has_text and all(v == DEFAULT_VALUE for v in values):
        return "annotation"  # notes sent with no value: each stored with the default
    return compat.guess(values, has_text=has_text)


def _rates(lows: list[Bucket], highs: list[Bucket], seconds: float) -> list[float | None]:
    """Per-second increase of a counter in each bucket, from its min and max there and
    the max of the bucket before (a drop is a reset, counted from zero); None where the
    bucket has no point. The first bucket only looks before."""
    out: list[float | None] = []
    before: float | None = None
    for low, high in zip(lows, highs, strict=True):
        if low.value is None or high.value is None:
            out.append(None)
            continue
        base = low.value
        if before is not None:
            base = before if before <= low.value else 0.0
        out.append(max(0.0, high.value - base) / seconds)
        before = high.value
    return out[1:]


async def _query(
    store: Store, measurement: str, tags: Mapping[str, str], span: tuple[int, int, int], agg: str
) -> list[Bucket]:
    """Store.query with an aggregate the Store may only have gained lately (has_aggregate)."""
    start, end, bucket = span
    aggregate = cast(Any, agg)
    return await store.query(
        measurement, tags, start=start, end=end, bucket=bucket, aggregate=aggregate
    )


async def _line(
    store: Store, measurement: str, tags: Mapping[str, str], hint: str, span: tuple[int, int, int]
) -> list[tuple[str, list[float | None]]]:
    """``(label, values)`` of one group as its hint draws it."""
    start, end, bucket = span
    if hint == "counter":
        if compat.has_aggregate("rate"):
            got = await _query(store, measurement, tags, span, "rate")
            return [("rate/s", [b.value for b in got])]
        early = start - bucket
        lows = await store.query(
            measurement, tags, start=early, end=end, bucket=bucket, aggregate="min"
        )
        highs = await store.query(
            measurement, tags, start=early, end=end, bucket=bucket, aggregate="max"
        )
        return [("rate/s", _rates(lows, highs, bucket / 1000))]
    if hint == "timing":
        names = ("p50", "p90", "p99") if compat.has_aggregate("p99") else ("min", "mean", "max")
        lines = []
        for name in names:
            got = await _query(store, measurement, tags, span, name)
            lines.append((name, [b.value for b in got]))
        return lines
    got = await store.query(
        measurement, tags, start=start, end=end, bucket=bucket, aggregate="mean"
    )
    return [("", [b.value for b in got])]


async def _groups(store: Store, measurement: str, tags: Mapping[str, str], by: str) -> list[str]:
    values = set()
    for series in await store.series(measurement):
        have = dict(series.tags)
        if by in have and all(have.get(k) == v for k, v in tags.items()):
            values.add(have[by])
    return sorted(values)[:MAX_GROUPS]


async def graph(
    store: Store,
    analyzer: AnalyzerClient,
    config: DashboardConfig,
    measurement: str,
    tags: Mapping[str, str],
    *,
    by: str | None,
    start: int,
    end: int,
) -> dict[str, Any]:
    """The graph of ``measurement`` (points whose tags include ``tags``) over ``[start,
    end)`` ms, one line per value of tag ``by`` when given. Raises ValueError for a bad
    range (from the Store)."""
    bucket = bucket_for(start, end)
    start -= start % bucket
    probe = await store.query(
        measurement, tags, start=start, end=end, bucket=bucket, aggregate="max"
    )
    groups = await _groups(store, measurement, tags, by) if by else []
    notes = await _annotations(store, measurement, tags, groups if by == "host" else [], start, end)
    own_text = any(note["measurement"] == measurement for note in notes)
    hint = await hint_for(store, config, measurement, tags, probe, own_text)
    span = (start, end, bucket)
    series: list[dict[str, Any]] = []
    if hint != "annotation":
        todo: list[str | None] = [*groups] or [None]
        for group in todo:
            where = {**tags, by: group} if by and group is not None else dict(tags)
            for label, values in await _line(store, measurement, where, hint, span):
                shown = f"{group} {label}".strip() if by and group is not None else label
                series.append({"label": shown or measurement, "values": values})
    times = [(start + i * bucket) / 1000 for i in range(len(probe))]
    incidents, problem = await _incidents(analyzer, measurement, tags, start, end)
    link = compat.grafana_link()
    grafana = None
    if link is not None and config.grafana_url:
        grafana = link(
            config.grafana_url, config.grafana_datasource, measurement, dict(tags), start, end
        )
    return {
        "measurement": measurement,
        "tags": dict(tags),
        "by": by,
        "hint": hint,
        "bucket_ms": bucket,
        "start": start / 1000,
        "end": end / 1000,
        "times": times,
        "series": series,
        "annotations": notes,
        "incidents": incidents,
        "incidents_error": problem,
        "grafana": grafana,
    }


async def _annotations(
    store: Store, measurement: str, tags: Mapping[str, str], hosts: list[str], start: int, end: int
) -> list[dict[str, Any]]:
    """Annotations of the graph's app, on its host(s) or on no host in particular."""
    app = app_of(measurement)
    host = tags.get("host")
    found = await store.annotations(f"{app}.*", start=start, end=end, limit=MAX_MARKERS)
    found += [a for a in await store.annotations(app, start=start, end=end, limit=MAX_MARKERS)]
    notes = []
    for note in sorted(found):
        if note.measurement in OWN:
            continue
        where = dict(note.tags).get("host")
        if where and ((host and where != host) or (hosts and where not in hosts)):
            continue
        text = " ".join(v for v in note.fields.values() if v)
        notes.append(
            {
                "time": note.time / 1000,
                "measurement": note.measurement,
                "host": where or "",
                "text": text,
            }
        )
    return notes[-MAX_MARKERS:]


async def _incidents(
    analyzer: AnalyzerClient, measurement: str, tags: Mapping[str, str], start: int, end: int
) -> tuple[list[dict[str, Any]], str | None]:
    """Bands from the first breach (else the firing) to the resolve (None: still open)."""
    try:
        found = await analyzer.incidents(measurement)
    except AnalyzerError as exc:
        return [], str(exc)
    host = tags.get("host")
    bands = []
    for incident in found:
        if host and incident.get("host") != host:
            continue
        fired = incident.get("fired_at")
        begin = incident.get("breached_at") or fired
        resolved = incident.get("resolved_at")
        if begin is None or begin >= end or (resolved is not None and resolved < start):
            continue
        bands.append(
            {
                "from": begin / 1000,
                "fired": fired / 1000 if fired else None,
                "to": resolved / 1000 if resolved else None,
                "status": incident.get("status"),
                "host": incident.get("host"),
                "message": incident.get("message") or "",
            }
        )
    return bands, None
