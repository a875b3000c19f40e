"""Analyzer benchmark: events/s through the whole analyzer (bytes over TCP into a real
in-process :class:`~numbat.analyzer.daemon.Analyzer` with the default rule set:
framing, parsing, rules, incident manager), beside two parse-and-dispatch loops over
the same bytes in the same run: the analyzer with no rule at all (numbat's own parse,
with the event model's checks every analyzer must make, and dispatch by name: the
upper bound of judging, which the goal compares against) and a bare ``orjson`` loop
(no checks: the Python floor); then memory per tracked heartbeat key
and the time of an expiry tick, with 100,000 hosts, through the real heartbeat rule and
incident manager.

    python bench/analyzer.py                      # 500,000 events, 3 rounds, ~40 s
    python bench/analyzer.py --quick              # a smoke test
    python bench/analyzer.py --profile out.svg    # py-spy flame graph of one analyzer run

Throughput. The stream is pre-rendered NDJSON from ``--hosts`` hosts (default 2,000),
per host in turn: a ``web.heartbeat`` (ttl 16 s), ``load-average.1/5/15`` (with
``meta.nprocs``), ``memory``, ``disk./`` and ``disk./var`` (healthy values), two
``web.response`` (statusCode, no status), a ``web.latency``, and an ``app.jobs`` with
``status`` (``ok``; ``warning`` for one host in a hundred, which keeps its incident
open and refreshed). A separate sender process writes it over ``--connections`` TCP
connections (blocking ``sendall`` of 256 KiB chunks, so it pushes back like a real
peer). "analyzer": a fresh Analyzer per round (default rules, the ``log`` notifier,
no write-back, state in a temporary directory); done when its listener has counted
every event as received (the sink is synchronous: judged by then). "bare": an
``asyncio.Protocol`` that splits lines, ``orjson.loads`` each one and calls a handler
looked up by name in a dict, nothing else. Both on numbat's own event loop (uvloop
when installed); rounds alternate the two; the figure is the median, with the
analyzer's process CPU per event.

Memory: one Analyzer (not started: no sockets) fed one beat from each of ``--keys``
hosts through ``receive()``, in batches of 1,000 made and dropped inside the trace, so
the host strings a key keeps are counted; tracemalloc growth (after the rules' save(),
as the daemon's tick does) over the keys, and RSS growth beside it. Ticks, on the same
analyzer: ``Analyzer.tick()`` (rules' timers, incident manager, grouping) with nothing
due, with ``--few`` keys due (those had a short ttl), with all the others due, and
then with every key's incident open and nothing due.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from numbat._loop import new_loop
from numbat.analyzer.daemon import Analyzer
from numbat.config import Config, from_dict
from numbat.event import Event

CHUNK = 256 * 1024
SENDER = r"""
import socket, sys, threading
CHUNK = 256 * 1024
port, connections, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
data = open(path, "rb").read()
lines = data.splitlines(keepends=True)
shares = [b"".join(lines[i::connections]) for i in range(connections)]
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
def send(sock, share):
    for at in range(0, len(share), CHUNK):
        sock.sendall(share[at : at + CHUNK])
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)
    sock.close()
threads = [threading.Thread(target=send, args=pair) for pair in zip(socks, shares)]
for t in threads: t.start()
for t in threads: t.join()
"""


def stream(events: int, hosts: int) -> bytes:
    """``events`` NDJSON lines, host after host, as described in the module docstring."""
    rnd = random.Random(1)
    t0 = int(time.time() * 1000)
    out: list[bytes] = []
    i = 0
    while len(out) < events:
        host = f"host-{i % hosts:05d}.example.com"
        base: dict[str, Any] = {"host": host, "time": t0 + len(out)}
        jobs = "warning" if i % hosts % 100 == 7 else "ok"
        load = rnd.uniform(0, 2)
        for event in (
            {"name": "web.heartbeat", "ttl": 16_000, **base},
            {"name": "load-average.1", "value": load, "meta.nprocs": 4, **base},
            {"name": "load-average.5", "value": load * 0.9, "meta.nprocs": 4, **base},
            {"name": "load-average.15", "value": load * 0.8, "meta.nprocs": 4, **base},
            {"name": "memory", "value": rnd.uniform(0.2, 0.7), **base},
            {"name": "disk./", "value": rnd.uniform(0.2, 0.7), **base},
            {"name": "disk./var", "value": rnd.uniform(0.2, 0.7), **base},
            {"name": "web.response", "statusCode": 200, "value": rnd.uniform(1, 90), **base},
            {"name": "web.response", "statusCode": 200, "value": rnd.uniform(1, 90), **base},
            {"name": "web.latency", "value": rnd.gauss(100, 10), **base},
            {"name": "app.jobs", "value": rnd.randrange(50), "status": jobs, **base},
        ):
            out.append(orjson.dumps(event) + b"\n")
        i += 1
    return b"".join(out[:events])


def config(data_dir: str, *, rules: bool = True) -> Config:
    """The benchmark's analyzer: the default rule set, or (``rules=False``) none at all:
    numbat's own parse (framing, the event model's checks) and dispatch by name, alone."""
    return from_dict(
        {
            "analyzer": {
                "listen": ["tcp://127.0.0.1:0"],
                "http": "http://127.0.0.1:0",
                "data_dir": data_dir,
                "writeback": {"uri": ""},
                "defaults": rules,
            }
        }
    )


class Sender:
    """The sender process: connected and waiting; :meth:`go` starts the writes."""

    def __init__(self, port: int, connections: int, path: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SENDER, str(port), str(connections), path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    async def ready(self) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.to_thread(self.proc.stdout.readline)
        assert line == b"ready\n", line

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    async def close(self) -> None:
        await asyncio.to_thread(self.proc.wait, 30)


async def _until(done: Callable[[], bool], timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("the run did not finish")
        await asyncio.sleep(0.005)


async def run_analyzer(
    path: str, total: int, connections: int, *, rules: bool = True
) -> tuple[float, float]:
    """(events/s, cpu-µs per event) of one fresh Analyzer over the stream (with no rule
    at all when ``rules`` is false: numbat's parse and dispatch alone)."""
    with tempfile.TemporaryDirectory() as data_dir:
        analyzer = Analyzer(config(data_dir, rules=rules), hostname="bench")
        await analyzer.start()
        try:
            (uri, listener) = next(iter(analyzer.listeners.items()))
            port = listener.server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            sender = Sender(port, connections, path)
            await sender.ready()
            await _until(lambda: len(listener.connections) == connections)  # type: ignore[attr-defined]
            cpu, started = time.process_time(), time.perf_counter()
            sender.go()
            await _until(lambda: analyzer.stats.get("received", listener=uri) >= total)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            assert analyzer.stats.get("received", listener=uri) == total
            await sender.close()
        finally:
            await analyzer.stop(drain_timeout=1.0)
    return total / elapsed, cpu / total * 1e6


class _Bare(asyncio.Protocol):
    def __init__(self, dispatch: dict[str, Callable[[Any], None]], count: list[int]) -> None:
        self.dispatch = dispatch
        self.count = count
        self.tail = b""

    def data_received(self, data: bytes) -> None:
        lines = (self.tail + data).split(b"\n")
        self.tail = lines.pop()
        dispatch, loads, nothing = self.dispatch, orjson.loads, _nothing
        for line in lines:
            event = loads(line)
            dispatch.get(event["name"], nothing)(event)
        self.count[0] += len(lines)


def _nothing(event: Any) -> None:
    pass


async def run_bare(
    path: str, total: int, connections: int, names: list[str]
) -> tuple[float, float]:
    """(events/s, cpu-µs per event) of the bare loop over the stream."""
    count = [0]
    dispatch: dict[str, Callable[[Any], None]] = {name: _nothing for name in names}
    conns: list[int] = []

    def protocol() -> _Bare:
        conns.append(1)
        return _Bare(dispatch, count)

    server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", 0)
    try:
        sender = Sender(server.sockets[0].getsockname()[1], connections, path)
        await sender.ready()
        await _until(lambda: len(conns) == connections)
        cpu, started = time.process_time(), time.perf_counter()
        sender.go()
        await _until(lambda: count[0] >= total)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        await sender.close()
    finally:
        server.close()
    return total / elapsed, cpu / total * 1e6


def throughput(args: argparse.Namespace) -> None:
    data = stream(args.events, args.hosts)
    names = sorted({orjson.loads(line)["name"] for line in data.splitlines()[:200]})
    with tempfile.NamedTemporaryFile(suffix=".ndjson") as file:
        file.write(data)
        file.flush()
        print(
            f"{args.events:,} events ({len(data) / args.events:.0f} bytes each) from "
            f"{args.hosts:,} hosts over {args.connections} connections, {args.rounds} rounds"
        )
        loop = new_loop()
        results: dict[str, list[tuple[float, float]]] = {"bare": [], "analyzer": [], "parse": []}
        try:
            for round_ in range(args.rounds):
                bare = loop.run_until_complete(
                    run_bare(file.name, args.events, args.connections, names)
                )
                parse = loop.run_until_complete(
                    run_analyzer(file.name, args.events, args.connections, rules=False)
                )
                full = loop.run_until_complete(
                    run_analyzer(file.name, args.events, args.connections)
                )
                results["bare"].append(bare)
                results["parse"].append(parse)
                results["analyzer"].append(full)
                print(
                    f"round {round_ + 1}: bare {_rate(bare)}, numbat parse+dispatch "
                    f"{_rate(parse)}, analyzer {_rate(full)}, ratio {full[0] / bare[0]:.2f} "
                    f"(to numbat parse+dispatch {full[0] / parse[0]:.2f})"
                )
        finally:
            loop.close()
    bare_rate = statistics.median(r for r, _ in results["bare"])
    full_rate = statistics.median(r for r, _ in results["analyzer"])
    ratios = [f[0] / b[0] for f, b in zip(results["analyzer"], results["bare"], strict=True)]
    rates = [r for r, _ in results["analyzer"]]
    print(
        f"median: bare {bare_rate:,.0f} events/s, analyzer {full_rate:,.0f} events/s "
        f"[{min(rates):,.0f}..{max(rates):,.0f}], "
        f"ratio {statistics.median(ratios):.2f} [{min(ratios):.2f}..{max(ratios):.2f}]"
    )
    cpu_bare = statistics.median(c for _, c in results["bare"])
    cpu_full = statistics.median(c for _, c in results["analyzer"])
    print(
        f"cpu per event: bare {cpu_bare:.2f} µs, analyzer {cpu_full:.2f} µs, "
        f"ratio bare/analyzer {cpu_bare / cpu_full:.2f} (the same ratio, without the noise "
        "of a shared machine's wall clock)"
    )
    loop = new_loop()
    try:
        full_cpu, bare_cpu = loop.run_until_complete(hot_path(data, max(args.rounds, 5)))
    finally:
        loop.close()
    print(
        f"no sockets, cpu, best of {max(args.rounds, 5)}: listener.receive() {full_cpu:,.0f} "
        f"events/s ({1e6 / full_cpu:.2f} µs/event), bare {bare_cpu:,.0f} events/s "
        f"({1e6 / bare_cpu:.2f} µs/event), ratio {full_cpu / bare_cpu:.2f}"
    )
    to_parse = [f[0] / q[0] for f, q in zip(results["analyzer"], results["parse"], strict=True)]
    cpu_parse = statistics.median(c for _, c in results["parse"])
    parse_rate = statistics.median(r for r, _ in results["parse"])
    print(
        f"numbat parse+dispatch (no rules): {parse_rate:,.0f} "
        f"events/s, {cpu_parse:.2f} cpu-µs/event; the default rules keep "
        f"{statistics.median(to_parse):.2f} of its rate "
        f"[{min(to_parse):.2f}..{max(to_parse):.2f}] (cpu: {cpu_parse / cpu_full:.2f})"
    )
    print(
        f"GOAL default rules / parse-and-dispatch >= 0.50: "
        f"{'holds' if statistics.median(to_parse) >= 0.5 else 'MISSED'} (to the bare orjson "
        f"loop: {statistics.median(ratios):.2f}); >= 100,000 events/s: "
        f"{'holds' if full_rate >= 100_000 else 'MISSED'}"
    )


async def hot_path(data: bytes, rounds: int) -> tuple[float, float]:
    """(analyzer, bare) events/s, best of ``rounds``, over the stream's lines in chunks
    of 2,000, with no sockets: the listener's ``receive()`` (parse, validate, judge)
    of a started Analyzer, and the bare loop's body."""
    lines = data.split(b"\n")[:-1]
    chunks = [lines[at : at + 2000] for at in range(0, len(lines), 2000)]
    dispatch: dict[str, Callable[[Any], None]] = {}
    for line in lines[:200]:
        dispatch[orjson.loads(line)["name"]] = _nothing
    best = [0.0, 0.0]
    with tempfile.TemporaryDirectory() as data_dir:
        analyzer = Analyzer(config(data_dir), hostname="bench")
        await analyzer.start()
        try:
            listener = next(iter(analyzer.listeners.values()))
            for _ in range(rounds):
                started = time.process_time()
                for chunk in chunks:
                    listener.receive(chunk, "bench")
                best[0] = max(best[0], len(lines) / (time.process_time() - started))
                started = time.process_time()
                loads, nothing = orjson.loads, _nothing
                for chunk in chunks:
                    for line in chunk:
                        event = loads(line)
                        dispatch.get(event["name"], nothing)(event)
                best[1] = max(best[1], len(lines) / (time.process_time() - started))
                await asyncio.sleep(0)  # let its background tasks run between rounds
        finally:
            await analyzer.stop(drain_timeout=1.0)
    return best[0], best[1]


def _rate(result: tuple[float, float]) -> str:
    return f"{result[0]:,.0f} events/s ({result[1]:.2f} cpu-µs/event)"


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def heartbeats(args: argparse.Namespace) -> None:
    keys, few = args.keys, args.few
    now = [1_700_000_000_000]
    with tempfile.TemporaryDirectory() as data_dir:
        analyzer = Analyzer(config(data_dir), hostname="bench", clock=lambda: now[0])
    gc.collect()
    rss = _rss()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for at in range(0, keys, 1000):
        batch: list[Event] = [
            {
                "name": "web.heartbeat",
                "host": f"host-{i:06d}.example.com",
                "ttl": 1_000 if i < few else 60_000,
                "time": now[0],
            }
            for i in range(at, min(at + 1000, keys))
        ]
        analyzer.receive(batch)
        del batch
    for bound in analyzer.engine.rules:
        save = getattr(bound.rule, "save", None)
        if callable(save):
            save()
    gc.collect()
    per_key = (tracemalloc.get_traced_memory()[0] - before) / keys
    tracemalloc.stop()
    rss_per_key = (_rss() - rss) / keys
    print(
        f"heartbeat keys: {keys:,}: {per_key:,.0f} bytes per key (tracemalloc), "
        f"{rss_per_key:,.0f} bytes per key (RSS growth, tracing included)  "
        f"GOAL about 1 KB or less: {'holds' if per_key <= 1100 else 'MISSED'}"
    )

    def tick(at: int) -> tuple[float, int]:
        now[0] = at
        opened = len(analyzer.manager.incidents(open=True))
        started = time.perf_counter()
        analyzer.tick(at)
        elapsed = (time.perf_counter() - started) * 1000
        if analyzer.manager.dirty:
            analyzer.manager.take()  # what the commit loop does next
        return elapsed, len(analyzer.manager.incidents(open=True)) - opened

    t0 = now[0]
    idle, _ = tick(t0 + 500)
    some, opened_few = tick(t0 + 1_500)
    rest, opened_rest = tick(t0 + 60_500)
    after, _ = tick(t0 + 61_000)
    print(f"tick, {keys:,} keys, none due: {idle:.3f} ms")
    per_few, per_all = some / max(opened_few, 1), rest / max(opened_rest, 1)
    print(f"tick, {few:,} due ({opened_few:,} opened): {some:.1f} ms ({per_few * 1000:.1f} µs/key)")
    print(
        f"tick, the other keys due ({opened_rest:,} opened): {rest:.1f} ms "
        f"({rest * 1000 / max(opened_rest, 1):.1f} µs per key)"
    )
    print(f"tick, {keys:,} incidents open, none due: {after:.3f} ms")
    proportional = idle < some and per_few < 3 * per_all
    print(
        f"GOAL expiry work proportional to what expires: per-key cost few/all "
        f"{per_few / per_all:.2f} ({'holds' if proportional else 'MISSED'})"
    )


def profile(args: argparse.Namespace, output: str) -> None:
    """One analyzer run under py-spy (this process is re-run as a child)."""
    spy = Path(sys.executable).parent / "py-spy"
    command = [str(spy), "record", "-o", output, "--rate", "500", "--", sys.executable]
    command += [__file__, "--events", str(args.events), "--rounds", "1", "--only", "throughput"]
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--hosts", type=int, default=2_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--few", type=int, default=1_000)
    parser.add_argument("--only", choices=["throughput", "heartbeats"])
    parser.add_argument("--quick", action="store_true", help="50,000 events, 10,000 keys")
    parser.add_argument("--profile", metavar="SVG", help="py-spy record one analyzer run")
    args = parser.parse_args()
    if args.quick:
        args.events, args.keys, args.few, args.rounds = 50_000, 10_000, 100, 1
    logging.basicConfig(level=logging.ERROR)
    if args.profile:
        profile(args, args.profile)
        return
    print(f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, orjson {orjson.__version__}")
    if args.only != "heartbeats":
        throughput(args)
    if args.only != "throughput":
        heartbeats(args)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
