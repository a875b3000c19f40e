"""Shared helpers for collector tests: an in-memory output, configs, running collectors.

Every collector here listens on loopback port 0; :func:`address` reads back the port
the kernel chose. Tests run the collector with ``asyncio.run`` and wait for what they
expect with :func:`until` (an async ``wait_until``) rather than sleeping.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest

from numbat.collector.daemon import Collector
from numbat.collector.outputs import Batch, Output
from numbat.config import Config, OutputConfig, from_dict
from numbat.event import Event
from numbat.server import ProcessContext
from numbat.server.listeners import Listener
from numbat.server.listeners.stream import StreamListener, StreamProtocol
from numbat.server.listeners.udp import UDPListener
from numbat.server.listeners.ws import WebSocketListener
from tests.helpers import wait_until

LOOPBACK = "127.0.0.1"
MEMORY = "tests.collector.conftest:MemoryOutput"
SELF_PREFIX = "numbat.collector."


class MemoryOutput(Output):
    """A test-only output that keeps every event it is given, in order."""

    # Declared although it is the default: numbat.config rejects ``Options = None``.
    Options = OutputConfig

    def __init__(self, options: OutputConfig, *, context: ProcessContext | None = None) -> None:
        super().__init__(options, context=context)
        self.events: list[Event] = []
        self.batches = 0
        self.closed = False

    async def write(self, batch: Batch) -> None:
        self.batches += 1
        self.events.extend(batch.events)

    async def close(self) -> None:
        self.closed = True

    def traffic(self) -> list[Event]:
        """The events that are not the collector's own self-monitoring."""
        return [e for e in self.events if not str(e["name"]).startswith(SELF_PREFIX)]

    def own(self, metric: str) -> list[Event]:
        """The collector's own events named ``numbat.collector.<metric>``."""
        return [e for e in self.events if e["name"] == SELF_PREFIX + metric]


def config(
    listen: list[Any],
    outputs: list[dict[str, Any]] | None = None,
    **collector: Any,
) -> Config:
    """A validated config; by default one memory output named ``mem``."""
    if outputs is None:
        outputs = [{"type": MEMORY, "name": "mem"}]
    return from_dict({"collector": {"listen": listen, "outputs": outputs, **collector}})


@asynccontextmanager
async def running(cfg: Config) -> AsyncIterator[Collector]:
    """A started collector, stopped (with a short drain) on exit."""
    collector = Collector(cfg, hostname="test-host")
    await collector.start()
    try:
        yield collector
    finally:
        await collector.stop(drain_timeout=5)


@asynccontextmanager
async def started(collector: Collector) -> AsyncIterator[Collector]:
    """Start ``collector``; on the way out stop it (again: stopping twice is harmless), so a
    failing assertion never leaks its sockets and tasks into the next test."""
    await collector.start()
    try:
        yield collector
    finally:
        await collector.stop(drain_timeout=0)


def memory(collector: Collector, label: str = "mem") -> MemoryOutput:
    return cast(MemoryOutput, collector.queues[label].output)


def listener(collector: Collector, scheme: str) -> Listener:
    """The collector's only listener of ``scheme``."""
    (found,) = [lis for uri, lis in collector.listeners.items() if uri.startswith(scheme + ":")]
    return found


def address(collector: Collector, scheme: str) -> Any:
    """The bound address of the collector's ``scheme`` listener: (host, port) or a path."""
    lis = listener(collector, scheme)
    if isinstance(lis, StreamListener):
        assert lis.server is not None
        return lis.server.sockets[0].getsockname()
    if isinstance(lis, UDPListener):
        assert lis._transport is not None
        return lis._transport.get_extra_info("sockname")
    assert isinstance(lis, WebSocketListener) and lis._server is not None
    return next(iter(lis._server.sockets)).getsockname()


def connections(collector: Collector, scheme: str) -> list[StreamProtocol]:
    lis = listener(collector, scheme)
    assert isinstance(lis, StreamListener)
    return list(lis.connections)


def rejected(collector: Collector, reason: str, scheme: str = "tcp") -> int:
    return collector.stats.get(
        "rejected", listener=listener(collector, scheme).label, reason=reason
    )


def refused(collector: Collector, reason: str, scheme: str = "tcp") -> int:
    return collector.stats.get("refused", listener=listener(collector, scheme).label, reason=reason)


def received(collector: Collector, scheme: str = "tcp") -> int:
    return collector.stats.get("received", listener=listener(collector, scheme).label)


async def until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Yield to the loop until ``predicate`` holds; fail with ``what`` if it never does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(0.005)


def line(seq: int, **fields: Any) -> bytes:
    """One valid event as an NDJSON line; ``seq`` orders it."""
    return json.dumps({"name": "t.ev", "seq": seq, "time": 1000 + seq, **fields}).encode() + b"\n"


def seqs(events: list[Event], **match: Any) -> list[Any]:
    """The ``seq`` of every event whose fields include ``match``, in arrival order."""
    return [e["seq"] for e in events if "seq" in e and all(e.get(k) == v for k, v in match.items())]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a JSON-lines file (a line being written is left out)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(raw) for raw in text.split("\n")[:-1] if raw]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: unix socket paths are limited to ~100 bytes."""
    path = Path(tempfile.mkdtemp(prefix="nbt-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


ROOT = Path(__file__).resolve().parents[2]


def toml(listen: list[str], outputs: list[dict[str, Any]], **collector: Any) -> str:
    """A numbat.toml with a [collector] section (values: str, int, float, list of str)."""
    out = ["[collector]", f"listen = {json.dumps(listen)}"]
    out += [f"{key} = {json.dumps(val)}" for key, val in collector.items()]
    for output in outputs:
        out.append("[[collector.outputs]]")
        out += [f"{key} = {json.dumps(val)}" for key, val in output.items()]
    return "\n".join(out) + "\n"


def run_collector(config_path: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m numbat collector -c FILE`` run to its end (a startup that must fail)."""
    return subprocess.run(
        [sys.executable, "-m", "numbat", "collector", "-c", str(config_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Daemon:
    """``python -m numbat collector -c FILE`` in a subprocess, its stderr in a file."""

    def __init__(self, config_path: Path, workdir: Path) -> None:
        self.stderr_path = workdir / "stderr.txt"
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "numbat", "collector", "-c", str(config_path)],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def wait_log(self, text: str, count: int = 1, timeout: float = 15.0) -> None:
        wait_until(
            lambda: self.stderr().count(text) >= count or self.proc.poll() is not None,
            timeout,
            f"{text!r} in the collector's log",
        )
        assert self.stderr().count(text) >= count, self.stderr()

    def signal(self, sig: int) -> None:
        assert self.proc.poll() is None, self.stderr()
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def start(daemons: list[Daemon], workdir: Path, text: str) -> Daemon:
    """Write the config, start the daemon and wait until it listens."""
    path = workdir / "numbat.toml"
    path.write_text(text)
    daemon = Daemon(path, workdir)
    daemons.append(daemon)
    daemon.wait_log("collector listening on")
    return daemon
