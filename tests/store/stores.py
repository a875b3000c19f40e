"""What the store tests share: events in one line, a coroutine run, and stores that are
closed however a test ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from numbat.event import Event, Scalar
from numbat.store.influx import InfluxStore
from numbat.store.sqlite import SQLiteStore
from tests.store.conftest import InfluxDatabase

T0 = 1_700_000_040_000  # a whole minute, ms
HOUR = 3_600_000


def ev(name: str, value: float, time: int, **fields: Scalar) -> Event:
    """An event as numbat.event.normalize leaves it."""
    return {"name": name, "value": value, "time": time, **fields}


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run one test coroutine in a fresh event loop (pytest-asyncio is not used)."""
    asyncio.run(test())


@asynccontextmanager
async def sqlite(tmp_path: Path, **options: Any) -> AsyncIterator[SQLiteStore]:
    """A SQLite store whose clock keeps every test point (around T0) within the retention."""
    store = SQLiteStore(tmp_path / "numbat.db", clock=lambda: T0 + HOUR, **options)
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def influx(db: InfluxDatabase, **options: Any) -> AsyncIterator[InfluxStore]:
    """An InfluxDB store on the test's fresh database."""
    store = InfluxStore(db.server.url, db.name, **options)
    try:
        yield store
    finally:
        await store.close()
