"""The dashboard in a real browser (Debian's chromium) against a real ``numbat up``."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from playwright.sync_api import expect

from tests.dashboard.conftest import Standalone, Up, Watched, now_ms
from tests.helpers import wait_until


def _chart(watched: Watched, up: Up, measurement: str, search: str | None = None) -> None:
    page = watched.open(up.url)
    page.fill("#search", search or measurement)
    page.locator(f"button.series[data-measurement='{measurement}']").first.click()


def test_the_page_loads_with_its_security_headers(up: Up, watched: Watched) -> None:
    """The page loads with uPlot, says all is well with no incident, and is served with
    a Content-Security-Policy allowing script from itself only."""
    with urllib.request.urlopen(up.url, timeout=10) as resp:
        csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    page = watched.open(up.url)
    assert page.evaluate("typeof uPlot") == "function"
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator("#all-well")).to_be_visible()
    assert watched.errors == [] and watched.dialogs == []


def test_a_graph_shows_points_just_emitted(up: Up, watched: Watched) -> None:
    """A gauge emitted a moment ago is in the series list (by app and host) and its
    graph draws its points as a line."""
    t = now_ms()
    up.send(
        *(
            {"name": "web.latency", "host": "g1", "value": 10 + i, "time": t - i * 10_000}
            for i in range(5)
        )
    )
    up.wait_series("web.latency")
    _chart(watched, up, "web.latency")
    chart = watched.page.locator(".chart[data-measurement='web.latency']")
    expect(chart).to_have_attribute("data-hint", "gauge")
    expect(chart).to_have_attribute("data-points", "5")
    expect(chart.locator("canvas")).to_have_count(1)


def test_a_series_sent_less_often_than_a_bucket_is_drawn_as_points(
    up: Up, watched: Watched
) -> None:
    """A figure sent once a minute (empty buckets around each value) is drawn as joined
    points, not as nothing."""
    t = now_ms()
    up.send(
        *(
            {"name": "cron.backup.size", "host": "c1", "value": 5 + i, "time": t - i * 60_000}
            for i in range(10)
        )
    )
    up.wait_series("cron.backup.size")
    _chart(watched, up, "cron.backup.size")
    chart = watched.page.locator(".chart[data-measurement='cron.backup.size']")
    expect(chart).to_have_attribute("data-points", "10")
    expect(chart).to_have_attribute("data-sparse", "true")


def test_several_hosts_on_one_chart(up: Up, watched: Watched) -> None:
    """A measurement sent by two hosts can be drawn one line a host."""
    t = now_ms()
    up.send(*({"name": "api.load", "host": h, "value": 1, "time": t} for h in ("a1", "a2")))
    up.wait_series("api.load")
    page = watched.open(up.url)
    page.fill("#search", "api.load")
    page.locator("button.by-host[data-measurement='api.load']").click()
    chart = page.locator(".chart[data-measurement='api.load']")
    expect(chart).to_have_attribute("data-lines", "2")


def test_a_counter_is_drawn_as_a_rate(up: Up, watched: Watched) -> None:
    """A counter (increments, as the emitter's counter() sends) of 1 a second is drawn as
    about 1 per second, not as its increments nor their sum."""
    t = now_ms()
    up.send(
        *(
            {
                "name": "web.hits",
                "host": "c1",
                "type": "counter",
                "value": 1,
                "time": t - 120_000 + i * 1000,
            }
            for i in range(120)
        )
    )
    up.wait_series("web.hits")
    page = watched.open(up.url)
    page.select_option("#range", "900000")
    page.fill("#search", "web.hits")
    page.locator("button.series[data-measurement='web.hits']").click()
    chart = page.locator(".chart[data-measurement='web.hits']")
    expect(chart).to_have_attribute("data-hint", "counter")
    expect(chart).not_to_have_attribute("data-last", "")
    values = chart.get_attribute("data-values") or ""
    inner = [float(v) for v in values.split(",") if v][1:-1]  # whole buckets only
    assert inner and all(0.9 <= v <= 1.1 for v in inner), values
    expect(chart.locator(".hint")).to_have_text("counter, as a rate per second")


def test_a_deploy_annotation_is_a_marker_on_its_app_only(up: Up, watched: Watched) -> None:
    """A deploy of app ``shop`` on host s1 is a marker with its text on shop's graphs,
    and on no graph of another app."""
    t = now_ms()
    up.send(
        {"name": "shop.orders", "host": "s1", "value": 3, "time": t - 60_000},
        {"name": "shop.deploy", "host": "s1", "description": "deployed v2.1", "time": t - 30_000},
        {"name": "other.orders", "host": "s1", "value": 3, "time": t - 60_000},
    )
    up.wait_series("shop.orders", "shop.deploy", "other.orders")
    _chart(watched, up, "shop.orders")
    chart = watched.page.locator(".chart[data-measurement='shop.orders']")
    expect(chart.locator(".marker")).to_have_count(1)
    expect(chart.locator(".marker .label")).to_have_text("deployed v2.1")
    watched.page.fill("#search", "other.orders")
    watched.page.locator("button.series[data-measurement='other.orders']").click()
    other = watched.page.locator(".chart[data-measurement='other.orders']")
    expect(other).to_have_attribute("data-markers", "0")


def test_an_incident_appears_live_and_resolves_live(up: Up, watched: Watched) -> None:
    """With the page open, a heartbeat that stops is an incident on it (and its host
    missing in the header) without a reload; the next beat resolves it, live too."""
    page = watched.open(up.url)
    up.send({"name": "hb.heartbeat", "host": "hb-1", "ttl": 1000})
    row = page.locator(".incident[data-id='hb-1.hb.heartbeat']")
    expect(row).to_be_visible(timeout=20_000)
    expect(page.locator("#missing")).to_contain_text("hb-1")
    expect(row.locator(".name")).to_have_text("hb.heartbeat")
    up.send({"name": "hb.heartbeat", "host": "hb-1", "ttl": 60_000})
    expect(row).to_have_count(0, timeout=20_000)
    expect(page.locator("#missing")).not_to_contain_text("hb-1")


def test_an_ack_hides_the_incident(up: Up, watched: Watched) -> None:
    """Acknowledging an incident from the page takes it off the open list (it is
    listed, folded, under Acknowledged)."""
    page = watched.open(up.url)
    up.send(
        {
            "name": "backup.nightly",
            "host": "k1",
            "status": "critical",
            "ttl": 600_000,
            "description": "backup failed",
        }
    )
    row = page.locator("#severities .incident[data-id='k1.backup.nightly']")
    expect(row).to_be_visible(timeout=20_000)
    expect(row.locator(".message")).to_have_text("backup failed")
    row.locator("button.ack").click()
    expect(row).to_have_count(0)
    expect(page.locator("#acked-box")).to_be_visible()
    expect(page.locator("#acked .incident[data-id='k1.backup.nightly']")).to_be_hidden()


def test_emitter_strings_render_as_text_and_no_script_runs(up: Up, watched: Watched) -> None:
    """A metric named like an <img onerror> and a description holding a <script> show
    as their text, in the series list, the alert panel and a graph's markers; no image
    is made and no script runs (no dialog, no error)."""
    name = "<img src=x onerror=alert(1)>"
    evil = "<script>alert(2)</script><img src=y onerror=alert(3)>"
    t = now_ms()
    up.send(
        {"name": name, "host": "x1", "value": 1, "time": t - 5000},
        {
            "name": "xss.check",
            "host": "x1",
            "status": "critical",
            "ttl": 600_000,
            "description": evil,
        },
        {"name": "xss.deploy", "host": "x1", "description": evil, "time": t - 5000},
        {"name": "xss.value", "host": "x1", "value": 1, "time": t - 5000},
    )
    up.wait_series(name, "xss.check", "xss.deploy", "xss.value")
    page = watched.open(up.url)
    row = page.locator(".incident[data-id='x1.xss.check']")
    expect(row.locator(".message")).to_have_text(evil, timeout=20_000)
    page.fill("#search", "onerror")
    button = page.locator("button.series").filter(has_text=name)
    expect(button).to_have_text(name)
    button.click()
    expect(page.locator(".chart .name").first).to_have_text(name)
    page.fill("#search", "xss.value")
    page.locator("button.series[data-measurement='xss.value']").click()
    chart = page.locator(".chart[data-measurement='xss.value']")
    # the deploy and the check's description: both notes of app xss on x1
    expect(chart.locator(".marker .label")).to_have_text([evil, evil])
    assert page.locator("img, script:not([src])").count() == 0
    assert watched.dialogs == [] and watched.errors == []


def test_an_incident_shades_its_graph_from_breach_to_resolve(up: Up, watched: Watched) -> None:
    """A series that went critical and back is shaded as one band on its graph, with the
    moment it fired marked; another host's graph of the same name is not shaded."""
    t = now_ms()
    up.send(
        {"name": "jobs.queue", "host": "d1", "value": 50, "time": t - 60_000},
        {"name": "jobs.queue", "host": "d2", "value": 50, "time": t - 60_000},
        {"name": "jobs.queue", "host": "d1", "value": 99, "status": "critical", "ttl": 600_000},
    )
    wait_until(lambda: "d1.jobs.queue" in _open(up), 20.0, "the incident")
    up.send({"name": "jobs.queue", "host": "d1", "value": 40, "status": "ok"})
    wait_until(lambda: "d1.jobs.queue" not in _open(up), 20.0, "the resolve")
    up.wait_series("jobs.queue")
    page = watched.open(up.url)
    page.fill("#search", "jobs.queue")
    for host in ("d1", "d2"):
        page.locator(f"button.series[data-measurement='jobs.queue'][title='host={host}']").click()
    d1 = page.locator(".chart[data-measurement='jobs.queue']").filter(has_text="host=d1")
    expect(d1.locator(".band")).to_have_count(1)
    expect(d1.locator(".fired")).to_have_count(1)
    d2 = page.locator(".chart[data-measurement='jobs.queue']").filter(has_text="host=d2")
    expect(d2).to_have_attribute("data-incidents", "0")


def _open(up: Up) -> list[str]:
    return [i["id"] for i in up.get("api/status")["incidents"]]


def test_with_the_analyzer_down_the_header_does_not_claim_zero_hosts(
    tmp_path: Path, watched: Watched
) -> None:
    """A dashboard whose analyzer cannot be reached says so, and its heartbeat header
    shows "?" hosts, not "0 heartbeating, 0 missing" (which reads as all is well)."""
    from tests.interop.nodepeers import free_port

    dash = Standalone(tmp_path, f'analyzer = "http://127.0.0.1:{free_port()}"\n')
    try:
        page = watched.open(dash.url)
        expect(page.locator("#analyzer-error")).to_be_visible()
        expect(page.locator("#beating-count")).to_have_text("?")
        expect(page.locator("#hosts")).to_have_attribute("data-known", "false")
    finally:
        dash.kill()
