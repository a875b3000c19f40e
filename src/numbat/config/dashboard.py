"""``[dashboard]``: where the dashboard listens, what it reads (the store, the
analyzer's API) and how it draws (display hint overrides, Grafana links)."""

from __future__ import annotations

import msgspec

from numbat._redact import redact_url
from numbat.config._base import Section, _split_uri
from numbat.hints import HINTS


class DashboardConfig(Section):
    """``[dashboard]``. ``listen``: the page's address (``http://host:port``);
    ``token``: what the page must present for mutations (ack, silence), required when
    ``listen`` is not on loopback; ``analyzer``: the analyzer API's URL and
    ``analyzer_token`` its token; ``store``: ``sqlite:PATH`` or ``http://host:8086``
    (None: the collector's sqlite or influxdb output); ``database``: the InfluxDB
    database (None: the output's, else ``numbat``); ``grafana_url`` (None: no links) and
    ``grafana_datasource``; ``hints``: measurement glob -> display hint."""

    listen: str = "http://127.0.0.1:3380"
    token: str | None = None
    analyzer: str = "http://127.0.0.1:3338"
    analyzer_token: str | None = None
    store: str | None = None
    database: str | None = None
    grafana_url: str | None = None
    grafana_datasource: str = "numbat"
    hints: dict[str, str] = msgspec.field(default_factory=dict)
    refresh: float = 2.0

    def __post_init__(self) -> None:
        parts = _split_uri("listen", self.listen)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise ValueError(f"listen: expected http://host:port, got {redact_url(self.listen)!r}")
        if not loopback(parts.hostname) and not self.token:
            raise ValueError(
                f"token: required when listen is not on loopback ({parts.hostname}): "
                "acknowledging and silencing alerts would be open to anyone"
            )
        api = _split_uri("analyzer", self.analyzer)
        if api.scheme not in ("http", "https") or not api.hostname:
            raise ValueError(
                f"analyzer: expected http://host:port, got {redact_url(self.analyzer)!r}"
            )
        if api.username is not None or api.password is not None:
            # The analyzer takes a bearer token, not basic auth; both at once is refused
            # by the HTTP client at every call.
            raise ValueError(
                f"analyzer: {redact_url(self.analyzer)!r}: give no user:password@ in the "
                "URL; the analyzer's API takes analyzer_token"
            )
        if self.store is not None:
            if self.store.startswith("sqlite:"):
                if not self.store.removeprefix("sqlite:"):
                    raise ValueError("store: sqlite: needs a path (sqlite:numbat-data/numbat.db)")
            else:
                store = _split_uri("store", self.store)
                if store.scheme not in ("http", "https") or not store.hostname:
                    raise ValueError(
                        "store: expected sqlite:PATH or http://host:8086, got "
                        f"{redact_url(self.store)!r}"
                    )
        if self.grafana_url is not None:
            grafana = _split_uri("grafana_url", self.grafana_url)
            if grafana.scheme not in ("http", "https") or not grafana.hostname:
                raise ValueError(
                    f"grafana_url: expected http(s)://host[:port], got "
                    f"{redact_url(self.grafana_url)!r}"
                )
        for glob, hint in self.hints.items():
            if hint not in HINTS:
                raise ValueError(f"hints.{glob}: expected one of {', '.join(HINTS)}, got {hint!r}")
        if not 0.2 <= self.refresh <= 3600:  # NaN fails too
            raise ValueError(f"refresh: must be 0.2 to 3600 seconds, got {self.refresh}")


def loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
