"""``type = "analyzer"``: NDJSON over one TCP connection, with reconnect and a backlog.

The original collector's analyzer output, made dependable: events are written exactly as
the original wrote them (one JSON object per line), the connection is re-established
with the original backoff formula, and while the analyzer is away up to ``max_backlog``
events wait (the oldest go first, counted). The engine is
:class:`~numbat.collector.outputs._sender.LineSender`, which graphite uses too.

Delivery is at least once: a batch whose write fails is put back and sent again on the
next connection, so the analyzer may see a line twice, never a gap the collector knew of.
"""

from __future__ import annotations

import logging

from numbat._backoff import Backoff
from numbat._backoff import reconnect as default_backoff
from numbat.collector.outputs import Batch, Output
from numbat.collector.outputs._sender import FLUSH_TIMEOUT, LineSender, host_port
from numbat.config import AnalyzerOutputConfig
from numbat.server import ProcessContext

log = logging.getLogger(__name__)


class AnalyzerOutput(Output):
    """Sends every event to the analyzer as one JSON object per line over TCP.

    Config::

        [[collector.outputs]]
        type = "analyzer"
        uri = "tcp://analyzer.internal:3337"
        max_backlog = 100000   # events kept while the analyzer is unreachable

    ``stats()`` reports ``backlog`` (events waiting) and ``dropped`` (events lost to a
    full backlog or left over at shutdown, since start).
    """

    Options = AnalyzerOutputConfig
    options: AnalyzerOutputConfig

    def __init__(
        self,
        options: AnalyzerOutputConfig,
        *,
        backoff: Backoff = default_backoff,
        flush_timeout: float = FLUSH_TIMEOUT,
        context: ProcessContext | None = None,
    ) -> None:
        super().__init__(options, context=context)
        host, port = host_port(options.uri)
        self.flush_timeout = flush_timeout
        self.sender = LineSender(
            host, port, max_backlog=options.max_backlog, label=options.label, backoff=backoff
        )

    async def start(self) -> None:
        self.sender.start()

    async def write(self, batch: Batch) -> None:
        if batch.events:
            await self.sender.send(batch.ndjson, len(batch.events))

    async def flush(self) -> None:
        await self.sender.flush(self.flush_timeout)

    async def finish(self, timeout: float) -> int:
        await self.sender.flush(min(self.flush_timeout, timeout))
        self.flush_timeout = 0.0  # close() drops the rest at once: counted by the report
        return self.sender.queued

    async def close(self) -> None:
        await self.sender.close(self.flush_timeout)

    def stats(self) -> dict[str, float]:
        return self.sender.stats()

    def lost(self) -> dict[tuple[str, str], int]:
        """Events the backlog could not keep while the analyzer was down or slow."""
        return {("backlog_full", ""): self.sender.dropped}

    def adopt(self, old: Output) -> None:
        if isinstance(old, AnalyzerOutput):
            self.sender.adopt(old.sender)
