"""The InfluxDB output's write path with text fields: render and cut into batches.

    python bench/text.py            # about 20 s
    python bench/text.py --quick    # a smoke test

cpu-µs per event of ``InfluxDBOutput.write`` (rendering, gathering into batches of
``batch_size`` points and ``batch_bytes`` bytes, cut between points), with no server and
no spool (the output is not started: its batches go nowhere), for events of 1,000
series (``bench.requests,host=hN,route=/api/...``, as bench/influx.py):

* ``no text``: no text field (the common case);
* ``one-line text``: every event with a ``description`` of one line;
* ``multi-line text``: as the last, but one event in ten has a description of three
  lines (a stack trace, say), which line protocol carries inside its quotes.

Each with ``batch_bytes`` at its default (1,000,000: batch_size binds) and at 20,000
(the bytes bind: a cut every hundred points or so). Medians of ``--rounds`` rounds of
50,000 events in batches of 500. The ratio is against ``no text`` at the same
``batch_bytes``: what text fields cost, and what newlines in them cost on top.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from numbat.collector.outputs import Batch
from numbat.collector.outputs.influxdb import InfluxDBOutput
from numbat.config import InfluxDBOutputConfig, from_dict

EVENTS = 50_000
BATCH = 500
SERIES = 1_000


def events(kind: str, first: int) -> list[dict[str, Any]]:
    """EVENTS events of ``kind`` (see the module), numbered from ``first``."""
    out: list[dict[str, Any]] = []
    for i in range(first, first + EVENTS):
        s = i % SERIES
        event: dict[str, Any] = {
            "name": "bench.requests",
            "value": 0.25,
            "host": f"h{s % 200}",
            "route": f"/api/{s // 200}",
            "time": 1_700_000_000_000 + i // SERIES,
        }
        if kind != "no text":
            event["description"] = f"request {i} served from cache, 3 ms"
            if kind == "multi-line text" and i % 10 == 0:
                event["description"] = f"error {i}: timeout\n  at fetch (a.js:3)\n  at main"
        out.append(event)
    return out


def options(spool: Path, batch_bytes: int) -> InfluxDBOutputConfig:
    raw = {
        "type": "influxdb",
        "urls": ["http://127.0.0.1:1"],
        "spool_dir": str(spool),
        "batch_bytes": batch_bytes,
    }
    output = from_dict({"collector": {"listen": [], "outputs": [raw]}}).collector.outputs[0]
    assert isinstance(output, InfluxDBOutputConfig)
    return output


def cpu_per_event(output: InfluxDBOutput, batch: list[dict[str, Any]]) -> float:
    batches = [Batch(batch[i : i + BATCH]) for i in range(0, len(batch), BATCH)]

    async def write_all() -> None:
        for one in batches:
            await output.write(one)

    start = time.process_time()
    asyncio.run(write_all())
    return 1e6 * (time.process_time() - start) / len(batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 11")
    parser.add_argument("--rounds", type=int, help="rounds per case [11; quick: 3]")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 11)
    kinds = ("no text", "one-line text", "multi-line text")
    print(f"python {sys.version.split()[0]}; cpu-us per event, medians of {rounds} rounds")
    with tempfile.TemporaryDirectory(prefix="numbat-text-bench-") as tmp:
        for batch_bytes in (1_000_000, 20_000):
            # One output per case, warmed up (its renderer's cache) by the first round.
            outputs = {kind: InfluxDBOutput(options(Path(tmp), batch_bytes)) for kind in kinds}
            figures: dict[str, list[float]] = {kind: [] for kind in kinds}
            for k in range(rounds + 1):
                for kind in kinds:  # interleaved: the machine's drift hits all alike
                    figure = cpu_per_event(outputs[kind], events(kind, k * EVENTS))
                    if k:
                        figures[kind].append(figure)
            base = median(figures["no text"])
            print(f"batch_bytes = {batch_bytes:,}:")
            for kind in kinds:
                us = median(figures[kind])
                print(f"    {kind:<16} {us:5.2f} us/event  {us / base:5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
