"""What one graph shows, as JSON for the page: the series (one a group, or the
p50/p90/p99 of a timing), drawn by their display hint, the annotations of the same app
and host, the incidents of the series as bands, and a Grafana link."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from typing import Any, cast

from numbat import grafana
from numbat.config import DashboardConfig
from numbat.dashboard.sources import AnalyzerClient, AnalyzerError
from numbat.store import Bucket, Store

MAX_POINTS = 400
"""Buckets a graph asks for at most, whatever its range (uPlot draws a point a pixel)."""
MAX_GROUPS = 20
"""Lines on one graph grouped by a tag, at most (the busiest: Store.query_by)."""
MAX_MARKERS = 200
"""Annotation markers on one graph, at most (the newest)."""
MAX_SERIES = 2000
"""Series the series list holds, at most."""
OWN = ("numbat.alert", "numbat.alerts")


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
    store: Store, config: DashboardConfig, measurement: str, tags: Mapping[str, str]
) -> str:
    """The ``[dashboard.hints]`` hint of ``measurement``, else the store's for its first
    series whose tags include ``tags`` (the series' own hint, else guessed from its
    newest points: numbat.hints)."""
    for glob, hint in config.hints.items():
        if fnmatch.fnmatchcase(measurement, glob):
            return hint
    for info in await store.series_info(measurement):
        have = dict(info.tags)
        if info.measurement == measurement and all(have.get(k) == v for k, v in tags.items()):
            return info.hint
    return "gauge"


AGGREGATE = {"counter": "rate", "gauge": "mean", "timing": "p99"}
"""What a line of each hint shows per bucket (a timing grouped by a tag: its p99)."""


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
    """``(label, values)`` of the graph as its hint draws it: a counter's rate per
    second, a timing's p50/p90/p99, a gauge's mean."""
    if hint == "timing":
        lines = []
        for name in ("p50", "p90", "p99"):
            got = await _query(store, measurement, tags, span, name)
            lines.append((name, [b.value for b in got]))
        return lines
    got = await _query(store, measurement, tags, span, AGGREGATE.get(hint, "mean"))
    return [("rate/s" if hint == "counter" else "", [b.value for b in got])]


async def _by(
    store: Store,
    measurement: str,
    tags: Mapping[str, str],
    by: str,
    hint: str,
    span: tuple[int, int, int],
) -> list[tuple[str, list[float | None]]]:
    """One ``(tag value, values)`` line per value of tag ``by``, the busiest MAX_GROUPS,
    in tag value order."""
    start, end, bucket = span
    aggregate = cast(Any, AGGREGATE.get(hint, "mean"))
    found = await store.query_by(
        measurement,
        tags,
        by,
        start=start,
        end=end,
        bucket=bucket,
        aggregate=aggregate,
        limit=MAX_GROUPS,
    )
    suffix = {"counter": " rate/s", "timing": " p99"}.get(hint, "")
    return [(f"{value}{suffix}", [b.value for b in found[value]]) for value in sorted(found)]


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
    span = (start, end, bucket)
    hint = await hint_for(store, config, measurement, tags)
    where = {k: v for k, v in tags.items() if k != by}
    lines: list[tuple[str, list[float | None]]] = []
    if hint != "annotation":
        if by:
            lines = await _by(store, measurement, where, by, hint, span)
        else:
            lines = await _line(store, measurement, where, hint, span)
    series = [{"label": label or measurement, "values": values} for label, values in lines]
    hosts = [label.split(" ")[0] for label, _ in lines] if by == "host" else []
    notes = await _annotations(store, measurement, where, hosts, start, end)
    times = [(start + i * bucket) / 1000 for i in range(-(-(end - start) // bucket))]
    incidents, problem = await _incidents(analyzer, measurement, where, start, end)
    incidents += await _stored_bands(store, measurement, where, start, end, incidents)
    link = None
    if config.grafana_url:
        try:
            link = grafana.link(
                config.grafana_url, config.grafana_datasource, measurement, where, start, end
            )
        except ValueError:  # a URL the link cannot be made from: no link, not no graph
            link = None
    return {
        "measurement": measurement,
        "tags": where,
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
        "grafana": link,
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
                "id": incident.get("id"),
                "from": begin / 1000,
                "fired": fired / 1000 if fired else None,
                "to": resolved / 1000 if resolved else None,
                "status": incident.get("status"),
                "host": incident.get("host"),
                "message": incident.get("message") or "",
            }
        )
    return bands, None


LOOKBACK_MS = 86_400_000
"""How far before a graph's start its stored ``numbat.alert`` events are read (an
incident opened then may still be open in the range)."""
CLOSING = ("resolved", "expired")


async def _stored_bands(
    store: Store,
    measurement: str,
    tags: Mapping[str, str],
    start: int,
    end: int,
    known: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Bands from the analyzer's stored ``numbat.alert`` events of ``measurement`` (the
    write-back: one a change), for the incidents the analyzer's API did not give (it
    was down, or has forgotten them): from the opening to the resolve."""
    seen = {band.get("id") for band in known}
    host = tags.get("host")
    opened: dict[str, dict[str, Any]] = {}
    bands: list[dict[str, Any]] = []
    async for event in store.events(start=start - LOOKBACK_MS, end=end, pattern="numbat.alert"):
        incident = event.get("incident")
        if event.get("alert") != measurement or incident in seen or not isinstance(incident, str):
            continue
        if host and event.get("host") != host:
            continue
        at = int(event["time"]) / 1000
        if event.get("kind") in CLOSING:
            band = opened.pop(incident, None)
            if band is not None:
                band["to"] = at
                bands.append(band)
        elif incident not in opened and event.get("kind") != "acked":
            opened[incident] = {
                "id": incident,
                "from": at,
                "fired": at,
                "to": None,
                "status": event.get("status"),
                "host": event.get("host"),
                "message": str(event.get("description") or ""),
            }
    bands += opened.values()
    return [b for b in bands if b["to"] is None or b["to"] * 1000 >= start]
