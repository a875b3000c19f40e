"""Where the dashboard reads: the Store (``[dashboard] store`` or the collector's
output) and the analyzer's HTTP API (an aiohttp client with the analyzer's token)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from numbat.config import Config, InfluxDBOutputConfig, SQLiteOutputConfig
from numbat.errors import ConfigError
from numbat.store import Store

TEXT_FIELDS = ("description", "message")


def open_store(config: Config, source: str = "numbat.toml") -> Store:
    """The Store ``[dashboard] store`` names, else the config's first sqlite or influxdb
    collector output (with its credentials, which never reach the page). Raises
    ConfigError when there is none or the SQLite file does not exist."""
    from numbat.store.influx import InfluxStore
    from numbat.store.sqlite import SQLiteStore

    dash = config.dashboard

    def sqlite(path: str, text_fields: tuple[str, ...] | list[str] = TEXT_FIELDS) -> Store:
        if not Path(path).is_file():
            raise ConfigError(f"{source}: dashboard.store: {path}: no such store file")
        return SQLiteStore(path, text_fields=text_fields)

    if dash.store is not None:
        if dash.store.startswith("sqlite:"):
            return sqlite(dash.store.removeprefix("sqlite:"))
        return InfluxStore(dash.store, dash.database or "numbat")
    for out in config.collector.outputs:
        if isinstance(out, SQLiteOutputConfig):
            return sqlite(out.path, out.text_fields)
        if isinstance(out, InfluxDBOutputConfig):
            return InfluxStore(
                out.urls[0],
                dash.database or out.database,
                username=out.username,
                password=out.password,
                retention_policy=out.retention_policy,
                timeout=out.timeout,
                text_fields=out.text_fields,
            )
    raise ConfigError(
        f"{source}: dashboard.store: no store to read: set it, or give the config a "
        "sqlite or influxdb collector output"
    )


class AnalyzerError(Exception):
    """The analyzer's API could not be reached or refused: ``status`` is its HTTP status
    (None: not reached); the message never holds the token."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AnalyzerClient:
    """The analyzer's HTTP API, as the dashboard's server calls it (JSON, the token as
    ``Authorization: Bearer``; no Origin, so its cross-site checks let it through)."""

    def __init__(self, url: str, token: str | None, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/") + "/api/v1"
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self._session

    async def call(self, method: str, path: str, body: Any = None, **query: str) -> Any:
        """The decoded JSON answer of ``method path``; AnalyzerError if it fails."""
        try:
            async with self._client().request(
                method, self.url + path, json=body, params=query or None
            ) as resp:
                data = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise AnalyzerError(
                f"the analyzer API is not reachable: {type(exc).__name__}"
            ) from None
        try:
            decoded = msgspec.json.decode(data)
        except msgspec.DecodeError:
            raise AnalyzerError(
                f"the analyzer API answered {status} with no JSON", status
            ) from None
        if status >= 400:
            error = decoded.get("error") if isinstance(decoded, dict) else None
            raise AnalyzerError(f"the analyzer refused: {error or status}", status)
        return decoded

    async def status(self) -> dict[str, Any]:
        """What the alert panel shows: ``{"incidents": [open ones], "hosts": {"beating",
        "missing"}}``."""
        incidents = await self.call("GET", "/incidents", state="open")
        beats = await self.call("GET", "/heartbeats")
        return {"incidents": incidents["incidents"], "hosts": beats["hosts"]}

    async def incidents(self, name: str) -> list[dict[str, Any]]:
        """Every incident (open and resolved) of the thing named ``name``."""
        found = await self.call("GET", "/incidents", state="all", name=name)
        return list(found["incidents"])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
