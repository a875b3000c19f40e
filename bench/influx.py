"""InfluxDB output benchmark: points/s from TCP emitters through our collector into influxd.

    python bench/influx.py                 # full run (about two minutes on 2 cores)
    python bench/influx.py --quick         # smaller numbers, for a smoke test
    python bench/influx.py --workers 2 --runs 1 --timeline
    python bench/influx.py --profile       # where our collector spends its time (py-spy)
    python bench/influx.py --unique --workers 1   # also every event a new series
    python bench/influx.py --render        # the renderer alone: new vs known series, loop gaps

One real ``/usr/bin/influxd`` (1.x) runs on free loopback ports with its files in a
temporary directory (``wal-fsync-delay = "0s"``, cache sizes default), shared by every
run; each run writes into a database of its own, dropped after it, and influxd is let
go idle (its snapshots and compactions done) before the next run starts.

The points: ``--points`` (default 3,000,000) of 1,000 series, ``bench.requests,host=hN,
route=/api/...`` (200 hosts x 5 routes), point ``i`` of series ``i % 1000`` at ``t0 +
i // 1000`` ms: each series one point a millisecond, in time order.

(a) Raw: a minimal line-protocol writer in its own process: the points rendered, before
    the clock starts, into batches of 5,000 lines, POSTed one after another over one
    keep-alive ``http.client`` connection to ``/write?db=...&precision=ns``. Points/s =
    points / (time from the first POST until the last one answered 204): influxd's own
    ingest rate on this machine with one writer.
(b) End to end: our collector (``python -m numbat collector -c cfg.toml``) with one TCP
    listener and one ``influxdb`` output (``batch_size = 5000``, its spool in the
    temporary directory, default ``fsync_interval``), ``workers = 1`` and ``workers = 2``
    (``--workers``). bench/collector.py's load generator (a separate process that
    renders everything first, then only pushes bytes into sockets with ``sendall``)
    sends the same points as numbat-emitter's NDJSON (``{"name":"bench.requests",
    "value":0.25,"host":"h1","route":"/api/x","time":...}``) over ``--connections``
    connections (default 16: emitters on 16 machines, each sending the series of its own
    hosts in time order; with ``workers = 2`` the kernel spreads connections over the
    workers by a hash, and a few connections can land very unevenly). Points/s = points
    / (time from the first byte sent until influxd had written them all: the
    ``writePointsOk`` of the database's shards in ``/debug/vars``, polled every 50 ms).
    Then ``SELECT count(value)`` must find exactly ``--points`` points.
    The collector's ``queue_size`` holds every event of a run (``--queue-size``): an
    output that falls behind the listeners drops what its queue cannot hold, and the
    figure would then count a loss, not a rate. "read" is the time until the collector
    had read everything (the generator's last EOF); ``--timeline`` shows the rate into
    influxd and the cores used every half second.
(c) CPU = user+system seconds over the run / wall time (cores), of the collector (all
    its processes; with workers, each worker's too), influxd, the generator or raw
    writer, and of other processes on the machine (flagged when over 0.15 cores). RSS:
    peak VmRSS of the collector's processes and of influxd, sampled every 100 ms.
(d) ``--profile``: one end-to-end run (1,000,000 points unless ``--points``) with
    ``py-spy record --native --subprocesses`` on the collector (the first of
    ``--workers``); prints the share of samples by part of the pipeline and by thread,
    and the top functions by self time. ``--raw FILE`` keeps py-spy's collapsed stacks.

(e) ``--unique``: each end-to-end variant again with a tag of its own on every event
    (``"request":"rN"``), so every event is a new series, until the cardinality guard
    demotes the tag (past ``max_series_per_measurement``, 100,000) and every event a
    new value of a demoted tag. GOALS compares the collector's cpu-us per point with the
    known-series run: a new series should cost at most about twice a known one.
(f) ``--render``: the line-protocol renderer alone, in this process (no influxd): cpu-us
    per event of a known series, a new one and one with its tag demoted; and how long a
    batch of 20,000 new series holds the event loop, rendered at once, in chunks (the
    output's way) or in a thread.

The goal: end to end at least 70% of the raw rate; the bar is 50%. Both share the
machine's cores with influxd, so the collector's CPU per point decides it. Figures are
medians with [min..max] over ``--runs`` runs; raw and the collector variants alternate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import itertools
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

from collector import (
    BUSY_CORES,
    Generator,
    OtherLoad,
    RSSSampler,
    blast_connections,
    cpu_seconds,
    cpu_self,
    free_port,
    median,
    mib,
    open_connections,
    proc_tree,
    spread,
)

INFLUXD: Final = "/usr/bin/influxd"
MEASUREMENT: Final = "bench.requests"
SERIES: Final = 1_000
HOSTS: Final = 200
ROUTES: Final = ("/api/x", "/api/y", "/api/users", "/api/orders/list", "/health")
BATCH: Final = 5_000
POLL_EVERY: Final = 0.05
TIMELINE_EVERY: Final = 0.5
TARGET: Final = 0.70
BAR: Final = 0.50
UNIQUE_GOAL: Final = 2.2  # a new series costs at most about twice a known one (issue 8)
OURS_CMD: list[str] = [sys.executable, "-m", "numbat"]
QUEUE_SIZE = 0  # the collector's queue_size; 0: room for every event of a run

_INFLUXD_CONFIG: Final = """\
# Debian's influxd 1.6.7 reads "reporting-enabled" (upstream: reporting-disabled).
reporting-enabled = false
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root}/meta"
  logging-enabled = false

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  wal-fsync-delay = "0s"
  query-log-enabled = false
  max-series-per-database = 0
  max-values-per-tag = 0

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false

[logging]
  level = "warn"
  suppress-logo = true

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[retention]
  enabled = false

[shard-precreation]
  enabled = false
"""


# -- what is written ------------------------------------------------------------------------


def series_tags(s: int) -> tuple[str, str]:
    """The host and route of series ``s`` (0..999)."""
    return f"h{s % HOSTS}", ROUTES[s // HOSTS % len(ROUTES)]


# Point i has the value VALUES[i % 997], written as repr(float) writes it (as we do).
VALUES: Final = [repr(k / 4) for k in range(997)]


def line_batches(total: int, t0_ms: int) -> list[bytes]:
    """``total`` points as line protocol in batches of ``BATCH`` lines.

    Point ``i`` is of series ``i % 1000`` at ``t0_ms + i // 1000`` ms: each series
    one point a millisecond.

    >>> line_batches(2, 1000)[0].decode().splitlines()
    ['bench.requests,host=h0,route=/api/x value=0.0 1000000000', \
'bench.requests,host=h1,route=/api/x value=0.25 1000000000']
    """
    prefixes = []
    for s in range(SERIES):
        host, route = series_tags(s)
        prefixes.append(f"{MEASUREMENT},host={host},route={route} value=")
    batches = []
    for first in range(0, total, BATCH):
        lines = [
            f"{prefixes[i % SERIES]}{VALUES[i % 997]} {(t0_ms + i // SERIES) * 1_000_000}\n"
            for i in range(first, min(first + BATCH, total))
        ]
        batches.append("".join(lines).encode())
    return batches


def ndjson_streams(total: int, conns: int, t0_ms: int, unique: bool = False) -> list[bytes]:
    """The same points as events, as numbat-emitter sends them, one stream a connection.

    Each connection carries the series of its own hosts (host ``hN`` on connection
    ``N % conns``), in time order, as emitters on ``conns`` machines would. ``unique``:
    every event also has a tag of its own, ``"request":"rN"``: each is a new series.

    >>> ndjson_streams(2, 1, 1000)[0].splitlines()[1]
    b'{"name":"bench.requests","value":0.25,"host":"h1","route":"/api/x","time":1000}'
    >>> ndjson_streams(2, 1, 1000, unique=True)[0].splitlines()[1]
    b'{"name":"bench.requests","value":0.25,"host":"h1","route":"/api/x","request":"r1","time":1000}'
    """
    heads, conn_of = [], []
    for s in range(SERIES):
        host, route = series_tags(s)
        heads.append(f',"host":"{host}","route":"{route}"')
        conn_of.append(s % HOSTS % conns)
    lines: list[list[str]] = [[] for _ in range(conns)]
    adds = [part.append for part in lines]
    start = f'{{"name":"{MEASUREMENT}","value":'
    for i in range(total):
        s = i % SERIES
        request = f',"request":"r{i}"' if unique else ""
        when = t0_ms + i // SERIES
        adds[conn_of[s]](f'{start}{VALUES[i % 997]}{heads[s]}{request},"time":{when}}}\n')
    return ["".join(part).encode() for part in lines]


# -- the load: raw writer and TCP generator (child processes) -------------------------------


def raw_writer(port: int, db: str, total: int, pipe: Connection) -> None:
    """Child process: render ``total`` points, await "go", POST them batch by batch.

    Reports ``{"start", "end", "cpu", "errors"}`` (monotonic seconds).
    """
    batches = line_batches(total, int(time.time() * 1000))
    path = "/write?" + urllib.parse.urlencode({"db": db, "precision": "ns"})
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    errors: list[str] = []
    pipe.send("ready")
    pipe.recv()
    cpu0, start = cpu_self(), time.monotonic()
    for body in batches:
        conn.request("POST", path, body, headers)
        resp = conn.getresponse()
        text = resp.read()
        if resp.status != 204:
            errors.append(f"{resp.status} {text[:200]!r}")
    end = time.monotonic()
    conn.close()
    pipe.send({"start": start, "end": end, "cpu": cpu_self() - cpu0, "errors": errors})


def tcp_generator(port: int, conns: int, total: int, unique: bool, pipe: Connection) -> None:
    """Child process: bench/collector.py's TCP generator, sending ``ndjson_streams``.

    Renders the streams, then sends each connection its stream with ``sendall``;
    reports as ``collector.blast_connections`` does.
    """
    streams = ndjson_streams(total, conns, int(time.time() * 1000), unique)
    socks = open_connections(port, conns, 300)
    blast_connections(socks, lambda sock, i: sock.sendall(streams[i]), pipe)


# -- influxd --------------------------------------------------------------------------------


class Influxd:
    """A real influxd on free loopback ports, its files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.root / "influxd.log"
        for _attempt in range(3):
            self.port, rpc_port = free_port(), free_port()
            config = self.root / "influxd.conf"
            text = _INFLUXD_CONFIG.format(root=self.root, http_port=self.port, rpc_port=rpc_port)
            config.write_text(text)
            with log.open("ab") as out:
                self.proc = subprocess.Popen(
                    [INFLUXD, "run", "-config", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.proc.poll() is None:
                with contextlib.suppress(OSError):
                    if self.request("GET", "/ping")[0] == 204:
                        return
                time.sleep(0.1)
            self.stop()
        raise RuntimeError(f"influxd did not start:\n{log.read_text(errors='replace')[-2000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request(method, path, body)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def query(self, q: str, db: str | None = None) -> dict[str, Any]:
        params = {"q": q, **({"db": db} if db else {})}
        status, body = self.request("POST", "/query?" + urllib.parse.urlencode(params))
        if status != 200:
            raise RuntimeError(f"{q}: {status} {body[:300]!r}")
        result: dict[str, Any] = json.loads(body)["results"][0]
        if "error" in result:
            raise RuntimeError(f"{q}: {result['error']}")
        return result

    def count(self, db: str) -> int:
        """Points of the benchmark's measurement in ``db`` (SELECT count(value))."""
        result = self.query(f'SELECT count(value) FROM "{MEASUREMENT}"', db)
        series = result.get("series") or [{"values": [[0, 0]]}]
        return int(series[0]["values"][0][1])

    def written(self, db: str) -> int:
        """Points influxd's shards of ``db`` have taken so far (``writePointsOk``)."""
        _, body = self.request("GET", "/debug/vars")
        total = 0
        for stat in json.loads(body).values():
            shard = isinstance(stat, dict) and stat.get("name") == "shard"
            if shard and (stat.get("tags") or {}).get("database") == db:
                total += int(stat["values"].get("writePointsOk", 0))
        return total

    def settle(self, idle: float = 0.1, timeout: float = 30.0) -> float:
        """Wait until influxd uses under ``idle`` cores over half a second (its snapshots
        and compactions done); the seconds waited."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            cpu0 = cpu_seconds([self.pid])
            time.sleep(0.5)
            if (cpu_seconds([self.pid]) - cpu0) / 0.5 < idle:
                break
        return time.monotonic() - start

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# -- our collector ---------------------------------------------------------------------------


@dataclass
class Collector:
    """Our collector as a subprocess: a TCP listener and one influxdb output."""

    workdir: Path
    influx_url: str
    db: str
    workers: int
    queue_size: int
    extra: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def config(self) -> Path:
        lines = [
            "[collector]",
            f"workers = {self.workers}",
            f'listen = ["tcp://127.0.0.1:{self.port}"]',
            "drain_timeout = 10.0",
            "stats_interval = 3600.0",
            f"queue_size = {self.queue_size}",
            *self.extra,
            "[[collector.outputs]]",
            'type = "influxdb"',
            f'urls = ["{self.influx_url}"]',
            f'database = "{self.db}"',
            f'spool_dir = "{self.workdir / "spool"}"',
            f"batch_size = {BATCH}",
        ]
        path = self.workdir / f"{self.db}.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> None:
        self.port = free_port()
        cmd = [*OURS_CMD, "collector", "-c", str(self.config()), "--log-level", "warning"]
        with (self.workdir / "collector-stderr.txt").open("ab") as err:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the collector exited: {self.stderr()[-2000:]}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                # workers = N: every worker binds the port; give the others a moment.
                if self.workers == 1 or len(proc_tree(self.pid)) > self.workers:
                    time.sleep(0.3 if self.workers > 1 else 0)
                    return
            time.sleep(0.05)
        raise RuntimeError(f"the collector did not get ready: {self.stderr()[-2000:]}")

    def stderr(self) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / "collector-stderr.txt").read_text(errors="replace")
        return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def running(col: Collector) -> Iterator[Collector]:
    try:
        col.start()
        yield col
    finally:
        col.stop()


# -- one run --------------------------------------------------------------------------------


@dataclass
class Run:
    variant: str  # "raw", "workers=1", ...
    points: int
    stored: int
    seconds: float
    cpu: float = 0.0  # the collector's (end to end) or the raw writer's, seconds
    influx_cpu: float = 0.0
    load_cpu: float = 0.0  # the generator's (end to end)
    peak_rss: int = 0  # the collector's
    influx_rss: int = 0
    read_all: float = 0.0
    others: float = 0.0
    worker_cpu: list[float] = field(default_factory=list)  # workers > 1: each worker's
    errors: list[str] = field(default_factory=list)
    # End to end: (seconds since the start, points written, collector cpu, influxd cpu).
    timeline: list[tuple[float, int, float, float]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Points/s; of the points stored when not all were (a loss, not a rate)."""
        return min(self.stored, self.points) / self.seconds if self.seconds > 0 else 0.0

    def cores(self, cpu: float) -> float:
        return cpu / self.seconds if self.seconds > 0 else 0.0


def raw_run(influx: Influxd, db: str, points: int) -> Run:
    influx.query(f'CREATE DATABASE "{db}"')
    gen = Generator(raw_writer, influx.port, db, points)
    try:
        influx.settle()
        sampler = RSSSampler(influx.pid)
        icpu0 = cpu_seconds([influx.pid])
        load = OtherLoad()
        gen.go()
        res = gen.result(600)
        icpu = cpu_seconds([influx.pid]) - icpu0
        sampler.stop()
    finally:
        gen.stop()
    if res is None:
        raise RuntimeError("the raw writer did not finish")
    seconds = res["end"] - res["start"]
    stored = influx.count(db)
    run = Run("raw", points, stored, seconds, res["cpu"], icpu, influx_rss=sampler.peak)
    run.others = load.cores(icpu, res["cpu"])
    run.errors = list(res["errors"])
    influx.query(f'DROP DATABASE "{db}"')
    return run


def e2e_run(
    influx: Influxd,
    workdir: Path,
    db: str,
    points: int,
    workers: int,
    conns: int,
    extra: list[str],
    spy: list[str] | None = None,
    unique: bool = False,
) -> Run:
    """One end-to-end run; with ``spy``, py-spy records the collector meanwhile;
    ``unique``: every event a new series (see ``ndjson_streams``)."""
    queue = QUEUE_SIZE or points + 100_000
    col = Collector(workdir, influx.url, db, workers, queue_size=queue, extra=extra)
    with running(col):
        gen = Generator(tcp_generator, col.port, conns, points, unique)
        rec = None
        try:
            influx.settle()
            if spy is not None:
                cmd = [*spy, "--pid", str(col.pid)]
                rec = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)
            run = measure(influx, col, gen, db, points)
        finally:
            gen.stop()
            if rec is not None:
                rec.send_signal(signal.SIGINT)
                rec.wait(120)
    run.stored = influx.count(db)
    if unique:
        run.variant += " unique"
    influx.query(f'DROP DATABASE "{db}"')
    return run


def measure(influx: Influxd, col: Collector, gen: Generator, db: str, points: int) -> Run:
    """Let the generator go; watch influxd until it has all the points (or gives up)."""
    sampler, isampler = RSSSampler(col.pid), RSSSampler(influx.pid)
    pids = proc_tree(col.pid)
    cpu0, icpu0 = cpu_seconds(pids), cpu_seconds([influx.pid])
    each0 = {pid: cpu_seconds([pid]) for pid in pids[1:]}
    load = OtherLoad()
    gen.go()
    box: list[dict[str, Any] | None] = []
    timeline: list[tuple[float, int, float, float]] = []
    waiter = threading.Thread(target=lambda: box.append(gen.result(600)))
    waiter.start()
    end, complete = wait_written(influx, db, points, col, timeline, timeout=600)
    cpu = cpu_seconds(pids) - cpu0
    icpu = cpu_seconds([influx.pid]) - icpu0
    each = [cpu_seconds([pid]) - cpu for pid, cpu in each0.items()]
    waiter.join()
    sampler.stop()
    isampler.stop()
    res = box[0] if box else None
    if res is None:
        raise RuntimeError("the generator did not finish")
    start: float = res["start"]
    run = Run(f"workers={col.workers}", points, 0, end - start, cpu, icpu)
    run.load_cpu = res["cpu"]
    run.worker_cpu = sorted(each, reverse=True) if col.workers > 1 else []
    run.peak_rss, run.influx_rss = sampler.peak, isampler.peak
    run.read_all = max(res["eof"]) - start if all(res["eof"]) else 0.0
    run.others = load.cores(cpu + icpu, res["cpu"])
    run.errors = list(res["errors"])
    if not complete:
        run.errors.append(f"gave up after {timeline[-1][1]:,} points: no progress for 15s")
    run.timeline = [(t - start, w, c, i) for t, w, c, i in timeline]
    return run


def wait_written(
    influx: Influxd,
    db: str,
    points: int,
    col: Collector,
    timeline: list[tuple[float, int, float, float]],
    timeout: float,
) -> tuple[float, bool]:
    """Poll influxd until the shards of ``db`` took ``points``: the time, and True.

    Appends ``(time, written, collector cpu, influxd cpu)`` to ``timeline`` every
    ``TIMELINE_EVERY`` seconds (and at the end). Gives up when the count has not moved
    for 15 s (the collector lost some) or at ``timeout``: the time it last moved, False.
    """
    deadline = time.monotonic() + timeout
    last, moved = -1, time.monotonic()
    pids, sampled = proc_tree(col.pid), 0.0
    while True:
        now = time.monotonic()
        written = influx.written(db)
        done = written >= points
        if now - sampled >= TIMELINE_EVERY or done:
            timeline.append((now, written, cpu_seconds(pids), cpu_seconds([influx.pid])))
            sampled = now
        if done:
            return now, True
        if written != last:
            last, moved = written, now
        exited = col.proc is not None and col.proc.poll() is not None
        if now - moved > 15 or exited or now > deadline:
            timeline.append((now, written, cpu_seconds(pids), cpu_seconds([influx.pid])))
            return moved, False
        time.sleep(POLL_EVERY)


# -- output ---------------------------------------------------------------------------------


def count(value: float) -> str:
    return f"{round(value):,}"


def cores(value: float) -> str:
    return f"{value:.2f}"


def describe(run: Run) -> str:
    ok = "all stored" if run.stored == run.points else f"STORED {run.stored:,}"
    if run.variant == "raw":
        text = (
            f"    raw writer: {run.points:,} points in {run.seconds:.2f}s ="
            f" {run.rate:,.0f} points/s ({ok}); cpu: influxd {cores(run.cores(run.influx_cpu))},"
            f" writer {cores(run.cores(run.cpu))} cores; influxd RSS peak"
            f" {mib(run.influx_rss)} MiB; other processes {run.others:.2f} cores"
        )
    else:
        text = (
            f"    collector {run.variant}: {run.points:,} points in {run.seconds:.2f}s ="
            f" {run.rate:,.0f} points/s ({ok}), read after {run.read_all:.2f}s;"
            f" cpu: collector {cores(run.cores(run.cpu))}{split(run)}, influxd"
            f" {cores(run.cores(run.influx_cpu))}, generator {cores(run.cores(run.load_cpu))}"
            f" cores; RSS peak collector {mib(run.peak_rss)} MiB, influxd"
            f" {mib(run.influx_rss)} MiB; other processes {run.others:.2f} cores"
        )
    if run.errors:
        text += f"; errors: {'; '.join(run.errors[:3])}"
    return text


def split(run: Run) -> str:
    """Each worker's share of the collector's cores (the kernel spreads connections)."""
    if not run.worker_cpu:
        return ""
    return " (workers " + "/".join(cores(run.cores(c)) for c in run.worker_cpu) + ")"


def describe_timeline(run: Run) -> str:
    """Per interval: points/s into influxd and the cores the collector and influxd used."""
    rows = ["      t(s)  points/s into influxd  cores: collector influxd"]
    for (t0, w0, c0, i0), (t1, w1, c1, i1) in itertools.pairwise(run.timeline):
        dt = t1 - t0
        rows.append(
            f"    {t1:6.1f}  {(w1 - w0) / dt:>21,.0f}  {(c1 - c0) / dt:16.2f} {(i1 - i0) / dt:7.2f}"
        )
    return "\n".join(rows)


def summary(results: dict[str, list[Run]], points: int) -> list[str]:
    lines = ["", "=" * 78, "SUMMARY: medians, [min..max] over the runs"]
    raw = results.get("raw", [])
    raw_rate = median([r.rate for r in raw])
    goals: list[str] = []
    for variant, runs in results.items():
        rates = [r.rate for r in runs]
        line = f"    {variant:<10} {spread(rates, count)} points/s"
        if variant == "raw":
            line += (
                f", cpu influxd {spread([r.cores(r.influx_cpu) for r in runs], cores)},"
                f" writer {spread([r.cores(r.cpu) for r in runs], cores)} cores,"
                f" influxd RSS {spread([r.influx_rss for r in runs], mib)} MiB"
            )
        else:
            ratio = median(rates) / raw_rate if raw_rate else 0.0
            line += (
                f" = {100 * ratio:.1f}% of raw; cpu collector"
                f" {spread([r.cores(r.cpu) for r in runs], cores)}, influxd"
                f" {spread([r.cores(r.influx_cpu) for r in runs], cores)}, generator"
                f" {spread([r.cores(r.load_cpu) for r in runs], cores)} cores;"
                f" cpu-us/point collector"
                f" {spread([1e6 * r.cpu / r.points for r in runs], lambda v: f'{v:.2f}')};"
                f" RSS collector {spread([r.peak_rss for r in runs], mib)} MiB, influxd"
                f" {spread([r.influx_rss for r in runs], mib)} MiB;"
                f" read after {spread([r.read_all for r in runs], lambda v: f'{v:.2f}s')}"
            )
            verdict = (
                "MEETS THE 70% TARGET"
                if ratio >= TARGET
                else ("HOLDS the 50% bar (under the 70% target)" if ratio >= BAR else "FAILS")
            )
            goals.append(
                f"    end to end {variant}: {100 * ratio:.1f}% of raw"
                f" (bar {100 * BAR:.0f}%, target {100 * TARGET:.0f}%): {verdict}"
            )
        lines.append(line)
    for variant, runs in results.items():
        known = results.get(variant.removesuffix(" unique"), [])
        if variant.endswith(" unique") and known:
            new_us = median([1e6 * r.cpu / r.points for r in runs])
            known_us = median([1e6 * r.cpu / r.points for r in known])
            ratio = new_us / known_us
            goals.append(
                f"    {variant}: a new series costs the collector {new_us:.2f} cpu-us/point,"
                f" a known one {known_us:.2f}: {ratio:.2f}x (goal: at most about 2x):"
                f" {'HOLDS' if ratio <= UNIQUE_GOAL else 'FAILS'}"
            )
    exact = all(r.stored == r.points for runs in results.values() for r in runs)
    goals.append(f"    every run stored exactly {points:,} points: {'HOLDS' if exact else 'FAILS'}")
    busy = [r for runs in results.values() for r in runs if r.others > BUSY_CORES]
    if busy:
        lines.append(
            f"WARNING: other processes used over {BUSY_CORES} cores during {len(busy)} run(s)"
            f" (up to {max(r.others for r in busy):.2f}): those figures are skewed"
        )
    return [*lines, "GOALS", *goals]


# -- the renderer alone (--render) ----------------------------------------------------------

RENDER_BATCH: Final = 5_000
LOOP_BATCH: Final = 20_000


def bench_events(first: int, count: int, unique: bool) -> list[dict[str, Any]]:
    """The benchmark's events ``first`` to ``first + count``, as the collector hands
    them to an output; ``unique``: each with a ``request`` tag of its own."""
    events: list[dict[str, Any]] = []
    for i in range(first, first + count):
        host, route = series_tags(i % SERIES)
        event: dict[str, Any] = {"name": MEASUREMENT, "value": 0.25, "host": host, "route": route}
        if unique:
            event["request"] = f"r{i}"
        event["time"] = 1_700_000_000_000 + i // SERIES
        events.append(event)
    return events


def render_bench(quick: bool) -> list[str]:
    """--render: cpu-us per event of LineRenderer.render for a known series, a new one
    (a unique tag) and one whose unique tag the cardinality guard has demoted (half
    the new series pass max_series_per_measurement); then how long one batch of
    LOOP_BATCH new series holds the event loop, rendered at once, in chunks of
    RENDER_CHUNK with a turn of the loop between them (what the output does), or in a
    thread (asyncio.to_thread), while another task wants the loop every 20 us."""
    from numbat.collector.outputs import influxdb
    from numbat.store.lineprotocol import LineRenderer

    chunk: int = getattr(influxdb, "RENDER_CHUNK", 500)  # (what we chose; older numbat: none)

    logging.getLogger("numbat.store").setLevel(logging.ERROR)  # the guard's demotion
    rounds = 10 if quick else 40
    renderer = LineRenderer(max_series_per_measurement=rounds * RENDER_BATCH // 2)
    renderer.render(bench_events(0, RENDER_BATCH, unique=False))
    known: list[float] = []
    new: list[float] = []
    demoted: list[float] = []
    for k in range(rounds):
        events = bench_events(k * RENDER_BATCH, RENDER_BATCH, unique=False)
        known.append(cpu_per_event(renderer.render, events))
        events = bench_events(k * RENDER_BATCH, RENDER_BATCH, unique=True)
        phase = demoted if renderer.cardinality_reports else new
        phase.append(cpu_per_event(renderer.render, events))
    known_us = median(known)
    lines = [
        f"LineRenderer.render, cpu-us per event, medians of batches of {RENDER_BATCH:,}:",
        f"    known series {known_us:.2f}; new series {median(new):.2f}"
        f" ({median(new) / known_us:.2f}x); after its tag was demoted {median(demoted):.2f}"
        f" ({median(demoted) / known_us:.2f}x)",
        f"one batch of {LOOP_BATCH:,} new series, medians of 5 (the event loop's longest"
        " gap while another task wants it every 20 us):",
    ]
    for mode in ("at once", f"chunks of {chunk}", "asyncio.to_thread"):
        runs = [asyncio.run(loop_gaps(LineRenderer, mode, chunk, k)) for k in range(5)]
        wall, gap, p99, hold = (median([r[i] for r in runs]) for i in range(4))
        held = f"; longest render call {1e3 * hold:5.2f} ms cpu" if hold else ""
        lines.append(
            f"    {mode:<20} render {1e3 * wall:6.1f} ms; loop gap longest {1e3 * gap:6.2f} ms,"
            f" p99 {1e3 * p99:5.2f} ms{held}"
        )
    return lines


def cpu_per_event(render: Any, events: list[dict[str, Any]]) -> float:
    start = time.process_time()
    render(events)
    return 1e6 * (time.process_time() - start) / len(events)


async def loop_gaps(renderer_class: Any, mode: str, chunk: int, k: int) -> tuple[float, ...]:
    """Render LOOP_BATCH new series as ``mode`` says while another task takes 20 us of
    every turn of the loop: (render seconds, longest gap, 99th percentile gap, the cpu
    seconds of the longest render call on the loop, 0 in a thread). The gaps are wall
    time: another process taking the core lengthens them; the cpu time is the loop's
    own hold."""
    renderer = renderer_class()
    events = bench_events(k * LOOP_BATCH, LOOP_BATCH, unique=True)
    gaps: list[float] = []
    done = False

    async def other() -> None:
        last = time.perf_counter()
        while not done:
            end = time.perf_counter() + 20e-6
            while time.perf_counter() < end:
                pass
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.get_running_loop().create_task(other())
    await asyncio.sleep(0)
    holds = [0.0]
    start = time.perf_counter()
    if mode == "asyncio.to_thread":
        await asyncio.to_thread(renderer.render, events)
    else:
        step = len(events) if mode == "at once" else chunk
        for first in range(0, len(events), step):
            if first:
                await asyncio.sleep(0)
            cpu = time.process_time()
            renderer.render(events[first : first + step])
            holds.append(time.process_time() - cpu)
    wall = time.perf_counter() - start
    done = True
    await task
    gaps.sort()
    return wall, gaps[-1], gaps[len(gaps) * 99 // 100], max(holds)


# -- profiling ------------------------------------------------------------------------------

# Where the collector's main threads spend their time: the deepest frame that matches decides.
PROFILE_PARTS: Final[list[tuple[str, str]]] = [
    ("orjson.loads", r"orjson.*\.so|^loads \(orjson"),
    ("normalize (event.py)", r"numbat/event\.py"),
    ("framing (framing.py)", r"collector/framing\.py"),
    ("listener (listeners/)", r"listeners/"),
    ("Stats", r"^Stats\."),
    ("fan-out (fanout.py)", r"collector/fanout\.py"),
    ("influxdb output: write/spool hand-off (influxdb.py)", r"outputs/influxdb\.py"),
    ("LineRenderer (lineprotocol.py)", r"store/lineprotocol\.py"),
    ("aiohttp (HTTP POST)", r"aiohttp/"),
]


# A sample is waiting, not working, when one of its frames is one of these.
WAITS: Final = (
    "epoll_wait",
    "epoll_pwait",
    "take_gil",
    "cond_timedwait",
    "pthread_cond_wait",
    "sem_wait",
    "sem_timedwait",
    "SimpleQueue_get",
    "acquire_lock",
)
THREADS: Final = (
    ("numbat-send-", "sender threads (aiohttp POSTs)"),
    ("numbat-spool-", "spool threads (spool.py)"),
)


def profile_parts(raw: Path) -> tuple[int, Counter[str], Counter[str]]:
    """py-spy's raw stacks -> samples, time by part, self time by function."""
    parts: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    compiled = [(name, re.compile(pattern)) for name, pattern in PROFILE_PARTS]
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, num = line.rpartition(" ")
        if not stack or not num.isdigit():
            continue
        n = int(num)
        frames = stack.split(";")
        while frames and frames[0].startswith("process "):  # --subprocesses
            frames.pop(0)
        thread = frames.pop(0) if frames else ""
        frames = [re.sub(r":\d+\)$", ")", f) for f in frames]
        total += n
        leaves[frames[-1] if frames else "?"] += n
        waiting = any(w in f for f in frames for w in WAITS)
        if "MainThread" not in thread:
            name = thread.partition(": ")[2]
            group = next((g for prefix, g in THREADS if name.startswith(prefix)), "other threads")
            parts[f"{group}: {'waiting' if waiting else 'working'}"] += n
            continue
        if any("gc_collect" in f for f in frames):
            parts["cyclic GC"] += n
            continue
        if waiting:
            parts["waiting (epoll: idle; the GIL)"] += n
            continue
        part = "event loop: sockets, uvloop, callbacks"
        for f in frames:
            for name, pattern in compiled:
                if pattern.search(f):
                    part = name
        parts[part] += n
    return total, parts, leaves


def profile(args: argparse.Namespace, influx: Influxd, workdir: Path) -> int:
    spy = shutil.which("py-spy")
    if spy is None:
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 1
    raw = args.raw or workdir / "stacks.txt"
    cmd = [spy, "record", "--subprocesses", "--threads", "--native", "--rate", "200"]
    cmd += ["--format", "raw", "--output", str(raw)]
    workers = args.workers[0]
    run = e2e_run(
        influx, workdir, "profile", args.points, workers, args.connections, args.set, spy=cmd
    )
    print(describe(run))
    if not raw.is_file():
        print("py-spy wrote nothing", file=sys.stderr)
        return 1
    total, parts, leaves = profile_parts(raw)
    print(f"PROFILE of the collector (workers={workers}): py-spy --native, {total:,} samples")
    print("(sampling pauses the process: rates are lower than unprofiled)")
    threads = ("other threads", *(group for _, group in THREADS))
    main_total = sum(n for name, n in parts.items() if not name.startswith(threads))
    print("the main thread(s) (event loop) by part, share of their samples:")
    for name, n in parts.most_common():
        if not name.startswith(threads):
            print(f"    {100 * n / max(main_total, 1):5.1f}%  {name}")
    print("other threads, share of all samples:")
    for name, n in parts.most_common():
        if name.startswith(threads):
            print(f"    {100 * n / total:5.1f}%  {name}")
    print("top functions by self time, share of all samples:")
    for name, n in leaves.most_common(20):
        print(f"    {100 * n / total:5.1f}%  {name}")
    return 0


# -- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller numbers (smoke test)")
    parser.add_argument("--runs", type=int, help="runs of each variant [2; quick: 1]")
    parser.add_argument("--points", type=int, help="points per run [3,000,000; quick: 500,000]")
    parser.add_argument("--connections", type=int, default=16, help="TCP connections [16]")
    parser.add_argument(
        "--workers", default="1,2", help="collector worker counts to run, comma list [1,2]"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=TOML",
        help="extra [collector] setting for ours (repeatable)",
    )
    parser.add_argument(
        "--queue-size",
        type=int,
        default=0,
        help="the collector's queue_size [0: room for every event; numbat's default: 100000]",
    )
    parser.add_argument("--ours-cmd", help="command that runs ours instead of `python -m numbat`")
    parser.add_argument(
        "--timeline", action="store_true", help="print each end-to-end run's rate over time"
    )
    parser.add_argument(
        "--unique",
        action="store_true",
        help="also run each variant with a unique tag on every event (all new series)",
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="the line-protocol renderer alone, in this process (no influxd): cost of a"
        " new series against a known one, and how long a batch holds the event loop",
    )
    parser.add_argument("--profile", action="store_true", help="profile one run with py-spy")
    parser.add_argument("--raw", type=Path, help="with --profile: keep py-spy's raw stacks here")
    args = parser.parse_args(argv)
    if args.ours_cmd:
        OURS_CMD[:] = args.ours_cmd.split()
    global QUEUE_SIZE  # noqa: PLW0603 - set once from the command line
    QUEUE_SIZE = args.queue_size
    args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    args.runs = args.runs or (1 if args.quick else 2)
    args.points = args.points or (
        500_000 if args.quick else 1_000_000 if args.profile else 3_000_000
    )
    args.set = [f"{k.strip()} = {v.strip()}" for k, _, v in (s.partition("=") for s in args.set)]
    if args.render:
        print("\n".join(render_bench(args.quick)))
        return 0
    if not Path(INFLUXD).is_file():
        print(f"{INFLUXD} is missing (apt-get install influxdb)", file=sys.stderr)
        return 1

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="numbat-influx-bench-") as tmp:
        workdir = Path(tmp)
        influx = Influxd(workdir / "influxd")
        influx.root.mkdir()
        influx.start()
        try:
            if args.profile:
                return profile(args, influx, workdir)
            print(
                f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; influxd"
                f" {influx_version()} (wal-fsync-delay 0s); {args.points:,} points per run,"
                f" {args.runs} run(s) each, {args.connections} TCP connections",
                flush=True,
            )
            results: dict[str, list[Run]] = {}
            for i in range(args.runs):
                one_round(args, influx, workdir, i, results)
        finally:
            influx.stop()
    print("\n".join(summary(results, args.points)))
    print(f"total bench time {time.perf_counter() - started:.1f}s")
    print("=" * 78)
    return 0


def one_round(
    args: argparse.Namespace, influx: Influxd, workdir: Path, i: int, results: dict[str, list[Run]]
) -> None:
    """Run ``i`` of each variant: raw, then each worker count (and its --unique twin)."""
    run = raw_run(influx, f"raw{i}", args.points)
    results.setdefault("raw", []).append(run)
    print(describe(run), flush=True)
    for workers in args.workers:
        for unique in (False, True) if args.unique else (False,):
            db = f"e2e_w{workers}_{i}{'_unique' if unique else ''}"
            run = e2e_run(
                influx,
                workdir,
                db,
                args.points,
                workers,
                args.connections,
                args.set,
                unique=unique,
            )
            results.setdefault(run.variant, []).append(run)
            print(describe(run), flush=True)
            if args.timeline:
                print(describe_timeline(run), flush=True)


def influx_version() -> str:
    out = subprocess.run([INFLUXD, "version"], capture_output=True, text=True, check=False)
    match = re.search(r"v(\S+)", out.stdout)
    return match.group(1) if match else "?"


if __name__ == "__main__":
    raise SystemExit(main())
