"""numbat.grafana: the generated dashboard's queries run on a real influxd and return
the emitted data; the model has Grafana's required fields; links and provisioning."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from numbat.event import Event
from numbat.grafana import (
    HOST_VALUES_QUERY,
    dashboard_json,
    datasource_yaml,
    link,
    metrics_of,
)
from numbat.store.influx import InfluxStore
from tests.store.conftest import InfluxDatabase

T0 = 1_700_000_000_000  # ms; a whole minute, so 10 s intervals line up with the points
NOW = T0 + 600_000
INTERVAL = "10s"
INTERVAL_MS = "10000"


def _events() -> list[Event]:
    """A counter, a timing, an unhinted gauge, a deploy note and an alert, two hosts."""
    events: list[Event] = []
    for i, (a, b) in enumerate([(10, 100), (20, 150), (40, 160)]):
        t = T0 + i * 10_000  # counter(): increments
        events.append({"name": "web.hits", "value": a, "time": t, "host": "a", "type": "counter"})
        events.append({"name": "web.hits", "value": b, "time": t, "host": "b", "type": "counter"})
        # no hint, a running total that rises: guessed a counter, drawn as its increase
        events.append({"name": "web.bytes", "value": a, "time": t, "host": "a"})
    for v in range(1, 101):  # timing: 1..100 in one 10 s interval
        events.append(
            {"name": "web.latency", "value": v, "time": T0 + v, "host": "a", "type": "timing"}
        )
    for i, v in enumerate([5, 3, 4]):  # no hint: it falls, so a gauge
        events.append({"name": "db.load", "value": v, "time": T0 + i * 10_000, "host": "b"})
    events.append(
        {
            "name": "deploy",
            "value": 1,
            "time": T0 + 5_000,
            "host": "a",
            "type": "annotation",
            "description": "deployed v1.2",
        }
    )
    events.append(
        {
            "name": "numbat.alert",
            "value": 3,
            "time": T0 + 15_000,
            "host": "a",
            "alert": "web.latency",
            "status": "critical",
            "kind": "opened",
            "description": "p99 over 50 ms",
        }
    )
    return events


@pytest.fixture
def model(influx_db: InfluxDatabase) -> Iterator[dict[str, Any]]:
    """The dashboard generated from the events above, stored through InfluxStore."""

    async def build() -> dict[str, Any]:
        store = InfluxStore(influx_db.server.url, influx_db.name)
        try:
            await store.write(_events())
            metrics = await metrics_of(store, now=NOW)
        finally:
            await store.close()
        return dashboard_json(metrics, datasource="numbat")

    yield asyncio.run(build())


def _substitute(query: str, hosts: str) -> str:
    """The query as Grafana sends it: its macros and the host variable filled in."""
    time_filter = f"time >= {T0}ms and time <= {NOW}ms"
    return (
        query.replace("$timeFilter", time_filter)
        .replace("$__interval_ms", INTERVAL_MS)
        .replace("$__interval", INTERVAL)
        .replace("$host", hosts)
    )


def _run(db: InfluxDatabase, query: str) -> list[dict[str, Any]]:
    """Each result row as {column: value, "tags": {...}} (time in ms)."""
    result = db.server.query(query, db=db.name)
    rows = []
    for series in result.get("series", []):
        for values in series["values"]:
            row = dict(zip(series["columns"], values, strict=True))
            row["tags"] = series.get("tags", {})
            if "time" in row:
                row["time"] //= 1_000_000
            rows.append(row)
    return rows


def _panels(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["title"].split(" ")[0]: p for p in model["panels"] if p["type"] != "row"}


def _every_query(model: dict[str, Any]) -> list[str]:
    queries = [t["query"] for p in model["panels"] for t in p.get("targets", [])]
    queries += [a["query"] for a in model["annotations"]["list"]]
    queries += [v["query"] for v in model["templating"]["list"]]
    return queries


def test_model_has_grafanas_required_fields(model: dict[str, Any]) -> None:
    """uid, title, schemaVersion, templating (host), panels with type, targets and
    gridPos, unique ids, and a row per app holding that app's panels."""
    assert model["uid"] == "numbat" and model["title"] == "numbat"
    assert isinstance(model["schemaVersion"], int) and model["schemaVersion"] >= 36
    [host] = model["templating"]["list"]
    assert host["name"] == "host" and host["type"] == "query" and host["multi"] is True
    ids = [p["id"] for p in model["panels"]]
    assert len(set(ids)) == len(ids)
    order = [(p["type"], p["title"]) for p in model["panels"]]
    assert order == [
        ("row", "db"),
        ("timeseries", "db.load (mean)"),
        ("row", "web"),
        ("timeseries", "web.bytes (rate/s)"),
        ("timeseries", "web.hits (rate/s)"),
        ("timeseries", "web.latency (p50/p90/p99)"),
    ]
    for panel in model["panels"]:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "numbat"
            assert all(t["refId"] and t["rawQuery"] for t in panel["targets"])
    names = [a["name"] for a in model["annotations"]["list"]]
    assert names == ["alerts", "deploy"]


@pytest.mark.parametrize("hosts", ["(a|b)", ".*"])
def test_every_query_runs_on_influxd(
    model: dict[str, Any], influx_db: InfluxDatabase, hosts: str
) -> None:
    """Every InfluxQL query of the dashboard, its variables substituted, runs on a real
    influxd and returns rows (for one host chosen, several, or All)."""
    for query in _every_query(model):
        assert _run(influx_db, _substitute(query, hosts)), query


def test_counter_panel_is_the_rate_per_second(
    model: dict[str, Any], influx_db: InfluxDatabase
) -> None:
    """web.hits (type counter: increments, as counter() sends) is drawn as their sum
    per second, per host; web.bytes (no hint, a rising running total) as its increase
    per second."""
    [target] = _panels(model)["web.hits"]["targets"]
    rows = _run(influx_db, _substitute(target["query"], "(a|b)"))
    by_host: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        by_host.setdefault(row["tags"]["host"], []).append((row["time"], row["rate"]))
    assert by_host == {
        "a": [(T0, 1.0), (T0 + 10_000, 2.0), (T0 + 20_000, 4.0)],
        "b": [(T0, 10.0), (T0 + 10_000, 15.0), (T0 + 20_000, 16.0)],
    }
    [total] = _panels(model)["web.bytes"]["targets"]
    rows = _run(influx_db, _substitute(total["query"], "a"))
    assert [(r["time"], r["rate"]) for r in rows] == [(T0 + 10_000, 1.0), (T0 + 20_000, 2.0)]


def test_timing_panel_is_p50_p90_p99(model: dict[str, Any], influx_db: InfluxDatabase) -> None:
    """web.latency (type timing) shows the 50th, 90th and 99th percentile per interval."""
    [target] = _panels(model)["web.latency"]["targets"]
    rows = [r for r in _run(influx_db, _substitute(target["query"], "a")) if r["p50"] is not None]
    assert [(r["time"], r["p50"], r["p90"], r["p99"]) for r in rows] == [(T0, 50, 90, 99)]


def test_unhinted_series_is_guessed_a_gauge(
    model: dict[str, Any], influx_db: InfluxDatabase
) -> None:
    """db.load carries no hint and falls: a gauge, drawn as its mean."""
    [target] = _panels(model)["db.load"]["targets"]
    rows = [r for r in _run(influx_db, _substitute(target["query"], "b")) if r["mean"] is not None]
    assert [(r["time"], r["mean"]) for r in rows] == [(T0, 5), (T0 + 10_000, 3), (T0 + 20_000, 4)]


def test_alerts_and_annotations_are_annotation_queries(
    model: dict[str, Any], influx_db: InfluxDatabase
) -> None:
    """numbat.alert and the deploy note come back with their text, host and alert,
    in the columns the annotation names."""
    found = {}
    for note in model["annotations"]["list"]:
        [row] = _run(influx_db, _substitute(note["query"], "a"))
        found[note["name"]] = row
        assert note["textColumn"] in row
        assert all(column in row for column in note["tagsColumn"].split(","))
    assert found["deploy"]["description"] == "deployed v1.2"
    assert found["deploy"]["time"] == T0 + 5_000 and found["deploy"]["host"] == "a"
    alert = found["alerts"]
    assert (alert["description"], alert["alert"], alert["status"]) == (
        "p99 over 50 ms",
        "web.latency",
        "critical",
    )


def test_host_variable_lists_the_hosts(model: dict[str, Any], influx_db: InfluxDatabase) -> None:
    """The host variable's query gives every host that sent data."""
    [variable] = model["templating"]["list"]
    assert variable["query"] == HOST_VALUES_QUERY
    values = {row["value"] for row in _run_show(influx_db, variable["query"])}
    assert values == {"a", "b"}


def _run_show(db: InfluxDatabase, query: str) -> list[dict[str, Any]]:
    result = db.server.query(query, db=db.name)
    return [
        dict(zip(s["columns"], v, strict=True))
        for s in result.get("series", [])
        for v in s["values"]
    ]


def _numbat(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    return subprocess.run(
        [sys.executable, "-m", "numbat", *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        env=env,
    )


def test_link_carries_metric_tags_and_range() -> None:
    """The Explore link names the datasource, the metric, its host and the range, all
    URL-encoded, with the credentials of grafana_url left out."""
    url = link(
        "https://admin:s3cret@grafana.example:3000/g/",
        "numbat",
        'web "x"',
        {"host": "a&b"},
        T0,
        NOW,
    )
    parts = urllib.parse.urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "grafana.example:3000",
        "/g/explore",
    )
    assert "s3cret" not in url and "admin" not in url
    query = urllib.parse.parse_qs(parts.query)
    pane = json.loads(query["panes"][0])["a"]
    assert pane["datasource"] == "numbat"
    assert pane["range"] == {"from": str(T0), "to": str(NOW)}
    [target] = pane["queries"]
    assert target["datasource"] == {"type": "influxdb", "uid": "numbat"}
    assert 'FROM "web \\"x\\""' in target["query"]
    assert "\"host\" = 'a&b'" in target["query"] and "$timeFilter" in target["query"]


def test_link_query_runs_on_influxd(influx_db: InfluxDatabase) -> None:
    """The link's InfluxQL, its macros filled in, returns the host's points."""
    asyncio.run(_write(influx_db))
    url = link("http://g:3000", "numbat", "db.load", {"host": "b"}, T0, NOW)
    pane = json.loads(urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["panes"][0])["a"]
    rows = _run(influx_db, _substitute(pane["queries"][0]["query"], "b"))
    assert [r["mean"] for r in rows if r["mean"] is not None] == [5, 3, 4]


async def _write(db: InfluxDatabase) -> None:
    store = InfluxStore(db.server.url, db.name)
    try:
        await store.write(_events())
    finally:
        await store.close()


@pytest.mark.parametrize(
    "bad", ["ftp://g", "grafana:3000", "http://admin:s3cret@/x", "http://admin:s3cret@g:99999"]
)
def test_link_refuses_a_bad_url_without_its_password(bad: str) -> None:
    """A URL that is not http(s)://host is refused, and the error names it without the
    password."""
    with pytest.raises(ValueError, match="grafana_url") as caught:
        link(bad, "numbat", "m", {}, 0, 1)
    assert "s3cret" not in str(caught.value)


def test_link_refuses_a_backwards_range() -> None:
    """end before start is an error naming the range."""
    with pytest.raises(ValueError, match="time range"):
        link("http://g:3000", "numbat", "m", {}, 10, 5)


def test_provisioning_is_yaml_with_the_datasource() -> None:
    """The provisioning file parses as YAML: an influxdb datasource with the URL (no
    credentials in it), the database, the user and the password."""
    text = datasource_yaml('http://bob:p%40ss:w"d@influx:8086', "metrics", name="numbat")
    [source] = yaml.safe_load(text)["datasources"]
    assert source["type"] == "influxdb" and source["uid"] == source["name"] == "numbat"
    assert source["url"] == "http://influx:8086"
    assert source["database"] == source["jsonData"]["dbName"] == "metrics"
    assert source["user"] == "bob" and source["secureJsonData"] == {"password": 'p@ss:w"d'}


def test_grafana_command_writes_the_files(influx_db: InfluxDatabase, tmp_path: Path) -> None:
    """numbat grafana --out writes the dashboard, a private provisioning file with the
    config's credentials, and a provider; it prints no password."""
    asyncio.run(_write(influx_db))
    config = tmp_path / "numbat.toml"
    config.write_text(
        f"""
[[collector.outputs]]
type = "influxdb"
urls = ["{influx_db.server.url}"]
database = "{influx_db.name}"
username = "grafana"
password = "t0p-s3cret"
spool_dir = "{tmp_path / "spool"}"
"""
    )
    out = tmp_path / "grafana"
    result = _numbat("grafana", "--out", str(out), "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert "t0p-s3cret" not in result.stdout + result.stderr
    model = json.loads((out / "numbat.json").read_text())
    titles = [p["title"] for p in model["panels"]]
    assert "web.hits (rate/s)" in titles and "db.load (mean)" in titles
    provisioning = out / "datasource.yaml"
    assert stat.S_IMODE(provisioning.stat().st_mode) == 0o600
    [source] = yaml.safe_load(provisioning.read_text())["datasources"]
    assert source["secureJsonData"]["password"] == "t0p-s3cret"
    assert source["url"] == influx_db.server.url and source["database"] == influx_db.name
    [provider] = yaml.safe_load((out / "dashboards.yaml").read_text())["providers"]
    assert provider["options"]["path"] == str(out.resolve())


def test_grafana_command_needs_influxdb(tmp_path: Path) -> None:
    """With no InfluxDB to point Grafana at, the command exits 2 saying so."""
    config = tmp_path / "numbat.toml"
    config.write_text(f'[[collector.outputs]]\ntype = "sqlite"\npath = "{tmp_path / "s.db"}"\n')
    result = _numbat("grafana", "--out", str(tmp_path / "out"), "-c", str(config))
    assert result.returncode == 2
    assert "Grafana reads InfluxDB" in result.stderr


def test_config_hints_override_the_series_own(influx_db: InfluxDatabase) -> None:
    """[dashboard.hints] (measurement glob -> hint) wins over a series' own hint and
    over the guess."""

    async def hints() -> dict[str, str]:
        store = InfluxStore(influx_db.server.url, influx_db.name)
        try:
            await store.write(_events())
            found = await metrics_of(store, now=NOW, overrides={"web.*": "gauge", "db.*": "timing"})
        finally:
            await store.close()
        return {m.measurement: m.hint for m in found}

    found = asyncio.run(hints())
    assert found["web.hits"] == found["web.latency"] == "gauge"
    assert found["db.load"] == "timing" and found["deploy"] == "annotation"
