"""A daemon's lifecycle: start, serve until told to stop, reload on SIGHUP, drain, stop.

:func:`serve` runs any :class:`Daemon` (the collector, and next the analyzer and the
dashboard) the way uvicorn's ``Server.serve`` runs an app: the signal handlers go in
once, before the daemon binds anything (a signal during startup must not kill the
process), and come out once, before the drain (so a second SIGTERM or Ctrl-C during a
long drain ends the process at once, as people expect).

* SIGTERM, SIGINT: stop accepting, drain (the daemon's ``shutdown``), return.
* SIGHUP: the daemon's ``hangup`` (reopen files, reload config), one at a time, never
  before ``start`` has finished; a failed reload is the daemon's to log.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Daemon(ABC):
    """What :func:`serve` runs.

    Example::

        class Echo(Daemon):
            async def start(self) -> None: ...      # bind, or raise having undone it all
            async def stop(self, drain_timeout: float | None = None) -> bool: ...

        drained = numbat._loop.run(serve(Echo(), ready=lambda: print("up")))
    """

    @abstractmethod
    async def start(self) -> None:
        """Bind and begin; on failure undo what started and raise (a NumbatError)."""

    @abstractmethod
    async def stop(self, drain_timeout: float | None = None) -> bool:
        """Stop accepting, drain within ``drain_timeout`` seconds (None: the daemon's
        own setting), close; True if everything accepted was delivered."""

    async def hangup(self) -> None:
        """SIGHUP: reopen log files, reload the config. Must not raise: log instead."""

    async def shutdown(self) -> bool:
        """SIGTERM/SIGINT: :meth:`stop` with the daemon's own drain timeout."""
        return await self.stop()


class Together(Daemon):
    """Several daemons in one process (``numbat up``): started in order, stopped in
    reverse order (so the first ones, the downstream ones, still take what the later
    ones drain into them); SIGHUP goes to each. A start that fails stops those already
    started.

    >>> Together([]).daemons
    []
    """

    def __init__(self, daemons: list[Daemon]) -> None:
        self.daemons = daemons

    async def start(self) -> None:
        started: list[Daemon] = []
        try:
            for daemon in self.daemons:
                await daemon.start()
                started.append(daemon)
        except BaseException:
            for daemon in reversed(started):
                await daemon.stop(0.0)
            raise

    async def stop(self, drain_timeout: float | None = None) -> bool:
        results = [await daemon.stop(drain_timeout) for daemon in reversed(self.daemons)]
        return all(results)

    async def hangup(self) -> None:
        for daemon in self.daemons:
            await daemon.hangup()

    async def shutdown(self) -> bool:
        results = [await daemon.shutdown() for daemon in reversed(self.daemons)]
        return all(results)


async def serve(daemon: Daemon, ready: Callable[[], None] | None = None) -> bool:
    """Run ``daemon`` until SIGTERM or SIGINT; the result of its ``shutdown``.

    ``ready`` is called once ``start`` has returned (everything is bound). Raises what
    ``start`` raises, with the signal handlers removed again.
    """
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    started = asyncio.Event()
    hangups = _Hangups(daemon, started)
    handlers = {signal.SIGHUP: hangups.request} | {sig: stopping.set for sig in STOP_SIGNALS}
    with _signal_handlers(loop, handlers):
        await daemon.start()
        started.set()
        if ready is not None:
            ready()
        await stopping.wait()
        await hangups.cancel()
    return await daemon.shutdown()


class _Hangups:
    """SIGHUPs run one after another, each only once the daemon has started."""

    def __init__(self, daemon: Daemon, started: asyncio.Event) -> None:
        self._daemon = daemon
        self._started = started
        self._lock = asyncio.Lock()
        # The loop holds tasks weakly: keep a reference, or a reload may vanish.
        self._tasks: set[asyncio.Task[None]] = set()

    def request(self) -> None:
        task = asyncio.get_running_loop().create_task(self._run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        await self._started.wait()
        async with self._lock:
            await self._daemon.hangup()

    async def cancel(self) -> None:
        """Stopping: a reload must not add listeners to a daemon that is draining."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.contextmanager
def _signal_handlers(
    loop: asyncio.AbstractEventLoop, handlers: dict[signal.Signals, Callable[[], None]]
) -> Iterator[None]:
    previous = {sig: signal.getsignal(sig) for sig in handlers}
    for sig, handler in handlers.items():
        loop.add_signal_handler(sig, handler)
    try:
        yield
    finally:
        for sig, before in previous.items():
            loop.remove_signal_handler(sig)
            # What was there before, not the default: a caller that ignores SIGHUP
            # (the CLI does) keeps ignoring it while the daemon drains.
            signal.signal(sig, before)
