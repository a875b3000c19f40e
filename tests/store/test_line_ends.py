"""Where influxd 1.x cuts a payload into lines, and where the renderer's points end: a
string field value may hold a newline, which line protocol carries inside its quotes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numbat.event import Event
from numbat.store.lineprotocol import (
    LineRenderer,
    PointEnds,
    count_lines,
    line_ends,
    split_lines,
)
from tests.store.scanline import scan_line_ends
from tests.store.test_lineprotocol import batches

T0 = 1_700_000_000_000


@settings(max_examples=1_000, deadline=None)
@given(
    st.binary(max_size=40) | st.lists(st.sampled_from(list(b'ab =,"\\\n#')), max_size=40).map(bytes)
)
def test_lines_end_where_influxd_ends_them(payload: bytes) -> None:
    """Any bytes at all (lines of ours, and lines the fast pattern does not follow: an
    unclosed quote, ',' or '=' out of place, a backslash at the very end): cut where
    influxd's scanLine cuts them."""
    assert line_ends(payload) == scan_line_ends(payload)
    assert count_lines(payload) == len(scan_line_ends(payload))
    assert b"".join(split_lines(payload)) == payload


@pytest.mark.parametrize(
    ("payload", "ends"),
    [
        (b'm value=1.0,description="a\nb" 1\nm value=2.0 2\n', [32, 46]),
        (b'm value=1.0,description="a\\"\nb" 1\n', [34]),  # an escaped quote keeps it open
        (b'm,t=a"b value=1.0 1\nm value=2.0 2\n', [20, 34]),  # a quote in a tag: no string
        (b'm value=1.0,k"ey="x\ny" 1\n', [25]),  # a quote in a field key opens none
        (b'm value=1.0,description="open\nm value=2.0 2\n', [44]),  # unclosed: to the end
        (b"m,t=a\\\nb value=1 1\nm value=2 2\n", [19, 31]),  # an escaped newline
        (b"m value=1.0 1", [13]),
        (b"", []),
    ],
)
def test_line_ends_examples(payload: bytes, ends: list[int]) -> None:
    """Newlines inside a quoted string value do not end a line; quotes elsewhere open none."""
    assert line_ends(payload) == ends == scan_line_ends(payload)
    assert count_lines(payload) == len(ends)


@settings(max_examples=200, deadline=None)
@given(events=batches())
def test_the_renderer_says_where_its_points_end(events: list[Event]) -> None:
    """Random events, descriptions and tags with newlines among them: the renderer gives
    each point's end exactly when a newline is not one (else None, the common case), and
    PointEnds finds the same ends from the bytes and the point count alone."""
    result = LineRenderer().render(events)
    expected = scan_line_ends(result.data)
    assert len(expected) == result.points
    if result.data.count(b"\n") == result.points:
        assert result.ends is None
    else:
        assert list(result.ends or ()) == expected
    found = PointEnds.of(result.data, result.points)
    assert [found.first(0 if i == 0 else expected[i - 1]) for i in range(len(expected))] == (
        expected
    )
    assert found.count(0, len(result.data)) == result.points


def test_point_ends_cut_between_points_only() -> None:
    """The last point end within a limit, the first after an offset, and counts between,
    the same whether each newline ends a point or a description holds some."""
    events: list[Event] = [
        {"name": "m", "value": i, "time": T0, "description": "one\ntwo\nthree" if i % 2 else "x"}
        for i in range(6)
    ]
    result = LineRenderer().render(events)
    ends = PointEnds(result.data, result.ends)
    assert result.ends is not None and len(result.ends) == 6
    for limit in range(len(result.data) + 1):
        last = ends.last(0, limit)
        assert last == max([0, *(end for end in result.ends if end <= limit)])
        assert ends.count(0, last) == sum(end <= last for end in result.ends)
    plain = LineRenderer().render([{"name": "m", "value": i, "time": T0} for i in range(6)])
    assert plain.ends is None
    plain_ends = PointEnds(plain.data)
    size = len(plain.data) // 6
    assert plain_ends.last(0, 2 * size + 3) == 2 * size
    assert plain_ends.first(2 * size) == 3 * size
    assert plain_ends.count(size, 4 * size) == 3
