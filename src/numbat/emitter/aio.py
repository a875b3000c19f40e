""":class:`AsyncEmitter`: the same API, sending from a task on the running event loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from numbat.emitter.base import BATCH_BYTES, BaseEmitter


class AsyncEmitter(BaseEmitter):
    """An emitter for asyncio programs: ``metric()`` is synchronous and never blocks;
    a task on the loop connects and sends.

    >>> async def main():
    ...     async with AsyncEmitter("tcp://127.0.0.1:3333", app="web") as em:
    ...         em.metric("requests", route="/")
    ...     # leaving the block flushes (up to 5 s) and disconnects

    ``metric()`` must be called from the loop's thread (use :class:`Emitter` from
    others). The sender task starts with the first ``metric()`` or ``start()`` made
    while the loop runs.
    """

    def __init__(
        self, uri: str, app: str = "numbat", node: str | None = None, **options: Any
    ) -> None:
        super().__init__(uri, app, node, **options)
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._drained_event: asyncio.Event | None = None
        self._deadline: float | None = None
        self._inflight = False
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self.start()

    def start(self) -> None:
        """Start the sender task on the running loop (idempotent)."""
        if self._task is None and self.state != "closed":
            self._wakeup = asyncio.Event()
            self._drained_event = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued has been sent; True if it all was."""
        self.start()
        assert self._drained_event is not None
        while not self._drained():
            self._drained_event.clear()
            try:
                await asyncio.wait_for(self._drained_event.wait(), timeout)
            except TimeoutError:
                return self._drained()
        return True

    async def aclose(self, timeout: float = 5.0) -> bool:
        """Send what can be sent within ``timeout`` seconds, then disconnect."""
        if self.state == "closed":
            return False
        if self._task is not None:
            self._deadline = time.monotonic() + timeout
            self._wake()
            await asyncio.wait([self._task], timeout=max(timeout, 0) + 0.1)
        ok = self._drained() and self.state != "failed"
        self._drop("closed", self.backlog.clear())
        self._set_state("closed")
        return ok

    async def __aenter__(self) -> AsyncEmitter:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _drained(self) -> bool:
        return not self.backlog and not self._inflight

    def _wake(self) -> None:
        if self._wakeup is None:
            try:
                self.start()
            except RuntimeError:  # no running loop yet: the event waits in the backlog
                return
        assert self._wakeup is not None
        self._wakeup.set()

    def _closing(self) -> bool:
        return self._deadline is not None and (
            time.monotonic() >= self._deadline or self._drained()
        )

    async def _run(self) -> None:
        connected = False
        try:
            while not self._closing() and self.state != "failed":
                if not connected:
                    connected = await self._connect()
                else:
                    connected = await self._send_some()
        finally:
            await self.transport.aclose()

    async def _connect(self) -> bool:
        try:
            await self.transport.aconnect(self._connect_timeout)
        except (OSError, TimeoutError) as exc:
            delay = self._on_connect_failed(exc)
            if delay is not None:
                await self._sleep(delay)
            return False
        self._on_connected()
        return True

    async def _sleep(self, delay: float) -> None:
        assert self._wakeup is not None
        if self._deadline is not None:
            delay = min(delay, max(self._deadline - time.monotonic(), 0))
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), delay)

    async def _send_some(self) -> bool:
        assert self._wakeup is not None and self._drained_event is not None
        batch = self.backlog.take(BATCH_BYTES)
        if not batch:
            self._drained_event.set()
            self._wakeup.clear()
            if self._deadline is None:
                await self._wakeup.wait()
            return True
        self._inflight = True
        try:
            await self.transport.asend(batch)
        except (OSError, TimeoutError) as exc:
            self._inflight = False
            await self.transport.aclose()
            delay = self._on_send_failed(batch, exc)
            if delay is not None:
                await self._sleep(delay)
            return False
        finally:
            self._inflight = False
        self._on_sent(len(batch))
        return True
