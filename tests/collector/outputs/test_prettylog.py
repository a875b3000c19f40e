"""The prettylog output: exact lines, colour rules (always/never/auto/NO_COLOR), odd values."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any, Literal

import pytest

from numbat.collector.outputs.prettylog import PrettylogOutput
from numbat.config import PrettylogOutputConfig
from numbat.event import Event
from tests.collector.outputs.conftest import batch

T = 1_700_000_000_042


def _clock(time_ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(time_ms // 1000)) + f".{time_ms % 1000:03d}"


def _print(
    events: list[Any],
    color: Literal["auto", "always", "never"],
    stream: Literal["stdout", "stderr"] = "stdout",
) -> None:
    options = PrettylogOutputConfig(type="prettylog", color=color, stream=stream)

    async def main() -> None:
        out = PrettylogOutput(options)
        await out.start()
        await out.write(batch(*events))
        await out.close()

    asyncio.run(main())


EVENTS: list[Event] = [
    {"name": "web.requests", "value": 3, "time": T, "host": "h1", "status": "ok", "route": "/"},
    {
        "name": "disk",
        "value": 0.91234567,
        "time": T + 1,
        "host": "db-2",
        "status": "critical",
        "mount": "/var lib",
        "description": "disk nearly full",
    },
    {"name": "load", "value": 2.5, "time": T + 2, "host": "h1", "status": "warning"},
    {"name": "probe", "value": 0, "time": T + 3, "host": "h1", "status": "unknown", "up": False},
    {"name": "deploy", "value": 1, "time": T + 4, "host": "h1", "app": "web"},
]


def test_plain_lines_are_exact(capsys: pytest.CaptureFixture[str]) -> None:
    """With color=never each event is one plain line in the documented layout."""
    _print(EVENTS, "never")
    assert capsys.readouterr().out == (
        f"{_clock(T)} h1 web.requests=3 ok route=/\n"
        f'{_clock(T + 1)} db-2 disk=0.912346 critical mount="/var lib" disk nearly full\n'
        f"{_clock(T + 2)} h1 load=2.5 warning\n"
        f"{_clock(T + 3)} h1 probe=0 unknown up=false\n"
        f"{_clock(T + 4)} h1 deploy=1 app=web\n"
    )


def test_always_colours_status_and_bolds_name(capsys: pytest.CaptureFixture[str]) -> None:
    """With color=always the name is bold and each status has its colour, on the chosen stream."""
    _print(EVENTS[:4], "always", stream="stderr")
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[0] == f"{_clock(T)} h1 \x1b[1mweb.requests\x1b[0m=3 \x1b[32mok\x1b[0m route=/"
    assert "\x1b[31mcritical\x1b[0m" in lines[1]
    assert "\x1b[33mwarning\x1b[0m" in lines[2]
    assert "\x1b[35munknown\x1b[0m" in lines[3]


def _print_to(fd: int, color: Literal["auto", "always", "never"]) -> None:
    with open(fd, "w", encoding="utf-8", closefd=False) as stream:
        saved = sys.stdout
        sys.stdout = stream
        try:
            _print(EVENTS[:1], color)
        finally:
            sys.stdout = saved


def test_auto_colours_a_terminal_but_not_a_pipe_nor_with_no_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """auto: a pty gets colour, a pipe does not, and NO_COLOR turns it off on a pty."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    read_end, write_end = os.pipe()
    master, slave = os.openpty()
    try:
        _print_to(write_end, "auto")
        assert b"\x1b[" not in os.read(read_end, 65536)
        _print_to(slave, "auto")
        assert b"\x1b[1mweb.requests" in os.read(master, 65536)
        monkeypatch.setenv("NO_COLOR", "1")
        _print_to(slave, "auto")
        text = os.read(master, 65536)
        assert b"web.requests=3" in text and b"\x1b[" not in text
    finally:
        for fd in (read_end, write_end, master, slave):
            os.close(fd)


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_odd_values_never_crash_and_stay_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Wrong types, control characters and ANSI escapes in fields print as one safe line each."""
    odd: list[Any] = [
        {"name": "x", "value": "not a number", "time": "yesterday"},
        {"name": "y\n", "value": float("nan"), "time": 10**30, "description": "a\nb\x1b[2J\x9b"},
        {"name": "z", "value": None, "k": [1, 2], "v": "x\x1by", 3: "int key"},
        {"value": 1},
        {"name": _Unprintable()},
    ]
    _print(odd, "never")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == len(odd)
    assert "\x1b" not in out and "\x9b" not in out
    assert lines[0] == '--:--:--.--- - x="not a number"'
    assert lines[1] == "??:??:??.??? - y\\n=nan a\\nb\\x1b[2J\\x9b"
    assert lines[2] == '--:--:--.--- - z=None k="[1, 2]" v=x\\x1by 3="int key"'
    assert lines[3] == "--:--:--.--- - ?=1"
    assert lines[4] == "--:--:--.--- (unprintable event: RuntimeError('no'))"
