"""A third-party output, as docs/contributing.md's walkthrough builds one: the events whose
name matches a glob, as JSON lines in a file. Loaded by import path.

    [[collector.outputs]]
    type = "tests.plugins.jsonfile_output:JSONFileOutput"
    path = "/var/log/numbat/web.jsonl"
    match = "web.*"
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
from pathlib import Path

from numbat.collector.outputs import Batch, Output
from numbat.config import OutputConfig
from numbat.server import ProcessContext


class JSONFileOptions(OutputConfig, kw_only=True):
    path: str
    match: str = "*"


class JSONFileOutput(Output):
    """Appends each matching event as one JSON line; ``stats()`` counts the skipped."""

    Options = JSONFileOptions
    options: JSONFileOptions

    def __init__(self, options: JSONFileOptions, *, context: ProcessContext | None = None) -> None:
        super().__init__(options, context=context)
        self.skipped = 0

    async def write(self, batch: Batch) -> None:
        match = self.options.match
        wanted = [e for e in batch.events if fnmatch.fnmatchcase(str(e["name"]), match)]
        self.skipped += len(batch) - len(wanted)
        data = b"".join(json.dumps(event).encode() + b"\n" for event in wanted)
        # File I/O in a thread: a slow disk must hold up this output only, never ingest.
        await asyncio.to_thread(_append, Path(self.options.path), data)

    def stats(self) -> dict[str, float]:
        return {"skipped": self.skipped}


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as out:
        out.write(data)
