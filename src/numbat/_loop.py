"""Event loops for numbat's daemons: uvloop's where it is installed, else asyncio's.

:func:`run` runs a daemon's main coroutine; :func:`new_loop` makes a loop for a thread
of its own (e.g. the InfluxDB output's senders). One factory, so every loop numbat
starts is the same kind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a loop from :func:`new_loop`."""
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(coro)


def new_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's (faster) on Linux and macOS when installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
