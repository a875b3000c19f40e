"""``[collector]``: listeners (:data:`LISTENERS`), outputs (:data:`OUTPUTS`) and the
collector daemon's limits."""

from __future__ import annotations

import ipaddress
from typing import Any, ClassVar, Literal
from urllib.parse import SplitResult, urlsplit

import msgspec

from numbat._redact import redact_url, scrub
from numbat.config._base import (
    MAX_UDP_BUFFER_BYTES,
    MAX_WORKERS,
    Plugin,
    Section,
    _convert,
    _not_negative,
    _noun,
    _options,
    _plugin,
    _positive,
    _seconds,
    _split_uri,
)


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
    return _convert(raw, cls, where, LISTENERS, "listeners")


def _scheme(uri: str, where: str) -> str:
    try:
        return urlsplit(uri).scheme
    except ValueError as exc:
        raise ValueError(f"{where}.uri: {redact_url(uri)!r}: {scrub(str(exc), uri)}") from None


def _output(raw: Any, index: int) -> OutputConfig:
    return _plugin(raw, f"outputs[{index}]", OUTPUTS, OutputConfig, "outputs", "logfile")
