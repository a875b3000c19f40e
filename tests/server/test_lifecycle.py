"""lifecycle.serve: signals in once, SIGHUP one at a time after start, SIGTERM drains."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from numbat.errors import NumbatError
from numbat.server.lifecycle import Daemon, serve


class Recorder(Daemon):
    """A daemon that records what the lifecycle asked of it, in order."""

    def __init__(self, start_gate: asyncio.Event | None = None, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.start_gate = start_gate
        self.fail = fail
        self.hanging_up = 0
        self.overlapped = False
        self.hangup_seen = asyncio.Event()

    async def start(self) -> None:
        self.calls.append("start")
        if self.start_gate is not None:
            await self.start_gate.wait()
        if self.fail:
            raise NumbatError("cannot bind")
        self.calls.append("started")

    async def stop(self, drain_timeout: float | None = None) -> bool:
        self.calls.append(f"stop:{drain_timeout}")
        return True

    async def hangup(self) -> None:
        self.hanging_up += 1
        self.overlapped |= self.hanging_up > 1
        self.calls.append("hangup")
        await asyncio.sleep(0.01)  # a reload takes a while: a second SIGHUP must wait
        self.hanging_up -= 1
        self.hangup_seen.set()


def _kill(sig: signal.Signals) -> None:
    os.kill(os.getpid(), sig)


def test_sighup_reloads_one_at_a_time_and_sigterm_drains() -> None:
    """Two SIGHUPs run the daemon's hangup twice, never at once; SIGTERM then shuts down."""
    before = signal.getsignal(signal.SIGTERM)

    async def main() -> tuple[bool, Recorder]:
        daemon = Recorder()

        async def drive() -> None:
            _kill(signal.SIGHUP)
            _kill(signal.SIGHUP)
            while daemon.calls.count("hangup") < 2 or daemon.hanging_up:
                await asyncio.sleep(0.005)
            _kill(signal.SIGTERM)

        tasks = []
        drained = await serve(daemon, ready=lambda: tasks.append(asyncio.ensure_future(drive())))
        await asyncio.gather(*tasks)
        return drained, daemon

    drained, daemon = asyncio.run(main())
    assert drained is True
    assert daemon.calls == ["start", "started", "hangup", "hangup", "stop:None"]
    assert not daemon.overlapped
    assert signal.getsignal(signal.SIGTERM) is before  # handlers removed again


def test_signals_during_start_wait_for_it_then_stop() -> None:
    """SIGHUP and SIGTERM while start() runs neither kill the process nor interrupt start:
    the daemon finishes starting, then stops without reloading."""

    async def main() -> Recorder:
        gate = asyncio.Event()
        daemon = Recorder(start_gate=gate)
        serving = asyncio.ensure_future(serve(daemon))
        while "start" not in daemon.calls:
            await asyncio.sleep(0.005)
        _kill(signal.SIGHUP)
        _kill(signal.SIGINT)
        await asyncio.sleep(0.05)  # give a wrongly early hangup its chance to run
        assert daemon.calls == ["start"]
        gate.set()
        assert await serving is True
        return daemon

    daemon = asyncio.run(main())
    assert daemon.calls == ["start", "started", "stop:None"]


def test_a_failed_start_raises_and_removes_the_handlers() -> None:
    """start() raising propagates out of serve, with no shutdown and the handlers gone."""
    before = signal.getsignal(signal.SIGHUP)
    daemon = Recorder(fail=True)
    with pytest.raises(NumbatError, match="cannot bind"):
        asyncio.run(serve(daemon))
    assert daemon.calls == ["start"]
    assert signal.getsignal(signal.SIGHUP) is before
