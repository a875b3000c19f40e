"""JSON encoding for the emitter: orjson when installed, else the stdlib (same bytes out)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

dumps: Callable[[Any], bytes]
try:
    import orjson

    dumps = orjson.dumps
except ImportError:  # pragma: no cover - exercised only where orjson is missing
    _encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    def dumps(obj: Any) -> bytes:
        return _encoder.encode(obj).encode("utf-8")
