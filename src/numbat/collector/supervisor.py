"""Several collector processes on one host, sharing their ports (``workers = N``).

One Python process parses events on one core. With ``workers = N`` the collector
forks N worker processes; each binds the tcp, udp and ws listeners with
``SO_REUSEPORT`` (the kernel spreads connections and datagrams over them) and runs
every output itself. Unix-socket listeners cannot share a path, so worker 0 alone
serves them. The parent only supervises: it reports startup errors, forwards SIGTERM,
SIGINT and SIGHUP (after checking that the config file still validates), and restarts a
worker that dies.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from numbat.config import Config, load
from numbat.errors import ConfigError, NumbatError

log = logging.getLogger("numbat.collector")

RESTART_DELAY = 1.0


class WorkerError(NumbatError):
    """A worker could not start (its message says why, e.g. a port in use)."""


class Supervisor:
    """Starts, watches and stops the worker processes of one collector.

    Example::

        Supervisor(Path("numbat.toml"), numbat.config.load("numbat.toml")).run()
    """

    def __init__(self, path: Path, config: Config) -> None:
        self.path = path
        self.config = config
        self.workers: dict[int, BaseProcess] = {}
        self._ctx = multiprocessing.get_context("fork")
        self._stopping = False
        self._hup = False

    @property
    def count(self) -> int:
        return self.config.collector.workers

    def run(self) -> bool:
        """Run until SIGTERM/SIGINT; True when every worker drained and exited cleanly."""
        self._start_all()
        previous = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        try:
            while not self._stopping:
                self._watch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self._stop_all()

    def _start_all(self) -> None:
        pending = {index: self._spawn(index) for index in range(self.count)}
        failure = None
        for index, conn in pending.items():
            status, detail = _receive(conn, timeout=30.0)
            if status != "ready" and failure is None:
                failure = f"worker {index}: {detail}"
        if failure is not None:
            self._stop_all()
            raise WorkerError(failure)
        log.info("collector running with %d workers", self.count)

    def _spawn(self, index: int) -> Connection:
        parent, child = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=_worker_main,
            args=(self.path, index, child),
            name=f"numbat-collector-{index}",
        )
        proc.start()
        child.close()
        self.workers[index] = proc
        return parent

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGHUP:
            self._hup = True
        else:
            self._stopping = True

    def _watch(self) -> None:
        sentinels = {proc.sentinel: index for index, proc in self.workers.items()}
        for ready in wait(list(sentinels), timeout=0.5):
            index = sentinels[ready]  # type: ignore[index]
            if not self._stopping:
                self._restart(index)
        if self._hup:
            self._hup = False
            self._reload()

    def _restart(self, index: int) -> None:
        code = self.workers[index].exitcode
        log.error("worker %d exited with %s; restarting it in %.0fs", index, code, RESTART_DELAY)
        time.sleep(RESTART_DELAY)
        conn = self._spawn(index)
        status, detail = _receive(conn, timeout=30.0)
        if status != "ready":
            log.error("worker %d failed to restart: %s", index, detail)

    def _reload(self) -> None:
        try:
            config = load(self.path)
        except ConfigError as exc:
            log.error("config reload failed, keeping the running config: %s", exc)
            return
        if config.collector.workers != self.count:
            log.warning("collector.workers changed: restart the collector to apply it")
        self._signal_all(signal.SIGHUP)

    def _stop_all(self) -> bool:
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.config.collector.drain_timeout + 10
        clean = True
        for proc in self.workers.values():
            proc.join(max(deadline - time.monotonic(), 0))
            if proc.is_alive():
                proc.kill()
                proc.join()
            clean = clean and proc.exitcode == 0
        return clean

    def _signal_all(self, sig: int) -> None:
        for proc in self.workers.values():
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, sig)


def _receive(conn: Connection, timeout: float) -> tuple[str, str]:
    try:
        if conn.poll(timeout):
            status, detail = conn.recv()
            return str(status), str(detail)
    except EOFError:
        pass
    finally:
        conn.close()
    return "error", "exited before it was ready"


def _worker_main(path: Path, index: int, conn: Connection) -> None:
    """A worker process: run one Collector, report readiness or the startup error."""
    from numbat._loop import run
    from numbat.collector.daemon import Collector, ListenError

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    try:
        config = load(path)
        collector = Collector(config, worker=index)
        drained = run(
            collector.run(
                reload=lambda: load(path), ready=lambda: conn.send(("ready", os.getpid()))
            )
        )
    except (ConfigError, ListenError) as exc:
        conn.send(("error", str(exc)))
        os._exit(1)
    os._exit(0 if drained else 3)
