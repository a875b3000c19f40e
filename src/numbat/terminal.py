"""What ``numbat query`` and ``numbat incidents`` print: tables and sparklines (rich).

Every string here may come from an emitter (names, tags, messages): it is printed as
text, never read as rich markup.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from numbat.store import Bucket

SPARKS = "▁▂▃▄▅▆▇█"
SEVERITY = {"critical": 0, "warning": 1, "unknown": 2, "ok": 3}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration(text: str) -> int:
    """``90s``, ``15m``, ``1h``, ``7d``, ``1w`` (or ``500ms``) in ms; ValueError naming
    the text otherwise.

    >>> parse_duration("1h"), parse_duration("1.5s")
    (3600000, 1500)
    """
    found = _DURATION.match(text.strip())
    if not found or (ms := round(float(found[1]) * _UNIT_MS[found[2]])) <= 0:
        raise ValueError(f"{text!r} is not a duration such as 30s, 15m, 1h, 7d")
    return ms


def sparkline(values: Sequence[float | None]) -> str:
    """One character per value, ``▁`` (the lowest) to ``█`` (the highest); a space
    where there is no value.

    >>> sparkline([0, 5, 10, None])
    '▁▅█ '
    """
    known = [v for v in values if v is not None and math.isfinite(v)]
    if not known:
        return " " * len(values)
    low, high = min(known), max(known)
    span = high - low
    out = []
    for value in values:
        if value is None or not math.isfinite(value):
            out.append(" ")
        else:
            step = 0 if span == 0 else round((value - low) / span * (len(SPARKS) - 1))
            out.append(SPARKS[step])
    return "".join(out)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _time(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def series_table(title: str, groups: Mapping[str, Sequence[Bucket]]) -> Table:
    """A table of bucket start (UTC) by group (a column each: ``all``, or the value of
    the ``--by`` tag); an empty cell where a bucket had no point."""
    table = Table(title=Text(title), title_justify="left")
    table.add_column("time (UTC)")
    for name in groups:
        table.add_column(Text(name), justify="right")
    columns = list(groups.values())
    for row, bucket in enumerate(columns[0] if columns else []):
        cells = [Text(_number(col[row].value)) for col in columns]
        table.add_row(_time(bucket.start), *cells)
    return table


def spark_table(title: str, groups: Mapping[str, Sequence[Bucket]]) -> Table:
    """One line per group: its sparkline, last, min and max."""
    table = Table(title=Text(title), title_justify="left")
    for name in ("group", "graph", "last", "min", "max"):
        table.add_column(name, justify="left" if name in ("group", "graph") else "right")
    for name, buckets in groups.items():
        values = [b.value for b in buckets]
        known = [v for v in values if v is not None]
        last = known[-1] if known else None
        table.add_row(
            Text(name),
            Text(sparkline(values)),
            _number(last),
            _number(min(known) if known else None),
            _number(max(known) if known else None),
        )
    return table


def age(ms: int) -> str:
    """A duration in ms, short: ``9s``, ``4m12s``, ``1h05m``, ``2d03h``.

    >>> age(9_000), age(252_000), age(3_900_000), age(183_600_000)
    ('9s', '4m12s', '1h05m', '2d03h')
    """
    s = max(0, ms) // 1000
    if s >= 86_400:
        return f"{s // 86_400}d{s % 86_400 // 3_600:02d}h"
    if s >= 3_600:
        return f"{s // 3_600}h{s % 3_600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def incidents_table(incidents: Sequence[Mapping[str, Any]], now: int) -> Table | Text:
    """Open incidents, most severe first (then oldest): status, host, name, age,
    message and state (acked by whom, muted by which silence, flapping); "all is well"
    when there is none."""
    if not incidents:
        return Text("all is well: no open incident")
    table = Table(title=f"{len(incidents)} open incident{'s' * (len(incidents) != 1)}")
    for name in ("status", "host", "name", "age", "message", "state"):
        table.add_column(name)
    ordered = sorted(
        incidents, key=lambda i: (SEVERITY.get(str(i.get("status")), 9), i.get("fired_at", 0))
    )
    for item in ordered:
        state = []
        if item.get("acked_by"):
            state.append(f"acked by {item['acked_by']}")
        if item.get("muted_by"):
            state.append(f"muted ({item['muted_by']})")
        if item.get("flapping"):
            state.append("flapping")
        table.add_row(
            Text(str(item.get("status", ""))),
            Text(str(item.get("host", ""))),
            Text(str(item.get("name", ""))),
            age(now - int(item.get("fired_at") or now)),
            Text(str(item.get("message", ""))),
            Text(", ".join(state)),
        )
    return table


def console(width: int | None = None) -> Console:
    """A console for stdout: no markup or emoji read from data; colour only on a TTY."""
    return Console(width=width, markup=False, emoji=False, highlight=False, soft_wrap=False)
