"""Run the original Node numbat programs as live peers for interop tests and benchmarks.

:func:`node_collector` starts ``numbat-collector`` (``bin/run-server.js``) listening on
tcp, udp or a unix socket, with its ``log`` output writing every received event as a
bole JSON line into a temporary file, and yields a :class:`NodeCollector` whose
``events()`` parses those lines.

The Node packages live in ``tests/interop/node/node_modules``; install them with
``npm ci --prefix tests/interop/node`` (CI does this).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from tests.helpers import wait_until

Listener = Literal["tcp", "udp", "unix"]

NODE_DIR: Final = Path(__file__).resolve().parent / "node"
NODE_MODULES: Final = NODE_DIR / "node_modules"
COLLECTOR_BIN: Final = NODE_MODULES / "numbat-collector" / "bin" / "run-server.js"
EMITTER_PACKAGE: Final = NODE_MODULES / "numbat-emitter"

START_TIMEOUT: Final = 15.0
START_ATTEMPTS: Final = 3


class NodePeersMissingError(RuntimeError):
    """The Node packages (or node itself) are not installed."""


def require_node_modules() -> Path:
    """Return the ``node_modules`` directory, or raise a clear error saying how to install it."""
    missing = [p for p in (COLLECTOR_BIN, EMITTER_PACKAGE / "index.js") if not p.is_file()]
    if missing:
        raise NodePeersMissingError(
            f"the original Node numbat packages are not installed ({missing[0]} is missing); "
            "run `npm ci --prefix tests/interop/node` from the repository root"
        )
    if shutil.which("node") is None:
        raise NodePeersMissingError("`node` is not on PATH; the interop tests need Node.js 18+")
    return NODE_MODULES


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A loopback port that was free a moment ago (the caller retries if it is taken)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _is_number(val: Any) -> bool:
    return isinstance(val, int | float) and not isinstance(val, bool)


@dataclass
class NodeCollector:
    """A running Node numbat-collector; ``uri`` is what an emitter should send to."""

    kind: Listener
    uri: str
    log_path: Path
    stderr_path: Path
    process: subprocess.Popen[bytes]

    def log_lines(self) -> list[dict[str, Any]]:
        """Every complete JSON line of the log file (collector messages and events)."""
        try:
            text = self.log_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        lines: list[dict[str, Any]] = []
        # A line still being written has no newline yet: leave it for the next read.
        for line in text.split("\n")[:-1]:
            if line.strip():
                lines.append(json.loads(line))
        return lines

    def events(self) -> list[dict[str, Any]]:
        """The received events: the log lines whose ``time`` is a number (the event's own)."""
        return [line for line in self.log_lines() if _is_number(line.get("time"))]

    def wait_for_events(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` events were logged; return them all."""
        wait_until(
            lambda: len(self.events()) >= count or self.process.poll() is not None,
            timeout,
            f"the Node collector to log {count} events (it logged {len(self.events())})",
        )
        self._check_alive()
        return self.events()

    def wait_listening(self) -> bool:
        """Wait until the collector logs "now listening" or exits; True if it listens."""
        wait_until(
            lambda: self.listening() or self.process.poll() is not None,
            START_TIMEOUT,
            f"the Node collector to listen on {self.kind}",
        )
        return self.listening() and self.process.poll() is None

    def listening(self) -> bool:
        return any("now listening" in str(line.get("message", "")) for line in self.log_lines())

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise AssertionError(
                f"the Node collector exited with status {code}; stderr:\n{self.stderr()}"
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _config(kind: Listener, workdir: Path, port: int) -> tuple[str, dict[str, Any]]:
    """The destination uri and the ``listen`` section for one listener kind."""
    if kind == "tcp":
        return f"tcp://127.0.0.1:{port}", {"host": "127.0.0.1", "port": port}
    if kind == "udp":
        return f"udp://127.0.0.1:{port}", {"host": "127.0.0.1", "port": port, "udp": True}
    if kind == "unix":
        path = workdir / "collector.sock"
        return f"unix://{path}", {"path": str(path)}
    raise ValueError(f"unknown listener kind {kind!r}; use tcp, udp or unix")


def _start(
    kind: Listener, workdir: Path, attempt: int, outputs: list[dict[str, Any]]
) -> NodeCollector:
    port = free_port(socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
    uri, listen = _config(kind, workdir, port)
    log_path = workdir / f"events-{attempt}.log"
    stderr_path = workdir / f"stderr-{attempt}.txt"
    config = {
        "logging": {"name": "interop", "silent": True},
        "listen": listen,
        "outputs": [{"type": "log", "name": "interop", "path": str(log_path)}, *outputs],
    }
    config_path = workdir / f"collector-{attempt}.js"
    # JSON is valid JavaScript: the config module is a JSON literal.
    config_path.write_text(f"module.exports = {json.dumps(config, indent=2)};\n")
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            ["node", str(COLLECTOR_BIN), str(config_path)],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "NODE_ENV": "production"},
        )
    return NodeCollector(kind, uri, log_path, stderr_path, process)


@contextmanager
def node_collector(
    kind: Listener = "tcp", outputs: list[dict[str, Any]] | None = None
) -> Iterator[NodeCollector]:
    """Start the Node collector listening on ``kind``; yield it once it is listening.

    ``outputs``: more outputs beside its log, as its config takes them (e.g.
    ``{"type": "analyzer", "host": "127.0.0.1", "port": 3337}``).

    The port is a free loopback port (retried if another process takes it first); the
    unix socket, config and log live in a fresh temporary directory. The process is
    killed and the directory removed at exit.
    """
    require_node_modules()
    # Our own short directory: unix socket paths are limited to about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="numbat-node-") as tmp:
        workdir = Path(tmp)
        collector: NodeCollector | None = None
        try:
            for attempt in range(START_ATTEMPTS):
                collector = _start(kind, workdir, attempt, outputs or [])
                if collector.wait_listening():
                    break
                # Exited before listening: most likely the port was taken meanwhile.
                if attempt == START_ATTEMPTS - 1 or "EADDRINUSE" not in collector.stderr():
                    collector._check_alive()
            assert collector is not None
            yield collector
        finally:
            if collector is not None:
                collector.stop()
