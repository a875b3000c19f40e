"""``numbat up``: collector and embedded store on one machine, from one command."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from numbat.store.sqlite import SQLiteStore
from numbat.up import UpSettings
from tests.helpers import wait_until


def test_config_uses_the_embedded_store_by_default(tmp_path: Path) -> None:
    """Without --influx storage is SQLite in the data dir; listeners on 3333; the
    analyzer on 3337 (fed by an analyzer output, writing back to 3333), API on 3338."""
    cfg = UpSettings(data_dir=tmp_path).config()
    assert [lc.uri for lc in cfg.collector.listeners] == [
        "tcp://127.0.0.1:3333",
        "udp://127.0.0.1:3333",
        f"unix://{tmp_path.absolute() / 'collector.sock'}",
    ]
    output, feed = cfg.collector.outputs
    assert (output.type, output.path) == ("sqlite", str(tmp_path / "numbat.db"))
    assert (feed.type, feed.uri) == ("analyzer", "tcp://127.0.0.1:3337")
    analyzer = cfg.analyzer
    assert [lc.uri for lc in analyzer.listeners] == ["tcp://127.0.0.1:3337"]
    assert (analyzer.http, analyzer.data_dir, analyzer.writeback.uri) == (
        "http://127.0.0.1:3338",
        str(tmp_path),
        "tcp://127.0.0.1:3333",
    )


def test_config_with_influx_spools_in_the_data_dir(tmp_path: Path) -> None:
    """--influx switches storage to InfluxDB, spooling under the data dir."""
    cfg = UpSettings(data_dir=tmp_path, influx="http://127.0.0.1:8086", database="ops").config()
    output, _ = cfg.collector.outputs
    assert output.type == "influxdb"
    assert (output.urls, output.database) == (["http://127.0.0.1:8086"], "ops")
    assert output.spool_dir == str(tmp_path / "spool")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_up_receives_and_stores_events(tmp_path: Path) -> None:
    """numbat up prints where to send, stores what arrives, runs the analyzer (a critical
    event is an incident its API lists, written back to the store as numbat.alert), and
    stops cleanly on SIGINT."""
    port, analyzer, api, dash = _free_port(), _free_port(), _free_port(), _free_port()
    out = tmp_path / "stdout.txt"
    with out.open("w") as stdout:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "numbat",
                "up",
                "--data-dir",
                str(tmp_path / "data"),
                "--port",
                str(port),
                "--analyzer-port",
                str(analyzer),
                "--api-port",
                str(api),
                "--dashboard-port",
                str(dash),
            ],
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: "numbat is up." in out.read_text() or proc.poll() is not None, what="the banner"
        )
        assert f"tcp://127.0.0.1:{port}" in out.read_text(), out.read_text()
        assert f"http://127.0.0.1:{api}/api/v1/incidents" in out.read_text()
        assert f"dashboard at     http://127.0.0.1:{dash}/" in out.read_text()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for i in range(10):
                event = {"name": "web.requests", "value": i, "host": "h1", "route": "/a"}
                sock.sendall(json.dumps(event).encode() + b"\n")
            alert = {"name": "backup", "host": "h1", "status": "critical", "description": "no"}
            sock.sendall(json.dumps(alert).encode() + b"\n")
        wait_until(lambda: _incidents(api) == ["h1.backup"], 20.0, "the incident in the API")
        wait_until(lambda: _alerts_stored(tmp_path / "data"), 30.0, "numbat.alert stored")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()

    async def read() -> tuple[list[object], float | None]:
        store = SQLiteStore(tmp_path / "data" / "numbat.db")
        try:
            series = await store.series("web.requests")
            buckets = series and await store.query(
                "web.requests",
                {"route": "/a"},
                start=0,
                end=2**41,
                bucket=2**41,
                aggregate="count",
            )
            return list(series), buckets[0].value if buckets else None
        finally:
            await store.close()

    series, count = asyncio.run(read())
    assert len(series) == 1 and count == 10


def test_banner_never_shows_the_influx_password() -> None:
    """numbat up --influx http://user:pw@host prints the URL with the password masked."""
    banner = UpSettings(influx="http://admin:pw-51d0@127.0.0.1:8086").banner()
    assert "pw-51d0" not in banner
    assert "http://admin:***@127.0.0.1:8086" in banner


def test_banner_shows_commands_as_the_user_runs_numbat() -> None:
    """From a checkout the banner's example says ./dev/numbat, which is on no PATH."""
    assert "./dev/numbat emit deploy.done" in UpSettings().banner("./dev/numbat")
    assert "  numbat emit deploy.done" in UpSettings().banner()


def test_a_config_file_adds_to_up_and_keeps_its_own_settings(tmp_path: Path) -> None:
    """up -c: the file's outputs and sqlite retention stay, up adds what it lacks."""
    file: dict[str, Any] = {
        "collector": {
            "outputs": [
                {"type": "logfile", "path": str(tmp_path / "ev.jsonl")},
                {"type": "sqlite", "retention_days": 30},
            ],
            "stats_interval": 2.0,
        }
    }
    cfg = UpSettings(data_dir=tmp_path).config(file)
    assert [(o.type, getattr(o, "retention_days", None)) for o in cfg.collector.outputs] == [
        ("logfile", None),
        ("sqlite", 30.0),
        ("analyzer", None),
    ]
    assert cfg.collector.outputs[1].path == str(tmp_path / "numbat.db")  # up's, under --data-dir
    assert len(cfg.collector.listeners) == 3 and cfg.collector.stats_interval == 2.0
    assert file["collector"]["outputs"][1] == {
        "type": "sqlite",
        "retention_days": 30,
    }  # not changed


def test_options_given_on_the_command_line_override_the_file(tmp_path: Path) -> None:
    """--port replaces the file's tcp and udp listeners (its unix one stays); --influx
    and --data-dir set the file's influxdb output's urls and spool."""
    file = {
        "collector": {
            "listen": ["tcp://0.0.0.0:1", "unix:///tmp/a.sock"],
            "outputs": [{"type": "influxdb", "urls": ["http://old:8086"], "batch_size": 100}],
        }
    }
    settings = UpSettings(data_dir=tmp_path, port=4000, influx="http://new:8086")
    cfg = settings.config(file, given=["port", "influx", "data_dir"])
    assert [lc.uri for lc in cfg.collector.listeners] == [
        "tcp://127.0.0.1:4000",
        "udp://127.0.0.1:4000",
        "unix:///tmp/a.sock",
    ]
    output, _ = cfg.collector.outputs
    assert (output.urls, output.batch_size) == (["http://new:8086"], 100)
    assert output.spool_dir == str(tmp_path / "spool")
    without = settings.config(file)  # nothing given: the file wins
    assert [lc.uri for lc in without.collector.listeners] == [
        "tcp://0.0.0.0:1",
        "unix:///tmp/a.sock",
    ]


def test_up_with_a_bad_config_file_exits_2_naming_the_key(tmp_path: Path) -> None:
    """numbat up -c with an invalid file: exit 2, the file and key named, nothing started."""
    bad = tmp_path / "numbat.toml"
    bad.write_text('[[collector.outputs]]\ntype = "sqlite"\nretention_days = 0\n')
    result = subprocess.run(
        [sys.executable, "-m", "numbat", "up", "-c", str(bad), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert f"{bad}: collector.outputs[0].retention_days: must be positive" in result.stderr
    assert "numbat is up" not in result.stdout


def test_the_banner_tells_what_a_config_file_made_of_it(tmp_path: Path) -> None:
    """With -c the banner shows the file's listeners, retention and extra outputs."""
    file: dict[str, Any] = {
        "collector": {
            "listen": ["tcp://127.0.0.1:4377"],
            "outputs": [
                {"type": "sqlite", "retention_days": 30},
                {"type": "logfile", "path": str(tmp_path / "e.jsonl")},
            ],
        }
    }
    settings = UpSettings(data_dir=tmp_path)
    banner = settings.banner("numbat", settings.config(file))
    assert "send metrics to  tcp://127.0.0.1:4377\n" in banner
    assert "3333" not in banner and "socket:" not in banner
    assert f"the embedded store {tmp_path / 'numbat.db'} (30 days kept)" in banner
    assert "logfile (logfile)" in banner


def _incidents(port: int) -> list[str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/incidents", timeout=5) as r:
            return [i["id"] for i in json.loads(r.read())["incidents"]]
    except OSError:
        return []


def _alerts_stored(data: Path) -> bool:
    async def read() -> bool:
        store = SQLiteStore(data / "numbat.db")
        try:
            return bool(await store.series("numbat.alert"))
        finally:
            await store.close()

    return asyncio.run(read())


def test_up_takes_the_influx_url_from_numbat_influx(tmp_path: Path) -> None:
    """NUMBAT_INFLUX is read as --influx (a password then stays out of `ps`): a bad URL
    there is refused like one given with --influx, its password masked."""
    result = subprocess.run(
        [sys.executable, "-m", "numbat", "up", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "NUMBAT_INFLUX": "ftp://admin:pw-9e1f@127.0.0.1:8086"},
    )
    assert result.returncode == 2, result.stderr
    assert "urls[0]: expected http://host:port" in result.stderr
    assert "pw-9e1f" not in result.stderr + result.stdout


def test_up_runs_the_dashboard_beside_the_analyzer(tmp_path: Path) -> None:
    """The dashboard listens on --dashboard-port (3380 by default), reads the analyzer's
    API (with its token from the file) and is in the banner."""
    default = UpSettings(data_dir=tmp_path).config()
    assert (default.dashboard.listen, default.dashboard.analyzer) == (
        "http://127.0.0.1:3380",
        "http://127.0.0.1:3338",
    )
    file = {"analyzer": {"token": "s3cret-tok"}}
    settings = UpSettings(data_dir=tmp_path, dashboard_port=4380, api_port=4338)
    cfg = settings.config(file, given=["dashboard_port", "api_port"])
    assert cfg.dashboard.listen == "http://127.0.0.1:4380"
    assert (cfg.dashboard.analyzer, cfg.dashboard.analyzer_token) == (
        "http://127.0.0.1:4338",
        "s3cret-tok",
    )
    assert "dashboard at     http://127.0.0.1:4380/" in settings.banner("numbat", cfg)
