"""Plug-ins that fail in the ways third-party code does, for the robustness tests."""

from __future__ import annotations

from numbat.collector.outputs import Batch, Output


class NoStartOutput(Output):
    """Its start() raises, as an output whose file or peer cannot be opened."""

    async def start(self) -> None:
        raise PermissionError("cannot open /nowhere")

    async def write(self, batch: Batch) -> None:
        pass


class BadStatsOutput(Output):
    """Writes fine; its stats() raises, as a buggy plug-in's might."""

    async def write(self, batch: Batch) -> None:
        pass

    def stats(self) -> dict[str, float]:
        raise RuntimeError("stats broke")
