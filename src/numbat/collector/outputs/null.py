"""``type = "null"``: accepts and discards events (benchmarks, and a sink-less collector)."""

from __future__ import annotations

from numbat.collector.outputs import Batch, Output
from numbat.config import NullOutputConfig


class NullOutput(Output):
    """Discards every batch; the collector still counts them as written.

    Config::

        [[collector.outputs]]
        type = "null"
    """

    Options = NullOutputConfig

    async def write(self, batch: Batch) -> None:
        pass
