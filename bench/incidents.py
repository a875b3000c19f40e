"""Incident manager benchmark: alerts/s through ``IncidentManager.apply()`` on its hot
path, beside a bare loop doing the same dict lookup per alert (the upper bound), in the
same run.

    python bench/incidents.py                  # 1,000,000 alerts, 3 runs
    python bench/incidents.py --alerts 200000 --runs 1

The stream is what the default rules send in steady state: ``--open`` hosts (default
10,000) with an open critical incident whose alert repeats (same status: a refresh),
and as many ``ok`` alerts for keys with no incident (the cheap no-op), interleaved.
Every 10,000 alerts ``tick()`` and ``take()`` run, as the daemon does. Printed per run:
alerts/s through ``apply()`` and through the bare loop, and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from numbat.analyzer.incidents import IncidentManager
from numbat.analyzer.model import Alert
from numbat.config.analyzer import (
    FlappingConfig,
    GroupingConfig,
    _default_inhibit,
)

BATCH = 10_000


def stream(total: int, open_hosts: int) -> list[Alert]:
    alerts = []
    for i in range(total):
        host = f"h{i % open_hosts}"
        if i % 2:
            alerts.append(Alert(name="web.heartbeat", host=host, status="critical", ttl=10_000.0))
        else:
            alerts.append(Alert(name="disk", host=host, status="ok", value=12.0))
    return alerts


def run_manager(alerts: list[Alert]) -> float:
    now = [1_700_000_000_000]
    manager = IncidentManager(
        clock=lambda: now[0],
        grouping=GroupingConfig(),
        flapping=FlappingConfig(),
        inhibit=_default_inhibit(),
        state_interval=60.0,
    )
    manager.apply(alerts[1::2][:BATCH])  # open the incidents first
    manager.take()
    start = time.perf_counter()
    for at in range(0, len(alerts), BATCH):
        manager.apply(alerts[at : at + BATCH])
        now[0] += 10
        manager.tick(now[0])
        if manager.dirty:
            manager.take()
    return len(alerts) / (time.perf_counter() - start)


def run_bare(alerts: list[Alert]) -> float:
    table: dict[str, Alert] = {}
    start = time.perf_counter()
    for at in range(0, len(alerts), BATCH):
        for alert in alerts[at : at + BATCH]:
            key = alert.id or f"{alert.host}.{alert.name}"
            if table.get(key) is None and alert.status != "ok":
                table[key] = alert
    return len(alerts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=1_000_000)
    parser.add_argument("--open", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    alerts = stream(args.alerts, args.open)
    ratios = []
    for run in range(args.runs):
        managed, bare = run_manager(alerts), run_bare(alerts)
        ratios.append(managed / bare)
        print(
            f"run {run + 1}: apply() {managed:,.0f} alerts/s, bare loop {bare:,.0f} alerts/s, "
            f"ratio {managed / bare:.2f}"
        )
    print(f"median ratio apply()/bare: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
