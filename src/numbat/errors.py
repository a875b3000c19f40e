"""Exceptions raised by numbat's library code; only the CLI turns them into exit codes."""

from __future__ import annotations


class NumbatError(Exception):
    """Base class of every error numbat raises on purpose."""


class EventError(NumbatError, ValueError):
    """An incoming object is not a valid event.

    ``field`` names the offending field (``None`` when the object as a whole is wrong)
    and ``reason`` is a short, stable slug for counting rejections by kind.

    >>> err = EventError("value", "not_a_number", "must be a finite number, got 'x'")
    >>> str(err)
    "field 'value': must be a finite number, got 'x'"
    """

    def __init__(self, field: str | None, reason: str, message: str) -> None:
        self.field = field
        self.reason = reason
        prefix = f"field {field!r}: " if field is not None else ""
        super().__init__(prefix + message)


class ConfigError(NumbatError):
    """A configuration file or value is invalid; the message names the key path."""


class URIError(NumbatError, ValueError):
    """An emitter destination URI is malformed or has a scheme no transport handles."""
