"""numbat query and numbat incidents: what a terminal user sees, and the exit codes
(0 done, 1 the store or analyzer unreachable, 2 bad arguments)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from numbat.event import Event, now_ms
from numbat.store.sqlite import SQLiteStore
from tests.analyzer.harness import Process, WebhookReceiver, analyzer_toml, api
from tests.helpers import wait_until
from tests.interop.nodepeers import free_port

ROOT = Path(__file__).resolve().parents[1]
MINUTE = 60_000


def _numbat(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "numbat", *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.fixture
def store(tmp_path: Path) -> str:
    """An embedded store with web.hits from hosts a and b over the last ten minutes."""
    path = tmp_path / "numbat.db"
    now = now_ms()
    start = now - now % MINUTE - 10 * MINUTE
    events: list[Event] = []
    for i in range(10):
        t = start + i * MINUTE + 1
        events.append({"name": "web.hits", "value": i, "time": t, "host": "a"})
        events.append({"name": "web.hits", "value": 100 + i, "time": t, "host": "b"})

    async def write() -> None:
        db = SQLiteStore(path)
        try:
            await db.write(events)
        finally:
            await db.close()

    asyncio.run(write())
    return f"sqlite:{path}"


def _values(result: subprocess.CompletedProcess[str]) -> dict[str, list[float]]:
    assert result.returncode == 0, result.stderr
    groups = json.loads(result.stdout)
    return {g: [v for _, v in buckets if v is not None] for g, buckets in groups.items()}


def test_query_by_host_gives_one_line_per_host(store: str) -> None:
    """--by host: the points of each host, bucketed (one a minute for --since 10m)."""
    result = _numbat(
        "query", "web.hits", "--since", "10m", "--buckets", "10", "--by", "host",
        "--store", store, "--json",
    )  # fmt: skip
    found = _values(result)
    assert set(found) == {"a", "b"}
    assert found["a"][-3:] == [7.0, 8.0, 9.0] and found["b"][-3:] == [107.0, 108.0, 109.0]


def test_query_aggregates_every_series(store: str) -> None:
    """Without --by, one line: the aggregate over every series (max of a and b)."""
    result = _numbat(
        "query", "web.hits", "--since", "10m", "--buckets", "10", "--agg", "max",
        "--store", store, "--json",
    )  # fmt: skip
    assert _values(result)["all"][-2:] == [108.0, 109.0]


def test_query_p99_and_rate_by_host(store: str) -> None:
    """--agg p99 --by host: each host's own values (one point a bucket); --agg rate: a
    running total rising by 1 a minute is 1/60 per second."""
    common = ["--since", "10m", "--buckets", "10", "--by", "host", "--store", store, "--json"]
    found = _values(_numbat("query", "web.hits", "--agg", "p99", *common))
    assert found["a"][-2:] == [8.0, 9.0] and found["b"][-2:] == [108.0, 109.0]
    rates = _values(_numbat("query", "web.hits", "--agg", "rate", *common))
    assert rates["a"] and all(abs(r - 1 / 60) < 1e-9 for r in rates["a"])


def test_query_prints_a_table_and_sparklines(store: str) -> None:
    """The default output is a table with a column per host; --spark a line per host
    with its sparkline and last value."""
    table = _numbat("query", "web.hits", "--since", "10m", "--by", "host", "--store", store)
    assert table.returncode == 0, table.stderr
    assert "time (UTC)" in table.stdout and "109" in table.stdout
    spark = _numbat(
        "query", "web.hits", "--since", "10m", "--buckets", "10", "--by", "host",
        "--spark", "--store", store,
    )  # fmt: skip
    assert spark.returncode == 0, spark.stderr
    line_b = next(line for line in spark.stdout.splitlines() if "109" in line)
    assert "█" in line_b and "▁" in line_b


def test_query_of_nothing_says_so(store: str) -> None:
    """A name with no series: exit 0, and a message saying there were no points."""
    result = _numbat("query", "nope", "--store", store)
    assert result.returncode == 0 and "nope: no points" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "not a duration"),
        (["--agg", "median"], "--agg"),
        (["--since", "99999d"], "at most 400 days"),
        (["--store", "mysql://x"], "--store"),
        (["--store", "sqlite:/nonexistent/numbat.db"], "no such store file"),
    ],
)
def test_query_bad_arguments_exit_2(store: str, args: list[str], message: str) -> None:
    """A bad --since, --agg or --store: exit 2 naming it."""
    result = _numbat("query", "web.hits", *(["--store", store] if "--store" not in args else []),
                     *args)  # fmt: skip
    assert result.returncode == 2, result
    assert message in result.stderr


def test_query_unreachable_store_exits_1() -> None:
    """An InfluxDB nobody listens on: exit 1, its password not shown."""
    url = f"http://bob:s3cret@127.0.0.1:{free_port()}"
    result = _numbat("query", "web.hits", "--store", url)
    assert result.returncode == 1, result
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def analyzer(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A real analyzer: its event port and its API port."""
    webhook = WebhookReceiver()
    listen, http = free_port(), free_port()
    config = tmp_path / "analyzer.toml"
    config.write_text(
        analyzer_toml(listen=listen, http=http, data_dir=tmp_path / "state", webhook=webhook.url)
    )
    process = Process(["analyzer", "-c", str(config)], tmp_path, "analyzer")
    try:
        process.wait_log("analyzer listening on")
        yield listen, http
    finally:
        process.kill()
        webhook.close()


def _send(port: int, *events: Event) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"".join(json.dumps(e).encode() + b"\n" for e in events))


def test_incidents_lists_the_open_ones(analyzer: tuple[int, int]) -> None:
    """Open incidents as the analyzer's API has them, most severe first; markup in a
    message is printed as text."""
    listen, http = analyzer
    now = int(time.time() * 1000)
    _send(
        listen,
        {"name": "backup.done", "host": "db-1", "status": "warning", "description": "80% full",
         "time": now},
        {"name": "jobs.queue", "host": "web-1", "status": "critical",
         "description": "[bold]stuck[/bold] <b>", "time": now},
    )  # fmt: skip
    wait_until(
        lambda: len(api(http, "/incidents?state=open")["incidents"]) == 2, 10, "two incidents"
    )
    url = f"http://127.0.0.1:{http}"
    result = _numbat("incidents", "--url", url)
    assert result.returncode == 0, result.stderr
    assert "2 open incidents" in result.stdout
    lines = [line for line in result.stdout.splitlines() if "db-1" in line or "web-1" in line]
    assert "critical" in lines[0] and "[bold]stuck[/bold] <b>" in lines[0]
    assert "warning" in lines[1] and "80% full" in lines[1]
    as_json = _numbat("incidents", "--url", url, "--json")
    assert sorted(i["host"] for i in json.loads(as_json.stdout)) == ["db-1", "web-1"]


def test_incidents_none_open_is_all_well(analyzer: tuple[int, int]) -> None:
    """With nothing open: exit 0 and "all is well"."""
    result = _numbat("incidents", "--url", f"http://127.0.0.1:{analyzer[1]}")
    assert result.returncode == 0, result.stderr
    assert "all is well" in result.stdout


def test_incidents_unreachable_exits_1() -> None:
    """No analyzer there: exit 1 saying it cannot be reached, no token shown."""
    result = _numbat("incidents", "--url", f"http://u:s3cret@127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "cannot reach the analyzer" in result.stderr and "s3cret" not in result.stderr


def test_incidents_bad_argument_exits_2() -> None:
    """An unknown option: exit 2."""
    assert _numbat("incidents", "--bogus").returncode == 2
