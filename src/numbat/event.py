"""The one place an incoming object becomes a valid event, or a specific error.

An event is a flat ``dict`` of JSON scalars. :func:`normalize` checks and canonicalises
one; :func:`parse` does the same from JSON bytes. Every rejection is an
:class:`~numbat.errors.EventError` naming the field and a ``reason`` slug to count by.
The rules (see ``docs/events.md``):

* ``name`` is required: a non-empty string of at most 255 UTF-8 bytes with no control
  characters (Unicode category Cc: U+0000-U+001F, U+007F-U+009F).
* ``value`` is a finite number (booleans are not numbers), default 1. Integers outside
  the signed 64-bit range become floats; one too large even for a float is rejected.
* ``time`` is milliseconds since the epoch, default now; fractions are rounded to whole ms.
  A time whose magnitude says seconds, microseconds or nanoseconds (:func:`time_unit`)
  is converted to ms.
* ``ttl`` is a positive finite number of milliseconds (64-bit range as for ``value``).
* ``status`` is one of ok/okay/warning/critical/unknown, any case; ``okay`` becomes ``ok``.
* ``description`` is text, cut to 255 UTF-8 bytes on a character boundary.
* ``host``, ``app``, ``node`` are strings (numbers are turned into strings).
* Any other field is a string, number or boolean. ``null`` drops the field; a nested
  object is flattened into dotted keys (``{"meta": {"nprocs": 4}}`` becomes
  ``{"meta.nprocs": 4}``); an array is rejected.

This module imports nothing else from numbat but its exceptions, and only the stdlib.
"""

from __future__ import annotations

import json
import math
import time as _time
from collections.abc import Callable, Mapping
from typing import Any

from numbat.errors import EventError

Scalar = str | int | float | bool
Event = dict[str, Scalar]

MAX_NAME_BYTES = 255
MAX_DESCRIPTION_BYTES = 255
MAX_STRING_BYTES = 4096
MAX_FIELDS = 100
MAX_DEPTH = 4
# Times by magnitude (see time_unit): in each unit the band [10**11 ms, 10**14 ms] is
# 1973-03-03T09:46:40Z .. 5138-11-16T09:46:40Z; up to EARLY_MS (the first 27 hours of
# 1970: small synthetic times) a time is ms too.
EARLY_MS = 10**8
MIN_TIME_MS = 10**11
MAX_TIME_MS = 10**14
MAX_TIME = 10**20  # the largest number taken as a time: 5138-11-16 in nanoseconds
_INT64 = 2**63

STATES: Mapping[str, str] = {
    "ok": "ok",
    "okay": "ok",
    "warning": "warning",
    "critical": "critical",
    "unknown": "unknown",
}

_CONTROL = frozenset(chr(c) for c in (*range(0x20), *range(0x7F, 0xA0)))

# Known fields whose string value is kept as-is when already seen as clean (or, for
# status, already canonical); numeric fields, known or not, that a plain number fits.
_TEXT_AS_IS = frozenset({"name", "host", "app", "node", "status"})
_CANONICAL = frozenset({"ok", "warning", "critical", "unknown"})

# Strings known to be valid names and keys (non-empty printable ASCII, at most 255
# bytes). Bounded, so a stream of ever-new names costs a little speed, never memory.
_CLEAN: set[str] = set()
_CLEAN_MAX = 100_000


def now_ms() -> int:
    """Wall-clock time in whole milliseconds since the epoch."""
    return _time.time_ns() // 1_000_000


def time_unit(num: float) -> str:
    """The unit a ``time`` of this magnitude is in: ``"ms"``, ``"s"``, ``"us"`` or ``"ns"``.

    Every unit covers 1973-03-03 .. 5138-11-16 (10**11 .. 10**14 ms); below that, times
    up to 10**8 (the first 27 hours of 1970) are ms. Raises ValueError for a number
    outside ``[0, 10**20]`` (NaN included).

    >>> [time_unit(t) for t in (0, 1_795_996_339.26, 1_795_996_339_260, 1.8e15, 1.8e18)]
    ['ms', 's', 'ms', 'us', 'ns']
    """
    if 0 <= num <= EARLY_MS or MIN_TIME_MS <= num <= MAX_TIME_MS:
        return "ms"
    if EARLY_MS < num < MIN_TIME_MS:
        return "s"
    if MAX_TIME_MS < num <= MAX_TIME_MS * 1_000:
        return "us"
    if MAX_TIME_MS * 1_000 < num <= MAX_TIME:
        return "ns"
    raise ValueError(f"not a time in [0, {MAX_TIME:.0e}]: {num!r}")


def parse(
    data: bytes | str,
    *,
    clock: Callable[[], int] = now_ms,
    on_time_unit: Callable[[str], None] | None = None,
) -> Event:
    """Decode one JSON object and :func:`normalize` it.

    >>> parse(b'{"name": "web.requests", "status": "OKAY"}', clock=lambda: 1)
    {'name': 'web.requests', 'status': 'ok', 'time': 1, 'value': 1}
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventError(None, "not_utf8", f"not valid UTF-8 at byte {exc.start}") from None
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise EventError(None, "bad_json", f"not valid JSON: {exc}") from None
    except RecursionError:
        raise EventError(None, "bad_json", "not valid JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise EventError(None, "not_object", f"expected a JSON object, got {type(obj).__name__}")
    return normalize(obj, clock=clock, on_time_unit=on_time_unit)


def normalize(
    obj: Mapping[str, Any],
    *,
    clock: Callable[[], int] = now_ms,
    defaults: Mapping[str, Scalar] | None = None,
    owned: bool = False,
    on_time_unit: Callable[[str], None] | None = None,
) -> Event:
    """Return a valid event built from ``obj``, or raise :class:`EventError`.

    ``defaults`` fill fields that ``obj`` lacks (the emitter's ``host`` and ``node``).
    ``owned``: the caller gives ``obj`` away (a dict fresh from a JSON parser), so when
    it needs no change it is completed in place and returned instead of copied.
    ``on_time_unit(unit)`` is called when the time was converted to ms from ``"s"``,
    ``"us"`` or ``"ns"`` (see :func:`time_unit`), so a listener can count and report it.

    >>> normalize({"name": "db.query", "value": 12.5, "time": 1000.4, "meta": {"rows": 3}})
    {'name': 'db.query', 'value': 12.5, 'time': 1000, 'meta.rows': 3}
    """
    if owned and type(obj) is dict and _already_valid(obj):
        event: Event = obj
    else:
        event = _rebuild(obj)
        # Only here: a time in another unit never passes _already_valid.
        if on_time_unit is not None and "time" in event:
            unit = time_unit(obj["time"])
            if unit != "ms":
                on_time_unit(unit)
    if defaults:
        for key, val in defaults.items():
            if key not in event:
                event[key] = val
    if "name" not in event:
        raise EventError("name", "missing_name", "is required")
    if "time" not in event:
        event["time"] = clock()
    if "value" not in event:
        event["value"] = 1
    if len(event) > MAX_FIELDS:
        raise EventError(None, "too_many_fields", f"{len(event)} fields; the limit is {MAX_FIELDS}")
    return event


def _already_valid(obj: dict[str, Any]) -> bool:
    """True when every field of ``obj`` is kept unchanged by :func:`_rebuild`.

    One loop with inline checks: the collector runs this for every event, and nearly
    all of them are like this (names and keys already seen, plain ASCII, ints in range).
    """
    clean = _CLEAN
    for key, val in obj.items():
        kind = type(val)
        if kind is str:
            if key in _TEXT_AS_IS:
                plain = val in clean if key != "status" else val in _CANONICAL
            elif key in _KNOWN:
                plain = key == "description" and val.isascii() and len(val) <= MAX_DESCRIPTION_BYTES
            else:
                plain = val.isascii() and len(val) <= MAX_STRING_BYTES
        elif kind is int:
            if key == "time":
                plain = MIN_TIME_MS <= val <= MAX_TIME_MS or 0 <= val <= EARLY_MS
            elif key == "ttl":
                plain = 0 < val < _INT64
            else:
                plain = (key == "value" or key not in _KNOWN) and -_INT64 <= val < _INT64
        elif kind is float:
            # A float time is rounded to whole ms, so it is never kept as-is.
            finite = val - val == 0
            plain = finite and (key == "value" or key not in _KNOWN or (key == "ttl" and val > 0))
        else:
            plain = kind is bool and key not in _KNOWN
        if not plain or (key not in clean and key not in _KNOWN):
            return False
    return True


def _rebuild(obj: Mapping[str, Any]) -> Event:
    event: Event = {}
    for key, val in obj.items():
        if key in _KNOWN:
            if val is not None:
                event[key] = _KNOWN[key](val)
        elif key in _CLEAN and _plain(val):
            event[key] = val
        else:
            _add_extra(event, key, val, 0)
    return event


def _plain(val: Any) -> bool:
    """True for a scalar that needs no conversion or deeper check (the common case)."""
    kind = type(val)
    if kind is str:
        return val.isascii() and len(val) <= MAX_STRING_BYTES
    if kind is int:
        return -_INT64 <= val < _INT64  # type: ignore[no-any-return]
    if kind is float:
        return val - val == 0  # type: ignore[no-any-return]
    return kind is bool


def _name(val: Any) -> str:
    if type(val) is str and val in _CLEAN:
        return val
    if not isinstance(val, str):
        raise EventError("name", "bad_name", f"must be a string, got {_kind(val)}")
    if not val:
        raise EventError("name", "bad_name", "must not be empty")
    _check_text("name", val, MAX_NAME_BYTES, "bad_name")
    return val


def _label(field: str) -> Callable[[Any], str]:
    def check(val: Any) -> str:
        if type(val) is str and val in _CLEAN:
            return val
        if (isinstance(val, float) and math.isfinite(val)) or (
            isinstance(val, int) and not isinstance(val, bool)
        ):
            try:
                val = str(val)
            except ValueError:  # an int with more digits than str() will write
                raise EventError(field, "bad_field", f"is over {MAX_NAME_BYTES} bytes") from None
        if not isinstance(val, str):
            raise EventError(field, "bad_field", f"must be a string, got {_kind(val)}")
        _check_text(field, val, MAX_NAME_BYTES, "bad_field")
        return val

    return check


def _value(val: Any, field: str = "value") -> int | float:
    if _plain(val) and type(val) is not str and type(val) is not bool:
        return val  # type: ignore[no-any-return]
    reason = "bad_value" if field == "value" else "bad_field"
    return _int64(field, _number(field, val, reason), reason)


def _int64(field: str, num: int | float, reason: str) -> int | float:
    """Integers outside the signed 64-bit range become floats (JSON encoders need that)."""
    if isinstance(num, int) and not -_INT64 <= num < _INT64:
        try:
            return float(num)
        except OverflowError:
            raise EventError(field, reason, "must be a finite number, got a huge integer") from None
    return num


def _time_ms(val: Any) -> int:
    if type(val) is int and (MIN_TIME_MS <= val <= MAX_TIME_MS or 0 <= val <= EARLY_MS):
        return val
    num = _number("time", val, "bad_time")
    try:
        unit = time_unit(num)
    except ValueError:
        message = f"must be a time since the epoch in [0, 1e20] (ms, s, us or ns), got {num!r}"
        raise EventError("time", "bad_time", message) from None
    if unit == "ms":
        return round(num)
    if unit == "s":
        return num * 1_000 if type(num) is int else round(num * 1_000)
    ratio = 1_000 if unit == "us" else 1_000_000
    if type(num) is int:
        # Exact for big integers (a float would lose nanoseconds): halves to even, as round().
        quotient, rest = divmod(num, ratio)
        return quotient + (2 * rest > ratio or (2 * rest == ratio and quotient % 2))
    return round(num / ratio)


def _ttl(val: Any) -> int | float:
    num = _number("ttl", val, "bad_ttl")
    if num <= 0:
        raise EventError("ttl", "bad_ttl", f"must be a positive number of ms, got {num!r}")
    return _int64("ttl", num, "bad_ttl")


def _status(val: Any) -> str:
    state = STATES.get(val.lower()) if isinstance(val, str) else None
    if state is None:
        allowed = ", ".join(STATES)
        raise EventError("status", "bad_status", f"must be one of {allowed}; got {val!r}")
    return state


def _description(val: Any) -> str:
    if not isinstance(val, str):
        raise EventError("description", "bad_field", f"must be a string, got {_kind(val)}")
    if _text_bytes("description", val) <= MAX_DESCRIPTION_BYTES:
        return val
    return val.encode("utf-8")[:MAX_DESCRIPTION_BYTES].decode("utf-8", "ignore")


_KNOWN: Mapping[str, Callable[[Any], Scalar]] = {
    "name": _name,
    "value": _value,
    "time": _time_ms,
    "ttl": _ttl,
    "status": _status,
    "description": _description,
    "host": _label("host"),
    "app": _label("app"),
    "node": _label("node"),
}


def _add_extra(event: Event, key: Any, val: Any, depth: int) -> None:
    if not isinstance(key, str) or not key:
        raise EventError(str(key), "bad_key", "field names must be non-empty strings")
    _check_text(key, key, MAX_NAME_BYTES, "bad_key")
    if val is None:
        return
    if isinstance(val, bool):
        event[key] = val
    elif isinstance(val, int):
        event[key] = _value(val, key)
    elif isinstance(val, str):
        if _text_bytes(key, val) > MAX_STRING_BYTES:
            raise EventError(key, "too_long", f"is over {MAX_STRING_BYTES} bytes")
        event[key] = val
    elif isinstance(val, float):
        event[key] = _number(key, val, "bad_field")
    elif isinstance(val, Mapping):
        if depth >= MAX_DEPTH:
            raise EventError(key, "too_deep", f"objects nest deeper than {MAX_DEPTH} levels")
        for sub, subval in val.items():
            _add_extra(event, f"{key}.{sub}", subval, depth + 1)
    else:
        raise EventError(key, "bad_field", f"must be a string, number or boolean, got {_kind(val)}")


def _number(field: str, val: Any, reason: str) -> int | float:
    kind = type(val)
    # ``x - x == 0`` holds exactly for finite floats: one C-level test for NaN and both infinities.
    if kind is int or (kind is float and val - val == 0):
        return val  # type: ignore[no-any-return]
    if isinstance(val, float):
        if math.isfinite(val):
            return float(val)
        raise EventError(field, reason, f"must be a finite number, got {val!r}")
    if isinstance(val, int) and not isinstance(val, bool):
        return int(val)
    raise EventError(field, reason, f"must be a finite number, got {_kind(val)}")


def _check_text(field: str, val: str, limit: int, reason: str) -> None:
    # Fast path: printable ASCII within the limit is by far the common case.
    if val.isascii() and val.isprintable() and len(val) <= limit:
        if limit == MAX_NAME_BYTES and val and len(_CLEAN) < _CLEAN_MAX:
            _CLEAN.add(val)
        return
    if _text_bytes(field, val) > limit:
        raise EventError(field, reason, f"is over {limit} bytes")
    if not _CONTROL.isdisjoint(val):
        raise EventError(field, reason, "must not contain control characters")


def _text_bytes(field: str, val: str) -> int:
    """UTF-8 length of ``val``; rejects lone surrogates, which cannot be encoded."""
    if val.isascii():
        return len(val)
    try:
        return len(val.encode("utf-8"))
    except UnicodeEncodeError:
        raise EventError(field, "not_utf8", "contains text that is not valid unicode") from None


def _kind(val: Any) -> str:
    names = {bool: "a boolean", list: "an array", dict: "an object", str: "a string"}
    return names.get(type(val), "null" if val is None else type(val).__name__)
