"""Backpressure: a :class:`Gate` that a daemon's outputs close while they are full and
its stream listeners obey by not reading.

Stream peers (tcp, unix, ws) then wait in the kernel's buffers and in their own
backlogs instead of having events dropped inside the daemon, the way TCP flow control
is meant to be used (and as Vector's ``when_full = "block"`` buffers do). A datagram
peer cannot be told to wait: UDP listeners read on regardless.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable


class Gate:
    """Open unless someone holds it; listeners read only while it is open.

    Each holder (e.g. one output queue over its high-water mark) holds it under its own
    key; the gate opens when the last holder releases it, and then calls, once, every
    callback registered with :meth:`when_open` while it was closed.

    >>> gate = Gate()
    >>> gate.hold("logfile"); gate.is_open
    False
    >>> gate.when_open(lambda: print("reading again"))
    >>> gate.release("logfile")
    reading again
    >>> gate.is_open
    True
    """

    def __init__(self) -> None:
        self._holders: set[Hashable] = set()
        self._callbacks: list[Callable[[], None]] = []
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def is_open(self) -> bool:
        return not self._holders

    def hold(self, key: Hashable) -> None:
        """Close the gate (or keep it closed) on behalf of ``key``."""
        self._holders.add(key)

    def release(self, key: Hashable) -> None:
        """``key`` no longer holds the gate; if no one else does, it opens."""
        self._holders.discard(key)
        if self._holders:
            return
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def when_open(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the gate is open: now if it is, else when it opens."""
        if self.is_open:
            callback()
        else:
            self._callbacks.append(callback)

    async def wait_open(self) -> None:
        """Return once the gate is open."""
        while not self.is_open:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
