"""The collector daemon: start/stop, self-monitoring, reload, and the CLI's signals and exits.

In-process tests drive :class:`Collector` with ``asyncio.run``; the subprocess tests run
``python -m numbat collector -c FILE`` and signal it as an init system or logrotate would.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import socket
import sys
import termios
from pathlib import Path
from typing import Any

import pytest

from numbat.collector.daemon import Collector, ReloadError
from numbat.collector.outputs import Batch, Output
from numbat.config import OutputConfig
from numbat.server.listeners import ListenError
from tests.collector.conftest import (
    LOOPBACK,
    MEMORY,
    SELF_PREFIX,
    Daemon,
    address,
    config,
    line,
    memory,
    read_jsonl,
    run_collector,
    running,
    seqs,
    start,
    started,
    toml,
    until,
)
from tests.collector.test_fanout import GateOutput
from tests.collector.test_listeners import send, tcp_connect, udp_send
from tests.helpers import wait_until

SLOW = "tests.collector.test_daemon:SlowFileOutput"
GATE = "tests.collector.test_fanout:GateOutput"
TCP = f"tcp://{LOOPBACK}:0"


class SlowFileOptions(OutputConfig, kw_only=True):
    path: str
    delay: float = 1.0


class SlowFileOutput(Output):
    """A test-only output that waits ``delay`` seconds before appending each batch to a file."""

    Options = SlowFileOptions
    options: SlowFileOptions

    async def write(self, batch: Batch) -> None:
        await asyncio.sleep(self.options.delay)
        with open(self.options.path, "ab") as fh:
            fh.write(batch.ndjson)


# ---------------------------------------------------------------- in-process


def test_start_binds_every_listener_and_stop_closes_them(short_dir: Path) -> None:
    """start() binds tcp, udp, unix and ws; stop() drains, closes outputs and frees the ports."""
    sock_path = short_dir / "d.sock"

    async def main() -> None:
        cfg = config([TCP, f"udp://{LOOPBACK}:0", f"unix://{sock_path}", f"ws://{LOOPBACK}:0/"])
        collector = Collector(cfg, hostname="test-host")
        async with started(collector):
            tcp_addr = address(collector, "tcp")
            assert sorted(uri.split(":")[0] for uri in collector.listeners) == [
                "tcp",
                "udp",
                "unix",
                "ws",
            ]
            sock = await tcp_connect(tcp_addr)
            await send(sock, line(0))
            sock.close()
            mem = memory(collector)
            await until(lambda: len(mem.traffic()) == 1, what="an event")
            assert await collector.stop() is True
            assert mem.closed
            assert not collector.listeners and not collector.queues
            assert not sock_path.exists()
            with pytest.raises(ConnectionRefusedError):
                await tcp_connect(tcp_addr)
            # The last self-monitoring report went out before the outputs closed.
            assert [e["value"] for e in mem.own("received")] == [1]

    asyncio.run(main())


def test_bind_failure_undoes_the_start() -> None:
    """A port in use: start() raises ListenError naming the URI and leaves nothing running."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen(1)
        uri = "tcp://{}:{}".format(*busy.getsockname())

        async def main() -> None:
            collector = Collector(config([TCP, uri]))
            with pytest.raises(ListenError, match=f"cannot listen on {uri}: .*in use"):
                await collector.start()
            assert not collector.listeners and not collector.queues

        asyncio.run(main())


def test_self_monitoring_events_reach_a_logfile(tmp_path: Path) -> None:
    """Every stats_interval the collector reports received/rejected/written/queued/heartbeat."""
    log = tmp_path / "events.jsonl"

    async def main() -> None:
        outputs = [{"type": "logfile", "path": str(log)}]
        cfg = config([TCP, f"udp://{LOOPBACK}:0"], outputs, stats_interval=0.1)
        async with running(cfg) as collector:
            tcp_uri, udp_uri = list(collector.listeners)
            sock = await tcp_connect(address(collector, "tcp"))
            await send(sock, line(0) + line(1) + b"junk\n" + b"[]\n" + line(2))
            sock.close()
            await udp_send(address(collector, "udp"), line(3), b"nope")

            def named(metric: str) -> list[dict[str, Any]]:
                return [e for e in read_jsonl(log) if e["name"] == f"numbat.collector.{metric}"]

            await until(lambda: len(named("heartbeat")) >= 3, what="3 heartbeats")
            await until(
                lambda: sum(e["value"] for e in named("received")) == 4, what="received reports"
            )
            received = {e["listener"]: 0 for e in named("received")}
            for e in named("received"):
                received[e["listener"]] += e["value"]
            assert received == {tcp_uri: 3, udp_uri: 1}
            rejects = {(e["listener"], e["reason"]): e["value"] for e in named("rejected")}
            assert rejects == {
                (tcp_uri, "bad_json"): 1,
                (tcp_uri, "not_object"): 1,
                (udp_uri, "bad_json"): 1,
            }
            for heartbeat in named("heartbeat"):
                assert heartbeat["ttl"] == 250  # spans two reports of 0.1 s
                assert heartbeat["host"] == "test-host"
                assert heartbeat["value"] == 1
            assert all(e["output"] == "logfile" for e in named("output.queued"))
            assert len(named("output.queued")) >= 3
            # Counters are deltas: written covers the events and the earlier reports.
            assert sum(e["value"] for e in named("written")) >= 4
            times = [e["time"] for e in named("heartbeat")]
            assert times == sorted(times) and len(set(times)) == len(times)

    asyncio.run(main())


def test_self_monitoring_reports_drops_per_output() -> None:
    """A full output queue shows up as numbat.collector.dropped with its output and reason."""

    async def main() -> None:
        outputs: list[dict[str, Any]] = [
            {"type": MEMORY, "name": "mem"},
            {"type": GATE, "name": "gate", "queue_size": 10},
        ]
        cfg = config([TCP], outputs, stats_interval=0.1)
        async with running(cfg) as collector:
            sock = await tcp_connect(address(collector, "tcp"))
            await send(sock, b"".join(line(i) for i in range(50)))
            sock.close()
            mem = memory(collector)
            await until(lambda: len(mem.traffic()) == 50, what="50 events")
            await until(
                lambda: sum(int(e["value"]) for e in mem.own("dropped")) == 40,
                what="40 drops reported",
            )
            drops = {(e["output"], e["reason"]) for e in mem.own("dropped")}
            assert drops == {("gate", "queue_full")}
            await until(
                lambda: any(
                    e["output"] == "gate" and e["value"] == 10 for e in mem.own("output.queued")
                ),
                what="the gate's queue depth",
            )
            gate = collector.queues["gate"].output
            assert isinstance(gate, GateOutput)
            gate.gate.set()

    asyncio.run(main())


def test_reload_keeps_queued_events_and_applies_changes() -> None:
    """reload(): a new output starts, a kept one keeps its queue, listeners follow the config."""

    async def main() -> None:
        gate_out = {"type": GATE, "name": "gate"}
        first = config([TCP], [gate_out])
        async with running(first) as collector:
            old_tcp = address(collector, "tcp")
            sock = await tcp_connect(old_tcp)
            await send(sock, b"".join(line(i) for i in range(20)))
            sock.close()
            queue = collector.queues["gate"]
            await until(lambda: queue.queued == 20, what="20 events queued")
            gate = queue.output
            assert isinstance(gate, GateOutput)

            second = config([f"udp://{LOOPBACK}:0"], [gate_out, {"type": MEMORY, "name": "mem"}])
            await collector.reload(second)
            assert collector.queues["gate"] is queue and queue.output is gate
            assert queue.queued == 20
            assert list(collector.listeners) == [f"udp://{LOOPBACK}:0"]
            with pytest.raises(ConnectionRefusedError):
                await tcp_connect(old_tcp)
            await udp_send(address(collector, "udp"), line(20))
            mem = memory(collector)
            await until(lambda: len(mem.traffic()) == 1, what="the new output's first event")
            assert seqs(mem.traffic()) == [20]
            gate.gate.set()
            await until(lambda: queue.queued == 0, what="the gate to drain")
            assert seqs([e for batch in gate.batches for e in batch]) == list(range(21))

    asyncio.run(main())


def test_reload_with_changed_options_replaces_the_output_but_not_its_queue(
    tmp_path: Path,
) -> None:
    """A logfile whose path changes is reopened at the new path; nothing queued is lost."""

    async def main() -> None:
        old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
        cfg = config([TCP], [{"type": "logfile", "name": "log", "path": str(old)}])
        async with running(cfg) as collector:
            addr = address(collector, "tcp")
            sock = await tcp_connect(addr)
            await send(sock, line(0))
            await until(lambda: len(read_jsonl(old)) == 1, what="the first event")
            await collector.reload(
                config([TCP], [{"type": "logfile", "name": "log", "path": str(new)}])
            )
            await send(sock, line(1))
            sock.close()
            await until(lambda: len(read_jsonl(new)) == 1, what="an event at the new path")
            assert seqs(read_jsonl(old)) == [0] and seqs(read_jsonl(new)) == [1]
            assert address(collector, "tcp") == addr  # unchanged listener kept its socket

    asyncio.run(main())


# ---------------------------------------------------------------- the CLI daemon


def unix_send(path: Path, data: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        sock.sendall(data)


def traffic(path: Path) -> list[int]:
    """The seq of every event in a logfile, the collector's own events left out."""
    return seqs([e for e in read_jsonl(path) if not e["name"].startswith("numbat.collector.")])


def wait_events(path: Path, count: int, what: str = "") -> list[int]:
    wait_until(lambda: len(traffic(path)) >= count, 15, what or f"{count} events in {path.name}")
    return traffic(path)


def events(start: int, stop: int) -> bytes:
    return b"".join(line(i) for i in range(start, stop))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_after_draining_the_queues(
    sig: int, short_dir: Path, daemons: list[Daemon]
) -> None:
    """SIGTERM/SIGINT: stop accepting, write out every queued event, exit 0."""
    sock = short_dir / "c.sock"
    seen, slow = short_dir / "seen.jsonl", short_dir / "slow.jsonl"
    daemon = start(
        daemons,
        short_dir,
        toml(
            [f"unix://{sock}"],
            [
                {"type": "logfile", "name": "seen", "path": str(seen)},
                {"type": SLOW, "name": "slow", "path": str(slow), "delay": 1.5},
            ],
            stats_interval=60,
        ),
    )
    unix_send(sock, events(0, 200))
    wait_events(seen, 200)
    assert traffic(slow) == []  # still queued (or mid-write) in the slow output
    daemon.signal(sig)
    assert daemon.wait() == 0, daemon.stderr()
    assert traffic(slow) == list(range(200))
    assert "stopping: draining outputs" in daemon.stderr()
    assert "stopped before every queued event" not in daemon.stderr()
    assert not sock.exists()


def test_drain_timeout_bounds_the_stop(short_dir: Path, daemons: list[Daemon]) -> None:
    """An output that cannot finish within drain_timeout does not hold the exit: 0, and said."""
    sock = short_dir / "c.sock"
    seen, slow = short_dir / "seen.jsonl", short_dir / "slow.jsonl"
    daemon = start(
        daemons,
        short_dir,
        toml(
            [f"unix://{sock}"],
            [
                {"type": "logfile", "name": "seen", "path": str(seen)},
                {"type": SLOW, "name": "slow", "path": str(slow), "delay": 60.0},
            ],
            drain_timeout=0.3,
        ),
    )
    unix_send(sock, events(0, 10))
    wait_events(seen, 10)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=10) == 0, daemon.stderr()
    assert "stopped before every queued event was written" in daemon.stderr()
    assert traffic(slow) == []


def test_sighup_reopens_a_rotated_logfile(short_dir: Path, daemons: list[Daemon]) -> None:
    """logrotate: after a rename and SIGHUP, new events go to a fresh file at the path."""
    sock = short_dir / "c.sock"
    log = short_dir / "events.jsonl"
    rotated = short_dir / "events.jsonl.1"
    daemon = start(
        daemons,
        short_dir,
        toml([f"unix://{sock}"], [{"type": "logfile", "path": str(log)}], stats_interval=60),
    )
    unix_send(sock, events(0, 10))
    wait_events(log, 10)
    log.rename(rotated)
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("config reloaded")
    unix_send(sock, events(10, 20))
    assert wait_events(log, 10) == list(range(10, 20))
    assert traffic(rotated) == list(range(10))
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.stderr()


def test_sighup_reload_adds_an_output_and_keeps_queued_events(
    short_dir: Path, daemons: list[Daemon]
) -> None:
    """SIGHUP with a new output in the file: it starts; events queued elsewhere survive."""
    sock = short_dir / "c.sock"
    seen, slow, added = (short_dir / f"{n}.jsonl" for n in ("seen", "slow", "added"))
    outputs: list[dict[str, Any]] = [
        {"type": "logfile", "name": "seen", "path": str(seen)},
        {"type": SLOW, "name": "slow", "path": str(slow), "delay": 1.0},
    ]
    daemon = start(daemons, short_dir, toml([f"unix://{sock}"], outputs, stats_interval=60))
    unix_send(sock, events(0, 50))
    wait_events(seen, 50)  # 0-49 now in the slow output's write...
    unix_send(sock, events(50, 100))
    wait_events(seen, 100)  # ... and 50-99 in its queue behind them
    outputs.append({"type": "logfile", "name": "added", "path": str(added)})
    (short_dir / "numbat.toml").write_text(toml([f"unix://{sock}"], outputs, stats_interval=60))
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("config reloaded")
    assert traffic(slow) == []  # the reload happened while all 100 were pending
    unix_send(sock, events(100, 150))
    assert wait_events(added, 50) == list(range(100, 150))
    assert wait_events(slow, 150) == list(range(150))
    assert traffic(seen) == list(range(150))
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.stderr()


def test_bad_config_on_reload_keeps_the_running_one(short_dir: Path, daemons: list[Daemon]) -> None:
    """SIGHUP with an invalid file, or an unbindable new listener: logged, still serving."""
    sock = short_dir / "c.sock"
    log = short_dir / "events.jsonl"
    cfg_path = short_dir / "numbat.toml"
    good = toml([f"unix://{sock}"], [{"type": "logfile", "path": str(log)}])
    daemon = start(daemons, short_dir, good)
    unix_send(sock, events(0, 5))
    wait_events(log, 5)

    cfg_path.write_text(good.replace("[collector]", '[collector]\nqueue_size = "lots"'))
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("config reload failed, keeping the running config")
    assert "collector.queue_size: expected an integer, got a string" in daemon.stderr()
    cfg_path.write_text("[collector\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("config reload failed, keeping the running config", count=2)
    unix_send(sock, events(5, 10))
    assert wait_events(log, 10) == list(range(10))

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen(1)
        taken = "tcp://{}:{}".format(*busy.getsockname())
        cfg_path.write_text(
            toml([f"unix://{sock}", taken], [{"type": "logfile", "path": str(log)}])
        )
        daemon.signal(signal.SIGHUP)
        daemon.wait_log(f"config reload: cannot listen on {taken}")
    unix_send(sock, events(10, 15))
    assert wait_events(log, 15) == list(range(15))
    assert daemon.proc.poll() is None
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.stderr()


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM], ids=["tcp", "udp"])
def test_port_in_use_exits_1_with_a_clear_message(kind: socket.SocketKind, short_dir: Path) -> None:
    """A tcp or udp port another process holds: exit 1 naming the URI; nothing left behind."""
    sock_path = short_dir / "first.sock"
    with socket.socket(socket.AF_INET, kind) as busy:
        busy.bind((LOOPBACK, 0))
        if kind == socket.SOCK_STREAM:
            busy.listen(1)
        scheme = "tcp" if kind == socket.SOCK_STREAM else "udp"
        uri = "{}://{}:{}".format(scheme, *busy.getsockname())
        cfg = short_dir / "numbat.toml"
        log = short_dir / "events.jsonl"
        cfg.write_text(toml([f"unix://{sock_path}", uri], [{"type": "logfile", "path": str(log)}]))
        result = run_collector(cfg)
    assert result.returncode == 1, result.stderr
    assert f"numbat: cannot listen on {uri}: " in result.stderr
    assert "address already in use" in result.stderr.lower()
    assert "Traceback" not in result.stderr
    assert not sock_path.exists()  # the listener that did start was undone


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[collector]\nmax_line_bytes = 0\n", "collector.max_line_bytes: must be positive"),
        ("[collector]\nlistn = []\n", "collector.listn: unknown key"),
        ('[collector]\nlisten = ["ftp://h:1"]\n', "collector.listen[0].uri: unsupported"),
        (
            '[[collector.outputs]]\ntype = "logfile"\n',
            "collector.outputs[0].path: required",
        ),
        (
            '[collector]\nlisten = [{uri = "tcp://127.0.0.1:1", token = "x"}]\n',
            "collector.listen[0].token: only ws:// listeners take a token",
        ),
        ("[collector\n", "not valid TOML"),
    ],
    ids=["out-of-range", "unknown-key", "bad-listener", "missing-path", "misplaced-token", "toml"],
)
def test_bad_config_exits_2_naming_the_key(body: str, message: str, tmp_path: Path) -> None:
    """An invalid config file: exit 2 before listening, and the message names the key."""
    cfg = tmp_path / "numbat.toml"
    cfg.write_text(body)
    result = run_collector(cfg)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert str(cfg) in result.stderr
    assert "listening" not in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    """A config path that does not exist: exit 2 saying it cannot be read."""
    missing = tmp_path / "nope.toml"
    result = run_collector(missing)
    assert result.returncode == 2
    assert f"{missing}: cannot read" in result.stderr


def test_reload_with_an_output_that_cannot_start_changes_nothing() -> None:
    """A new output whose start() fails: the reload is refused whole (counted), the new
    listener is not bound, the old one and the old outputs run on, and the failed
    output leaves no gauges behind."""

    async def main() -> None:
        async with running(config([TCP])) as collector:
            broken = {"type": "tests.plugins.broken:NoStartOutput", "name": "broken"}
            second = config([f"udp://{LOOPBACK}:0"], [{"type": MEMORY, "name": "mem"}, broken])
            with pytest.raises(
                ReloadError, match=r"collector.outputs\[1\] \(broken\): cannot start: Permission"
            ):
                await collector.reload(second)
            assert list(collector.queues) == ["mem"]
            assert list(collector.listeners) == [TCP]
            assert collector.stats.get("reload_failed") == 1
            report = collector.stats.report(1.0)
            assert not [e for e in report if e.get("output") == "broken"]
            sock = await tcp_connect(address(collector, "tcp"))
            await send(sock, line(0))
            sock.close()
            await until(lambda: len(memory(collector).traffic()) == 1, what="the event")

    asyncio.run(main())


def test_an_output_that_cannot_start_stops_startup_with_a_message(tmp_path: Path) -> None:
    """numbat collector: an output that fails to start is a config error: exit 2 naming
    the file and the output's key, no traceback, and nothing stays bound."""
    cfg = tmp_path / "numbat.toml"
    cfg.write_text(toml([f"tcp://{LOOPBACK}:0"], [{"type": "tests.plugins.broken:NoStartOutput"}]))
    result = run_collector(cfg)
    assert result.returncode == 2, result.stderr
    message = f"numbat: {cfg}: collector.outputs[0] (nostartoutput): cannot start: PermissionError"
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_failing_stats_reader_leaves_the_heartbeat_and_the_rest() -> None:
    """An output whose stats() raises: the collector still reports (heartbeat included),
    counts stats_errors, and stops cleanly."""

    async def main() -> None:
        outputs = [{"type": MEMORY, "name": "mem"}, {"type": "tests.plugins.broken:BadStatsOutput"}]
        collector = Collector(config([TCP], outputs, stats_interval=0.05), hostname="h")
        async with started(collector):
            mem = memory(collector)
            await until(lambda: len(mem.own("heartbeat")) >= 2, what="two heartbeats")
            await until(lambda: bool(mem.own("stats_errors")), what="stats_errors counted")
            assert await collector.stop() is True

    asyncio.run(main())


def _free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def test_sigterm_reads_what_clients_already_sent(short_dir: Path, daemons: list[Daemon]) -> None:
    """100,000 events written and the connection closed, SIGTERM at once: every event
    the kernel had received is read, written out, and the exit is 0."""
    port = _free_tcp_port()
    log = short_dir / "events.jsonl"
    daemon = start(
        daemons,
        short_dir,
        toml([f"tcp://{LOOPBACK}:{port}"], [{"type": "logfile", "path": str(log)}]),
    )
    total = 100_000
    payload = events(0, total)
    with socket.create_connection((LOOPBACK, port)) as sock:
        sock.sendall(payload)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(60) == 0, daemon.stderr()
    assert traffic(log) == list(range(total))


def test_the_final_report_counts_what_shutdown_could_not_write() -> None:
    """Events a stuck output still held at stop are counted dropped (shutdown) in the last
    report, which the other outputs receive before they close."""

    async def main() -> None:
        outputs = [{"type": GATE, "name": "gate"}, {"type": MEMORY, "name": "mem"}]
        collector = Collector(config([TCP], outputs), hostname="h")
        async with started(collector):
            mem = memory(collector)
            gate = collector.queues["gate"].output
            assert isinstance(gate, GateOutput)
            for first in (0, 10, 20):  # three batches: one stuck in a write, two waiting
                sock = await tcp_connect(address(collector, "tcp"))
                await send(sock, events(first, first + 10))
                sock.close()
                want = first + 10
                await until(lambda: len(mem.traffic()) == want, what="the batch")  # noqa: B023
            assert await collector.stop(drain_timeout=0.2) is False
            shutdown = [e for e in mem.own("dropped") if e.get("reason") == "shutdown"]
            assert [(e["output"], e["value"]) for e in shutdown] == [("gate", 20)]
            # The write in progress (10), and the report queued behind it, are cut after
            # the report: counted and logged, not reported.
            report = [e for e in mem.events if str(e["name"]).startswith(SELF_PREFIX)]
            dropped = collector.stats.get("dropped", output="gate", reason="shutdown")
            assert dropped == 30 + len(report)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '[collector]\nlisten = []\n[[collector.outputs]]\ntype = "null"\n',
            "collector.listen: empty",
        ),
        (f'[collector]\nlisten = ["tcp://{LOOPBACK}:0"]\n', "collector.outputs: none"),
        (
            f'[collector]\nlisten = ["tcp://{LOOPBACK}:0"]\n'
            '[[collector.outputs]]\ntype = "sqlite"\npath = "/proc/numbat/n.db"\n',
            "collector.outputs[0] (sqlite): cannot start:",
        ),
        (
            f'[collector]\nlisten = ["tcp://{LOOPBACK}:0"]\n'
            '[[collector.outputs]]\ntype = "logfile"\npath = "/proc/version/x.jsonl"\n',
            "collector.outputs[0] (logfile): cannot start:",
        ),
    ],
    ids=["no-listener", "no-output", "sqlite-path", "logfile-path"],
)
def test_a_collector_that_could_not_do_its_job_does_not_start(
    tmp_path: Path, body: str, message: str
) -> None:
    """No listener, no output, or a store path that cannot be opened: exit 2 with the
    file and key named, before anything is served (never a silent start)."""
    cfg = tmp_path / "numbat.toml"
    cfg.write_text(body)
    result = run_collector(cfg)
    assert result.returncode == 2, result.stderr
    assert f"numbat: {cfg}: {message}" in result.stderr
    assert "Traceback" not in result.stderr and "listening on" not in result.stderr


def test_a_reload_to_a_taken_port_keeps_the_old_listener() -> None:
    """Moving the listener to a port another process holds: the reload fails, is counted
    (reload_failed), and the old listener still takes events (never left deaf)."""
    with socket.socket() as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen(1)
        taken = f"tcp://{LOOPBACK}:{busy.getsockname()[1]}"

        async def main() -> None:
            async with running(config([TCP])) as collector:
                old = address(collector, "tcp")
                with pytest.raises(ReloadError, match="cannot listen on"):
                    await collector.reload(config([taken]))
                assert list(collector.listeners) == [TCP]
                assert collector.stats.get("reload_failed") == 1
                sock = await tcp_connect(old)
                await send(sock, line(0))
                sock.close()
                await until(lambda: len(memory(collector).traffic()) == 1, what="the event")

        asyncio.run(main())


def test_the_collector_raises_its_open_file_limit_to_the_hard_one(
    short_dir: Path, daemons: list[Daemon]
) -> None:
    """A daemon runs out of connections at its own caps, not at a soft limit of 1024."""
    log = short_dir / "events.jsonl"
    daemon = start(daemons, short_dir, toml([TCP], [{"type": "logfile", "path": str(log)}]))
    limits = Path(f"/proc/{daemon.proc.pid}/limits").read_text()
    (row,) = [r for r in limits.splitlines() if r.startswith("Max open files")]
    soft, hard = row.split()[3:5]
    assert soft == hard, row
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_an_output_removed_by_a_reload_gets_nothing_new_while_it_drains() -> None:
    """Removing a stuck output: events from the moment of the reload go to the new
    config's outputs only; what the removed one still held is dropped as 'removed'."""

    async def main() -> None:
        outputs = [{"type": GATE, "name": "gate"}, {"type": MEMORY, "name": "mem"}]
        collector = Collector(config([TCP], outputs, drain_timeout=0.5), hostname="h")
        async with started(collector):
            mem = memory(collector)
            gate_queue = collector.queues["gate"]
            for first in (0, 10):
                sock = await tcp_connect(address(collector, "tcp"))
                await send(sock, events(first, first + 10))
                sock.close()
                want = first + 10
                await until(lambda: len(mem.traffic()) == want, what="the batch")  # noqa: B023
            reload = asyncio.ensure_future(
                collector.reload(
                    config([TCP], [{"type": MEMORY, "name": "mem"}], drain_timeout=0.5)
                )
            )
            await until(lambda: "gate" not in collector.queues, what="gate out of the fan-out")
            sock = await tcp_connect(address(collector, "tcp"))
            await send(sock, events(20, 25))
            sock.close()
            await until(lambda: len(mem.traffic()) == 25, what="the events after the reload")
            assert gate_queue.queued == 20  # nothing new reached the removed output
            await reload
            assert collector.stats.get("dropped", output="gate", reason="removed") == 20

    asyncio.run(main())


def test_sigterm_exits_although_an_output_is_stuck_in_a_write(
    short_dir: Path, daemons: list[Daemon]
) -> None:
    """A logfile output whose write never returns (a pipe nobody reads, as a stalled NFS
    mount): SIGTERM still ends the process within drain_timeout plus a few seconds,
    saying what it left behind."""
    fifo = short_dir / "stalled.pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # opened, never read
    try:
        port = _free_tcp_port()
        daemon = start(
            daemons,
            short_dir,
            toml(
                [f"tcp://{LOOPBACK}:{port}"],
                [{"type": "logfile", "path": str(fifo)}],
                drain_timeout=1,
            ),
        )
        with socket.create_connection((LOOPBACK, port)) as sock:
            sock.sendall(events(0, 20_000))  # ~1 MB: far more than a pipe holds
        wait_until(lambda: _pipe_bytes(reader) >= 65_536, 15, "the pipe full")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(30) == 0, daemon.stderr()
        assert "stuck in I/O" in daemon.stderr()
    finally:
        os.close(reader)


def _pipe_bytes(fd: int) -> int:
    """Bytes waiting in a pipe (FIONREAD)."""
    out = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int.from_bytes(out, sys.byteorder)


@pytest.mark.parametrize("kind", ["logfile", "sqlite"])
def test_a_store_path_under_a_regular_file_is_named_at_start(tmp_path: Path, kind: str) -> None:
    """A logfile or sqlite path under a regular file: the collector exits 2 saying which
    file is not a directory (mkdir said only "File exists")."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = tmp_path / "numbat.toml"
    cfg.write_text(
        f'[collector]\nlisten = ["tcp://{LOOPBACK}:0"]\n'
        f'[[collector.outputs]]\ntype = "{kind}"\npath = "{blocker}/sub/x.jsonl"\n'
    )
    result = run_collector(cfg)
    assert result.returncode == 2, result.stderr
    assert f"{blocker}/sub/x.jsonl: {blocker} is not a directory" in result.stderr
    assert "Traceback" not in result.stderr and "File exists" not in result.stderr
