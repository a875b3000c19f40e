"""Burst benchmark: a TCP burst offered faster than a logfile output writes, with the
output's ``when_full = "block"`` (the default: stream reading pauses while the queue
is full) against ``when_full = "drop_newest"`` (the baseline: what every output did
before backpressure) in the same run.

    python bench/burst.py                      # 2,000,000 events over 4 connections
    python bench/burst.py --events 200000 --runs 1
    python bench/burst.py --stalled            # plus an analyzer output whose peer never reads

Each run starts ``python -m numbat collector`` on a free loopback port with one logfile
output, sends ``--events`` events (``{"name","seq","time"}``, the shape of the tests'
burst) from 4 threads with blocking ``sendall`` as fast as the collector takes them,
then sends SIGTERM and counts the event lines in the file. Printed per run: the
offered rate (events / time to send them all), the events delivered to the file and
the share lost; then block / drop_newest ratios of delivered events and of the rate.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"


@dataclass
class Run:
    policy: str
    sent: int
    seconds: float
    delivered: int

    @property
    def rate(self) -> float:
        return self.sent / self.seconds

    @property
    def lost(self) -> float:
        return 1 - self.delivered / self.sent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


class _Blackhole:
    """Accepts and never reads: a stalled best-effort peer."""

    def __init__(self) -> None:
        self.server = socket.create_server((LOOPBACK, 0))
        self.port = self.server.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.conns.append(self.server.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.server.close()
        for conn in self.conns:
            conn.close()


def _chunks(first: int, stop: int, step: int = 10_000) -> list[bytes]:
    return [
        b"".join(
            json.dumps({"name": "t.ev", "seq": i, "time": 1000 + i}).encode() + b"\n"
            for i in range(start, min(start + step, stop))
        )
        for start in range(first, stop, step)
    ]


def _send(port: int, chunks: list[list[bytes]]) -> float:
    def one(mine: list[bytes]) -> None:
        with socket.create_connection((LOOPBACK, port)) as sock:
            for chunk in mine:
                sock.sendall(chunk)

    threads = [threading.Thread(target=one, args=(mine,)) for mine in chunks]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began


def one_run(policy: str, total: int, chunks: list[list[bytes]], stalled: bool) -> Run:
    with tempfile.TemporaryDirectory(prefix="nbt-burst-") as tmp:
        work = Path(tmp)
        port = _free_port()
        log = work / "events.jsonl"
        config = (
            f'[collector]\nlisten = ["tcp://{LOOPBACK}:{port}"]\n'
            f'[[collector.outputs]]\ntype = "logfile"\npath = "{log}"\nwhen_full = "{policy}"\n'
        )
        hole = _Blackhole()
        if stalled:
            config += (
                f'[[collector.outputs]]\ntype = "analyzer"\nuri = "tcp://{LOOPBACK}:{hole.port}"\n'
            )
        (work / "numbat.toml").write_text(config)
        stderr = (work / "stderr").open("w+")
        proc = subprocess.Popen(
            [sys.executable, "-m", "numbat", "collector", "-c", str(work / "numbat.toml")],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 30
            while "collector listening" not in (work / "stderr").read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((work / "stderr").read_text())
                time.sleep(0.02)
            seconds = _send(port, chunks)
            proc.send_signal(signal.SIGTERM)
            proc.wait(300)
        finally:
            hole.close()
            if proc.poll() is None:
                proc.kill()
        with log.open("rb") as lines:
            delivered = sum(1 for line in lines if b'"t.ev"' in line)
        return Run(policy, total, seconds, delivered)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--stalled", action="store_true", help="add a stalled analyzer output")
    args = parser.parse_args()
    share = args.events // 4
    chunks = [_chunks(k * share, (k + 1) * share) for k in range(4)]
    total = share * 4
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; {total:,} events, 4 conns")
    runs: dict[str, list[Run]] = {"block": [], "drop_newest": []}
    for _ in range(args.runs):
        for policy, done in runs.items():  # alternate: drift on the machine hits both
            run = one_run(policy, total, chunks, args.stalled)
            done.append(run)
            print(
                f"  {policy:<11} offered {run.rate:>9,.0f} ev/s, delivered "
                f"{run.delivered:>9,} of {total:,} ({run.lost:.1%} lost)"
            )
    block, drop = runs["block"], runs["drop_newest"]
    delivered = statistics.median(r.delivered for r in block)
    baseline = statistics.median(r.delivered for r in drop)
    rate = statistics.median(r.rate for r in block) / statistics.median(r.rate for r in drop)
    print(
        f"block / drop_newest: delivered {delivered / baseline:.2f}x "
        f"({delivered:,.0f} vs {baseline:,.0f}), offered rate {rate:.2f}x"
    )


if __name__ == "__main__":
    main()
