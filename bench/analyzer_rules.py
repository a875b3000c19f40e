"""Rule benchmark: events/s through each built-in rule and through the default rule set,
beside a bare dispatch loop over the same stream in the same run (the upper bound);
memory per tracked heartbeat key and time per expiry tick.

    python bench/analyzer_rules.py                 # 200,000 events, 100,000 heartbeat keys
    python bench/analyzer_rules.py --events 50000 --keys 10000

The stream is already-parsed events (the rules' cost, not JSON's), a mix as a host
fleet sends it: per host, a heartbeat, memory, disk, three load averages and four
application events (``web.response`` with a statusCode, ``web.latency``) that the
default rules see only through the status rule's catch-all match. "bare" is the
engine's own loop (name-indexed dispatch) with no rule at all. Each rule runs in a
fresh ``Engine`` of its own; "defaults" is ``default_rules()``; each figure is the best
of ``--rounds`` rounds, a round running every rule set once. Memory: tracemalloc
growth of a heartbeat rule fed one beat from each of ``--keys`` hosts, divided by the
keys. Tick: a tick with every key due (each one missed) and a tick with none due.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
import tracemalloc
from collections.abc import Callable

from numbat.analyzer.engine import BoundRule, Engine, Hysteresis
from numbat.analyzer.rules import build_rule
from numbat.config import loads
from numbat.config.rules import RuleConfig, default_rules
from numbat.event import Event

T0 = 1_700_000_000_000

EXTRA = """
[analyzer.rules.latency-high]
type = "threshold"
match = {name = "web.latency"}
warn = 500
critical = 1000

[analyzer.rules.latency-outlier]
type = "outlier"
match = {name = "web.latency"}

[analyzer.rules.latency-ewma]
type = "outlier"
method = "ewma"
match = {name = "web.latency"}

[analyzer.rules.rate]

[analyzer.rules.reachability]

[analyzer.rules.web-absence]
type = "absence"
match = {name = "web.response"}
every = 60
"""


def stream(events: int, hosts: int) -> list[Event]:
    rnd = random.Random(1)
    out: list[Event] = []
    while len(out) < events:
        host = f"host-{rnd.randrange(hosts)}"
        base: Event = {"host": host, "time": T0 + len(out)}
        out += [
            {"name": "web.heartbeat", "ttl": 16_000, "value": 1, **base},
            {"name": "memory", "value": rnd.uniform(0.2, 0.7), **base},
            {"name": "disk./var", "value": rnd.uniform(0.2, 0.7), **base},
            {"name": "load-average.1", "value": rnd.uniform(0, 2), "meta.nprocs": 4, **base},
            {"name": "load-average.5", "value": rnd.uniform(0, 2), "meta.nprocs": 4, **base},
            {"name": "load-average.15", "value": rnd.uniform(0, 2), "meta.nprocs": 4, **base},
            {"name": "web.response", "statusCode": 200, "value": 1, **base},
            {"name": "web.response", "statusCode": 200, "value": 1, **base},
            {"name": "web.latency", "value": rnd.gauss(100, 10), **base},
            {"name": "web.latency", "value": rnd.gauss(100, 10), **base},
        ]
    return out[:events]


def engine(rules: dict[str, RuleConfig], clock: Callable[[], int]) -> Engine:
    bound = []
    for name, options in rules.items():
        rule, match = build_rule(name, options, clock)
        hysteresis = None
        if options.for_ or options.keep_firing_for:
            hysteresis = Hysteresis(options.for_ * 1000, options.keep_firing_for * 1000)
        bound.append(BoundRule(name, rule, match, hysteresis))
    return Engine(bound, clock)


def rate(run: Engine, events: list[Event]) -> float:
    batch = 1000
    started = time.perf_counter()
    for i in range(0, len(events), batch):
        run.process(events[i : i + batch])
    return len(events) / (time.perf_counter() - started)


def heartbeat_memory(keys: int) -> tuple[float, float, float]:
    """(bytes per key, ms per tick with every key due, ms per tick with none due)."""
    from numbat.analyzer.rules.heartbeat import HeartbeatRule
    from numbat.config.rules import HeartbeatRuleConfig

    beats: list[Event] = [
        {"name": "web.heartbeat", "host": f"host-{i:06d}.example.com", "ttl": 16_000}
        for i in range(keys)
    ]
    now = [T0]
    rule = HeartbeatRule(HeartbeatRuleConfig(), name="heartbeat", clock=lambda: now[0])
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for beat in beats:
        rule(beat)
    rule.save()
    gc.collect()
    per_key = (tracemalloc.get_traced_memory()[0] - before) / keys
    tracemalloc.stop()
    started = time.perf_counter()
    rule.tick(T0 + 1000)  # none due
    idle = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    missed = rule.tick(T0 + 16_000)  # all due
    busy = (time.perf_counter() - started) * 1000
    assert len(missed) == keys
    return per_key, busy, idle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    events = stream(args.events, args.hosts)
    clock = time.time_ns
    now: Callable[[], int] = lambda: clock() // 1_000_000  # noqa: E731
    extra = loads(EXTRA).analyzer.rule_configs
    defaults = default_rules()
    runs: list[tuple[str, dict[str, RuleConfig]]] = [("bare", {}), ("defaults", defaults)]
    runs += [(name, {name: options}) for name, options in defaults.items()]
    runs += [(name, {name: options}) for name, options in extra.items()]
    print(f"{args.events:,} events from {args.hosts:,} hosts, best of {args.rounds} rounds")
    # Rounds take every rule set in turn, so a burst of load from elsewhere on the
    # machine costs one sample of each, not all samples of one.
    best = [0.0] * len(runs)
    for _ in range(args.rounds):
        for i, (_label, rules) in enumerate(runs):
            best[i] = max(best[i], rate(engine(rules, now), events))
    for (label, _rules), found in zip(runs, best, strict=True):
        print(f"{label:>20}: {found:>12,.0f} events/s  ({found / best[0]:.0%} of bare)")
    per_key, busy, idle = heartbeat_memory(args.keys)
    print(f"heartbeat: {per_key:,.0f} bytes per key ({args.keys:,} keys)")
    print(f"heartbeat tick: {busy:,.1f} ms with all {args.keys:,} due, {idle:.3f} ms with none")


if __name__ == "__main__":
    main()
