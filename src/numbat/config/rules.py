"""``[analyzer.rules.NAME]``: the rule kinds (:data:`RULES`) and the options each takes.

Every rule takes ``match`` (which events it sees), ``for`` and ``keep_firing_for``
(:class:`RuleConfig`); each built-in adds its own. Durations are seconds here; the rule
converts them to ms once, when it is built.
"""

from __future__ import annotations

from typing import Any

import msgspec

from numbat.config._base import Plugin, Section, _convert, _not_negative, _options


class MatchConfig(Section):
    """Which events a rule sees: a ``name`` glob or a list of them (``*`` any text, ``?``
    one character), and ``tags`` (event fields, ``host`` included) that must all be
    equal. Without it a rule sees what its kind says (a heartbeat rule: heartbeats)."""

    name: str | list[str] = "*"
    tags: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [self.name] if isinstance(self.name, str) else list(self.name)

    def __post_init__(self) -> None:
        if not self.names or any(not n for n in self.names):
            raise ValueError("name: give a glob such as 'web.*' (empty matches nothing)")


class RuleConfig(Section):
    """What every rule takes. ``for``: seconds a problem must hold before it fires (an
    alert that clears sooner never opens an incident); ``keep_firing_for``: seconds it
    must stay clear before it resolves (a flap back within that time keeps it open);
    ``match``: overrides the kind's own choice of events. A custom rule (``type`` an
    import path) with an ``Options`` subclass of this class takes its keys too."""

    type: str = ""
    match: MatchConfig | None = None
    for_: float = msgspec.field(name="for", default=0.0)
    keep_firing_for: float = 0.0

    def __post_init__(self) -> None:
        _not_negative(self, "keep_firing_for")
        # "for" is for_ in Python: name it as the config does.
        if not 0 <= self.for_ <= 30 * 86_400:
            raise ValueError(f"for: must be 0 or more seconds, at most 30 days, got {self.for_}")


class StatusRuleConfig(RuleConfig):
    """``type = "status"``: every event's nagios-style ``status`` (warning, critical,
    unknown open or raise an incident; ok resolves it)."""


RULES: dict[str, Plugin] = {
    "status": Plugin("numbat.analyzer.rules.status:StatusRule", StatusRuleConfig),
}
"""Rule type -> plug-in; a rule's ``type`` may also be an import path (a class, or a
plain function of an event)."""


def rule_config(name: str, raw: Any) -> RuleConfig:
    """Validate ``[analyzer.rules.NAME]``: ``type`` defaults to NAME when NAME is a
    built-in (so an empty table means the built-in with its defaults)."""
    where = f"rules.{name}"
    if not isinstance(raw, dict):
        raise ValueError(f'{where}: expected a table, e.g. {{type = "threshold"}}')
    kind = raw.get("type", name if name in RULES else None)
    if kind not in RULES and not (isinstance(kind, str) and ":" in kind):
        allowed = ", ".join(RULES)
        raise ValueError(
            f"{where}.type: got {kind!r}; allowed: {allowed}, or an import path module:name"
        )
    cls = _rule_options(kind, f"{where}.type")
    return _convert({**raw, "type": kind}, cls, where, RULES, "rules")


def _rule_options(kind: str, where: str) -> type[RuleConfig]:
    if kind in RULES:
        return _options(RULES, kind, RuleConfig, where)
    # A custom rule may be a plain function: it takes the common options only.
    from numbat._importer import ImportFromStringError, import_from_string

    try:
        found = import_from_string(kind)
    except ImportFromStringError as exc:
        raise ValueError(f"{where}: {exc}") from None
    except Exception as exc:  # the rule's own module failed to import
        raise ValueError(
            f"{where}: importing {kind!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    if isinstance(found, type):
        return _options(RULES, kind, RuleConfig, where)
    if not callable(found):
        raise ValueError(f"{where}: {kind!r} is neither a class nor a function")
    return RuleConfig
