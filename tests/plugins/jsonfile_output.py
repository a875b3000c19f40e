"""A third-party output, as docs/contributing.md's walkthrough builds one: the events whose
name matches a glob, as JSON lines in a file. Loaded by import path.

    [[collector.outputs]]
    type = "tests.plugins.jsonfile_output:JSONFileOutput"
    path = "/var/log/numbat/web.jsonl"
    match = "web.*"
"""

from __future__ import annotations

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
        wanted = [
            e for e in batch.events if fnmatch.fnmatchcase(str(e["name"]), self.options.match)
        ]
        self.skipped += len(batch) - len(wanted)
        with Path(self.options.path).open("ab") as out:  # small test files: no thread needed
            out.writelines(json.dumps(event).encode() + b"\n" for event in wanted)

    def stats(self) -> dict[str, float]:
        return {"skipped": self.skipped}
