"""Supervisor(target) runs any daemon's worker processes: no collector involved here."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from numbat.errors import ConfigError, NumbatError
from numbat.server.supervisor import Supervisor, WorkerError
from tests.helpers import wait_until


def _target(workdir: Path) -> Callable[[int, Callable[[], None]], bool]:
    """A worker that notes its pid and each SIGHUP in files, and ends on SIGTERM."""

    def run(worker: int, ready: Callable[[], None]) -> bool:
        stop = threading.Event()
        hups = workdir / f"hup-{worker}-{os.getpid()}"
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGHUP, lambda *_: hups.write_text(hups.read_text() + "x"))
        hups.write_text("")
        ready()
        # After ready(): a test that kills a worker it found must not catch it starting.
        (workdir / f"pid-{worker}").write_text(str(os.getpid()))
        while not stop.wait(0.02):
            pass
        return True

    return run


def _hups(workdir: Path) -> list[str]:
    return sorted(p.read_text() for p in workdir.glob("hup-*"))


def _in_background(steps: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=steps, daemon=True)
    thread.start()
    return thread


def test_workers_start_get_sighup_after_check_and_stop_cleanly(tmp_path: Path) -> None:
    """Two workers start; SIGHUP reaches both only while check() passes; SIGTERM ends all."""
    allowed = threading.Event()
    allowed.set()

    def check() -> None:
        if not allowed.is_set():
            raise ConfigError("numbat.toml: bad")

    def steps() -> None:
        wait_until(lambda: len(list(tmp_path.glob("pid-*"))) == 2, what="two workers")
        os.kill(os.getpid(), signal.SIGHUP)
        wait_until(lambda: _hups(tmp_path) == ["x", "x"], what="SIGHUP in both workers")
        allowed.clear()
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.6)  # more than one watch turn (0.5 s): a wrong forward would land
        assert _hups(tmp_path) == ["x", "x"]
        os.kill(os.getpid(), signal.SIGTERM)

    thread = _in_background(steps)
    supervisor = Supervisor(_target(tmp_path), workers=2, name="echo", check=check)
    assert supervisor.run() is True
    thread.join(5)
    assert all(not proc.is_alive() for proc in supervisor.processes.values())


def test_a_worker_killed_is_restarted(tmp_path: Path) -> None:
    """kill -9 of a worker: the supervisor starts another in its place."""

    def steps() -> None:
        wait_until((tmp_path / "pid-1").exists, what="worker 1")
        first = int((tmp_path / "pid-1").read_text())
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: int((tmp_path / "pid-1").read_text()) != first, what="a new worker 1")
        os.kill(os.getpid(), signal.SIGTERM)

    thread = _in_background(steps)
    supervisor = Supervisor(_target(tmp_path), workers=2, name="echo", restart_delay=0.05)
    assert supervisor.run() is True
    thread.join(5)


def test_a_worker_that_fails_to_start_is_a_worker_error() -> None:
    """A NumbatError before ready() stops startup with the worker's message."""

    def target(worker: int, ready: Callable[[], None]) -> bool:
        if worker == 1:
            raise NumbatError("cannot listen on tcp://127.0.0.1:1: in use")
        ready()
        signal.sigwait([signal.SIGTERM])
        return True

    with pytest.raises(WorkerError, match=r"worker 1: cannot listen on tcp://127\.0\.0\.1:1"):
        Supervisor(target, workers=2, name="echo").run()
