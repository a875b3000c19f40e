"""Event loops for numbat's daemons: uvloop's where it is installed, else asyncio's.

:func:`run` runs a daemon's main coroutine; :func:`new_loop` makes a loop for a thread
of its own (e.g. the InfluxDB output's senders). One factory, so every loop numbat
starts is the same kind. :func:`exit_now_if_stuck` ends a daemon process whose I/O
threads are stuck (a write to a stalled NFS mount or a full pipe), which the
interpreter would otherwise wait for at exit, for ever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

THREADS_GRACE = 2.0
"""Seconds a daemon's worker threads get to finish once its loop has ended."""


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a loop from :func:`new_loop`, except that the loop's default
    executor is not waited for: a thread stuck in a write must not hold up the exit
    (``asyncio.run`` joins every executor thread, with no timeout)."""
    loop = new_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()  # shuts the default executor down without waiting for it


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def exit_now_if_stuck(code: int, grace: float = THREADS_GRACE) -> None:
    """After a daemon's loop has ended: if threads other than the main one are still
    running ``grace`` seconds later (stuck in I/O), log which, flush, and end the
    process with ``code`` at once instead of waiting for them at exit."""
    deadline = time.monotonic() + grace
    while stuck := _running_threads():
        left = deadline - time.monotonic()
        if left <= 0:
            _exit(code, stuck)
        stuck[0].join(min(left, 0.1))


def _running_threads() -> list[threading.Thread]:
    main = threading.main_thread()
    return [t for t in threading.enumerate() if t is not main and not t.daemon and t.is_alive()]


def _exit(code: int, stuck: list[threading.Thread]) -> NoReturn:
    log.warning(
        "exiting without waiting for %d thread(s) stuck in I/O (%s)",
        len(stuck),
        ", ".join(t.name for t in stuck),
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def new_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's (faster) on Linux and macOS when installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
