"""What every config section builds on: :class:`Section`, the plug-in registry entry
:class:`Plugin`, the range checks and the translation of msgspec's errors into
``key.path: what is wrong; what is allowed``."""

from __future__ import annotations

import math
import re
import typing
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast, get_args, get_origin
from urllib.parse import SplitResult, urlsplit

import msgspec

from numbat._importer import ImportFromStringError, import_from_string
from numbat._redact import redact_url, scrub, unsplittable

MAX_SECONDS = 30 * 86_400
"""The longest interval or timeout a config takes, in seconds (30 days)."""
MAX_WORKERS = 256
"""The most collector worker processes (``workers``)."""
MAX_UDP_BUFFER_BYTES = 2**31 - 1
"""The largest ``udp_buffer_bytes``: SO_RCVBUF is a C int."""


class Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every config section: unknown keys are errors."""


@dataclass(frozen=True, slots=True)
class Plugin:
    """One registry entry: the plug-in's class as ``"module:Class"`` and the options it
    takes (a :class:`Section` subclass), so the config is validated without importing
    the plug-in and the class is imported only when a daemon builds it."""

    path: str
    options: type[Section]


S = TypeVar("S", bound=Section)


def _options(registry: dict[str, Plugin], kind: str, base: type[S], where: str) -> type[S]:
    """The options class of a registered plug-in, or of a third-party one's ``Options``
    (``base`` itself if it declares none)."""
    if kind in registry:
        return cast(type[S], registry[kind].options)
    try:
        cls = import_from_string(kind)
    except ImportFromStringError as exc:
        raise ValueError(f"{where}: {exc}") from None
    except Exception as exc:  # the plug-in's own module failed: its error, not a traceback
        raise ValueError(f"{where}: importing {kind!r} failed: {_described(exc)}") from None
    if not isinstance(cls, type):
        raise ValueError(f"{where}: {kind!r} is not a class")
    options = getattr(cls, "Options", None) or base
    if not (isinstance(options, type) and issubclass(options, base)):
        raise ValueError(f"{where}: {kind}.Options must subclass numbat.config.{base.__name__}")
    return options


def _plugin(
    raw: Any, where: str, registry: dict[str, Plugin], base: type[S], kind: str, example: str
) -> S:
    """Validate one plug-in table (an output, a notifier): a table with a ``type`` that is
    a name in ``registry`` or an import path; ``example`` is a type to show."""
    if not isinstance(raw, dict):
        raise ValueError(f'{where}: expected a table with a type, e.g. {{type = "{example}"}}')
    name = raw.get("type")
    if name not in registry and not (isinstance(name, str) and ":" in name):
        allowed = ", ".join(registry)
        raise ValueError(
            f"{where}.type: got {name!r}; allowed: {allowed}, or an import path module:Class"
        )
    cls = _options(registry, name, base, f"{where}.type")
    return _convert(raw, cls, where, registry, kind)


def _convert(
    raw: dict[str, Any], cls: type[S], where: str, registry: dict[str, Plugin], kind: str
) -> S:
    """Validate a plug-in's table; ``registry`` is its kind's (named ``kind``: "outputs",
    "listeners", "rules", ...), to say which built-ins take a key this one does not."""
    try:
        return msgspec.convert(raw, cls, strict=True)
    except msgspec.ValidationError as exc:
        message = _explain(str(exc), cls, top="")
        if unknown := _UNKNOWN.fullmatch(str(exc)):
            # A key this plug-in does not take but others do: say which, not "unknown".
            key = unknown["key"]
            if takers := _takers(key, registry, kind):
                message = f"{key}: only {', '.join(takers)} {kind} take a {key}"
        joined = f"{where}{message}" if message.startswith(":") else f"{where}.{message}"
        raise ValueError(joined) from None
    except Exception as exc:  # a plug-in's own __post_init__ raised something else
        raise ValueError(f"{where}: {_described(exc)}") from None


def _described(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _takers(key: str, registry: dict[str, Plugin], kind: str) -> list[str]:
    """The built-ins of ``registry`` whose options have ``key`` (listeners as ``scheme://``)."""
    shown = "{}://" if kind == "listeners" else "{}"
    return [
        shown.format(n) for n, p in registry.items() if key in p.options.__struct_encode_fields__
    ]


def _split_uri(key: str, uri: str) -> SplitResult:
    """``uri`` split, or a ValueError naming ``key`` that quotes no secret of it."""
    problem = unsplittable(uri)
    if problem:
        raise ValueError(f"{key}: {redact_url(uri)!r}: {problem}")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"{key}: {redact_url(uri)!r}: {scrub(str(exc), uri)}") from None
    return parts


def _positive(section: Section, *names: str) -> None:
    for name in names:
        val = getattr(section, name)
        if val is not None and not 0 < val < math.inf:  # NaN fails both comparisons
            raise ValueError(f"{name}: must be positive, got {val}")


def _not_negative(section: Section, *names: str) -> None:
    for name in names:
        val = getattr(section, name)
        if not 0 <= val <= MAX_SECONDS:  # NaN fails both comparisons
            raise ValueError(
                f"{name}: must be 0 or more seconds, at most {MAX_SECONDS:,} (30 days), got {val}"
            )


def _seconds(section: Section, *names: str) -> None:
    """Positive durations, at most MAX_SECONDS: a longer one overflows the timers and
    the 64-bit millisecond ttl of the events that carry it."""
    for name in names:
        val = getattr(section, name)
        if not 0 < val <= MAX_SECONDS:
            raise ValueError(
                f"{name}: must be positive, at most {MAX_SECONDS:,} seconds (30 days), got {val}"
            )


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<key>[^`]*)`")
_ENUM = re.compile(r"Invalid enum value (?P<got>.*)")
_TYPE = re.compile(r"Expected `(?P<want>[^`]*)`, got `(?P<got>[^`]*)`")
_MISSING = re.compile(r"Object missing required field `(?P<key>[^`]*)`")
_OWN = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_.\[\]-]*): (?P<msg>.*)$", re.S)


def _explain(error: str, root: Any, top: str = "(top level)") -> str:
    """Turn a msgspec message into ``key.path: what is wrong; what is allowed``; ``root``
    is the type the path starts from."""
    match = _AT.match(error)
    assert match is not None  # the pattern matches any string
    msg, path = match["msg"], (match["path"] or "").lstrip(".")
    if m := _UNKNOWN.match(msg):
        allowed = ", ".join(_fields_at(root, path)) or "none"
        return f"{_join(path, m['key'])}: unknown key; allowed keys: {allowed}"
    if m := _MISSING.match(msg):
        return f"{_join(path, m['key'])}: required"
    if m := _ENUM.match(msg):
        choices = ", ".join(repr(c) for c in _choices_at(root, path))
        return f"{path}: got {m['got']}; allowed values: {choices}"
    if m := _TYPE.match(msg):
        return f"{path}: expected {_noun(m['want'])}, got {_noun(m['got'])}"
    if m := _OWN.match(msg):
        return f"{_join(path, m['key'])}: {m['msg']}"
    return f"{path or top}: {msg}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _noun(kind: str) -> str:
    nouns = {
        "int": "an integer",
        "str": "a string",
        "float": "a number",
        "bool": "a boolean",
        "object": "a table",
        "array": "an array",
        "null": "nothing",
    }
    parts = [nouns.get(k.strip(), k.strip()) for k in kind.split("|")]
    return " or ".join(parts)


def _type_at(root: Any, path: str) -> Any:
    kind: Any = root
    for part in re.findall(r"[^.\[\]]+", path):
        kind = _unwrap(kind)
        kind = get_args(kind)[0] if part.isdigit() else typing.get_type_hints(kind)[part]
    return _unwrap(kind)


def _unwrap(kind: Any) -> Any:
    """``X | None`` -> ``X``."""
    args = [a for a in get_args(kind) if a is not type(None)]
    if get_origin(kind) in (typing.Union, type(int | None)) and len(args) == 1:
        return args[0]
    return kind


def _fields_at(root: Any, path: str) -> tuple[str, ...]:
    kind = _type_at(root, path)
    return tuple(getattr(kind, "__struct_encode_fields__", ()))


def _choices_at(root: Any, path: str) -> tuple[Any, ...]:
    kind = _type_at(root, path)
    return get_args(kind) if get_origin(kind) is Literal else ()
