"""Display hints: an event's own hint, and the guess for a series with none."""

from __future__ import annotations

import subprocess
import sys

import pytest

from numbat.hints import HINTS, guess, hint_of


@pytest.mark.parametrize("hint", HINTS)
def test_type_field_is_the_hint(hint: str) -> None:
    """A `type` field naming a hint is that hint."""
    assert hint_of({"name": "x", "type": hint}) == hint


@pytest.mark.parametrize("flag", [True, 1, "true", "1", "yes", "True"])
def test_flag_tags_true_ish(flag: object) -> None:
    """The seed's flag tags count when true-ish, as sent or as stored."""
    assert hint_of({"name": "x", "timing": flag}) == "timing"


@pytest.mark.parametrize("flag", [False, 0, "false", "0", "", "no"])
def test_flag_tags_false_ish_are_no_hint(flag: object) -> None:
    """A flag tag that is false-ish is no hint."""
    assert hint_of({"name": "x", "counter": flag}) is None


def test_type_wins_over_flags_and_unknown_type_is_none() -> None:
    """The `type` field wins over flag tags; an unknown `type` is no hint by itself."""
    assert hint_of({"type": "gauge", "counter": "true"}) == "gauge"
    assert hint_of({"type": "histogram", "counter": "true"}) == "counter"
    assert hint_of({"type": "histogram"}) is None
    assert hint_of({}) is None


@pytest.mark.parametrize(
    ("values", "has_text", "expected"),
    [
        ([1, 2, 2, 7], False, "counter"),
        ([5, 5, 5], False, "gauge"),  # never moved
        ([5], False, "gauge"),
        ([3, 1, 4], False, "gauge"),
        ([2, 3, 1], False, "gauge"),  # a reset within the recent points: not sure
        ([], False, "annotation"),
        ([1, 1], True, "annotation"),  # text with the filled-in value 1
        ([1, 2, 3], True, "counter"),  # text beside real values
    ],
)
def test_guess(values: list[float], has_text: bool, expected: str) -> None:
    """guess tells counters, gauges and annotations from recent values."""
    assert guess(values, has_text) == expected


def test_hints_module_is_light() -> None:
    """numbat.hints imports nothing beyond the standard library's lightest parts."""
    code = "import sys, numbat.hints; print('asyncio' in sys.modules, 'msgspec' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
