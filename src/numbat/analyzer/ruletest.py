"""``numbat analyzer test RULES.toml TESTS.jsonl``: unit tests for rules, as
``promtool test rules`` is for Prometheus. The format is in ``docs/rules.md``
("Testing rules"); in short, one JSON object a line::

    {"start": "2026-01-01T00:00:00Z", "tick": "1s"}          optional, first
    {"event": {"name": "web.heartbeat", "host": "web-1", "ttl": 10000, "time": "0s"},
     "every": "10s", "times": 3}                               events (repeated)
    {"expect": {"at": "45s", "incidents": [{"id": "web-1.web.heartbeat",
                                             "status": "critical"}]}}

Times are ms since the epoch (numbers) or durations after ``start`` (``"90s"``).
Lines run in time order, events before expectations of the same millisecond; each
expectation compares the incidents open at its time with the list given: every listed
incident must be open with the fields given, and no other may be.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from numbat.analyzer.model import Incident
from numbat.analyzer.replay import Simulation, format_time, parse_duration, parse_time
from numbat.config import AnalyzerConfig
from numbat.errors import EventError, NumbatError
from numbat.event import Event, normalize

__all__ = ["Expectation", "Failure", "RuleTest", "TestFileError", "load_tests", "run_tests"]

DEFAULT_START = 1_700_000_000_000  # 2023-11-14T22:13:20Z: a fixed, recent-looking epoch
_HEADER_KEYS = {"start", "tick"}
_EVENT_KEYS = {"event", "every", "times"}
MAX_TIMES = 100_000  # repeats of one event line: a test, not a load generator
_EXPECT_KEYS = {"at", "incidents"}
_INCIDENT_FIELDS = set(Incident.__struct_fields__)


class TestFileError(NumbatError):
    """A test file that cannot be read as one: names the line and key."""

    __test__ = False  # not a pytest class


@dataclass(slots=True)
class Expectation:
    """The incidents expected open at ``at`` ms (each a dict of Incident fields)."""

    at: int
    incidents: list[dict[str, Any]]
    line: int


@dataclass(slots=True)
class RuleTest:
    """A parsed test file: its start (ms), tick override (ms), events (time, line,
    event) and expectations, in file order."""

    __test__ = False

    start: int
    tick_ms: int | None = None
    events: list[tuple[int, int, Event]] = field(default_factory=list)
    expectations: list[Expectation] = field(default_factory=list)


@dataclass(slots=True)
class Failure:
    """One expectation that did not hold: where, and the diff lines."""

    expectation: Expectation
    diff: list[str]

    def text(self, path: str) -> str:
        at = self.expectation.at
        head = f"FAIL {path}:{self.expectation.line}: incidents open at {format_time(at)}"
        return "\n".join([head, *(f"  {line}" for line in self.diff)])


def load_tests(text: str, path: str) -> RuleTest:
    """Parse a test file; TestFileError naming ``path:line`` and the key for anything
    malformed."""
    lines = [(n, raw) for n, raw in enumerate(text.splitlines(), 1) if raw.strip()]
    lines = [(n, raw) for n, raw in lines if not raw.lstrip().startswith("#")]
    objects = [(n, _object(raw, f"{path}:{n}")) for n, raw in lines]
    test = RuleTest(start=DEFAULT_START)
    if objects and not ({"event", "expect"} & objects[0][1].keys()):
        n, header = objects.pop(0)
        _header(test, header, f"{path}:{n}")
    for n, obj in objects:
        where = f"{path}:{n}"
        if "event" in obj:
            _events(test, obj, n, where)
        elif "expect" in obj:
            _expect(test, obj, n, where)
        else:
            raise TestFileError(f'{where}: expected an "event" or an "expect" object')
    if not test.expectations:
        raise TestFileError(f"{path}: no expectations: nothing would be tested")
    return test


def _object(raw: str, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise TestFileError(f"{where}: not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise TestFileError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _unknown(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise TestFileError(f"{where}: {extra[0]}: unknown key (expected {sorted(allowed)})")


def _header(test: RuleTest, header: dict[str, Any], where: str) -> None:
    if not _HEADER_KEYS & header.keys():
        raise TestFileError(
            f'{where}: expected an "event" or an "expect" object, or a header of start, tick'
        )
    _unknown(header, _HEADER_KEYS, where)
    if "start" in header:
        test.start = _time(header["start"], 0, f"{where}: start")
    if "tick" in header:
        test.tick_ms = _duration(header["tick"], f"{where}: tick")
        if test.tick_ms <= 0:
            raise TestFileError(f"{where}: tick: must be positive")


def _time(value: Any, start: int, where: str) -> int:
    """An absolute time (ms number, ISO text) or a duration after ``start``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return start + parse_duration(value.removeprefix("+"))
        except ValueError:
            try:
                return parse_time(value, start)
            except ValueError:
                pass
    raise TestFileError(
        f"{where}: expected ms since the epoch, a duration after start (90s, 1m30s) or"
        f" ISO 8601 (2026-01-01T00:00:00Z), got {value!r}"
    )


def _duration(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return parse_duration(str(value))
    except ValueError as exc:
        raise TestFileError(f"{where}: {exc}") from None


def _events(test: RuleTest, obj: dict[str, Any], line: int, where: str) -> None:
    _unknown(obj, _EVENT_KEYS, where)
    raw = obj["event"]
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise TestFileError(f"{where}: event: expected an object with a name")
    if "time" not in raw:
        raise TestFileError(f"{where}: event.time: required (ms, or a duration after start)")
    time = _time(raw["time"], test.start, f"{where}: event.time")
    times = obj.get("times", 1)
    if not isinstance(times, int) or isinstance(times, bool) or not 1 <= times <= MAX_TIMES:
        raise TestFileError(
            f"{where}: times: expected an integer from 1 to {MAX_TIMES:,}, got {times!r}"
        )
    every = _duration(obj["every"], f"{where}: every") if "every" in obj else 0
    if times > 1 and every <= 0:
        raise TestFileError(f"{where}: every: required (a positive duration) with times")
    try:
        event = normalize({**raw, "time": time})
    except EventError as exc:
        raise TestFileError(f"{where}: event: {exc}") from None
    for i in range(times):
        test.events.append((time + i * every, line, {**event, "time": time + i * every}))


def _expect(test: RuleTest, obj: dict[str, Any], line: int, where: str) -> None:
    _unknown(obj, {"expect"}, where)
    expect = obj["expect"]
    if not isinstance(expect, dict):
        raise TestFileError(f"{where}: expect: expected an object")
    _unknown(expect, _EXPECT_KEYS, f"{where}: expect")
    if "at" not in expect:
        raise TestFileError(f"{where}: expect.at: required")
    at = _time(expect["at"], test.start, f"{where}: expect.at")
    incidents = expect.get("incidents")
    if not isinstance(incidents, list):
        raise TestFileError(f"{where}: expect.incidents: required, a list (empty: none open)")
    for i, item in enumerate(incidents):
        key = f"{where}: expect.incidents[{i}]"
        if not isinstance(item, dict) or not item:
            raise TestFileError(f"{key}: expected an object of incident fields")
        _unknown(item, _INCIDENT_FIELDS, key)
    test.expectations.append(Expectation(at, incidents, line))


def run_tests(test: RuleTest, config: AnalyzerConfig, rules: dict[str, Any]) -> list[Failure]:
    """Run the events through a :class:`Simulation` and check every expectation; the
    ones that failed (none: all held)."""
    sim = Simulation(config, rules, start=test.start, tick_ms=test.tick_ms)
    steps: list[tuple[int, int, int, Event | Expectation]] = [
        (time, 0, line, event) for time, line, event in test.events
    ]
    steps += [(e.at, 1, e.line, e) for e in test.expectations]
    steps.sort(key=lambda step: step[:3])  # events before expectations of the same ms
    failures = []
    for time, _, _, step in steps:
        if isinstance(step, Expectation):
            sim.advance(time)
            diff = compare(step.incidents, sim.open_incidents())
            if diff:
                failures.append(Failure(step, diff))
        else:
            sim.feed(step)
    return failures


def compare(expected: list[dict[str, Any]], found: list[Incident]) -> list[str]:
    """The diff of expected and open incidents: ``- expected``, ``+ unexpected``, and
    ``~ id: field expected X, got Y`` for an incident open with other fields."""
    left = list(found)
    diff: list[str] = []
    for want in expected:
        match = next((i for i in left if _matches(want, i)), None)
        if match is not None:
            left.remove(match)
            continue
        same_id = next((i for i in left if "id" in want and i.id == want["id"]), None)
        if same_id is not None:
            left.remove(same_id)
            for key, value in want.items():
                got = getattr(same_id, key)
                if got != value:
                    diff.append(f"~ {same_id.id}: {key} expected {value!r}, got {got!r}")
            continue
        diff.append(f"- expected, not open: {json.dumps(want, sort_keys=True)}")
    for incident in left:
        diff.append(f"+ open, not expected: {_summary(incident)}")
    return diff


def _matches(want: dict[str, Any], incident: Incident) -> bool:
    return all(getattr(incident, key) == value for key, value in want.items())


def _summary(incident: Incident) -> str:
    shown = {"id": incident.id, "status": incident.status, "rule": incident.rule}
    if incident.message:
        shown["message"] = incident.message
    return json.dumps(shown, sort_keys=True)
