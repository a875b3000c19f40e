"""``[emitter]``: where ``numbat emit`` and numbat's own daemons send events."""

from __future__ import annotations

from urllib.parse import urlsplit

from numbat._redact import redact_url, scrub, unsplittable
from numbat.config._base import Section, _positive
from numbat.emitter import DEFAULT_MAX_BACKLOG_BYTES, SCHEMES


class EmitterConfig(Section):
    """``[emitter]``: where ``numbat emit`` (and numbat's own daemons) send events."""

    uri: str = "tcp://127.0.0.1:3333"
    app: str = "numbat"
    node: str | None = None
    max_backlog: int | None = None
    max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES
    max_retries: int = 100

    def __post_init__(self) -> None:
        # Parse the scheme exactly as the emitter's make_transport does, so that a uri
        # `numbat check` accepts (e.g. not a bare "tcp") is one the emitter can use.
        if problem := unsplittable(self.uri):
            raise ValueError(f"uri: {redact_url(self.uri)!r}: {problem}")
        try:
            scheme = urlsplit(self.uri).scheme.lower()
        except ValueError as exc:
            raise ValueError(
                f"uri: {redact_url(self.uri)!r}: {scrub(str(exc), self.uri)}"
            ) from None
        if scheme not in SCHEMES:
            allowed = ", ".join(f"{s}:" for s in SCHEMES)
            shown = redact_url(self.uri)
            raise ValueError(f"uri: unsupported scheme {scheme!r} in {shown!r}; allowed: {allowed}")
        if not self.app:
            raise ValueError("app: must not be empty")
        _positive(self, "max_backlog", "max_backlog_bytes")
        if self.max_retries < 0:
            raise ValueError("max_retries: must be 0 or more")
