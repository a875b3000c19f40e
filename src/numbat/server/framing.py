"""Bytes off the wire -> events: line framing with a size cap, parsing, rejection reasons.

Two framings, one cap: a stream (tcp, unix) is cut into lines by :class:`LineFramer`;
a message (a UDP datagram, a websocket message) is cut by :func:`split_message`. Both
drop a line over the cap alone and keep the good lines beside it.

The framer keeps at most one partial line (bounded by ``max_line``) between reads, finds
newlines with ``bytes`` methods (linear in the input, whatever its shape) and skips an
overlong line up to its newline without buffering it.
"""

from __future__ import annotations

from collections.abc import Callable

from orjson import JSONDecodeError as _JSONError
from orjson import loads as _loads

from numbat.errors import EventError
from numbat.event import Event, normalize, now_ms, parse

Reject = Callable[[str, str, bytes], None]
"""``reject(reason, message, sample)``: count and (rate-limited) log one bad input."""
Converted = Callable[[str], None]
"""``converted(unit)``: an event's time was in ``unit`` (s, us, ns) and is now ms."""


class LineFramer:
    """Splits a byte stream into complete lines of at most ``max_line`` bytes.

    >>> framer = LineFramer(max_line=8)
    >>> framer.feed(b'{"a":1}\\n{"b"'), framer.feed(b':2}\\n')
    ([b'{"a":1}'], [b'{"b":2}'])
    >>> framer.feed(b"x" * 20 + b"\\nok\\n"), framer.overlong
    ([b'ok'], 1)
    """

    __slots__ = ("_partial", "_skipping", "max_line", "overlong")

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self.overlong = 0
        # A bytearray grows in place: a line arriving a byte at a time costs linear time.
        self._partial = bytearray()
        self._skipping = False

    @property
    def in_line(self) -> bool:
        """A line has begun and not ended: buffered, or an overlong one being skipped."""
        return self._skipping or bool(self._partial)

    @property
    def buffered(self) -> int:
        """Bytes held for the incomplete last line (never more than ``max_line``)."""
        return len(self._partial)

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the lines completed by them (without newlines)."""
        if self._skipping:
            cut = data.find(b"\n")
            if cut < 0:
                return []
            data = data[cut + 1 :]
            self._skipping = False
        last = data.rfind(b"\n")
        if last < 0:
            if len(self._partial) + len(data) > self.max_line:
                self._skip()
            else:
                self._partial += data
            return []
        if self._partial:
            self._partial += data[:last]
            head = bytes(self._partial)
            self._partial.clear()
        else:
            head = data[:last]
        rest = data[last + 1 :]
        if len(rest) > self.max_line:
            self._skip()
        else:
            self._partial += rest
        if len(head) <= self.max_line:
            return head.split(b"\n")
        lines, overlong = split_message(head, self.max_line)
        self.overlong += overlong
        return lines

    def finish(self) -> bytes:
        """At end of stream: the unterminated last line, if any (empty if none)."""
        rest = bytes(self._partial)
        self._partial.clear()
        return rest

    def _skip(self) -> None:
        """The current line is over the cap: count it, forget it, skip to its newline."""
        self.overlong += 1
        self._partial.clear()
        self._skipping = True


def split_message(data: bytes, limit: int) -> tuple[list[bytes], int]:
    """One message's lines, without those over ``limit`` bytes, and how many those were.

    The cap is per line (``max_line_bytes``): good lines beside an overlong one are kept.

    >>> split_message(b'{"a":1}\\n' + b"x" * 9 + b'\\n{"b":2}', limit=8)
    ([b'{"a":1}', b'{"b":2}'], 1)
    """
    lines = data.split(b"\n")
    if len(data) <= limit:
        return lines, 0
    kept = [line for line in lines if len(line) <= limit]
    return kept, len(lines) - len(kept)


def parse_lines(
    lines: list[bytes],
    reject: Reject,
    clock: Callable[[], int] = now_ms,
    converted: Converted | None = None,
) -> list[Event]:
    """Parse and validate complete lines; report each bad one through ``reject``, and
    each time converted to ms from another unit through ``converted``."""
    events: list[Event] = []
    append = events.append
    for line in lines:
        if not line:
            continue
        try:
            obj = _loads(line)
        except _JSONError:
            if line.strip() and (event := _parse_strictly_rejected(line, reject, clock, converted)):
                append(event)
            continue
        if type(obj) is not dict:
            reject("not_object", f"expected a JSON object, got {type(obj).__name__}", line)
            continue
        try:
            append(normalize(obj, clock=clock, owned=True, on_time_unit=converted))
        except EventError as exc:
            reject(exc.reason, str(exc), line)
    return events


def _parse_strictly_rejected(
    line: bytes, reject: Reject, clock: Callable[[], int], converted: Converted | None
) -> Event | None:
    """A line orjson refused, parsed again by the event model's own reader.

    orjson refuses some JSON that :func:`numbat.event.parse` reads and then judges (a
    lone surrogate escape ``"\\ud800"``, a number such as ``1e400``): that reader gives
    each line the reason docs/events.md names (``not_utf8``, ``bad_value``), the same
    as every other path into the event model. Only bad lines pay for it.
    """
    try:
        return parse(line, clock=clock, on_time_unit=converted)
    except EventError as exc:
        reject(exc.reason, str(exc), line)
        return None
