"""The analyzer daemon: listeners -> engine -> incident manager -> state, notifiers and
write-back.

One event loop does the judging (rules and the manager are plain, fast, in-memory
code); one thread does every state database call, in order; each notifier has its own
queue and worker (:class:`~numbat.analyzer.notifiers.Dispatcher`). What changes is
committed to the state database before any notification about it is sent, so a
restart, even after ``kill -9``, neither pages twice nor forgets (see
``docs/analyzer.md``).

Run by :func:`numbat.server.lifecycle.serve`: SIGTERM/SIGINT stop accepting, judge what
peers already sent, commit, give notifiers ``drain_timeout`` seconds, and exit; SIGHUP
reloads rules and notifiers from the config file (incident state is kept; a config that
fails validation keeps the running one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from numbat._backoff import full_jitter
from numbat._ratelimit import RateLimitedLog
from numbat._redact import redact_url
from numbat.analyzer.engine import BoundRule, Engine, Hysteresis
from numbat.analyzer.incidents import Effects, IncidentManager
from numbat.analyzer.model import Alert, Clock, Notification
from numbat.analyzer.notifiers import Dispatcher
from numbat.analyzer.rules import Stateful, build_rule
from numbat.analyzer.state import StateStore
from numbat.config import AnalyzerConfig, Config, ListenerConfig
from numbat.config.notifiers import LogNotifierConfig, NotifierConfig
from numbat.config.rules import RuleConfig, default_rules
from numbat.errors import ConfigError, NumbatError
from numbat.event import Event, now_ms
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
T = TypeVar("T")

STATS_PREFIX = "numbat.analyzer"
OWN_EVENTS = ("numbat.alert", "numbat.alerts")
"""What the analyzer writes back: dropped at its input, so alerts never feed rules."""
WRITEBACK_BATCH = 1_000  # outbox rows sent per trip to the collector
WRITEBACK_RETRY_CAP = 30.0  # seconds: the longest wait between write-back attempts
WATCH_INTERVAL = 2.0  # seconds between checks of the config file for a change


class AsyncState:
    """The state database through its one thread: every call in order, none on the
    event loop. What the dispatcher and the API use (``NotificationLog``)."""

    def __init__(self, store: StateStore, thread: ThreadPoolExecutor) -> None:
        self.store = store
        self._thread = thread

    @classmethod
    async def open(cls, path: Path) -> AsyncState:
        """Open (or create) the database on its own thread (raises StateError)."""
        thread = ThreadPoolExecutor(1, thread_name_prefix="numbat-analyzer-state")
        try:
            store = await asyncio.get_running_loop().run_in_executor(thread, StateStore, path)
        except BaseException:
            thread.shutdown(wait=False)
            raise
        return cls(store, thread)

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    async def pending_notifications(self, notifier: str) -> list[tuple[int, Notification]]:
        return await self.call(self.store.pending_notifications, notifier)

    async def notification_done(self, row: int, outcome: Any, detail: str = "") -> None:
        await self.call(self.store.notification_done, row, outcome, detail)

    async def close(self) -> None:
        await self.call(self.store.close)
        self._thread.shutdown(wait=True)


def configured_rules(config: AnalyzerConfig) -> dict[str, RuleConfig]:
    """The rules to run: the default set (``defaults = true``) with the configured
    rules beside it, a configured rule replacing a default of the same name."""
    rules = dict(default_rules()) if config.defaults else {}
    rules.update(config.rule_configs)
    return rules


def notifier_configs(config: AnalyzerConfig) -> list[NotifierConfig]:
    """The configured notifiers; with none, a ``log`` one (so nothing goes untold)."""
    return config.notifier_configs or [LogNotifierConfig(type="log")]


def bind_rules(rules: dict[str, RuleConfig], clock: Clock) -> list[BoundRule]:
    """Build every rule (raises ConfigError naming the rule that cannot be built)."""
    bound = []
    for name, options in rules.items():
        try:
            rule, match = build_rule(name, options, clock)
        except ValueError as exc:  # RuleError, ImportFromStringError
            where = "" if str(exc).startswith("rules.") else f"rules.{name}.type: "
            raise ConfigError(f"analyzer.{where}{exc}") from None
        hysteresis = None
        if options.for_ or options.keep_firing_for:
            hysteresis = Hysteresis(options.for_ * 1000, options.keep_firing_for * 1000)
        bound.append(BoundRule(name, rule, match, hysteresis))
    return bound


class Analyzer(Daemon):
    """Judges the event stream, keeps incidents, tells people once.

    ``clock``: ms since the epoch (tests inject one). ``hostname``: the ``host`` of its
    own stats and heartbeat.

    Example::

        config = numbat.config.load("numbat.toml")
        numbat._loop.run(Analyzer(config).run(reload=lambda: load("numbat.toml")))
    """

    def __init__(
        self, config: Config, *, clock: Clock = now_ms, hostname: str | None = None
    ) -> None:
        self.config: AnalyzerConfig = config.analyzer
        self.clock = clock
        self.stats = Stats(hostname or socket.gethostname(), STATS_PREFIX, clock=clock)
        self.rule_configs = configured_rules(self.config)
        self.engine = Engine(bind_rules(self.rule_configs, clock), clock, ignore=OWN_EVENTS)
        self.manager = self._manager(self.config)
        self.listeners: dict[str, Listener] = {}
        self.state: AsyncState | None = None
        self.dispatcher: Dispatcher | None = None
        self.api: Any = None  # numbat.analyzer.api.ApiServer once started
        self._tasks: list[asyncio.Task[None]] = []
        self._commit_wanted = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        # Taken from the manager but not committed yet (the commit failed): first next time.
        self._unsaved: tuple[Effects, list[tuple[str, Notification]]] | None = None
        self.commit_error: str | None = None
        """Why the last commit failed, while commits fail (the health API says so)."""
        self._writeback_wanted = asyncio.Event()
        self._load: Callable[[], Config] | None = None
        self._watched: Path | None = None
        self._reload_lock = asyncio.Lock()
        self._warn = RateLimitedLog(log)
        self._started_at = 0
        self._stats_keys()

    def _manager(self, config: AnalyzerConfig) -> IncidentManager:
        return IncidentManager(
            clock=self.clock,
            grouping=config.grouping,
            flapping=config.flapping,
            inhibit=config.inhibit,
            state_interval=config.writeback.state_interval,
        )

    def _stats_keys(self) -> None:
        self._own = self.stats.key("skipped", reason="own_alert")
        self._alerts = self.stats.key("alerts")
        self.stats.follow("rule_errors", lambda: self.engine.rule_errors)
        self.stats.follow("evaluations", lambda: self.engine.evaluations)
        self.stats.gauge("incidents_open", lambda: len(self.manager.incidents(open=True)))

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the state, restore incidents and rule state, start notifiers, the API
        and the listeners; on failure undo and raise (StateError, ListenError)."""
        self._started_at = self.clock()
        self.state = await AsyncState.open(Path(self.config.data_dir) / "analyzer.db")
        store = self.state.store
        self.stats.follow("dropped", lambda: store.outbox_dropped, reason="writeback_full")
        try:
            await self._restore()
            self.dispatcher = Dispatcher(notifier_configs(self.config), self.state, self.stats)
            await self.dispatcher.start()
            await self._start_api()
            for listener in self.config.listeners:
                await self._add_listener(listener)
        except BaseException:
            await self._undo()
            raise
        self._tasks = [
            asyncio.create_task(self._commit_loop(), name="analyzer-commit"),
            asyncio.create_task(self._tick_loop(), name="analyzer-tick"),
            asyncio.create_task(self._writeback_loop(), name="analyzer-writeback"),
            asyncio.create_task(self._report_loop(), name="analyzer-stats"),
        ]
        if self._watched is not None:
            self._tasks.append(
                asyncio.create_task(
                    self._watch_loop(self._watched, _signature(self._watched)),
                    name="analyzer-watch",
                )
            )
        if not self.config.notifier_configs:
            log.warning("no notifiers configured: incidents are told in this log only")
        log.info(
            "analyzer listening on %s, API on %s; %d rules, %d notifiers, %d open incidents",
            ", ".join(self.listeners) or "nothing",
            self.config.http,
            len(self.engine.rules),
            len(self.config.notifier_configs),
            len(self.manager.incidents(open=True)),
        )

    async def _restore(self) -> None:
        assert self.state is not None
        incidents, silences = await self.state.call(self.state.store.load)
        now = self.clock()
        self.manager.restore(incidents, silences, now)
        for bound in self.engine.rules:
            if isinstance(bound.rule, Stateful):
                saved = await self.state.call(self.state.store.rule_state, bound.name)
                bound.rule.restore(saved, now)

    async def _start_api(self) -> None:
        from numbat.analyzer.api import ApiServer

        self.api = ApiServer(self)
        try:
            await self.api.start()
        except OSError as exc:
            raise ListenError(
                f"cannot serve the API on {redact_url(self.config.http)}: {exc.strerror or exc}"
            ) from None

    async def _add_listener(self, config: ListenerConfig) -> None:
        listener = listener_class(config.kind)(
            config, self._limits(config), self.receive, self.stats
        )
        await start_listener(listener)
        self.listeners[config.uri] = listener

    def _limits(self, config: ListenerConfig) -> Limits:
        return limits_of(config, self.config.max_line_bytes)

    async def _undo(self) -> None:
        for listener in self.listeners.values():
            await listener.stop()
        self.listeners.clear()
        if self.api is not None:
            await self.api.stop()
        if self.dispatcher is not None:
            await self.dispatcher.close(0.0)
        if self.state is not None:
            await self.state.close()

    async def stop(self, drain_timeout: float | None = None) -> bool:
        """Stop accepting, judge what peers already sent, commit, save rule state, give
        notifiers and the write-back ``drain_timeout`` seconds, close. True if nothing
        was left unsent (what is left stays in the state database for the next start)."""
        loop = asyncio.get_running_loop()
        timeout = self.config.drain_timeout if drain_timeout is None else drain_timeout
        deadline = loop.time() + timeout
        for listener in self.listeners.values():
            await listener.stop_accepting()
        quiet_from = loop.time() + QUIET
        while loop.time() < min(deadline, quiet_from) or (
            loop.time() < deadline and any(lis.busy() for lis in self.listeners.values())
        ):
            await asyncio.sleep(QUIET / 2)
        for listener in self.listeners.values():
            await listener.stop()
        self.listeners.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._commit()
        await self._save_rule_state()
        assert self.dispatcher is not None and self.state is not None
        sent = await self._flush_writeback(max(deadline - loop.time(), 0.0))
        await self.dispatcher.close(max(deadline - loop.time(), 0.0))
        if self.api is not None:
            await self.api.stop()
        await self.state.close()
        return sent

    async def shutdown(self) -> bool:
        log.info("stopping: notifiers and write-back get up to %ss", self.config.drain_timeout)
        return await self.stop()

    async def run(
        self,
        reload: Callable[[], Config] | None = None,
        ready: Callable[[], None] | None = None,
        *,
        watch: Path | None = None,
    ) -> bool:
        """Run until SIGTERM/SIGINT; SIGHUP reloads rules and notifiers with ``reload``,
        and so does a change of the file ``watch`` (the config file), checked every
        :data:`WATCH_INTERVAL` seconds."""
        self._load = reload
        if watch is not None and reload is not None:
            self._watched = watch
        return await serve(self, ready)

    async def _watch_loop(self, path: Path, seen: tuple[int, int, int] | None) -> None:
        """Reload when the config file changes from ``seen`` (its mtime, size or inode:
        an editor's rename-into-place too). A file that vanishes for a moment is not a
        change."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            now = _signature(path)
            if now is not None and now != seen:
                seen = now
                log.info("%s changed: reloading", path)
                await self.hangup()

    # -- the hot path ---------------------------------------------------------------------

    def receive(self, events: list[Event]) -> None:
        """A listener's sink: judge one read's events (never blocks, never raises)."""
        engine = self.engine
        ignored = engine.ignored
        alerts = engine.process(events)  # its own alert events go to no rule
        if engine.ignored != ignored:
            self.stats.add(self._own, engine.ignored - ignored)
        self.judge(alerts)

    def judge(self, alerts: list[Alert]) -> None:
        """Hand alerts to the incident manager; commit soon if anything changed."""
        if alerts:
            self.stats.add(self._alerts, len(alerts))
            self.manager.apply(alerts)
        if self.manager.dirty:
            self._commit_wanted.set()

    # -- background loops -----------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await self._commit_wanted.wait()
            self._commit_wanted.clear()
            try:
                await self._commit()
            except Exception as exc:  # a disk error: keep judging, try again in a moment
                self.stats.count("state_errors")
                self.commit_error = str(exc)
                self._warn.warning("commit", "cannot commit to the state database: %s", exc)
                await asyncio.sleep(1.0)
                self._commit_wanted.set()
            else:
                if self.commit_error is not None:
                    log.info("the state database takes commits again")
                self.commit_error = None

    async def _commit(self) -> None:
        """Persist what changed (one transaction), then queue its notifications. What a
        failed commit held (a full disk) is committed first the next time, never lost."""
        if self.state is None or self.dispatcher is None:
            return
        async with self._commit_lock:
            # What a failed commit held first, then everything changed since: a
            # recovered disk catches up at once, not at the next change.
            while self._unsaved is not None or self.manager.dirty:
                if self._unsaved is None:
                    effects = self.manager.take()
                    routed = [p for n in effects.notifications for p in self.dispatcher.route(n)]
                    self._unsaved = (effects, routed)
                persisting = asyncio.ensure_future(self._persist(*self._unsaved))
                try:
                    await asyncio.shield(persisting)
                except asyncio.CancelledError:
                    # Stopping: the commit under way (ms) finishes, so stop()'s own
                    # commit never writes the same changes (and notifications) twice.
                    await persisting
                    self._unsaved = None
                    raise
                self._unsaved = None

    async def _persist(
        self, effects: Effects, routed: list[tuple[str, Notification]] | None = None
    ) -> None:
        assert self.state is not None and self.dispatcher is not None
        if routed is None:
            routed = [p for n in effects.notifications for p in self.dispatcher.route(n)]
        rows = await self.state.call(self.state.store.commit, effects, routed)
        self.dispatcher.enqueue(
            [(row, label, n) for row, (label, n) in zip(rows, routed, strict=True)]
        )
        if effects.events:
            self._writeback_wanted.set()

    async def _tick_loop(self) -> None:
        interval = self.config.tick_interval
        while True:
            await asyncio.sleep(interval)
            self.tick()
            await self._save_rule_state()

    def tick(self, now: int | None = None) -> None:
        """Let time act: rules' timers, ``for``, keep-alive expiry, groups, repeats."""
        now = self.clock() if now is None else now
        self.judge(self.engine.tick(now))
        self.manager.tick(now)
        if self.manager.dirty:
            self._commit_wanted.set()

    async def _save_rule_state(self) -> None:
        if self.state is None:
            return
        for bound in self.engine.rules:
            if isinstance(bound.rule, Stateful) and (changes := bound.rule.save()):
                await self.state.call(self.state.store.save_rule_state, bound.name, changes)

    async def _report_loop(self) -> None:
        interval = self.config.stats_interval
        while True:
            await asyncio.sleep(interval)
            await self.write_back(self.stats.report(interval))

    async def write_back(self, events: list[Event]) -> None:
        """Queue events (the analyzer's own stats) for the collector, durably (a failed
        commit loses this report only: logged and counted)."""
        if not (self.config.writeback.uri and events):
            return
        try:
            await self._persist(Effects(events=events))
        except Exception as exc:
            self.stats.count("state_errors")
            self._warn.warning("report", "cannot queue its own stats: %s", exc)

    # -- write-back -----------------------------------------------------------------------

    async def _writeback_loop(self) -> None:
        attempt = 0
        while True:
            try:
                sent = await self._send_outbox()
            except OSError as exc:
                attempt += 1
                self.stats.count("writeback_failed")
                self._warn.warning(
                    "writeback",
                    "write-back to %s failed (%s); alert events wait in the state database",
                    redact_url(self.config.writeback.uri),
                    exc.strerror or exc,
                )
                await asyncio.sleep(min(full_jitter(attempt), WRITEBACK_RETRY_CAP))
                continue
            attempt = 0
            if not sent:
                self._writeback_wanted.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._writeback_wanted.wait(), timeout=1.0)

    async def _send_outbox(self) -> int:
        """Send one batch of the outbox to the collector; the rows sent are deleted."""
        uri = self.config.writeback.uri
        if not uri or self.state is None:
            return 0
        rows = await self.state.call(self.state.store.outbox, WRITEBACK_BATCH)
        if not rows:
            return 0
        await _send_ndjson(uri, [event for _, event in rows])
        await self.state.call(self.state.store.outbox_done, [row for row, _ in rows])
        self.stats.count("written_back", len(rows))
        return len(rows)

    async def _flush_writeback(self, timeout: float) -> bool:
        """At shutdown: send what the outbox holds, for up to ``timeout`` seconds."""
        if not self.config.writeback.uri:
            return True
        try:
            async with asyncio.timeout(timeout):
                while await self._send_outbox():
                    pass
            return True
        except (TimeoutError, OSError) as exc:
            log.warning("alert events not written back yet stay for the next start: %s", exc)
            return False

    # -- reload ---------------------------------------------------------------------------

    async def hangup(self) -> None:
        """SIGHUP: reload rules and notifiers; a config that fails keeps the running one."""
        if self._load is None:
            return
        async with self._reload_lock:  # a SIGHUP and a file change may come together
            await self._reload_from_file()

    async def _reload_from_file(self) -> None:
        assert self._load is not None
        try:
            config = self._load()
            await self.reload(config)
        except NumbatError as exc:
            self.stats.count("reload_failed")
            log.error("config reload failed, keeping the running config: %s", exc)
        except Exception as exc:  # a plug-in failing in an unforeseen way
            self.stats.count("reload_failed")
            log.error("config reload failed: %s: %s", type(exc).__name__, exc)

    async def reload(self, config: Config) -> None:
        """Apply new rules, notifiers, grouping and inhibition; incidents are kept. Rules
        whose options are unchanged keep their state; the others start from what was
        last saved. Raises ConfigError (nothing applied) if a rule cannot be built."""
        new = config.analyzer
        wanted = configured_rules(new)
        await self._save_rule_state()
        kept = {
            b.name: b
            for b in self.engine.rules
            if self.rule_configs.get(b.name) == wanted.get(b.name)
        }
        fresh = bind_rules({k: v for k, v in wanted.items() if k not in kept}, self.clock)
        assert self.state is not None and self.dispatcher is not None
        now = self.clock()
        for bound in fresh:
            if isinstance(bound.rule, Stateful):
                bound.rule.restore(
                    await self.state.call(self.state.store.rule_state, bound.name), now
                )
        by_name = {b.name: b for b in fresh} | kept
        engine = Engine([by_name[name] for name in wanted], self.clock, ignore=OWN_EVENTS)
        engine.rule_errors, engine.evaluations = self.engine.rule_errors, self.engine.evaluations
        engine.ignored = self.engine.ignored
        await self.dispatcher.reload(notifier_configs(new))
        if (new.grouping, new.flapping, new.inhibit) != (
            self.config.grouping,
            self.config.flapping,
            self.config.inhibit,
        ):
            await self._commit()
            manager = self._manager(new)
            manager.restore(
                self.manager.incidents(open=None), self.manager.silences(active=False), now
            )
            self.manager = manager
        for key in ("listen", "http", "data_dir"):
            if getattr(new, key) != getattr(self.config, key):
                log.warning("analyzer.%s changed: restart the analyzer to apply it", key)
        self.engine, self.rule_configs, self.config = engine, wanted, new
        log.info(
            "config reloaded: %d rules, %d notifiers", len(engine.rules), len(new.notifier_configs)
        )

    # -- for the API ----------------------------------------------------------------------

    def forget(self, key: str) -> bool:
        """Decommission a heartbeat key (``host.prefix``): its tracking stops and an open
        incident about it resolves. True if some rule knew it."""
        known = False
        for bound in self.engine.rules:
            forget = getattr(bound.rule, "forget", None)
            if callable(forget) and forget(key):
                known = True
        now = self.clock()
        for incident in self.manager.incidents(open=True):
            if incident.id in (f"{key}.heartbeat", key):
                self.judge(
                    [
                        Alert(
                            name=incident.name,
                            host=incident.host,
                            id=incident.id,
                            status="ok",
                            message=f"{key} forgotten (decommissioned)",
                            time=now,
                            rule=incident.rule,
                        )
                    ]
                )
                known = True
        return known

    def uptime(self) -> int:
        """ms since start."""
        return self.clock() - self._started_at


def _signature(path: Path) -> tuple[int, int, int] | None:
    """What tells a changed file: (mtime ns, size, inode); None if it cannot be read."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


async def _send_ndjson(uri: str, events: Iterable[Event]) -> None:
    """One connection, the events as NDJSON, a clean close (raises OSError)."""
    from urllib.parse import urlsplit

    import orjson

    parts = urlsplit(uri)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(parts.hostname, parts.port), timeout=10.0
    )
    try:
        writer.write(b"".join(orjson.dumps(event) + b"\n" for event in events))
        await asyncio.wait_for(writer.drain(), timeout=30.0)
        writer.write_eof()
        # The collector closes once it has read to the end: then it holds every line.
        await asyncio.wait_for(reader.read(), timeout=30.0)
    except TimeoutError:
        raise OSError("timed out") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def check_analyzer(config: Config, source: str) -> None:
    """What the analyzer checks before starting: every rule can be built and every
    notifier's class found. Raises ConfigError naming the key, prefixed by ``source``."""
    from numbat.analyzer.notifiers import notifier_class

    try:
        bind_rules(configured_rules(config.analyzer), now_ms)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    data_dir = Path(config.analyzer.data_dir)
    for part in (data_dir, *data_dir.parents):
        if part.exists():
            if not part.is_dir():
                raise ConfigError(
                    f"{source}: analyzer.data_dir: {data_dir}: {part} is not a directory"
                )
            break
    for index, notifier in enumerate(config.analyzer.notifier_configs):
        try:
            notifier_class(notifier.type)
        except (ValueError, NumbatError) as exc:
            raise ConfigError(f"{source}: analyzer.notifiers[{index}].type: {exc}") from None
