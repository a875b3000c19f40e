"""The rate rule: the share of matching events per group over a sliding window (the
original's status-code rates), with an injected clock."""

from __future__ import annotations

from typing import Any

from numbat.event import Event

from ._helpers import T0, Clock, build, config_error

RULE = "[analyzer.rules.rate]\nmin_events = 10\n"


def _ev(code: Any, host: str = "web-1", name: str = "web.response") -> Event:
    return {"name": name, "host": host, "statusCode": code, "time": T0, "value": 1}


def _feed(rule: Any, codes: list[Any], **kw: Any) -> list[Any]:
    out: list[Any] = []
    for code in codes:
        out.extend(rule(_ev(code, **kw)) or [])
    return out


def test_non_2xx_share_over_rate_allowed_is_critical_then_ok() -> None:
    """Defaults: a non-2xx share of *.response over 0.1 is critical; back under, one ok."""
    clock = Clock()
    rule, match = build(RULE, clock)
    assert match.name_matches("web.response")
    assert _feed(rule, [200] * 9) == []
    assert _feed(rule, [500]) == []  # 1 of 10: not over 0.1
    [alert] = _feed(rule, [503])  # 2 of 11
    assert (alert.status, alert.key, alert.name) == ("critical", "web-1.web.response.rate", "rate")
    assert alert.value == 2 / 11 and alert.ttl == 300_000
    assert alert.message == (
        "2 of 11 events (web-1.web.response) in the last 300 s had statusCode outside "
        "200-299: 18.2%, allowed 10.0%"
    )
    assert _feed(rule, [200] * 8) == []  # still over: not repeated within a quarter window
    [ok] = _feed(rule, [200])  # 2 of 20
    assert ok.status == "ok"
    assert _feed(rule, [200] * 5) == []


def test_nothing_is_judged_below_min_events() -> None:
    """All errors but fewer than min_events events: no alert."""
    rule, _ = build(RULE, Clock())
    assert _feed(rule, [500] * 9) == []
    assert len(_feed(rule, [500])) == 1


def test_the_window_slides() -> None:
    """Errors older than the window stop counting: the share falls and resolves."""
    clock = Clock()
    rule, _ = build(RULE + "window = 60\n", clock)
    assert _feed(rule, [500] * 10)[-1].status == "critical"
    clock.advance(61)
    assert _feed(rule, [200] * 9) == []  # the old errors are gone: under min_events
    [ok] = _feed(rule, [200])
    assert ok.status == "ok" and ok.value == 0


def test_a_lasting_problem_is_repeated_every_quarter_window() -> None:
    """While over the limit, the critical comes again once a quarter window passed."""
    clock = Clock()
    rule, _ = build(RULE + "window = 60\n", clock)
    assert len(_feed(rule, [500] * 10)) == 1
    clock.advance(14)
    assert _feed(rule, [500]) == []
    clock.advance(1)
    assert len(_feed(rule, [500])) == 1


def test_warn_level_and_groups() -> None:
    """warn gives a warning between warn and rate_allowed; each host is its own group."""
    rule, _ = build(RULE + "warn = 0.05\nrate_allowed = 0.2\n", Clock())
    [warn] = _feed(rule, [200] * 9 + [500])
    assert warn.status == "warning"
    assert _feed(rule, [200] * 10, host="web-2") == []


def test_group_by_name_alone_judges_the_fleet() -> None:
    """group_by = ["name"]: one share across hosts, id name.rule, tagged with name."""
    rule, _ = build(RULE + 'group_by = ["name"]\n', Clock())
    for i in range(9):
        _feed(rule, [200], host=f"h{i}")
    [alert] = _feed(rule, [500, 500], host="h9")
    assert (alert.key, alert.host, alert.tags) == (
        "web.response.rate",
        "",
        {"name": "web.response"},
    )


def test_conditions_inside_and_equals() -> None:
    """inside and equals conditions count their events; events without the field do not count."""
    rule, _ = build(RULE + "inside = [500, 599]\n", Clock())
    assert _feed(rule, [404] * 10) == []
    rule, _ = build(
        '[analyzer.rules.jobs]\ntype = "rate"\nmatch = {name = "job"}\nfield = "result"\n'
        'equals = ["failed", 3]\nmin_events = 4\nrate_allowed = 0.4\n',
        Clock(),
    )
    events = [{"name": "job", "host": "h", "result": r} for r in ("ok", "failed", 3, "ok")]
    assert [a.status for e in events for a in rule(e) or []] == ["critical"]
    assert rule({"name": "job", "host": "h"}) is None


def test_status_codes_sent_as_text_count() -> None:
    """A statusCode sent as text ("500") is read as its number; junk is not counted."""
    rule, _ = build(RULE, Clock())
    assert _feed(rule, ["200"] * 8 + ["junk"]) == []
    assert len(_feed(rule, ["500", "502"])) == 1


def test_restart_keeps_what_was_raised() -> None:
    """A group critical before a restart resolves once judged ok after it."""
    clock = Clock()
    rule, _ = build(RULE, clock)
    _feed(rule, [500] * 10)
    saved = rule.save()
    assert saved == {"web-1.web.response.rate": "critical"}
    again, _ = build(RULE, clock)
    again.restore(saved, clock.now)
    [ok] = _feed(again, [200] * 10)
    assert ok.status == "ok"


def test_bad_options_name_the_key() -> None:
    """Bad shares, ranges, two conditions, a bad window: errors name the key."""
    base = "[analyzer.rules.rate]\n"
    assert "analyzer.rules.rate.rate_allowed: a share from 0 to below 1" in config_error(
        base + "rate_allowed = 1.5\n"
    )
    assert "analyzer.rules.rate.inside: give one of outside, inside, equals" in config_error(
        base + "outside = [1, 2]\ninside = [3, 4]\n"
    )
    assert "analyzer.rules.rate.outside: expected [low, high]" in config_error(
        base + "outside = [1]\n"
    )
    assert "analyzer.rules.rate.window: must be positive" in config_error(base + "window = 0\n")
    assert "analyzer.rules.rate.min_events: must be 1 or more" in config_error(
        base + "min_events = 0\n"
    )
    assert "analyzer.rules.rate.warn: 0.5 is above rate_allowed" in config_error(
        base + "warn = 0.5\n"
    )
