"""A plug-in whose options check raises a bare message, and a non-ValueError."""

from __future__ import annotations

from numbat.collector.outputs import Batch, Output
from numbat.config import OutputConfig


class StrictOptions(OutputConfig):
    every: int = 1

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ValueError("must not be negative")
        if self.every == 0:
            raise KeyError("zero")


class StrictOutput(Output):
    Options = StrictOptions

    async def write(self, batch: Batch) -> None:
        pass
