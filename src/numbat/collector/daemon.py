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
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from numbat._importer import ImportFromStringError
from numbat._redact import redact_url
from numbat.collector.fanout import Fanout, FullPolicy, OutputQueue
from numbat.collector.outputs import Output, file_in_the_way, output_class
from numbat.config import CollectorConfig, Config, ListenerConfig, OutputConfig, load
from numbat.errors import ConfigError, NumbatError
from numbat.server import ProcessContext
from numbat.server.flow import Gate
from numbat.server.lifecycle import Daemon, serve
from numbat.server.listeners import (
    QUIET,
    Limits,
    Listener,
    ListenError,
    limits_of,
    listener_class,
    start_listener,
)
from numbat.server.stats import Stats

log = logging.getLogger(__name__)

STATS_PREFIX = "numbat.collector"
FINISH_MIN = 1.0  # seconds outputs get at shutdown to push out what they hold, at least
FINAL_REPORT_WAIT = 1.0  # seconds the last report may take to be written at shutdown


class OutputError(ConfigError):
    """An output could not start with its settings (a path it cannot open); the message
    names the output's key, ``collector.outputs[N]``. A config error: the CLI exits 2."""


class ReloadError(NumbatError):
    """Parts of a new config could not be applied (the rest was); says which and why."""


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
        # Closed while a blocking output's queue is full: stream listeners then wait.
        self.gate = Gate()
        self.listeners: dict[str, Listener] = {}
        self._reporter: asyncio.Task[None] | None = None
        self._load: Callable[[], Config] | None = None

    @property
    def queues(self) -> dict[str, OutputQueue]:
        """Each output's queue, by output label."""
        return self.fanout.queues

    async def start(self) -> None:
        """Start outputs, then listeners; if one fails undo everything and raise
        (:class:`OutputError`, :class:`ListenError`)."""
        try:
            for output in self.config.outputs:
                await self._add_output(output)
            for listener in self.config.listeners:
                await self._add_listener(listener)
        except (OutputError, ListenError):
            await self._undo()
            raise
        self._start_reporter()
        if not self.config.outputs:
            log.warning("no outputs configured: every event received is discarded")
        log.info("collector listening on %s", ", ".join(self.listeners) or "nothing")

    async def _undo(self) -> None:
        """A failed start: close what started, without a report (it never ran)."""
        for listener in self.listeners.values():
            await listener.stop()
        self.listeners.clear()
        for queue in self.queues.values():
            await queue.stop()
        self.queues.clear()

    async def stop(self, drain_timeout: float | None = None) -> bool:
        """Stop accepting; read what connected peers already sent; drain the outputs;
        write a last self-monitoring report (losses at shutdown included); close.

        ``drain_timeout`` (seconds; the config's by default) bounds the reading and the
        draining together. True if every event received was written.
        """
        loop = asyncio.get_running_loop()
        timeout = self.config.drain_timeout if drain_timeout is None else drain_timeout
        deadline = loop.time() + timeout
        if self._reporter is not None:
            self._reporter.cancel()
        await self._read_to_the_end(deadline)
        for listener in list(self.listeners.values()):
            await listener.stop()
        self.listeners.clear()
        self.fanout.flush()
        queues = list(self.queues.values())
        left = max(deadline - loop.time(), 0.0)
        drained = all(await asyncio.gather(*(q.drain(left) for q in queues)))
        left = max(deadline - loop.time(), FINISH_MIN)
        await asyncio.gather(*(q.finish(left) for q in queues))
        for queue in queues:
            queue.abandon()  # counted before the report, so the report says so
        self.fanout.submit_reserved(self.stats.report(self.config.stats_interval))
        await asyncio.gather(*(q.drain(FINAL_REPORT_WAIT) for q in queues))
        await asyncio.gather(*(q.stop() for q in queues))
        self.queues.clear()
        return drained

    async def _read_to_the_end(
        self, deadline: float, listeners: list[Listener] | None = None
    ) -> None:
        """Stop accepting on ``listeners`` (all by default), then keep reading until no
        peer has sent anything for a moment (all the kernel held is read) or the
        deadline (``loop.time()``)."""
        if listeners is None:
            listeners = list(self.listeners.values())
        for listener in listeners:
            await listener.stop_accepting()
        loop = asyncio.get_running_loop()
        # Quiet means silent while the loop ran for QUIET: bytes that arrived since the
        # last read (a burst just before the signal) are read in that time, not dropped.
        quiet_from = loop.time() + QUIET
        # A closed gate (an output full) means peers still hold unread bytes: wait too.
        while loop.time() < deadline and (
            loop.time() < quiet_from
            or not self.gate.is_open
            or any(listener.busy() for listener in listeners)
        ):
            await asyncio.sleep(QUIET / 2)

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
            check_plugins(config, "reloaded config")
        except ConfigError as exc:
            log.error("config reload failed, keeping the running config: %s", exc)
            return
        try:
            await self.reload(config)
        except NumbatError as exc:  # what could not be applied; the rest was
            log.error("config reload: %s", exc)
        except Exception as exc:  # a plug-in failing in an unforeseen way: log, keep running
            log.error("config reload failed part way: %s: %s", type(exc).__name__, exc)

    def reopen(self) -> None:
        for queue in self.queues.values():
            queue.output.reopen()

    async def reload(self, config: Config) -> None:
        """Apply a new config, all of it or none: new outputs are started and new
        listeners bound first, and only then are the old ones replaced, so a failure
        leaves the running config as it was. Queued events of outputs that stay are kept.

        Raises :class:`ReloadError` (counted as ``reload_failed``) naming the listeners
        that could not bind and the outputs that could not start.
        """
        new = config.collector
        if new.workers != self.process.workers:
            log.warning("collector.workers changed: restart the collector to apply it")
        old, self.config = self.config, new
        try:
            staged = await self._stage_outputs(new)
            try:
                await self._reload_listeners(new)
            except ReloadError:
                await staged.undo()
                raise
        except ReloadError:
            self.config = old  # nothing of the new config was applied
            self.stats.count("reload_failed")
            raise
        await self._commit_outputs(new, staged)
        if new.stats_interval != old.stats_interval:
            self._start_reporter(new.stats_interval)
        log.info("config reloaded")

    async def _reload_listeners(self, new: CollectorConfig) -> None:
        """New addresses are bound first, and old ones closed only once all are: a port
        that is taken leaves the listeners as they were (ReloadError). A listener whose
        settings changed takes them running (:meth:`Listener.reconfigure`), its
        connections kept; one that cannot, and one the config drops, is drained as at
        shutdown (:meth:`_retire`) and, if kept, bound anew, or put back as it was if
        that fails (logged: the rest of the reload stands)."""
        wanted = {lc.uri: lc for lc in new.listeners if self._serves(lc)}
        errors: list[str] = []
        added = []
        for uri, lc in wanted.items():
            if uri not in self.listeners and await self._try_add(lc, errors):
                added.append(uri)
        if errors:  # the new set could not be bound whole: the old one stays as it was
            for uri in added:
                await self.listeners.pop(uri).stop()
            raise ReloadError("; ".join(errors))
        retired: list[Listener] = []
        rebind: list[tuple[Listener, ListenerConfig]] = []
        for uri, listener in list(self.listeners.items()):
            want = wanted.get(uri)
            if want is None:
                retired.append(self.listeners.pop(uri))
            elif self._changed(listener, want) and not self._reconfigured(listener, want):
                retired.append(self.listeners.pop(uri))
                rebind.append((listener, want))
        await self._retire(retired, new.drain_timeout)
        for listener, want in rebind:
            if not await self._try_add(want, errors):
                await self._try_add(listener.options, errors)  # the old one, back
        if errors:
            self.stats.count("reload_failed")
            log.error("config reload: %s", "; ".join(errors))

    def _changed(self, listener: Listener, want: ListenerConfig) -> bool:
        return (want, self._limits(want)) != (listener.options, listener.limits)

    def _reconfigured(self, listener: Listener, want: ListenerConfig) -> bool:
        """Apply ``want`` to the running ``listener`` if it is of the same class and
        can take it live; False if it must be rebound."""
        if type(listener) is not listener_class(want.kind):
            return False
        if not listener.reconfigure(want, self._limits(want)):
            return False
        log.info("listener %s: new settings applied, connections kept", want.uri)
        return True

    async def _retire(self, listeners: list[Listener], drain_timeout: float) -> None:
        """Close ``listeners`` as SIGTERM would: stop accepting, read what their peers
        had sent until quiet (at most ``drain_timeout`` seconds), then close; the
        connections still open then are counted (``closed_at_shutdown``)."""
        if not listeners:
            return
        deadline = asyncio.get_running_loop().time() + drain_timeout
        await self._read_to_the_end(deadline, listeners)
        for listener in listeners:
            await listener.stop()

    async def _try_add(self, config: ListenerConfig, errors: list[str]) -> bool:
        try:
            await self._add_listener(config)
        except ListenError as exc:
            errors.append(str(exc))
            return False
        log.info("collector listening on %s (reloaded)", config.uri)
        return True

    async def _stage_outputs(self, new: CollectorConfig) -> _Staged:
        """Start the outputs the new config adds or changes, beside the running ones;
        if one cannot start, stop those started and raise ReloadError."""
        staged = _Staged()
        errors: list[str] = []
        for oc in new.outputs:
            kept = self.queues.get(oc.label)
            try:
                if kept is None:
                    staged.added[oc.label] = await self._start_queue(oc)
                elif kept.output.options != oc:
                    output = self._output(oc)
                    if type(output) is type(kept.output):
                        # What the running output holds locked (a spool) is shared, not
                        # opened twice; it changes hands at the commit (adopt).
                        output.borrow_from(kept.output)
                    await output.start()
                    staged.replaced[oc.label] = output
            except OutputError as exc:
                errors.append(str(exc))
            except Exception as exc:
                errors.append(f"{_output_key(new, oc)}: cannot start: {_described(exc)}")
        if errors:
            await staged.undo()
            raise ReloadError("; ".join(errors))
        return staged

    async def _commit_outputs(self, new: CollectorConfig, staged: _Staged) -> None:
        """Swap the staged outputs in; drain and stop those the new config drops."""
        wanted = {oc.label: oc for oc in new.outputs}
        # Out of the fan-out first: from now on events go to the new config's outputs
        # only; a removed output then gets drain_timeout to write what it holds.
        removed = [self.queues.pop(label) for label in list(self.queues) if label not in wanted]
        self.queues.update(staged.added)
        for label, output in staged.replaced.items():
            await self.queues[label].replace_output(output, started=True)
        for label, oc in wanted.items():
            self.queues[label].configure(oc.queue_size or new.queue_size, _policy(oc))
        for queue in removed:  # out of the fan-out: it must not hold ingest up any more
            queue.configure(queue.max_events, FullPolicy("drop_newest"))
        await asyncio.gather(*(q.drain(new.drain_timeout) for q in removed))
        await asyncio.gather(*(q.stop(reason="removed") for q in removed))

    def _start_reporter(self, interval: float | None = None) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
        self._reporter = asyncio.get_running_loop().create_task(
            self._report_loop(interval or self.config.stats_interval)
        )

    def _serves(self, config: ListenerConfig) -> bool:
        return not config.first_process_only or self.process.worker == 0

    def _limits(self, config: ListenerConfig) -> Limits:
        return limits_of(config, self.config.max_line_bytes, self.config.udp_buffer_bytes)

    def _output(self, config: OutputConfig) -> Output:
        return output_class(config.type)(config, context=self.process)

    async def _add_output(self, config: OutputConfig) -> None:
        self.queues[config.label] = await self._start_queue(config)

    async def _start_queue(self, config: OutputConfig) -> OutputQueue:
        """An output and its queue, started but not yet fed (raises OutputError)."""
        queue = OutputQueue(
            config.label,
            self._output(config),
            config.queue_size or self.config.queue_size,
            self.stats,
            policy=_policy(config),
            gate=self.gate,
        )
        try:
            await queue.start()
        except Exception as exc:
            self.stats.forget(output=config.label)  # its gauges must not outlive it
            key = _output_key(self.config, config)
            raise OutputError(f"{key}: cannot start: {_described(exc)}") from None
        return queue

    async def _add_listener(self, config: ListenerConfig) -> None:
        if not self._serves(config):
            return
        listener = listener_class(config.kind)(
            config,
            self._limits(config),
            self.fanout.submit,
            self.stats,
            reuse_port=self.process.shared,
            gate=self.gate,
        )
        await start_listener(listener)
        self.listeners[config.uri] = listener

    async def _report_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.fanout.submit_reserved(self.stats.report(interval))


@dataclass
class _Staged:
    """A reload's outputs, started beside the running ones until the swap."""

    added: dict[str, OutputQueue] = field(default_factory=dict)
    replaced: dict[str, Output] = field(default_factory=dict)

    async def undo(self) -> None:
        for queue in self.added.values():
            await queue.stop()
        for output in self.replaced.values():
            await output.close()


def _policy(config: OutputConfig) -> FullPolicy:
    return FullPolicy(config.full_policy, config.block_timeout)


def _output_key(config: CollectorConfig, output: OutputConfig) -> str:
    """``collector.outputs[N] (label)``: where a user finds the output in the file."""
    index = next(i for i, oc in enumerate(config.outputs) if oc is output)
    return f"collector.outputs[{index}] ({output.label})"


def _described(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def check_plugins(config: Config, source: str = "<config>") -> None:
    """What the config's own validation cannot know without this part: every listener
    and output class the config names imports as one, and the collector has at least
    one listener and one output (else it would receive, or keep, nothing).

    Raises :class:`~numbat.errors.ConfigError` naming the key.
    """
    if not config.collector.listeners:
        raise ConfigError(f"{source}: collector.listen: empty: the collector would receive nothing")
    if not config.collector.outputs:
        raise ConfigError(
            f"{source}: collector.outputs: none: every event would be discarded; add one "
            '(type = "null" discards on purpose)'
        )
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
            raise ConfigError(f"{source}: {key}: {exc}") from None


def check_paths(config: Config, source: str = "<config>") -> None:
    """For ``numbat check``: an output ``path`` under an existing regular file, which
    could never be created. Raises :class:`~numbat.errors.ConfigError` naming the key."""
    for i, oc in enumerate(config.collector.outputs):
        path = getattr(oc, "path", None)
        if isinstance(path, str) and (blocker := file_in_the_way(Path(path))) is not None:
            raise ConfigError(
                f"{source}: collector.outputs[{i}].path: {path}: {blocker} is not a directory"
            )


_SOCKET_KINDS = {"tcp": socket.SOCK_STREAM, "ws": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}


def check_addresses(config: Config) -> None:
    """Before ``workers = N`` processes bind with ``SO_REUSEPORT``: fail if another
    process already holds a tcp, ws or udp address. (A second collector that also sets
    ``SO_REUSEPORT`` would otherwise share the port, and the kernel would split the
    traffic between the two without a word.) Raises :class:`ListenError`."""
    for lc in config.collector.listeners:
        kind = _SOCKET_KINDS.get(lc.kind)
        parts = urlsplit(lc.uri)
        if kind is None or not parts.port:  # port 0: the kernel picks a free one
            continue
        family = socket.AF_INET6 if ":" in (parts.hostname or "") else socket.AF_INET
        with socket.socket(family, kind) as probe:
            if kind == socket.SOCK_STREAM:  # TIME_WAIT is fine; for UDP it would share
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((parts.hostname, parts.port))
            except OSError as exc:
                raise ListenError(
                    f"cannot listen on {redact_url(lc.uri)}: {exc.strerror or exc}"
                ) from None


def run_worker(path: Path, worker: int, ready: Callable[[], None]) -> bool:
    """One of the supervisor's worker processes: load ``path``, run a collector."""
    from numbat._loop import run

    collector = Collector(load(path), worker=worker)
    return run(collector.run(reload=lambda: load(path), ready=ready))


def check_reload(path: Path, workers: int) -> None:
    """The supervisor's SIGHUP check: the file still validates, names only plug-ins,
    and keeps ``workers`` (the number of processes changes only with a restart; a file
    valid for another count, e.g. one adding a sqlite output, must not reach N workers).
    Raises :class:`~numbat.errors.ConfigError`."""
    config = load(path)
    check_plugins(config, str(path))
    if config.collector.workers != workers:
        raise ConfigError(
            f"{path}: collector.workers: changed from {workers} to "
            f"{config.collector.workers}; restart the collector to apply it"
        )
