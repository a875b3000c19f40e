"""``numbat up``: everything numbat needs on one machine, from one command.

It runs the collector with tcp and udp listeners on port 3333 and a unix socket in
the data directory, storing events in the embedded SQLite store (or in InfluxDB with
``--influx URL``), with self-monitoring on. The analyzer and the dashboard join it as
they land.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from numbat._redact import redact_url
from numbat.config import Config, from_dict


@dataclass(frozen=True)
class UpSettings:
    """What ``numbat up`` was asked for.

    >>> cfg = UpSettings(data_dir=Path("/tmp/n")).config()
    >>> [l.uri for l in cfg.collector.listeners]
    ['tcp://127.0.0.1:3333', 'udp://127.0.0.1:3333', 'unix:///tmp/n/collector.sock']
    >>> [o.type for o in cfg.collector.outputs]
    ['sqlite']
    """

    data_dir: Path = Path("numbat-data")
    host: str = "127.0.0.1"
    port: int = 3333
    influx: str | None = None
    database: str = "numbat"

    @property
    def socket_path(self) -> Path:
        return self.data_dir.absolute() / "collector.sock"

    def config(self) -> Config:
        """The validated configuration ``numbat up`` runs."""
        collector: dict[str, Any] = {
            "listen": [
                f"tcp://{self.host}:{self.port}",
                f"udp://{self.host}:{self.port}",
                f"unix://{self.socket_path}",
            ],
            "outputs": [self._storage()],
            "stats_interval": 10.0,
        }
        return from_dict({"collector": collector}, source="numbat up")

    def _storage(self) -> dict[str, Any]:
        if self.influx is None:
            return {"type": "sqlite", "path": str(self.data_dir / "numbat.db")}
        return {
            "type": "influxdb",
            "urls": [self.influx],
            "database": self.database,
            "spool_dir": str(self.data_dir / "spool"),
        }

    def banner(self) -> str:
        """What to tell the person who started it."""
        storage = (
            f"InfluxDB at {redact_url(self.influx)}, database {self.database!r} "
            f"(spool in {self.data_dir / 'spool'})"
            if self.influx
            else f"the embedded store {self.data_dir / 'numbat.db'} (7 days kept)"
        )
        return "\n".join(
            [
                "numbat is up.",
                f"  send metrics to  tcp://{self.host}:{self.port}  udp://{self.host}:{self.port}",
                f"                   socket:{self.socket_path}",
                f"  storing them in  {storage}",
                "  e.g.  numbat emit deploy.done --app web",
                "  stop with Ctrl-C",
            ]
        )
