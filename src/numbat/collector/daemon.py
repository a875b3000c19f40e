"""The collector daemon: listeners into the fan-out, the fan-out into the output queues.

Run by :func:`numbat.server.lifecycle.serve`: SIGTERM/SIGINT stop accepting, drain the
output queues (up to ``drain_timeout``) and end the run. SIGHUP reopens log files and
reloads the config file: listeners and outputs whose settings changed are replaced, the
queues of outputs that stay keep their events, and a config that fails validation
leaves the running one in place. With ``workers = N``, :func:`run_worker` is what each
of the supervisor's processes runs.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from pathlib import Path

from numbat._importer import ImportFromStringError
from numbat.collector.fanout import Fanout, OutputQueue
from numbat.collector.outputs import Output, output_class
from numbat.config import CollectorConfig, Config, ListenerConfig, OutputConfig, load
from numbat.errors import ConfigError, NumbatError
from numbat.server import ProcessContext
from numbat.server.lifecycle import Daemon, serve
from numbat.server.listeners import Limits, Listener, listener_class
from numbat.server.stats import Stats

log = logging.getLogger(__name__)

STATS_PREFIX = "numbat.collector"


class ListenError(NumbatError):
    """A listener could not bind its address (in use, no permission, bad path)."""


class Collector(Daemon):
    """Receives events on its listeners and fans them out to its outputs.

    Example::

        config = numbat.config.load("numbat.toml")
        numbat._loop.run(Collector(config).run(reload=lambda: load("numbat.toml")))
    """

    def __init__(self, config: Config, *, hostname: str | None = None, worker: int = 0) -> None:
        self.config: CollectorConfig = config.collector
        self.process = ProcessContext(worker, self.config.workers)
        tags = {"worker": str(worker)} if self.process.shared else {}
        self.stats = Stats(hostname or socket.gethostname(), STATS_PREFIX, tags=tags)
        self.fanout = Fanout()
        self.listeners: dict[str, Listener] = {}
        self._reporter: asyncio.Task[None] | None = None
        self._load: Callable[[], Config] | None = None

    @property
    def queues(self) -> dict[str, OutputQueue]:
        """Each output's queue, by output label."""
        return self.fanout.queues

    async def start(self) -> None:
        """Start outputs, then listeners; on a bind failure undo everything and raise."""
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
        queues = list(self.queues.values())
        drained = all(await asyncio.gather(*(q.drain(timeout) for q in queues)))
        await asyncio.gather(*(q.stop() for q in queues))
        self.queues.clear()
        return drained

    async def shutdown(self) -> bool:
        log.info("stopping: draining outputs for up to %ss", self.config.drain_timeout)
        return await self.stop()

    async def run(
        self, reload: Callable[[], Config] | None = None, ready: Callable[[], None] | None = None
    ) -> bool:
        """Run until SIGTERM/SIGINT; SIGHUP reopens files and, given ``reload`` (a
        config loader), reloads. ``ready`` is called once every listener is bound."""
        self._load = reload
        return await serve(self, ready)

    async def hangup(self) -> None:
        """SIGHUP: outputs reopen their files (logrotate), then the config is reloaded."""
        self.reopen()
        if self._load is None:
            return
        try:
            config = self._load()
        except ConfigError as exc:
            log.error("config reload failed, keeping the running config: %s", exc)
            return
        try:
            await self.reload(config)
        except ListenError as exc:
            log.error("config reload: %s", exc)

    def reopen(self) -> None:
        for queue in self.queues.values():
            queue.output.reopen()

    async def reload(self, config: Config) -> None:
        """Apply a new config; queued events of outputs that remain are kept."""
        new = config.collector
        if new.stats_interval != self.config.stats_interval:
            self._start_reporter(new.stats_interval)
        self.config = new
        await self._reload_outputs(new)
        wanted = {lc.uri: lc for lc in new.listeners if self._serves(lc)}
        for uri, listener in list(self.listeners.items()):
            lc = wanted.get(uri)
            if lc is None or (lc, self._limits(lc)) != (listener.options, listener.limits):
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

    async def _reload_outputs(self, new: CollectorConfig) -> None:
        wanted = {oc.label: oc for oc in new.outputs}
        for label, queue in list(self.queues.items()):
            if label not in wanted:
                await queue.drain(new.drain_timeout)
                await queue.stop()
                del self.queues[label]
        for label, oc in wanted.items():
            kept = self.queues.get(label)
            if kept is None:
                await self._add_output(oc)
                continue
            kept.max_events = oc.queue_size or new.queue_size
            if kept.output.options != oc:
                await kept.replace_output(self._output(oc))

    def _start_reporter(self, interval: float | None = None) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
        self._reporter = asyncio.get_running_loop().create_task(
            self._report_loop(interval or self.config.stats_interval)
        )

    def _serves(self, config: ListenerConfig) -> bool:
        return not config.first_process_only or self.process.worker == 0

    def _limits(self, config: ListenerConfig) -> Limits:
        return Limits(
            max_line_bytes=config.max_line_bytes or self.config.max_line_bytes,
            max_connections=config.max_connections,
            idle_timeout=config.idle_timeout,
            receive_buffer_bytes=self.config.udp_buffer_bytes,
        )

    def _output(self, config: OutputConfig) -> Output:
        return output_class(config.type)(config, context=self.process)

    async def _add_output(self, config: OutputConfig) -> None:
        queue = OutputQueue(
            config.label,
            self._output(config),
            config.queue_size or self.config.queue_size,
            self.stats,
        )
        await queue.start()
        self.queues[config.label] = queue

    async def _add_listener(self, config: ListenerConfig) -> None:
        if not self._serves(config):
            return
        listener = listener_class(config.kind)(
            config,
            self._limits(config),
            self.fanout.submit,
            self.stats,
            reuse_port=self.process.shared,
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


def check_plugins(config: Config) -> None:
    """Import every listener and output class the config names, as the collector will.

    Raises :class:`~numbat.errors.ConfigError` naming the key when an import path names
    something that is not a listener or an output (the config's own validation reads a
    plug-in's ``Options`` but cannot tell what the class is without importing this part).
    """
    checks: list[tuple[str, str, Callable[[str], type]]] = [
        (f"collector.listen[{i}].type", lc.kind, listener_class)
        for i, lc in enumerate(config.collector.listeners)
    ]
    checks += [
        (f"collector.outputs[{i}].type", oc.type, output_class)
        for i, oc in enumerate(config.collector.outputs)
    ]
    for key, kind, resolve in checks:
        try:
            resolve(kind)
        except (TypeError, ImportFromStringError) as exc:
            raise ConfigError(f"{key}: {exc}") from None


def run_worker(path: Path, worker: int, ready: Callable[[], None]) -> bool:
    """One of the supervisor's worker processes: load ``path``, run a collector."""
    from numbat._loop import run

    collector = Collector(load(path), worker=worker)
    return run(collector.run(reload=lambda: load(path), ready=ready))


def check_reload(path: Path, workers: int) -> None:
    """The supervisor's SIGHUP check: the file still validates (else ConfigError)."""
    if load(path).collector.workers != workers:
        log.warning("collector.workers changed: restart the collector to apply it")
