"""A scripted notifier, loaded by its import path (``tests.analyzer.notifiers.fakes:Scripted``):
each attempt takes the next outcome from ``SCRIPTS[name]`` (the last one is kept;
none: ``"ok"``)."""

from __future__ import annotations

import asyncio

from numbat.analyzer.model import Notification
from numbat.analyzer.notifiers import Notifier, NotifyError
from numbat.config.notifiers import NotifierConfig

SCRIPTS: dict[str, list[str]] = {}
"""Notifier name -> outcomes in turn: ok, fail (retryable), reject, crash, hang."""
SENT: dict[str, list[Notification]] = {}
ATTEMPTS: dict[str, int] = {}
CLOSED: list[str] = []
GATES: dict[str, asyncio.Event] = {}
"""Notifier name -> an event each attempt waits for first (to hold a worker busy)."""


def reset() -> None:
    for table in (SCRIPTS, SENT, ATTEMPTS, GATES):
        table.clear()
    CLOSED.clear()


class Scripted(Notifier):
    Options = NotifierConfig

    def __init__(self, options: NotifierConfig) -> None:
        super().__init__(options)
        self.name = options.label

    async def send(self, notification: Notification) -> None:
        ATTEMPTS[self.name] = ATTEMPTS.get(self.name, 0) + 1
        gate = GATES.get(self.name)
        if gate is not None:
            await gate.wait()
        script = SCRIPTS.get(self.name) or ["ok"]
        outcome = script.pop(0) if len(script) > 1 else script[0]
        if outcome == "fail":
            raise NotifyError("server said 503")
        if outcome == "reject":
            raise NotifyError("server said 400", retryable=False)
        if outcome == "crash":
            raise RuntimeError("a bug")
        if outcome == "hang":
            await asyncio.Event().wait()
        SENT.setdefault(self.name, []).append(notification)

    async def close(self) -> None:
        CLOSED.append(self.name)
