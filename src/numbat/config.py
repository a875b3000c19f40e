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

import ipaddress
import math
import re
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, cast, get_args, get_origin
from urllib.parse import SplitResult, urlsplit

import msgspec

from numbat._importer import ImportFromStringError, import_from_string
from numbat._redact import redact_url, scrub, unsplittable
from numbat.emitter import DEFAULT_MAX_BACKLOG_BYTES, SCHEMES
from numbat.errors import ConfigError

MAX_SECONDS = 30 * 86_400
"""The longest interval or timeout a config takes, in seconds (30 days)."""
MAX_WORKERS = 256
"""The most collector worker processes (``workers``)."""
MAX_UDP_BUFFER_BYTES = 2**31 - 1
"""The largest ``udp_buffer_bytes``: SO_RCVBUF is a C int."""


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
        if problem := unsplittable(self.uri):
            raise ValueError(f"uri: {redact_url(self.uri)!r}: {problem}")
        try:
            scheme = urlsplit(self.uri).scheme.lower()
        except ValueError as exc:
            raise ValueError(
                f"uri: {redact_url(self.uri)!r}: {scrub(str(exc), self.uri)}"
            ) from None
        if scheme not in SCHEMES:
            allowed = ", ".join(f"{s}:" for s in SCHEMES)
            shown = redact_url(self.uri)
            raise ValueError(f"uri: unsupported scheme {scheme!r} in {shown!r}; allowed: {allowed}")
        if not self.app:
            raise ValueError("app: must not be empty")
        _positive(self, "max_backlog", "max_backlog_bytes")
        if self.max_retries < 0:
            raise ValueError("max_retries: must be 0 or more")


class ListenerConfig(Section):
    """One entry of ``[collector] listen``: a URI, or a table with per-listener limits.

    ``type`` picks the listener: by default the URI's scheme (a name in
    :data:`LISTENERS`), else an import path ``"module:Class"`` whose ``Options`` (a
    subclass of this class) says which keys it takes. ``max_line_bytes`` unset means
    the collector-wide ``max_line_bytes``.
    """

    uri: str
    type: str | None = None
    max_connections: int = 1024
    max_connections_per_peer: int = 128
    idle_timeout: float = 300.0
    line_timeout: float = 60.0
    max_line_bytes: int | None = None
    allow: list[str] = msgspec.field(default_factory=list)

    # A trait of the plug-in: its address can be bound by one process only, so with
    # ``workers = N`` worker 0 alone serves it (a unix socket path).
    first_process_only: ClassVar[bool] = False

    def __post_init__(self) -> None:
        parts = _split_uri("uri", self.uri)
        if parts.username is not None or parts.password is not None:
            # Its URI names a listener in logs and metrics: no secret may be in it.
            shown = redact_url(self.uri)
            raise ValueError(f"uri: {shown!r}: a listener takes no user:password@ (see token)")
        self._check_address(parts)
        _positive(self, "max_connections", "max_connections_per_peer", "max_line_bytes")
        _not_negative(self, "idle_timeout", "line_timeout")
        for i, net in enumerate(self.allow):
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"allow[{i}]: {net!r} is not an IP network") from None

    def _check_address(self, parts: SplitResult) -> None:
        """An inet listener needs a host and a port; subclasses say otherwise."""
        if not parts.hostname or parts.port is None:
            raise ValueError(f"uri: {redact_url(self.uri)!r} needs a host and a port")

    @property
    def scheme(self) -> str:
        return urlsplit(self.uri).scheme

    @property
    def kind(self) -> str:
        """The registry name or import path of the listener: ``type``, else the scheme."""
        return self.type or self.scheme


class UnixListenerConfig(ListenerConfig):
    """``unix:///path``: a unix stream socket, bound by worker 0 only."""

    first_process_only: ClassVar[bool] = True

    def _check_address(self, parts: SplitResult) -> None:
        if self.allow:
            raise ValueError("allow: a unix socket has no peer address; use its file mode")
        if not parts.path:
            raise ValueError(
                f"uri: {redact_url(self.uri)!r} needs a socket path, e.g. unix:///run/n.sock"
            )


class WebSocketListenerConfig(ListenerConfig):
    """``ws://host:port/path``; with ``token`` set, clients must present it.

    ``ping_interval``: seconds between the server's pings; a client that has not
    answered one within as long again is dropped (the original's keep-alive).
    ``origins``: the browser ``Origin``s allowed (``"https://ops.example.com"``); a
    request with any other ``Origin`` is refused, so a web page open in a browser on
    the host cannot send metrics. Clients that send no ``Origin`` (emitters) get in.
    """

    token: str | None = None
    ping_interval: float = 20.0
    origins: list[str] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        _seconds(self, "ping_interval")


class OutputConfig(Section):
    """Options every collector output takes; each ``type`` adds its own."""

    type: str
    name: str | None = None
    queue_size: int | None = None
    when_full: Literal["block", "drop_newest"] | None = None
    block_timeout: float = 30.0

    # A trait of the plug-in: how many processes may run it at once (None: any), so
    # ``workers = N`` is refused for an output that allows fewer (one SQLite writer).
    max_processes: ClassVar[int | None] = None
    # Another: an output that keeps what it is given (a file, a database, a spool)
    # blocks ingest when full by default; a best-effort peer drops instead, so a dead
    # one never stalls ingest.
    durable: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _not_negative(self, "block_timeout")

    @property
    def label(self) -> str:
        """The output's name in logs and the collector's own metrics."""
        return self.name or self.type.rpartition(":")[2].lower()

    @property
    def full_policy(self) -> Literal["block", "drop_newest"]:
        """``when_full`` as given, else the output's default (block if durable)."""
        return self.when_full or ("block" if self.durable else "drop_newest")


class LogfileOutputConfig(OutputConfig, kw_only=True):
    """``type = "logfile"``: JSON lines appended to ``path``, reopened on SIGHUP."""

    durable: ClassVar[bool] = True

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
        super().__post_init__()
        parts = _split_uri("uri", self.uri)
        if parts.scheme not in ("tcp", "udp") or not parts.hostname or parts.port is None:
            raise ValueError(
                f"uri: expected tcp://host:port or udp://host:port, got {redact_url(self.uri)!r}"
            )
        _positive(self, "max_backlog")


class AnalyzerOutputConfig(OutputConfig):
    """``type = "analyzer"``: NDJSON over TCP to the analyzer, buffered while it is down."""

    uri: str = "tcp://127.0.0.1:3337"
    max_backlog: int = 100_000

    def __post_init__(self) -> None:
        super().__post_init__()
        parts = _split_uri("uri", self.uri)
        if parts.scheme != "tcp" or not parts.hostname or parts.port is None:
            raise ValueError(f"uri: expected tcp://host:port, got {redact_url(self.uri)!r}")
        _positive(self, "max_backlog")


class InfluxDBOutputConfig(OutputConfig):
    """``type = "influxdb"``: line protocol over HTTP to InfluxDB 1.x (or VictoriaMetrics).

    Every batch goes through an on-disk spool per host before it is sent, so nothing
    is lost while a host is down or across a restart of the collector.
    """

    durable: ClassVar[bool] = True

    urls: list[str] = msgspec.field(default_factory=lambda: ["http://127.0.0.1:8086"])
    mode: Literal["replicate", "failover"] = "replicate"
    database: str = "numbat"
    create_database: bool = True
    username: str | None = None
    password: str | None = None
    retention_policy: str | None = None
    batch_size: int = 5000
    batch_bytes: int = 1_000_000  # under nginx's default body limit (client_max_body_size 1m)
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
        super().__post_init__()
        if not self.urls:
            raise ValueError('urls: give at least one, e.g. ["http://127.0.0.1:8086"]')
        for i, url in enumerate(self.urls):
            parts = _split_uri(f"urls[{i}]", url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"urls[{i}]: expected http://host:port, got {redact_url(url)!r}")
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                # The client adds /write and /query to the URL: a path or query in it
                # makes every write a 404, dropped; InfluxDB's ?u=&p= belong elsewhere.
                raise ValueError(
                    f"urls[{i}]: {redact_url(url)!r}: give the server's base URL, with no "
                    "path or query (e.g. http://host:8086); set the database with database "
                    "and credentials with username and password"
                )
        if not self.database:
            raise ValueError("database: must not be empty")
        if (self.username is None) != (self.password is None):
            raise ValueError("password: username and password go together")
        _positive(
            self, "batch_size", "batch_bytes", "spool_max_bytes", "max_series_per_measurement"
        )
        _seconds(self, "flush_interval", "timeout")
        _not_negative(self, "fsync_interval")


class SQLiteOutputConfig(OutputConfig):
    """``type = "sqlite"``: the embedded store, for one machine with no InfluxDB."""

    durable: ClassVar[bool] = True

    path: str = "numbat-data/numbat.db"
    retention_days: float = 7.0
    text_fields: list[str] = msgspec.field(default_factory=lambda: ["description", "message"])

    max_processes: ClassVar[int | None] = 1  # SQLite takes one writing process

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "retention_days")


class NullOutputConfig(OutputConfig):
    """``type = "null"``: discards events (benchmarks, and a collector with no outputs)."""


@dataclass(frozen=True, slots=True)
class Plugin:
    """One registry entry: the plug-in's class as ``"module:Class"`` and the options it
    takes (a :class:`Section` subclass), so the config is validated without importing
    the plug-in and the class is imported only when a daemon builds it."""

    path: str
    options: type[Section]


LISTENERS: dict[str, Plugin] = {
    "tcp": Plugin("numbat.server.listeners.tcp:TCPListener", ListenerConfig),
    "udp": Plugin("numbat.server.listeners.udp:UDPListener", ListenerConfig),
    "unix": Plugin("numbat.server.listeners.unix:UnixListener", UnixListenerConfig),
    "ws": Plugin("numbat.server.listeners.ws:WebSocketListener", WebSocketListenerConfig),
}
"""Listener scheme -> plug-in; a listener table's ``type`` may also be an import path."""

OUTPUTS: dict[str, Plugin] = {
    "logfile": Plugin("numbat.collector.outputs.logfile:LogfileOutput", LogfileOutputConfig),
    "prettylog": Plugin(
        "numbat.collector.outputs.prettylog:PrettylogOutput", PrettylogOutputConfig
    ),
    "graphite": Plugin("numbat.collector.outputs.graphite:GraphiteOutput", GraphiteOutputConfig),
    "analyzer": Plugin("numbat.collector.outputs.analyzer:AnalyzerOutput", AnalyzerOutputConfig),
    "influxdb": Plugin("numbat.collector.outputs.influxdb:InfluxDBOutput", InfluxDBOutputConfig),
    "sqlite": Plugin("numbat.collector.outputs.sqlite:SQLiteOutput", SQLiteOutputConfig),
    "null": Plugin("numbat.collector.outputs.null:NullOutput", NullOutputConfig),
}
"""Output type -> plug-in; an output's ``type`` may also be an import path."""


class CollectorConfig(Section):
    """``[collector]``: listeners, outputs and the limits of the collector daemon."""

    # URIs or tables, validated by their type in __post_init__; ListenerConfig objects after.
    listen: list[Any] = msgspec.field(
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
        self.listen = [_listener(entry, i) for i, entry in enumerate(self.listen)]
        self.outputs = [_output(entry, i) for i, entry in enumerate(self.outputs)]
        _positive(self, "max_line_bytes", "queue_size", "udp_buffer_bytes", "workers")
        _seconds(self, "stats_interval")
        _not_negative(self, "drain_timeout")
        if self.workers > MAX_WORKERS:
            raise ValueError(f"workers: at most {MAX_WORKERS}, got {self.workers}")
        if self.udp_buffer_bytes > MAX_UDP_BUFFER_BYTES:
            raise ValueError(
                f"udp_buffer_bytes: at most {MAX_UDP_BUFFER_BYTES:,} (2 GiB - 1), "
                f"got {self.udp_buffer_bytes:,}"
            )
        for out in self.outputs:
            most = out.max_processes
            if most is not None and self.workers > most:
                raise ValueError(
                    f"workers: the {out.label} output takes {_processes(most)}; "
                    f"use workers = {most}, or another output (e.g. influxdb)"
                )
        labels = [out.label for out in self.outputs]
        for label in labels:
            if labels.count(label) > 1:
                raise ValueError(f"outputs: two outputs are named {label!r}; give each a name")

    @property
    def listeners(self) -> list[ListenerConfig]:
        return [entry for entry in self.listen if isinstance(entry, ListenerConfig)]


def _processes(count: int) -> str:
    return "one writing process" if count == 1 else f"at most {count} processes"


def _listener(raw: Any, index: int) -> ListenerConfig:
    where = f"listen[{index}]"
    if isinstance(raw, str):
        raw = {"uri": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("uri"), str):
        raise ValueError(f'{where}: expected a URI, or a table with a uri, e.g. {{uri = "..."}}')
    kind = raw.get("type")
    if kind is not None and not isinstance(kind, str):
        raise ValueError(f"{where}.type: expected a string, got {_noun(type(kind).__name__)}")
    kind = kind or _scheme(raw["uri"], where)
    if kind not in LISTENERS and not (isinstance(kind, str) and ":" in kind):
        allowed = ", ".join(f"{s}://" for s in LISTENERS)
        raise ValueError(
            f"{where}.uri: unsupported listener {redact_url(raw['uri'])!r}; allowed: {allowed}"
        )
    cls = _options(LISTENERS, kind, ListenerConfig, f"{where}.type")
    return _convert(raw, cls, where, "listeners")


def _scheme(uri: str, where: str) -> str:
    try:
        return urlsplit(uri).scheme
    except ValueError as exc:
        raise ValueError(f"{where}.uri: {redact_url(uri)!r}: {scrub(str(exc), uri)}") from None


def _output(raw: Any, index: int) -> OutputConfig:
    where = f"outputs[{index}]"
    if not isinstance(raw, dict):
        raise ValueError(f'{where}: expected a table with a type, e.g. {{type = "logfile"}}')
    kind = raw.get("type")
    if kind not in OUTPUTS and not (isinstance(kind, str) and ":" in kind):
        allowed = ", ".join(OUTPUTS)
        raise ValueError(
            f"{where}.type: got {kind!r}; allowed: {allowed}, or an import path module:Class"
        )
    cls = _options(OUTPUTS, kind, OutputConfig, f"{where}.type")
    return _convert(raw, cls, where, "outputs")


S = TypeVar("S", bound=Section)


def _options(registry: dict[str, Plugin], kind: str, base: type[S], where: str) -> type[S]:
    """The options class of a registered plug-in, or of a third-party one's ``Options``
    (``base`` itself if it declares none)."""
    if kind in registry:
        return cast(type[S], registry[kind].options)
    try:
        cls = import_from_string(kind)
    except ImportFromStringError as exc:
        raise ValueError(f"{where}: {exc}") from None
    except Exception as exc:  # the plug-in's own module failed: its error, not a traceback
        raise ValueError(f"{where}: importing {kind!r} failed: {_described(exc)}") from None
    if not isinstance(cls, type):
        raise ValueError(f"{where}: {kind!r} is not a class")
    options = getattr(cls, "Options", None) or base
    if not (isinstance(options, type) and issubclass(options, base)):
        raise ValueError(f"{where}: {kind}.Options must subclass numbat.config.{base.__name__}")
    return options


def _convert(raw: dict[str, Any], cls: type[S], where: str, kind: str) -> S:
    """Validate a plug-in's table; ``kind`` is "listeners" or "outputs"."""
    try:
        return msgspec.convert(raw, cls, strict=True)
    except msgspec.ValidationError as exc:
        message = _explain(str(exc), cls, top="")
        if unknown := _UNKNOWN.fullmatch(str(exc)):
            # A key this plug-in does not take but others do: say which, not "unknown".
            key = unknown["key"]
            if takers := _takers(key, kind):
                message = f"{key}: only {', '.join(takers)} {kind} take a {key}"
        joined = f"{where}{message}" if message.startswith(":") else f"{where}.{message}"
        raise ValueError(joined) from None
    except Exception as exc:  # a plug-in's own __post_init__ raised something else
        raise ValueError(f"{where}: {_described(exc)}") from None


def _described(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _takers(key: str, kind: str) -> list[str]:
    """The built-in listeners (as ``scheme://``) or outputs whose options have ``key``."""
    if kind == "listeners":
        return [f"{n}://" for n, p in LISTENERS.items() if key in p.options.__struct_fields__]
    return [n for n, p in OUTPUTS.items() if key in p.options.__struct_fields__]


def _split_uri(key: str, uri: str) -> SplitResult:
    """``uri`` split, or a ValueError naming ``key`` that quotes no secret of it."""
    problem = unsplittable(uri)
    if problem:
        raise ValueError(f"{key}: {redact_url(uri)!r}: {problem}")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"{key}: {redact_url(uri)!r}: {scrub(str(exc), uri)}") from None
    return parts


class Config(Section):
    """The whole ``numbat.toml``."""

    emitter: EmitterConfig = msgspec.field(default_factory=EmitterConfig)
    collector: CollectorConfig = msgspec.field(default_factory=CollectorConfig)


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
        raise ConfigError(f"{source}: {_explain(str(exc))}") from None


def _positive(section: Section, *names: str) -> None:
    for name in names:
        val = getattr(section, name)
        if val is not None and not 0 < val < math.inf:  # NaN fails both comparisons
            raise ValueError(f"{name}: must be positive, got {val}")


def _not_negative(section: Section, *names: str) -> None:
    for name in names:
        val = getattr(section, name)
        if not 0 <= val <= MAX_SECONDS:  # NaN fails both comparisons
            raise ValueError(
                f"{name}: must be 0 or more seconds, at most {MAX_SECONDS:,} (30 days), got {val}"
            )


def _seconds(section: Section, *names: str) -> None:
    """Positive durations, at most MAX_SECONDS: a longer one overflows the timers and
    the 64-bit millisecond ttl of the events that carry it."""
    for name in names:
        val = getattr(section, name)
        if not 0 < val <= MAX_SECONDS:
            raise ValueError(
                f"{name}: must be positive, at most {MAX_SECONDS:,} seconds (30 days), got {val}"
            )


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<key>[^`]*)`")
_ENUM = re.compile(r"Invalid enum value (?P<got>.*)")
_TYPE = re.compile(r"Expected `(?P<want>[^`]*)`, got `(?P<got>[^`]*)`")
_MISSING = re.compile(r"Object missing required field `(?P<key>[^`]*)`")
_OWN = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_.\[\]]*): (?P<msg>.*)$", re.S)


def _explain(error: str, root: Any = None, top: str = "(top level)") -> str:
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
    return f"{path or top}: {msg}"


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
