"""What the notifier tests share: an in-memory notification log, incidents and
notifications to send, options from TOML-shaped tables, and a local HTTP server that
records what it is sent and answers as the test says."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from numbat.analyzer.model import Incident, Notification, Status
from numbat.config import from_dict
from numbat.config.notifiers import NotifierConfig

T0 = 1_700_000_000_000
_ids = itertools.count(1)


class FakeLog:
    """The notification log in memory: rows by id, each pending until marked."""

    def __init__(self) -> None:
        self.rows: dict[int, tuple[str, Notification]] = {}
        self.done: dict[int, tuple[str, str]] = {}
        self.marked = asyncio.Event()

    def add(self, label: str, notification: Notification) -> int:
        row = len(self.rows) + 1
        self.rows[row] = (label, notification)
        return row

    async def pending_notifications(self, notifier: str) -> list[tuple[int, Notification]]:
        return [
            (row, n)
            for row, (label, n) in self.rows.items()
            if label == notifier and row not in self.done
        ]

    async def notification_done(
        self, row: int, outcome: Literal["sent", "dropped"], detail: str = ""
    ) -> None:
        self.done[row] = (outcome, detail)
        self.marked.set()

    async def wait_done(self, rows: Sequence[int], timeout: float = 10.0) -> None:
        """Until every row of ``rows`` is marked."""
        async with asyncio.timeout(timeout):
            while not all(row in self.done for row in rows):
                self.marked.clear()
                await self.marked.wait()


def incident(
    name: str = "web.heartbeat",
    host: str = "web-1",
    status: Status = "critical",
    **extra: Any,
) -> Incident:
    fields: dict[str, Any] = {
        "id": f"{host}.{name}",
        "message": f"{host}.{name.removesuffix('.heartbeat')} heartbeat not heard for 2 beats",
        "breached_at": T0,
        "fired_at": T0 + 1000,
        "updated_at": T0 + 1000,
        "notified": status,
        "notified_at": T0 + 1000,
        "rule": "heartbeat",
    }
    fields.update(extra)
    return Incident(name=name, host=host, status=status, **fields)


def notification(**kinds: Any) -> Notification:
    """A notification with the given lists (``new=[...]``, ``resolved=[...]``...)."""
    kinds.setdefault("time", T0 + 2000)
    kinds.setdefault("group", {"name": "web.heartbeat"})
    kinds.setdefault("id", f"n{next(_ids)}")
    return Notification(**kinds)


def options(**table: Any) -> NotifierConfig:
    """One ``[[analyzer.notifiers]]`` table, validated as the config file's would be."""
    config = from_dict({"analyzer": {"notifiers": [table]}})
    assert config.analyzer is not None
    return config.analyzer.notifier_configs[0]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@dataclass
class Recorder:
    """A local HTTP server: every request recorded; ``answers`` (status codes) used in
    turn, then ``status``; ``hang`` makes it never answer."""

    url: str = ""
    status: int = 200
    answers: list[int] = field(default_factory=list)
    hang: bool = False
    reply: Callable[[Received], web.Response] | None = None
    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        got = Received(request.method, request.path_qs, dict(request.headers), body)
        self.received.append(got)
        self.arrived.set()
        if self.hang:
            await asyncio.Event().wait()
        if self.reply is not None:
            return self.reply(got)
        status = self.answers.pop(0) if self.answers else self.status
        return web.Response(status=status, text="ok" if status < 300 else "invalid_payload")

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.received


@asynccontextmanager
async def recorder(**settings: Any) -> AsyncIterator[Recorder]:
    """A :class:`Recorder` listening on a free loopback port (``url`` its base)."""
    rec = Recorder(**settings)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield rec
    finally:
        await runner.cleanup()
