"""Small adapters over parts other helpers own, so the dashboard works before and after
they land: display hints (``numbat.hints``), the Store's percentile and rate aggregates
and ``series_info``, and Grafana links (``numbat.grafana.link``)."""

from __future__ import annotations

import fnmatch
import importlib
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from numbat.store import AGGREGATES

HINTS = ("counter", "gauge", "timing", "annotation")
_TRUE = {"true", "1", "yes", "on"}


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def hint_of(fields: Mapping[str, object]) -> str | None:
    """A series' own hint: its ``type`` tag naming one of HINTS, or a flag tag
    (``counter=true``); None when it carries none."""
    hints = _module("numbat.hints")
    if hints is not None:
        found: str | None = hints.hint_of(fields)
        return found
    kind = fields.get("type")
    if isinstance(kind, str) and kind in HINTS:
        return kind
    for hint in HINTS:
        flag = fields.get(hint)
        if flag is True or (isinstance(flag, str) and flag.lower() in _TRUE):
            return hint
    return None


def guess(values: Sequence[float], has_text: bool) -> str:
    """No hint: a value that never decreases and moved is a counter; no value (text
    only) an annotation; else a gauge."""
    hints = _module("numbat.hints")
    if hints is not None:
        found: str = hints.guess(values, has_text)
        return found
    if not values:
        return "annotation" if has_text else "gauge"
    rising = all(b >= a for a, b in itertools.pairwise(values))
    return "counter" if rising and values[-1] > values[0] else "gauge"


def configured_hint(measurement: str, overrides: Mapping[str, str]) -> str | None:
    """The ``[dashboard.hints]`` hint of ``measurement``: the first glob that matches."""
    for glob, hint in overrides.items():
        if fnmatch.fnmatchcase(measurement, glob):
            return hint
    return None


def has_aggregate(name: str) -> bool:
    """Whether the Store offers ``name`` (``p99``, ``rate``) as an aggregate."""
    return name in AGGREGATES


def grafana_link() -> Callable[..., str] | None:
    """``numbat.grafana.link(grafana_url, datasource, measurement, tags, start, end)``,
    or None while that module is not there (graphs then have no link)."""
    grafana = _module("numbat.grafana")
    link = getattr(grafana, "link", None)
    return link if callable(link) else None
