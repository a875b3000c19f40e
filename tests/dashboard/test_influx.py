"""The dashboard over InfluxDB: the same page, from a real influxd."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.dashboard.conftest import Up, Watched, now_ms
from tests.store.conftest import InfluxServer


@pytest.fixture(scope="module")
def up_influx(influxd: InfluxServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """``numbat up --influx`` (with a password in NUMBAT_INFLUX's URL) on the session's influxd."""
    influxd.create_database("dashboard")
    running = Up(
        tmp_path_factory.mktemp("upflux") / "data",
        ["--influx", influxd.url, "--database", "dashboard"],
    )
    yield running
    running.stop()
    influxd.drop_database("dashboard")


def test_a_graph_shows_points_just_emitted_from_influxdb(up_influx: Up, watched: Watched) -> None:
    """Over InfluxDB a gauge emitted a moment ago is listed and graphed, and a deploy of
    its app is a marker on it."""
    t = now_ms()
    up_influx.send(
        *(
            {"name": "web.latency", "host": "f1", "value": 10 + i, "time": t - i * 10_000}
            for i in range(5)
        ),
        {"name": "web.deploy", "host": "f1", "description": "deployed v3", "time": t - 20_000},
    )
    up_influx.wait_series("web.latency", "web.deploy")
    page = watched.open(up_influx.url)
    page.fill("#search", "web.latency")
    page.locator("button.series[data-measurement='web.latency']").click()
    chart = page.locator(".chart[data-measurement='web.latency']")
    expect(chart).to_have_attribute("data-hint", "gauge")
    expect(chart).to_have_attribute("data-points", "5")
    expect(chart.locator(".marker .label")).to_have_text("deployed v3")
    assert watched.errors == []


def test_the_page_never_sees_the_store_url(up_influx: Up) -> None:
    """What the page can fetch never holds the store's address (nor its credentials)."""
    host = up_influx.log.read_text()  # the banner names it; the page must not
    assert "InfluxDB at" in host
    for path in ("", "api/config", "api/status", "api/series"):
        with urllib.request.urlopen(up_influx.url + path, timeout=10) as resp:
            body = resp.read().decode()
        assert ":8086" not in body and "influx" not in body.lower(), path
    assert json.loads(urllib.request.urlopen(up_influx.url + "api/config").read())
