"""``type = "prettylog"``: one human-friendly line per event on the console.

``HH:MM:SS.mmm host name=value status k=v ... description``, in local time. With colour
the name is bold and the status coloured (critical red, warning yellow, ok green, unknown
magenta). ``color = "auto"`` colours only a terminal, and never when ``NO_COLOR`` is
set (https://no-color.org).

Events carry text from anywhere: control characters (newlines, ANSI escapes) are shown
escaped, so one event is always one line and cannot drive the terminal.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from typing import Final, TextIO

from numbat.collector.outputs import Batch, Output
from numbat.config import PrettylogOutputConfig
from numbat.event import Event
from numbat.server import ProcessContext

BOLD: Final = "\x1b[1m"
RESET: Final = "\x1b[0m"
STATUS_COLORS: Final = {
    "critical": "\x1b[31m",
    "warning": "\x1b[33m",
    "ok": "\x1b[32m",
    "unknown": "\x1b[35m",
}
# Shown in fixed places on the line; every other field is listed as k=v.
_PLACED: Final = frozenset(("time", "host", "name", "value", "status", "description"))

_ESCAPES: dict[int, str] = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


def clean(text: str) -> str:
    """Control characters escaped, so text can neither break the line nor steer the terminal.

    >>> clean("disk full\\n\\x1b[2J")
    'disk full\\\\n\\\\x1b[2J'
    """
    return text if text.isprintable() else text.translate(_ESCAPES)


def number(value: object) -> str:
    """A number for people: integers whole, floats to about six significant digits.

    >>> number(3), number(12.3456789), number(0.75), number(2500000.4), number(1e-7)
    ('3', '12.3457', '0.75', '2500000', '1e-07')
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return field(value)
    if isinstance(value, int):
        return str(value)
    text = f"{value:.6g}"
    if "e+" in text and math.isfinite(value) and abs(value) < 1e16:
        text = f"{value:.0f}"  # a big count reads better in full than as 2.5e+06
    return text


def field(value: object) -> str:
    """An extra field's value: quoted as JSON when it has spaces, quotes or ``=``.

    >>> field("/users"), field("a b"), field(True), field("")
    ('/users', '"a b"', 'true', '""')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return number(value)
    text = value if isinstance(value, str) else str(value)
    if not text or any(c.isspace() or c in '="' for c in text):
        # JSON escapes C0 controls; clean() then catches C1 ones such as CSI (U+009B).
        return clean(json.dumps(text, ensure_ascii=False))
    return clean(text)


def clock(time_ms: object) -> str:
    """``HH:MM:SS.mmm`` in local time; placeholders when the time is missing or absurd."""
    if isinstance(time_ms, bool) or not isinstance(time_ms, int | float):
        return "--:--:--.---"
    try:
        seconds, millis = divmod(int(time_ms), 1000)
        return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{millis:03d}"
    except (OverflowError, OSError, ValueError):
        return "??:??:??.???"


def format_event(event: Event, color: bool = False) -> str:
    """One event as one line, newline included.

    >>> format_event({"name": "web.requests", "value": 3, "host": "h1", "status": "critical",
    ...               "route": "/a b", "description": "slow\\nreplies"})
    '--:--:--.--- h1 web.requests=3 critical route="/a b" slow\\\\nreplies\\n'
    """
    name = clean(str(event.get("name", "?")))
    parts = [clock(event.get("time")), clean(str(event.get("host", "-")))]
    value = number(event.get("value", 1))
    parts.append(f"{BOLD}{name}{RESET}={value}" if color else f"{name}={value}")
    status = event.get("status")
    if status is not None:
        text = clean(str(status))
        code = STATUS_COLORS.get(text.lower()) if color else None
        parts.append(f"{code}{text}{RESET}" if code else text)
    parts += [f"{clean(str(k))}={field(v)}" for k, v in event.items() if k not in _PLACED]
    description = event.get("description")
    if description is not None and description != "":
        parts.append(clean(str(description)))
    return " ".join(parts) + "\n"


def _safe_line(event: Event, color: bool) -> str:
    try:
        return format_event(event, color)
    except Exception as exc:  # a value whose str() raises: say so, on one line
        return f"--:--:--.--- (unprintable event: {clean(repr(exc))})\n"


def wants_color(setting: str, stream: TextIO) -> bool:
    """``always``, ``never``, or ``auto``: a terminal, unless ``NO_COLOR`` is set."""
    if setting != "auto":
        return setting == "always"
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):  # closed or not a real file
        return False


class PrettylogOutput(Output):
    """Prints each event as a readable line, for development and for watching a host.

    Config::

        [[collector.outputs]]
        type = "prettylog"
        color = "auto"      # "always", "never", or "auto" (a terminal without NO_COLOR)
        stream = "stderr"   # or "stdout"

    Prints lines such as ``14:03:07.412 web-1 web.requests=3 ok route=/users``.
    """

    Options = PrettylogOutputConfig
    options: PrettylogOutputConfig

    def __init__(
        self, options: PrettylogOutputConfig, *, context: ProcessContext | None = None
    ) -> None:
        super().__init__(options, context=context)
        self._stream: TextIO | None = None
        self._color = False

    async def write(self, batch: Batch) -> None:
        if batch.events:
            # In a thread: a terminal scrolled back or a full pipe holds up this output
            # only, never the event loop; one write() per batch keeps the lines together.
            await asyncio.to_thread(self._print, batch.events)

    def _print(self, events: list[Event]) -> None:
        # Looked up each time: sys.stdout may have been replaced (tests, daemons).
        stream: TextIO | None = sys.stdout if self.options.stream == "stdout" else sys.stderr
        if stream is None:
            return
        color = self._wants_color(stream)
        text = "".join([_safe_line(event, color) for event in events])
        try:
            stream.write(text)
        except UnicodeEncodeError:  # e.g. an ASCII-only console
            encoding = stream.encoding or "ascii"
            stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
        stream.flush()

    def _wants_color(self, stream: TextIO) -> bool:
        if stream is not self._stream:  # decided once per stream, not once per event
            self._stream, self._color = stream, wants_color(self.options.color, stream)
        return self._color
