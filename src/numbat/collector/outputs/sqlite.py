"""``type = "sqlite"``: events into the embedded store (``numbat.store.sqlite``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from numbat._ratelimit import RateLimitedLog
from numbat.collector.outputs import Batch, Output
from numbat.config import SQLiteOutputConfig
from numbat.server import ProcessContext
from numbat.store.sqlite import SQLiteStore

DAY_MS = 86_400_000
log = logging.getLogger(__name__)


class SQLiteOutput(Output):
    """Stores events in a SQLite file with retention pruning; what ``numbat up`` uses
    when no InfluxDB is given.

    Config::

        [[collector.outputs]]
        type = "sqlite"
        path = "/var/lib/numbat/numbat.db"
        retention_days = 7
        text_fields = ["description", "message"]   # kept as text, as the influxdb output

    An event older than the retention is not stored: it is counted as ``dropped`` with
    ``reason=expired`` (not ``written``) and logged, rate-limited.
    """

    Options = SQLiteOutputConfig
    options: SQLiteOutputConfig
    store: SQLiteStore | None = None

    def __init__(
        self, options: SQLiteOutputConfig, *, context: ProcessContext | None = None
    ) -> None:
        super().__init__(options, context=context)
        self._warn = RateLimitedLog(log)

    async def start(self) -> None:
        path = Path(self.options.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        store = SQLiteStore(
            path,
            retention_ms=round(self.options.retention_days * DAY_MS),
            text_fields=self.options.text_fields,
        )
        try:
            await store.open()  # a path that cannot be used stops startup, named
        except BaseException:
            await store.close()
            raise
        self.store = store

    async def write(self, batch: Batch) -> Mapping[str, int] | None:
        assert self.store is not None
        result = await self.store.write(batch.events)
        if not result.expired:
            return None
        self._warn.warning(
            "expired",
            "sqlite %s: %d events older than retention_days = %g not stored (expired)",
            self.options.path,
            result.expired,
            self.options.retention_days,
        )
        return {"expired": result.expired}

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None
