"""``type = "sqlite"``: events into the embedded store (``numbat.store.sqlite``)."""

from __future__ import annotations

from numbat.collector.outputs import Batch, Output
from numbat.config import SQLiteOutputConfig
from numbat.store.sqlite import SQLiteStore

DAY_MS = 86_400_000


class SQLiteOutput(Output):
    """Stores events in a SQLite file with retention pruning; what ``numbat up`` uses
    when no InfluxDB is given.

    Config::

        [[collector.outputs]]
        type = "sqlite"
        path = "/var/lib/numbat/numbat.db"
        retention_days = 7
    """

    Options = SQLiteOutputConfig
    options: SQLiteOutputConfig
    store: SQLiteStore | None = None

    async def start(self) -> None:
        self.store = SQLiteStore(
            self.options.path, retention_ms=round(self.options.retention_days * DAY_MS)
        )

    async def write(self, batch: Batch) -> None:
        assert self.store is not None
        await self.store.write(batch.events)

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None
