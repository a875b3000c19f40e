"""``[analyzer.rules.NAME]``: the rule kinds (:data:`RULES`) and the options each takes.

Every rule takes ``match`` (which events it sees), ``for`` and ``keep_firing_for``
(:class:`RuleConfig`); each built-in adds its own. Durations are seconds here; the rule
converts them to ms once, when it is built.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import msgspec

from numbat.config._base import Plugin, Section, _convert, _not_negative, _options, _seconds


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


class HeartbeatRuleConfig(RuleConfig):
    """``type = "heartbeat"``: every ``heartbeat`` / ``*.heartbeat`` event starts or
    renews tracking of ``<host>.<prefix>`` for its ``ttl``; a missed beat is critical,
    the next beat resolves, ``shutdown`` / ``*.shutdown`` stops tracking. ``default_ttl``:
    seconds, for a beat that carries no ttl; ``forget_after``: seconds without a beat
    after which a key is forgotten (its incident then expires)."""

    default_ttl: float = 60.0
    forget_after: float = 7 * 86_400.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _seconds(self, "default_ttl", "forget_after")


class ThresholdRuleConfig(RuleConfig):
    """``type = "threshold"``: a number judged against levels. ``field``: the event field
    judged (default ``value``); ``on = "rate"`` judges its change per second between
    consecutive points of a series instead (``counter = true``: a decrease is a counter
    reset, the new value counted from 0); ``warn`` / ``critical``: the levels (at least
    one), crossed ``above`` (default) or ``below`` (``below = true``); ``scale``: a field
    whose value multiplies the levels (``meta.nprocs``); ``group_by``: fields that tell
    series apart beside host and name. ``match`` is required (the presets have their
    own)."""

    needs_match: ClassVar[bool] = True

    warn: float | None = None
    critical: float | None = None
    below: bool = False
    field: str = "value"
    on: Literal["value", "rate"] = "value"
    counter: bool = False
    scale: str = ""
    group_by: list[str] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.needs_match and self.match is None:
            raise ValueError('match: required, e.g. match = {name = "web.latency"}')
        _levels(self.warn, self.critical, self.below)
        if not self.field:
            raise ValueError("field: name the event field to judge, e.g. 'value'")


class MemoryRuleConfig(ThresholdRuleConfig):
    """``type = "memory"``: the original's memory rule, a threshold preset: events named
    ``memory`` whose value is the fraction used, warning above 0.75, critical above 0.9."""

    needs_match: ClassVar[bool] = False
    warn: float | None = 0.75
    critical: float | None = 0.9


class DiskRuleConfig(ThresholdRuleConfig):
    """``type = "disk"``: a threshold preset for events named ``disk`` or ``disk.*``
    (one per mount) whose value is the fraction used: warning above 0.8, critical
    above 0.9."""

    needs_match: ClassVar[bool] = False
    warn: float | None = 0.8
    critical: float | None = 0.9


class LoadAverageRuleConfig(RuleConfig):
    """``type = "load-average"``: the original's load rule. Events ``load-average.1``,
    ``.5`` and ``.15``; ``warn`` / ``critical``: levels per period (minutes, as text
    keys) per CPU, multiplied by the event's ``nprocs_field`` (default ``meta.nprocs``,
    1 when absent). A period without both levels is not judged."""

    warn: dict[str, float] = msgspec.field(default_factory=lambda: {"1": 4.0, "5": 2.0, "15": 1.5})
    critical: dict[str, float] = msgspec.field(
        default_factory=lambda: {"1": 8.0, "5": 4.0, "15": 3.0}
    )
    nprocs_field: str = "meta.nprocs"

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("warn", "critical"):
            for period, level in getattr(self, key).items():
                if not period.isdigit() or int(period) <= 0:
                    raise ValueError(f"{key}.{period}: a period is whole minutes (1, 5, 15)")
                if not 0 < level < math.inf:
                    raise ValueError(f"{key}.{period}: must be a positive number, got {level}")
        for period, level in self.warn.items():
            crit = self.critical.get(period)
            if crit is not None and crit < level:
                raise ValueError(f"critical.{period}: {crit} is below warn.{period} ({level})")


class AbsenceRuleConfig(RuleConfig):
    """``type = "absence"`` (a dead man's switch): events matching ``match`` (required)
    must be seen at least every ``every`` seconds per group (``group_by`` fields,
    default the host). A group seen before and silent that long is critical until it is
    seen again; with ``at_start`` (default), seeing nothing at all for ``every`` seconds
    after start is critical too. Groups silent for ``forget_after`` seconds are
    forgotten."""

    every: float = 60.0
    group_by: list[str] = msgspec.field(default_factory=lambda: ["host"])
    at_start: bool = True
    forget_after: float = 7 * 86_400.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.match is None:
            raise ValueError('match: required, e.g. match = {name = "backup.done"}')
        _seconds(self, "every", "forget_after")


class RateRuleConfig(RuleConfig):
    """``type = "rate"``: the share of a group's events that match a condition, over a
    sliding ``window`` of seconds (the original's status-code rates). An event counts
    when its ``field`` is ``outside`` an inclusive range ``[low, high]``, ``inside``
    one, or one of ``equals``; with none of the three, ``outside = [200, 299]`` (a
    non-2xx ``statusCode``). Events without the field are not counted. Critical above
    ``rate_allowed`` (a share, default 0.1), warning above ``warn``; judged only with
    at least ``min_events`` events in the window. ``group_by``: default host and name.
    Default match: ``*.response``."""

    field: str = "statusCode"
    outside: list[float] | None = None
    inside: list[float] | None = None
    equals: list[str | int | float] | None = None
    rate_allowed: float = 0.1
    warn: float | None = None
    window: float = 300.0
    min_events: int = 10
    group_by: list[str] = msgspec.field(default_factory=lambda: ["host", "name"])

    def __post_init__(self) -> None:
        super().__post_init__()
        given = [k for k in ("outside", "inside", "equals") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"{given[1]}: give one of outside, inside, equals, not both")
        for key in ("outside", "inside"):
            bounds = getattr(self, key)
            if bounds is not None and (len(bounds) != 2 or not bounds[0] <= bounds[1]):
                raise ValueError(f"{key}: expected [low, high] with low <= high, got {bounds}")
        if not given:
            self.outside = [200.0, 299.0]
        for key in ("rate_allowed", "warn"):
            share = getattr(self, key)
            if share is not None and not 0 <= share < 1:
                raise ValueError(f"{key}: a share from 0 to below 1, got {share}")
        if self.warn is not None and self.warn > self.rate_allowed:
            raise ValueError(f"warn: {self.warn} is above rate_allowed ({self.rate_allowed})")
        _seconds(self, "window")
        if self.min_events < 1:
            raise ValueError(f"min_events: must be 1 or more, got {self.min_events}")


class OutlierRuleConfig(RuleConfig):
    """``type = "outlier"``: a value far from its own series' recent history (a series:
    host, name and ``group_by`` fields). ``method = "mad"`` (default): robust z-score
    ``0.6745 * (x - median) / MAD`` over the last ``window`` points; ``"ewma"``:
    ``(x - mean) / stddev`` of exponentially weighted moving bands (weight ``alpha``).
    ``warn`` / ``critical``: z-score levels; ``direction``: ``both``, ``above`` or
    ``below``; nothing is judged before ``min_points`` points. ``match`` is required."""

    method: Literal["mad", "ewma"] = "mad"
    field: str = "value"
    window: int = 60
    alpha: float = 0.1
    warn: float | None = 3.5
    critical: float | None = 5.0
    direction: Literal["both", "above", "below"] = "both"
    min_points: int = 20
    group_by: list[str] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.match is None:
            raise ValueError('match: required, e.g. match = {name = "web.latency"}')
        _levels(self.warn, self.critical, below=False)
        for key in ("warn", "critical"):
            level = getattr(self, key)
            if level is not None and level <= 0:
                raise ValueError(f"{key}: a z-score level must be positive, got {level}")
        if not 3 <= self.window <= 100_000:
            raise ValueError(f"window: 3 to 100000 points, got {self.window}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha: between 0 and 1 (exclusive), got {self.alpha}")
        if self.min_points < 2:
            raise ValueError(f"min_points: must be 2 or more, got {self.min_points}")
        if self.method == "mad" and self.min_points > self.window:
            raise ValueError(
                f"min_points: {self.min_points} is more than window ({self.window}): "
                "nothing would ever be judged"
            )


class ReachabilityRuleConfig(RuleConfig):
    """``type = "reachability"``: as the original, ``reachability`` events with value 0
    are critical ("<host> cannot reach <target>"), any other value resolves; one
    incident per host and target (``target_field``, default ``target``)."""

    target_field: str = "target"


def _levels(warn: float | None, critical: float | None, below: bool) -> None:
    if warn is None and critical is None:
        raise ValueError("warn: give warn, critical or both")
    for key, level in (("warn", warn), ("critical", critical)):
        if level is not None and not math.isfinite(level):
            raise ValueError(f"{key}: must be a finite number, got {level}")
    if warn is not None and critical is not None:
        if below and critical > warn:
            raise ValueError(f"critical: {critical} is above warn ({warn}) with below = true")
        if not below and critical < warn:
            raise ValueError(f"critical: {critical} is below warn ({warn})")


_RULES = "numbat.analyzer.rules"
RULES: dict[str, Plugin] = {
    "status": Plugin(f"{_RULES}.status:StatusRule", StatusRuleConfig),
    "heartbeat": Plugin(f"{_RULES}.heartbeat:HeartbeatRule", HeartbeatRuleConfig),
    "threshold": Plugin(f"{_RULES}.threshold:ThresholdRule", ThresholdRuleConfig),
    "load-average": Plugin(f"{_RULES}.threshold:LoadAverageRule", LoadAverageRuleConfig),
    "memory": Plugin(f"{_RULES}.threshold:MemoryRule", MemoryRuleConfig),
    "disk": Plugin(f"{_RULES}.threshold:DiskRule", DiskRuleConfig),
    "absence": Plugin(f"{_RULES}.absence:AbsenceRule", AbsenceRuleConfig),
    "rate": Plugin(f"{_RULES}.rate:RateRule", RateRuleConfig),
    "outlier": Plugin(f"{_RULES}.outlier:OutlierRule", OutlierRuleConfig),
    "reachability": Plugin(f"{_RULES}.reachability:ReachabilityRule", ReachabilityRuleConfig),
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


def default_rules() -> dict[str, RuleConfig]:
    """The rules ``numbat up`` and ``[analyzer] defaults = true`` run, by name: status,
    heartbeat, the load-average, memory and disk presets, and ``collector-heartbeat``
    (an absence rule: every collector's own ``numbat.collector.heartbeat``, sent every
    10 s, must be seen at least every 25 s per host)."""
    return {
        "status": StatusRuleConfig(type="status"),
        "heartbeat": HeartbeatRuleConfig(type="heartbeat"),
        "load-average": LoadAverageRuleConfig(type="load-average"),
        "memory": MemoryRuleConfig(type="memory"),
        "disk": DiskRuleConfig(type="disk"),
        "collector-heartbeat": AbsenceRuleConfig(
            type="absence", match=MatchConfig(name="numbat.collector.heartbeat"), every=25.0
        ),
    }
