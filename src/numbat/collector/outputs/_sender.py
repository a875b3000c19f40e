"""TCP lines with reconnect and a backlog: what the analyzer and graphite outputs send with.

:class:`LineSender` keeps one TCP connection to a peer and writes newline-terminated
lines through it; while the peer is away the lines wait in a bounded
:class:`LineBacklog` (oldest dropped first, counted), and the connection is
re-established with the original numbat reconnect delay (:func:`numbat._backoff.reconnect`).
:class:`FlowControl` is the one place a protocol's ``pause_writing`` /
``resume_writing`` become something a sender can await (used by the UDP sender too).

Delivery is at least once: a batch whose write fails is put back and sent again on the
next connection, so the peer may see a line twice, never a gap the collector knew of.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Final, cast
from urllib.parse import urlsplit

from numbat._backoff import Backoff
from numbat._backoff import reconnect as default_backoff
from numbat._ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

CONNECT_TIMEOUT: Final = 5.0
# A send that makes no progress for this long means a dead peer the kernel has not
# noticed yet (no RST, e.g. a partitioned network): reconnect instead of waiting ~15 min.
SEND_TIMEOUT: Final = 60.0
SEND_BYTES: Final = 1 << 20
FLUSH_TIMEOUT: Final = 2.0
# While flush()/close() wait, reconnect at least this often, whatever the backoff says.
FLUSH_RETRY: Final = 0.1
# Closing waits this long for the socket to close, then aborts it.
CLOSE_TIMEOUT: Final = 1.0


class LineBacklog:
    """A FIFO of newline-terminated lines, stored as the chunks they arrived in.

    ``trim()`` drops the oldest lines beyond ``max_lines`` and returns how many went;
    a chunk is cut at a line boundary, never copied line by line.

    >>> b = LineBacklog(max_lines=3)
    >>> b.push(b"a\\nb\\n", 2)
    >>> b.push(b"c\\nd\\n", 2)
    >>> b.trim(), len(b)
    (1, 3)
    >>> b.take(1 << 20)
    (b'b\\nc\\nd\\n', 3)
    """

    def __init__(self, max_lines: int) -> None:
        self.max_lines = max_lines
        self.lines = 0
        # [data, offset of the first line still kept, lines kept]
        self._chunks: deque[tuple[bytes, int, int]] = deque()

    def __len__(self) -> int:
        return self.lines

    def push(self, data: bytes, count: int) -> None:
        """Append ``count`` lines (``data`` ends with a newline); no trimming here."""
        if count:
            self._chunks.append((data, 0, count))
            self.lines += count

    def putback(self, data: bytes, count: int) -> None:
        """Return lines taken by :meth:`take` to the front (a failed send)."""
        if count:
            self._chunks.appendleft((data, 0, count))
            self.lines += count

    def take(self, max_bytes: int) -> tuple[bytes, int]:
        """Remove whole chunks from the front, about ``max_bytes`` (at least one chunk)."""
        parts: list[bytes] = []
        size = count = 0
        while self._chunks and (not parts or size < max_bytes):
            data, start, lines = self._chunks.popleft()
            part = data[start:] if start else data
            parts.append(part)
            size += len(part)
            count += lines
        self.lines -= count
        return (parts[0] if len(parts) == 1 else b"".join(parts)), count

    def trim(self) -> int:
        """Drop the oldest lines beyond ``max_lines``; return how many were dropped."""
        dropped = 0
        while self.lines > self.max_lines:
            excess = self.lines - self.max_lines
            data, start, lines = self._chunks[0]
            if lines <= excess:
                self._chunks.popleft()
                cut = lines
            else:
                for _ in range(excess):
                    start = data.index(b"\n", start) + 1
                self._chunks[0] = (data, start, lines - excess)
                cut = excess
            self.lines -= cut
            dropped += cut
        return dropped

    def clear(self) -> int:
        lines, self.lines = self.lines, 0
        self._chunks.clear()
        return lines


class FlowControl:
    """A protocol's flow control as events a sender awaits (mixed into the protocol).

    ``writable`` is clear while the transport asks us to pause (its buffer is over the
    high-water mark) and set again on resume, and on loss, so no sender waits forever
    for a transport that is gone; ``closed`` is set once the transport is closed.
    """

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()
        self.closed = asyncio.Event()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()
        self.closed.set()


async def close_transport(
    transport: asyncio.Transport | asyncio.DatagramTransport,
    closed: asyncio.Event,
    *,
    abort: bool = False,
) -> None:
    """Close (or abort) and wait, at most :data:`CLOSE_TIMEOUT`, until it is closed; a
    transport that does not close in that time (a peer taking nothing) is aborted."""
    if abort:
        transport.abort()
    else:
        transport.close()  # sends what the transport still buffers, then closes
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await closed.wait()
    except TimeoutError:
        transport.abort()


class _Link(FlowControl, asyncio.Protocol):
    """One TCP connection: writes with flow control, reports its loss, ignores input."""

    def __init__(self, on_lost: Callable[[], None]) -> None:
        super().__init__()
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self._on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: trust the protocol.
        self.transport = cast(asyncio.Transport, transport)
        # Pause whenever anything is left in user space: a finished send() then means
        # everything reached the kernel, so a later loss can only take the last bytes.
        self.transport.set_write_buffer_limits(high=0)

    def data_received(self, data: bytes) -> None:
        """The peer has nothing to say to us; whatever it sends is discarded."""

    def eof_received(self) -> bool:
        return False  # the peer is going away: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        super().connection_lost(exc)
        self._on_lost()

    async def send(self, data: bytes) -> None:
        if self.lost or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("connection lost")
        self.transport.write(data)
        await self.writable.wait()
        if self.lost:
            raise ConnectionResetError("connection lost while sending")

    def fail(self) -> None:
        """Give up on this connection now (a failed or stalled send)."""
        self.lost = True
        if self.transport is not None:
            self.transport.abort()

    async def close(self, abort: bool = False) -> None:
        """Close and wait (briefly) until the socket really is closed."""
        if self.transport is not None:
            await close_transport(self.transport, self.closed, abort=abort)


class LineSender:
    """Keeps one TCP connection to ``host:port`` and writes a :class:`LineBacklog` through it.

    ``send()`` queues lines and, while connected, waits until they are written (so a
    slow peer holds up the collector's per-output queue, which drops and counts). While
    the peer is down it returns at once: the lines wait in the backlog, which keeps the
    newest ``max_backlog`` lines and counts the rest as ``dropped``.

    Example::

        sender = LineSender("127.0.0.1", 3337, max_backlog=1000, label="analyzer")
        sender.start()
        await sender.send(b'{"name":"a"}\\n', 1)
        await sender.close(timeout=2.0)  # tries to deliver what is left, then counts it
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_backlog: int,
        label: str,
        backoff: Backoff = default_backoff,
    ) -> None:
        self.host = host
        self.port = port
        self.label = label
        self.dropped = 0
        self.delivered = 0
        self.inflight = 0
        self._backlog = LineBacklog(max_backlog)
        self._backoff = backoff
        self.retries = 0  # connects failed and links lost in a row: the backoff exponent
        self._link: _Link | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._flushing = 0
        self._wakeup = asyncio.Event()  # new lines, or the link was lost
        self._poke = asyncio.Event()  # flush(): stop waiting out the backoff
        self._changed = asyncio.Event()
        self._warn = RateLimitedLog(log)

    @property
    def connected(self) -> bool:
        return self._link is not None and not self._link.lost

    @property
    def queued(self) -> int:
        """Lines not yet written: the backlog plus what is being sent right now."""
        return len(self._backlog) + self.inflight

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"numbat output {self.label}"
            )

    async def send(self, data: bytes, count: int) -> None:
        """Queue ``count`` lines; while connected, return once they have been written."""
        if self._closed:
            self._drop(count, "closed")
            return
        self._backlog.push(data, count)
        self._wakeup.set()
        if not self.connected:
            self._drop(self._backlog.trim(), "backlog full")
            return
        # Only one caller (the output's worker) sends at a time, so "nothing queued"
        # means these lines are written; a lost link means they wait in the backlog.
        await self.until(lambda: not self.queued or not self.connected)

    async def until(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait until ``predicate()`` holds, re-checked at every change of state."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            return predicate()
        return True

    async def flush(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Try for up to ``timeout`` seconds to write everything queued; True if it all was."""
        if not self.queued or self._task is None:
            return not self.queued
        self._flushing += 1
        self._poke.set()
        try:
            return await self.until(lambda: not self.queued, timeout)
        finally:
            self._flushing -= 1

    async def close(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Flush for up to ``timeout`` seconds, disconnect; what is left is counted as dropped."""
        if self._closed:
            return False
        delivered = await self.flush(timeout)
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._link is not None:
            # A peer that took nothing for the whole flush would not take a goodbye either.
            await self._link.close(abort=not delivered)
            self._link = None
        self._drop(self._backlog.clear(), "shutdown")
        return delivered

    def stats(self) -> dict[str, float]:
        return {"backlog": self.queued, "dropped": self.dropped}

    def adopt(self, old: LineSender) -> None:
        """Move ``old``'s waiting lines in front of this sender's (a reload)."""
        data, count = old._backlog.take(1 << 62)
        if count:
            self._backlog.putback(data, count)
            self._drop(self._backlog.trim(), "backlog full")
            self._notify()

    # -- the sender task ---------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            link = self._link
            if link is None or link.lost:
                await self._reconnect(link)
                continue
            self._wakeup.clear()
            data, count = self._backlog.take(SEND_BYTES)
            if not count:
                self._notify()
                await self._wakeup.wait()
                continue
            await self._send(link, data, count)

    async def _reconnect(self, old: _Link | None) -> None:
        if old is not None:
            self._link = None
            self.retries += 1
            await old.close(abort=True)
            self._warn.warning(
                "lost", "output %s: lost the connection to %s", self.label, self._address()
            )
            self._notify()
        if self.retries:
            await self._pause()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, link = await loop.create_connection(
                    lambda: _Link(self._on_lost), self.host, self.port
                )
        except (OSError, TimeoutError) as exc:
            self.retries += 1
            self._notify()
            self._warn.warning(
                "connect", "output %s: cannot connect to %s: %s", self.label, self._address(), exc
            )
            return
        self._link = link
        log.info("output %s: connected to %s", self.label, self._address())
        self._notify()

    async def _send(self, link: _Link, data: bytes, count: int) -> None:
        self.inflight = count
        self._notify()
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await link.send(data)
        except (OSError, TimeoutError) as exc:
            # Marked lost at once: the loop must not try this link again before the
            # transport gets round to reporting connection_lost.
            link.fail()
            self._requeue(data, count)
            self._warn.warning("send", "output %s: write failed: %r", self.label, exc)
            return
        except BaseException:
            self._requeue(data, count)  # cancelled by close(): the lines are counted there
            raise
        self.inflight = 0
        self.delivered += count
        # Only a delivered batch proves the peer works (one that accepts and hangs up
        # at once must still be backed off from).
        self.retries = 0
        self._notify()

    def _requeue(self, data: bytes, count: int) -> None:
        self.inflight = 0
        self._backlog.putback(data, count)
        self._drop(self._backlog.trim(), "backlog full")
        self._notify()

    async def _pause(self) -> None:
        delay = self._backoff(self.retries)
        if self._flushing:
            delay = min(delay, FLUSH_RETRY)
        try:
            async with asyncio.timeout(delay):
                await self._poke.wait()
        except TimeoutError:
            pass
        self._poke.clear()

    def _on_lost(self) -> None:
        self._wakeup.set()
        self._notify()

    def _notify(self) -> None:
        # A fresh event per change: every waiter wakes and re-checks its predicate.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _drop(self, count: int, why: str) -> None:
        if count:
            self.dropped += count
            self._warn.warning(
                f"drop:{why}", "output %s: dropped %d lines (%s)", self.label, count, why
            )

    def _address(self) -> str:
        return f"{self.host}:{self.port}"


def host_port(uri: str) -> tuple[str, int]:
    """``tcp://host:port`` -> ``(host, port)`` (the config has checked both are there).

    >>> host_port("tcp://[::1]:3337")
    ('::1', 3337)
    """
    parts = urlsplit(uri)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"{uri!r} needs a host and a port")
    return parts.hostname, parts.port
