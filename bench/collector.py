"""Collector benchmark: our collector against the original Node numbat-collector 1.1.0.

    python bench/collector.py            # full run (about two minutes on 2 cores)
    python bench/collector.py --quick    # smaller numbers, for a smoke test
    python bench/collector.py --only ours --skip udp,stall --ours-set workers=2
    python bench/collector.py --profile tcp-logfile   # where ours spends its time (py-spy)

Both collectors run as subprocesses (ours: ``python -m numbat collector -c cfg.toml``;
Node: ``numbat-collector/bin/run-server.js cfg.js`` from tests/interop/node/node_modules),
one at a time, fed by the same load generator in the same run. The generator is a
separate process (multiprocessing, spawn) that pre-renders a buffer of NDJSON events
like numbat-emitter's and only pushes it into sockets, so it costs little CPU and
never shares a GIL with a collector.

(a) TCP: ``--events`` events over ``--connections`` connections (default 4), each
    connection sending big chunks of the pre-rendered buffer with ``sendall`` and then
    shutting down its write side. Events per second = events delivered / (time from the
    first byte sent until the last event was delivered):
    - logfile output: delivered = the event lines in the output file (polled every 20
      ms; the end is the last time the file grew, once every connection has seen EOF and
      the file has not grown for a quiet second);
    - null output: delivered = every event sent, at the moment the last connection sees
      EOF from the collector. Both collectors read, frame and parse a connection's bytes
      before they get to its EOF and close it (ours: ``data_received`` parses and hands
      the events on synchronously, before ``eof_received``; Node: the socket's ``end``
      comes after its piped json-stream consumed every chunk, and the server's sockets
      are not half-open, so ``end`` closes them). The time to EOF is therefore the time
      to read and parse everything (Node may still hold ~16 KiB of unparsed chunk in its
      stream buffer: a few hundred events out of millions).
      Node's null output is ``{type: 'log', name: 'null'}`` without a ``path``: with
      ``logging.silent`` bole has no output, so each event goes through the sink into the
      log output's ``_write`` and is discarded there. (``outputs: []`` does not work as a
      null output: the sink is an object-mode PassThrough that nobody reads, so after
      about 50,000 events back-pressure stops the socket for good.)
(b) UDP: one event per datagram (as numbat-emitter sends over UDP; the Node collector
    ``JSON.parse``s each datagram whole), from 4 source sockets (so SO_REUSEPORT workers
    would share them), at a fixed offered rate (``--udp-rate``, paced every ms) and flat
    out; into the logfile output; one run each. Loss = 1 - event lines in the file /
    datagrams sent.
    The kernel's drop counter of the listening socket (/proc/net/udp) is shown beside it.
(c) RSS: /proc/PID/status VmRSS of the collector (and any child processes) sampled every
    100 ms during every run; peak = the highest sample, HWM = the kernel's VmHWM (summed
    over the processes). "Flat" = the peak of the run's second half is within 10% + 16 MiB
    of the first half's. CPU = user+system seconds of the collector's processes over the
    run / wall time (cores); the generator's own CPU is shown too, and so is the CPU that
    other processes on the machine used meanwhile (from /proc/stat): a run where they used
    more than 0.15 cores is flagged in the summary, its figures are skewed.
(d) A stalled output: ours with a logfile output and an ``analyzer`` output pointing at a
    TCP server that accepts and never reads, fed ``--stall-events`` events over TCP; RSS
    must level off (bounded queues). Where the analyzer output is not there, a plugin
    output whose write never returns (bench/stall_output.py) stands in for it.
(e) ``--profile tcp-logfile|tcp-null|udp``: instead of the above, run ours under that load
    with ``py-spy record --native`` (``pip install py-spy``) and print the share of samples
    by part of the pipeline (orjson.loads, normalize, framing, fan-out, ...) and the top
    functions by self time. ``--raw FILE`` keeps py-spy's collapsed stacks.

``--ours-set KEY=TOML`` adds a line to ours' ``[collector]`` table (``workers=2``);
``--ours-cmd`` starts ours with another command (a wrapper that patches in a change to try).

Figures are medians with [min..max] over ``--runs`` runs; ours and Node alternate.
The Node parts need ``npm ci --prefix tests/interop/node``; without it they are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import multiprocessing
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, Literal

ROOT: Final = Path(__file__).resolve().parent.parent
NODE_MODULES: Final = ROOT / "tests" / "interop" / "node" / "node_modules"
NODE_COLLECTOR: Final = NODE_MODULES / "numbat-collector" / "bin" / "run-server.js"
COLLECTOR_VERSION: Final = "1.1.0"
EVENT_NAME: Final = b"bench.requests"
PROBE_NAME: Final = b"bench.probe"
CHUNK_EVENTS: Final = 2048  # events per sendall (about 230 KB)
RSS_EVERY: Final = 0.1
POLL_EVERY: Final = 0.02
BUSY_CORES: Final = 0.15  # other processes' CPU during a run above which it is flagged

Output = Literal["logfile", "null", "stall"]
Who = Literal["ours", "node"]
# Extra ``[collector]`` settings for ours (``--ours-set workers=2``), as TOML lines.
OURS_SETTINGS: list[str] = []
# How ours is started (``--ours-cmd``, e.g. a wrapper that patches a change in to try it).
OURS_CMD: list[str] = [sys.executable, "-m", "numbat"]


def cpu_self() -> float:
    """User + system CPU seconds of this process (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the load generator -------------------------------------------------------------------


def render(count: int, first: int = 0, now_ms: int | None = None) -> bytes:
    """``count`` NDJSON events like numbat-emitter's, each with its own value.

    >>> render(2, now_ms=1000).splitlines()[1]
    b'{"name":"bench.requests","value":1.5,"host":"bench-host","time":1001,"route":"/api/y","status":"ok"}'
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    routes = ("/api/x", "/api/y", "/api/users", "/api/orders/list", "/health")
    lines = []
    for i in range(first, first + count):
        value = f"{i % 1000}" if i % 2 == 0 else f"{i % 977}.5"
        lines.append(
            b'{"name":"bench.requests","value":%s,"host":"bench-host","time":%d,'
            b'"route":"%s","status":"ok"}\n'
            % (value.encode(), now + i % 1000, routes[i % 5].encode())
        )
    return b"".join(lines)


def _line_ends(buf: bytes) -> list[int]:
    ends, at = [], buf.find(b"\n")
    while at >= 0:
        ends.append(at + 1)
        at = buf.find(b"\n", at + 1)
    return ends


def open_connections(port: int, conns: int, timeout: float) -> list[socket.socket]:
    """``conns`` TCP connections to the collector, with large send buffers."""
    socks = []
    for _ in range(conns):
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        socks.append(sock)
    return socks


def blast_connections(
    socks: list[socket.socket], send: Callable[[socket.socket, int], None], pipe: Connection
) -> None:
    """Await "go", then ``send(sock, i)`` on every connection at once, each in a thread;
    shut the write side, wait for EOF. Reports ``{"start", "sent": [t], "eof": [t],
    "errors": [str], "cpu"}`` (monotonic seconds, comparable across processes)."""
    sent = [0.0] * len(socks)
    eof = [0.0] * len(socks)
    errors: list[str] = []

    def blast(i: int) -> None:
        sock = socks[i]
        try:
            send(sock, i)
            sock.shutdown(socket.SHUT_WR)
            sent[i] = time.monotonic()
            while sock.recv(65536):
                pass
            eof[i] = time.monotonic()
        except OSError as exc:
            errors.append(f"connection {i}: {exc!r}")
        finally:
            sock.close()

    pipe.send("ready")
    pipe.recv()
    cpu0, start = cpu_self(), time.monotonic()
    threads = [threading.Thread(target=blast, args=(i,)) for i in range(len(socks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu = cpu_self() - cpu0
    pipe.send({"start": start, "sent": sent, "eof": eof, "errors": errors, "cpu": cpu})


def tcp_generator(port: int, conns: int, total: int, pipe: Connection) -> None:
    """Child process: open ``conns`` connections, await "go", send ``total`` events.

    Reports as :func:`blast_connections` does, once every connection has seen EOF or
    failed.
    """
    buf = render(CHUNK_EVENTS)
    ends = _line_ends(buf)
    share = [total // conns + (1 if i < total % conns else 0) for i in range(conns)]

    def send(sock: socket.socket, i: int) -> None:
        for _ in range(share[i] // CHUNK_EVENTS):
            sock.sendall(buf)
        rest = share[i] % CHUNK_EVENTS
        if rest:
            sock.sendall(buf[: ends[rest - 1]])

    blast_connections(open_connections(port, conns, 180), send, pipe)


def udp_generator(port: int, total: int, rate: float, pipe: Connection) -> None:
    """Child process: send ``total`` one-event datagrams at ``rate``/s (0: flat out)."""
    events = render(CHUNK_EVENTS).splitlines()
    socks = []
    for _ in range(4):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(("127.0.0.1", port))
        socks.append(sock)
    sends = [s.send for s in socks]
    pipe.send("ready")
    pipe.recv()
    cpu0, start = cpu_self(), time.monotonic()
    sent = errors = 0
    tick = 0.001
    per_tick = max(1, round(rate * tick)) if rate else 256
    nxt = start
    while sent < total:
        n = min(per_tick, total - sent)
        base = sent
        for j in range(n):
            k = base + j
            try:
                sends[k & 3](events[k % CHUNK_EVENTS])
            except OSError:  # ENOBUFS and friends: never reached the collector
                errors += 1
        sent += n
        if rate:
            nxt += tick
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    end = time.monotonic()
    for sock in socks:
        sock.close()
    cpu = cpu_self() - cpu0
    pipe.send({"start": start, "end": end, "sent": total - errors, "errors": errors, "cpu": cpu})


class Generator:
    """The parent's handle on one generator process."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._pipe, child = ctx.Pipe()
        self._proc = ctx.Process(target=target, args=(*args, child), daemon=True)
        self._proc.start()
        if not self._pipe.poll(30) or self._pipe.recv() != "ready":
            raise RuntimeError("the load generator did not start")

    def go(self) -> None:
        self._pipe.send("go")

    def result(self, timeout: float) -> dict[str, Any] | None:
        if not self._pipe.poll(timeout):
            return None
        out: dict[str, Any] = self._pipe.recv()
        return out

    def stop(self) -> None:
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join(5)


# -- the collectors -------------------------------------------------------------------------


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def proc_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (workers a collector may fork)."""
    pids, i = [pid], 0
    while i < len(pids):
        try:
            kids = Path(f"/proc/{pids[i]}/task/{pids[i]}/children").read_text().split()
        except OSError:
            kids = []
        pids += [int(k) for k in kids]
        i += 1
    return pids


def status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def cpu_seconds(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """CPU used by processes other than the collector, the generator and this script.

    Other work on the machine skews a run; this tells when it did.
    """

    def __init__(self) -> None:
        self._wall, self._busy, self._self = time.monotonic(), machine_busy(), cpu_self()

    def cores(self, collector_cpu: float, generator_cpu: float) -> float:
        wall = time.monotonic() - self._wall
        busy = machine_busy() - self._busy
        mine = cpu_self() - self._self
        return max(0.0, busy - collector_cpu - generator_cpu - mine) / wall if wall else 0.0


def machine_busy() -> float:
    """CPU seconds the whole machine has spent not idle (from /proc/stat)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def udp_drops(port: int) -> int:
    """The kernel's drop count of the UDP socket bound to 127.0.0.1:``port``."""
    want = f"0100007F:{port:04X}"
    try:
        rows = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return 0
    return sum(int(row.split()[-1]) for row in rows if row.split()[1] == want)


class RSSSampler:
    """Samples the summed VmRSS of a process tree every ``RSS_EVERY`` seconds in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = sum(status_kb(p, "VmRSS") for p in proc_tree(self.pid))
            self.samples.append((time.monotonic(), rss))
            self._stop.wait(RSS_EVERY)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> int:
        return max((r for _, r in self.samples), default=0)


@dataclass
class Collector:
    """A running collector (ours or Node's) with one listener and one kind of output."""

    who: Who
    kind: Literal["tcp", "udp"]
    output: Output
    workdir: Path
    port: int = 0
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    stall_server: socket.socket | None = None
    stall_conns: list[socket.socket] = field(default_factory=list)

    def start(self) -> None:
        self.port = free_port(socket.SOCK_DGRAM if self.kind == "udp" else socket.SOCK_STREAM)
        if self.output in ("logfile", "stall"):
            self.log_path = self.workdir / f"{self.who}-{self.kind}-{self.output}.log"
            self.log_path.unlink(missing_ok=True)
        stderr = (self.workdir / f"{self.who}-stderr.txt").open("ab")
        if self.who == "ours":
            cmd = [*OURS_CMD, "collector", "-c", str(self._ours_config())]
            cmd += ["--log-level", "warning"]
        else:
            cmd = ["node", str(NODE_COLLECTOR), str(self._node_config())]
        with stderr:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env={
                    **os.environ,
                    "NODE_ENV": "production",
                    # For the stalled plugin output, bench/stall_output.py.
                    "PYTHONPATH": os.pathsep.join(
                        filter(None, [str(ROOT / "bench"), os.environ.get("PYTHONPATH")])
                    ),
                },
            )
        self._wait_ready()

    def _ours_config(self) -> Path:
        lines = [
            "[collector]",
            *OURS_SETTINGS,
            f'listen = ["{self.kind}://127.0.0.1:{self.port}"]',
            "drain_timeout = 2.0",
            # Its own metrics would land in the file during the quiet second and move
            # the end; it still counts everything, it only reports less often.
            "stats_interval = 3600.0",
        ]
        if self.output == "null":
            lines += ["[[collector.outputs]]", 'type = "null"']
        else:
            lines += ["[[collector.outputs]]", 'type = "logfile"', f'path = "{self.log_path}"']
        if self.output == "stall":
            kind, _ = stall_output()
            lines += ["[[collector.outputs]]", *kind]
            if "analyzer" in kind[0]:
                lines.append(f'uri = "{self._stall()}"')
        path = self.workdir / "ours.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _node_config(self) -> Path:
        listen: dict[str, Any] = {"host": "127.0.0.1", "port": self.port}
        if self.kind == "udp":
            listen["udp"] = True
        out: dict[str, Any] = {"type": "log", "name": "bench"}
        if self.output == "logfile":
            out["path"] = str(self.log_path)
        config = {"logging": {"name": "bench", "silent": True}, "listen": listen, "outputs": [out]}
        path = self.workdir / "node.js"
        path.write_text(f"module.exports = {json.dumps(config)};\n")
        return path

    def _stall(self) -> str:
        """A TCP server that accepts connections and never reads from them."""
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        self.stall_server = server

        def accept() -> None:
            with contextlib.suppress(OSError):
                while True:
                    self.stall_conns.append(server.accept()[0])

        threading.Thread(target=accept, daemon=True).start()
        return f"tcp://127.0.0.1:{server.getsockname()[1]}"

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        probe = render(1).replace(EVENT_NAME, PROBE_NAME)
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.who} collector exited: {self.stderr()[-2000:]}")
            if self.kind == "tcp":
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                    return
            else:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.sendto(probe.strip(), ("127.0.0.1", self.port))
                if self.count(PROBE_NAME):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.who} collector did not get ready on {self.kind}")

    def size(self) -> int:
        try:
            return self.log_path.stat().st_size if self.log_path else 0
        except FileNotFoundError:
            return 0

    def count(self, name: bytes = EVENT_NAME) -> int:
        """Lines with ``name`` in the output file (each event line names it once)."""
        if self.log_path is None:
            return 0
        total = 0
        with contextlib.suppress(FileNotFoundError), self.log_path.open("rb") as f:
            while chunk := f.read(1 << 24):
                total += chunk.count(b'"' + name + b'"')
                # A name cut by the chunk boundary: re-read its start with the next chunk.
                if len(chunk) == 1 << 24:
                    f.seek(-len(name) - 1, os.SEEK_CUR)
        return total

    def stderr(self) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / f"{self.who}-stderr.txt").read_text(errors="replace")
        return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.stall_server is not None:
            with contextlib.suppress(OSError):
                self.stall_server.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        for sock in [*self.stall_conns, *([self.stall_server] if self.stall_server else [])]:
            sock.close()
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)


# -- one run --------------------------------------------------------------------------------


@dataclass
class Run:
    who: Who
    test: str
    sent: int
    delivered: int
    seconds: float
    cpu: float
    peak_rss: int
    hwm: int
    rss: list[tuple[float, int]]
    drops: int = 0
    offered: float = 0.0
    extra: int = 0
    read_all: float = 0.0
    gen_cores: float = 0.0
    others: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0

    @property
    def loss(self) -> float:
        return 1 - self.delivered / self.sent if self.sent else 0.0

    @property
    def cores(self) -> float:
        return self.cpu / self.seconds if self.seconds > 0 else 0.0

    def rss_at(self, fraction: float) -> int:
        """The RSS sample nearest ``fraction`` of the way through the run."""
        if not self.rss:
            return 0
        return self.rss[min(len(self.rss) - 1, int(fraction * len(self.rss)))][1]

    def rss_halves(self) -> tuple[int, int]:
        """Peak RSS in the first and in the second half of the run."""
        half = len(self.rss) // 2
        first = max((r for _, r in self.rss[: max(half, 1)]), default=0)
        second = max((r for _, r in self.rss[half:]), default=0)
        return first, second

    def rss_flat(self) -> bool:
        """No growth in the second half beyond 10% + 16 MiB of the first half's peak."""
        first, second = self.rss_halves()
        return second <= first * 1.1 + 16 * 1024 * 1024


@contextlib.contextmanager
def running(
    who: Who, kind: Literal["tcp", "udp"], output: Output, workdir: Path
) -> Iterator[Collector]:
    col = Collector(who, kind, output, workdir)
    try:
        col.start()
        yield col
    finally:
        col.stop()


def wait_file(col: Collector, done: Callable[[], bool], quiet: float, timeout: float) -> float:
    """Poll the output file until ``done()`` and it stopped growing; the last growth time."""
    deadline = time.monotonic() + timeout
    size, changed = col.size(), time.monotonic()
    done_at: float | None = None
    while time.monotonic() < deadline:
        now_size = col.size()
        now = time.monotonic()
        if done_at is None and done():
            done_at = now
        if now_size != size:
            size, changed = now_size, now
        elif done_at is not None and now - max(changed, done_at) >= quiet:
            break
        time.sleep(POLL_EVERY)
    return changed


def tcp_run(who: Who, output: Output, events: int, conns: int, workdir: Path) -> Run:
    with running(who, "tcp", output, workdir) as col:
        gen = Generator(tcp_generator, col.port, conns, events)
        try:
            sampler = RSSSampler(col.pid)
            cpu0 = cpu_seconds(proc_tree(col.pid))
            load = OtherLoad()
            gen.go()
            box: list[dict[str, Any] | None] = []
            waiter = threading.Thread(target=lambda: box.append(gen.result(300)))
            waiter.start()
            if output == "null":
                waiter.join()
                end = 0.0
            else:
                end = wait_file(col, lambda: bool(box), quiet=1.0, timeout=300)
                waiter.join()
            cpu = cpu_seconds(proc_tree(col.pid)) - cpu0
            hwm = sum(status_kb(p, "VmHWM") for p in proc_tree(col.pid))
            sampler.stop()
        finally:
            gen.stop()
        res = box[0] if box else None
        if res is None:
            raise RuntimeError(f"{who} tcp {output}: the generator did not finish")
        others = load.cores(cpu, res["cpu"])
        start: float = res["start"]
        read_all = max(res["eof"]) - start
        if output == "null":
            seconds, lines = read_all, (0 if res["errors"] else events)
        else:
            seconds, lines = end - start, col.count()
        # CPU was read after the quiet second: spread over the busy time, it is exact.
        return Run(
            who,
            f"tcp-{output}",
            events,
            min(lines, events),
            seconds,
            cpu,
            sampler.peak,
            hwm,
            sampler.samples,
            extra=max(0, lines - events),
            read_all=read_all,
            gen_cores=res["cpu"] / read_all if read_all > 0 else 0.0,
            others=others,
            errors=list(res["errors"]),
        )


def udp_run(who: Who, events: int, rate: float, workdir: Path) -> Run:
    with running(who, "udp", "logfile", workdir) as col:
        drops0 = udp_drops(col.port)
        gen = Generator(udp_generator, col.port, events, rate)
        try:
            sampler = RSSSampler(col.pid)
            cpu0 = cpu_seconds(proc_tree(col.pid))
            load = OtherLoad()
            gen.go()
            res = gen.result(300)
            if res is None:
                raise RuntimeError(f"{who} udp: the generator did not finish")
            end = wait_file(col, lambda: True, quiet=1.0, timeout=120)
            cpu = cpu_seconds(proc_tree(col.pid)) - cpu0
            hwm = sum(status_kb(p, "VmHWM") for p in proc_tree(col.pid))
            drops = udp_drops(col.port) - drops0
            others = load.cores(cpu, res["cpu"])
            sampler.stop()
        finally:
            gen.stop()
        start: float = res["start"]
        return Run(
            who,
            "udp",
            int(res["sent"]),
            col.count(),
            end - start,
            cpu,
            sampler.peak,
            hwm,
            sampler.samples,
            drops=drops,
            offered=res["sent"] / (res["end"] - start),
            gen_cores=res["cpu"] / (res["end"] - start),
            others=others,
        )


# -- output ---------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def spread(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(median(values))} [{fmt(min(values))}..{fmt(max(values))}]"


def count(value: float) -> str:
    return f"{round(value):,}"


def pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def mib(value: float) -> str:
    return f"{value / (1024 * 1024):.1f}"


def cores(value: float) -> str:
    return f"{value:.2f}"


def describe(run: Run) -> str:
    quarters = "/".join(mib(run.rss_at(f)) for f in (0.25, 0.5, 0.75, 1.0))
    text = (
        f"    {run.who}: delivered {run.delivered:,} of {run.sent:,} in"
        f" {run.seconds:.2f}s = {run.rate:,.0f} ev/s, loss {pct(run.loss)},"
        f" cpu {run.cores:.2f} cores, RSS peak {mib(run.peak_rss)} MiB (HWM {mib(run.hwm)};"
        f" at 1/4,1/2,3/4,end {quarters}), generator cpu {run.gen_cores:.2f} cores,"
        f" other processes {run.others:.2f} cores"
    )
    if run.read_all:
        text += f", all read after {run.read_all:.2f}s"
    if run.extra:
        text += f", {run.extra:,} duplicate lines"
    if run.test.startswith("udp"):
        text += f", offered {run.offered:,.0f}/s, kernel drops {run.drops:,}"
    if run.errors:
        text += f", errors: {'; '.join(run.errors)}"
    return text


def block(label: str, runs: list[Run]) -> list[str]:
    if not runs:
        return []
    lines = [
        f"    {label}: {spread([r.rate for r in runs], count)} ev/s,"
        f" loss {spread([r.loss for r in runs], pct)},"
        f" cpu {spread([r.cores for r in runs], cores)} cores,"
        f" peak RSS {spread([r.peak_rss for r in runs], mib)} MiB"
    ]
    if runs[0].read_all:
        lines[0] += (
            f", read {spread([r.sent / r.read_all for r in runs], count)} ev/s"
            f" (all sent / time until the last EOF)"
        )
    if runs[0].test.startswith("udp"):
        lines[0] += (
            f", offered {spread([r.offered for r in runs], count)}/s,"
            f" kernel drops {spread([r.drops for r in runs], count)}"
        )
    return lines


def ratio(ours: list[Run], node: list[Run], key: Callable[[Run], float]) -> float | None:
    if not ours or not node:
        return None
    theirs = median([key(r) for r in node])
    return median([key(r) for r in ours]) / theirs if theirs else None


# -- profiling ------------------------------------------------------------------------------

# Where the main thread's time goes: the deepest frame that matches decides.
PROFILE_PARTS: Final[list[tuple[str, Callable[[str], bool]]]] = [
    ("orjson.loads", lambda f: ("orjson" in f and ".so" in f) or f.startswith("loads (orjson")),
    ("normalize and its field checks (event.py)", lambda f: "numbat/event.py" in f),
    ("parse_lines' own loop (framing.py)", lambda f: f.startswith("parse_lines ")),
    ("LineFramer: newline search and split", lambda f: "LineFramer" in f),
    ("listener: data_received / datagram_received / receive", lambda f: "listeners/" in f),
    ("Stats.count", lambda f: f.startswith("Stats.")),
    ("Batch.ndjson: orjson.dumps per event and join", lambda f: f.startswith("Batch.")),
    ("fan-out and output queues", lambda f: "collector/fanout.py" in f),
    ("outputs (logfile write, to_thread)", lambda f: "/outputs/" in f or "threads.py" in f),
]


def profile_parts(raw: Path) -> tuple[int, Counter[str], Counter[str]]:
    """py-spy's raw (collapsed) stacks -> samples, time by part, self time by function."""
    parts: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
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
        if "MainThread" not in thread:
            waits = ("cond_timedwait", "SimpleQueue_get", "take_gil", "acquire_lock")
            if any(w in f for f in frames for w in waits):
                parts["other threads, waiting (for the GIL or for work)"] += n
            else:
                parts["other threads, working (the logfile writer's os.write)"] += n
            continue
        if any("gc_collect" in f for f in frames):
            parts["cyclic GC"] += n
            continue
        part = "event loop: epoll, socket reads, uvloop, callbacks"
        for f in frames:
            for name, match in PROFILE_PARTS:
                # orjson under Batch.ndjson is encoding, not parsing.
                if match(f) and not (name == "orjson.loads" and part.startswith("Batch")):
                    part = name
        parts[part] += n
    return total, parts, leaves


def profile(test: str, events: int | None, conns: int, rate: float, keep: Path | None) -> int:
    """Run ours under one load with ``py-spy record --native`` and print where time goes."""
    spy = shutil.which("py-spy")
    if spy is None:
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 1
    kind: Literal["tcp", "udp"] = "udp" if test == "udp" else "tcp"
    output: Output = "null" if test == "tcp-null" else "logfile"
    events = events or (600_000 if kind == "udp" else 3_000_000)
    with tempfile.TemporaryDirectory(prefix="numbat-profile-") as tmp:
        workdir = Path(tmp)
        raw = keep or workdir / "stacks.txt"
        with running("ours", kind, output, workdir) as col:
            cmd = [spy, "record", "--pid", str(col.pid), "--subprocesses", "--threads"]
            cmd += ["--native", "--rate", "200", "--format", "raw", "--output", str(raw)]
            rec = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(1.0)
            if kind == "udp":
                gen = Generator(udp_generator, col.port, events, rate)
            else:
                gen = Generator(tcp_generator, col.port, conns, events)
            try:
                gen.go()
                res = gen.result(600)
            finally:
                gen.stop()
            time.sleep(0.5)
            rec.send_signal(signal.SIGINT)
            _, err = rec.communicate(timeout=60)
        if not raw.is_file():
            print(f"py-spy wrote nothing: {err.decode(errors='replace')}", file=sys.stderr)
            return 1
        total, parts, leaves = profile_parts(raw)
    where = f"{rate:,.0f} datagrams/s" if kind == "udp" else f"{conns} connections"
    print(f"PROFILE of ours, {test}: {events:,} events over {where}; py-spy --native,")
    print(f"{total:,} samples (sampling pauses the process: rates are lower than unprofiled)")
    if res is not None and kind == "tcp":
        print(f"    all read after {max(res['eof']) - res['start']:.2f}s")
    main_total = sum(n for name, n in parts.items() if not name.startswith("other threads"))
    print("the main thread (event loop) by part, share of its samples:")
    for name, n in parts.most_common():
        if not name.startswith("other threads"):
            print(f"    {100 * n / max(main_total, 1):5.1f}%  {name}")
    print("other threads, share of all samples:")
    for name, n in parts.most_common():
        if name.startswith("other threads"):
            print(f"    {100 * n / total:5.1f}%  {name}")
    print("top functions by self time, share of all samples:")
    for name, n in leaves.most_common(15):
        print(f"    {100 * n / total:5.1f}%  {name}")
    return 0


# -- main -----------------------------------------------------------------------------------


def node_missing() -> str:
    if not NODE_COLLECTOR.is_file():
        return f"{NODE_COLLECTOR} is missing (npm ci --prefix tests/interop/node)"
    if shutil.which("node") is None:
        return "node is not on PATH"
    return ""


def analyzer_missing() -> str:
    if importlib.util.find_spec("numbat.collector.outputs.analyzer") is None:
        return "the analyzer output (numbat/collector/outputs/analyzer.py) is not there yet"
    return ""


def stall_output() -> tuple[list[str], str]:
    """Config lines for the stalled output, and how it stalls.

    The ``analyzer`` output at a TCP server that accepts and never reads, when there is
    one; else bench/stall_output.py, a plugin output whose ``write`` never returns.
    """
    if analyzer_missing():
        return (
            ['type = "stall_output:StallOutput"', 'name = "stalled"'],
            "a plugin output whose write never returns; the analyzer output is not there yet",
        )
    return (['type = "analyzer"'], "an analyzer output whose peer accepts and never reads")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller numbers (smoke test)")
    parser.add_argument("--runs", type=int, help="runs of each TCP test [2; quick: 1]")
    parser.add_argument("--events", type=int, help="events per TCP run [2,000,000]")
    parser.add_argument("--connections", type=int, default=4, help="TCP connections [4]")
    parser.add_argument("--udp-events", type=int, help="datagrams per UDP run [1,000,000]")
    parser.add_argument("--udp-rate", type=float, default=100_000, help="offered rate [100000]")
    parser.add_argument("--stall-events", type=int, help="events for the stall test [4,000,000]")
    parser.add_argument("--only", choices=["ours", "node"], help="run one collector only")
    parser.add_argument("--skip", default="", help="comma list of: null,logfile,udp,stall")
    parser.add_argument(
        "--profile",
        choices=["tcp-logfile", "tcp-null", "udp"],
        help="instead: profile ours under this load with py-spy and summarise",
    )
    parser.add_argument("--raw", type=Path, help="with --profile: keep py-spy's raw stacks here")
    parser.add_argument(
        "--ours-set",
        action="append",
        default=[],
        metavar="KEY=TOML",
        help="extra [collector] setting for ours, e.g. workers=2 (repeatable)",
    )
    parser.add_argument(
        "--ours-cmd",
        help="command that runs ours instead of `python -m numbat` (split on spaces)",
    )
    args = parser.parse_args(argv)
    if args.ours_cmd:
        OURS_CMD[:] = args.ours_cmd.split()
    OURS_SETTINGS[:] = [
        f"{k.strip()} = {v.strip()}"
        for k, _, v in map(lambda item: item.partition("="), args.ours_set)
    ]
    if args.profile:
        return profile(args.profile, args.events, args.connections, args.udp_rate, args.raw)
    quick = args.quick
    args.runs = args.runs or (1 if quick else 2)
    args.events = args.events or (300_000 if quick else 2_000_000)
    args.udp_events = args.udp_events or (150_000 if quick else 1_000_000)
    args.stall_events = args.stall_events or (500_000 if quick else 4_000_000)
    skip = set(filter(None, args.skip.split(",")))

    whos: list[Who] = ["ours", "node"]
    missing = node_missing()
    if missing:
        print(f"warning: skipping the Node collector: {missing}", file=sys.stderr)
        whos = ["ours"]
    if args.only:
        whos = [w for w in whos if w == args.only]

    started = time.perf_counter()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; collectors: "
        + ", ".join(
            f"ours ({' '.join([Path(OURS_CMD[0]).name, *OURS_CMD[1:]])} collector"
            f"{''.join(f'; {x}' for x in OURS_SETTINGS)})"
            if w == "ours"
            else f"node numbat-collector {COLLECTOR_VERSION}"
            for w in whos
        ),
        flush=True,
    )
    _, stall_note = stall_output()
    results = run_all(args, whos, skip, stall_note)
    print("\n".join(summary(results, stall_note if "stall" not in skip else "skipped")))
    print(f"total bench time {time.perf_counter() - started:.1f}s")
    print("=" * 78)
    return 0


def run_all(
    args: argparse.Namespace, whos: list[Who], skip: set[str], stall_note: str
) -> dict[tuple[str, Who], list[Run]]:
    """Every run, in order; each run's line is printed as it ends."""
    runs, events, udp_events = args.runs, args.events, args.udp_events
    results: dict[tuple[str, Who], list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="numbat-bench-") as tmp:
        workdir = Path(tmp)
        for output in ("logfile", "null"):
            if output in skip:
                continue
            print(
                f"(a) TCP into a {output} output: {events:,} events over"
                f" {args.connections} connections, {runs} runs each",
                flush=True,
            )
            for _ in range(runs):
                for who in whos:
                    run = tcp_run(who, output, events, args.connections, workdir)
                    results.setdefault((f"tcp-{output}", who), []).append(run)
                    print(describe(run), flush=True)
        if "udp" not in skip:
            for rate in (args.udp_rate, 0.0):
                label = f"{rate:,.0f}/s" if rate else "flat out"
                print(f"(b) UDP into a logfile output: {udp_events:,} datagrams, {label}")
                for who in whos:
                    run = udp_run(who, udp_events, rate, workdir)
                    run.test = f"udp {label}"
                    results.setdefault((run.test, who), []).append(run)
                    print(describe(run), flush=True)
        if "stall" not in skip and "ours" in whos:
            print(
                f"(d) ours, a logfile output and a stalled output ({stall_note}):"
                f" {args.stall_events:,} events over TCP"
            )
            run = tcp_run("ours", "stall", args.stall_events, args.connections, workdir)
            results[("tcp-stall", "ours")] = [run]
            print(describe(run), flush=True)
    return results


def summary(results: dict[tuple[str, Who], list[Run]], stall_note: str) -> list[str]:
    lines = ["", "=" * 78, "SUMMARY: medians, [min..max] over the runs"]
    goals: list[str] = []
    tests = list(dict.fromkeys(test for test, _ in results))
    for test in tests:
        ours, node = results.get((test, "ours"), []), results.get((test, "node"), [])
        lines.append(f"{test}:")
        lines += block("ours", ours)
        lines += block(f"node {COLLECTOR_VERSION}", node)
        if test.startswith("udp"):
            if ours and node and "flat" not in test:
                better = median([r.loss for r in ours]) < median([r.loss for r in node])
                lines.append(
                    f"    loss ours {pct(median([r.loss for r in ours]))}"
                    f" vs node {pct(median([r.loss for r in node]))}"
                )
                goals.append(
                    f"    UDP loss lower than node's at the same offered rate ({test}):"
                    f" {'HOLDS' if better else 'FAILS'}"
                )
            elif ours and node:
                lines.append(
                    "    (flat out, the offered rates differ: on loopback the sender also pays"
                    " for the receiving socket's kernel work)"
                )
            continue
        r_rate = ratio(ours, node, lambda r: r.rate)
        r_rss = ratio(ours, node, lambda r: r.peak_rss)
        if r_rate is not None and r_rss is not None:
            lines.append(f"    ratio ours/node: events/s {r_rate:.2f}, peak RSS {r_rss:.2f}")
            want = {"tcp-logfile": 2.0, "tcp-null": 1.0}.get(test)
            if want is not None:
                goals.append(
                    f"    {test}: at least {want:g}x node's events/s:"
                    f" {'HOLDS' if r_rate >= want else 'FAILS'} ({r_rate:.2f}x)"
                )
    for test in ("tcp-logfile", "tcp-null"):
        ours = results.get((test, "ours"), [])
        if ours:
            lossless = all(r.delivered == r.sent for r in ours)
            goals.append(
                f"    {test}: ours delivers every event sent over TCP:"
                f" {'HOLDS' if lossless else 'FAILS'}"
                f" (loss {spread([r.loss for r in ours], pct)})"
            )
    stall = results.get(("tcp-stall", "ours"), [])
    for run in results.get(("tcp-logfile", "ours"), [])[-1:] + stall:
        first, second = run.rss_halves()
        what = f"bounded with a stalled output ({stall_note})" if run in stall else "flat"
        goals.append(
            f"    ours RSS {what}, {run.test}: {'HOLDS' if run.rss_flat() else 'FAILS'}"
            f" (peak in the first half of the run {mib(first)} MiB, in the second"
            f" {mib(second)} MiB)"
        )
    if not stall:
        goals.append(f"    ours RSS bounded with a stalled output: not measured ({stall_note})")
    busy = [r for runs in results.values() for r in runs if r.others > BUSY_CORES]
    if busy:
        lines.append(
            f"WARNING: other processes used over {BUSY_CORES} cores during {len(busy)} run(s)"
            f" (up to {max(r.others for r in busy):.2f}): those figures are skewed"
        )
    return [*lines, "GOALS", *goals]


if __name__ == "__main__":
    raise SystemExit(main())
