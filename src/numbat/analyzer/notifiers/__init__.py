"""Notifiers: how the incident manager's messages reach people, each on its own queue.

A notifier kind is a :class:`Notifier` subclass that makes **one attempt** at sending one
:class:`~numbat.analyzer.model.Notification` (``send``) and raises :class:`NotifyError`
when it fails. Everything around that attempt is the :class:`Dispatcher`'s, the same
for every kind:

* routing: each notifier gets the notification restricted to the incidents its
  ``match`` and ``min_status`` take (a resolved incident by the status last notified);
* one bounded queue and one worker task per notifier, so a slow or failing notifier
  never delays another (nor rule evaluation: :meth:`Dispatcher.enqueue` never blocks);
  when a queue is full the oldest waiting notification is dropped, counted
  (``dropped``, ``reason=queue_full``) and marked ``dropped`` in the notification log;
* a per-attempt ``timeout``; retries with full-jitter backoff (capped at ``max_backoff``
  seconds) up to ``max_attempts``, then dropped (``reason=failed``); an answer that
  says retrying cannot help (a 4xx other than 408/429) is dropped at once
  (``reason=rejected``);
* the notification log: a row is marked ``sent`` once its notifier took it; rows still
  pending at shutdown are sent after the restart (:meth:`Dispatcher.start`).

Counters go into the daemon's :class:`~numbat.server.stats.Stats` (prefix
``numbat.analyzer``): ``notifications`` tagged ``notifier`` and ``outcome`` (``sent``,
``retried``: an attempt failed and another follows, ``failed``: given up) and ``dropped``
tagged ``notifier`` and ``reason`` (``queue_full``, ``failed``, ``rejected``,
``removed``: its notifier left the config); ``notifier.queued`` is each queue's depth.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, TypeVar

import msgspec

from numbat._backoff import Backoff, full_jitter
from numbat._importer import import_from_string
from numbat._ratelimit import RateLimitedLog
from numbat.analyzer.model import SEVERITY, Clock, Incident, Notification
from numbat.analyzer.rules import ALL, Match
from numbat.config.notifiers import NOTIFIERS, NotifierConfig
from numbat.errors import NumbatError
from numbat.event import now_ms
from numbat.server.stats import Stats

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[Any]]


class NotifyError(NumbatError):
    """One attempt to notify failed. ``retryable``: whether another attempt may succeed
    (False for an answer such as HTTP 400 or 403: the same request fails again);
    ``retry_after``: seconds the server asked to wait (HTTP ``Retry-After``), honoured
    up to the notifier's ``max_backoff``. The message never holds a credential (a
    routing key, a URL's token, a password)."""

    def __init__(
        self, message: str, *, retryable: bool = True, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


def retryable_status(status: int) -> bool:
    """Whether an HTTP error answer is worth retrying: 408, 429 and 5xx are; any other
    4xx says the request itself is wrong.

    >>> retryable_status(503), retryable_status(429), retryable_status(400)
    (True, True, False)
    """
    return status in (408, 429) or status >= 500


class Notifier(ABC):
    """One destination. ``Options``: its options class (a :class:`NotifierConfig`
    subclass, registered in :data:`numbat.config.notifiers.NOTIFIERS`).

    :meth:`send` makes one attempt and raises :class:`NotifyError` when it fails (the
    dispatcher retries, times out and counts); it is called by one task at a time.
    :meth:`close` releases what the notifier holds (an HTTP session)."""

    Options: ClassVar[type[NotifierConfig]] = NotifierConfig

    def __init__(self, options: NotifierConfig) -> None:
        self.options = options

    @abstractmethod
    async def send(self, notification: Notification) -> None:
        """One attempt at sending ``notification``; raises :class:`NotifyError`."""

    async def close(self) -> None:
        """Release what the notifier holds; no send follows."""

    def redact(self, text: str) -> str:
        """``text`` with this notifier's secrets (a routing key, a URL's token, a
        password) masked: the dispatcher passes every error through it before it is
        logged or recorded."""
        return text


def _described(worker: _Worker, exc: BaseException) -> str:
    return worker.notifier.redact(f"{type(exc).__name__}: {exc}")


OptionsT = TypeVar("OptionsT", bound=NotifierConfig)


def expect(options: NotifierConfig, cls: type[OptionsT]) -> OptionsT:
    """``options`` as the options class a notifier needs; TypeError if it is another."""
    if not isinstance(options, cls):
        raise TypeError(f"expected {cls.__name__} options, got {type(options).__name__}")
    return options


def notifier_class(kind: str) -> type[Notifier]:
    """The class for a notifier ``type``: a registered name or ``"module:Class"``.

    Raises ``ImportFromStringError`` (no such module or class) or TypeError (not a
    :class:`Notifier` subclass)."""
    entry = NOTIFIERS.get(kind)
    cls = import_from_string(entry.path if entry is not None else kind)
    if not (isinstance(cls, type) and issubclass(cls, Notifier)):
        raise TypeError(f"{kind!r} is not a numbat.analyzer.notifiers.Notifier subclass")
    return cls


class NotificationLog(Protocol):
    """The durable notification log (the daemon passes an async facade of the
    StateStore): rows not yet sent, and marking one sent or dropped."""

    async def pending_notifications(self, notifier: str) -> list[tuple[int, Notification]]: ...

    async def notification_done(
        self, row: int, outcome: Literal["sent", "dropped"], detail: str = ""
    ) -> None: ...


def _fields(incident: Incident) -> dict[str, Any]:
    """What a notifier's ``match.tags`` compare with: the tags, then the incident's own."""
    return {
        **incident.tags,
        "name": incident.name,
        "host": incident.host,
        "status": incident.status,
        "rule": incident.rule,
    }


class Route:
    """Which incidents one notifier takes: its ``match`` and ``min_status``."""

    def __init__(self, options: NotifierConfig) -> None:
        self.match = (
            ALL if options.match is None else Match(options.match.names, options.match.tags)
        )
        self.least = SEVERITY[options.min_status]

    def takes(self, incident: Incident, resolved: bool = False) -> bool:
        # A resolve goes where its problem went: by the status last notified.
        status = incident.notified if resolved else incident.status
        peak = incident.peak
        if peak is not None and (status is None or SEVERITY[peak] > SEVERITY[status]):
            # Told of it at its peak, a notifier hears the rest of its story: lowered
            # below its min_status, and resolved.
            status = peak
        if status is None or SEVERITY[status] < self.least:
            return False
        return self.match.name_matches(incident.name) and self.match.fields_match(_fields(incident))

    def restrict(self, notification: Notification) -> Notification | None:
        """``notification`` with only the incidents this route takes; None if no news
        is left (still-firing incidents are news only in a repeat)."""
        kept = {
            kind: [i for i in getattr(notification, kind) if self.takes(i, kind == "resolved")]
            for kind in ("new", "changed", "resolved", "flapping", "still_firing")
        }
        news = any(kept[k] for k in ("new", "changed", "resolved", "flapping"))
        if not news and not (notification.repeat and kept["still_firing"]):
            return None
        return msgspec.structs.replace(notification, **kept)


Row = tuple[int, Notification]


@dataclass(eq=False)
class _Worker:
    """One notifier, its queue and its task."""

    label: str
    options: NotifierConfig
    notifier: Notifier
    queue: deque[Row] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    current: Row | None = None
    sending: bool = False
    stopping: bool = False
    task: asyncio.Task[None] | None = None


class Dispatcher:
    """Every configured notifier with its queue and worker task (see the module doc).

    ``configs``: the ``[[analyzer.notifiers]]`` tables; ``log``: the notification log;
    ``stats``: where outcomes are counted; ``backoff``: seconds before retry ``attempt``
    (1, 2, ...), capped at each notifier's ``max_backoff`` (the default, full jitter, is
    given that cap); ``sleep`` and ``clock`` (ms, for ``give_up_after``): injected by
    tests.

    Call order: :meth:`start`, then :meth:`enqueue` (after each commit of the log rows)
    and :meth:`reload` as needed, and :meth:`close` once."""

    def __init__(
        self,
        configs: Sequence[NotifierConfig],
        log: NotificationLog,
        stats: Stats,
        *,
        backoff: Backoff = full_jitter,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = now_ms,
    ) -> None:
        self._configs = list(configs)
        self._clock = clock
        self._routes = {c.label: Route(c) for c in self._configs}
        self._log = log
        self._stats = stats
        self._backoff = backoff
        self._sleep = sleep
        self._workers: dict[str, _Worker] = {}
        self._marks: set[asyncio.Task[None]] = set()
        self._warn = RateLimitedLog(logger, interval=10.0)

    # -- routing ---------------------------------------------------------------------

    def route(self, notification: Notification) -> list[tuple[str, Notification]]:
        """``(notifier label, notification restricted to what it takes)`` for every
        notifier left with some news, in config order."""
        routed = []
        for label, route in self._routes.items():
            kept = route.restrict(notification)
            if kept is not None:
                routed.append((label, kept))
        return routed

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Build every notifier, queue its pending log rows (oldest first) and start
        its worker. Raises what building a notifier raises (ImportFromStringError,
        TypeError, ValueError naming the notifier)."""
        built = [(c, self._build(c)) for c in self._configs]
        for options, notifier in built:
            await self._add(options, notifier)

    def _build(self, options: NotifierConfig) -> Notifier:
        cls = notifier_class(options.type)
        try:
            return cls(options)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"notifiers.{options.label}: {exc}") from None

    async def _add(self, options: NotifierConfig, notifier: Notifier) -> None:
        worker = _Worker(options.label, options, notifier)
        self._workers[worker.label] = worker
        self._stats.gauge("notifier.queued", lambda: len(worker.queue), notifier=worker.label)
        pending = await self._log.pending_notifications(worker.label)
        # Rows enqueued while the log was read are in both: queue each once, the
        # pending ones (older) first.
        queued = {row for row, _ in worker.queue}
        worker.queue.extendleft(reversed([r for r in pending if r[0] not in queued]))
        self._trim(worker)
        self._run(worker)

    def _run(self, worker: _Worker) -> None:
        worker.stopping = False
        worker.task = asyncio.create_task(self._work(worker), name=f"notifier {worker.label}")

    def enqueue(self, rows: Sequence[tuple[int, str, Notification]]) -> None:
        """Queue ``(log row, notifier label, notification)`` triples (from :meth:`route`,
        once their rows are committed). Never blocks: a full queue drops its oldest."""
        for row, label, notification in rows:
            worker = self._workers.get(label)
            if worker is None:
                self._drop(label, row, "removed", f"no notifier named {label!r}")
            else:
                self._put(worker, (row, notification))

    def _put(self, worker: _Worker, row: Row) -> None:
        worker.queue.append(row)
        self._trim(worker)
        worker.wake.set()

    def _trim(self, worker: _Worker) -> None:
        """Drop the oldest waiting notifications past ``queue_size``."""
        while len(worker.queue) > worker.options.queue_size:
            oldest, _ = worker.queue.popleft()
            self._drop(worker.label, oldest, "queue_full", "queue full")
            self._warn.warning(
                f"full:{worker.label}",
                "notifier %s: queue full (%d), dropped the oldest notification",
                worker.label,
                worker.options.queue_size,
            )

    def _drop(self, label: str, row: int, reason: str, detail: str) -> None:
        self._stats.count("dropped", notifier=label, reason=reason)
        self._mark(row, "dropped", detail)

    def _mark(self, row: int, outcome: Literal["sent", "dropped"], detail: str = "") -> None:
        """Record ``outcome`` in the log without making the caller wait."""
        task = asyncio.create_task(self._record(row, outcome, detail))
        self._marks.add(task)
        task.add_done_callback(self._marks.discard)

    async def _record(self, row: int, outcome: Literal["sent", "dropped"], detail: str) -> None:
        try:
            await self._log.notification_done(row, outcome, detail)
        except Exception as exc:  # the log is the state store's: say so, carry on
            self._stats.count("notification_log_errors")
            self._warn.warning("log", "cannot mark notification %d %s: %r", row, outcome, exc)

    async def reload(self, configs: Sequence[NotifierConfig]) -> None:
        """Switch to ``configs``: a notifier whose options changed is rebuilt (its queue
        kept, an interrupted send retried first), a new one started with its pending
        rows, a removed one stopped and its queued rows marked dropped
        (``reason=removed``). Raises as :meth:`start` does, before changing anything."""
        wanted = {c.label: c for c in configs}
        built = {
            label: self._build(c)
            for label, c in wanted.items()
            if label not in self._workers or self._workers[label].options != c
        }
        for label in [label for label in self._workers if label not in wanted]:
            gone = self._workers.pop(label)
            await self._stop(gone, 0.0)
            self._stats.forget(notifier=label)
            for row, _ in gone.queue:
                self._drop(label, row, "removed", "notifier removed from the config")
        for label, notifier in built.items():
            worker = self._workers.get(label)
            if worker is None:
                await self._add(wanted[label], notifier)
                continue
            await self._stop(worker, 0.0)
            worker.options, worker.notifier = wanted[label], notifier
            self._run(worker)
        self._configs = list(configs)
        self._routes = {c.label: Route(c) for c in self._configs}

    async def close(self, timeout: float) -> None:
        """Stop every worker: a send in flight gets ``timeout`` seconds to finish;
        what is still queued stays pending in the log (sent after a restart)."""
        await asyncio.gather(*(self._stop(w, timeout) for w in self._workers.values()))
        if self._marks:
            await asyncio.wait(list(self._marks), timeout=max(timeout, 1.0))

    async def _stop(self, worker: _Worker, timeout: float) -> None:
        """End ``worker``'s task (after its send in flight, within ``timeout`` s), put
        an unfinished row back at the head of its queue and close its notifier."""
        task = worker.task
        worker.stopping = True
        if task is not None and not task.done():
            if worker.sending and timeout > 0:
                await asyncio.wait([task], timeout=timeout)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if worker.current is not None:
            worker.queue.appendleft(worker.current)
            worker.current = None
        try:
            await worker.notifier.close()
        except Exception as exc:
            logger.warning("notifier %s: close failed: %s", worker.label, _described(worker, exc))

    # -- the worker ------------------------------------------------------------------

    async def _work(self, worker: _Worker) -> None:
        while not worker.stopping:
            if not worker.queue:
                worker.wake.clear()
                await worker.wake.wait()
                continue
            worker.current = worker.queue.popleft()
            try:
                await self._deliver(worker, *worker.current)
            except Exception as exc:  # a bug here must not end this notifier's worker
                self._stats.count("notifier_errors", notifier=worker.label)
                logger.exception("notifier %s: %s", worker.label, _described(worker, exc))
            worker.current = None

    async def _deliver(self, worker: _Worker, row: int, notification: Notification) -> None:
        options, label = worker.options, worker.label
        # From the first attempt in this run: a row pending across a restart gets its
        # whole window again (the receiver may be back by now).
        give_up_at = self._clock() + options.give_up_after * 1000
        attempt = 0
        while True:
            attempt += 1
            error = await self._attempt(worker, notification)
            if error is None:
                # Recorded before counted: a "sent" in the stats is one a restart will
                # not send again (only a crash in the few ms between the receiver's
                # answer and this commit resends it once).
                await self._record(row, "sent", "")
                self._stats.count("notifications", notifier=label, outcome="sent")
                return
            if worker.stopping:
                return  # stays pending: tried again after the restart
            if (
                not error.retryable
                or attempt == options.max_attempts
                or self._clock() >= give_up_at
            ):
                reason = "rejected" if not error.retryable else "failed"
                self._stats.count("notifications", notifier=label, outcome="failed")
                self._drop(label, row, reason, str(error))
                self._warn.warning(
                    f"gave up:{label}",
                    "notifier %s: gave up on notification %s after %d attempt(s): %s",
                    label,
                    notification.id,
                    attempt,
                    error,
                )
                return
            self._stats.count("notifications", notifier=label, outcome="retried")
            self._warn.warning(
                f"retry:{label}", "notifier %s: attempt %d failed: %s", label, attempt, error
            )
            await self._sleep(self._delay(attempt, options, error.retry_after))

    def _delay(self, attempt: int, options: NotifierConfig, asked: float | None) -> float:
        """Seconds before the next attempt: the backoff, or longer if the server asked
        (``Retry-After``), at most ``max_backoff``."""
        if self._backoff is full_jitter:
            delay = full_jitter(attempt, cap=options.max_backoff)
        else:
            delay = self._backoff(attempt)
        return min(max(delay, asked or 0.0), options.max_backoff)

    async def _attempt(self, worker: _Worker, notification: Notification) -> NotifyError | None:
        """One send within the timeout; the error, or None when it went."""
        worker.sending = True
        try:
            async with asyncio.timeout(worker.options.timeout):
                await worker.notifier.send(notification)
        except NotifyError as exc:
            shown = worker.notifier.redact(str(exc))
            return NotifyError(shown, retryable=exc.retryable, retry_after=exc.retry_after)
        except TimeoutError:
            return NotifyError(f"no answer within {worker.options.timeout:g} s")
        except Exception as exc:  # a notifier's bug must not kill its worker
            return NotifyError(_described(worker, exc))
        finally:
            worker.sending = False
        return None
