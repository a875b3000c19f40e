"""``numbat.toml`` -> one validated :class:`Config` object; every error names the key path.

Each part of numbat owns one section (``[emitter]`` now; ``[collector]``, ``[analyzer]``
and ``[dashboard]`` as those parts land). An unknown key, a wrong type or a value out of
range raises :class:`~numbat.errors.ConfigError` whose message starts with the dotted
path of the key, e.g. ``emitter.max_retries: expected an integer, got a string``.

>>> cfg = loads('[emitter]\\nuri = "udp://127.0.0.1:3333"\\napp = "web"\\n')
>>> cfg.emitter.uri, cfg.emitter.max_retries
('udp://127.0.0.1:3333', 100)
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import msgspec

from numbat.config._base import (
    MAX_SECONDS,
    MAX_UDP_BUFFER_BYTES,
    MAX_WORKERS,
    Plugin,
    Section,
    _explain,
)
from numbat.config.analyzer import AnalyzerConfig
from numbat.config.collector import (
    LISTENERS,
    OUTPUTS,
    AnalyzerOutputConfig,
    CollectorConfig,
    GraphiteOutputConfig,
    InfluxDBOutputConfig,
    ListenerConfig,
    LogfileOutputConfig,
    NullOutputConfig,
    OutputConfig,
    PrettylogOutputConfig,
    SQLiteOutputConfig,
    UnixListenerConfig,
    WebSocketListenerConfig,
)
from numbat.config.dashboard import DashboardConfig
from numbat.config.emitter import EmitterConfig
from numbat.errors import ConfigError

__all__ = [
    "LISTENERS",
    "MAX_SECONDS",
    "MAX_UDP_BUFFER_BYTES",
    "MAX_WORKERS",
    "OUTPUTS",
    "AnalyzerConfig",
    "AnalyzerOutputConfig",
    "CollectorConfig",
    "Config",
    "DashboardConfig",
    "EmitterConfig",
    "GraphiteOutputConfig",
    "InfluxDBOutputConfig",
    "ListenerConfig",
    "LogfileOutputConfig",
    "NullOutputConfig",
    "OutputConfig",
    "Plugin",
    "PrettylogOutputConfig",
    "SQLiteOutputConfig",
    "Section",
    "UnixListenerConfig",
    "WebSocketListenerConfig",
    "from_dict",
    "load",
    "loads",
    "read",
]


class Config(Section):
    """The whole ``numbat.toml``."""

    emitter: EmitterConfig = msgspec.field(default_factory=EmitterConfig)
    collector: CollectorConfig = msgspec.field(default_factory=CollectorConfig)
    analyzer: AnalyzerConfig = msgspec.field(default_factory=AnalyzerConfig)
    dashboard: DashboardConfig = msgspec.field(default_factory=DashboardConfig)


def load(path: str | Path) -> Config:
    """Read and validate a TOML config file."""
    return from_dict(read(path), source=str(path))


def read(path: str | Path) -> dict[str, Any]:
    """A TOML file as a mapping, not validated yet (``numbat up -c`` adds to it first).

    Raises :class:`ConfigError` when it cannot be read or is not TOML."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return _parse(text, str(path))


def loads(text: str, *, source: str = "<config>") -> Config:
    """Validate TOML text; ``source`` prefixes error messages."""
    return from_dict(_parse(text, source), source=source)


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None


def from_dict(raw: dict[str, Any], *, source: str = "<config>") -> Config:
    """Validate an already-parsed mapping."""
    try:
        return msgspec.convert(raw, Config, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_explain(str(exc), Config)}") from None
