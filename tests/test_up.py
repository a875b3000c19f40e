"""``numbat up``: collector and embedded store on one machine, from one command."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

from numbat.store.sqlite import SQLiteStore
from numbat.up import UpSettings
from tests.helpers import wait_until


def test_config_uses_the_embedded_store_by_default(tmp_path: Path) -> None:
    """Without --influx the only output is SQLite in the data dir; listeners on 3333."""
    cfg = UpSettings(data_dir=tmp_path).config()
    assert [lc.uri for lc in cfg.collector.listeners] == [
        "tcp://127.0.0.1:3333",
        "udp://127.0.0.1:3333",
        f"unix://{tmp_path.absolute() / 'collector.sock'}",
    ]
    (output,) = cfg.collector.outputs
    assert (output.type, output.path) == ("sqlite", str(tmp_path / "numbat.db"))


def test_config_with_influx_spools_in_the_data_dir(tmp_path: Path) -> None:
    """--influx switches storage to InfluxDB, spooling under the data dir."""
    cfg = UpSettings(data_dir=tmp_path, influx="http://127.0.0.1:8086", database="ops").config()
    (output,) = cfg.collector.outputs
    assert output.type == "influxdb"
    assert (output.urls, output.database) == (["http://127.0.0.1:8086"], "ops")
    assert output.spool_dir == str(tmp_path / "spool")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_up_receives_and_stores_events(tmp_path: Path) -> None:
    """numbat up prints where to send, stores what arrives, and stops cleanly on SIGINT."""
    port = _free_port()
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
            ],
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: "numbat is up." in out.read_text() or proc.poll() is not None, what="the banner"
        )
        assert f"tcp://127.0.0.1:{port}" in out.read_text(), out.read_text()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for i in range(10):
                event = {"name": "web.requests", "value": i, "host": "h1", "route": "/a"}
                sock.sendall(json.dumps(event).encode() + b"\n")
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
