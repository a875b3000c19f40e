"""Several worker processes of one daemon, sharing its ports (``workers = N``).

One Python process parses on one core. :class:`Supervisor` forks N workers, each running
the daemon's ``target`` (which binds its listeners with ``SO_REUSEPORT``, so the kernel
spreads connections and datagrams over them), after uvicorn's ``Multiprocess``. The
parent only supervises: it reports startup errors, forwards SIGTERM, SIGINT and SIGHUP
(SIGHUP only once ``check`` passes, e.g. the config file still validates), and restarts
a worker that dies.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from numbat.errors import ConfigError, NumbatError

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0
READY_TIMEOUT = 30.0
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

Target = Callable[[int, Callable[[], None]], bool]
"""``target(worker, ready) -> drained``: run the daemon in worker process ``worker``
(0..N-1); call ``ready()`` once it listens; return True if it drained cleanly. Raising
a :class:`~numbat.errors.NumbatError` before ``ready()`` is a startup failure."""


class WorkerError(NumbatError):
    """A worker could not start (its message says why, e.g. a port in use)."""


class WorkerConfigError(WorkerError, ConfigError):
    """A worker could not start because of its config (an output path it cannot open):
    a config error, so the CLI exits 2 as for one found before the workers started."""


class Supervisor:
    """Starts, watches and stops the worker processes of one daemon.

    ``check`` runs in the parent on SIGHUP before the signal is forwarded; raising a
    NumbatError there (a config that no longer validates) keeps the workers as they are.

    Example::

        def target(worker: int, ready: Callable[[], None]) -> bool:
            return numbat._loop.run(serve(Collector(load(path), worker=worker), ready))

        drained = Supervisor(target, workers=2, name="collector").run()
    """

    def __init__(
        self,
        target: Target,
        *,
        workers: int,
        name: str,
        check: Callable[[], None] | None = None,
        stop_timeout: float = 20.0,
        restart_delay: float = RESTART_DELAY,
    ) -> None:
        self.target = target
        self.count = workers
        self.name = name
        self.check = check
        self.stop_timeout = stop_timeout
        self.restart_delay = restart_delay
        self.processes: dict[int, BaseProcess] = {}
        self._ctx = multiprocessing.get_context("fork")
        self._stopping = False
        self._hup = False

    def run(self) -> bool:
        """Run until SIGTERM/SIGINT; True when every worker drained and exited cleanly.

        Raises :class:`WorkerError` if a worker fails to start (the others are stopped).
        """
        previous = {sig: signal.signal(sig, self._on_signal) for sig in FORWARDED}
        try:
            self._start_all()
            while not self._stopping:
                self._watch()
        except BaseException:
            self._stop_all()  # never leave orphaned workers serving behind a dead parent
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self._stop_all()

    def _start_all(self) -> None:
        pending = {index: self._spawn(index) for index in range(self.count)}
        failure: WorkerError | None = None
        for index, conn in pending.items():
            status, detail = _receive(conn, timeout=READY_TIMEOUT)
            if status != "ready" and failure is None:
                kind = WorkerConfigError if status == "config" else WorkerError
                failure = kind(f"worker {index}: {detail}")
        if failure is not None:
            self._stop_all()
            raise failure
        log.info("%s running with %d workers", self.name, self.count)

    def _spawn(self, index: int) -> Connection:
        parent, child = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=_worker_main,
            args=(self.target, index, child),
            name=f"numbat-{self.name}-{index}",
        )
        proc.start()
        child.close()
        self.processes[index] = proc
        return parent

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGHUP:
            self._hup = True
        else:
            self._stopping = True

    def _watch(self) -> None:
        sentinels = {proc.sentinel: index for index, proc in self.processes.items()}
        for ready in wait(list(sentinels), timeout=0.5):
            index = sentinels[ready]  # type: ignore[index]
            if not self._stopping:
                self._restart(index)
        if self._hup:
            self._hup = False
            self._reload()

    def _restart(self, index: int) -> None:
        code = self.processes[index].exitcode
        log.error(
            "worker %d exited with %s; restarting it in %.0fs", index, code, self.restart_delay
        )
        time.sleep(self.restart_delay)
        status, detail = _receive(self._spawn(index), timeout=READY_TIMEOUT)
        if status != "ready":
            log.error("worker %d failed to restart: %s", index, detail)

    def _reload(self) -> None:
        if self.check is not None:
            try:
                self.check()
            except Exception as exc:  # whatever the check hits, the parent keeps running
                why = str(exc) if isinstance(exc, NumbatError) else f"{type(exc).__name__}: {exc}"
                log.error("config reload failed, keeping the running config: %s", why)
                return
        self.signal_all(signal.SIGHUP)

    def _stop_all(self) -> bool:
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        clean = True
        for proc in self.processes.values():
            proc.join(max(deadline - time.monotonic(), 0))
            if proc.is_alive():
                proc.kill()
                proc.join()
            clean = clean and proc.exitcode == 0
        return clean

    def signal_all(self, sig: int) -> None:
        """Send ``sig`` to every live worker."""
        for proc in self.processes.values():
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


def _worker_main(target: Target, index: int, conn: Connection) -> None:
    """A worker process: run ``target``, report readiness or the startup error."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # Until the daemon's own handler is in, a SIGHUP (a reload, a logrotate) must not
    # end the process, as its default action would.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        drained = target(index, lambda: conn.send(("ready", os.getpid())))
    except NumbatError as exc:
        conn.send(("config" if isinstance(exc, ConfigError) else "error", str(exc)))
        os._exit(1)
    except Exception as exc:  # reported as a message; the traceback stays in the worker
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    os._exit(0 if drained else 3)
