"""The original Node numbat programs sending to our collector.

* numbat-emitter@5.2.4 (driven by ``emit-events.js``) sends over tcp, udp, a unix
  socket and ws; every event must arrive, once and intact, at a logfile output.
* numbat-collector@1.1.0 with its ``analyzer`` output (NDJSON over TCP) delivers to our
  collector's tcp listener, as it would to the original analyzer.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from numbat.event import now_ms
from tests.collector.conftest import address, config, read_jsonl, running, until
from tests.interop.nodepeers import (
    COLLECTOR_BIN,
    START_ATTEMPTS,
    NodeCollector,
    free_port,
    require_node_modules,
)

SCRIPT: Final = Path(__file__).resolve().parent / "emit-events.js"
HOST: Final = socket.gethostname()
COUNT: Final = 500
# A burst of datagrams must fit the receive buffer an unprivileged collector gets
# (net.core.rmem_max, often 208 KiB); udp has no flow control to slow the sender.
UDP_COUNT: Final = 200
TOKEN: Final = "interop-token"


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short temporary directory: unix socket paths are limited to ~100 bytes."""
    with tempfile.TemporaryDirectory(prefix="nbi-") as tmp:
        yield Path(tmp)


async def node_emit(uri: str, count: int, run: str) -> None:
    """Run emit-events.js: the Node emitter sends ``count`` events to ``uri``."""
    require_node_modules()
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPT),
        uri,
        str(count),
        run,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")
    assert json.loads(out) == {"sent": count, "discarded": 0}


def arrived(log: Path, run: str) -> list[dict[str, Any]]:
    return [e for e in read_jsonl(log) if e.get("run") == run]


def check_events(events: list[dict[str, Any]], count: int, before: int, after: int) -> None:
    """Every event once, in the order sent, with every field the Node emitter set."""
    assert [e["seq"] for e in events] == list(range(count))
    for event in events:
        seq = event["seq"]
        assert event["name"] == "interop.event"
        assert event["value"] == seq / 2
        assert event["host"] == HOST
        assert event["node"] == "n1"
        assert isinstance(event["time"], int) and before <= event["time"] <= after, event
        assert set(event) == {"name", "seq", "run", "value", "host", "node", "time"}


@pytest.mark.parametrize("kind", ["tcp", "udp", "unix", "ws"])
def test_node_emitter_reaches_our_collector(kind: str, workdir: Path) -> None:
    """numbat-emitter@5.2.4 over tcp/udp/unix/ws: every event lands in our logfile, intact."""
    log = workdir / "events.jsonl"
    count = UDP_COUNT if kind == "udp" else COUNT
    run = uuid.uuid4().hex
    listen: dict[str, Any] = {
        "tcp": {"uri": "tcp://127.0.0.1:0"},
        "udp": {"uri": "udp://127.0.0.1:0"},
        "unix": {"uri": f"unix://{workdir / 'c.sock'}"},
        "ws": {"uri": "ws://127.0.0.1:0/numbat", "token": TOKEN},
    }[kind]

    async def main() -> None:
        cfg = config([listen], [{"type": "logfile", "path": str(log)}])
        async with running(cfg) as collector:
            if kind == "unix":
                uri = f"socket:{workdir / 'c.sock'}"  # the Node emitter's spelling
            else:
                host, port = address(collector, kind)[:2]
                uri = f"{kind}://{host}:{port}"
                if kind == "ws":
                    uri += f"/numbat?key={TOKEN}"
            before = now_ms()
            await node_emit(uri, count, run)
            after = now_ms()
            await until(lambda: len(arrived(log, run)) >= count, 20, f"{count} events")
            label = listen["uri"]
            assert collector.stats.get("received", listener=label) == count
            assert collector.stats.sum("rejected") == 0
            assert collector.stats.sum("refused") == 0
        check_events(arrived(log, run), count, before, after)

    asyncio.run(main())


def start_node_collector(workdir: Path, analyzer_port: int) -> NodeCollector:
    """The Node numbat-collector on a free tcp port, with an analyzer output to our port.

    Its ``log`` output is there only to say when it listens (as in nodepeers).
    """
    require_node_modules()
    for attempt in range(START_ATTEMPTS):
        port = free_port()
        log_path = workdir / f"node-{attempt}.log"
        stderr_path = workdir / f"node-stderr-{attempt}.txt"
        node_config = {
            "logging": {"name": "interop", "silent": True},
            "listen": {"host": "127.0.0.1", "port": port},
            "outputs": [
                {"type": "analyzer", "host": "127.0.0.1", "port": analyzer_port},
                {"type": "log", "name": "interop", "path": str(log_path)},
            ],
        }
        config_path = workdir / f"node-collector-{attempt}.js"
        config_path.write_text(f"module.exports = {json.dumps(node_config, indent=2)};\n")
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                ["node", str(COLLECTOR_BIN), str(config_path)],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env={**os.environ, "NODE_ENV": "production"},
            )
        node = NodeCollector("tcp", f"tcp://127.0.0.1:{port}", log_path, stderr_path, process)
        if node.wait_listening():
            return node
        node.stop()
        if "EADDRINUSE" not in node.stderr():
            break
    raise AssertionError(f"the Node collector did not start; stderr:\n{node.stderr()}")


def test_node_collector_analyzer_output_reaches_our_tcp_listener(workdir: Path) -> None:
    """numbat-collector@1.1.0's analyzer output (NDJSON over TCP) feeds our collector."""
    log = workdir / "events.jsonl"
    run = uuid.uuid4().hex

    async def main() -> None:
        cfg = config(["tcp://127.0.0.1:0"], [{"type": "logfile", "path": str(log)}])
        async with running(cfg) as collector:
            port = address(collector, "tcp")[1]
            node = await asyncio.to_thread(start_node_collector, workdir, port)
            try:
                before = now_ms()
                await node_emit(node.uri, COUNT, run)
                after = now_ms()
                await until(lambda: len(arrived(log, run)) >= COUNT, 20, f"{COUNT} events")
                assert node.process.poll() is None, node.stderr()
            finally:
                await asyncio.to_thread(node.stop)
            assert collector.stats.get("received", listener="tcp://127.0.0.1:0") == COUNT
            assert collector.stats.sum("rejected") == 0
        check_events(arrived(log, run), COUNT, before, after)

    asyncio.run(main())
