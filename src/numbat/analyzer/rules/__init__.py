"""Rules: plain callables from an event to alerts, and what the engine needs to run them.

A rule is any callable ``rule(event) -> Iterable[Alert] | None``: a function, or a class
with its settings in ``__init__(options, *, name, clock)`` and its logic in
``__call__``. It judges; it never notifies (the incident manager decides what to tell).
A rule that must act on silence (a missed heartbeat, an absent series, a pending
``for``) also has ``tick(now) -> Iterable[Alert]``, called every ``tick_interval`` with
the time in ms; its work should be proportional to what is due (a heap), not to all it
tracks. A rule with state worth keeping across a restart has ``save()`` and ``restore()``
(:class:`Stateful`). State is keyed by the alert's shard key (the host) first, so
several analyzers can each own a share of the hosts without changing a rule.

Built-in kinds are registered in :data:`numbat.config.rules.RULES`; a ``type`` that is
an import path names a custom one.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from numbat._importer import import_from_string
from numbat.analyzer.model import Alert, Clock
from numbat.config.rules import RULES, MatchConfig, RuleConfig
from numbat.event import Event

RuleFunction = Callable[[Event], Iterable[Alert] | None]


@runtime_checkable
class Ticking(Protocol):
    """A rule that also acts on time passing (``now``: ms since the epoch)."""

    def tick(self, now: int) -> Iterable[Alert]: ...


@runtime_checkable
class Stateful(Protocol):
    """A rule whose state survives a restart, saved in the state database by key.

    ``save()``: what changed since the last call, as ``{key: JSON-able value}`` with None
    for a key to delete (empty when nothing changed); called every tick and at shutdown.
    ``restore(state, now)``: every key saved before, at start (``now`` ms: deadlines
    restart from it, so the analyzer's own downtime is not taken for silence)."""

    def save(self) -> dict[str, Any]: ...

    def restore(self, state: Mapping[str, Any], now: int) -> None: ...


class Match:
    """Which events a rule sees, compiled from a :class:`MatchConfig`: the name against
    globs (``*`` any text, ``?`` one character), then ``tags`` by equality (an event
    field, ``host`` included, compared as text).

    >>> m = Match(["web.*"], {"host": "web-1"})
    >>> m.name_matches("web.latency"), m.fields_match({"name": "web.latency", "host": "web-2"})
    (True, False)
    """

    __slots__ = ("_pattern", "names", "tags")

    def __init__(self, names: Iterable[str] = ("*",), tags: Mapping[str, str] | None = None):
        self.names = tuple(names)
        self.tags = dict(tags or {})
        self._pattern = re.compile("|".join(fnmatch.translate(n) for n in self.names), re.S)

    @classmethod
    def of(cls, config: MatchConfig | None, default: Match) -> Match:
        """The configured match, else the rule kind's ``default``."""
        return default if config is None else cls(config.names, config.tags)

    def name_matches(self, name: str) -> bool:
        return self._pattern.match(name) is not None

    def fields_match(self, event: Mapping[str, Any]) -> bool:
        tags = self.tags
        if not tags:
            return True
        for key, want in tags.items():
            got = event.get(key)
            if got is None or (got if isinstance(got, str) else str(got)) != want:
                return False
        return True

    def __call__(self, event: Mapping[str, Any]) -> bool:
        name = event.get("name")
        return isinstance(name, str) and self.name_matches(name) and self.fields_match(event)


ALL = Match()


class RuleError(ValueError):
    """A rule could not be built from its options (the message names the rule)."""


def build_rule(name: str, options: RuleConfig, clock: Clock) -> tuple[RuleFunction, Match]:
    """The callable for ``[analyzer.rules.NAME]`` and the events it sees.

    A built-in or custom class is built as ``cls(options, name=name, clock=clock)`` and
    says its default match in a ``match`` attribute (a :class:`Match`); a plain function
    is used as it is and sees every event unless ``match`` is configured. Raises
    :class:`RuleError` (its ``__init__`` refused the options) or ``ImportFromStringError``.
    """
    path = RULES[options.type].path if options.type in RULES else options.type
    found = import_from_string(path)
    if isinstance(found, type):
        try:
            rule = found(options, name=name, clock=clock)
        except (ValueError, TypeError) as exc:
            raise RuleError(f"rules.{name}: {exc}") from None
        default = getattr(rule, "match", ALL)
        return rule, Match.of(options.match, default if isinstance(default, Match) else ALL)
    return found, Match.of(options.match, ALL)
