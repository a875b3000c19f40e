"""``absence``: a dead man's switch. Events matching the rule must be seen at least
every ``every`` seconds per group (the ``group_by`` fields, the host by default).

Two cases: a group *seen before and now missing* is critical (repeated every ``every``
while it stays silent, which keeps its incident open) until it is seen again, which
resolves it; and, with ``at_start``, *nothing at all* seen for ``every`` seconds after
the rule started is one critical for the rule as a whole (id: the rule's name),
resolved by the first matching event. Groups silent for ``forget_after`` are
forgotten. Deadlines sit in a heap with lazy deletion, as the heartbeat rule's.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Any

from numbat.analyzer.model import Alert, Clock, Status
from numbat.analyzer.rules import ALL
from numbat.analyzer.rules._common import group_values
from numbat.config.rules import AbsenceRuleConfig
from numbat.event import Event

_START = ""  # the saved key of the "nothing at all" alert


class _Group:
    __slots__ = ("deadline", "last", "missed", "queued", "saved", "values")

    def __init__(self, values: tuple[str, ...], last: int, deadline: int) -> None:
        self.values = values
        self.last = last
        self.deadline = deadline
        self.queued = deadline
        self.saved = last
        self.missed = 0


class AbsenceRule:
    """See the module's docstring. Alerts: name the rule's name; host the group's host
    (when ``host`` is a ``group_by`` field); id ``host.name`` for the default grouping,
    else the group's values and the name joined by dots; tags the other group fields;
    ``value`` the seconds since the group was last seen; ``ttl`` ``every`` (ms)."""

    match = ALL  # the config requires a match

    def __init__(self, options: AbsenceRuleConfig, *, name: str, clock: Clock) -> None:
        self.name = name
        self.clock = clock
        self.every = round(options.every * 1000)
        self.forget_after = round(options.forget_after * 1000)
        self.save_every = min(3_600_000, self.forget_after // 10)
        self.group_by = tuple(options.group_by)
        self.by_host = self.group_by == ("host",)
        self.what = ", ".join(options.match.names) if options.match else "*"
        self.groups: dict[str, _Group] = {}
        self._heap: list[tuple[int, str]] = []
        self._dirty: set[str] = set()
        self.at_start = options.at_start
        self._start_due = clock() + self.every if options.at_start else None
        self._start_raised = False

    def __call__(self, event: Event) -> list[Alert] | None:
        values = group_values(event, self.group_by)
        key = ".".join(values)
        now = self.clock()
        deadline = now + self.every
        group = self.groups.get(key)
        if group is None:
            group = _Group(values, now, deadline)
            self.groups[key] = group
            heapq.heappush(self._heap, (deadline, key))
            self._dirty.add(key)
            self._start_due = None  # something was seen: from now on, groups are judged
            return self._seen_at_last(now)
        group.last = now
        group.deadline = deadline
        if now - group.saved >= self.save_every:
            self._dirty.add(key)
        if not group.missed:
            return None
        group.missed = 0
        self._dirty.add(key)
        message = f"{self.what} seen again from {self._describe(values)}"
        return [self._alert(group, "ok", message, now, 0.0)]

    def tick(self, now: int) -> list[Alert]:
        """Criticals for the groups overdue (again every ``every`` while silent), and
        for seeing nothing at all since start."""
        out: list[Alert] = []
        heap, groups = self._heap, self.groups
        while heap and heap[0][0] <= now:
            due, key = heapq.heappop(heap)
            group = groups.get(key)
            if group is None or group.queued != due:
                continue
            if group.deadline > now:
                group.queued = group.deadline
                heapq.heappush(heap, (group.deadline, key))
                continue
            if now - group.last >= self.forget_after:
                del groups[key]
                self._dirty.add(key)
                continue
            group.missed += 1
            group.deadline = group.queued = now + self.every
            heapq.heappush(heap, (group.deadline, key))
            self._dirty.add(key)
            silent = (now - group.last) / 1000
            message = (
                f"{self.what} not seen from {self._describe(group.values)} for {silent:g} s"
                f" (expected every {self.every / 1000:g} s)"
            )
            out.append(self._alert(group, "critical", message, now, silent))
        if self._start_due is not None and now >= self._start_due:
            self._start_due = now + self.every
            if not self._start_raised:
                self._start_raised = True
                self._dirty.add(_START)
            message = f"nothing matching {self.what} seen at all for {self.every / 1000:g} s"
            out.append(self._start_alert("critical", message, now))
        return out

    def save(self) -> dict[str, Any]:
        """Groups changed since the last call: ``[group values, last seen ms, times
        missed]`` (None: forgotten); ``""``: the "nothing at all" alert is raised (1)."""
        out: dict[str, Any] = {}
        for key in self._dirty:
            if key == _START:
                out[key] = 1 if self._start_raised else None
                continue
            group = self.groups.get(key)
            if group is None:
                out[key] = None
                continue
            group.saved = group.last
            out[key] = [list(group.values), group.last, group.missed]
        self._dirty.clear()
        return out

    def restore(self, state: Mapping[str, Any], now: int) -> None:
        """The saved groups, each due ``every`` after ``now`` (downtime is not absence);
        one missing before the restart stays raised until seen. Bad entries are skipped."""
        for key, saved in state.items():
            if key == _START:
                self._start_raised = bool(saved)
                continue
            try:
                values, last, missed = saved
                group = _Group(tuple(str(v) for v in values), int(last), now + self.every)
                group.missed = int(missed)
            except (TypeError, ValueError):
                continue
            if len(group.values) != len(self.group_by):
                continue  # saved under another group_by
            self.groups[key] = group
            self._heap.append((group.deadline, key))
        heapq.heapify(self._heap)
        if self.groups:
            self._start_due = None
        elif self.at_start:
            self._start_due = now + self.every

    def _seen_at_last(self, now: int) -> list[Alert] | None:
        """The first group ever seen resolves a "nothing at all" alert."""
        if not self._start_raised:
            return None
        self._start_raised = False
        self._dirty.add(_START)
        return [self._start_alert("ok", f"{self.what} seen", now)]

    def _describe(self, values: tuple[str, ...]) -> str:
        if self.by_host:
            return f"host {values[0]}" if values[0] else "no host"
        return ", ".join(f"{f}={v}" for f, v in zip(self.group_by, values, strict=True))

    def _alert(self, group: _Group, status: Status, message: str, now: int, value: float) -> Alert:
        host = ""
        tags: dict[str, str] = {}
        for field, val in zip(self.group_by, group.values, strict=True):
            if field == "host":
                host = val
            else:
                tags[field] = val
        return Alert(
            name=self.name,
            host=host,
            status=status,
            message=message,
            value=value,
            time=now,
            ttl=float(self.every),
            id=None if self.by_host else ".".join((*group.values, self.name)),
            tags=tags,
        )

    def _start_alert(self, status: Status, message: str, now: int) -> Alert:
        return Alert(
            name=self.name,
            status=status,
            message=message,
            time=now,
            ttl=float(self.every),
            id=self.name,
        )
