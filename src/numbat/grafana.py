"""Grafana: links to a metric's history, and generated dashboards over InfluxDB.

:func:`link` is what the dashboard puts on every graph: a Grafana Explore URL that
carries the metric, its tags (``host``) and the time range. :func:`dashboard_json`
and :func:`datasource_yaml` are what ``numbat grafana --out DIR`` writes: a dashboard
(a row per app, a panel per metric chosen by its display hint, ``numbat.alert`` and
annotation events as annotation queries, a ``host`` variable) built with the Grafana
Foundation SDK, and a datasource provisioning file for the InfluxDB database.

The SDK is imported only when a dashboard is built (``pip install
numbat-metrics[grafana]``), so neither ``import numbat`` nor the CLI pays for it.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

from numbat._redact import redact_url

Hint = Literal["counter", "gauge", "timing", "annotation"]
HINTS: tuple[Hint, ...] = ("counter", "gauge", "timing", "annotation")
DATASOURCE_TYPE = "influxdb"
ALERT_MEASUREMENT = "numbat.alert"
TEXT_COLUMNS = ("description", "message")
HOST_VARIABLE = "host"
PANEL_WIDTH, PANEL_HEIGHT = 12, 8  # Grafana's grid is 24 columns wide


class MetricInfo(NamedTuple):
    """One measurement as the generator sees it: its name, display hint, the app whose
    row it goes in, and whether any of its series has a ``host`` tag."""

    measurement: str
    hint: Hint
    app: str
    has_host: bool = True
    increments: bool = False  # a counter whose points are increments (counter()'s own hint)


# -- links ------------------------------------------------------------------------


def _base_url(grafana_url: str) -> str:
    """``grafana_url`` checked and without credentials; ValueError naming it (redacted)."""
    if not isinstance(grafana_url, str):
        raise ValueError("grafana_url: must be a string")
    parts = urllib.parse.urlsplit(grafana_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"grafana_url: give http(s)://host[:port][/path], got {redact_url(grafana_url)!r}"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"grafana_url: no query or fragment, got {redact_url(grafana_url)!r}")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"grafana_url: bad port in {redact_url(grafana_url)!r}") from None
    netloc = host if port is None else f"{host}:{port}"
    # Credentials stay out: a link is shown on a page and sits in browser history.
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def link(
    grafana_url: str,
    datasource: str,
    measurement: str,
    tags: Mapping[str, str] | Iterable[tuple[str, str]],
    start: int,
    end: int,
) -> str:
    """A Grafana Explore URL (Grafana 10+) showing ``measurement`` whose tags include
    ``tags`` (``{"host": "web-1"}``) from ``start`` to ``end`` (ms since the epoch),
    through the datasource whose uid is ``datasource`` (what :func:`datasource_yaml`
    provisions: name and uid alike). The query is the mean per Grafana interval, by host.

    User and password in ``grafana_url`` are left out of the link and out of every
    error. Raises ValueError for a URL that is not http(s)://host, an empty
    datasource or measurement, or ``end`` before ``start``.

    >>> link("http://g:3000", "numbat", "web.hits", {"host": "a"}, 0, 1000)[:42]
    'http://g:3000/explore?schemaVersion=1&pane'
    """
    base = _base_url(grafana_url)
    if not datasource or not isinstance(datasource, str):
        raise ValueError("datasource: give the Grafana datasource's uid")
    if not measurement or not isinstance(measurement, str):
        raise ValueError("measurement: must be a non-empty string")
    if not (isinstance(start, int) and isinstance(end, int)) or end < start:
        raise ValueError(f"time range: need start <= end in ms, got {start!r}..{end!r}")
    pairs = sorted(dict(tags).items())
    where = "".join(f"{quote_ident(k)} = {quote_literal(v)} AND " for k, v in pairs)
    query = (
        f'SELECT mean("value") FROM {quote_ident(measurement)} WHERE {where}$timeFilter '
        f"GROUP BY time($__interval){_group_host(pairs)} fill(null)"
    )
    ref = {"type": DATASOURCE_TYPE, "uid": datasource}
    pane = {
        "datasource": datasource,
        "queries": [
            {
                "refId": "A",
                "datasource": ref,
                "query": query,
                "rawQuery": True,
                "resultFormat": "time_series",
            }
        ],
        "range": {"from": str(start), "to": str(end)},
    }
    panes = json.dumps({"a": pane}, separators=(",", ":"))
    params = urllib.parse.urlencode({"schemaVersion": "1", "panes": panes, "orgId": "1"})
    return f"{base}/explore?{params}"


def _group_host(pairs: Sequence[tuple[str, str]]) -> str:
    return "" if any(k == HOST_VARIABLE for k, _ in pairs) else ', "host"'


# -- InfluxQL ---------------------------------------------------------------------


def quote_ident(name: str) -> str:
    r"""An InfluxQL identifier in double quotes (``\``, ``"``, newlines escaped).

    >>> print(quote_ident('a "b"'))
    "a \"b\""
    """
    return '"' + _escape(name, '"') + '"'


def quote_literal(text: str) -> str:
    r"""An InfluxQL string literal in single quotes.

    >>> print(quote_literal("it's"))
    'it\'s'
    """
    return "'" + _escape(text, "'") + "'"


def _escape(text: str, quote: str) -> str:
    return text.replace("\\", "\\\\").replace(quote, "\\" + quote).replace("\n", "\\n")


HOST_FILTER = '"host" =~ /^$host$/'
"""Every query's host filter: Grafana puts the chosen hosts (or ``.*``, all) in."""


def panel_queries(info: MetricInfo) -> list[tuple[str, str]]:
    """``(refId, InfluxQL)`` of the panel of one measurement, by its hint: counter ->
    the rate per second: of increments (a series whose own hint is counter, as
    ``counter()`` sends), their sum per interval over its seconds; of a running total
    (a guessed counter), ``non_negative_derivative`` of the last value per interval, so
    a counter reset counts from zero; gauge -> the mean; timing -> p50, p90 and p99
    (nearest rank, as the embedded store's). Grafana's ``$timeFilter``,
    ``$__interval`` and ``$host`` stand in them. Annotation measurements have none."""
    source = quote_ident(info.measurement)
    where = f"WHERE {HOST_FILTER} AND $timeFilter" if info.has_host else "WHERE $timeFilter"
    group = "GROUP BY time($__interval)" + (', "host"' if info.has_host else "")
    if info.hint == "counter" and info.increments:
        # counter()'s points are increments (1 a request): their sum per second, as the
        # dashboard and the store's rate draw them.
        select = 'sum("value") / ($__interval_ms / 1000) AS "rate"'
        return [("A", f"SELECT {select} FROM {source} {where} {group} fill(none)")]
    if info.hint == "counter":
        select = 'non_negative_derivative(last("value"), 1s) AS "rate"'
        return [("A", f"SELECT {select} FROM {source} {where} {group} fill(none)")]
    if info.hint == "gauge":
        return [("A", f'SELECT mean("value") AS "mean" FROM {source} {where} {group} fill(null)')]
    if info.hint == "timing":
        select = ", ".join(f'percentile("value", {p}) AS "p{p}"' for p in (50, 90, 99))
        return [("A", f"SELECT {select} FROM {source} {where} {group} fill(null)")]
    return []


def annotation_query(measurement: str, *, has_host: bool = True) -> str:
    """The InfluxQL of an annotation query: the points of ``measurement`` with their
    text and tags (``numbat.alert``: its alert, status and change)."""
    columns = ['"value"', *(quote_ident(c) for c in TEXT_COLUMNS)]
    if measurement == ALERT_MEASUREMENT:
        columns += ['"alert"', '"status"', '"kind"']
    if has_host:
        columns.append('"host"')
    where = f"WHERE {HOST_FILTER} AND $timeFilter" if has_host else "WHERE $timeFilter"
    return f"SELECT {', '.join(columns)} FROM {quote_ident(measurement)} {where}"


HOST_VALUES_QUERY = 'SHOW TAG VALUES WITH KEY = "host"'


# -- the dashboard ----------------------------------------------------------------


def app_of(measurement: str, tags: Iterable[tuple[str, str]] = ()) -> str:
    """The app a series belongs to: its ``app`` tag, else its name up to the first dot.

    >>> app_of("web.latency"), app_of("latency", [("app", "api")])
    ('web', 'api')
    """
    for key, value in tags:
        if key == "app" and value:
            return value
    return measurement.split(".", 1)[0]


def dashboard_json(
    metrics: Sequence[MetricInfo],
    *,
    datasource: str = "numbat",
    uid: str = "numbat",
    title: str = "numbat",
) -> dict[str, Any]:
    """The Grafana dashboard model (a JSON object) of ``metrics``: a row per app (in
    name order), a panel per measurement (``timeseries``, by hint), a dashboard
    annotation query per annotation measurement and for ``numbat.alert``, and a
    ``host`` variable (multi-value, "All" by default). Needs the Grafana Foundation
    SDK (ImportError saying how to install it)."""
    try:
        from grafana_foundation_sdk.builders import common as gcommon
        from grafana_foundation_sdk.builders import dashboard as gdash
        from grafana_foundation_sdk.builders import timeseries
        from grafana_foundation_sdk.cog.encoder import JSONEncoder
        from grafana_foundation_sdk.models import common as cmodel
        from grafana_foundation_sdk.models import dashboard as model

        from numbat._grafana_sdk import InfluxQueryBuilder
    except ImportError:  # pragma: no cover - depends on the install
        raise ImportError(
            "numbat grafana needs the Grafana Foundation SDK: pip install 'numbat-metrics[grafana]'"
        ) from None

    ref = model.DataSourceRef(type_val=DATASOURCE_TYPE, uid=datasource)
    built = (
        gdash.Dashboard(title)
        .uid(uid)
        .tags(["numbat"])
        .time("now-6h", "now")
        .refresh("1m")
        .with_variable(
            gdash.QueryVariable(HOST_VARIABLE)
            .label("host")
            .datasource(ref)
            .query(HOST_VALUES_QUERY)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
        )
    )
    # Alerts are always annotated: the analyzer may not have written any yet.
    alert = MetricInfo(ALERT_MEASUREMENT, "annotation", "numbat")
    notes = [m for m in metrics if m.hint == "annotation" and m.measurement != alert.measurement]
    for info in [alert, *sorted(notes)]:
        built.annotation(_annotation(info, ref))
    graphs = [m for m in metrics if m.hint != "annotation" and m.measurement != alert.measurement]
    ids = itertools.count(1)
    for app in sorted({m.app for m in graphs}):
        built.with_row(gdash.Row(app).id(next(ids)))
        for info in sorted(m for m in graphs if m.app == app):
            panel = (
                timeseries.Panel()
                .id(next(ids))
                .title(f"{info.measurement} ({_LABELS[info.hint]})")
                .datasource(ref)
                .height(PANEL_HEIGHT)
                .span(PANEL_WIDTH)
                .unit(_UNITS[info.hint])
                .legend(
                    gcommon.VizLegendOptions()
                    .show_legend(True)
                    .display_mode(cmodel.LegendDisplayMode.LIST)
                    .placement(cmodel.LegendPlacement.BOTTOM)
                )
                .tooltip(gcommon.VizTooltipOptions().mode(cmodel.TooltipDisplayMode.MULTI))
            )
            for ref_id, query in panel_queries(info):
                panel.with_target(InfluxQueryBuilder(ref_id, query, ref))
            built.with_panel(panel)
    text = JSONEncoder(sort_keys=True).encode(built.build())
    result: dict[str, Any] = json.loads(text)
    return result


_LABELS: dict[str, str] = {"counter": "rate/s", "gauge": "mean", "timing": "p50/p90/p99"}
_UNITS: dict[str, str] = {"counter": "reqps", "gauge": "short", "timing": "ms"}


def _annotation(info: MetricInfo, ref: Any) -> Any:
    """The annotation query (an SDK builder) of an annotation measurement or of
    ``numbat.alert`` (titled by the alert, tagged by its status and change)."""
    from numbat._grafana_sdk import InfluxAnnotation, InfluxAnnotationBuilder

    alert = info.measurement == ALERT_MEASUREMENT
    tags = ["alert", "status", "kind"] if alert else []
    tags += ["host"] if info.has_host else []
    return InfluxAnnotationBuilder(
        InfluxAnnotation(
            name="alerts" if alert else info.measurement,
            datasource=ref,
            enable=True,
            icon_color="red" if alert else "blue",
            query=annotation_query(info.measurement, has_host=info.has_host),
            text_column="description",
            tags_column=",".join(tags),
            title_column="alert" if alert else "",
        )
    )


# -- the datasource ---------------------------------------------------------------


def datasource_yaml(
    url: str,
    database: str,
    *,
    name: str = "numbat",
    username: str | None = None,
    password: str | None = None,
) -> str:
    """A Grafana datasource provisioning file (YAML) for InfluxDB at ``url`` (user and
    password in it move to ``user`` and ``secureJsonData.password``; ``username`` and
    ``password`` win), database ``database``, named and uid'd ``name``. The text
    holds the password: write it to a private file, never print it. ValueError (URL
    redacted) for a URL that is not http(s)://host."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"InfluxDB URL: give http(s)://host:8086, got {redact_url(url)!r}")
    user = username or (urllib.parse.unquote(parts.username) if parts.username else None)
    secret = password or (urllib.parse.unquote(parts.password) if parts.password else None)
    source: dict[str, Any] = {
        "name": name,
        "uid": name,
        "type": DATASOURCE_TYPE,
        "access": "proxy",
        "url": _base_url(url),
        "database": database,
        "jsonData": {"dbName": database, "httpMode": "GET"},
        "editable": False,
    }
    if user:
        source["user"] = user
    if secret:
        source["secureJsonData"] = {"password": secret}
    return _yaml({"apiVersion": 1, "datasources": [source]})


def provider_yaml(path: str, *, folder: str = "numbat") -> str:
    """A Grafana dashboard provider file reading the dashboards in ``path``."""
    provider = {
        "name": "numbat",
        "folder": folder,
        "type": "file",
        "disableDeletion": False,
        "options": {"path": path},
    }
    return _yaml({"apiVersion": 1, "providers": [provider]})


def _yaml(value: Any, indent: str = "") -> str:
    """Block YAML of dicts, lists and scalars; scalars as JSON (which YAML reads)."""
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{indent}{key}:\n{_yaml(item, indent + '  ')}")
            else:
                lines.append(f"{indent}{key}: {json.dumps(item)}\n")
    else:
        for item in value:
            if isinstance(item, dict) and item:
                body = _yaml(item, indent + "  ")
                lines.append(f"{indent}- {body[len(indent) + 2 :]}")
            else:
                lines.append(f"{indent}- {json.dumps(item)}\n")
    return "".join(lines)


# -- from the store ---------------------------------------------------------------

GUESS_WINDOW = 86_400_000  # ms of recent data a series' hint is guessed from
GUESS_BUCKETS = 60


def own_hint(fields: Mapping[str, object]) -> Hint | None:
    """A series' own hint (``numbat.hints.hint_of`` when there is one): a ``type`` of
    one of :data:`HINTS`, else a flag tag (``counter=true``).

    >>> own_hint({"type": "timing"}), own_hint({"counter": "true"}), own_hint({})
    ('timing', 'counter', None)
    """
    try:
        from numbat.hints import hint_of  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        kind = fields.get("type")
        if kind in HINTS:
            return kind
        for hint in HINTS:
            if str(fields.get(hint, "")).lower() in ("true", "1", "yes"):
                return hint
        return None
    found: Hint | None = hint_of(fields)
    return found


def guess_hint(values: Sequence[float], has_text: bool) -> Hint:
    """A hint from a series' shape (``numbat.hints.guess`` when there is one): a value
    that never falls and moved is a counter; no value at all an annotation; else a gauge.

    >>> guess_hint([1, 2, 2, 5], False), guess_hint([3, 1], False), guess_hint([], True)
    ('counter', 'gauge', 'annotation')
    """
    try:
        from numbat.hints import guess  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        if not values or (has_text and len(set(values)) == 1):
            return "annotation"
        rising = all(b >= a for a, b in itertools.pairwise(values)) and values[-1] > values[0]
        return "counter" if rising else "gauge"
    found: Hint = guess(values, has_text)
    return found


def override_hint(measurement: str, overrides: Mapping[str, str]) -> Hint | None:
    """The hint ``[dashboard.hints]`` gives ``measurement`` (measurement glob -> hint;
    the first matching glob in the table's order)."""
    for pattern, hint in overrides.items():
        if fnmatch.fnmatchcase(measurement, pattern) and hint in HINTS:
            return hint
    return None


async def metrics_of(
    store: Any, *, now: int, overrides: Mapping[str, str] | None = None
) -> list[MetricInfo]:
    """Every measurement of ``store`` as a :class:`MetricInfo`: its hint from the
    config's ``overrides`` (glob -> hint), else its series' own, else guessed from the
    last ``GUESS_WINDOW`` ms before ``now`` (ms) of one series (a gauge when that
    window holds nothing)."""
    infos = getattr(store, "series_info", None)
    by_measurement: dict[str, list[tuple[tuple[str, str], ...]]] = {}
    known: dict[str, Hint] = {}
    if infos is not None:  # the store's own listing, hints included
        for info in await infos("*"):
            by_measurement.setdefault(info.measurement, []).append(info.tags)
            known.setdefault(info.measurement, info.hint)
    else:
        for series in await store.series():
            by_measurement.setdefault(series.measurement, []).append(series.tags)
    found = []
    for measurement, tag_sets in sorted(by_measurement.items()):
        hint = override_hint(measurement, overrides or {}) or known.get(measurement)
        if hint is None:
            hint = next((h for t in tag_sets if (h := own_hint(dict(t)))), None)
        if hint is None:
            hint = await _guess(store, measurement, tag_sets[0], now)
        has_host = any(k == HOST_VARIABLE for t in tag_sets for k, _ in t)
        increments = hint == "counter" and any(own_hint(dict(t)) == "counter" for t in tag_sets)
        app = app_of(measurement, tag_sets[0])
        found.append(MetricInfo(measurement, hint, app, has_host, increments))
    return found


async def _guess(store: Any, measurement: str, tags: Any, now: int) -> Hint:
    start = now - GUESS_WINDOW
    bucket = GUESS_WINDOW // GUESS_BUCKETS
    buckets = await store.query(
        measurement, dict(tags), start=start, end=now, bucket=bucket, aggregate="last"
    )
    values = [b.value for b in buckets if b.value is not None]
    # The glob may match more than this measurement (a name with * in it): a hint only.
    notes = await store.annotations(measurement, dict(tags), start=start, end=now, limit=1)
    if not values and not notes:
        return "gauge"  # nothing recent to tell by: a graph shows whatever there is
    return guess_hint(values, has_text=bool(notes))
