"""The collector daemon's lifecycle: start, report on itself, reload, drain and stop.

SIGTERM/SIGINT stop accepting, drain the output queues (up to ``drain_timeout``) and
end the run. SIGHUP reopens log files and reloads the config file: listeners and
outputs whose settings changed are replaced, the queues of outputs that stay keep
their events, and a config that fails validation leaves the running one in place.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from numbat.collector.fanout import Fanout, OutputWorker
from numbat.collector.listeners import Listener, listener_class
from numbat.collector.outputs import Output, output_class
from numbat.collector.stats import Stats
from numbat.config import CollectorConfig, Config, ListenerConfig, OutputConfig
from numbat.errors import ConfigError, NumbatError

log = logging.getLogger("numbat.collector")


class ListenError(NumbatError):
    """A listener could not bind its address (in use, no permission, bad path)."""


class Collector:
    """Receives events on its listeners and fans them out to its outputs.

    Example::

        config = numbat.config.load("numbat.toml")
        asyncio.run(Collector(config).run(reload=lambda: numbat.config.load("numbat.toml")))
    """

    def __init__(self, config: Config, *, hostname: str | None = None, worker: int = 0) -> None:
        self.config: CollectorConfig = config.collector
        self.worker = worker
        tags = {"worker": str(worker)} if self.config.workers > 1 else {}
        self.stats = Stats(hostname or socket.gethostname(), tags=tags)
        self.fanout = Fanout()
        self.listeners: dict[str, Listener] = {}
        self._reporter: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def workers(self) -> dict[str, OutputWorker]:
        return self.fanout.workers

    async def start(self) -> None:
        """Start outputs, then listeners; on a bind failure undo everything and raise."""
        self._stopping = asyncio.Event()
        for output in self.config.outputs:
            await self._add_output(output)
        try:
            for listener in self.config.listeners:
                await self._add_listener(listener)
        except ListenError:
            await self.stop(drain_timeout=0)
            raise
        self._start_reporter()
        log.info("collector listening on %s", ", ".join(self.listeners) or "nothing")

    async def stop(self, drain_timeout: float | None = None) -> bool:
        """Stop accepting, drain outputs within the timeout, close; True if all drained."""
        if self._reporter is not None:
            self._reporter.cancel()
        for listener in list(self.listeners.values()):
            await listener.stop()
        self.listeners.clear()
        self.fanout.submit(self.stats.report(self.config.stats_interval))
        await asyncio.sleep(0)  # let the fan-out hand the last batch to the queues
        timeout = self.config.drain_timeout if drain_timeout is None else drain_timeout
        workers = list(self.workers.values())
        drained = all(await asyncio.gather(*(w.drain(timeout) for w in workers)))
        await asyncio.gather(*(w.stop() for w in workers))
        self.workers.clear()
        return drained

    def request_stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    def reopen(self) -> None:
        """SIGHUP, part one: outputs reopen their files (logrotate)."""
        for worker in self.workers.values():
            worker.output.reopen()

    async def reload(self, config: Config) -> None:
        """Apply a new config; queued events of outputs that remain are kept."""
        new = config.collector
        restart_all = _globals(new) != _globals(self.config)
        if new.stats_interval != self.config.stats_interval:
            self._start_reporter(new.stats_interval)
        self.config = new
        await self._reload_outputs(new)
        wanted = {lc.uri: lc for lc in new.listeners if self._serves(lc)}
        for uri, listener in list(self.listeners.items()):
            if restart_all or wanted.get(uri) != listener.config:
                await listener.stop()
                del self.listeners[uri]
        # Listeners that fail to bind are reported; the others, old and new, keep running.
        errors = []
        for uri, lc in wanted.items():
            if uri not in self.listeners:
                try:
                    await self._add_listener(lc)
                except ListenError as exc:
                    errors.append(str(exc))
        if errors:
            raise ListenError("; ".join(errors))
        log.info("config reloaded")

    async def run(
        self, reload: Callable[[], Config] | None = None, ready: Callable[[], None] | None = None
    ) -> bool:
        """Run until SIGTERM/SIGINT; SIGHUP reopens files and, given ``reload``, reloads.

        ``ready`` is called once every listener is bound.
        """
        loop = asyncio.get_running_loop()
        stop_early = asyncio.Event()
        # Handlers go in before binding: a signal during startup must not kill the process.
        loop.add_signal_handler(signal.SIGTERM, stop_early.set)
        loop.add_signal_handler(signal.SIGINT, stop_early.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._on_hup(reload)))
        try:
            await self.start()
            assert self._stopping is not None
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
            if stop_early.is_set():
                self.request_stop()
            if ready is not None:
                ready()
            await self._stopping.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        log.info("stopping: draining outputs for up to %ss", self.config.drain_timeout)
        return await self.stop()

    async def _on_hup(self, reload: Callable[[], Config] | None) -> None:
        self.reopen()
        if reload is None:
            return
        try:
            config = reload()
        except ConfigError as exc:
            log.error("config reload failed, keeping the running config: %s", exc)
            return
        try:
            await self.reload(config)
        except ListenError as exc:
            log.error("config reload: %s", exc)

    async def _reload_outputs(self, new: CollectorConfig) -> None:
        wanted = {oc.label: oc for oc in new.outputs}
        for label, worker in list(self.workers.items()):
            if label not in wanted:
                await worker.drain(new.drain_timeout)
                await worker.stop()
                del self.workers[label]
        for label, oc in wanted.items():
            kept = self.workers.get(label)
            if kept is None:
                await self._add_output(oc)
                continue
            kept.max_events = oc.queue_size or new.queue_size
            if kept.output.options != oc:
                await kept.replace_output(self._output(oc))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        # Keep a reference: the loop holds tasks weakly, and a reload must not vanish.
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_reporter(self, interval: float | None = None) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
        self._reporter = asyncio.get_running_loop().create_task(
            self._report_loop(interval or self.config.stats_interval)
        )

    def _serves(self, config: ListenerConfig) -> bool:
        # A unix socket path can be bound by one process only: worker 0's.
        return config.scheme != "unix" or self.worker == 0

    def _output(self, config: OutputConfig) -> Output:
        output = output_class(config.type)(config)
        output.worker, output.workers = self.worker, self.config.workers
        return output

    async def _add_output(self, config: OutputConfig) -> None:
        output = self._output(config)
        worker = OutputWorker(
            config.label, output, config.queue_size or self.config.queue_size, self.stats
        )
        await worker.start()
        self.workers[config.label] = worker

    async def _add_listener(self, config: ListenerConfig) -> None:
        if not self._serves(config):
            return
        listener = listener_class(config.scheme)(
            config,
            self.config,
            self.fanout.submit,
            self.stats,
            reuse_port=self.config.workers > 1,
        )
        try:
            await listener.start()
        except OSError as exc:
            raise ListenError(f"cannot listen on {config.uri}: {exc.strerror or exc}") from None
        self.listeners[config.uri] = listener

    async def _report_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.fanout.submit(self.stats.report(interval))


def _globals(config: CollectorConfig) -> tuple[object, ...]:
    """Collector-wide settings that every listener depends on."""
    return (config.max_line_bytes, config.udp_buffer_bytes)
