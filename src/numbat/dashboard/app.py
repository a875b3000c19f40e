"""The dashboard's aiohttp app and daemon.

Routes (JSON unless said; times in ms since the epoch):

* ``GET /``: the page (static/index.html); ``/static/*`` its script, style and uPlot
* ``GET /api/config``: ``{"token_required", "refresh_s", "grafana"}``
* ``GET /api/status``: ``{"incidents": [open ones], "hosts": {"beating", "missing"},
  "error": null or why the analyzer could not be read}``
* ``GET /api/events``: server-sent events, ``event: status`` with the same JSON each
  time it changes
* ``GET /api/series?q=``: ``{"series": [{"measurement", "tags", "app", "host"}]}``
* ``GET /api/graph?measurement=&tag=k=v&by=&start=&end=``: see graphs.graph
* ``POST /api/ack`` ``{"incident", "comment"}``, ``POST /api/silence`` ``{"name",
  "host", "duration" (s), "comment"}``: passed on to the analyzer with its token

Every answer carries a Content-Security-Policy that allows script from this origin only
(no inline script), so a string from an emitter that slipped into the page as markup
still could not run. Mutations must come from this origin (a foreign ``Origin``: 403),
as JSON (else 415), with ``Authorization: Bearer <[dashboard] token>`` when one is set.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
from aiohttp import web

from numbat._ratelimit import RateLimitedLog
from numbat._redact import scrub
from numbat.config import Config
from numbat.dashboard import graphs
from numbat.dashboard.sources import AnalyzerClient, AnalyzerError, open_store
from numbat.errors import NumbatError
from numbat.server.hosts import host_allowed
from numbat.server.lifecycle import Daemon
from numbat.store import Store
from numbat.store.influx import StoreError

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
VENDOR_FILES = ("uPlot.iife.min.js", "uPlot.min.css")
MAX_BODY = 16 * 1024
MAX_TEXT = 1024
MAX_RANGE_MS = 31 * 86_400_000
KEEPALIVE_S = 15.0
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class DashboardError(NumbatError):
    """The dashboard cannot start (its front-end files are missing, it cannot bind)."""


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )


class _Refused(web.HTTPException):
    """A 4xx or 5xx with ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        self.status_code = status
        super().__init__(
            text=msgspec.json.encode({"error": message}).decode(), content_type="application/json"
        )


STORE_ERRORS = (OSError, TimeoutError, sqlite3.Error, StoreError, aiohttp.ClientError)
"""What reading a store that is down, hung or damaged raises."""


def _error(status: int, message: str) -> web.HTTPException:
    return _Refused(status, message)


def check_static(static: Path = STATIC) -> None:
    """DashboardError unless the built uPlot files are in ``static/vendor``."""
    missing = [name for name in VENDOR_FILES if not (static / "vendor" / name).is_file()]
    if missing:
        raise DashboardError(
            f"the dashboard's front-end files are missing ({', '.join(missing)} in "
            f"{static / 'vendor'}): run dev/dashboard-assets (npm ci and copy uPlot)"
        )


class Dashboard(Daemon):
    """Serves the page on ``[dashboard] listen``. ``store``: a Store to read (None: open
    the configured one at start, so under ``numbat up`` the collector has made it)."""

    def __init__(
        self,
        config: Config,
        *,
        store: Store | None = None,
        static: Path = STATIC,
        source: str = "numbat.toml",
    ) -> None:
        check_static(static)
        self.config = config
        self.settings = config.dashboard
        self.static = static
        self._warn = RateLimitedLog(log)
        self.source = source
        self.store = store
        self.analyzer = AnalyzerClient(self.settings.analyzer, self.settings.analyzer_token)
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._wake = asyncio.Event()
        self._status: tuple[float, bytes] | None = None
        self._status_lock = asyncio.Lock()
        self.app = self._app()

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._guard])
        app.add_routes(
            [
                web.get("/", self.index),
                web.get("/favicon.ico", self.no_icon),
                web.get("/api/config", self.page_config),
                web.get("/api/status", self.status),
                web.get("/api/events", self.events),
                web.get("/api/series", self.series),
                web.get("/api/graph", self.graph),
                web.post("/api/ack", self.ack),
                web.post("/api/silence", self.silence),
                web.static("/static", self.static),
            ]
        )
        return app

    @property
    def url(self) -> str:
        parts = urlsplit(self.settings.listen)
        return f"http://{parts.hostname}:{self.port or parts.port}/"

    async def start(self) -> None:
        if self.store is None:
            self.store = open_store(self.config, self.source)
        parts = urlsplit(self.settings.listen)
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, parts.hostname, parts.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise DashboardError(
                f"dashboard: cannot listen on {self.settings.listen}: {exc.strerror}"
            ) from None
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else parts.port
        log.info("dashboard at %s", self.url)

    async def stop(self, drain_timeout: float | None = None) -> bool:
        self._closing.set()
        self._wake.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.analyzer.close()
        if self.store is not None:
            await self.store.close()
        return True

    # -- security -------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if not host_allowed(request.host, urlsplit(self.settings.listen).hostname or ""):
                # DNS rebinding: a page whose name now resolves to 127.0.0.1.
                raise _error(
                    403, f"Host {request.host!r} refused: this page answers loopback names"
                )
            if request.method not in ("GET", "HEAD"):
                self._check_mutation(request)
            try:
                response = await handler(request)
            except STORE_ERRORS as exc:
                # The store is down, hung or damaged: say so to the page (it shows it),
                # never a bare 500, never the store URL's credentials.
                self._warn.warning("store", "dashboard: the store cannot be read: %s", exc)
                raise _error(502, f"the store cannot be read: {self._scrubbed(exc)}") from None
        except web.HTTPException as exc:
            response = exc
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        if isinstance(response, web.HTTPException):
            raise response
        return response

    def _scrubbed(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        store = self.settings.store
        return scrub(text, store) if store and not store.startswith("sqlite:") else text

    def _check_mutation(self, request: web.Request) -> None:
        origin = request.headers.get("Origin")
        if origin is not None and (
            origin == "null" or urlsplit(origin).netloc.lower() != request.host.lower()
        ):
            raise _error(403, f"cross-site request from {origin!r} refused")
        if request.content_type != "application/json":
            raise _error(415, "send the body as JSON (Content-Type: application/json)")
        token = self.settings.token
        if token:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if not (
                scheme.lower() == "bearer"
                and hmac.compare_digest(given.strip().encode(), token.encode())
            ):
                raise _error(
                    401, "this needs the dashboard's token (Authorization: Bearer <token>)"
                )

    # -- the page -------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(self.static / "index.html", headers={"Cache-Control": "no-cache"})

    async def no_icon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def page_config(self, request: web.Request) -> web.Response:
        return _json(
            {
                "token_required": bool(self.settings.token),
                "refresh_s": self.settings.refresh,
                "grafana": bool(self.settings.grafana_url),
            }
        )

    # -- alert status ---------------------------------------------------------------------

    async def _snapshot(self) -> bytes:
        """The alert status as JSON, read from the analyzer at most once a refresh."""
        async with self._status_lock:
            now = time.monotonic()
            if self._status is not None and now - self._status[0] < self.settings.refresh / 2:
                return self._status[1]
            try:
                status: dict[str, Any] = {**await self.analyzer.status(), "error": None}
            except AnalyzerError as exc:
                status = {
                    "incidents": [],
                    "hosts": {"beating": [], "missing": []},
                    "error": str(exc),
                }
            body = msgspec.json.encode(status)
            self._status = (now, body)
            return body

    def _changed(self) -> None:
        """A mutation went through: read the status again and tell every page now."""
        self._status = None
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    async def status(self, request: web.Request) -> web.Response:
        return web.Response(body=await self._snapshot(), content_type="application/json")

    async def events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        response.headers["Content-Security-Policy"] = CSP
        await response.prepare(request)
        last = b""
        quiet = 0.0
        while not self._closing.is_set():
            body = await self._snapshot()
            if body != last:
                await response.write(b"event: status\ndata: " + body + b"\n\n")
                last, quiet = body, 0.0
            elif quiet >= KEEPALIVE_S:
                await response.write(b": keepalive\n\n")
                quiet = 0.0
            wake = self._wake
            try:
                await asyncio.wait_for(wake.wait(), self.settings.refresh)
            except TimeoutError:
                quiet += self.settings.refresh
        return response

    async def _body(self, request: web.Request, keys: tuple[str, ...]) -> dict[str, Any]:
        try:
            body = msgspec.json.decode(await request.read())
        except msgspec.DecodeError:
            raise _error(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise _error(400, "the body must be a JSON object")
        unknown = sorted(set(body) - set(keys))
        if unknown:
            raise _error(400, f"{unknown[0]}: unknown key; allowed: {', '.join(keys)}")
        for key, val in body.items():
            if isinstance(val, str) and len(val) > MAX_TEXT:
                raise _error(400, f"{key}: at most {MAX_TEXT} characters")
        return body

    async def _forward(self, path: str, body: dict[str, Any]) -> web.Response:
        try:
            answer = await self.analyzer.call("POST", path, body)
        except AnalyzerError as exc:
            status = (
                exc.status if exc.status and 400 <= exc.status < 500 and exc.status != 401 else 502
            )
            raise _error(status, str(exc)) from None
        self._changed()
        return _json(answer)

    async def ack(self, request: web.Request) -> web.Response:
        body = await self._body(request, ("incident", "comment"))
        if not isinstance(body.get("incident"), str):
            raise _error(400, "incident: required (the incident's id)")
        forwarded = {
            "incident": body["incident"],
            "author": "dashboard",
            "comment": body.get("comment") or "",
        }
        return await self._forward("/acks", forwarded)

    async def silence(self, request: web.Request) -> web.Response:
        body = await self._body(request, ("name", "host", "duration", "comment"))
        duration = body.get("duration", 3600)
        if (
            isinstance(duration, bool)
            or not isinstance(duration, int | float)
            or not 0 < duration <= 30 * 86400
        ):
            raise _error(400, "duration: seconds, more than 0 and at most 30 days")
        if not body.get("name") and not body.get("host"):
            raise _error(
                400, "name or host: give at least one (a silence of everything is refused)"
            )
        forwarded = {
            "name": body.get("name") or "*",
            "host": body.get("host") or "*",
            "duration": duration,
            "author": "dashboard",
            "comment": body.get("comment") or "silenced from the dashboard",
        }
        return await self._forward("/silences", forwarded)

    # -- graphs ---------------------------------------------------------------------------

    async def series(self, request: web.Request) -> web.Response:
        assert self.store is not None
        return _json({"series": await graphs.series_list(self.store, request.query.get("q", ""))})

    async def graph(self, request: web.Request) -> web.Response:
        assert self.store is not None
        query = request.query
        measurement = query.get("measurement")
        if not measurement:
            raise _error(400, "measurement: required")
        tags = {}
        for item in query.getall("tag", []):
            key, sep, val = item.partition("=")
            if not sep or not key:
                raise _error(400, f"tag: {item!r} is not KEY=VALUE")
            tags[key] = val
        now = int(time.time() * 1000)
        try:
            end = int(query.get("end", now))
            start = int(query.get("start", end - 3_600_000))
        except ValueError:
            raise _error(400, "start, end: ms since the epoch") from None
        if not 0 < end - start <= MAX_RANGE_MS:
            raise _error(400, "start, end: end must be after start, at most 31 days later")
        try:
            found = await graphs.graph(
                self.store,
                self.analyzer,
                self.settings,
                measurement,
                tags,
                by=query.get("by") or None,
                start=start,
                end=end,
            )
        except ValueError as exc:
            raise _error(400, str(exc)) from None
        return _json(found)
