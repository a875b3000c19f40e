"""Dashboard benchmark: first graph in a real browser, page weight, graph query time.

    python bench/dashboard.py            # full run (about a minute and a half on 2 cores)
    python bench/dashboard.py --quick    # 50 series, 6 hours: a smoke test

Each backend (the embedded SQLite store; a real ``/usr/bin/influxd`` 1.x on free
loopback ports, its files in a temporary directory) gets ``--series`` series (default
500: 25 apps x 10 hosts x ``APP.latency`` (a gauge) and ``APP.requests`` (a running
total: guessed a counter, drawn as a rate)), one point a minute for ``--hours`` (24)
ending now, written through ``Store.write`` (SQLite: then ``compact()``). A
``numbat.dashboard.app.Dashboard`` serves them on a free port (its analyzer address
has nothing listening: incidents then come from the store's ``numbat.alert`` events,
as when the analyzer is down).

(a) Time to first graph: Debian's chromium (Playwright, headless,
    ``executable_path=/usr/bin/chromium``), a fresh context (empty cache) per run. An
    init script clicks the first single series in the list as soon as the page says it
    is ready (``body[data-ready]``: config and the series list loaded), as a user with
    no think time would, and notes the first animation frame after that graph's box
    says it holds points (``.chart[data-points]`` > 0: set right after uPlot drew).
    Figure: ms from navigation start (``performance.now()``); the last-hour range (the
    page's default). Baseline: a blank page from a server in the same process, ms from
    navigation start to its ``load`` event. ``--runs`` runs each, alternating.
(b) Page weight: what the browser fetched for the page (HTML, JS, CSS, uPlot
    included), bytes on the wire (body + headers, as served: the dashboard does not
    compress) and the bodies gzip-compressed (level 6, as a compressing proxy would);
    the JSON the first graph needed (config, series list, the graph) beside.
(c) Range query behind one graph: ``GET /api/graph`` of one gauge series (tag
    ``host``) over the last hour and over the last 24 hours, ``--requests`` times each
    (default 50, after one warm-up) over HTTP from this process; p50 and p95 ms.
    Baseline: the plain ``Store.query`` (mean, same range and bucket) in the
    dashboard's own event loop, mean ms over as many calls.

The goals of issue 10 are checked at the end (GOALS): first graph under 1 s, page under
150 KB compressed, p95 query under 50 ms on the embedded store.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlencode

from aiohttp import web
from playwright.sync_api import Browser, sync_playwright

from collector import free_port
from influx import Influxd
from numbat.config import from_dict
from numbat.dashboard.app import Dashboard
from numbat.dashboard.graphs import bucket_for
from numbat.event import Event
from numbat.store import Store
from numbat.store.influx import InfluxStore
from numbat.store.sqlite import SQLiteStore

CHROMIUM: Final = "/usr/bin/chromium"
MINUTE: Final = 60_000
HOUR: Final = 60 * MINUTE
HOSTS: Final = 10
BATCH: Final = 5_000
T = TypeVar("T")

# Clicks the first single series once the page is ready; notes the frame after its graph
# holds points. Playwright adds it before the page's own scripts (not subject to the CSP).
PROBE: Final = """
window.__bench = {};
new MutationObserver(() => {
  const b = window.__bench;
  if (!b.ready && document.body && document.body.dataset.ready) {
    b.ready = performance.now();
    const button = document.querySelector("button.series:not(.by-host)");
    b.clicked = button ? button.dataset.measurement + " " + button.title : null;
    if (button) button.click();
  }
  const chart = document.querySelector(".chart[data-points]");
  if (!b.points && chart && Number(chart.dataset.points) > 0) {
    b.points = performance.now();
    requestAnimationFrame(() => { b.graph = performance.now(); });
  }
}).observe(document, { subtree: true, childList: true, attributes: true,
                       attributeFilter: ["data-ready", "data-points"] });
"""
# Non-blank pixels of the first graph's canvas: proof it was drawn with data.
INKED: Final = """() => {
  const c = document.querySelector(".chart canvas");
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
  return n;
}"""
BLANK: Final = "<!doctype html><html><head><title>blank</title></head><body></body></html>"


def events(series: int, hours: int, now: int, first: int, count: int) -> list[Event]:
    """Points ``first..first+count`` of the data: minute by minute, every series each."""
    start = now - hours * HOUR
    out: list[Event] = []
    for i in range(first, first + count):
        minute, s = divmod(i, series)
        app, rest = divmod(s, 2 * HOSTS)
        kind, host = divmod(rest, HOSTS)
        value = float(minute * (s % 7 + 1)) if kind else 20.0 + (i * 7919) % 97
        out.append(
            {
                "name": f"app{app:02d}." + ("requests" if kind else "latency"),
                "value": value,
                "time": start + minute * MINUTE + s * 10,
                "host": f"h{host}",
            }
        )
    return out


async def fill(store: Store, series: int, hours: int, now: int) -> float:
    """Write the data; the events/s of ``write()`` (and ``compact()`` for SQLite)."""
    total = series * hours * 60
    began = time.perf_counter()
    for first in range(0, total, BATCH):
        await store.write(events(series, hours, now, first, min(BATCH, total - first)))
    if isinstance(store, SQLiteStore):
        await store.compact()
    return total / (time.perf_counter() - began)


class Loop:
    """An asyncio loop in a thread (Playwright's sync API owns the main thread)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


async def blank_server() -> tuple[web.AppRunner, str]:
    """The baseline page, from aiohttp on a free port."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=BLANK, content_type="text/html")

    app = web.Application()
    app.add_routes([web.get("/", page)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/"


def first_graph(browser: Browser, url: str) -> tuple[float, float, dict[str, Any]]:
    """One fresh-context load of the dashboard: ms to the first graph, ms to ready, and
    what the page fetched (url -> (kind, wire bytes, body, headers))."""
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    fetched: dict[str, Any] = {}
    try:
        page = context.new_page()
        page.add_init_script(PROBE)

        def seen(response: Any) -> None:
            body = response.body()
            sizes = response.request.sizes()
            wire = sizes["responseBodySize"] + sizes["responseHeadersSize"]
            kind = response.request.resource_type
            fetched[response.url] = (kind, wire, body, response.headers)

        page.on("requestfinished", lambda request: seen(request.response()))
        page.goto(url)
        page.wait_for_function("() => window.__bench.graph !== undefined", timeout=30_000)
        probe = page.evaluate("() => window.__bench")
        if page.evaluate(INKED) == 0:
            raise RuntimeError("the first graph's canvas is blank")
        page.wait_for_load_state("networkidle")
        return probe["graph"], probe["ready"], fetched
    finally:
        context.close()


def blank_load(browser: Browser, url: str) -> float:
    """ms from navigation start to the blank page's load event, fresh context."""
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    try:
        page = context.new_page()
        page.goto(url, wait_until="load")
        loaded: float = page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
        return loaded
    finally:
        context.close()


def weight(fetched: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    """(files, wire bytes, gzip bytes) of the page (document, script, stylesheet) and of
    the JSON it fetched."""
    out = {"page": [0, 0, 0], "json": [0, 0, 0]}
    for kind, wire, body, _headers in fetched.values():
        group = "page" if kind in ("document", "script", "stylesheet") else "json"
        if kind not in ("document", "script", "stylesheet", "fetch"):
            continue
        out[group][0] += 1
        out[group][1] += wire
        out[group][2] += len(gzip.compress(body, 6))
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


def get_ms(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as resp:
        resp.read()
    return (time.perf_counter() - started) * 1000


async def timed(call: Callable[[], Awaitable[object]], repeats: int) -> list[float]:
    """ms per call, ``repeats`` times after one warm-up call."""
    await call()
    spent = []
    for _ in range(repeats):
        started = time.perf_counter()
        await call()
        spent.append((time.perf_counter() - started) * 1000)
    return spent


def p95(values: list[float]) -> float:
    """The 95th percentile, nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, -(-95 * len(ordered) // 100) - 1)]


def bench_backend(
    name: str, store: Store, loop: Loop, browser: Browser, blank: str, args: argparse.Namespace
) -> dict[str, Any]:
    """(a), (b) and (c) on one backend, its data written already."""
    config = from_dict(
        {
            "dashboard": {
                "listen": f"http://127.0.0.1:{free_port()}",
                "analyzer": f"http://127.0.0.1:{free_port()}",
            }
        }
    )
    dash = Dashboard(config, store=store)
    loop.run(dash.start())
    result: dict[str, Any] = {"graph": [], "ready": [], "blank": []}
    try:
        for _ in range(args.runs):
            graph, ready, fetched = first_graph(browser, dash.url)
            result["graph"].append(graph)
            result["ready"].append(ready)
            result["blank"].append(blank_load(browser, blank))
        result["weight"] = weight(fetched)
        print(
            f"  [{name}] first graph {statistics.median(result['graph']):.0f} ms"
            f" (ready {statistics.median(result['ready']):.0f} ms),"
            f" blank {statistics.median(result['blank']):.0f} ms"
        )
        now = int(time.time() * 1000)
        for label, span in (("last hour", HOUR), ("last 24 h", min(24, args.hours) * HOUR)):
            end, start = now, now - span
            query = urlencode(
                {"measurement": "app00.latency", "tag": "host=h0", "start": start, "end": end}
            )
            url = f"{dash.url}api/graph?{query}"
            get_ms(url)
            spent = [get_ms(url) for _ in range(args.requests)]
            bucket = bucket_for(start, end)

            async def plain(start: int = start, end: int = end, bucket: int = bucket) -> object:
                return await store.query(
                    "app00.latency",
                    {"host": "h0"},
                    start=start - start % bucket,
                    end=end,
                    bucket=bucket,
                    aggregate="mean",
                )

            base = loop.run(timed(plain, args.requests))
            result[f"query {label}"] = (spent, base)
            print(
                f"  [{name}] /api/graph {label}: p50 {statistics.median(spent):.1f} ms,"
                f" p95 {p95(spent):.1f} ms; Store.query mean {statistics.mean(base):.1f} ms"
            )
    finally:
        dash.store = None  # the caller closes the store
        loop.run(dash.stop())
    return result


def summary(name: str, res: dict[str, Any]) -> list[str]:
    graph, blank = statistics.median(res["graph"]), statistics.median(res["blank"])
    lines = [
        f"[{name}] (a) first graph: {graph:.0f} ms"
        f" [{min(res['graph']):.0f}..{max(res['graph']):.0f}]"
        f" (page ready {statistics.median(res['ready']):.0f} ms);"
        f" blank page load {blank:.0f} ms [{min(res['blank']):.0f}..{max(res['blank']):.0f}];"
        f" ratio {graph / blank:.1f}x the blank page",
    ]
    for group, (files, wire, gz) in res["weight"].items():
        what = "page (HTML+JS+CSS, uPlot)" if group == "page" else "JSON for the first graph"
        lines.append(
            f"[{name}] (b) {what}: {files} files, {wire / 1024:.1f} KiB on the wire,"
            f" {gz / 1024:.1f} KiB gzipped"
        )
    for key in ("query last hour", "query last 24 h"):
        spent, base = res[key]
        mean = statistics.mean(base)
        lines.append(
            f"[{name}] (c) /api/graph, {key.removeprefix('query ')}: p50"
            f" {statistics.median(spent):.1f} ms, p95 {p95(spent):.1f} ms;"
            f" Store.query mean {mean:.1f} ms; ratio p95/Store.query {p95(spent) / mean:.1f}x"
        )
    return lines


def goals(res: dict[str, Any]) -> list[str]:
    graph = statistics.median(res["graph"])
    gz = res["weight"]["page"][2] / 1024
    worst = max(p95(res[k][0]) for k in ("query last hour", "query last 24 h"))
    return [
        f"first graph {graph:.0f} ms < 1000 ms: {'ok' if graph < 1000 else 'MISSED'}",
        f"page {gz:.1f} KiB gzipped < 150 KB: {'ok' if gz * 1024 < 150_000 else 'MISSED'}",
        f"p95 graph query {worst:.1f} ms < 50 ms: {'ok' if worst < 50 else 'MISSED'}",
    ]


def machine() -> str:
    return (
        f"nproc {os.cpu_count()}, {platform.machine()}, Linux {platform.release()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )


def main(args: argparse.Namespace) -> None:
    began = time.perf_counter()
    print(f"machine: {machine()}")
    print(f"{args.series} series, one point a minute for {args.hours} h, in each backend")
    loop = Loop()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="numbat-bench-dash-") as name, sync_playwright() as pw:
        tmp = Path(name)
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        runner, blank = loop.run(blank_server())
        influxd = Influxd(tmp)
        try:
            now = int(time.time() * 1000) // MINUTE * MINUTE
            sqlite_store = SQLiteStore(tmp / "n.db")
            rate = loop.run(fill(sqlite_store, args.series, args.hours, now))
            print(f"  [sqlite] wrote the data at {rate:,.0f} events/s")
            results["sqlite"] = bench_backend("sqlite", sqlite_store, loop, browser, blank, args)
            loop.run(sqlite_store.close())
            influxd.start()
            influxd.query("CREATE DATABASE dash")
            influx_store = InfluxStore(influxd.url, "dash")
            rate = loop.run(fill(influx_store, args.series, args.hours, now))
            print(f"  [influxdb] wrote the data at {rate:,.0f} events/s")
            results["influxdb"] = bench_backend(
                "influxdb", influx_store, loop, browser, blank, args
            )
            loop.run(influx_store.close())
        finally:
            influxd.stop()
            loop.run(runner.cleanup())
            browser.close()
    loop.close()
    lines = ["SUMMARY: medians of the runs, [min..max]"]
    for backend, res in results.items():
        lines += summary(backend, res)
    lines.append("GOALS (embedded store)")
    lines += goals(results["sqlite"])
    lines += [f"total {time.perf_counter() - began:.0f} s", machine()]
    print("\n".join(lines))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small numbers (smoke test)")
    parser.add_argument("--series", type=int, default=500, help="a multiple of 20")
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args(argv)
    if args.quick:
        args.series, args.hours, args.runs, args.requests = 60, 6, 2, 10
    return args


if __name__ == "__main__":
    main(parse_args(sys.argv[1:]))
