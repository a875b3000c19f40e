"""``numbat up``: everything numbat needs on one machine, from one command.

It runs the collector with tcp and udp listeners on port 3333 and a unix socket in
the data directory, storing events in the embedded SQLite store (or in InfluxDB with
``--influx URL``), with self-monitoring on, the analyzer (default rules, its HTTP API)
and the dashboard.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from numbat._redact import redact_url
from numbat.config import Config, from_dict


@dataclass(frozen=True)
class UpSettings:
    """What ``numbat up`` was asked for.

    >>> cfg = UpSettings(data_dir=Path("/tmp/n")).config()
    >>> [l.uri for l in cfg.collector.listeners]
    ['tcp://127.0.0.1:3333', 'udp://127.0.0.1:3333', 'unix:///tmp/n/collector.sock']
    >>> [o.type for o in cfg.collector.outputs]
    ['sqlite', 'analyzer']
    """

    data_dir: Path = Path("numbat-data")
    host: str = "127.0.0.1"
    port: int = 3333
    influx: str | None = None
    database: str = "numbat"
    analyzer_port: int = 3337
    api_port: int = 3338
    dashboard_port: int = 3380

    @property
    def socket_path(self) -> Path:
        return self.data_dir.absolute() / "collector.sock"

    def config(
        self,
        file: dict[str, Any] | None = None,
        *,
        source: str = "numbat up",
        given: Iterable[str] = (),
    ) -> Config:
        """The validated configuration ``numbat up`` runs.

        ``file``: a config file's mapping (``numbat up -c``) to start from. Its
        ``[collector]`` keeps its own keys; it gets ``numbat up``'s listeners if it has
        no ``listen``, and the storage output unless it has one of that type already
        (so a file can set the sqlite output's ``retention_days``). ``given`` names the
        options set on the command line (``host``, ``port``, ``influx``, ``database``,
        ``data_dir``), which override the file: ``host``/``port`` replace its tcp and
        udp listeners, the others the storage output's keys. Raises ConfigError.

        >>> file = {"collector": {"outputs": [{"type": "sqlite", "retention_days": 30}]}}
        >>> cfg = UpSettings(data_dir=Path("/tmp/n")).config(file)
        >>> [(o.type, getattr(o, "retention_days", None)) for o in cfg.collector.outputs]
        [('sqlite', 30.0), ('analyzer', None)]
        """
        raw = copy.deepcopy(file) if file else {}
        collector = raw.setdefault("collector", {})
        if not isinstance(collector, dict):
            return from_dict(raw, source=source)  # let validation name the problem
        given = set(given)
        collector.setdefault("stats_interval", 10.0)
        self._listen(collector, replace_inet=bool(given & {"host", "port"}))
        self._outputs(collector, given)
        analyzer = raw.setdefault("analyzer", {})
        if isinstance(analyzer, dict):
            self._analyzer(analyzer, collector, given)
        dashboard = raw.setdefault("dashboard", {})
        if isinstance(dashboard, dict) and isinstance(analyzer, dict):
            self._dashboard(dashboard, analyzer, given)
        return from_dict(raw, source=source)

    def _dashboard(
        self, dashboard: dict[str, Any], analyzer: dict[str, Any], given: set[str]
    ) -> None:
        """The dashboard beside them: on ``dashboard_port``, reading the analyzer's API
        (with its token) and the storage output (its default)."""
        if "listen" not in dashboard or given & {"host", "dashboard_port"}:
            dashboard["listen"] = f"http://{self.host}:{self.dashboard_port}"
        http = analyzer.get("http")
        if isinstance(http, str) and ("analyzer" not in dashboard or given & {"host", "api_port"}):
            parts = urlsplit(http)
            dashboard["analyzer"] = f"http://{_reachable(parts.hostname or '')}:{parts.port}"
        if "analyzer_token" not in dashboard and analyzer.get("token"):
            dashboard["analyzer_token"] = analyzer["token"]

    def _analyzer(
        self, analyzer: dict[str, Any], collector: dict[str, Any], given: set[str]
    ) -> None:
        """The analyzer beside the collector: fed by an ``analyzer`` output, writing its
        alerts back to the collector's tcp listener, its state in the data directory."""
        listen = f"tcp://{self.host}:{self.analyzer_port}"
        if "listen" not in analyzer or "analyzer_port" in given or "host" in given:
            analyzer["listen"] = [listen]
        if "http" not in analyzer or "api_port" in given or "host" in given:
            analyzer["http"] = f"http://{self.host}:{self.api_port}"
        if "data_dir" not in analyzer or "data_dir" in given:
            analyzer["data_dir"] = str(self.data_dir)
        writeback = analyzer.setdefault("writeback", {})
        if isinstance(writeback, dict) and ("uri" not in writeback or given & {"host", "port"}):
            writeback["uri"] = f"tcp://{_reachable(self.host)}:{self.port}"
        outputs = collector.get("outputs")
        if isinstance(outputs, list):
            feeds = [o for o in outputs if isinstance(o, dict) and o.get("type") == "analyzer"]
            uri = f"tcp://{_reachable(self.host)}:{self.analyzer_port}"
            if not feeds:
                outputs.append({"type": "analyzer", "uri": uri})
            elif given & {"host", "analyzer_port"}:
                feeds[0]["uri"] = uri

    def _listen(self, collector: dict[str, Any], *, replace_inet: bool) -> None:
        ours = [f"tcp://{self.host}:{self.port}", f"udp://{self.host}:{self.port}"]
        if "listen" not in collector:
            collector["listen"] = [*ours, f"unix://{self.socket_path}"]
        elif replace_inet and isinstance(collector["listen"], list):
            kept = [e for e in collector["listen"] if _scheme(e) not in ("tcp", "udp")]
            collector["listen"] = [*ours, *kept]

    def _outputs(self, collector: dict[str, Any], given: set[str]) -> None:
        outputs = collector.setdefault("outputs", [])
        if not isinstance(outputs, list):
            return
        storage = self._storage()
        same = [o for o in outputs if isinstance(o, dict) and o.get("type") == storage["type"]]
        if not same:
            outputs.append(storage)
            return
        for key, val in storage.items():  # what the file's output leaves out: up's
            same[0].setdefault(key, val)
        flags = {"influx": "urls", "database": "database", "data_dir": "path"}
        if storage["type"] == "influxdb":
            flags["data_dir"] = "spool_dir"
        for flag, key in flags.items():
            if flag in given and key in storage:
                same[0][key] = storage[key]

    def _storage(self) -> dict[str, Any]:
        if self.influx is None:
            return {"type": "sqlite", "path": str(self.data_dir / "numbat.db")}
        return {
            "type": "influxdb",
            "urls": [self.influx],
            "database": self.database,
            "spool_dir": str(self.data_dir / "spool"),
        }

    def banner(self, command: str = "numbat", config: Config | None = None) -> str:
        """What to tell the person who started it, read off the ``config`` it runs (its
        own by default, or the one ``-c`` made); ``command`` is how they run numbat
        (``./dev/numbat`` from a checkout).

        >>> print(UpSettings(data_dir=Path("/d")).banner().splitlines()[1])
          send metrics to  tcp://127.0.0.1:3333  udp://127.0.0.1:3333
        """
        collector = (config or self.config()).collector
        uris = [lc.uri for lc in collector.listeners]
        inet = "  ".join(u for u in uris if not u.startswith("unix:"))
        sockets = [f"socket:{urlsplit(u).path}" for u in uris if u.startswith("unix:")]
        lines = ["numbat is up.", f"  send metrics to  {inet or '(no network listener)'}"]
        lines += [f"                   {path}" for path in sockets]
        lines += [
            f"  storing them in  {_where(output)}"
            for output in collector.outputs
            if output.type != "analyzer"
        ]
        analyzer = (config or self.config()).analyzer
        lines += [
            f"  alerts API at    {analyzer.http}/api/v1/incidents",
            f"  dashboard at     {(config or self.config()).dashboard.listen}/",
        ]
        lines += [f"  e.g.  {command} emit deploy.done --app web", "  stop with Ctrl-C"]
        return "\n".join(lines)


def _reachable(host: str) -> str:
    """Where to connect to a listener bound on ``host`` (a wildcard: this machine)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _scheme(entry: Any) -> str:
    uri = entry.get("uri") if isinstance(entry, dict) else entry
    try:
        return urlsplit(uri).scheme if isinstance(uri, str) else ""
    except ValueError:
        return ""


def _where(output: Any) -> str:
    """One output as the banner names it."""
    if output.type == "sqlite":
        return f"the embedded store {output.path} ({output.retention_days:g} days kept)"
    if output.type == "influxdb":
        urls = ", ".join(redact_url(url) for url in output.urls)
        return f"InfluxDB at {urls}, database {output.database!r} (spool in {output.spool_dir})"
    return f"{output.label} ({output.type})"
