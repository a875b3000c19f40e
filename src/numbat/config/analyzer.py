"""``[analyzer]``: where the analyzer listens, keeps its state, which rules it runs and
whom it tells (rules: :mod:`numbat.config.rules`, notifiers:
:mod:`numbat.config.notifiers`)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from numbat._redact import redact_url
from numbat.config._base import Section, _not_negative, _positive, _seconds, _split_uri
from numbat.config.collector import ListenerConfig, _listener
from numbat.config.notifiers import NotifierConfig, notifier_config
from numbat.config.rules import MatchConfig, RuleConfig, rule_config


class GroupingConfig(Section):
    """``[analyzer.grouping]``: incidents with the same ``group_by`` values (``name``,
    ``host``, ``rule``, ``status`` or any tag) go out in one message. The first change
    of a quiet group waits ``group_wait`` seconds (to gather a storm that is unfolding);
    later changes wait until ``group_interval`` has passed since the group's last
    message; each message says what changed since the last (Alertmanager's grouping,
    without resending the whole group). ``repeat_interval``: a critical incident still
    open and not acknowledged is notified again this often (0: never)."""

    group_by: list[str] = msgspec.field(default_factory=lambda: ["name"])
    group_wait: float = 0.0
    group_interval: float = 10.0
    repeat_interval: float = 4 * 3600.0

    def __post_init__(self) -> None:
        _not_negative(self, "group_wait", "repeat_interval")
        _seconds(self, "group_interval")
        _labels_list("group_by", self.group_by)


class FlappingConfig(Section):
    """``[analyzer.flapping]``: an incident that changes status more than ``max_changes``
    times within ``window`` seconds is flapping: one notice says so, then it is quiet
    until it has not changed for ``window`` seconds (0 changes: no detection)."""

    window: float = 600.0
    max_changes: int = 6

    def __post_init__(self) -> None:
        _seconds(self, "window")
        if self.max_changes < 0:
            raise ValueError("max_changes: must be 0 (off) or more")


class InhibitConfig(Section):
    """One ``[[analyzer.inhibit]]``: while an incident matching ``source`` is at
    ``source_status`` or worse, notifications of incidents matching ``target`` with the
    same values of ``equal`` are muted (a host whose collector's heartbeat is missing
    does not also page for its disk). The source itself is never muted by its own rule."""

    source: MatchConfig
    target: MatchConfig = msgspec.field(default_factory=MatchConfig)
    equal: list[str] = msgspec.field(default_factory=lambda: ["host"])
    source_status: Literal["warning", "critical"] = "critical"

    def __post_init__(self) -> None:
        _labels_list("equal", self.equal)


def _labels_list(key: str, labels: list[str]) -> None:
    """Label names (``name``, ``host``, ``rule``, ``status`` or a tag): non-empty, once each."""
    for label in labels:
        if not label:
            raise ValueError(f"{key}: a label name must not be empty")
        if labels.count(label) > 1:
            raise ValueError(f"{key}: {label!r} is given twice")


def _default_inhibit() -> list[InhibitConfig]:
    # The host's own collector beats for the host: when it is missing the host is down
    # (or cut off), and its other alerts are noise. One service's missing heartbeat says
    # nothing of the rest of the host, so it mutes nothing.
    return [InhibitConfig(source=MatchConfig(name="numbat.collector.heartbeat"))]


class WritebackConfig(Section):
    """``[analyzer.writeback]``: every incident change is written back as a
    ``numbat.alert`` event (and the ``numbat.alerts`` state series every
    ``state_interval`` seconds while open), with the analyzer's own stats and heartbeat,
    to the collector at ``uri`` (NDJSON over TCP), which stores them with everything
    else. They wait in the state database until sent. ``uri = ""``: not written back."""

    uri: str = "tcp://127.0.0.1:3333"
    state_interval: float = 60.0

    def __post_init__(self) -> None:
        if self.uri:
            parts = _split_uri("uri", self.uri)
            if parts.scheme != "tcp" or not parts.hostname or parts.port is None:
                raise ValueError(f"uri: expected tcp://host:port, got {redact_url(self.uri)!r}")
        _seconds(self, "state_interval")


class AnalyzerConfig(Section):
    """``[analyzer]``. ``listen``: where collectors send events (URIs or tables, as the
    collector's); ``http``: the HTTP API's address; ``token``: what API mutations must
    present (``Authorization: Bearer``), required when ``http`` is not on loopback;
    ``data_dir``: durable state (``analyzer.db``); ``defaults``: run the default rule set
    beside the configured rules (a configured rule of the same name replaces one);
    ``rules``: tables by name; ``notifiers``: tables in order."""

    listen: list[Any] = msgspec.field(default_factory=lambda: ["tcp://127.0.0.1:3337"])
    http: str = "http://127.0.0.1:3338"
    token: str | None = None
    data_dir: str = "numbat-data"
    defaults: bool = True
    rules: dict[str, Any] = msgspec.field(default_factory=dict)
    notifiers: list[Any] = msgspec.field(default_factory=list)
    grouping: GroupingConfig = msgspec.field(default_factory=GroupingConfig)
    flapping: FlappingConfig = msgspec.field(default_factory=FlappingConfig)
    inhibit: list[InhibitConfig] = msgspec.field(default_factory=_default_inhibit)
    writeback: WritebackConfig = msgspec.field(default_factory=WritebackConfig)
    max_line_bytes: int = 65_536
    stats_interval: float = 10.0
    tick_interval: float = 1.0
    drain_timeout: float = 10.0

    def __post_init__(self) -> None:
        self.listen = [_listener(entry, i) for i, entry in enumerate(self.listen)]
        uris = [entry.uri for entry in self.listen]
        for i, uri in enumerate(uris):
            if uri in uris[:i]:
                raise ValueError(f"listen[{i}]: {redact_url(uri)!r} is listed twice")
        self.rules = {name: rule_config(name, raw) for name, raw in self.rules.items()}
        self.notifiers = [notifier_config(raw, i) for i, raw in enumerate(self.notifiers)]
        parts = _split_uri("http", self.http)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise ValueError(f"http: expected http://host:port, got {redact_url(self.http)!r}")
        if not _loopback(parts.hostname) and not self.token:
            raise ValueError(
                f"token: required when http is not on loopback ({parts.hostname}): "
                "API mutations (silences, acknowledgements) would be open to anyone"
            )
        _positive(self, "max_line_bytes")
        _seconds(self, "stats_interval", "tick_interval")
        _not_negative(self, "drain_timeout")
        labels = [notifier.label for notifier in self.notifiers]
        for label in labels:
            if labels.count(label) > 1:
                raise ValueError(f"notifiers: two notifiers are named {label!r}; give each a name")

    @property
    def listeners(self) -> list[ListenerConfig]:
        return [entry for entry in self.listen if isinstance(entry, ListenerConfig)]

    @property
    def rule_configs(self) -> dict[str, RuleConfig]:
        return {k: v for k, v in self.rules.items() if isinstance(v, RuleConfig)}

    @property
    def notifier_configs(self) -> list[NotifierConfig]:
        return [n for n in self.notifiers if isinstance(n, NotifierConfig)]


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
