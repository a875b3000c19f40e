"""Emitter benchmark: our numbat.Emitter against the original Node numbat-emitter.

    python bench/emitter.py            # full run (under a minute on 2 cores)
    python bench/emitter.py --quick    # smaller numbers, for a smoke test

(a) Microseconds per ``metric()`` call in a tight loop from a sync caller, into a live
    TCP receiver (the newline counter below), for both emitters (median of several
    repeats; ratio node/ours, >1 means ours is faster).
(b) Loss under a burst: 200,000 ``metric()`` calls from one thread, as fast as it can,
    default settings, into the original Node numbat-collector 1.1.0 over TCP with its
    ``log`` output (started through tests/interop/nodepeers.py). Delivered = the distinct
    events in its log file (the collector logs a few events twice; those duplicate lines
    are reported apart), awaited until they reach what the emitter did not report
    dropped, or stop growing for 2 s. Also: what the emitter reported dropped, the peak
    backlog, the peak RSS growth, and how long it took.
(c) The same burst into a separate process that only counts newlines (one event per
    line): a reader much faster than the Node collector, so it competes with neither
    emitter for a GIL and hardly pushes back.

Each burst runs in a fresh emitter process (ours: this script with ``--burst-child``;
Node: bench/node/emitter-bench.js) and, in (b), against a fresh collector; the two
emitters alternate run by run. Figures are medians with [min..max] over the runs.
The Node parts need ``npm ci --prefix tests/interop/node``; without it they are skipped.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import numbat

ROOT: Final = Path(__file__).resolve().parent.parent
NODE_BENCH: Final = ROOT / "bench" / "node" / "emitter-bench.js"
NODE_MODULES: Final = ROOT / "tests" / "interop" / "node" / "node_modules"
COLLECTOR_VERSION: Final = "1.1.0"
NODE_EMITTER_VERSION: Final = "5.2.4"
# An event in the Node collector's log: bole writes the event's own (numeric) ``time``
# where its own messages have an ISO string. Every event of a burst has its own ``value``.
EVENT_VALUE: Final = re.compile(rb'^\{"time":\d[^\n]*?"value":(-?\d+)', re.MULTILINE)


# -- the receiver: a process that counts lines --------------------------------------------


def receiver_main(ready: Connection, lines: Any, nbytes: Any) -> None:
    """Accept any number of TCP connections; add every newline and byte to the counters."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    ready.send(listener.getsockname()[1])
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is listener:
                conn, _addr = listener.accept()
                conn.setblocking(False)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
                sel.register(conn, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(1 << 20)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(sock)
                sock.close()
                continue
            lines.value += data.count(b"\n")
            nbytes.value += len(data)


class CountingReceiver:
    """What the benchmarks send to: an address and a count of the events that arrived."""

    uri: str
    port: int
    quiet_s = 1.0  # no new event for this long: nothing more is coming
    label = ""

    def lines(self) -> int:
        raise NotImplementedError

    def duplicates(self) -> int:
        """Events that arrived more than once (0 when the receiver cannot tell)."""
        return 0

    def wait(self, base: int, expected: int | None = None, timeout: float = 60.0) -> int:
        """Events since ``base``, once ``expected`` arrived or none came for ``quiet_s``."""
        deadline = time.monotonic() + timeout
        last, last_change = self.lines(), time.monotonic()
        while time.monotonic() < deadline:
            now = self.lines()
            if expected is not None and now - base >= expected:
                return now - base
            if now != last:
                last, last_change = now, time.monotonic()
            elif time.monotonic() - last_change >= self.quiet_s:
                break
            time.sleep(0.02)
        return self.lines() - base

    def stop(self) -> None:
        raise NotImplementedError


class Receiver(CountingReceiver):
    """The newline counter: the parent's handle on the receiver process."""

    label = "a separate process counting newlines (a fast reader; delivered = lines read)"

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._lines = ctx.Value("q", 0, lock=False)
        self._bytes = ctx.Value("q", 0, lock=False)
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=receiver_main, args=(child, self._lines, self._bytes), daemon=True
        )
        self._proc.start()
        if not parent.poll(30):
            raise RuntimeError("the receiver process did not start")
        self.port = parent.recv()
        self.uri = f"tcp://127.0.0.1:{self.port}"

    def lines(self) -> int:
        return int(self._lines.value)

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.join(5)


class NodeCollectorReceiver(CountingReceiver):
    """The original Node numbat-collector on tcp with its ``log`` output.

    Started (and stopped) through ``tests/interop/nodepeers.py``; ``lines()`` counts the
    distinct events (by ``value``) among the complete event lines of its log file, reading
    only what was appended since last time. Distinct, because the collector itself logs
    some events twice: its json-stream parses the unterminated rest of each TCP chunk,
    and when a chunk ends between an event's ``}`` and its newline, that rest is valid
    JSON and is parsed again with the next chunk. ``duplicates()`` counts those lines.
    """

    quiet_s = 2.0
    label = (
        f"the Node numbat-collector {COLLECTOR_VERSION} over TCP, `log` output "
        "(delivered = distinct events in its log file)"
    )

    def __init__(self) -> None:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from tests.interop.nodepeers import node_collector

        self._stack = ExitStack()
        try:
            self._collector = self._stack.enter_context(node_collector("tcp"))
            self._log = self._stack.enter_context(self._collector.log_path.open("rb"))
        except BaseException:
            self._stack.close()
            raise
        self.uri = self._collector.uri
        self.port = int(self.uri.rsplit(":", 1)[1])
        self._values: set[bytes] = set()
        self._event_lines = 0
        self._partial = b""

    def lines(self) -> int:
        data = self._log.read()
        if data:
            data = self._partial + data
            cut = data.rfind(b"\n") + 1  # a line still being written waits for its newline
            self._partial = data[cut:]
            values = EVENT_VALUE.findall(data, 0, cut)
            self._event_lines += len(values)
            self._values.update(values)
        elif self._collector.process.poll() is not None:
            raise RuntimeError(
                f"the Node collector exited ({self._collector.process.returncode}):\n"
                f"{self._collector.stderr()}"
            )
        return len(self._values)

    def duplicates(self) -> int:
        return self._event_lines - len(self._values)

    def stop(self) -> None:
        self._stack.close()


# -- helpers --------------------------------------------------------------------------------


def proc_status_kb(field_name: str) -> int:
    """A ``/proc/self/status`` memory figure (``VmRSS``, ``VmHWM``) in KiB; 0 if unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux 4.0+), so the peak is the burst's own."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def mib(nbytes: float) -> str:
    return f"{nbytes / (1024 * 1024):.1f} MiB"


def node_available() -> str | None:
    """Why the Node emitter cannot run, or None when it can."""
    if shutil.which("node") is None:
        return "node is not on PATH"
    if not (NODE_MODULES / "numbat-emitter" / "index.js").is_file():
        return "run `npm ci --prefix tests/interop/node` to install numbat-emitter"
    return None


def run_node(args: list[str], timeout: float = 120.0) -> dict[str, Any]:
    proc = subprocess.run(
        ["node", str(NODE_BENCH), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"node {' '.join(args)} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[0])
    return result


# -- (a) cost per call ----------------------------------------------------------------------


@dataclass
class CallResult:
    us_per_call: list[float] = field(default_factory=list)
    delivered: list[int] = field(default_factory=list)  # per repeat (node: not discarded)
    received: int = 0  # lines the receiver got over all repeats


def ours_per_call(rx: Receiver, n: int, repeats: int) -> CallResult:
    result = CallResult()
    for _ in range(repeats):
        em = numbat.Emitter(rx.uri, app="bench")
        if not em.wait_for_state("ready", timeout=10):
            raise RuntimeError(f"our emitter did not connect: {em.stats()}")
        base = rx.lines()
        metric = em.metric
        t0 = time.perf_counter_ns()
        for i in range(n):
            metric({"name": "x", "value": i})
        elapsed_ns = time.perf_counter_ns() - t0
        em.close(timeout=60)
        result.us_per_call.append(elapsed_ns / n / 1000)
        result.delivered.append(rx.wait(base, n))
    result.received = sum(result.delivered)
    return result


def node_per_call(rx: Receiver, n: int, repeats: int) -> CallResult:
    base = rx.lines()
    out = run_node(["calls", str(rx.port), str(n), str(repeats)])
    received = rx.wait(base)
    return CallResult(
        [float(v) for v in out["us_per_call"]], [n - int(d) for d in out["discarded"]], received
    )


# -- (b), (c) a burst ----------------------------------------------------------------------


def burst_child(uri: str, n: int) -> None:
    """One burst of ``n`` calls on a fresh emitter (in a fresh process); print JSON."""
    em = numbat.Emitter(uri, app="bench")
    if not em.wait_for_state("ready", timeout=10):
        raise SystemExit(f"our emitter did not connect: {em.stats()}")
    reset_peak_rss()
    rss_before = proc_status_kb("VmRSS")
    metric, backlog = em.metric, em.backlog
    peak_bytes = peak_events = 0
    t0 = time.perf_counter()
    for i in range(n):
        metric({"name": "x", "value": i})
        if i % 1000 == 0 and backlog.nbytes > peak_bytes:
            peak_bytes, peak_events = backlog.nbytes, len(backlog)
    calls_s = time.perf_counter() - t0
    if backlog.nbytes > peak_bytes:
        peak_bytes, peak_events = backlog.nbytes, len(backlog)
    closed_ok = em.close(timeout=120)
    close_s = time.perf_counter() - t0
    stats = em.stats()
    print(
        json.dumps(
            {
                "calls_s": calls_s,
                "close_s": close_s,
                "closed_ok": closed_ok,
                "sent": stats["sent"],
                "dropped": stats["dropped"],
                "peak_backlog_bytes": peak_bytes,
                "peak_backlog_events": peak_events,
                "rss_before": rss_before * 1024,
                "max_rss": proc_status_kb("VmHWM") * 1024,
            }
        ),
        flush=True,
    )


@dataclass
class BurstResult:
    n: int
    delivered: int  # events the receiver got
    dropped: int  # events the emitter reported dropped (node: discarded)
    calls_s: float  # the n metric() calls
    seconds: float  # from the first call until the emitter had sent everything
    peak_events: int  # events waiting in the emitter (ours: backlog; node: see the .js)
    peak_bytes: int  # bytes waiting (ours: the backlog; node: stream + socket buffers)
    rss_delta: int  # peak RSS during the burst minus RSS before it
    max_rss: int  # the process's peak RSS
    detail: dict[str, Any]
    duplicates: int = 0  # events the receiver got more than once (not counted as delivered)

    @property
    def loss(self) -> float:
        return 1 - self.delivered / self.n


def ours_burst(rx: CountingReceiver, n: int) -> BurstResult:
    base = rx.lines()
    proc = subprocess.run(
        [sys.executable, __file__, "--burst-child", rx.uri, str(n)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"our burst child failed:\n{proc.stderr}")
    out: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    dropped = sum(int(v) for v in out["dropped"].values())
    delivered = rx.wait(base, n - dropped, timeout=180)
    return BurstResult(
        n,
        delivered,
        dropped,
        float(out["calls_s"]),
        float(out["close_s"]),
        int(out["peak_backlog_events"]),
        int(out["peak_backlog_bytes"]),
        int(out["max_rss"]) - int(out["rss_before"]),
        int(out["max_rss"]),
        out,
    )


def node_burst(rx: CountingReceiver, n: int) -> BurstResult:
    base = rx.lines()
    proc = subprocess.Popen(
        ["node", str(NODE_BENCH), "burst", str(rx.port), str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"node burst failed:\n{proc.stderr.read()}")
        out: dict[str, Any] = json.loads(line)
        # Until every event it did not discard arrived, or none came for quiet_s.
        delivered = rx.wait(base, n - int(out["discarded"]), timeout=180)
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return BurstResult(
        n,
        delivered,
        int(out["discarded"]),
        float(out["calls_s"]),
        float(out["drain_s"]),
        int(out["peak_backlog_events"]),
        int(out["peak_buffered_bytes"]),
        int(out["max_rss"]) - int(out["rss_before"]),
        int(out["max_rss"]),
        out,
    )


def run_bursts(
    name: str,
    make_rx: Callable[[], CountingReceiver],
    n: int,
    runs: int,
    with_node: bool,
) -> tuple[list[BurstResult], list[BurstResult]]:
    """``runs`` bursts of each emitter, alternating; a fresh receiver per burst."""
    ours_runs: list[BurstResult] = []
    node_runs: list[BurstResult] = []
    burst_fns: list[tuple[str, Callable[[CountingReceiver, int], BurstResult], list[BurstResult]]]
    burst_fns = [("ours", ours_burst, ours_runs)]
    if with_node:
        burst_fns.append(("node", node_burst, node_runs))
    for run in range(runs):
        for label, burst_fn, results in burst_fns:
            rx = make_rx()
            try:
                res = burst_fn(rx, n)
                res.duplicates = rx.duplicates()
            finally:
                rx.stop()
            results.append(res)
            print(
                f"    {name} {label} run {run + 1}: delivered {res.delivered:,} "
                f"(loss {100 * res.loss:.2f}%) "
                f"{'dropped' if label == 'ours' else 'discarded'} {res.dropped:,} "
                f"calls {res.calls_s:.2f}s all sent {res.seconds:.2f}s "
                f"peak backlog {res.peak_events:,} ev/{mib_fine(res.peak_bytes)} MiB "
                f"peak RSS +{mib(res.rss_delta)} ({mib(res.max_rss)})"
                + (f" duplicate lines {res.duplicates}" if res.duplicates else ""),
                flush=True,
            )
    return ours_runs, node_runs


# -- the summary ----------------------------------------------------------------------------


def spread(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    """``median [min..max]`` (just the value when there is only one)."""
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(median(values))} [{fmt(min(values))}..{fmt(max(values))}]"


def count(value: float) -> str:
    return f"{round(value):,}"


def pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def secs(value: float) -> str:
    return f"{value:.2f}s"


def mib_short(value: float) -> str:
    return f"{value / (1024 * 1024):.1f}"


def mib_fine(value: float) -> str:
    return f"{value / (1024 * 1024):.2f}"


def burst_summary(label: str, runs: list[BurstResult], node: bool) -> list[str]:
    drop_word = "discarded by emitter" if node else "dropped by emitter"
    backlog_note = (
        " (events as objects; MiB of JSON in stream/socket buffers)" if node else " (the backlog)"
    )
    return [
        f"    {label}: delivered {spread([r.delivered for r in runs], count)} of {runs[0].n:,}",
        f"          loss {spread([r.loss for r in runs], pct)},"
        f" {drop_word} {spread([r.dropped for r in runs], count)}",
        f"          peak backlog {spread([r.peak_events for r in runs], count)} events,"
        f" {spread([r.peak_bytes for r in runs], mib_fine)} MiB{backlog_note}",
        f"          peak RSS growth {spread([r.rss_delta for r in runs], mib_short)} MiB"
        f" (peak RSS {spread([r.max_rss for r in runs], mib_short)} MiB)",
        f"          calls {spread([r.calls_s for r in runs], secs)},"
        f" all sent after {spread([r.seconds for r in runs], secs)}",
    ] + (
        [
            f"          duplicate lines (the collector's, not counted as delivered)"
            f" {spread([r.duplicates for r in runs], count)}"
        ]
        if any(r.duplicates for r in runs)
        else []
    )


def all_delivered(runs: list[BurstResult]) -> bool:
    return bool(runs) and all(r.delivered == r.n and r.dropped == 0 for r in runs)


def summary(
    calls_n: int,
    call_repeats: int,
    ours_calls: CallResult,
    node_calls: CallResult | None,
    burst_n: int,
    bursts: int,
    collector: tuple[list[BurstResult], list[BurstResult]],
    counter: tuple[list[BurstResult], list[BurstResult]],
) -> list[str]:
    """The SUMMARY block (without its last two lines: total time and the rule)."""
    collector_ours, collector_node = collector
    counter_ours, counter_node = counter
    ours_us = median(ours_calls.us_per_call)
    lines = [
        "",
        "=" * 78,
        "SUMMARY: medians, [min..max] over the runs",
        f"(a) per metric() call: {calls_n:,} calls x {call_repeats} repeats, tight loop,"
        " live TCP, receiver: the newline counter",
        f"    ours (numbat.Emitter):        {spread(ours_calls.us_per_call, '{:.3f}'.format)}"
        " us/call",
    ]
    node_us: float | None = None
    if node_calls is not None:
        node_us = median(node_calls.us_per_call)
        lines += [
            f"    node (numbat-emitter {NODE_EMITTER_VERSION}):"
            f"  {spread(node_calls.us_per_call, '{:.3f}'.format)} us/call",
            f"    ratio node/ours (medians):    {node_us / ours_us:.2f}  (>1: ours is faster)",
            f"    events delivered per repeat:  ours {int(median(ours_calls.delivered)):,}"
            f" / node {int(median(node_calls.delivered)):,} of {calls_n:,}",
        ]
    if collector_ours:
        lines += [
            f"(b) burst of {burst_n:,} calls from one thread, default settings,"
            f" {bursts} runs each;",
            f"    receiver: {NodeCollectorReceiver.label}",
            *burst_summary("ours", collector_ours, node=False),
            *burst_summary("node", collector_node, node=True),
        ]
    lines += [
        f"(c) burst of {burst_n:,} calls from one thread, default settings, {bursts} runs each;",
        f"    receiver: {Receiver.label}",
        *burst_summary("ours", counter_ours, node=False),
    ]
    if counter_node:
        lines += burst_summary("node", counter_node, node=True)
    lines.append("GOALS")
    if node_us is not None:
        holds = ours_us <= node_us
        lines.append(
            f"    no slower per call than the Node original: {'HOLDS' if holds else 'FAILS'}"
            f" (ours {ours_us:.3f} vs node {node_us:.3f} us/call)"
        )
    receivers = [("the Node collector", collector_ours), ("the newline counter", counter_ours)]
    for name, runs in receivers:
        if runs:
            failed = sum(not all_delivered([r]) for r in runs)
            verdict = "HOLDS" if failed == 0 else f"FAILS in {failed} of"
            lines.append(
                "    ours delivers every event with default settings and reports zero drops,"
                f" into {name}: {verdict} ({len(runs)} runs)"
            )
    if collector_node:
        lossy = sum(r.delivered < r.n for r in collector_node)
        lines.append(
            f"    (the Node original into the Node collector lost events in {lossy} of"
            f" {len(collector_node)} runs: loss {spread([r.loss for r in collector_node], pct)})"
        )
    return lines


# -- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller numbers (smoke test)")
    parser.add_argument("--burst-child", nargs=2, metavar=("URI", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.burst_child:
        burst_child(args.burst_child[0], int(args.burst_child[1]))
        return 0

    calls_n, call_repeats = (20_000, 3) if args.quick else (200_000, 5)
    burst_n, bursts = (20_000, 2) if args.quick else (200_000, 5)
    no_node = node_available()
    if no_node:
        print(f"warning: skipping the Node emitter and collector: {no_node}", file=sys.stderr)

    started = time.perf_counter()
    print(f"python {sys.version.split()[0]}, numbat {numbat.__version__}, {os.cpu_count()} cpus")
    rx = Receiver()
    try:
        print(f"(a) {calls_n:,} metric() calls per repeat, {call_repeats} repeats, into {rx.label}")
        ours_calls = ours_per_call(rx, calls_n, call_repeats)
        print(
            "    ours  us/call:",
            " ".join(f"{v:.3f}" for v in ours_calls.us_per_call),
            "delivered:",
            ours_calls.delivered,
            flush=True,
        )
        node_calls: CallResult | None = None
        if not no_node:
            node_calls = node_per_call(rx, calls_n, call_repeats)
            print(
                "    node  us/call:",
                " ".join(f"{v:.3f}" for v in node_calls.us_per_call),
                "not discarded:",
                node_calls.delivered,
                "received in all:",
                node_calls.received,
                flush=True,
            )
    finally:
        rx.stop()

    collector_ours: list[BurstResult] = []
    collector_node: list[BurstResult] = []
    if not no_node:
        print(
            f"(b) bursts of {burst_n:,} metric() calls, {bursts} runs each, default settings,"
            f" into {NodeCollectorReceiver.label}",
            flush=True,
        )
        collector_ours, collector_node = run_bursts(
            "collector", NodeCollectorReceiver, burst_n, bursts, with_node=True
        )
    print(
        f"(c) bursts of {burst_n:,} metric() calls, {bursts} runs each, default settings,"
        f" into {Receiver.label}",
        flush=True,
    )
    counter_ours, counter_node = run_bursts(
        "newline-counter", Receiver, burst_n, bursts, with_node=not no_node
    )

    print(
        "\n".join(
            summary(
                calls_n,
                call_repeats,
                ours_calls,
                node_calls,
                burst_n,
                bursts,
                (collector_ours, collector_node),
                (counter_ours, counter_node),
            )
        )
    )
    print(f"total bench time {time.perf_counter() - started:.1f}s")
    print("=" * 78)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
