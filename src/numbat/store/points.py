"""The event -> point mapping that every store shares (InfluxDB line protocol, SQLite).

An event becomes one point:

* measurement: the event's ``name``;
* field ``value``: always a float (``float(value)``), so that InfluxDB never refuses a
  point because one producer sent ``1`` (an integer field) and another ``1.5``;
* time: the event's ``time`` in ms since the epoch;
* text fields (``description`` and ``message`` unless configured): string fields, never
  tags, because free text as a tag turns every distinct message into a new series (the
  flaw of the original numbat-influx). A text field that is not a string is written as
  its text too, so a field always keeps one type;
* number fields (``ttl`` unless configured): float fields. A ttl is a hint about one
  event, not part of what a series is; as a tag (the original) a producer that changes
  its beat interval would start a new series;
* every other field: a tag, its value as text (:func:`scalar_text`): strings as they
  are, booleans ``true``/``false``, integers in decimal, floats as ``repr`` (the shortest
  text that reads back as the same float). Float extras stay tags as in the original:
  such fields are mostly identifiers (a version ``1.5``) or bounded; a measured number
  belongs in ``value``, and the InfluxDB output's cardinality guard catches the rest. A
  tag whose text is empty is left out: InfluxDB cannot store an empty tag value.

Heartbeats (events whose name's last dotted segment is ``heartbeat``) are not stored
unless configured: they say "alive" every few seconds and the analyzer, not the store,
watches them. (The original skipped every name *containing* "heartbeat".)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final, NamedTuple

from numbat.event import Scalar, now_ms

TEXT_FIELDS: Final = ("description", "message")
NUMBER_FIELDS: Final = ("ttl",)
RESERVED: Final = frozenset({"name", "value", "time"})

Tags = tuple[tuple[str, str], ...]


class Point(NamedTuple):
    """One event as a store sees it. ``tags`` are sorted by key."""

    measurement: str
    tags: Tags
    fields: dict[str, float | str]
    time_ms: int


def scalar_text(val: Scalar) -> str:
    """A scalar as tag text: booleans as JSON spells them, numbers as Python prints them.

    >>> scalar_text(True), scalar_text(42), scalar_text(0.1), scalar_text(1e22), scalar_text("x")
    ('true', '42', '0.1', '1e+22', 'x')
    """
    kind = type(val)
    if kind is str:
        return val  # type: ignore[return-value]
    if kind is bool:
        return "true" if val else "false"
    return repr(val)


def is_heartbeat(name: str) -> bool:
    """True when the last dotted segment of ``name`` is ``heartbeat``.

    >>> is_heartbeat("web.heartbeat"), is_heartbeat("heartbeat"), is_heartbeat("heartbeats")
    (True, True, False)
    """
    return name.endswith("heartbeat") and (len(name) == 9 or name[-10] == ".")


class PointMapper:
    """Turns events into :class:`Point` s; one instance per configuration.

    >>> mapper = PointMapper()
    >>> mapper.point({"name": "db.query", "value": 3, "time": 10, "host": "a",
    ...               "ok": True, "ttl": 5, "description": "slow", "empty": ""})
    Point(measurement='db.query', tags=(('host', 'a'), ('ok', 'true')), \
fields={'value': 3.0, 'description': 'slow', 'ttl': 5.0}, time_ms=10)
    >>> mapper.should_store({"name": "web.heartbeat", "value": 1, "time": 10})
    False
    """

    __slots__ = ("clock", "not_tags", "number_fields", "text_fields", "write_heartbeats")

    def __init__(
        self,
        *,
        text_fields: Iterable[str] = TEXT_FIELDS,
        number_fields: Iterable[str] = NUMBER_FIELDS,
        write_heartbeats: bool = False,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.text_fields: tuple[str, ...] = tuple(dict.fromkeys(text_fields))
        self.number_fields: tuple[str, ...] = tuple(dict.fromkeys(number_fields))
        both = set(self.text_fields) & set(self.number_fields)
        clash = RESERVED.intersection((*self.text_fields, *self.number_fields)) | both
        if clash:
            raise ValueError(f"text_fields/number_fields: {sorted(clash)} cannot be one")
        self.write_heartbeats = write_heartbeats
        self.clock = clock
        # The keys that never become tags: one set, tested once per field.
        self.not_tags = RESERVED.union(self.text_fields, self.number_fields)

    def should_store(self, event: Mapping[str, Scalar]) -> bool:
        """False for heartbeats (unless configured) and for anything without a name."""
        name = event.get("name")
        if type(name) is not str or not name:
            return False
        return self.write_heartbeats or not is_heartbeat(name)

    def tags(self, event: Mapping[str, Scalar]) -> Tags:
        """The tags of ``event``, sorted by key, empty values left out."""
        not_tags = self.not_tags
        pairs = [(key, scalar_text(val)) for key, val in event.items() if key not in not_tags]
        return tuple(sorted(pair for pair in pairs if pair[1]))

    def fields(self, event: Mapping[str, Scalar]) -> dict[str, float | str]:
        """``value`` (a float) first, then the text and number fields present."""
        fields: dict[str, float | str] = {"value": float(event.get("value", 1))}
        for key in self.text_fields:
            if key in event:
                fields[key] = scalar_text(event[key])
        for key in self.number_fields:
            val = event.get(key)
            if type(val) is int or type(val) is float:
                fields[key] = float(val)
        return fields

    def time_ms(self, event: Mapping[str, Scalar]) -> int:
        """The event's time, or now for the (invalid) event without one."""
        val = event.get("time")
        return val if type(val) is int else self.clock()

    def point(self, event: Mapping[str, Scalar]) -> Point:
        """The point of one event (whether it should be stored is :meth:`should_store`)."""
        return Point(str(event["name"]), self.tags(event), self.fields(event), self.time_ms(event))

    def points(self, events: Iterable[Mapping[str, Scalar]]) -> Iterator[Point]:
        """The points of the events that should be stored, in order."""
        for event in events:
            if self.should_store(event):
                yield self.point(event)


_DEFAULT = PointMapper()
_WITH_HEARTBEATS = PointMapper(write_heartbeats=True)


def should_store(event: Mapping[str, Scalar], *, write_heartbeats: bool = False) -> bool:
    """:meth:`PointMapper.should_store` with the default text and number fields.

    >>> should_store({"name": "app.heartbeat"}), should_store({"name": "app.requests"})
    (False, True)
    """
    return (_WITH_HEARTBEATS if write_heartbeats else _DEFAULT).should_store(event)


def to_point(event: Mapping[str, Scalar]) -> Point:
    """:meth:`PointMapper.point` with the default text and number fields.

    >>> to_point({"name": "m", "value": 2, "time": 5, "message": 404, "code": 404})
    Point(measurement='m', tags=(('code', '404'),), fields={'value': 2.0, 'message': '404'}, \
time_ms=5)
    """
    return _DEFAULT.point(event)
