"""A collector output that never finishes a write: a stand-in for a stalled peer.

bench/collector.py loads it as ``type = "stall_output:StallOutput"`` (with bench/ on
PYTHONPATH) when the analyzer output it would rather stall is not there.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from numbat.collector.outputs import Batch, Output
from numbat.config import OutputConfig


class StallOutput(Output):
    """Takes the first batch and never returns: everything after it queues up."""

    Options: ClassVar[type[OutputConfig]] = OutputConfig

    async def write(self, batch: Batch) -> None:
        await asyncio.Event().wait()
