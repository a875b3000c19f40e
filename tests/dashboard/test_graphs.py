"""What a graph's JSON holds, over a real embedded store: hints, rates, markers, links."""

from __future__ import annotations

import asyncio
import urllib.parse
from pathlib import Path
from typing import Any

from numbat.config import from_dict
from numbat.dashboard import graphs
from numbat.dashboard.sources import AnalyzerClient
from numbat.event import normalize
from numbat.store.sqlite import SQLiteStore
from tests.store.conftest import free_port

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000


def _graph(
    tmp_path: Path, events: list[dict[str, Any]], measurement: str, **options: Any
) -> dict[str, Any]:
    """The graph of ``measurement`` over the hour from T0, with ``events`` stored."""
    config = from_dict({"dashboard": options.pop("dashboard", {})}).dashboard

    async def go() -> dict[str, Any]:
        store = SQLiteStore(tmp_path / "n.db", retention_ms=10**13)
        analyzer = AnalyzerClient(f"http://127.0.0.1:{free_port()}", None)
        try:
            await store.write([normalize(dict(e)) for e in events])
            return await graphs.graph(
                store,
                analyzer,
                config,
                measurement,
                options.pop("tags", {}),
                by=options.pop("by", None),
                start=T0,
                end=T0 + HOUR,
            )
        finally:
            await analyzer.close()
            await store.close()

    return asyncio.run(go())


def _rising(name: str, **fields: Any) -> list[dict[str, Any]]:
    """A total rising by 2 a second for 10 minutes, a point every second."""
    return [
        {"name": name, "value": 100 + 2 * i, "time": T0 + i * 1000, "host": "h", **fields}
        for i in range(600)
    ]


def test_a_rising_value_with_no_hint_is_guessed_a_counter_and_drawn_as_a_rate(
    tmp_path: Path,
) -> None:
    """No type field: a value that only rises is a counter, drawn per second (~2/s)."""
    found = _graph(tmp_path, _rising("jobs.done"), "jobs.done")
    assert found["hint"] == "counter"
    values = [v for v in found["series"][0]["values"] if v is not None]
    inner = values[1:-1]  # the first and last buckets hold part of a bucket's points
    assert len(inner) > 50 and all(1.5 <= v <= 2.5 for v in inner), values


def test_the_config_overrides_the_guess(tmp_path: Path) -> None:
    """[dashboard.hints] says the rising total is a gauge: drawn as its values."""
    found = _graph(
        tmp_path, _rising("jobs.done"), "jobs.done", dashboard={"hints": {"jobs.*": "gauge"}}
    )
    assert found["hint"] == "gauge"
    assert max(v for v in found["series"][0]["values"] if v is not None) > 1000


def test_an_own_hint_wins_over_the_guess(tmp_path: Path) -> None:
    """A ``type = "gauge"`` field keeps a rising value a gauge."""
    found = _graph(tmp_path, _rising("temp", type="gauge"), "temp")
    assert found["hint"] == "gauge"


def test_a_timing_is_three_lines(tmp_path: Path) -> None:
    """A timing is drawn as three lines (percentiles, or min/mean/max before the store
    has them), low to high."""
    events = [
        {"name": "api.time", "value": float(i % 100), "time": T0 + i * 100, "type": "timing"}
        for i in range(3000)
    ]
    found = _graph(tmp_path, events, "api.time")
    assert found["hint"] == "timing" and len(found["series"]) == 3
    lows, mids, highs = (s["values"][0] for s in found["series"])
    assert lows <= mids <= highs


def test_text_with_no_value_is_an_annotation(tmp_path: Path) -> None:
    """Deploy notes alone are guessed annotations: markers, no line."""
    events = [{"name": "web.deploy", "time": T0 + 1000, "description": "v1", "host": "h"}]
    found = _graph(tmp_path, events, "web.deploy")
    assert found["hint"] == "annotation" and found["series"] == []
    assert [n["text"] for n in found["annotations"]] == ["v1"]


def test_markers_are_of_the_graphs_app_and_host(tmp_path: Path) -> None:
    """A graph of web on h1 shows web's notes of h1 and of no host, not h2's nor shop's."""
    events = [
        {"name": "web.load", "value": 1, "time": T0, "host": "h1"},
        {"name": "web.deploy", "time": T0 + 1, "description": "on h1", "host": "h1"},
        {"name": "web.deploy", "time": T0 + 2, "description": "on h2", "host": "h2"},
        {"name": "web.note", "time": T0 + 3, "description": "everywhere"},
        {"name": "shop.deploy", "time": T0 + 4, "description": "shop", "host": "h1"},
    ]
    found = _graph(tmp_path, events, "web.load", tags={"host": "h1"})
    assert [n["text"] for n in found["annotations"]] == ["on h1", "everywhere"]


def test_lines_by_host(tmp_path: Path) -> None:
    """``by=host``: one line a host, labelled with it."""
    events = [{"name": "web.load", "value": i, "time": T0, "host": f"h{i}"} for i in range(3)]
    found = _graph(tmp_path, events, "web.load", by="host")
    assert [s["label"] for s in found["series"]] == ["h0", "h1", "h2"]


def test_a_grafana_link_when_grafana_url_is_set(tmp_path: Path) -> None:
    """With grafana_url a graph links to its Grafana history (metric, host, range);
    without it, no link."""
    events = [{"name": "web.load", "value": 1, "time": T0, "host": "h1"}]
    assert _graph(tmp_path, events, "web.load")["grafana"] is None
    found = _graph(
        tmp_path,
        [],
        "web.load",
        tags={"host": "h1"},
        dashboard={"grafana_url": "https://g.example"},
    )
    link = found["grafana"]
    assert link.startswith("https://g.example/explore?")
    assert all(part in urllib.parse.unquote(link) for part in ("web.load", "h1", str(T0)))


def test_stored_alert_events_shade_when_the_analyzer_has_none(tmp_path: Path) -> None:
    """With the analyzer unreachable, the stored numbat.alert events of the series (its
    write-back) still shade it: one band from the opening to the resolve, the host's."""
    alert = {"name": "numbat.alert", "alert": "jobs.queue", "rule": "status"}
    events = [
        {"name": "jobs.queue", "value": 5, "time": T0, "host": "h1"},
        {
            **alert,
            "value": 3,
            "time": T0 + 60_000,
            "host": "h1",
            "incident": "h1.jobs.queue",
            "kind": "opened",
            "status": "critical",
            "description": "queue stuck",
        },
        {
            **alert,
            "value": 3,
            "time": T0 + 90_000,
            "host": "h1",
            "incident": "h1.jobs.queue",
            "kind": "flapping",
            "status": "critical",
        },
        {
            **alert,
            "value": 0,
            "time": T0 + 120_000,
            "host": "h1",
            "incident": "h1.jobs.queue",
            "kind": "resolved",
            "status": "ok",
        },
        {
            **alert,
            "value": 3,
            "time": T0 + 60_000,
            "host": "h2",
            "incident": "h2.jobs.queue",
            "kind": "opened",
            "status": "critical",
        },
    ]
    found = _graph(tmp_path, events, "jobs.queue", tags={"host": "h1"})
    assert found["incidents_error"]  # the analyzer is down here
    assert [(b["from"], b["to"], b["message"]) for b in found["incidents"]] == [
        ((T0 + 60_000) / 1000, (T0 + 120_000) / 1000, "queue stuck")
    ]
