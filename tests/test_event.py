"""Tests for numbat.event: the one place an incoming object becomes a valid event."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numbat.errors import EventError
from numbat.event import (
    MAX_DEPTH,
    MAX_FIELDS,
    MAX_NAME_BYTES,
    MAX_STRING_BYTES,
    MAX_TIME,
    MAX_TIME_MS,
    normalize,
    parse,
    time_unit,
)


def clock() -> int:
    return 1234


def norm(obj: dict[str, Any]) -> dict[str, Any]:
    return normalize(obj, clock=clock)


def rejects(obj: dict[str, Any], field: str | None, reason: str) -> EventError:
    """Assert ``normalize(obj)`` raises EventError with this field and reason."""
    with pytest.raises(EventError) as info:
        normalize(obj, clock=clock)
    assert (info.value.field, info.value.reason) == (field, reason), str(info.value)
    return info.value


def parse_rejects(data: bytes | str, field: str | None, reason: str) -> EventError:
    """Assert ``parse(data)`` raises EventError with this field and reason."""
    with pytest.raises(EventError) as info:
        parse(data, clock=clock)
    assert (info.value.field, info.value.reason) == (field, reason), str(info.value)
    return info.value


# --- defaults -------------------------------------------------------------------------


def test_defaults_value_and_time() -> None:
    """A bare name gets value 1 and the time from the injected clock."""
    assert norm({"name": "x"}) == {"name": "x", "value": 1, "time": 1234}


def test_given_value_and_time_are_kept() -> None:
    """Explicit value and time are not overwritten by the defaults."""
    assert norm({"name": "x", "value": 2.5, "time": 99}) == {"name": "x", "value": 2.5, "time": 99}


def test_default_clock_is_wall_clock_ms() -> None:
    """Without an injected clock, time is now in whole milliseconds."""
    event = normalize({"name": "x"})
    assert isinstance(event["time"], int)
    assert event["time"] > 1_600_000_000_000


def test_normalize_returns_new_dict() -> None:
    """normalize never mutates its input."""
    obj: dict[str, Any] = {"name": "x", "status": "OKAY", "meta": {"a": 1}}
    norm(obj)
    assert obj == {"name": "x", "status": "OKAY", "meta": {"a": 1}}


def test_parse_doctest_example() -> None:
    """parse decodes bytes, normalises status and fills value."""
    assert parse(b'{"name": "web.requests", "time": 1, "status": "OKAY"}') == {
        "name": "web.requests",
        "time": 1,
        "status": "ok",
        "value": 1,
    }


def test_parse_accepts_str() -> None:
    """parse accepts already-decoded text as well as bytes."""
    assert parse('{"name": "é"}', clock=clock) == {"name": "é", "value": 1, "time": 1234}


# --- status ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("ok", "ok"),
        ("okay", "ok"),
        ("OKAY", "ok"),
        ("Ok", "ok"),
        ("warning", "warning"),
        ("CRITICAL", "critical"),
        ("Unknown", "unknown"),
    ],
)
def test_status_normalised(given: str, expected: str) -> None:
    """Status is case-insensitive and okay becomes ok."""
    assert norm({"name": "x", "status": given})["status"] == expected


@pytest.mark.parametrize("bad", ["fine", "", "ok ", 1, True, ["ok"], {"ok": 1}])
def test_bad_status_rejected(bad: Any) -> None:
    """Any other status is rejected with reason bad_status."""
    err = rejects({"name": "x", "status": bad}, "status", "bad_status")
    assert "ok, okay, warning, critical, unknown" in str(err)


# --- description ----------------------------------------------------------------------


def test_short_description_kept() -> None:
    """A description within 255 bytes is kept unchanged."""
    text = "é" * 127  # 254 bytes
    assert norm({"name": "x", "description": text})["description"] == text


def test_description_truncated_ascii() -> None:
    """An ASCII description is cut to exactly 255 bytes."""
    assert norm({"name": "x", "description": "a" * 1000})["description"] == "a" * 255


@pytest.mark.parametrize(("char", "width"), [("é", 2), ("€", 3), ("🦘", 4)])
def test_description_truncated_on_char_boundary(char: str, width: int) -> None:
    """Multi-byte characters are never split when the description is cut."""
    desc = norm({"name": "x", "description": "a" + char * 200})["description"]
    assert isinstance(desc, str)
    encoded = desc.encode("utf-8")
    assert len(encoded) <= 255
    assert len(encoded) > 255 - width
    assert desc == "a" + char * ((255 - 1) // width)


def test_description_must_be_string() -> None:
    """A non-string description is rejected."""
    rejects({"name": "x", "description": 5}, "description", "bad_field")


# --- name -----------------------------------------------------------------------------


def test_missing_name() -> None:
    """An event without a name is rejected with reason missing_name."""
    rejects({"value": 1}, "name", "missing_name")


def test_null_name_is_missing() -> None:
    """name: null is dropped like any null, so the name is missing."""
    rejects({"name": None}, "name", "missing_name")


def test_empty_name() -> None:
    """An empty name is rejected."""
    rejects({"name": ""}, "name", "bad_name")


@pytest.mark.parametrize("bad", [1, 1.5, True, ["x"], {"a": "b"}])
def test_non_string_name(bad: Any) -> None:
    """A name that is not a string is rejected."""
    rejects({"name": bad}, "name", "bad_name")


def test_name_length_limit_in_bytes() -> None:
    """Names may be 255 UTF-8 bytes but not 256, counting bytes not characters."""
    assert norm({"name": "a" * MAX_NAME_BYTES})["name"] == "a" * 255
    assert norm({"name": "a" + "é" * 127})["name"] == "a" + "é" * 127  # 255 bytes
    rejects({"name": "a" * 256}, "name", "bad_name")
    rejects({"name": "é" * 128}, "name", "bad_name")  # 128 chars, 256 bytes


@pytest.mark.parametrize("bad", ["a\nb", "a\x00", "\tx", "x\x7f", "é\x1b", "x\x85", "é\x9f"])
def test_name_control_characters(bad: str) -> None:
    """Names with C0, DEL or C1 control characters are rejected."""
    rejects({"name": bad}, "name", "bad_name")


def test_name_unicode_and_spaces_allowed() -> None:
    """Printable non-ASCII text and spaces are fine in a name."""
    assert norm({"name": "über load 1"})["name"] == "über load 1"


# --- value ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [True, False, math.nan, math.inf, -math.inf, "1", [1], {"a": 1}])
def test_bad_value(bad: Any) -> None:
    """Booleans, NaN, infinities, strings and containers are not values."""
    rejects({"name": "x", "value": bad}, "value", "bad_value")


@pytest.mark.parametrize("good", [0, -5, 2**63 - 1, -(2**63), 0.25, -1e300])
def test_good_value_kept(good: float) -> None:
    """Finite numbers inside the int64 range are kept as they are."""
    value = norm({"name": "x", "value": good})["value"]
    assert value == good
    assert type(value) is type(good)


@pytest.mark.parametrize("big", [2**63, -(2**63) - 1, 10**30])
def test_value_outside_int64_becomes_float(big: int) -> None:
    """Integers outside the signed 64-bit range become floats."""
    value = norm({"name": "x", "value": big})["value"]
    assert type(value) is float
    assert value == float(big)


def test_value_null_gets_default() -> None:
    """value: null is dropped and the default 1 applies."""
    assert norm({"name": "x", "value": None})["value"] == 1


@pytest.mark.parametrize("text", ["1e400", "-1e400", "NaN", "Infinity", "-Infinity"])
def test_parse_non_finite_json_numbers_rejected(text: str) -> None:
    """Huge JSON numbers parse to infinity and, like NaN and Infinity, are rejected."""
    parse_rejects('{"name": "x", "value": ' + text + "}", "value", "bad_value")


def test_parse_huge_integer_rejected() -> None:
    """An integer literal too large even for a float is rejected, not an OverflowError."""
    parse_rejects('{"name": "x", "value": 1' + "0" * 400 + "}", "value", "bad_value")
    rejects({"name": "x", "value": 10**400}, "value", "bad_value")


def test_parse_big_integer_becomes_float() -> None:
    """A JSON integer beyond int64 but within float range becomes a float."""
    assert parse('{"name": "x", "value": 1' + "0" * 30 + "}", clock=clock)["value"] == 1e30


# --- time -----------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "expected"), [(1000.4, 1000), (1000.6, 1001), (0, 0), (7, 7)])
def test_time_rounded_to_ms(given: float, expected: int) -> None:
    """Fractional times are rounded to whole milliseconds."""
    time = norm({"name": "x", "time": given})["time"]
    assert time == expected
    assert type(time) is int


@pytest.mark.parametrize("bad", [-1, -0.5, MAX_TIME + 1, 1.0001e20, 10**400, -1e308])
def test_time_out_of_range(bad: Any) -> None:
    """Time must be a number in [0, 1e20] (up to year 5138 in nanoseconds)."""
    err = rejects({"name": "x", "time": bad}, "time", "bad_time")
    assert "[0, 1e20]" in str(err)


@pytest.mark.parametrize("bad", [math.nan, math.inf, True, "1", [1], {"s": 1}])
def test_time_not_a_finite_number(bad: Any) -> None:
    """Time must be a finite number: not NaN, infinite, a boolean, a string or a container."""
    rejects({"name": "x", "time": bad}, "time", "bad_time")


NOW_MS = 1_795_996_339_260  # 2026-11-30T20:32:19.260Z


@pytest.mark.parametrize(
    ("given", "unit", "expected"),
    [
        # Python's time.time(), the example: seconds with a fraction
        (1_795_996_339.26, "s", NOW_MS),
        (1_795_996_339, "s", NOW_MS - 260),
        (NOW_MS, "ms", NOW_MS),
        (NOW_MS + 0.4, "ms", NOW_MS),
        (NOW_MS * 1_000 + 499, "us", NOW_MS),
        (NOW_MS * 1_000 + 500, "us", NOW_MS),  # a half rounds to even
        (NOW_MS * 1_000 + 1_500, "us", NOW_MS + 2),
        (float(NOW_MS * 1_000), "us", NOW_MS),
        # time.time_ns(): exact in integers (a float would lose the last digits)
        (NOW_MS * 1_000_000 + 499_999, "ns", NOW_MS),
        (NOW_MS * 1_000_000 + 500_001, "ns", NOW_MS + 1),
        (1.795996339260e18, "ns", NOW_MS),
        # the edges of the bands: each unit covers 1973-03-03 .. 5138-11-16
        (0, "ms", 0),
        (10**8, "ms", 10**8),  # small times (the first 27 hours of 1970) stay ms
        (10**8 + 1, "s", (10**8 + 1) * 1_000),
        (10**11 - 1, "s", (10**11 - 1) * 1_000),
        (10**11 - 0.0001, "s", 10**14),  # rounds up to the top of the ms band
        (10**11, "ms", 10**11),
        (10**14, "ms", 10**14),
        (10**14 + 1, "us", 10**11),
        (10**17, "us", 10**14),
        (10**17 + 1, "ns", 10**11),
        (10**20, "ns", 10**14),
    ],
)
def test_time_unit_by_magnitude(given: float, unit: str, expected: int) -> None:
    """A time in seconds, microseconds or nanoseconds is converted to ms, and says so."""
    seen: list[str] = []
    event = normalize({"name": "x", "time": given}, clock=clock, on_time_unit=seen.append)
    assert event["time"] == expected and type(event["time"]) is int
    assert time_unit(given) == unit
    assert seen == ([] if unit == "ms" else [unit])
    assert norm(event) == event  # converted once: the result is ms


def test_time_unit_reported_on_every_path() -> None:
    """The in-place path, the copying path and parse all report a converted time."""
    seen: list[str] = []
    obj = {"name": "x", "time": 1_795_996_339}
    normalize(dict(obj), clock=clock, owned=True, on_time_unit=seen.append)
    normalize(dict(obj), clock=clock, on_time_unit=seen.append)
    normalize({"name": "x", "time": NOW_MS}, clock=clock, owned=True, on_time_unit=seen.append)
    parse(b'{"name": "x", "time": 1795996339260000000}', on_time_unit=seen.append)
    assert seen == ["s", "s", "ns"]


def test_time_unit_out_of_range() -> None:
    """time_unit refuses what is not a time: negative, NaN, past 1e20."""
    for bad in (-1, math.nan, 10**20 + 1):
        with pytest.raises(ValueError, match="not a time"):
            time_unit(bad)


@settings(max_examples=300)
@given(
    time=st.one_of(st.integers(0, MAX_TIME), st.floats(0, MAX_TIME), st.integers(0, 10**12)),
    warm=st.booleans(),
)
def test_time_conversion_alike_on_both_paths(time: float, warm: bool) -> None:
    """The in-place and the copying path give the same time and report the same unit."""
    if warm:
        normalize({"name": "x", "time": 0}, clock=clock)  # "name" and "time" already seen
    results = []
    for owned in (False, True):
        seen: list[str] = []
        obj = {"name": "x", "time": time}
        results.append((normalize(obj, clock=clock, owned=owned, on_time_unit=seen.append), seen))
    assert results[0] == results[1]
    unit = time_unit(time)
    assert results[0][1] == ([] if unit == "ms" else [unit])


# --- ttl ------------------------------------------------------------------------------


@pytest.mark.parametrize("good", [1, 16000, 0.5])
def test_ttl_positive(good: float) -> None:
    """A positive ttl is kept."""
    assert norm({"name": "x", "ttl": good})["ttl"] == good


@pytest.mark.parametrize("bad", [0, -1, -0.5, math.nan, math.inf, True, "16000", [1]])
def test_bad_ttl(bad: Any) -> None:
    """ttl must be a positive finite number."""
    rejects({"name": "x", "ttl": bad}, "ttl", "bad_ttl")


def test_ttl_outside_int64_becomes_float() -> None:
    """A ttl beyond int64 becomes a float so every JSON encoder can write it."""
    ttl = norm({"name": "x", "ttl": 10**30})["ttl"]
    assert type(ttl) is float
    rejects({"name": "x", "ttl": 10**400}, "ttl", "bad_ttl")


# --- host / app / node ----------------------------------------------------------------


@pytest.mark.parametrize("field", ["host", "app", "node"])
def test_labels_numbers_become_strings(field: str) -> None:
    """Numbers given for host, app or node are turned into strings."""
    assert norm({"name": "x", field: 3})[field] == "3"
    assert norm({"name": "x", field: 2.5})[field] == "2.5"
    assert norm({"name": "x", field: "web-1"})[field] == "web-1"


@pytest.mark.parametrize("field", ["host", "app", "node"])
@pytest.mark.parametrize("bad", [True, math.nan, math.inf, [1], {"a": 1}, "a\nb", "h" * 256])
def test_bad_labels(field: str, bad: Any) -> None:
    """Labels must be short strings without control characters (or finite numbers)."""
    rejects({"name": "x", field: bad}, field, "bad_field")


@pytest.mark.parametrize("field", ["host", "app", "node"])
def test_labels_huge_numbers(field: str) -> None:
    """A number too long for a label is rejected, not an OverflowError."""
    rejects({"name": "x", field: 10**400}, field, "bad_field")
    rejects({"name": "x", field: 10**5000}, field, "bad_field")
    assert norm({"name": "x", field: 2**64})[field] == str(2**64)


def test_label_unicode_allowed() -> None:
    """Labels may be non-ASCII text."""
    assert norm({"name": "x", "host": "hôte"})["host"] == "hôte"


# --- other fields: flattening, nulls, arrays, limits -----------------------------------


def test_extra_scalars_kept() -> None:
    """Strings, numbers and booleans in other fields are carried along."""
    obj = {"name": "x", "s": "v", "i": 3, "f": 1.5, "b": True, "c": False}
    assert norm(obj) == {**obj, "value": 1, "time": 1234}


def test_nested_objects_flattened() -> None:
    """Nested objects become dotted keys."""
    event = norm({"name": "x", "meta": {"nprocs": 4, "cpu": {"user": 0.5}}})
    assert event == {"name": "x", "meta.nprocs": 4, "meta.cpu.user": 0.5, "value": 1, "time": 1234}


def test_nesting_depth_limit() -> None:
    """Objects nest at most MAX_DEPTH levels below the top; deeper is too_deep."""
    ok: dict[str, Any] = {"leaf": 1}
    for key in "dcba"[: MAX_DEPTH - 1]:
        ok = {key: ok}
    assert norm({"name": "x", "a": ok})["a.b.c.d.leaf"] == 1
    rejects({"name": "x", "a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}, "a.b.c.d.e", "too_deep")


def test_null_fields_dropped() -> None:
    """null in any field, nested or not, drops that field."""
    event = norm({"name": "x", "host": None, "status": None, "extra": None, "m": {"a": None}})
    assert event == {"name": "x", "value": 1, "time": 1234}


@pytest.mark.parametrize("arr", [[], [1, 2], ["a"]])
def test_arrays_rejected_naming_field(arr: list[Any]) -> None:
    """Arrays are rejected and the error names the (dotted) field."""
    err = rejects({"name": "x", "tags": arr}, "tags", "bad_field")
    assert "'tags'" in str(err)
    rejects({"name": "x", "meta": {"tags": arr}}, "meta.tags", "bad_field")


def test_extra_non_finite_numbers_rejected() -> None:
    """NaN and infinities are rejected in other fields too."""
    rejects({"name": "x", "load": math.nan}, "load", "bad_field")
    rejects({"name": "x", "m": {"load": -math.inf}}, "m.load", "bad_field")


def test_extra_big_ints_become_floats() -> None:
    """Integers outside int64 in other fields become floats; absurdly big ones are rejected."""
    assert type(norm({"name": "x", "n": 2**64})["n"]) is float
    rejects({"name": "x", "n": 10**400}, "n", "bad_field")


def test_too_many_fields() -> None:
    """More than MAX_FIELDS fields (counting defaults and flattened keys) is rejected."""
    fields = {f"f{i}": i for i in range(MAX_FIELDS - 4)}  # + name, value, time
    assert len(norm({"name": "x", **fields})) == MAX_FIELDS - 1
    assert len(norm({"name": "x", "g": 0, **fields})) == MAX_FIELDS
    rejects({"name": "x", "g": 0, "h": 0, **fields}, None, "too_many_fields")
    rejects({"name": "x", "m": {f"k{i}": i for i in range(MAX_FIELDS)}}, None, "too_many_fields")


def test_long_strings() -> None:
    """Other string fields may be 4096 UTF-8 bytes, not more."""
    assert norm({"name": "x", "s": "a" * MAX_STRING_BYTES})["s"] == "a" * 4096
    rejects({"name": "x", "s": "a" * (MAX_STRING_BYTES + 1)}, "s", "too_long")
    rejects({"name": "x", "s": "é" * 2049}, "s", "too_long")  # 4098 bytes
    rejects({"name": "x", "m": {"s": "a" * 5000}}, "m.s", "too_long")


@pytest.mark.parametrize("key", ["", "a\nb", "k" * 256])
def test_bad_keys(key: str) -> None:
    """Field names must be non-empty, short and free of control characters."""
    rejects({"name": "x", key: 1}, key, "bad_key")


def test_flattened_key_too_long() -> None:
    """A dotted key built by flattening is held to the same 255-byte limit."""
    rejects({"name": "x", "a" * 200: {"b" * 60: 1}}, "a" * 200 + "." + "b" * 60, "bad_key")


def test_other_types_rejected() -> None:
    """Values that are not JSON scalars or objects (e.g. tuples, bytes) are rejected."""
    rejects({"name": "x", "t": (1, 2)}, "t", "bad_field")
    rejects({"name": "x", "b": b"raw"}, "b", "bad_field")


# --- parse: encoding and shape ---------------------------------------------------------


@pytest.mark.parametrize("data", [b'{"name": "\xff"}', b'{"name": "x", "d": "\xc3"}', b"\x80"])
def test_parse_non_utf8_bytes(data: bytes) -> None:
    """Bytes that are not UTF-8 are rejected with reason not_utf8."""
    err = parse_rejects(data, None, "not_utf8")
    assert "byte" in str(err)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ('{"name": "\\ud800"}', "name"),
        ('{"name": "x", "description": "a\\udc00"}', "description"),
        ('{"name": "x", "host": "\\ud800"}', "host"),
        ('{"name": "x", "s": "\\ud800"}', "s"),
        ('{"name": "x", "m": {"s": "\\udfff"}}', "m.s"),
        ('{"name": "x", "\\ud800": 1}', "\ud800"),
    ],
)
def test_parse_lone_surrogates(doc: str, field: str) -> None:
    """A lone surrogate escape decodes to text that is not unicode: reason not_utf8."""
    parse_rejects(doc.encode("ascii"), field, "not_utf8")


@pytest.mark.parametrize("data", [b"", b"{", b"{'name': 'x'}", b'{"name": "x",}', b"nope"])
def test_parse_bad_json(data: bytes) -> None:
    """Malformed JSON is rejected with reason bad_json."""
    parse_rejects(data, None, "bad_json")


def test_parse_deeply_nested_json() -> None:
    """JSON nested beyond the decoder's recursion limit is bad_json, not RecursionError."""
    parse_rejects(b"[" * 100_000, None, "bad_json")
    parse_rejects(b'{"a":' * 100_000, None, "bad_json")


@pytest.mark.parametrize("data", [b"[]", b'[{"name": "x"}]', b"1", b'"x"', b"null", b"true"])
def test_parse_not_object(data: bytes) -> None:
    """Valid JSON that is not an object is rejected with reason not_object."""
    parse_rejects(data, None, "not_object")


def test_error_message_names_field() -> None:
    """str(EventError) starts with the field it is about."""
    err = rejects({"name": "x", "value": "a"}, "value", "bad_value")
    assert str(err).startswith("field 'value': ")
    assert isinstance(err, ValueError)


# --- properties -----------------------------------------------------------------------

names = st.text(alphabet=st.characters(exclude_categories=["Cc", "Cs"]), min_size=1, max_size=60)
keys = st.text(
    alphabet=st.characters(exclude_categories=["Cc", "Cs"]), min_size=1, max_size=20
).filter(
    lambda k: (
        k not in {"name", "value", "time", "ttl", "status", "description", "host", "app", "node"}
    )
)
scalars = st.one_of(
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=50),
)
known = st.fixed_dictionaries(
    {},
    optional={
        "value": st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False)),
        "time": st.one_of(
            st.integers(0, MAX_TIME_MS),
            st.integers(0, MAX_TIME),
            st.floats(0, MAX_TIME, allow_nan=False),
        ),
        "ttl": st.one_of(st.integers(1), st.floats(min_value=1e-3, allow_infinity=False)),
        "status": st.sampled_from(["ok", "okay", "OKAY", "warning", "Critical", "unknown"]),
        "description": st.text(alphabet=st.characters(exclude_categories=["Cs"])),
        "host": st.one_of(names, st.integers()),
        "app": names,
        "node": names,
    },
)


@settings(max_examples=300)
@given(name=names, known_fields=known, extra=st.dictionaries(keys, scalars, max_size=20))
def test_valid_events_normalize_idempotently(
    name: str, known_fields: dict[str, Any], extra: dict[str, Any]
) -> None:
    """Any valid scalar fields plus a valid name normalise, and normalising is idempotent."""
    obj = {**extra, **known_fields, "name": name}
    once = norm(obj)
    assert norm(once) == once
    assert once["name"] == name
    # what normalize returns is plain JSON that round-trips through parse
    assert parse(json.dumps(once, allow_nan=False), clock=clock) == once


json_ish = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from([10**400, -(10**400), 2**63, -(2**63) - 1]),
        st.floats(),
        st.text(),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=30,
)
any_key = st.one_of(
    st.sampled_from(["name", "value", "time", "ttl", "status", "description", "host", "app"]),
    st.text(max_size=8),
)


@settings(max_examples=500)
@given(obj=st.dictionaries(any_key, json_ish, max_size=8))
def test_normalize_never_raises_anything_but_event_error(obj: dict[str, Any]) -> None:
    """For arbitrary JSON-ish input, normalize returns a dict or raises EventError."""
    try:
        event = norm(obj)
    except EventError as err:
        assert isinstance(err.reason, str)
        assert err.reason
    else:
        assert isinstance(event, dict)
        assert norm(event) == event


@settings(max_examples=300)
@given(data=st.one_of(st.binary(max_size=64), st.text(max_size=64)))
def test_parse_never_raises_anything_but_event_error(data: bytes | str) -> None:
    """For arbitrary bytes or text, parse returns a dict or raises EventError."""
    try:
        event = parse(data, clock=clock)
    except EventError:
        pass
    else:
        assert isinstance(event, dict)


def _outcome(obj: dict[str, Any], owned: bool) -> tuple[str, Any]:
    try:
        return "ok", normalize(obj, clock=clock, owned=owned)
    except EventError as exc:
        return "error", (exc.field, exc.reason)


@settings(max_examples=500)
@given(obj=st.dictionaries(any_key, json_ish, max_size=8), warm=st.booleans())
def test_owned_fast_path_gives_the_same_result(obj: dict[str, Any], warm: bool) -> None:
    """normalize(owned=True) returns exactly what the copying path does, or the same error."""
    if warm:  # names and keys already seen take the in-place path
        _outcome(copy.deepcopy(obj), owned=False)
    expected = _outcome(copy.deepcopy(obj), owned=False)
    got = _outcome(copy.deepcopy(obj), owned=True)
    assert got == expected
    if got[0] == "ok":
        assert list(got[1]) == list(expected[1])  # same field order on the wire


@settings(max_examples=300)
@given(name=names, known_fields=known, extra=st.dictionaries(keys, scalars, max_size=10))
def test_owned_fast_path_on_valid_events(
    name: str, known_fields: dict[str, Any], extra: dict[str, Any]
) -> None:
    """Valid events, seen before or not, come out of the in-place path unchanged in meaning."""
    obj = {**extra, **known_fields, "name": name}
    expected = normalize(copy.deepcopy(obj), clock=clock)
    for _ in range(2):  # the second round finds every name and key already checked
        got = normalize(copy.deepcopy(obj), clock=clock, owned=True)
        assert got == expected and list(got) == list(expected)
