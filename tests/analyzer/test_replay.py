"""numbat analyzer replay: the configured rules over stored events (a real SQLite store,
a real influxd) on an event-time clock, printing what would have been raised, and when."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from numbat.analyzer.replay import (
    Simulation,
    format_time,
    parse_duration,
    parse_time,
    replay,
    restore_numbers,
)
from numbat.config import loads
from numbat.event import Event, Scalar
from numbat.store.sqlite import SQLiteStore
from tests.store.conftest import InfluxDatabase, influx_db, influxd  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
ISO0 = "2026-01-01T00:00:00Z"
SECOND = 1_000
DAY = 86_400_000

RULES = """
[analyzer]
defaults = false
data_dir = "{data_dir}"
[analyzer.rules.latency]
type = "threshold"
match = {{name = "api.latency"}}
warn = 250
critical = 1000
for = 30
[analyzer.rules.heartbeat]
[analyzer.rules.load-average]
"""


def ev(name: str, value: float, time: int, **fields: Scalar) -> Event:
    return {"name": name, "value": value, "time": time, **fields}


# Latency high from t+10s (every 10 s) to t+60s, then fine: with for = 30 it fires at
# t+40s (the tick before the t+40s event) with its first breach at t+10s, and resolves
# at t+70s. The analyzer's own alert events in the store are never judged. Load 30 on
# 4 CPUs: above the default warning (levels times meta.nprocs).
LATENCY = [
    ev("api.latency", 100, T0, host="api-1"),
    *(ev("api.latency", 400, T0 + s * SECOND, host="api-1") for s in range(10, 70, 10)),
    ev("api.latency", 90, T0 + 70 * SECOND, host="api-1"),
    ev("numbat.alert", 3, T0 + 71 * SECOND, host="api-1", status="critical", incident="x"),
    ev("load-average.1", 30, T0 + 80 * SECOND, host="db-1", **{"meta.nprocs": 4}),
]


def _numbat(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "numbat", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _sqlite_with(path: Path, events: list[Event]) -> None:
    async def write() -> None:
        store = SQLiteStore(path, clock=lambda: T0)
        try:
            await store.write(events)
        finally:
            await store.close()

    asyncio.run(write())


def _config(tmp_path: Path, outputs: str) -> Path:
    path = tmp_path / "numbat.toml"
    path.write_text(RULES.format(data_dir=tmp_path / "state") + outputs)
    return path


def test_parse_time_forms() -> None:
    """--from/--to take ISO 8601 (UTC unless an offset is given), ms, now and now minus a
    duration; anything else is a ValueError that says what is accepted."""
    now = T0
    assert parse_time(ISO0, now) == T0
    assert parse_time("2026-01-01T01:00:00+01:00", now) == T0
    assert parse_time("2026-01-01T00:00:00", now) == T0
    assert parse_time(str(T0), now) == T0
    assert parse_time("now", now) == now
    assert parse_time("-1h", now) == now - 3_600_000
    assert parse_time("now-30m", now) == now - 1_800_000
    assert parse_time("-1h30m", now) == now - 5_400_000
    assert parse_duration("250ms") == 250
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday", now)
    with pytest.raises(ValueError, match="not a duration"):
        parse_time("-1y", now)


def test_restore_numbers_only_canonical_numbers() -> None:
    """Stored tag text that numbat wrote for a number becomes a number again; other text
    (leading zeros, 1.50, host and name) stays text."""
    event = restore_numbers(
        {
            "name": "1",
            "value": 1.0,
            "time": 0,
            "host": "42",
            "a": "4",
            "b": "007",
            "c": "0.5",
            "d": "1.50",
            "e": "-3",
            "f": "true",
        }
    )
    assert event == {
        "name": "1",
        "value": 1.0,
        "time": 0,
        "host": "42",
        "a": 4,
        "b": "007",
        "c": 0.5,
        "d": "1.50",
        "e": -3,
        "f": "true",
    }


def test_simulation_clock_follows_event_time() -> None:
    """A heartbeat that stops is reported critical at its deadline in event time (ticks
    between events), and resolved at the next beat's time, with no wall-clock wait."""
    config = loads("[analyzer]\ndefaults = false\n[analyzer.rules.heartbeat]\n").analyzer
    sim = Simulation(config, config.rule_configs, start=T0)
    beats = [ev("web.heartbeat", 1, T0 + s * SECOND, host="w", ttl=10_000) for s in (0, 5, 60)]

    async def run() -> list[tuple[str, str, int]]:
        return [
            (r.change.kind, r.change.status, r.now)
            async for r in replay(sim, beats, T0 + 65 * SECOND)
        ]

    assert asyncio.run(run()) == [
        ("opened", "critical", T0 + 15 * SECOND),
        ("resolved", "ok", T0 + 60 * SECOND),
    ]
    assert sim.now == T0 + 65 * SECOND


def test_replay_sqlite_from_config(tmp_path: Path) -> None:
    """Replay reads the config's sqlite output, runs its rules in event time and prints
    one line per change with times (for delays the incident, first breach kept); the
    analyzer's own stored alerts are not judged, number tags count as numbers, and no
    state database is written."""
    _sqlite_with(tmp_path / "numbat.db", LATENCY)
    config = _config(
        tmp_path, f'[[collector.outputs]]\ntype = "sqlite"\npath = "{tmp_path / "numbat.db"}"\n'
    )
    result = _numbat(
        "analyzer", "replay", "-c", str(config), "--from", ISO0, "--to", str(T0 + 120_000)
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout
    assert lines[0].startswith(f"{format_time(T0 + 40_000)}  opened   warning")
    assert "api-1.api.latency  rule=latency value=400" in lines[0]
    assert f"breached={format_time(T0 + 10_000)}" in lines[0]
    assert lines[1].startswith(f"{format_time(T0 + 70_000)}  resolved ok (was warning)")
    assert lines[2].startswith(f"{format_time(T0 + 80_000)}  opened   warning")
    assert "db-1.load-average.1" in lines[2] and "(30.00/4 CPUs)" in lines[2]
    assert "9 events, 3 incident changes, 1 open at the end" in result.stderr
    assert "not replayed: heartbeat (the embedded store keeps no heartbeats" in result.stderr
    assert not (tmp_path / "state").exists()


def test_a_long_replay_ticks_less_often_and_the_same_every_time(tmp_path: Path) -> None:
    """Over 30 days a replay ticks every 30 s (at most 86,400 ticks, said on stderr), and
    two runs from a relative --from print the same."""
    _sqlite_with(tmp_path / "numbat.db", LATENCY)
    config = _config(
        tmp_path, f'[[collector.outputs]]\ntype = "sqlite"\npath = "{tmp_path / "numbat.db"}"\n'
    )
    args = ["analyzer", "replay", "-c", str(config), "--from", ISO0, "--to", str(T0 + 30 * DAY)]
    first, second = _numbat(*args), _numbat(*args)
    assert first.returncode == 0, first.stderr
    assert "ticking every 30 s of event time" in first.stderr
    assert first.stdout == second.stdout and first.stdout


def test_replay_json_and_store_override(tmp_path: Path) -> None:
    """--store sqlite:PATH overrides the config, --json prints one object a line with
    ms times, and --from/--to bound the events read ([from, to))."""
    _sqlite_with(tmp_path / "other.db", LATENCY)
    config = _config(tmp_path, "")
    result = _numbat(
        "analyzer",
        "replay",
        "-c",
        str(config),
        "--store",
        f"sqlite:{tmp_path / 'other.db'}",
        "--from",
        str(T0),
        "--to",
        "2026-01-01T00:01:10Z",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    found = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(f["kind"], f["status"], f["time"]) for f in found] == [
        ("opened", "warning", T0 + 40_000)
    ]
    assert found[0]["breached_at"] == T0 + 10_000
    assert found[0]["alert_time"] == T0 + 40_000  # fired when for = 30 ran out
    assert found[0]["incident"] == "api-1.api.latency" and found[0]["rule"] == "latency"


def test_replay_influx_heartbeats(influx_db: InfluxDatabase, tmp_path: Path) -> None:  # noqa: F811
    """Replay reads the config's influxdb output (its first URL and database): stored
    heartbeats (write_heartbeats) with their ttl raise critical at the missed deadline."""
    beats = "".join(
        f"web.heartbeat,host=web-1 ttl=10000,value=1 {(T0 + s * SECOND) * 10**6}\n"
        for s in (0, 5, 10, 40)
    )
    influx_db.write(beats.encode())
    config = _config(
        tmp_path,
        f'[[collector.outputs]]\ntype = "influxdb"\nurls = ["{influx_db.server.url}"]\n'
        f'database = "{influx_db.name}"\nwrite_heartbeats = true\n'
        f'spool_dir = "{tmp_path / "spool"}"\n',
    )
    result = _numbat(
        "analyzer", "replay", "-c", str(config), "--from", ISO0, "--to", str(T0 + 45_000), "--json"
    )
    assert result.returncode == 0, result.stderr
    found = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(f["kind"], f["status"], f["time"], f["incident"]) for f in found] == [
        ("opened", "critical", T0 + 20_000, "web-1.web.heartbeat"),
        ("resolved", "ok", T0 + 40_000, "web-1.web.heartbeat"),
    ]
    assert not (tmp_path / "spool").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "yesterday"], "ISO 8601"),
        (["--from", ISO0, "--to", ISO0], "--to must be after --from"),
        (["--from", ISO0, "--store", "redis://x"], "sqlite:PATH or http://"),
        (["--from", ISO0, "--store", "sqlite:/nonexistent/x.db"], "no such store file"),
    ],
)
def test_replay_bad_arguments_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    """A bad time, range or store exits 2 with what is wrong, no traceback."""
    config = _config(tmp_path, "")
    result = _numbat("analyzer", "replay", "-c", str(config), *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_replay_without_a_store_exits_2(tmp_path: Path) -> None:
    """A config with no sqlite or influxdb output and no --store: exit 2 saying so."""
    result = _numbat("analyzer", "replay", "-c", str(_config(tmp_path, "")), "--from", "-1h")
    assert result.returncode == 2
    assert "no store to read" in result.stderr


def test_replay_of_a_file_that_is_no_store_exits_1(tmp_path: Path) -> None:
    """A --store file that is not a SQLite database: exit 1 saying the store cannot be
    read, no traceback."""
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database at all" * 100)
    config = _config(tmp_path, "")
    result = _numbat(
        "analyzer", "replay", "-c", str(config), "--store", f"sqlite:{bad}", "--from", "-1h"
    )
    assert result.returncode == 1, result.stderr
    assert "cannot read the store: file is not a database" in result.stderr
    assert "Traceback" not in result.stderr
