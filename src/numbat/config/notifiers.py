"""``[[analyzer.notifiers]]``: the notifier kinds (:data:`NOTIFIERS`) and their options.

Every notifier has a bounded queue of its own and retries with backoff and jitter
(:class:`NotifierConfig`); each kind adds its endpoint and format options.
"""

from __future__ import annotations

from typing import Any

from numbat.config._base import Plugin, Section, _convert, _options, _positive, _seconds
from numbat.config.rules import MatchConfig


class NotifierConfig(Section):
    """What every notifier takes. ``name``: its name in logs, stats and the notification
    log (default: its type); ``match``: only incidents it matches are sent to it;
    ``min_status``: the least severe status it is told about (``"warning"``: not
    ``unknown``); ``queue_size``: notifications waiting (when full the oldest is dropped
    and counted, ``reason=queue_full``); ``max_attempts`` and ``max_backoff`` (seconds):
    retries of one notification before it is dropped and counted (``reason=failed``);
    ``timeout``: seconds one attempt may take."""

    type: str
    name: str | None = None
    match: MatchConfig | None = None
    min_status: str = "warning"
    queue_size: int = 1_000
    max_attempts: int = 10
    max_backoff: float = 300.0
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.min_status not in ("unknown", "warning", "critical"):
            raise ValueError(
                f"min_status: got {self.min_status!r}; allowed: 'unknown', 'warning', 'critical'"
            )
        _positive(self, "queue_size", "max_attempts")
        _seconds(self, "max_backoff", "timeout")

    @property
    def label(self) -> str:
        return self.name or self.type.rpartition(":")[2].lower()


class LogNotifierConfig(NotifierConfig):
    """``type = "log"`` (or ``"console"``): one log line per change, at WARNING for
    problems and INFO for resolves."""


NOTIFIERS: dict[str, Plugin] = {
    "log": Plugin("numbat.analyzer.notifiers.log:LogNotifier", LogNotifierConfig),
    "console": Plugin("numbat.analyzer.notifiers.log:LogNotifier", LogNotifierConfig),
}
"""Notifier type -> plug-in; a notifier's ``type`` may also be an import path."""


def notifier_config(raw: Any, index: int) -> NotifierConfig:
    """Validate one ``[[analyzer.notifiers]]`` table."""
    where = f"notifiers[{index}]"
    if not isinstance(raw, dict):
        raise ValueError(f'{where}: expected a table with a type, e.g. {{type = "webhook"}}')
    kind = raw.get("type")
    if kind not in NOTIFIERS and not (isinstance(kind, str) and ":" in kind):
        allowed = ", ".join(NOTIFIERS)
        raise ValueError(
            f"{where}.type: got {kind!r}; allowed: {allowed}, or an import path module:Class"
        )
    cls = _options(NOTIFIERS, kind, NotifierConfig, f"{where}.type")
    return _convert(raw, cls, where, NOTIFIERS, "notifiers")
