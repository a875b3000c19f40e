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

import importlib
import ipaddress
import re
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import SplitResult, urlsplit

import msgspec

from numbat.emitter import DEFAULT_MAX_BACKLOG_BYTES, SCHEMES
from numbat.errors import ConfigError


class Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every config section: unknown keys are errors."""


class EmitterConfig(Section):
    """``[emitter]``: where ``numbat emit`` (and numbat's own daemons) send events."""

    uri: str = "tcp://127.0.0.1:3333"
    app: str = "numbat"
    node: str | None = None
    max_backlog: int | None = None
    max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES
    max_retries: int = 100

    def __post_init__(self) -> None:
        # Parse the scheme exactly as the emitter's make_transport does, so that a uri
        # `numbat check` accepts (e.g. not a bare "tcp") is one the emitter can use.
        try:
            scheme = urlsplit(self.uri).scheme.lower()
        except ValueError as exc:
            raise ValueError(f"uri: {exc}") from None
        if scheme not in SCHEMES:
            allowed = ", ".join(f"{s}:" for s in SCHEMES)
            raise ValueError(
                f"uri: unsupported scheme {scheme!r} in {self.uri!r}; allowed: {allowed}"
            )
        if not self.app:
            raise ValueError("app: must not be empty")
        _positive(self, "max_backlog", "max_backlog_bytes")
        if self.max_retries < 0:
            raise ValueError("max_retries: must be 0 or more")


LISTENER_SCHEMES = ("tcp", "udp", "unix", "ws")


class ListenerConfig(Section):
    """One entry of ``[collector] listen``: a URI, or a table with per-listener limits."""

    uri: str
    max_connections: int = 1024
    idle_timeout: float = 300.0
    max_line_bytes: int | None = None
    token: str | None = None
    allow: list[str] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        parts = _split_uri("uri", self.uri)
        if parts.scheme not in LISTENER_SCHEMES:
            allowed = ", ".join(f"{s}://" for s in LISTENER_SCHEMES)
            raise ValueError(f"uri: unsupported listener {self.uri!r}; allowed: {allowed}")
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError(f"uri: {self.uri!r} needs a socket path, e.g. unix:///run/n.sock")
        elif not parts.hostname or parts.port is None:
            raise ValueError(f"uri: {self.uri!r} needs a host and a port")
        if self.token is not None and parts.scheme != "ws":
            raise ValueError("token: only ws:// listeners take a token")
        _positive(self, "max_connections", "max_line_bytes")
        if self.idle_timeout < 0:
            raise ValueError("idle_timeout: must be 0 (none) or more seconds")
        for i, net in enumerate(self.allow):
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"allow[{i}]: {net!r} is not an IP network") from None

    @property
    def scheme(self) -> str:
        return urlsplit(self.uri).scheme


class OutputConfig(Section):
    """Options every collector output takes; each ``type`` adds its own."""

    type: str
    name: str | None = None
    queue_size: int | None = None

    @property
    def label(self) -> str:
        """The output's name in logs and the collector's own metrics."""
        return self.name or self.type.rpartition(":")[2].lower()


class LogfileOutputConfig(OutputConfig, kw_only=True):
    """``type = "logfile"``: JSON lines appended to ``path``, reopened on SIGHUP."""

    path: str


class PrettylogOutputConfig(OutputConfig):
    """``type = "prettylog"``: one coloured line per event on the console."""

    color: Literal["auto", "always", "never"] = "auto"
    stream: Literal["stdout", "stderr"] = "stdout"


class GraphiteOutputConfig(OutputConfig):
    """``type = "graphite"``: plaintext ``name value unix_seconds`` over TCP or UDP."""

    uri: str = "tcp://127.0.0.1:2003"
    prefix: str = ""
    max_backlog: int = 100_000

    def __post_init__(self) -> None:
        parts = _split_uri("uri", self.uri)
        if parts.scheme not in ("tcp", "udp") or not parts.hostname or parts.port is None:
            raise ValueError(f"uri: expected tcp://host:port or udp://host:port, got {self.uri!r}")
        _positive(self, "max_backlog")


class AnalyzerOutputConfig(OutputConfig):
    """``type = "analyzer"``: NDJSON over TCP to the analyzer, buffered while it is down."""

    uri: str = "tcp://127.0.0.1:3337"
    max_backlog: int = 100_000

    def __post_init__(self) -> None:
        parts = _split_uri("uri", self.uri)
        if parts.scheme != "tcp" or not parts.hostname or parts.port is None:
            raise ValueError(f"uri: expected tcp://host:port, got {self.uri!r}")
        _positive(self, "max_backlog")


class InfluxDBOutputConfig(OutputConfig):
    """``type = "influxdb"``: line protocol over HTTP to InfluxDB 1.x (or VictoriaMetrics).

    Every batch goes through an on-disk spool per host before it is sent, so nothing
    is lost while a host is down or across a restart of the collector.
    """

    urls: list[str] = msgspec.field(default_factory=lambda: ["http://127.0.0.1:8086"])
    mode: Literal["replicate", "failover"] = "replicate"
    database: str = "numbat"
    create_database: bool = True
    username: str | None = None
    password: str | None = None
    retention_policy: str | None = None
    batch_size: int = 5000
    flush_interval: float = 1.0
    timeout: float = 10.0
    gzip: bool = False
    spool_dir: str = "numbat-data/spool"
    spool_max_bytes: int = 1024**3
    fsync_interval: float = 1.0
    text_fields: list[str] = msgspec.field(default_factory=lambda: ["description", "message"])
    write_heartbeats: bool = False
    max_series_per_measurement: int = 100_000
    on_cardinality: Literal["field", "drop"] = "field"

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError('urls: give at least one, e.g. ["http://127.0.0.1:8086"]')
        for i, url in enumerate(self.urls):
            parts = _split_uri(f"urls[{i}]", url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"urls[{i}]: expected http://host:port, got {url!r}")
        if not self.database:
            raise ValueError("database: must not be empty")
        if (self.username is None) != (self.password is None):
            raise ValueError("password: username and password go together")
        _positive(
            self,
            "batch_size",
            "flush_interval",
            "timeout",
            "spool_max_bytes",
            "max_series_per_measurement",
        )
        if self.fsync_interval < 0:
            raise ValueError("fsync_interval: must be 0 (every batch) or more seconds")


class SQLiteOutputConfig(OutputConfig):
    """``type = "sqlite"``: the embedded store, for one machine with no InfluxDB."""

    path: str = "numbat-data/numbat.db"
    retention_days: float = 7.0

    def __post_init__(self) -> None:
        _positive(self, "retention_days")


class NullOutputConfig(OutputConfig):
    """``type = "null"``: discards events (benchmarks, and a collector with no outputs)."""


OUTPUT_CONFIGS: dict[str, type[OutputConfig]] = {
    "logfile": LogfileOutputConfig,
    "prettylog": PrettylogOutputConfig,
    "graphite": GraphiteOutputConfig,
    "analyzer": AnalyzerOutputConfig,
    "influxdb": InfluxDBOutputConfig,
    "sqlite": SQLiteOutputConfig,
    "null": NullOutputConfig,
}


class CollectorConfig(Section):
    """``[collector]``: listeners, outputs and the limits of the collector daemon."""

    listen: list[str | ListenerConfig] = msgspec.field(
        default_factory=lambda: ["tcp://127.0.0.1:3333", "udp://127.0.0.1:3333"]
    )
    # Tables validated by their ``type`` in __post_init__; OutputConfig objects after.
    outputs: list[Any] = msgspec.field(default_factory=list)
    max_line_bytes: int = 65_536
    queue_size: int = 100_000
    drain_timeout: float = 10.0
    stats_interval: float = 10.0
    udp_buffer_bytes: int = 8 * 1024 * 1024
    workers: int = 1

    def __post_init__(self) -> None:
        self.listen = [
            _listener(entry, i) if isinstance(entry, str) else entry
            for i, entry in enumerate(self.listen)
        ]
        self.outputs = [_output(entry, i) for i, entry in enumerate(self.outputs)]
        _positive(
            self, "max_line_bytes", "queue_size", "stats_interval", "udp_buffer_bytes", "workers"
        )
        if self.drain_timeout < 0:
            raise ValueError("drain_timeout: must be 0 or more seconds")
        if self.workers > 1 and any(out.type == "sqlite" for out in self.outputs):
            raise ValueError(
                "workers: the sqlite output takes one writing process; "
                "use workers = 1, or an influxdb output"
            )
        labels = [out.label for out in self.outputs]
        for label in labels:
            if labels.count(label) > 1:
                raise ValueError(f"outputs: two outputs are named {label!r}; give each a name")

    @property
    def listeners(self) -> list[ListenerConfig]:
        return [entry for entry in self.listen if isinstance(entry, ListenerConfig)]


def _listener(uri: str, index: int) -> ListenerConfig:
    try:
        return ListenerConfig(uri=uri)
    except ValueError as exc:
        raise ValueError(f"listen[{index}].{exc}") from None


def _output(raw: Any, index: int) -> OutputConfig:
    where = f"outputs[{index}]"
    if not isinstance(raw, dict):
        raise ValueError(f'{where}: expected a table with a type, e.g. {{type = "logfile"}}')
    kind = raw.get("type")
    cls = OUTPUT_CONFIGS.get(kind) if isinstance(kind, str) else None
    if cls is None and isinstance(kind, str) and ":" in kind:
        cls = _plugin_options(kind, where)
    if cls is None:
        allowed = ", ".join(OUTPUT_CONFIGS)
        raise ValueError(
            f"{where}.type: got {kind!r}; allowed: {allowed}, or an import path module:Class"
        )
    try:
        return msgspec.convert(raw, cls, strict=True)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{where}.{_explain(str(exc), cls)}") from None


def _plugin_options(path: str, where: str) -> type[OutputConfig]:
    """A third-party output's options: its ``Options`` class, or OutputConfig if it has none."""
    module, _, name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{where}.type: cannot import {path!r}: {exc}") from None
    options = getattr(cls, "Options", None) or OutputConfig
    if not (isinstance(options, type) and issubclass(options, OutputConfig)):
        raise ValueError(f"{where}.type: {path}.Options must subclass numbat.config.OutputConfig")
    return options


def _split_uri(key: str, uri: str) -> SplitResult:
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"{key}: {uri!r}: {exc}") from None
    return parts


class Config(Section):
    """The whole ``numbat.toml``."""

    emitter: EmitterConfig = msgspec.field(default_factory=EmitterConfig)
    collector: CollectorConfig = msgspec.field(default_factory=CollectorConfig)


def load(path: str | Path) -> Config:
    """Read and validate a TOML config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return loads(text, source=str(path))


def loads(text: str, *, source: str = "<config>") -> Config:
    """Validate TOML text; ``source`` prefixes error messages."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return from_dict(raw, source=source)


def from_dict(raw: dict[str, Any], *, source: str = "<config>") -> Config:
    """Validate an already-parsed mapping."""
    try:
        return msgspec.convert(raw, Config, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_explain(str(exc))}") from None


def _positive(section: Section, *names: str) -> None:
    for name in names:
        val = getattr(section, name)
        if val is not None and val <= 0:
            raise ValueError(f"{name}: must be positive, got {val}")


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<key>[^`]*)`")
_ENUM = re.compile(r"Invalid enum value (?P<got>.*)")
_TYPE = re.compile(r"Expected `(?P<want>[^`]*)`, got `(?P<got>[^`]*)`")
_MISSING = re.compile(r"Object missing required field `(?P<key>[^`]*)`")
_OWN = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_.\[\]]*): (?P<msg>.*)$", re.S)


def _explain(error: str, root: Any = None) -> str:
    """Turn a msgspec message into ``key.path: what is wrong; what is allowed``."""
    root = Config if root is None else root
    match = _AT.match(error)
    assert match is not None  # the pattern matches any string
    msg, path = match["msg"], (match["path"] or "").lstrip(".")
    if m := _UNKNOWN.match(msg):
        allowed = ", ".join(_fields_at(root, path)) or "none"
        return f"{_join(path, m['key'])}: unknown key; allowed keys: {allowed}"
    if m := _MISSING.match(msg):
        return f"{_join(path, m['key'])}: required"
    if m := _ENUM.match(msg):
        choices = ", ".join(repr(c) for c in _choices_at(root, path))
        return f"{path}: got {m['got']}; allowed values: {choices}"
    if m := _TYPE.match(msg):
        return f"{path}: expected {_noun(m['want'])}, got {_noun(m['got'])}"
    if m := _OWN.match(msg):
        return f"{_join(path, m['key'])}: {m['msg']}"
    return f"{path or '(top level)'}: {msg}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _noun(kind: str) -> str:
    nouns = {
        "int": "an integer",
        "str": "a string",
        "float": "a number",
        "bool": "a boolean",
        "object": "a table",
        "array": "an array",
        "null": "nothing",
    }
    parts = [nouns.get(k.strip(), k.strip()) for k in kind.split("|")]
    return " or ".join(parts)


def _type_at(root: Any, path: str) -> Any:
    kind: Any = root
    for part in re.findall(r"[^.\[\]]+", path):
        kind = _unwrap(kind)
        kind = get_args(kind)[0] if part.isdigit() else typing.get_type_hints(kind)[part]
    return _unwrap(kind)


def _unwrap(kind: Any) -> Any:
    """``X | None`` -> ``X``."""
    args = [a for a in get_args(kind) if a is not type(None)]
    if get_origin(kind) in (typing.Union, type(int | None)) and len(args) == 1:
        return args[0]
    return kind


def _fields_at(root: Any, path: str) -> tuple[str, ...]:
    kind = _type_at(root, path)
    return tuple(getattr(kind, "__struct_fields__", ()))


def _choices_at(root: Any, path: str) -> tuple[Any, ...]:
    kind = _type_at(root, path)
    return get_args(kind) if get_origin(kind) is Literal else ()
