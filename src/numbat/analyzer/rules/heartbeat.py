"""``heartbeat``: automatic presence, deduced from the beats themselves (the original's
heartbeat rule).

The first ``heartbeat`` (or ``<prefix>.heartbeat``) event from a host starts tracking
the key ``<host>.<prefix>`` with the event's ``ttl``; each beat renews it. A key whose
ttl passes without a beat is critical ("<key> heartbeat not heard for N beats"),
repeated every ttl while it stays silent (the repeat keeps the incident open: its
keep-alive is twice the ttl); the next beat resolves it. A ``shutdown`` (or
``<prefix>.shutdown``) event stops tracking without an alert. A key silent for
``forget_after`` is forgotten, and :meth:`HeartbeatRule.forget` decommissions one.

Deadlines sit in a heap with lazy deletion: a beat only moves its key's deadline in
place, and an expiry tick pops the entries that are due, re-queuing those that were
renewed meanwhile; so a tick's work is proportional to the keys due, not to all keys,
and the heap holds one live entry per key.
"""

from __future__ import annotations

import heapq
import sys
from collections.abc import Mapping
from typing import Any

from numbat.analyzer.model import Alert, Clock, Status
from numbat.analyzer.rules import Match
from numbat.config.rules import HeartbeatRuleConfig
from numbat.event import Event

_BEAT = ".heartbeat"
_STOP = ".shutdown"
_UNSURE = -1  # restored: a critical may have gone out before the restart


class _Key:
    """One tracked key; ``__slots__`` keeps it near 100 bytes (times and ttl in ms)."""

    __slots__ = ("deadline", "host", "last", "missed", "prefix", "queued", "saved", "ttl")

    def __init__(self, host: str, prefix: str, ttl: int, last: int, deadline: int) -> None:
        self.host = host
        self.prefix = prefix
        self.ttl = ttl
        self.last = last  # the last beat (what forget_after counts from)
        self.deadline = deadline  # when the next beat is due
        self.queued = deadline  # the deadline of this key's live heap entry
        self.saved = last  # ``last`` as saved (it is saved again when it has moved far)
        self.missed = 0  # beats missed so far; _UNSURE after a restore


class HeartbeatRule:
    """Tracks ``<host>.<prefix>`` keys from heartbeats; see the module's docstring.

    Alerts: name ``<prefix>.heartbeat`` (``heartbeat`` for a bare one), host the
    beat's host, id the default ``host.name``; ``value`` the beats missed, ``ttl`` the
    key's ttl (ms).

    >>> now = [0]
    >>> rule = HeartbeatRule(HeartbeatRuleConfig(), name="heartbeat", clock=lambda: now[0])
    >>> rule({"name": "web.heartbeat", "host": "h1", "ttl": 16000, "time": 0})
    >>> [a.message for a in rule.tick(16_000)]
    ['h1.web heartbeat not heard for 1 beats']
    """

    match = Match(["heartbeat", "*" + _BEAT, "shutdown", "*" + _STOP])

    def __init__(self, options: HeartbeatRuleConfig, *, name: str, clock: Clock) -> None:
        self.name = name
        self.clock = clock
        self.default_ttl = round(options.default_ttl * 1000)
        self.forget_after = round(options.forget_after * 1000)
        # A key's last beat is saved again once it has moved this far (ms), so that a
        # restart forgets on time without writing every key on every beat.
        self.save_every = min(3_600_000, self.forget_after // 10)
        self.keys: dict[str, _Key] = {}
        self._heap: list[tuple[int, str]] = []
        self._dirty: set[str] = set()

    def __call__(self, event: Event) -> list[Alert] | None:
        name = event["name"]
        assert isinstance(name, str)  # a valid event's name is text
        host = event.get("host", "")
        host = host if isinstance(host, str) else str(host)
        if name == "shutdown" or name.endswith(_STOP):
            return self._shutdown(_key(host, _prefix(name, _STOP)), event)
        prefix = _prefix(name, _BEAT)
        key = _key(host, prefix)
        raw_ttl = event.get("ttl")
        ttl = round(raw_ttl) if isinstance(raw_ttl, int | float) else self.default_ttl
        now = self.clock()
        deadline = now + ttl
        tracked = self.keys.get(key)
        if tracked is None:
            tracked = _Key(sys.intern(host), sys.intern(prefix), ttl, now, deadline)
            self.keys[key] = tracked
            heapq.heappush(self._heap, (deadline, key))
            self._dirty.add(key)
            return None
        tracked.last = now
        tracked.deadline = deadline
        if deadline < tracked.queued:  # a shorter ttl than before: due sooner
            tracked.queued = deadline
            heapq.heappush(self._heap, (deadline, key))
        if ttl != tracked.ttl:
            tracked.ttl = ttl
            self._dirty.add(key)
        elif now - tracked.saved >= self.save_every:
            self._dirty.add(key)
        if not tracked.missed:
            return None
        tracked.missed = 0
        self._dirty.add(key)
        return [self._alert(key, tracked, "ok", f"{key} heartbeat heard again", _time(event))]

    def tick(self, now: int) -> list[Alert]:
        """Critical alerts for the keys whose beat is overdue (and again every ttl)."""
        heap = self._heap
        keys = self.keys
        out: list[Alert] = []
        while heap and heap[0][0] <= now:
            due, key = heapq.heappop(heap)
            tracked = keys.get(key)
            if tracked is None or tracked.queued != due:
                continue  # forgotten, shut down, or superseded by a sooner entry
            if tracked.deadline > now:  # beaten since it was queued: queue it again
                tracked.queued = tracked.deadline
                heapq.heappush(heap, (tracked.deadline, key))
                continue
            if now - tracked.last >= self.forget_after:
                del keys[key]
                self._dirty.add(key)
                continue
            # Counted per expiry, not from the last beat: a restart's downtime is no miss.
            missed = max(tracked.missed, 0) + 1
            tracked.missed = missed
            tracked.deadline = tracked.queued = now + tracked.ttl
            heapq.heappush(heap, (tracked.deadline, key))
            self._dirty.add(key)
            message = f"{key} heartbeat not heard for {missed} beats"
            out.append(self._alert(key, tracked, "critical", message, now))
        return out

    def tracked(self) -> list[dict[str, Any]]:
        """Every key tracked: ``key``, ``host``, ``prefix``, ``ttl`` (ms), ``last`` (ms,
        the last beat), ``missed`` (beats missed so far, 0 while beating; -1 after a
        restart until the first beat), sorted by key (the API's ``/heartbeats``)."""
        return [
            {
                "key": key,
                "host": k.host,
                "prefix": k.prefix,
                "ttl": k.ttl,
                "last": k.last,
                "missed": k.missed if k.missed >= 0 else -1,
            }
            for key, k in sorted(self.keys.items())
        ]

    def forget(self, key: str) -> bool:
        """Stop tracking ``key``, e.g. a decommissioned host: ``<host>.<prefix>``, or the
        incident id ``<host>.<prefix>.heartbeat`` as the API lists it. False when it was
        not tracked. Its open incident, if any, then expires."""
        if key not in self.keys and key.endswith(_BEAT):
            key = key[: -len(_BEAT)]
        if self.keys.pop(key, None) is None:
            return False
        self._dirty.add(key)
        return True

    def save(self) -> dict[str, Any]:
        """Keys changed since the last call: ``[host, prefix, ttl ms, last beat ms,
        beats missed]``, None for a key no longer tracked."""
        out: dict[str, Any] = {}
        for key in self._dirty:
            tracked = self.keys.get(key)
            if tracked is None:
                out[key] = None
                continue
            tracked.saved = tracked.last
            missed = max(tracked.missed, 0)
            out[key] = [tracked.host, tracked.prefix, tracked.ttl, tracked.last, missed]
        self._dirty.clear()
        return out

    def restore(self, state: Mapping[str, Any], now: int) -> None:
        """Track the saved keys again, each due one ttl from ``now`` (the analyzer's own
        downtime is not the hosts' silence); a key's next beat resolves whatever it may
        have raised before. Malformed entries are skipped."""
        for key, saved in state.items():
            try:
                host, prefix, ttl, last, missed = saved
                tracked = _Key(str(host), str(prefix), int(ttl), int(last), now + int(ttl))
                tracked.missed = int(missed) if int(missed) > 0 else _UNSURE
            except (TypeError, ValueError):
                continue
            if tracked.ttl <= 0:
                continue
            self.keys[key] = tracked
            self._heap.append((tracked.deadline, key))
        heapq.heapify(self._heap)

    def _shutdown(self, key: str, event: Event) -> list[Alert] | None:
        tracked = self.keys.pop(key, None)
        if tracked is None:
            return None
        self._dirty.add(key)
        if not tracked.missed:
            return None
        return [self._alert(key, tracked, "ok", f"{key} shut down", _time(event))]

    def _alert(self, key: str, tracked: _Key, status: Status, message: str, time: int) -> Alert:
        prefix = tracked.prefix
        return Alert(
            name=f"{prefix}{_BEAT}" if prefix else "heartbeat",
            host=tracked.host,
            status=status,
            message=message,
            value=float(max(tracked.missed, 0)),
            time=time,
            ttl=float(tracked.ttl),
        )


def _prefix(name: str, suffix: str) -> str:
    """``web.heartbeat`` -> ``web``; ``heartbeat`` -> ``""``; another name is its own."""
    if name.endswith(suffix):
        return name[: -len(suffix)]
    return "" if name == suffix[1:] else name


def _key(host: str, prefix: str) -> str:
    return f"{host}.{prefix}" if host and prefix else host or prefix


def _time(event: Event) -> int:
    time = event.get("time", 0)
    return time if isinstance(time, int) else 0
