"""numbat: metrics, monitoring and alerting.

Importing ``numbat`` loads the emitter only (stdlib, plus orjson when installed)::

    import numbat

    emitter = numbat.Emitter("tcp://127.0.0.1:3333", app="web")
    emitter.metric("requests", value=1, route="/")
    numbat.set_global_emitter(emitter)
    numbat.metric("jobs.done")          # anywhere in the process

The collector, analyzer and dashboard live in subpackages with their own dependencies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from numbat.emitter.aio import AsyncEmitter
    from numbat.emitter.base import BaseEmitter, Emitter
    from numbat.event import Event

__all__ = [
    "AsyncEmitter",
    "BaseEmitter",
    "Emitter",
    "annotate",
    "counter",
    "gauge",
    "get_global_emitter",
    "metric",
    "set_global_emitter",
    "timing",
]
__version__ = "0.1.0"

_global: BaseEmitter | None = None


def set_global_emitter(emitter: BaseEmitter | None) -> None:
    """Make ``emitter`` the one :func:`metric` sends through (``None`` turns it off)."""
    global _global  # noqa: PLW0603 - a process-wide emitter is the point
    _global = emitter


def get_global_emitter() -> BaseEmitter | None:
    """The emitter set by :func:`set_global_emitter`, if any."""
    return _global


def metric(attrs: Any = None, /, **fields: Any) -> Event | None:
    """Send through the global emitter; a no-op returning ``None`` when none is set."""
    emitter = _global
    if emitter is None:
        return None
    return emitter.metric(attrs, **fields)


def counter(name: str, value: float = 1, **fields: Any) -> Event | None:
    """:meth:`BaseEmitter.counter` through the global emitter (a no-op when none is set)."""
    emitter = _global
    return None if emitter is None else emitter.counter(name, value, **fields)


def gauge(name: str, value: float, **fields: Any) -> Event | None:
    """:meth:`BaseEmitter.gauge` through the global emitter (a no-op when none is set)."""
    emitter = _global
    return None if emitter is None else emitter.gauge(name, value, **fields)


def timing(name: str, ms: float, **fields: Any) -> Event | None:
    """:meth:`BaseEmitter.timing` through the global emitter (a no-op when none is set)."""
    emitter = _global
    return None if emitter is None else emitter.timing(name, ms, **fields)


def annotate(name: str, description: str, **fields: Any) -> Event | None:
    """:meth:`BaseEmitter.annotate` through the global emitter (a no-op when none is set)."""
    emitter = _global
    return None if emitter is None else emitter.annotate(name, description, **fields)


def __getattr__(name: str) -> Any:
    # Loaded on first use (PEP 562): AsyncEmitter imports asyncio, which sync services
    # should not pay for, and a command that only runs a daemon (numbat collector)
    # should not pay for the emitter before it can set its signal handlers.
    if name == "AsyncEmitter":
        from numbat.emitter.aio import AsyncEmitter

        return AsyncEmitter
    if name in ("Emitter", "BaseEmitter"):
        from numbat.emitter import base

        return getattr(base, name)
    raise AttributeError(f"module 'numbat' has no attribute {name!r}")
