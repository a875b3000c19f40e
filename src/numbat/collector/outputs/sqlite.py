"""``type = "sqlite"``: events into the embedded store (``numbat.store.sqlite``)."""

from __future__ import annotations

from pathlib import Path

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
        path = Path(self.options.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        store = SQLiteStore(path, retention_ms=round(self.options.retention_days * DAY_MS))
        try:
            await store.open()  # a path that cannot be used stops startup, named
        except BaseException:
            await store.close()
            raise
        self.store = store

    async def write(self, batch: Batch) -> None:
        assert self.store is not None
        await self.store.write(batch.events)

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None
