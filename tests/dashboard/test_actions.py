"""Actions from the page: silencing, the dashboard's token, zooming by dragging."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.dashboard.conftest import Up, Watched, now_ms


@pytest.fixture(scope="module")
def up_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """``numbat up -c`` whose [dashboard] has a token (and its analyzer another)."""
    root = tmp_path_factory.mktemp("uptoken")
    conf = root / "numbat.toml"
    conf.write_text('[analyzer]\ntoken = "an-tok-7"\n[dashboard]\ntoken = "dash-tok-3"\n')
    running = Up(root / "data", ["-c", str(conf)])
    yield running
    running.stop()


def test_with_a_token_the_page_asks_for_it_before_acting(up_token: Up, watched: Watched) -> None:
    """With a dashboard token an ack from the page is refused (said on the page) until
    the token is given; then it goes through, the analyzer called with its own token."""
    up_token.send({"name": "tok.check", "host": "t1", "status": "critical", "ttl": 600_000})
    page = watched.open(up_token.url)
    row = page.locator("#severities .incident[data-id='t1.tok.check']")
    expect(row).to_be_visible(timeout=20_000)
    expect(page.locator("#token-box")).to_be_visible()
    row.locator("button.ack").click()
    expect(page.locator("#action-error")).to_contain_text("token")
    expect(row).to_be_visible()
    page.fill("#token", "dash-tok-3")
    page.locator("#token").dispatch_event("change")
    row.locator("button.ack").click()
    expect(row).to_have_count(0)
    expect(page.locator("#action-error")).to_be_hidden()
    watched.errors.clear()  # the refused ack's 401 was logged by the browser


def test_silence_from_the_page(up_token: Up, watched: Watched) -> None:
    """Silence 1 h on an incident marks it silenced and takes the action away."""
    up_token.send({"name": "sil.check", "host": "s9", "status": "critical", "ttl": 600_000})
    page = watched.open(up_token.url)
    page.fill("#token", "dash-tok-3")
    page.locator("#token").dispatch_event("change")
    row = page.locator(".incident[data-id='s9.sil.check']")
    expect(row).to_be_visible(timeout=20_000)
    row.locator("button.silence").click()
    expect(row.locator(".state")).to_have_text("silenced", timeout=20_000)
    expect(row.locator("button.silence")).to_have_count(0)


def test_dragging_across_a_graph_zooms_to_that_range(up_token: Up, watched: Watched) -> None:
    """A drag over a graph sets a custom range of the dragged stretch, and the graph is
    drawn again over it."""
    t = now_ms()
    up_token.send(
        *(
            {"name": "zoom.load", "host": "z1", "value": i, "time": t - i * 30_000}
            for i in range(60)
        )
    )
    up_token.wait_series("zoom.load")
    page = watched.open(up_token.url)
    page.fill("#search", "zoom.load")
    page.locator("button.series[data-measurement='zoom.load']").click()
    chart = page.locator(".chart[data-measurement='zoom.load']")
    expect(chart).to_have_attribute("data-points", "60")
    hour = float(chart.get_attribute("data-span") or 0)
    assert 3600 <= hour < 3700, hour  # the hour, from the start of its first bucket
    box = chart.locator(".u-over").bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.25, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.75, y, steps=5)
    page.mouse.up()
    expect(page.locator("#range")).to_have_value("custom")
    expect(page.locator("#custom")).to_be_visible()
    expect(chart).not_to_have_attribute("data-span", str(round(hour)))
    span = float(chart.get_attribute("data-span") or 0)
    assert 0.4 * hour < span < 0.6 * hour, span  # about the half dragged over
