"""Real InfluxDB 1.x and VictoriaMetrics servers on free loopback ports, for store tests.

``influxd`` (one per session, started on first use) and ``influx_db`` (a fresh database
per test, dropped after it); ``victoria_metrics`` (one per session). The servers keep
their files in pytest's temporary directory and are stopped at the end of the session.
"""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.helpers import wait_until

INFLUXD = "/usr/bin/influxd"
VICTORIA_METRICS = "/usr/bin/victoria-metrics"
START_TIMEOUT = 30.0

_INFLUXD_CONFIG = """\
# Debian's influxd 1.6.7 reads "reporting-enabled" (upstream: reporting-disabled).
reporting-enabled = false
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root}/meta"
  logging-enabled = false

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  wal-fsync-delay = "0s"
  query-log-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false

[logging]
  level = "warn"
  suppress-logo = true

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[retention]
  enabled = false

[shard-precreation]
  enabled = false
"""


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http(
    method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """One HTTP request; the status and body, also for 4xx and 5xx answers."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def quote_ident(name: str) -> str:
    r"""An InfluxQL identifier in double quotes (``\`` and ``"`` escaped).

    >>> print(quote_ident('a "b"\\c'))
    "a \"b\"\\c"
    """
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _answers(url: str, status: int) -> bool:
    try:
        return http("GET", url)[0] == status
    except OSError:
        return False


class _Process:
    """A server process with its log file; fails the wait with the log if it exits."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, url: str, status: int) -> bool:
        """Poll ``url`` until it answers ``status``; False if the process died first."""

        def ready() -> bool:
            return self.proc.poll() is not None or _answers(url, status)

        wait_until(ready, START_TIMEOUT, f"{url} to answer {status}")
        return self.proc.poll() is None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _start(
    make_args: Callable[[], tuple[list[str], str]], ready_path: str, status: int, log: Path
) -> tuple[_Process, str]:
    """Start a server on fresh ports; try again if a port was taken in between."""
    for _attempt in range(3):
        args, url = make_args()
        process = _Process(args, log)
        if process.wait_ready(url + ready_path, status):
            return process, url
        process.stop()
    raise AssertionError(f"{args[0]} did not start:\n{log.read_text(errors='replace')}")


class InfluxServer:
    """A running influxd 1.x: its URL, InfluxQL queries, databases and writes.

    Example::

        influxd.create_database("db")
        status, body = influxd.write("db", b"cpu,host=a value=1.0 1000000\\n")
        result = influxd.query("SELECT * FROM cpu", db="db")  # epoch=ns
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._names = itertools.count(1)

    def query(self, q: str, db: str | None = None) -> dict[str, Any]:
        """Run one InfluxQL statement; its result (``series`` etc.), failing on an error."""
        params = {"q": q, "epoch": "ns", **({"db": db} if db else {})}
        status, body = http("POST", f"{self.url}/query?{urllib.parse.urlencode(params)}")
        assert status == 200, f"{q}: {status} {body!r}"
        result: dict[str, Any] = json.loads(body)["results"][0]
        assert "error" not in result, f"{q}: {result['error']}"
        return result

    def create_database(self, name: str) -> None:
        self.query(f"CREATE DATABASE {quote_ident(name)}")

    def drop_database(self, name: str) -> None:
        self.query(f"DROP DATABASE {quote_ident(name)}")

    def write(self, db: str, data: bytes, precision: str = "ns") -> tuple[int, str]:
        """POST line protocol to ``/write``; the status and the body (an error, if any)."""
        params = urllib.parse.urlencode({"db": db, "precision": precision})
        status, body = http("POST", f"{self.url}/write?{params}", data)
        return status, body.decode()

    def database(self) -> InfluxDatabase:
        """A new, empty database with a name not used before in this session."""
        db = InfluxDatabase(self, f"test{next(self._names)}")
        self.create_database(db.name)
        return db


class InfluxDatabase:
    """One database of an :class:`InfluxServer`: write line protocol, read points back.

    Example::

        influx_db.write(b"cpu,host=a value=1.0 1000000\\n")
        assert influx_db.rows("cpu") == [{"time": 1000000, "host": "a", "value": 1}]
    """

    def __init__(self, server: InfluxServer, name: str) -> None:
        self.server = server
        self.name = name

    def write(self, data: bytes) -> None:
        """Write line protocol (ns precision); fail unless influxd took every point."""
        status, body = self.server.write(self.name, data)
        assert status == 204, f"write: {status} {body}"

    def query(self, q: str) -> dict[str, Any]:
        return self.server.query(q, db=self.name)

    def rows(self, measurement: str) -> list[dict[str, Any]]:
        """Every point of ``measurement`` as a dict of its non-null columns (tags, fields, time)."""
        result = self.query(f"SELECT * FROM {quote_ident(measurement)}")
        rows: list[dict[str, Any]] = []
        for series in result.get("series", []):
            columns = series["columns"]
            for values in series["values"]:
                rows.append({c: v for c, v in zip(columns, values, strict=True) if v is not None})
        return rows

    def measurements(self) -> list[str]:
        result = self.query("SHOW MEASUREMENTS")
        return [row[0] for series in result.get("series", []) for row in series["values"]]


class VictoriaMetrics:
    """A running VictoriaMetrics single-node server (it takes line protocol on ``/write``).

    Example::

        victoria_metrics.write(b"cpu,host=a value=1.5 1700000000000000000\\n")
        victoria_metrics.flush()
        [series] = victoria_metrics.export('{__name__="cpu_value"}')
    """

    def __init__(self, url: str) -> None:
        self.url = url

    def write(self, data: bytes) -> None:
        status, body = http("POST", f"{self.url}/write", data)
        assert status == 204, f"write: {status} {body!r}"

    def flush(self) -> None:
        """Make everything written so far visible to queries and exports."""
        status, body = http("GET", f"{self.url}/internal/force_flush")
        assert status == 200, f"force_flush: {status} {body!r}"

    def export(self, match: str) -> list[dict[str, Any]]:
        """The raw samples of the series matching a series selector, one dict per series."""
        query = urllib.parse.urlencode({"match[]": match})
        status, body = http("GET", f"{self.url}/api/v1/export?{query}")
        assert status == 200, f"export: {status} {body!r}"
        return [json.loads(line) for line in body.splitlines() if line]


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """A real influxd on free loopback ports, for the whole session."""
    root = tmp_path_factory.mktemp("influxd")

    def make_args() -> tuple[list[str], str]:
        http_port, rpc_port = free_port(), free_port()
        config = root / "influxd.conf"
        text = _INFLUXD_CONFIG.format(root=root, http_port=http_port, rpc_port=rpc_port)
        config.write_text(text)
        return [INFLUXD, "run", "-config", str(config)], f"http://127.0.0.1:{http_port}"

    process, url = _start(make_args, "/ping", 204, root / "influxd.log")
    yield InfluxServer(url)
    process.stop()


@pytest.fixture
def influx_db(influxd: InfluxServer) -> Iterator[InfluxDatabase]:
    """A fresh database on the session's influxd, dropped after the test."""
    db = influxd.database()
    yield db
    influxd.drop_database(db.name)


@pytest.fixture(scope="session")
def victoria_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    """A real VictoriaMetrics on a free loopback port, for the whole session."""
    root = tmp_path_factory.mktemp("victoria-metrics")

    def make_args() -> tuple[list[str], str]:
        port = free_port()
        args = [
            VICTORIA_METRICS,
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={root / 'data'}",
            "-retentionPeriod=100y",  # tests write fixed timestamps from the past
            "-loggerLevel=ERROR",
        ]
        return args, f"http://127.0.0.1:{port}"

    process, url = _start(make_args, "/health", 200, root / "victoria-metrics.log")
    yield VictoriaMetrics(url)
    process.stop()


ADMIN, PASSWORD = "admin", "pä:ss wörd"


@pytest.fixture(scope="module")
def secure_influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second influxd, with authentication on and one admin user; its URL."""
    root = tmp_path_factory.mktemp("influxd-auth")

    def make_args() -> tuple[list[str], str]:
        http_port, rpc_port = free_port(), free_port()
        config = root / "influxd.conf"
        text = _INFLUXD_CONFIG.format(root=root, http_port=http_port, rpc_port=rpc_port)
        config.write_text(text.replace("auth-enabled = false", "auth-enabled = true"))
        return [INFLUXD, "run", "-config", str(config)], f"http://127.0.0.1:{http_port}"

    process, url = _start(make_args, "/ping", 204, root / "influxd.log")
    try:
        query = f"CREATE USER {ADMIN} WITH PASSWORD '{PASSWORD}' WITH ALL PRIVILEGES"
        status, body = http("POST", f"{url}/query?{urlencode({'q': query})}")
        assert status == 200 and b"error" not in body, body
        yield url
    finally:
        process.stop()


def start_influxd(root: Path, data: str) -> tuple[_Process, InfluxServer]:
    """An influxd with ``data`` (lines such as ``max-values-per-tag = 50``) added to its
    ``[data]`` section; the caller stops the process."""

    def make_args() -> tuple[list[str], str]:
        http_port, rpc_port = free_port(), free_port()
        config = root / "influxd.conf"
        text = _INFLUXD_CONFIG.format(root=root, http_port=http_port, rpc_port=rpc_port)
        config.write_text(text.replace("[data]\n", f"[data]\n  {data}\n"))
        return [INFLUXD, "run", "-config", str(config)], f"http://127.0.0.1:{http_port}"

    process, url = _start(make_args, "/ping", 204, root / "influxd.log")
    return process, InfluxServer(url)
