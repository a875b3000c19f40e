"""``statsd://host:port``: statsd lines over UDP, one per datagram.

The line is ``name:value|type``, then ``|@rate`` for a sampled counter, then
``|#key:value,...`` DogStatsD tags from the event's other scalar fields. The type is
``g`` when the event has a ``value``, else ``c`` for ``count``, ``ms`` for ``timing``,
``s`` for ``set``, and ``name:1|c`` when it has none of them, as the original. An
event whose display hint (field ``type``, set by ``counter()`` and ``timing()``) is
``counter`` or ``timing`` sends its ``value`` as ``c`` or ``ms``, so a statsd server
counts it rather than taking it as a gauge.

Where the original wrote lines a statsd server would misread, this one sanitises:
punctuation and whitespace in tag keys become ``_`` (as the original), and so do the
characters that delimit a statsd line (``:|@#,`` and whitespace) in names and tag values.
Only the exact keys ``time value name timing set count rate`` are left out of the tags
(the original dropped any key merely containing one of them, such as ``hostname``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from numbat.emitter.udp import UDPTransport
from numbat.event import Event, Scalar

_NOT_TAGS = frozenset({"time", "value", "name", "timing", "set", "count", "rate"})
_KEY_CHARS = re.compile(r"""[`~!@#$%^&*()|+\-=?;:'",.<>{}\[\]\\/]|\s+""")
_LINE_CHARS = re.compile(r"[:|@#,]|\s+")


class StatsdTransport(UDPTransport):
    """Statsd (DogStatsD tags) over UDP.

    >>> from urllib.parse import urlsplit
    >>> from numbat.event import normalize
    >>> t = StatsdTransport("statsd://127.0.0.1:8125", urlsplit("statsd://127.0.0.1:8125"))
    >>> raw = {"name": "web.hits", "count": 3, "rate": 0.5, "route": "/a b"}
    >>> t.encode(normalize(raw), raw)
    b'web.hits:3|c|@0.5|#route:/a_b'
    """

    def encode(self, event: Event, raw: Mapping[str, Any]) -> bytes:
        return line(event, has_value=raw.get("value") is not None).encode("utf-8")


def line(event: Mapping[str, Scalar], *, has_value: bool = True) -> str:
    """The statsd line for a valid event; ``has_value``: did the caller give a value."""
    kind, value = _type_and_value(event, has_value)
    out = f"{_LINE_CHARS.sub('_', str(event['name']))}:{_js(value)}|{kind}"
    rate = event.get("rate")
    if rate is not None and kind == "c":
        out += f"|@{_js(rate)}"
    tags = [
        f"{_KEY_CHARS.sub('_', key)}:{_LINE_CHARS.sub('_', _js(val))}"
        for key, val in event.items()
        if key not in _NOT_TAGS
    ]
    if tags:
        out += "|#" + ",".join(tags)
    return out


_HINT_KINDS = {"counter": "c", "timing": "ms"}


def _type_and_value(event: Mapping[str, Scalar], has_value: bool) -> tuple[str, Scalar]:
    hinted = _HINT_KINDS.get(str(event.get("type")))
    if hinted and has_value:
        return hinted, event["value"]
    for key, kind in (("value", "g"), ("count", "c"), ("timing", "ms"), ("set", "s")):
        if key in event and (key != "value" or has_value):
            return kind, event[key]
    return "c", 1


def _js(val: Scalar) -> str:
    """Format a scalar as JavaScript's template strings do (``1.0`` -> ``1``, ``true``)."""
    if isinstance(val, bool):
        return "true" if val else "false"
    if isinstance(val, float) and val.is_integer() and abs(val) < 1e21:
        return str(int(val))
    return str(val)
