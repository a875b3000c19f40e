"""``type = "sqlite"``: events into the embedded store (``numbat.store.sqlite``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from numbat._ratelimit import RateLimitedLog
from numbat.collector.outputs import Batch, Output, make_parent
from numbat.config import SQLiteOutputConfig
from numbat.server import ProcessContext
from numbat.store.points import PointMapper
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

    A reload that changes its settings but not ``path`` keeps the store open: the new
    output takes it over (a second connection would count series and the ``seq`` of
    points from where the file was when it opened, while the old one writes on, and
    its first write would collide with those).
    """

    Options = SQLiteOutputConfig
    options: SQLiteOutputConfig
    store: SQLiteStore | None = None

    def __init__(
        self, options: SQLiteOutputConfig, *, context: ProcessContext | None = None
    ) -> None:
        super().__init__(options, context=context)
        self._warn = RateLimitedLog(log)
        self._previous: SQLiteOutput | None = None  # the output this one is to replace

    def borrow_from(self, old: Output) -> None:
        """Reload: the same file stays open; :meth:`adopt` takes ``old``'s store."""
        if isinstance(old, SQLiteOutput) and old.store is not None and self._same_file(old):
            self._previous = old

    def adopt(self, old: Output) -> None:
        """Reload: ``old``'s store is this output's, with this output's retention and
        text fields (``old`` closes nothing then)."""
        if old is not self._previous or not isinstance(old, SQLiteOutput):
            return
        store, old.store, self._previous = old.store, None, None
        assert store is not None
        store.retention_ms = round(self.options.retention_days * DAY_MS)
        store.mapper = PointMapper(text_fields=self.options.text_fields)
        self.store = store

    def _same_file(self, other: SQLiteOutput) -> bool:
        return Path(other.options.path).resolve() == Path(self.options.path).resolve()

    async def start(self) -> None:
        if self._previous is not None:
            return  # the file is open and checked: adopt() takes the store
        path = Path(self.options.path)
        make_parent(path)
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
