"""numbat analyzer test RULES.toml TESTS.jsonl: rule unit tests; the documented examples
under docs/examples/ are run here so they never rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from numbat.analyzer.ruletest import TestFileError, load_tests, run_tests
from numbat.config import loads

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.jsonl"))

STATUS = "[analyzer]\ndefaults = false\n[analyzer.rules.status]\n"


def _numbat(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "numbat", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _files(tmp_path: Path, rules: str, tests: str) -> tuple[str, str]:
    (tmp_path / "rules.toml").write_text(rules)
    (tmp_path / "tests.jsonl").write_text(tests)
    return str(tmp_path / "rules.toml"), str(tmp_path / "tests.jsonl")


def test_examples_cover_the_documented_kinds() -> None:
    """docs/examples holds a test file, with its rules, per documented rule kind."""
    names = {path.stem for path in EXAMPLES}
    assert {"heartbeat", "threshold-for", "rate"} <= names
    assert all(path.with_suffix(".toml").is_file() for path in EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_documented_examples_pass(example: Path) -> None:
    """Every example test file in docs/examples passes against its rules: exit 0."""
    result = _numbat("analyzer", "test", str(example.with_suffix(".toml")), str(example))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "expectations hold" in result.stdout


def test_failures_exit_1_with_a_diff(tmp_path: Path) -> None:
    """Expectations that do not hold: exit 1, each named by line and time, with what was
    missing (-), unexpected (+) and different (~)."""
    tests = "\n".join(
        [
            '{"start": 0}',
            '{"event": {"name": "db.check", "host": "db-1", "status": "warning", "time": "1s"}}',
            '{"event": {"name": "web.check", "host": "w", "status": "critical", "time": "1s"}}',
            '{"expect": {"at": "2s", "incidents": [{"id": "db-1.db.check", "status": "critical"},'
            ' {"id": "gone"}]}}',
            '{"expect": {"at": "3s",'
            ' "incidents": [{"id": "db-1.db.check"}, {"id": "w.web.check"}]}}',
        ]
    )
    result = _numbat("analyzer", "test", *_files(tmp_path, STATUS, tests))
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert f"FAIL {tmp_path / 'tests.jsonl'}:4: incidents open at 1970-01-01T00:00:02.000Z" in out
    assert "~ db-1.db.check: status expected 'critical', got 'warning'" in out
    assert '- expected, not open: {"id": "gone"}' in out
    assert '+ open, not expected: {"id": "w.web.check", "rule": "status"' in out
    assert ":5:" not in out  # the second expectation holds
    assert "1 of 2 expectations failed" in out


@pytest.mark.parametrize(
    ("tests", "message"),
    [
        ("{not json", "tests.jsonl:1: not JSON"),
        ('{"expect": {"at": "1s", "incidents": []}}\n[1]', "tests.jsonl:2: expected a JSON object"),
        ('{"event": {"name": "x"}}', "tests.jsonl:1: event.time: required"),
        ('{"event": {"name": "x", "time": "5q"}}', "tests.jsonl:1: event.time: expected ms"),
        (
            '{"event": {"name": "x", "time": 1, "value": "a"}}',
            "tests.jsonl:1: event: field 'value'",
        ),
        ('{"event": {"name": "x", "time": 1}, "times": 3}', "tests.jsonl:1: every: required"),
        ('{"event": {"name": "x", "time": 1}, "oops": 1}', "tests.jsonl:1: oops: unknown key"),
        ('{"expect": {"incidents": []}}', "tests.jsonl:1: expect.at: required"),
        ('{"expect": {"at": 1}}', "tests.jsonl:1: expect.incidents: required"),
        (
            '{"expect": {"at": 1, "incidents": [{"statuss": "ok"}]}}',
            "tests.jsonl:1: expect.incidents[0]: statuss: unknown key",
        ),
        ('{"start": "x"}\n{"expect": {"at": 1, "incidents": []}}', "tests.jsonl:1: start:"),
        ('{"event": {"name": "x", "time": 1}}', "no expectations"),
        ('{"what": 1}', 'tests.jsonl:1: expected an "event" or an "expect" object, or a header'),
        ('{"start": 0, "x": 1}', "tests.jsonl:1: x: unknown key (expected ['start', 'tick'])"),
        ('{"start": 0}\n{"what": 2}', 'tests.jsonl:2: expected an "event" or an "expect"'),
    ],
)
def test_malformed_test_file_exits_2(tmp_path: Path, tests: str, message: str) -> None:
    """A malformed test file exits 2 naming the line and key, without a traceback."""
    result = _numbat("analyzer", "test", *_files(tmp_path, STATUS, tests))
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_malformed_rules_exit_2(tmp_path: Path) -> None:
    """A rules file with a bad key exits 2 naming it."""
    rules = '[analyzer.rules.x]\ntype = "threshold"\nbogus = 1\n'
    tests = '{"expect": {"at": 1, "incidents": []}}'
    result = _numbat("analyzer", "test", *_files(tmp_path, rules, tests))
    assert result.returncode == 2
    assert "analyzer.rules.x.bogus" in result.stderr


def test_default_rules_only_when_asked() -> None:
    """Only the file's rules run unless it sets defaults = true: a missed heartbeat opens
    nothing under a status-only file, and an incident with the default set."""
    tests = load_tests(
        '{"event": {"name": "web.heartbeat", "host": "w", "ttl": 1000, "time": "0s"}}\n'
        '{"expect": {"at": "5s", "incidents": []}}',
        "t.jsonl",
    )
    only = loads(STATUS).analyzer
    assert run_tests(tests, only, dict(only.rule_configs)) == []
    from numbat.analyzer.daemon import configured_rules

    with_defaults = loads("[analyzer]\ndefaults = true\n").analyzer
    [failure] = run_tests(tests, with_defaults, configured_rules(with_defaults))
    assert failure.diff[0].startswith('+ open, not expected: {"id": "w.web.heartbeat"')


def test_lines_run_in_time_order_events_first() -> None:
    """Lines run by time whatever their order in the file, and an expectation sees the
    events of its own millisecond; the tick header sets how often time acts."""
    tests = load_tests(
        '{"start": 1000, "tick": "5s"}\n'
        '{"expect": {"at": "10s", "incidents": [{"id": "h.x", "status": "critical",'
        ' "fired_at": 11000}]}}\n'
        '{"event": {"name": "x", "host": "h", "status": "critical", "time": "10s"}}\n'
        '{"event": {"name": "x", "host": "h", "status": "ok", "time": "20s"}}\n'
        '{"expect": {"at": "20s", "incidents": []}}',
        "t.jsonl",
    )
    assert tests.start == 1000 and tests.tick_ms == 5000
    config = loads(STATUS).analyzer
    assert run_tests(tests, config, dict(config.rule_configs)) == []


@pytest.mark.parametrize("times", [0, 100_000_000])
def test_repeated_events_need_a_bounded_positive_count(times: int) -> None:
    """times must be an integer from 1 to 100,000 (a huge one filled memory): a
    TestFileError naming the line and key."""
    line = json.dumps({"event": {"name": "x", "time": 1}, "every": "1ms", "times": times})
    with pytest.raises(TestFileError, match=r"t\.jsonl:1: times: expected an integer from 1"):
        load_tests(line, "t.jsonl")


@pytest.mark.parametrize(
    "example",
    [p for e in EXAMPLES for p in (e, e.with_suffix(".toml"))],
    ids=lambda path: path.name,
)
def test_rules_md_shows_the_examples_as_they_are(example: Path) -> None:
    """docs/rules.md quotes each example file whole, so the page shows what is tested."""
    assert example.read_text() in (ROOT / "docs" / "rules.md").read_text()
