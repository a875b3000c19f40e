"""Display hints: how a series is best drawn (stdlib only; neutral, any layer may use it).

* ``counter``: a running total; drawn as a rate per second.
* ``gauge``: a level; drawn as a line.
* ``timing``: a duration in ms; drawn as p50/p90/p99 bands.
* ``annotation``: a note (a deploy); drawn as a marker with its text.

An event carries its own hint as the field ``type`` (what the emitter's
``counter()``/``gauge()``/``timing()``/``annotate()`` set), or as one of the seed's flag
tags (``counter=true``...). A series stores them as tags, so :func:`hint_of` reads
either an event or a series' tags. With no hint, :func:`guess` tells one from the
values. See docs/events.md "Display hints".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Literal

__all__ = ["HINTS", "Hint", "guess", "hint_of"]

Hint = Literal["counter", "gauge", "timing", "annotation"]
HINTS: tuple[Hint, ...] = ("counter", "gauge", "timing", "annotation")

# A flag tag is true-ish as sent (True, 1) or as stored ("true", "1"...).
_TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})


def _hint(value: object) -> Hint | None:
    for hint in HINTS:
        if value == hint:
            return hint
    return None


def _true(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    return isinstance(value, str) and value.strip().lower() in _TRUE


def hint_of(fields: Mapping[str, object]) -> Hint | None:
    """An event's (or a series' tags') own hint: the field ``type`` when it is one of
    :data:`HINTS`, else the first of the flag tags ``counter``, ``gauge``, ``timing``,
    ``annotation`` (in that order) present with a true-ish value (``True``, a non-zero
    number, ``"true"``, ``"1"``, ``"yes"``); None when it has none.

    >>> hint_of({"name": "web.requests", "type": "counter"})
    'counter'
    >>> hint_of({"timing": "true"}), hint_of({"gauge": False}), hint_of({"type": "x"})
    ('timing', None, None)
    """
    own = _hint(fields.get("type"))
    if own is not None:
        return own
    for hint in HINTS:
        if hint in fields and _true(fields[hint]):
            return hint
    return None


def guess(values: Sequence[float], has_text: bool) -> Hint:
    """The hint of a series that has none, from its recent values (oldest first) and
    whether any of those points has text (``description``, ``message``).

    No value, or text with only the value the event model fills in when none is sent
    (1): ``annotation``. Values that never decrease and moved (last above first):
    ``counter``. Anything else: ``gauge``.

    >>> guess([1, 2, 2, 5], False), guess([3, 1, 2], False), guess([4, 4], False)
    ('counter', 'gauge', 'gauge')
    >>> guess([], False), guess([1.0, 1.0], True)
    ('annotation', 'annotation')
    """
    if not values or (has_text and all(value == 1 for value in values)):
        return "annotation"
    rising = all(a <= b for a, b in pairwise(values))
    if rising and values[-1] > values[0]:
        return "counter"
    return "gauge"
