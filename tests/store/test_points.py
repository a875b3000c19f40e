"""The event -> point mapping that the InfluxDB and SQLite stores share."""

from __future__ import annotations

import pytest

from numbat.event import Event, normalize
from numbat.store.points import (
    Point,
    PointMapper,
    is_heartbeat,
    scalar_text,
    should_store,
    to_point,
)


def test_point_parts() -> None:
    """name, value, time and every other scalar land where the module documents."""
    event = normalize(
        {
            "name": "db.query",
            "value": 3,
            "time": 1000,
            "host": "h1",
            "status": "okay",
            "cached": False,
            "rows": 12,
            "ratio": 0.25,
            "description": "slow query",
            "message": "took 3 s",
            "ttl": 16000,
        }
    )
    assert to_point(event) == Point(
        measurement="db.query",
        tags=(
            ("cached", "false"),
            ("host", "h1"),
            ("ratio", "0.25"),
            ("rows", "12"),
            ("status", "ok"),
        ),
        fields={"value": 3.0, "description": "slow query", "message": "took 3 s", "ttl": 16000.0},
        time_ms=1000,
    )


def test_value_is_always_a_float() -> None:
    """Integer and float values give the same field type, so InfluxDB never refuses one."""
    values = [to_point({"name": "m", "value": v, "time": 1}).fields["value"] for v in (1, 2.5, -7)]
    assert values == [1.0, 2.5, -7.0]
    assert all(type(v) is float for v in values)


def test_text_fields_are_always_strings() -> None:
    """A text field sent as a number is stored as its text: the field keeps one type."""
    fields = to_point({"name": "m", "value": 1, "time": 1, "message": 404}).fields
    assert fields["message"] == "404"


def test_tag_texts() -> None:
    """Booleans as JSON spells them, numbers as Python prints them (floats round-trip)."""
    assert [scalar_text(v) for v in (True, False, 0, -3, 0.1, 1e22, "x")] == [
        "true",
        "false",
        "0",
        "-3",
        "0.1",
        "1e+22",
        "x",
    ]


def test_empty_tag_values_are_left_out() -> None:
    """InfluxDB cannot store an empty tag value, so every store leaves the tag out."""
    assert to_point({"name": "m", "value": 1, "time": 1, "a": "", "b": "x"}).tags == (("b", "x"),)


def test_configured_text_and_number_fields() -> None:
    """Other text fields can be configured; the defaults then become tags."""
    mapper = PointMapper(text_fields=("stack",), number_fields=())
    point = mapper.point(
        {"name": "m", "value": 1, "time": 1, "stack": "a\nb", "description": "d", "ttl": 5}
    )
    assert point.tags == (("description", "d"), ("ttl", "5"))
    assert point.fields == {"value": 1.0, "stack": "a\nb"}


@pytest.mark.parametrize("fields", [("name",), ("value",), ("time",)])
def test_reserved_fields_cannot_be_text_fields(fields: tuple[str, ...]) -> None:
    """name, value and time are the point itself; configuring them as text is an error."""
    with pytest.raises(ValueError, match="cannot be one"):
        PointMapper(text_fields=fields)


def test_heartbeats() -> None:
    """Only a last dotted segment of exactly ``heartbeat`` counts; it is stored on request."""
    assert [
        is_heartbeat(n) for n in ("heartbeat", "a.heartbeat", "a.heartbeats", "xheartbeat")
    ] == [
        True,
        True,
        False,
        False,
    ]
    beat: Event = {"name": "web.heartbeat", "value": 1, "time": 1}
    assert not should_store(beat)
    assert should_store(beat, write_heartbeats=True)
    assert not should_store({"value": 1}, write_heartbeats=True)
    assert should_store({"name": "web.heartbeat.misses", "value": 1, "time": 1})


def test_points_skips_what_is_not_stored() -> None:
    """points() yields the points of the stored events only, in order."""
    mapper = PointMapper()
    events: list[Event] = [
        {"name": "a", "value": 1, "time": 1},
        {"name": "x.heartbeat", "value": 1, "time": 2},
        {"name": "b", "value": 2, "time": 3},
    ]
    assert [p.measurement for p in mapper.points(events)] == ["a", "b"]
