"""What several built-in rules share: which keys they have raised (so an ``ok`` goes out
only for those, and survives a restart), a series' key, and a number from a field."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from numbat.analyzer.model import Status
from numbat.event import Event


class Raised:
    """Alert keys a rule has said something other than ``ok`` about, with their status.

    :meth:`update` says whether a judgement is news worth returning: a problem always
    is (it refreshes the incident's keep-alive), an ``ok`` only for a raised key.
    :meth:`save` / :meth:`restore` give the rule's ``save()`` / ``restore()``: keys ->
    status, None for a key cleared since the last save."""

    __slots__ = ("_changed", "status")

    def __init__(self) -> None:
        self.status: dict[str, Status] = {}
        self._changed: dict[str, Status | None] = {}

    def update(self, key: str, status: Status) -> bool:
        """Record ``status`` for ``key``; True when an alert should go out."""
        if status == "ok":
            if self.status.pop(key, None) is None:
                return False
            self._changed[key] = None
            return True
        if self.status.get(key) != status:
            self.status[key] = status
            self._changed[key] = status
        return True

    def save(self) -> dict[str, Any]:
        changed, self._changed = self._changed, {}
        return dict(changed)

    def restore(self, state: Mapping[str, Any]) -> None:
        for key, status in state.items():
            if isinstance(status, str) and status in ("warning", "critical", "unknown"):
                self.status[key] = status  # type: ignore[assignment]  # checked above


def group_values(event: Event, fields: Sequence[str]) -> tuple[str, ...]:
    """The event's values of ``fields`` as text ("" for a missing one)."""
    return tuple(_text(event.get(f)) for f in fields)


def _text(value: object) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def number(event: Event, field: str) -> float | None:
    """The event's ``field`` when it is a number (booleans are not)."""
    value = event.get(field)
    kind = type(value)
    if kind is float or kind is int:  # nearly every call: checked first, cheaply
        return float(value)  # type: ignore[arg-type]  # an int or a float
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
