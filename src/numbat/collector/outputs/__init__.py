"""Collector outputs: the :class:`Output` ABC and :class:`Batch`, what every output gets.

Built-in outputs are one module each, registered in :data:`numbat.config.OUTPUTS` with
the options they take; an output ``type`` that is not registered is taken as an import
path (``"mypackage.outputs:MyOutput"``), so third-party outputs need no change here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from numbat._encode import dumps
from numbat._importer import import_from_string
from numbat.config import OUTPUTS, OutputConfig
from numbat.event import Event
from numbat.server import ProcessContext


class Batch:
    """Events delivered together; their NDJSON is encoded once, on first use.

    >>> Batch([{"name": "a", "value": 1}]).ndjson
    b'{"name":"a","value":1}\\n'
    """

    __slots__ = ("_ndjson", "events")

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self._ndjson: bytes | None = None

    def __len__(self) -> int:
        return len(self.events)

    @property
    def ndjson(self) -> bytes:
        if self._ndjson is None:
            self._ndjson = b"".join([dumps(event) + b"\n" for event in self.events])
        return self._ndjson

    @classmethod
    def merge(cls, batches: Iterable[Batch]) -> Batch:
        events: list[Event] = []
        for batch in batches:
            events += batch.events
        return cls(events)


class Output(ABC):
    """Where the collector delivers events. One task calls ``write`` for one batch at a time.

    A subclass may declare ``Options``, a subclass of :class:`numbat.config.OutputConfig`
    with its settings; the collector passes the validated options to ``__init__``.

    >>> class Stdout(Output):
    ...     async def write(self, batch):
    ...         print(len(batch.events), "events")
    """

    Options: ClassVar[Any] = None

    def __init__(self, options: OutputConfig, *, context: ProcessContext | None = None) -> None:
        """``context``: which of the collector's worker processes runs this output; a
        subclass that overrides ``__init__`` passes it on."""
        self.options = options
        self.context = context or ProcessContext()

    async def start(self) -> None:
        """Open files or connections; called once before the first write."""

    @abstractmethod
    async def write(self, batch: Batch) -> Mapping[str, int] | None:
        """Deliver one batch; raise to have it counted as a write error.

        Return None when every event was delivered, or how many were not, by reason
        (``{"expired": 3}``): those are counted as ``dropped`` with that reason, the
        rest as ``written``."""

    async def flush(self) -> None:
        """Push out anything buffered inside the output."""

    async def finish(self, timeout: float) -> int:
        """Shutdown, before the collector's last report: push out what the output holds
        for up to ``timeout`` seconds (what is left of ``drain_timeout``, at least 1 s)
        and return how many events it still holds, which :meth:`close` will drop; the
        last report counts them as ``dropped`` (``reason=held_at_shutdown``), so they
        reach the store. Default: :meth:`flush`, nothing held."""
        await self.flush()
        return 0

    async def close(self) -> None:
        """Flush and release resources."""
        await self.flush()

    def borrow_from(self, old: Output) -> None:
        """Reload, before :meth:`start`: this output is to replace ``old`` (the same
        type, still running). An output whose start would open something ``old`` holds
        exclusively (a locked spool directory, a database connection) uses ``old``'s
        instead, and takes it for good in :meth:`adopt`. Until then ``old`` keeps it:
        a :meth:`close` without :meth:`adopt` (the reload failed) must leave it alone."""

    def adopt(self, old: Output) -> None:
        """Reload: take over what ``old`` (the same type, replaced) still buffers, and
        what :meth:`borrow_from` borrowed from it. Called before ``old`` is closed, on
        the collector's loop; must not fail (the swap is under way)."""

    def reopen(self) -> None:
        """SIGHUP: reopen files (logrotate); outputs without files ignore it."""

    def stats(self) -> dict[str, float]:
        """Extra gauges to report, e.g. an internal backlog's depth: ``{name: value}``,
        reported as ``numbat.collector.output.<name>`` tagged ``output=<label>``."""
        return {}

    def server_stats(self) -> dict[str, dict[str, float]]:
        """Gauges per server this output sends to: ``{"host:port": {name: value}}``,
        reported as ``numbat.collector.output.<name>`` tagged with ``output`` and
        ``server`` (an address goes in a tag, never in a measurement name)."""
        return {}

    def lost(self) -> dict[tuple[str, str], int]:
        """Events lost inside the output since it started, by ``(reason, server)``
        (server ``""`` when not about one): running totals, read at every report and
        counted as ``numbat.collector.dropped`` tagged ``output``, ``reason`` and
        ``server`` (when not ``""``), beside the queue's own losses."""
        return {}


def output_class(kind: str) -> type[Output]:
    """The class for an output ``type``: a registered name or ``"module:Class"``."""
    entry = OUTPUTS.get(kind)
    cls = import_from_string(entry.path if entry is not None else kind)
    if not (isinstance(cls, type) and issubclass(cls, Output)):
        raise TypeError(f"{kind!r} is not a numbat.collector.outputs.Output subclass")
    return cls


def file_in_the_way(path: Path) -> Path | None:
    """The existing non-directory among ``path``'s ancestors (its nearest existing one),
    under which ``path`` cannot be made, or None."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def make_parent(path: Path) -> None:
    """Create ``path``'s directory and its parents.

    Raises NotADirectoryError naming the file in the way (``x/a.db: x is not a
    directory``), where mkdir says only "File exists"; OSError otherwise."""
    blocker = file_in_the_way(path)
    if blocker is not None:
        raise NotADirectoryError(f"{path}: {blocker} is not a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
