"""What `import numbat` costs every service that emits."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = [
    "asyncio",
    "click",
    "msgspec",
    "websockets",
    "numbat.config",
    "numbat.cli",
    "numbat.emitter.aio",
    "numbat.emitter.ws",
    "tomllib",
]


def test_import_numbat_loads_no_daemon_dependencies() -> None:
    """import numbat pulls in neither asyncio nor any daemon or CLI dependency."""
    code = "import sys, json, numbat; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    assert {name.split(".")[0] for name in loaded if name.startswith("numbat")} == {"numbat"}


def test_async_emitter_is_importable_from_the_package() -> None:
    """numbat.AsyncEmitter is available, loaded on first use."""
    code = "import numbat; print(numbat.AsyncEmitter.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "AsyncEmitter"
