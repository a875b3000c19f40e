"""The log and console notifiers: one line per change."""

from __future__ import annotations

import asyncio
import logging

import pytest

from numbat.analyzer.notifiers.log import LogNotifier
from tests.analyzer.notifiers.helpers import T0, incident, notification, options


def test_log_writes_problems_at_warning_and_resolves_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """type=log: one line per change, WARNING for a problem, INFO for a resolve."""
    sent = notification(
        new=[incident(value=2.0)],
        resolved=[incident("db.disk", "db-1", status="ok", message="", resolved_at=T0)],
    )
    with caplog.at_level(logging.INFO, logger="numbat.analyzer.alerts"):
        asyncio.run(LogNotifier(options(type="log")).send(sent))
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            "critical web-1.web.heartbeat (new): web-1.web heartbeat not heard for 2 beats"
            " [value 2]",
        ),
        ("INFO", "ok db-1.db.disk (resolved)"),
    ]


def test_console_prints_the_same_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """type=console prints one line per change on standard output."""
    sent = notification(changed=[incident(status="warning", message="load 3")])
    asyncio.run(LogNotifier(options(type="console")).send(sent))
    assert capsys.readouterr().out == "warning web-1.web.heartbeat (changed): load 3\n"
