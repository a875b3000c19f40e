"""``workers = N``: several collector processes sharing their ports, under one supervisor."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.collector.conftest import (
    LOOPBACK,
    Daemon,
    line,
    read_jsonl,
    run_collector,
    start,
    toml,
)
from tests.collector.test_daemon import unix_send, wait_events
from tests.helpers import wait_until


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def _send_many(port: int, connections: int, per_connection: int) -> None:
    for c in range(connections):
        with socket.create_connection((LOOPBACK, port)) as sock:
            sock.sendall(b"".join(line(c * per_connection + i) for i in range(per_connection)))


def _config(short_dir: Path, port: int, **collector: object) -> str:
    listen = [f"tcp://{LOOPBACK}:{port}", f"unix://{short_dir / 'c.sock'}"]
    output = {"type": "logfile", "path": str(short_dir / "events.jsonl")}
    return toml(listen, [output], workers=2, stats_interval=0.2, **collector)


def test_two_workers_share_the_port_and_every_event_arrives_once(
    short_dir: Path, daemons: list[Daemon]
) -> None:
    """Connections spread over both workers; every event is written exactly once."""
    port = _free_port()
    daemon = start(daemons, short_dir, _config(short_dir, port))
    daemon.wait_log("collector listening on", count=2)
    # Each worker's lines name it: two alike lines are two workers, not one twice.
    assert "numbat-collector-0 numbat.collector.daemon: collector listening" in daemon.stderr()
    assert "numbat-collector-1 numbat.collector.daemon: collector listening" in daemon.stderr()
    _send_many(port, connections=32, per_connection=50)
    unix_send(short_dir / "c.sock", line(5000))
    seqs = wait_events(short_dir / "events.jsonl", 1601)
    assert sorted(seqs) == [*range(1600), 5000]
    log = short_dir / "events.jsonl"
    wait_until(
        lambda: (
            {e.get("worker") for e in read_jsonl(log) if e["name"] == "numbat.collector.received"}
            == {"0", "1"}
        ),
        what="both workers reporting received events",
    )
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.stderr()
    assert not (short_dir / "c.sock").exists()


def test_a_dead_worker_is_restarted(short_dir: Path, daemons: list[Daemon]) -> None:
    """kill -9 of a worker: the supervisor starts another, and events keep arriving."""
    port = _free_port()
    daemon = start(daemons, short_dir, _config(short_dir, port))
    daemon.wait_log("collector running with 2 workers")
    workers = _children(daemon.proc.pid)
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGKILL)
    daemon.wait_log("restarting it")
    wait_until(
        lambda: len(set(_children(daemon.proc.pid)) - {workers[1]}) == 2,
        what="a replacement worker",
    )
    daemon.wait_log("collector listening on", count=3)
    _send_many(port, connections=16, per_connection=10)
    assert sorted(wait_events(short_dir / "events.jsonl", 160)) == list(range(160))
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.stderr()


def test_a_worker_that_cannot_bind_stops_startup(short_dir: Path) -> None:
    """A port held by another process: exit 1 naming the worker and the URI."""
    with socket.socket() as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen(1)
        cfg = short_dir / "numbat.toml"
        cfg.write_text(_config(short_dir, busy.getsockname()[1]))
        result = run_collector(cfg)
    assert result.returncode == 1, result.stderr
    # Caught before any worker forks (a port held by another process, SO_REUSEPORT or not).
    assert "numbat: cannot listen on tcp://" in result.stderr
    assert "Traceback" not in result.stderr


def test_sighup_reaches_every_worker_and_a_bad_config_keeps_them(
    short_dir: Path, daemons: list[Daemon]
) -> None:
    """SIGHUP to the supervisor makes each worker reload; once the file no longer
    validates, SIGHUP is not forwarded and the workers keep running."""
    port = _free_port()
    daemon = start(daemons, short_dir, _config(short_dir, port))
    daemon.wait_log("collector running with 2 workers")
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("config reloaded", count=2)
    (short_dir / "numbat.toml").write_text("[collector]\nworkers = 0\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("config reload failed, keeping the running config")
    assert daemon.stderr().count("config reloaded") == 2
    _send_many(port, connections=4, per_connection=5)
    assert sorted(wait_events(short_dir / "events.jsonl", 20)) == list(range(20))
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.stderr()


def test_a_reload_that_breaks_in_a_plug_in_or_changes_workers_keeps_everything(
    short_dir: Path, daemons: list[Daemon]
) -> None:
    """SIGHUP with a plug-in that raises at import, then with a different workers count
    (and a sqlite output, valid for one process): the parent logs and keeps running, no
    worker reloads, and SIGTERM still stops them all."""
    port = _free_port()
    text = _config(short_dir, port)
    daemon = start(daemons, short_dir, text)
    daemon.wait_log("collector running with 2 workers")
    workers = _children(daemon.proc.pid)
    cfg = short_dir / "numbat.toml"
    cfg.write_text(text + '[[collector.outputs]]\ntype = "tests.plugins.boom_at_import:X"\n')
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("importing 'tests.plugins.boom_at_import:X' failed: RuntimeError")
    single = text.replace("workers = 2", "workers = 1")
    cfg.write_text(single + f'[[collector.outputs]]\ntype = "sqlite"\npath = "{short_dir}/n.db"\n')
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("collector.workers: changed from 2 to 1; restart the collector")
    assert "config reloaded" not in daemon.stderr()
    assert "Traceback" not in daemon.stderr()
    assert sorted(_children(daemon.proc.pid)) == sorted(workers)
    _send_many(port, connections=4, per_connection=5)
    assert sorted(wait_events(short_dir / "events.jsonl", 20)) == list(range(20))
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.stderr()
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM], ids=["tcp", "udp"])
def test_a_port_shared_by_another_collector_stops_startup(short_dir: Path, kind: int) -> None:
    """Another process holding the port with SO_REUSEPORT (as a second collector with
    workers would): exit 1 before any worker forks, rather than silently sharing it."""
    scheme = "tcp" if kind == socket.SOCK_STREAM else "udp"
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((LOOPBACK, 0))
        if kind == socket.SOCK_STREAM:
            holder.listen(1)
        cfg = short_dir / "numbat.toml"
        port = holder.getsockname()[1]
        cfg.write_text(toml([f"{scheme}://{LOOPBACK}:{port}"], [{"type": "null"}], workers=2))
        result = run_collector(cfg)
    assert result.returncode == 1, result.stderr
    assert f"numbat: cannot listen on {scheme}://" in result.stderr
    assert "collector listening on" not in result.stderr


def test_a_worker_that_cannot_start_an_output_is_a_config_error(short_dir: Path) -> None:
    """workers = 2 and a log file path that cannot be opened: exit 2 naming the file, the
    worker and the output's key, as without workers."""
    cfg = short_dir / "numbat.toml"
    cfg.write_text(
        toml(
            [f"tcp://{LOOPBACK}:{_free_port()}"],
            [{"type": "logfile", "path": "/proc/version/x.jsonl"}],
            workers=2,
        )
    )
    result = run_collector(cfg)
    assert result.returncode == 2, result.stderr
    assert f"numbat: {cfg}: worker 0: collector.outputs[0] (logfile): cannot start" in (
        result.stderr
    )
