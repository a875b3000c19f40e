"""What the incident manager's tests share: an injected clock, a manager with chosen
options, alerts in one line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from numbat.analyzer.incidents import Effects, IncidentManager
from numbat.analyzer.model import Alert
from numbat.config.analyzer import FlappingConfig, GroupingConfig, InhibitConfig

T0 = 1_700_000_000_000


class Clock:
    """A clock tests move by hand (ms)."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> int:
        self.now += int(seconds * 1000)
        return self.now


def manager(
    clock: Clock,
    *,
    group_by: Sequence[str] = ("name",),
    group_wait: float = 0.0,
    group_interval: float = 10.0,
    repeat_interval: float = 4 * 3600.0,
    window: float = 600.0,
    max_changes: int = 6,
    inhibit: Sequence[InhibitConfig] | None = None,
    state_interval: float = 60.0,
    retain_resolved: float = 86_400.0,
) -> IncidentManager:
    return IncidentManager(
        clock=clock,
        grouping=GroupingConfig(
            group_by=list(group_by),
            group_wait=group_wait,
            group_interval=group_interval,
            repeat_interval=repeat_interval,
        ),
        flapping=FlappingConfig(window=window, max_changes=max_changes),
        inhibit=[] if inhibit is None else inhibit,
        state_interval=state_interval,
        retain_resolved=retain_resolved,
    )


def alert(name: str, status: str, host: str = "h1", **fields: Any) -> Alert:
    return Alert(name=name, status=status, host=host, **fields)  # type: ignore[arg-type]


def step(m: IncidentManager, clock: Clock, *alerts: Alert) -> Effects:
    """Apply alerts, tick at the clock's time, take the effects."""
    m.apply(alerts)
    m.tick(clock.now)
    return m.take()


def told(effects: Effects) -> list[tuple[str, str, str]]:
    """(kind, incident id, status) of every incident the effects' notifications tell."""
    return [
        (kind, incident.id, incident.status)
        for n in effects.notifications
        for kind, incident in n.changes()
    ]
