"""Helpers for testing code that emits metrics: capture what would have been sent.

>>> import numbat
>>> from numbat.testing import capture_metrics
>>> with capture_metrics(app="web") as events:
...     _ = numbat.metric("requests", value=2, route="/")
...     _ = numbat.metric({"value": 1})  # no name: dropped and counted, never raised
>>> [(e["name"], e["value"], e["route"]) for e in events]
[('web.requests', 2, '/')]
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

import numbat
from numbat.emitter.base import BaseEmitter
from numbat.emitter.transport import Transport
from numbat.event import Event


class _Memory(Transport):
    def connect(self, timeout: float) -> None:
        pass

    def send(self, payloads: Sequence[bytes]) -> None:
        pass


class CaptureEmitter(BaseEmitter):
    """An emitter that keeps every event it would send, decoded, in ``events``.

    Events go through the same validation, prefixing and defaults as a real emitter.

    >>> em = CaptureEmitter(app="web", host="h1")
    >>> em.metric("latency", value=12.5)["name"]
    'web.latency'
    >>> em.events[0]["host"], em.events[0]["value"]
    ('h1', 12.5)
    """

    def __init__(self, app: str = "numbat", node: str | None = None, **options: Any) -> None:
        options.setdefault("host", "test-host")
        super().__init__("memory:", app, node, transport=_Memory("memory:", _no_parts()), **options)
        self.events: list[Event] = []

    def _wake(self) -> None:
        for payload in self.backlog.take(self.backlog.max_bytes):
            self.events.append(json.loads(payload))
            self.sent += 1


@contextlib.contextmanager
def capture_metrics(app: str = "numbat", **options: Any) -> Iterator[list[Event]]:
    """Install a :class:`CaptureEmitter` as the global emitter for the ``with`` block."""
    previous = numbat.get_global_emitter()
    emitter = CaptureEmitter(app, **options)
    numbat.set_global_emitter(emitter)
    try:
        yield emitter.events
    finally:
        numbat.set_global_emitter(previous)


def _no_parts() -> Any:
    from urllib.parse import urlsplit

    return urlsplit("memory:")
