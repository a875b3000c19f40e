"""Emitter benchmark: our numbat.Emitter against the original Node numbat-emitter.

    python bench/emitter.py            # full run (under about a minute on 2 cores)
    python bench/emitter.py --quick    # smaller numbers, for a smoke test

(a) Microseconds per ``metric()`` call in a tight loop from a sync caller, into a live
    TCP receiver, for both emitters (median of several repeats; ratio node/ours, >1
    means ours is faster).
(b) A burst of 200,000 ``metric()`` calls with default settings: how many events
    reach the receiver, how many the emitter dropped, how long it took, the peak
    backlog and the process's peak RSS growth. Each burst runs in a fresh process
    (ours: this script with ``--burst-child``; Node: bench/node/emitter-bench.js).

Both emitters send to the same receiver: a separate process that counts newlines
(one event per line), so it competes with neither emitter for a GIL.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import numbat

ROOT: Final = Path(__file__).resolve().parent.parent
NODE_BENCH: Final = ROOT / "bench" / "node" / "emitter-bench.js"
NODE_MODULES: Final = ROOT / "tests" / "interop" / "node" / "node_modules"
QUIET_S: Final = 1.0


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


class Receiver:
    """The parent's handle on the receiver process."""

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
        self.port: int = parent.recv()
        self.uri = f"tcp://127.0.0.1:{self.port}"

    def lines(self) -> int:
        return int(self._lines.value)

    def wait(self, base: int, expected: int | None = None, timeout: float = 60.0) -> int:
        """Lines received since ``base``, once ``expected`` arrived or nothing came for 1 s."""
        deadline = time.monotonic() + timeout
        last, last_change = self.lines(), time.monotonic()
        while time.monotonic() < deadline:
            now = self.lines()
            if expected is not None and now - base >= expected:
                return now - base
            if now != last:
                last, last_change = now, time.monotonic()
            elif time.monotonic() - last_change >= QUIET_S:
                break
            time.sleep(0.01)
        return self.lines() - base

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.join(5)


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


# -- (b) a burst ----------------------------------------------------------------------------


def burst_child(uri: str, n: int) -> None:
    """One burst of ``n`` calls on a fresh emitter (in a fresh process); print JSON."""
    em = numbat.Emitter(uri, app="bench")
    if not em.wait_for_state("ready", timeout=10):
        raise SystemExit(f"our emitter did not connect: {em.stats()}")
    reset_peak_rss()
    rss_before = proc_status_kb("VmRSS")
    metric, backlog = em.metric, em.backlog
    peak = 0
    t0 = time.perf_counter()
    for i in range(n):
        metric({"name": "x", "value": i})
        if i % 1000 == 0 and backlog.nbytes > peak:
            peak = backlog.nbytes
    calls_s = time.perf_counter() - t0
    peak = max(peak, backlog.nbytes)
    closed_ok = em.close(timeout=60)
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
                "peak_backlog_bytes": peak,
                "rss_before": rss_before * 1024,
                "max_rss": proc_status_kb("VmHWM") * 1024,
            }
        ),
        flush=True,
    )


@dataclass
class BurstResult:
    delivered: int
    dropped: int
    seconds: float
    peak_backlog: int | None
    rss_delta: int
    detail: dict[str, Any]

    @property
    def loss(self) -> float:
        return 1 - self.delivered / int(self.detail["n"])


def ours_burst(rx: Receiver, n: int) -> BurstResult:
    base = rx.lines()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--burst-child", rx.uri, str(n)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"our burst child failed:\n{proc.stderr}")
    out: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    dropped = sum(int(v) for v in out["dropped"].values())
    delivered = rx.wait(base, n - dropped)
    out["n"] = n
    out["wall_s"] = time.perf_counter() - t0
    return BurstResult(
        delivered,
        dropped,
        float(out["close_s"]),
        int(out["peak_backlog_bytes"]),
        int(out["max_rss"]) - int(out["rss_before"]),
        out,
    )


def node_burst(rx: Receiver, n: int) -> BurstResult:
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
        delivered = rx.wait(base)  # until the receiver hears nothing for a second
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    out["n"] = n
    return BurstResult(
        delivered,
        int(out["discarded"]),
        float(out["drain_s"]),
        None,
        int(out["max_rss"]) - int(out["rss_before"]),
        out,
    )


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
    burst_n, bursts = (20_000, 1) if args.quick else (200_000, 3)
    no_node = node_available()
    if no_node:
        print(f"warning: skipping the Node emitter: {no_node}", file=sys.stderr)

    started = time.perf_counter()
    rx = Receiver()
    try:
        print(
            f"receiver: separate process on {rx.uri}; python {sys.version.split()[0]}, "
            f"numbat {numbat.__version__}, {os.cpu_count()} cpus"
        )
        print(f"(a) {calls_n:,} metric() calls per repeat, {call_repeats} repeats")
        ours_calls = ours_per_call(rx, calls_n, call_repeats)
        print(
            "    ours  us/call:",
            " ".join(f"{v:.3f}" for v in ours_calls.us_per_call),
            "delivered:",
            ours_calls.delivered,
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
            )

        print(f"(b) bursts of {burst_n:,} metric() calls, {bursts} runs, default settings")
        ours_bursts: list[BurstResult] = []
        node_bursts: list[BurstResult] = []
        for run in range(bursts):
            ours = ours_burst(rx, burst_n)
            ours_bursts.append(ours)
            print(
                f"    ours run {run + 1}: delivered {ours.delivered:,} dropped {ours.dropped:,} "
                f"calls {ours.detail['calls_s']:.2f}s close {ours.seconds:.2f}s "
                f"peak backlog {mib(ours.peak_backlog or 0)} "
                f"peak RSS +{mib(ours.rss_delta)}"
            )
            if not no_node:
                node = node_burst(rx, burst_n)
                node_bursts.append(node)
                print(
                    f"    node run {run + 1}: delivered {node.delivered:,} "
                    f"discarded {node.dropped:,} calls {node.detail['calls_s']:.2f}s "
                    f"drain {node.seconds:.2f}s peak RSS +{mib(node.rss_delta)}"
                )
    finally:
        rx.stop()

    ours_us = median(ours_calls.us_per_call)
    lines = [
        "",
        "=" * 72,
        "SUMMARY (medians)",
        f"(a) per metric() call, {calls_n:,} calls x {call_repeats}, tight loop, live tcp",
        f"    ours (numbat.Emitter):        {ours_us:8.3f} us/call",
    ]
    if node_calls is not None:
        node_us = median(node_calls.us_per_call)
        lines += [
            f"    node (numbat-emitter 5.2.4):  {node_us:8.3f} us/call",
            f"    ratio node/ours:              {node_us / ours_us:8.2f}  (>1: ours is faster)",
            f"    events delivered per repeat:  ours {int(median(ours_calls.delivered)):,}"
            f" / node {int(median(node_calls.delivered)):,} of {calls_n:,}",
        ]
    lines.append(f"(b) burst of {burst_n:,} calls, {bursts} run(s), default settings")

    def burst_lines(label: str, runs: list[BurstResult], time_label: str) -> list[str]:
        return [
            f"    {label}: delivered {int(median([r.delivered for r in runs])):,} / {burst_n:,}"
            f" (loss {100 * median([r.loss for r in runs]):.2f}%),"
            f" dropped by emitter {int(median([r.dropped for r in runs])):,}",
            f"          calls {median([r.detail['calls_s'] for r in runs]):.2f}s,"
            f" {time_label} {median([r.seconds for r in runs]):.2f}s,"
            f" peak RSS +{mib(median([r.rss_delta for r in runs]))}"
            + (
                f", peak backlog {mib(median([r.peak_backlog or 0 for r in runs]))}"
                if runs[0].peak_backlog is not None
                else ""
            ),
        ]

    lines += burst_lines("ours", ours_bursts, "until close() returned")
    if node_bursts:
        lines += burst_lines("node", node_bursts, "until its buffers drained")
    lines += [f"total bench time {time.perf_counter() - started:.1f}s", "=" * 72]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
