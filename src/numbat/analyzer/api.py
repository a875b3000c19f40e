"""The analyzer's HTTP API (aiohttp): incidents, history, silences, acknowledgements,
health and stats, as JSON. The dashboard reads it; ``numbat analyzer forget`` calls it.

Reads need no credentials. Mutations (``POST``/``DELETE``) need ``Authorization:
Bearer <token>`` when ``[analyzer] token`` is set (it must be when the API listens
beyond loopback). Every error is ``{"error": "..."}`` with a 4xx status naming what is
wrong. Endpoints (all under ``/api/v1``; times in ms since the epoch):

* ``GET /health``: ``{"status": "ok", "uptime_ms", "open_incidents", "rules", "notifiers"}``
* ``GET /incidents?state=open|resolved|all&status=&host=&name=``: ``{"incidents": [...]}``,
  each an incident with ``muted_by`` (``"silence:<id>"``, ``"inhibited:<incident>"`` or null)
* ``GET /incidents/{id}``: ``{"incident": {...}, "history": [...]}`` (404 if unknown)
* ``POST /acks`` ``{"incident", "author", "comment"}``: the acknowledged incident
* ``GET /silences?state=active|all``; ``POST /silences`` ``{"name", "host", "tags",
  "ends_at" | "duration" (s), "starts_at", "author", "comment"}`` (201);
  ``DELETE /silences/{id}``: the expired silence
* ``GET /heartbeats``: ``{"heartbeats": [{"key", "host", "prefix", "ttl", "last",
  "missed", "rule"}], "hosts": {"beating": [...], "missing": [...]}}``
* ``POST /heartbeats/forget`` ``{"key": "host.prefix"}``: ``{"forgotten": true|false}``
* ``GET /stats``: the analyzer's counters since start
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from numbat.analyzer.daemon import notifier_configs
from numbat.analyzer.model import Incident
from numbat.event import MAX_TIME_MS
from numbat.server.hosts import host_allowed

if TYPE_CHECKING:
    from numbat.analyzer.daemon import Analyzer

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
MAX_BODY = 64 * 1024
MAX_TEXT = 1024  # characters of an author or comment
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(web.HTTPException):
    """A 4xx with ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        self.status_code = status
        super().__init__(
            text=msgspec.json.encode({"error": message}).decode(), content_type="application/json"
        )


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )


class ApiServer:
    """Serves the API of one :class:`~numbat.analyzer.daemon.Analyzer` on its ``http``
    address (``start`` raises OSError if it cannot bind)."""

    def __init__(self, analyzer: Analyzer) -> None:
        self.analyzer = analyzer
        self.app = web.Application(client_max_size=MAX_BODY, middlewares=[self._auth])
        routes = [
            web.get(f"{PREFIX}/health", self.health),
            web.get(f"{PREFIX}/incidents", self.incidents),
            web.get(PREFIX + "/incidents/{id:.+}", self.incident),
            web.post(f"{PREFIX}/acks", self.ack),
            web.get(f"{PREFIX}/silences", self.silences),
            web.post(f"{PREFIX}/silences", self.add_silence),
            web.delete(PREFIX + "/silences/{id}", self.expire_silence),
            web.get(f"{PREFIX}/heartbeats", self.heartbeats),
            web.post(f"{PREFIX}/heartbeats/forget", self.forget),
            web.get(f"{PREFIX}/stats", self.stats),
        ]
        self.app.add_routes(routes)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        parts = urlsplit(self.analyzer.config.http)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, parts.hostname, parts.port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        server = site._server  # the bound port, when the config asked for port 0
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else parts.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        token = self.analyzer.config.token
        if not host_allowed(request.host, urlsplit(self.analyzer.config.http).hostname or ""):
            raise ApiError(403, f"Host {request.host!r} refused: this API answers loopback names")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            _same_origin(request)
        if token and request.method not in ("GET", "HEAD", "OPTIONS"):
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            # The scheme is case-insensitive (RFC 9110 11.1); the token is compared in
            # constant time.
            good = scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode(), token.encode()
            )
            if not good:
                raise ApiError(401, "this needs Authorization: Bearer <the analyzer's token>")
        return await handler(request)

    # -- reads ----------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        analyzer = self.analyzer
        problems = []
        if analyzer.commit_error is not None:
            problems.append(f"state commits fail: {analyzer.commit_error}")
        return _json(
            {
                "status": "degraded" if problems else "ok",
                "problems": problems,
                "uptime_ms": analyzer.uptime(),
                "open_incidents": len(analyzer.manager.incidents(open=True)),
                "rules": [bound.name for bound in analyzer.engine.rules],
                "notifiers": [n.label for n in notifier_configs(analyzer.config)],
            },
            status=503 if problems else 200,
        )

    async def incidents(self, request: web.Request) -> web.Response:
        query = _query(request, ("state", "status", "host", "name"))
        state = query.get("state", "open")
        opened = {"open": True, "resolved": False, "all": None}
        if state not in opened:
            raise ApiError(400, f"state: got {state!r}; allowed: open, resolved, all")
        status = query.get("status")
        if status is not None and status not in ("ok", "warning", "critical", "unknown"):
            raise ApiError(400, f"status: got {status!r}; allowed: ok, warning, critical, unknown")
        found = self.analyzer.manager.incidents(
            open=opened[state], status=status, host=query.get("host"), name=query.get("name")
        )
        return _json({"incidents": [self._shown(i) for i in found]})

    async def incident(self, request: web.Request) -> web.Response:
        incident_id = request.match_info["id"]
        found = self.analyzer.manager.get(incident_id)
        state = self.analyzer.state
        history = await state.call(state.store.history, incident_id) if state else []
        if found is None and not history:
            raise ApiError(404, f"no incident {incident_id!r}")
        return _json({"incident": self._shown(found) if found else None, "history": history})

    async def silences(self, request: web.Request) -> web.Response:
        state = _query(request, ("state",)).get("state", "active")
        if state not in ("active", "all"):
            raise ApiError(400, f"state: got {state!r}; allowed: active, all")
        return _json({"silences": self.analyzer.manager.silences(active=state == "active")})

    async def heartbeats(self, request: web.Request) -> web.Response:
        """Every heartbeat key tracked, and per host whether it beats: a host is
        ``missing`` when one of its keys has missed a beat."""
        keys = [
            {**key, "rule": bound.name}
            for bound in self.analyzer.engine.rules
            if callable(tracked := getattr(bound.rule, "tracked", None))
            for key in tracked()
        ]
        missing = sorted({k["host"] for k in keys if k["missed"] > 0})
        beating = sorted({k["host"] for k in keys} - set(missing))
        return _json({"heartbeats": keys, "hosts": {"beating": beating, "missing": missing}})

    async def stats(self, request: web.Request) -> web.Response:
        totals = self.analyzer.stats.totals
        rows = [
            {"metric": metric, "tags": dict(tags), "value": value}
            for (metric, tags), value in sorted(totals.items())
        ]
        return _json({"counters": rows})

    def _shown(self, incident: Incident) -> dict[str, Any]:
        shown: dict[str, Any] = msgspec.to_builtins(incident)
        shown["muted_by"] = self.analyzer.manager.muted_by(incident)
        return shown

    # -- mutations ------------------------------------------------------------------------

    async def ack(self, request: web.Request) -> web.Response:
        body = await _body(request, ("incident", "author", "comment"))
        incident_id = _text(body, "incident", required=True)
        try:
            incident = self.analyzer.manager.acknowledge(
                incident_id,
                author=_text(body, "author", required=True),
                comment=_text(body, "comment"),
            )
        except KeyError:
            raise ApiError(404, f"no open incident {incident_id!r}") from None
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        self.analyzer.judge([])
        return _json(self._shown(incident))

    async def add_silence(self, request: web.Request) -> web.Response:
        body = await _body(request, SILENCE_KEYS)
        now = self.analyzer.clock()
        if ("ends_at" in body) == ("duration" in body):
            raise ApiError(400, "give ends_at (ms since the epoch) or duration (seconds), one")
        starts_at = body.get("starts_at")
        if starts_at is not None:
            starts_at = round(_number(body, "starts_at", 0.0, MAX_TIME_MS))
        if "duration" in body:  # from the start: a maintenance window's length
            length = round(_number(body, "duration", 0.0, MAX_TIME_MS / 1000) * 1000)
            ends_at = (now if starts_at is None else starts_at) + length
        else:
            ends_at = round(_number(body, "ends_at", 0.0, MAX_TIME_MS))
        if ends_at > MAX_TIME_MS:
            raise ApiError(400, f"ends_at: at most {MAX_TIME_MS} ms since the epoch")
        tags = body.get("tags") or {}
        if not isinstance(tags, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
        ):
            raise ApiError(400, "tags: expected an object of strings")
        try:
            silence = self.analyzer.manager.silence(
                ends_at=ends_at,
                starts_at=starts_at,
                name=_text(body, "name"),
                host=_text(body, "host"),
                tags=tags,
                author=_text(body, "author", required=True),
                comment=_text(body, "comment"),
            )
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        self.analyzer.judge([])
        return _json(silence, status=201)

    async def expire_silence(self, request: web.Request) -> web.Response:
        silence_id = request.match_info["id"]
        try:
            silence = self.analyzer.manager.expire_silence(silence_id)
        except KeyError:
            raise ApiError(404, f"no silence {silence_id!r}") from None
        self.analyzer.judge([])
        return _json(silence)

    async def forget(self, request: web.Request) -> web.Response:
        body = await _body(request, ("key",))
        key = _text(body, "key", required=True)
        return _json({"key": key, "forgotten": self.analyzer.forget(key)})


def _query(request: web.Request, allowed: tuple[str, ...]) -> Mapping[str, str]:
    """The query parameters, with only ``allowed`` ones (``?stat=open`` is a typo that
    would otherwise list something else without a word)."""
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise ApiError(400, f"{unknown[0]}: unknown parameter; allowed: {', '.join(allowed)}")
    return request.query


def _same_origin(request: web.Request) -> None:
    """Refuse a mutation a web page could have made (CSRF): one from a browser page of
    another origin (its ``Origin`` header names another host), and one not sent as JSON
    (a cross-site form or a "simple" request can send text/plain without asking). API
    clients (curl, the CLI, the dashboard's server) send JSON and no foreign Origin."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null":
        parts = urlsplit(origin)
        if parts.netloc.lower() != request.host.lower():
            raise ApiError(403, f"cross-site request from {origin!r} refused")
    elif origin == "null":
        raise ApiError(403, "cross-site request from an opaque origin refused")
    if request.method == "POST" and request.content_type != "application/json":
        raise ApiError(415, "send the body as JSON (Content-Type: application/json)")


SILENCE_KEYS = ("name", "host", "tags", "ends_at", "duration", "starts_at", "author", "comment")


async def _body(request: web.Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The JSON object of the request, with only ``allowed`` keys (a typo such as
    ``hots`` would otherwise silence everything)."""
    try:
        body = msgspec.json.decode(await request.read())
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, f"the body is over {MAX_BODY} bytes") from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(400, f"{unknown[0]}: unknown key; allowed keys: {', '.join(allowed)}")
    return body


def _text(body: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise ApiError(400, f"{key}: required")
        return ""
    if not isinstance(value, str):
        raise ApiError(400, f"{key}: expected a string")
    if len(value) > MAX_TEXT:
        raise ApiError(400, f"{key}: at most {MAX_TEXT} characters")
    return value


def _number(body: dict[str, Any], key: str, low: float, high: float) -> float:
    """A number in ``[low, high]``, else a 400 naming ``key``."""
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, f"{key}: expected a number")
    if not low <= value <= high:
        raise ApiError(400, f"{key}: must be from {low:g} to {high:g}, got {value:g}")
    return float(value)
