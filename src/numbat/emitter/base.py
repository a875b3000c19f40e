"""The emitter's public API and backlog, and the thread-driven :class:`Emitter`.

``metric()`` validates and encodes the event in the caller, appends the bytes to a
bounded backlog and returns; a background thread connects, sends in batches and
reconnects. Nothing here blocks the caller or raises into it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final, Literal

from numbat._backoff import reconnect
from numbat._ratelimit import RateLimitedLog
from numbat._redact import redact_url
from numbat.emitter import DEFAULT_MAX_BACKLOG_BYTES, make_transport
from numbat.emitter.transport import SendError, Transport
from numbat.errors import EventError
from numbat.event import MAX_NAME_BYTES, Event, Scalar, normalize

State = Literal["connecting", "ready", "disconnected", "failed", "closed"]
DropReason = Literal["backlog_full", "invalid", "failed", "closed"]

BATCH_BYTES: Final = 256 * 1024
CONNECT_TIMEOUT: Final = 5.0

log = logging.getLogger(__name__)


class Backlog:
    """A FIFO of encoded events bounded by count and bytes; full means the oldest go.

    >>> b = Backlog(max_items=2, max_bytes=1024)
    >>> b.push(b"a"), b.push(b"b"), b.push(b"c")
    (0, 0, 1)
    >>> b.take(1024)
    [b'b', b'c']
    """

    def __init__(self, max_items: int | None, max_bytes: int) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._items: deque[bytes] = deque()
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def push(self, payload: bytes) -> int:
        """Append one payload; return how many old ones were dropped to make room."""
        with self.lock:
            self._items.append(payload)
            self.nbytes += len(payload)
            if self.nbytes > self.max_bytes or (
                self.max_items is not None and len(self._items) > self.max_items
            ):
                return self._trim()
            return 0

    def take(self, max_bytes: int) -> list[bytes]:
        """Remove and return payloads from the front, about ``max_bytes`` worth (at least one)."""
        batch: list[bytes] = []
        size = 0
        with self.lock:
            items = self._items
            while items and size < max_bytes:
                payload = items.popleft()
                batch.append(payload)
                size += len(payload)
            self.nbytes -= size
        return batch

    def putback(self, batch: list[bytes]) -> int:
        """Return an unsent batch to the front; return how many payloads did not fit."""
        with self.lock:
            self._items.extendleft(reversed(batch))
            self.nbytes += sum(map(len, batch))
            return self._trim()

    def clear(self) -> int:
        with self.lock:
            dropped = len(self._items)
            self._items.clear()
            self.nbytes = 0
            return dropped

    def _trim(self) -> int:
        items, dropped = self._items, 0
        limit = self.max_items if self.max_items is not None else len(items)
        while items and (self.nbytes > self.max_bytes or len(items) > limit):
            self.nbytes -= len(items.popleft())
            dropped += 1
        return dropped


class BaseEmitter:
    """What every emitter offers; engines subclass it and drive the transport.

    Arguments (the original numbat-emitter's, in Python spelling):

    * ``uri``: ``tcp://host:port``, ``udp://host:port``, ``socket:/path`` or
      ``unix:///path``, ``ws://host:port/path`` or ``wss://``, ``statsd://host:port``.
    * ``app``: prefixed (``app.``) to every metric name that does not start with it.
    * ``node``: sent as the ``node`` field of every event when given.
    * ``max_backlog`` / ``max_backlog_bytes``: bounds of the queue of unsent events;
      when full the oldest are dropped and counted under ``backlog_full``.
    * ``max_retries``: consecutive failed connects or sends before the emitter gives up and its
      ``state`` becomes ``"failed"``.
    * ``host``, ``backoff``, ``connect_timeout``, ``transport``: injectable for tests.
    """

    def __init__(
        self,
        uri: str,
        app: str = "numbat",
        node: str | None = None,
        *,
        max_backlog: int | None = None,
        max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES,
        max_retries: int = 100,
        host: str | None = None,
        backoff: Callable[[int], float] = reconnect,
        connect_timeout: float = CONNECT_TIMEOUT,
        transport: Transport | None = None,
    ) -> None:
        self.uri = uri
        self.shown_uri = redact_url(uri)  # what logs and messages show: no credentials
        self.app = app
        self.max_retries = max_retries
        self.transport: Transport = transport or make_transport(uri)
        self.backlog = Backlog(max_backlog, max_backlog_bytes)
        self.state: State = "connecting"
        self.sent = 0
        self.send_errors = 0
        self.reconnects = 0
        self.dropped: dict[DropReason, int] = dict.fromkeys(
            ("backlog_full", "invalid", "failed", "closed"), 0
        )
        self._prefix = f"{app}." if app else ""
        self._defaults: dict[str, Scalar] = {"host": host or socket.gethostname()}
        if node is not None:
            self._defaults["node"] = node
        self._backoff = backoff
        self._connect_timeout = connect_timeout
        self._retries = 0
        self._warn = RateLimitedLog(log)
        self._state_changed = threading.Condition()

    # -- the public API ---------------------------------------------------------------

    def metric(
        self, attrs: Mapping[str, Any] | str | None = None, /, **fields: Any
    ) -> Event | None:
        """Queue one event; return the event as it will be sent, or ``None`` if dropped.

        ``attrs`` is a mapping or a bare name; keyword ``fields`` are merged over it.

        >>> from numbat.testing import CaptureEmitter
        >>> em = CaptureEmitter(app="web")
        >>> em.metric("requests", value=3, route="/")["name"]
        'web.requests'
        >>> em.metric({"value": 3}) is None  # no name: dropped and counted
        True
        """
        try:
            raw = attrs if type(attrs) is dict and not fields else self._merge(attrs, fields)
            event = normalize(raw, defaults=self._defaults)
            self._prefix_name(event)
            payload = self.transport.encode(event, raw)
        except (ValueError, TypeError) as exc:
            self._drop("invalid")
            self._warn.warning("invalid", "numbat: dropped an invalid metric: %s", exc)
            return None
        if self.state in ("failed", "closed"):
            self._drop(self.state)
            return None
        dropped = self.backlog.push(payload)
        if dropped:
            self._drop("backlog_full", dropped)
        self._wake()
        return event

    def timer(self, name: str, **fields: Any) -> Timer:
        """Context manager and decorator that emits the elapsed milliseconds as ``value``,
        with the display hint ``timing`` (as :meth:`timing`).

        >>> from numbat.testing import CaptureEmitter
        >>> em = CaptureEmitter(app="web")
        >>> with em.timer("db.query", table="users"):
        ...     pass
        >>> em.events[0]["name"], em.events[0]["table"], em.events[0]["type"]
        ('web.db.query', 'users', 'timing')
        """
        return Timer(self, name, fields)

    def counter(self, name: str, value: float = 1, **fields: Any) -> Event | None:
        """Count ``value`` occurrences (an increment, as StatsD's ``incr``: 1 per request,
        not a running total) with the display hint ``counter`` (field ``type``); the
        dashboard draws the increments as a rate per second. See :meth:`metric`.

        >>> from numbat.testing import CaptureEmitter
        >>> em = CaptureEmitter(app="web")
        >>> event = em.counter("requests", route="/")
        >>> event["name"], event["value"], event["type"], event["route"]
        ('web.requests', 1, 'counter', '/')
        """
        return self.metric(name, **{**fields, "value": value, "type": "counter"})

    def gauge(self, name: str, value: float, **fields: Any) -> Event | None:
        """Report a level (queue length, memory in bytes) with the display hint ``gauge``
        (field ``type``); drawn as a line. See :meth:`metric`."""
        return self.metric(name, **{**fields, "value": value, "type": "gauge"})

    def timing(self, name: str, ms: float, **fields: Any) -> Event | None:
        """Report a duration of ``ms`` milliseconds with the display hint ``timing``
        (field ``type``); drawn as p50/p90/p99 bands. See :meth:`metric` and
        :meth:`timer`, which measures one for you."""
        return self.metric(name, **{**fields, "value": ms, "type": "timing"})

    def annotate(self, name: str, description: str, **fields: Any) -> Event | None:
        """Note something that happened (a deploy) with its ``description`` text and the
        display hint ``annotation`` (field ``type``); drawn as a marker. It takes no
        value: the event model fills in 1, as for any event sent without one.

        >>> from numbat.testing import CaptureEmitter
        >>> em = CaptureEmitter(app="web")
        >>> event = em.annotate("deploy", "v1.2 by ann", version="1.2")
        >>> event["type"], event["description"], event["value"]
        ('annotation', 'v1.2 by ann', 1)
        """
        return self.metric(name, **{**fields, "description": description, "type": "annotation"})

    @property
    def queued(self) -> int:
        """Events waiting in the backlog."""
        return len(self.backlog)

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters, for the caller's own monitoring."""
        return {
            "state": self.state,
            "queued": len(self.backlog),
            "queued_bytes": self.backlog.nbytes,
            "sent": self.sent,
            "send_errors": self.send_errors,
            "reconnects": self.reconnects,
            "dropped": dict(self.dropped),
        }

    def wait_for_state(self, *states: State, timeout: float | None = None) -> bool:
        """Block until ``state`` is one of ``states``; for tests and scripts, not hot paths."""
        with self._state_changed:
            return self._state_changed.wait_for(lambda: self.state in states, timeout)

    # -- shared by the engines --------------------------------------------------------

    @staticmethod
    def _merge(attrs: Mapping[str, Any] | str | None, fields: dict[str, Any]) -> dict[str, Any]:
        if isinstance(attrs, str):
            raw: dict[str, Any] = {"name": attrs}
        elif attrs is None:
            raw = {}
        else:
            raw = dict(attrs)
        raw.update(fields)
        return raw

    def _prefix_name(self, event: Event) -> None:
        name = str(event["name"])
        prefix = self._prefix
        if not prefix or name.startswith(prefix) or name == self.app:
            return
        name = prefix + name
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise EventError(
                "name", "bad_name", f"is over {MAX_NAME_BYTES} bytes with the app prefix"
            )
        event["name"] = name

    def _drop(self, reason: DropReason, count: int = 1) -> None:
        with self.backlog.lock:
            self.dropped[reason] += count

    def _set_state(self, state: State) -> None:
        with self._state_changed:
            self.state = state
            self._state_changed.notify_all()

    def _on_connected(self) -> None:
        if self._retries or self.sent:
            self.reconnects += 1
        self._set_state("ready")

    def _on_sent(self, count: int) -> None:
        # Only a delivered batch proves the destination works: a peer that accepts
        # connections but fails every write must still back off, then give up.
        self.sent += count
        self._retries = 0

    def _on_connect_failed(self, exc: BaseException) -> float | None:
        """Record a failed connect; return the delay before the next try, or None to give up."""
        self._warn.warning("connect", "numbat: cannot connect to %s: %s", self.shown_uri, exc)
        return self._next_retry()

    def _on_send_failed(self, batch: list[bytes], exc: BaseException) -> float | None:
        """Requeue what was not sent; return the delay before reconnecting, or None to give up."""
        sent = exc.sent if isinstance(exc, SendError) else 0
        self.sent += sent
        self.send_errors += 1
        dropped = self.backlog.putback(batch[sent:])
        if dropped:
            self._drop("backlog_full", dropped)
        self._warn.warning("send", "numbat: sending to %s failed: %s", self.shown_uri, exc)
        return self._next_retry()

    def _next_retry(self) -> float | None:
        self._retries += 1
        if self._retries > self.max_retries:
            self._set_state("failed")
            self._drop("failed", self.backlog.clear())
            log.error("numbat: gave up on %s after %d retries", self.shown_uri, self.max_retries)
            return None
        self._set_state("disconnected")
        return self._backoff(self._retries)

    def _wake(self) -> None:
        raise NotImplementedError


class Timer(contextlib.ContextDecorator):
    """Emits ``name`` with the elapsed wall time in ms; see :meth:`BaseEmitter.timer`."""

    def __init__(self, emitter: BaseEmitter, name: str, fields: dict[str, Any]) -> None:
        self._emitter = emitter
        self._name = name
        self._fields = fields
        self._start = 0.0

    def _recreate_cm(self) -> Timer:
        # Each decorated call gets its own timer, so concurrent calls do not share a start.
        return Timer(self._emitter, self._name, self._fields)

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        elapsed = (time.perf_counter() - self._start) * 1000
        self._emitter.timing(self._name, elapsed, **self._fields)


_live: weakref.WeakSet[Emitter] = weakref.WeakSet()


class Emitter(BaseEmitter):
    """Sends events from a daemon thread; for ordinary (non-asyncio) code.

    Example::

        em = Emitter("tcp://127.0.0.1:3333", app="web")  # connects in the background
        em.metric({"name": "requests", "value": 1, "route": "/"})
        em.close(timeout=5.0)  # flushes; True when everything was sent

    The thread never keeps the process alive; at interpreter exit, each open emitter
    gets up to ``flush_at_exit`` seconds (default 1) to deliver what is queued.
    """

    def __init__(
        self,
        uri: str,
        app: str = "numbat",
        node: str | None = None,
        *,
        flush_at_exit: float = 1.0,
        **options: Any,
    ) -> None:
        super().__init__(uri, app, node, **options)
        self.flush_at_exit = flush_at_exit
        self._deadline: float | None = None
        self._start()
        _live.add(self)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued has been sent; True if it all was."""
        with self._state_changed:
            return self._state_changed.wait_for(self._drained, timeout)

    def close(self, timeout: float = 5.0) -> bool:
        """Send what can be sent within ``timeout`` seconds, then disconnect.

        Returns True when nothing was left unsent (and the emitter had not given up).
        Later ``metric()`` calls are dropped (counted under ``closed``).
        """
        if self.state == "closed":
            return False
        self._deadline = time.monotonic() + timeout
        self._wakeup.set()
        self._thread.join(max(timeout, 0) + 0.1)
        ok = self._drained() and self.state != "failed"
        self._drop("closed", self.backlog.clear())
        self._set_state("closed")
        _live.discard(self)
        return ok

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drained(self) -> bool:
        return not self.backlog and not self._inflight

    def _start(self) -> None:
        self._inflight = False
        self._idle = False
        self._wakeup = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"numbat-emitter {self.shown_uri}", daemon=True
        )
        self._thread.start()

    def _wake(self) -> None:
        if self._idle:
            self._wakeup.set()

    def _closing(self) -> bool:
        return self._deadline is not None and (
            time.monotonic() >= self._deadline or self._drained()
        )

    def _run(self) -> None:
        connected = False
        while not self._closing() and self.state != "failed":
            if not connected:
                connected = self._connect()
            elif not self._send_some():
                connected = False
        self.transport.close()

    def _connect(self) -> bool:
        try:
            self.transport.connect(self._connect_timeout)
        except OSError as exc:
            delay = self._on_connect_failed(exc)
            if delay is not None:
                self._sleep(delay)
            return False
        self._on_connected()
        return True

    def _sleep(self, delay: float) -> None:
        if self._deadline is not None:
            delay = min(delay, max(self._deadline - time.monotonic(), 0))
        self._wakeup.wait(delay)
        self._wakeup.clear()

    def _send_some(self) -> bool:
        """Send one batch, or wait for one; False when the connection broke."""
        self._inflight = True
        batch = self.backlog.take(BATCH_BYTES)
        if not batch:
            self._inflight = False
            self._notify_drained()
            self._idle = True
            if not self.backlog and self._deadline is None:
                self._wakeup.wait(1.0)
            self._idle = False
            self._wakeup.clear()
            return True
        try:
            self.transport.send(batch)
        except OSError as exc:
            self._inflight = False
            self.transport.close()
            delay = self._on_send_failed(batch, exc)
            if delay is not None:
                self._sleep(delay)
            return False
        self._on_sent(len(batch))
        self._inflight = False
        return True

    def _notify_drained(self) -> None:
        with self._state_changed:
            self._state_changed.notify_all()

    def _after_fork(self) -> None:
        # The sender thread does not survive fork(); the child gets a fresh one. What
        # was queued before the fork is the parent's to send: a copy sent by every
        # child (each worker of a pre-forking server) would count it N+1 times.
        self.transport.close()
        self._state_changed = threading.Condition()
        self.backlog.lock = threading.Lock()
        self.backlog.clear()
        self._deadline = None
        self.state = "connecting"
        self._start()


def _flush_all_at_exit() -> None:
    for emitter in list(_live):
        emitter.close(emitter.flush_at_exit)


def _reset_after_fork() -> None:
    for emitter in list(_live):
        emitter._after_fork()


atexit.register(_flush_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
