"""A third-party listener, as docs/contributing.md's walkthrough builds one: NDJSON in
the body of an HTTP POST. Loaded by import path, it needs no change inside numbat.

    [[collector.listen]]
    type = "tests.plugins.http_listener:HTTPListener"
    uri = "http://127.0.0.1:3380/events"
    max_body_bytes = 1048576
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from numbat.config import ListenerConfig
from numbat.server.listeners import Listener


class HTTPListenerOptions(ListenerConfig):
    """The keys every listener takes, and this one's own."""

    max_body_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_body_bytes <= 0:
            raise ValueError("max_body_bytes: must be positive")


class HTTPListener(Listener):
    """``POST <path>`` with NDJSON: 204 once the lines are parsed; 404 elsewhere."""

    Options = HTTPListenerOptions
    options: HTTPListenerOptions

    runner: web.AppRunner | None = None
    port: int = 0

    async def start(self) -> None:
        parts = urlsplit(self.options.uri)
        app = web.Application(client_max_size=self.options.max_body_bytes)
        app.router.add_post(parts.path or "/", self._post)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(
            self.runner, parts.hostname, parts.port, reuse_port=self.reuse_port or None
        )
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _post(self, request: web.Request) -> web.Response:
        if not self.admit((request.remote or "", 0)):
            return web.Response(status=403)
        self.receive_message(await request.read(), request.remote)
        return web.Response(status=204)
