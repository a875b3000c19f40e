r"""InfluxDB 1.x line protocol: each event one line, ``measurement,tags fields time``.

The mapping is :mod:`numbat.store.points`'s; this module adds the text format, the
timestamps and a guard against runaway series cardinality. What follows was checked
against a real influxd 1.6.7 (``tests/store/test_lineprotocol.py`` writes and reads back).

Escaping
    * measurement: ``,`` and space get a backslash (``=`` and ``"`` need none there);
    * tag keys, tag values, field keys: ``,``, ``=`` and space get a backslash;
    * string field values (``description="..."``): in double quotes, with ``\`` and
      ``"`` preceded by a backslash. Newlines, tabs, NUL and every other character
      are written as they are and come back as they were;
    * ``value`` is ``repr(float(value))``: the shortest text Go parses back to the
      same float (``1.0``, ``0.1``, ``1e+22``).

What line protocol 1.x cannot carry, and what is written instead (:func:`stored_text`)
    * a newline in a tag value (a line ends at one; there is no escape for it):
      written as the two characters ``\n``;
    * a backslash right before ``,``, ``=``, space or ``"``, or at the very end, in the
      measurement, a tag key, a tag value or a field key: influxd either reads it as
      escaping the delimiter after it (the point is lost, or the line is cut in two),
      or unescapes it on the way back (for measurements, ``SHOW MEASUREMENTS`` and
      ``SELECT`` then disagree about the name, and ``SELECT`` finds nothing). Each is
      written as U+FF3C FULLWIDTH REVERSE SOLIDUS, which looks the same.
      Every other backslash is written as it is and comes back unchanged;
    * a measurement that begins with ``#``: influxd takes the line for a comment and
      drops it *without an error*; the ``#`` is written as U+FF03 FULLWIDTH NUMBER SIGN.

Timestamps
    In nanoseconds: ``time_ms * 1_000_000 + offset``. InfluxDB keeps one point per
    series and timestamp (a second write overwrites the first), so two events of a
    series in the same millisecond (a busy counter) need distinct offsets. The k-th
    point of a series within one millisecond gets ``offset = k * workers + worker``,
    so two collector worker processes never collide. Offsets are a function of the
    order of the events only, so rendering the same events again from a fresh renderer
    gives the same bytes, and a replayed batch overwrites its own points instead of
    adding copies. (Retries must resend the rendered bytes, as the spool does: rendering
    the same events twice with one renderer counts on from where it stopped.) An event
    older than its series' latest millisecond (two processes sending one series with
    clocks a little apart) takes an offset counted down from the top of the
    millisecond instead, so it cannot overwrite the points counted up from 0. (Each
    half holds ``500_000 // workers`` offsets per series and millisecond; past that
    they wrap.) The state is one small record per series, bounded (``cache_size``;
    when full, the series not written to in the last minute are forgotten, or all if
    that is not enough), as is the cache of rendered ``measurement,tags`` prefixes.

Long series keys
    influxd refuses a point whose series key (measurement and tags) passes 64 KiB;
    the longest tags of such a point are written as string fields instead.

Cardinality guard
    A tag whose values never repeat (a pid, a request id) makes every event a new
    series, and InfluxDB slows down and then refuses writes. Per measurement the
    renderer counts distinct series. When a new series would pass
    ``max_series_per_measurement``, the measurement's tag with the most distinct values
    is demoted: from then on, new series of that measurement carry it as a string field
    (``on_cardinality="field"``) or not at all (``"drop"``), and the measurement may
    take ``max_series_per_measurement`` more series before the next tag is demoted.
    Series written before keep their tags and keep flowing. Each demotion is logged
    once on ``numbat.store``, naming the measurement and the tag, and listed in
    :attr:`LineRenderer.cardinality_reports`; points written with a tag demoted or
    dropped are counted (:attr:`LineRenderer.demoted`, ``dropped_tags``). The counts
    are per renderer (one per collector worker process) and start from zero with it.
    A server counts across every writer, and may refuse first: the tags it refused new
    values of are demoted in every point of their measurement, any series
    (:meth:`LineRenderer.demote`, from :mod:`numbat.store.cardinality`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter
from typing import Final, Literal, NamedTuple

from numbat.event import Scalar, now_ms
from numbat.store.points import NUMBER_FIELDS, TEXT_FIELDS, PointMapper, is_heartbeat, scalar_text

log = logging.getLogger(__name__)

NS_PER_MS: Final = 1_000_000
# The last millisecond whose every nanosecond InfluxDB accepts (its time is an int64).
MAX_TIME_MS: Final = 9_223_372_036_853
# influxd refuses a point whose series key (measurement, tags and a field key) passes
# 65535 bytes; this leaves room for the longest field key.
MAX_PREFIX_BYTES: Final = 64_000
# Series records older than this (behind the newest series) go first when pruning.
LATE_WINDOW_MS: Final = 60_000

OnCardinality = Literal["field", "drop"]

_BAD_BACKSLASH = re.compile(r'\\(?=[ ,="]|\Z)')
_FULLWIDTH_BACKSLASH = "\uff3c"
_FULLWIDTH_HASH = "\uff03"


def _fix_backslashes(text: str) -> str:
    return _BAD_BACKSLASH.sub(_FULLWIDTH_BACKSLASH, text) if "\\" in text else text


def stored_text(text: str, part: Literal["measurement", "key", "tag_value"]) -> str:
    r"""What influxd stores (and returns) for ``text`` written as ``part`` of a line.

    Identical to ``text`` except for the few sequences line protocol 1.x cannot carry
    (see the module documentation); a store that looks series up by tag needs this.

    >>> stored_text("a\\b", "key"), stored_text("two\nlines", "tag_value")
    ('a\\b', 'two\\nlines')
    >>> stored_text("C:\\dir\\", "tag_value") == "C:\\dir\uff3c"
    True
    >>> stored_text("#hash", "measurement") == "\uff03hash"
    True
    """
    if part == "tag_value" and "\n" in text:
        text = text.replace("\n", "\\n")
    text = _fix_backslashes(text)
    if part == "measurement" and text.startswith("#"):
        text = _FULLWIDTH_HASH + text[1:]
    return text


def escape_measurement(name: str) -> str:
    r"""A measurement as line protocol writes it.

    >>> print(escape_measurement("web requests,total=1"))
    web\ requests\,total=1
    """
    return stored_text(name, "measurement").replace(",", "\\,").replace(" ", "\\ ")


def escape_key(key: str) -> str:
    r"""A tag key or field key as line protocol writes it.

    >>> print(escape_key("a b,c=d"))
    a\ b\,c\=d
    """
    return _escape_tag_chars(_fix_backslashes(key))


def escape_tag_value(value: str) -> str:
    r"""A tag value as line protocol writes it.

    >>> print(escape_tag_value('GET /a?x=1, "ok"'))
    GET\ /a?x\=1\,\ "ok"
    """
    return _escape_tag_chars(stored_text(value, "tag_value"))


def _escape_tag_chars(text: str) -> str:
    return text.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def quote_string(text: str) -> str:
    r"""A string field value as line protocol writes it: quoted, ``\`` and ``"`` escaped.

    >>> print(quote_string('say "hi"\\now'))
    "say \"hi\"\\now"
    """
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class RenderResult(NamedTuple):
    """What :meth:`LineRenderer.render` made: the lines, and what happened to the events.

    ``skipped``: events not written (heartbeats, no name, a time InfluxDB cannot
    store); ``demoted``: points written with a tag moved to a field or left out.
    """

    data: bytes
    points: int
    skipped: int
    demoted: int


class CardinalityReport(NamedTuple):
    """A tag the cardinality guard demoted: from now on new series of ``measurement``
    carry ``tag`` as a field (``action="field"``) or not at all (``"drop"``)."""

    measurement: str
    tag: str
    series: int
    values: int
    action: OnCardinality


class _Series:
    """One series as written: its rendered prefix and where its timestamps stand."""

    __slots__ = ("last_ms", "late", "next", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.last_ms = -1
        self.next = 0  # the ordinal of the next point at last_ms
        self.late = 0  # points so far older than last_ms


class _Entry:
    """One combination of tag values as events carry it, and how it is written."""

    __slots__ = ("changed", "demoted", "dropped", "head", "moved", "series")

    def __init__(self, series: _Series, moved: list[_Tag], dropped: bool) -> None:
        self.series = series
        self.head = f"{series.prefix} value="
        # The tags written as fields, rendered: ``,key="value"``.
        self.moved = "".join(f",{t.escaped_key}={quote_string(t.value)}" for t in moved)
        self.demoted = bool(moved)
        self.dropped = dropped
        self.changed = self.demoted or dropped  # counted by render (or, for _SKIP: skipped)


# The entry of events that are not written: no name, or a heartbeat (unless configured).
_SKIP = _Entry(_Series(""), [], False)
_SKIP.changed = True


class _Shape:
    """The keys of events, in their order: which are tags, whether any is a field.

    Events of one shape are looked up in the cache by their name and tag values alone
    (``(shape, values)``), which is cheaper than :func:`_cache_key`. Python holds
    ``True``, ``1`` and ``1.0`` equal, so once a shape meets a tag value that is not a
    string, its events are looked up by :func:`_cache_key` (which keeps the types).
    """

    __slots__ = ("fields", "mixed", "values")

    def __init__(self, keys: tuple[str, ...], not_tags: frozenset[str], fields: set[str]) -> None:
        # The name alone, or a tuple of the name and the tag values; no name: None.
        tags = [key for key in keys if key not in not_tags]
        self.values: Callable[[Mapping[str, Scalar]], object] = (
            itemgetter("name", *tags) if "name" in keys else _no_name
        )
        self.fields = not fields.isdisjoint(keys)
        self.mixed = False


def _no_name(event: Mapping[str, Scalar]) -> None:
    return None


class _Tag(NamedTuple):
    key: str
    value: str
    escaped_key: str
    escaped_value: str


class _Measurement:
    """The cardinality guard's view of one measurement."""

    __slots__ = ("demoted", "limit", "series", "values")

    def __init__(self, limit: int) -> None:
        self.series: set[int] = set()  # hashes of the prefixes written
        self.values: dict[str, set[int]] = {}  # tag key -> hashes of its values
        self.demoted: set[str] = set()
        self.limit = limit  # series count at which the next tag is demoted

    def admit(self, prefix: str, tags: list[_Tag]) -> None:
        self.series.add(hash(prefix))
        for tag in tags:
            values = self.values.get(tag.key)
            if values is not None:
                values.add(hash(tag.value))
            elif tag.key not in self.demoted:
                self.values[tag.key] = {hash(tag.value)}


class LineRenderer:
    r"""Renders events to InfluxDB 1.x line protocol (see the module documentation).

    >>> renderer = LineRenderer()
    >>> event = {"name": "web.requests", "value": 1, "time": 1_700_000_000_000,
    ...          "host": "a b", "description": 'said "hi"'}
    >>> result = renderer.render([event, event, {"name": "web.heartbeat", "time": 1}])
    >>> print(result.data.decode(), end="")
    web.requests,host=a\ b value=1.0,description="said \"hi\"" 1700000000000000000
    web.requests,host=a\ b value=1.0,description="said \"hi\"" 1700000000000000001
    >>> result.points, result.skipped
    (2, 1)
    """

    def __init__(
        self,
        *,
        text_fields: Iterable[str] = TEXT_FIELDS,
        number_fields: Iterable[str] = NUMBER_FIELDS,
        write_heartbeats: bool = False,
        max_series_per_measurement: int = 100_000,
        on_cardinality: OnCardinality = "field",
        worker: int = 0,
        workers: int = 1,
        cache_size: int = 100_000,
        now_ms: Callable[[], int] = now_ms,
    ) -> None:
        if not 1 <= workers <= NS_PER_MS // 4 or not 0 <= worker < workers:
            raise ValueError(
                f"worker {worker} of {workers}: need 0 <= worker < workers <= {NS_PER_MS // 4}"
            )
        if max_series_per_measurement < 1 or cache_size < 1:
            raise ValueError("max_series_per_measurement and cache_size must be positive")
        if on_cardinality not in ("field", "drop"):
            raise ValueError(f"on_cardinality: 'field' or 'drop', not {on_cardinality!r}")
        self.mapper = PointMapper(
            text_fields=text_fields,
            number_fields=number_fields,
            write_heartbeats=write_heartbeats,
            clock=now_ms,
        )
        self.max_series_per_measurement = max_series_per_measurement
        self.on_cardinality: OnCardinality = on_cardinality
        self.worker = worker
        self.workers = workers
        self.cache_size = cache_size
        # Counted over the renderer's life, for the collector's stats.
        self.points = 0
        self.skipped = 0
        self.demoted = 0  # points written with a tag moved to a field
        self.dropped_tags = 0  # points written with a tag left out
        self.cardinality_reports: list[CardinalityReport] = []
        # Tags servers refused new values of (numbat.store.cardinality): measurement ->
        # tag keys, both as influxd names them (stored_text); demoted in every point.
        self.server_demotions: dict[str, frozenset[str]] = {}
        self._slots = NS_PER_MS // workers  # distinct offsets this worker has per ms
        self._cache: dict[tuple[object, ...], _Entry] = {}
        self._shapes: dict[tuple[str, ...], _Shape] = {}
        self._series: dict[str, _Series] = {}
        self._measurements: dict[str, _Measurement] = {}
        self._text = [(key, f",{escape_key(key)}=") for key in self.mapper.text_fields]
        self._numbers = [(key, f",{escape_key(key)}=") for key in self.mapper.number_fields]
        self._field_keys = {*self.mapper.text_fields, *self.mapper.number_fields}

    def render(self, events: Iterable[Mapping[str, Scalar]]) -> RenderResult:
        """Render the events that should be stored; one line each, in order."""
        # The per-event work is inlined here: it is most of what the collector's
        # InfluxDB output costs.
        lines: list[str] = []
        add = lines.append
        changes: list[_Entry] = []
        skipped = 0
        cache, shapes, not_tags = self._cache, self._shapes, self.mapper.not_tags
        clock, fields_of = self.mapper.clock, self._fields
        workers, worker = self.workers, self.worker
        half, top = self._slots // 2, self._slots - 1
        for event in events:
            # The time in ms; one InfluxDB cannot store is skipped.
            when = event.get("time")
            if type(when) is not int:
                when = clock()
            if not 0 <= when <= MAX_TIME_MS:
                skipped += 1
                continue
            # How the series is written: cached by the event's keys, name and tag values.
            keys = tuple(event)
            shape = shapes.get(keys) or self._shape(keys)
            key = _cache_key(event, not_tags) if shape.mixed else (shape, shape.values(event))
            entry = cache.get(key)
            if entry is None:
                entry = self._miss(event, key, shape)
            if entry.changed:
                if entry is _SKIP:  # no name, or a heartbeat
                    skipped += 1
                    continue
                changes.append(entry)
            # The timestamp in ns, with this point's offset within its series' millisecond.
            series = entry.series
            last = series.last_ms
            if when > last:
                series.last_ms = when
                series.next = 1
                ns = when * NS_PER_MS + worker
            elif when == last:
                ordinal = series.next
                series.next = ordinal + 1
                slot = ordinal if ordinal < half else ordinal % half
                ns = when * NS_PER_MS + slot * workers + worker
            else:
                # Late: counted down from the top, clear of the ordinals counted up from 0.
                late = series.late
                series.late = late + 1
                ns = when * NS_PER_MS + (top - late % half) * workers + worker
            value = float(event.get("value", 1))
            if shape.fields:
                add(f"{entry.head}{value!r}{entry.moved}{fields_of(event)} {ns}\n")
            else:
                add(f"{entry.head}{value!r}{entry.moved} {ns}\n")
        self._count(len(lines), skipped, changes)
        data = "".join(lines).encode("utf-8", "replace")
        return RenderResult(data, len(lines), skipped, len(changes))

    def _fields(self, event: Mapping[str, Scalar]) -> str:
        """The text and number fields of ``event``, rendered: ``,description="..."``."""
        fields = ""
        for field, head in self._text:
            val = event.get(field)
            if val is not None:
                text = val if type(val) is str else scalar_text(val)
                text = text.replace("\\", "\\\\").replace('"', '\\"')
                fields += f'{head}"{text}"'
        for field, head in self._numbers:
            val = event.get(field)
            if type(val) is int or type(val) is float:
                fields += f"{head}{float(val)!r}"
        return fields

    def _count(self, points: int, skipped: int, changes: list[_Entry]) -> None:
        self.points += points
        self.skipped += skipped
        for entry in changes:
            self.demoted += entry.demoted
            self.dropped_tags += entry.dropped

    # -- the first event of a combination of tag values: the slow path ----------------

    def _heartbeat(self, name: str) -> bool:
        return not self.mapper.write_heartbeats and is_heartbeat(name)

    def _shape(self, keys: tuple[str, ...]) -> _Shape:
        if len(self._shapes) >= self.cache_size:
            self._shapes.clear()
        shape = self._shapes[keys] = _Shape(keys, self.mapper.not_tags, self._field_keys)
        return shape

    def _miss(self, event: Mapping[str, Scalar], key: tuple[object, ...], shape: _Shape) -> _Entry:
        """The entry of an event not found in the cache under ``key``."""
        name = event.get("name")
        if type(name) is not str or not name or self._heartbeat(name):
            self._remember(key, _SKIP)
            return _SKIP
        values = key[1]
        if not shape.mixed and type(values) is tuple and any(type(v) is not str for v in values):
            shape.mixed = True  # see _Shape
            key = _cache_key(event, self.mapper.not_tags)
            entry = self._cache.get(key)
            if entry is not None:
                return entry
        return self._entry(event, key)

    def _entry(self, event: Mapping[str, Scalar], cache_key: tuple[object, ...]) -> _Entry:
        name = str(event["name"])
        tags = [
            _Tag(key, val, escape_key(key), escape_tag_value(val))
            for key, val in self.mapper.tags(event)
        ]
        moved: list[_Tag] = []
        dropped = self._server_demoted(name, tags, moved)
        self._fit(name, tags, moved)
        dropped = self._guard(name, tags, moved) or dropped
        prefix = _prefix(name, tags)
        series = self._series.get(prefix)
        if series is None:
            series = self._new_series(prefix)
        entry = _Entry(series, moved, dropped)
        self._remember(cache_key, entry)
        return entry

    def _remember(self, key: tuple[object, ...], entry: _Entry) -> None:
        if len(self._cache) >= self.cache_size:
            self._cache.clear()  # rebuilt on demand; the series records survive
        self._cache[key] = entry

    def _new_series(self, prefix: str) -> _Series:
        if len(self._series) >= self.cache_size:
            self._prune()
        series = self._series[prefix] = _Series(prefix)
        return series

    def _prune(self) -> None:
        """Forget the series not written to lately (all of them if that is not enough).

        Only a later point of a forgotten series in the same millisecond as its last
        one could then reuse an offset, overwriting that point.
        """
        newest = max((series.last_ms for series in self._series.values()), default=0)
        horizon = newest - LATE_WINDOW_MS
        kept = {p: s for p, s in self._series.items() if s.last_ms >= horizon}
        self._series = kept if len(kept) < self.cache_size * 3 // 4 else {}
        self._cache.clear()  # its entries point at the records just forgotten

    def _fit(self, name: str, tags: list[_Tag], moved: list[_Tag]) -> None:
        """Move the longest tags to fields until the series key is short enough for influxd."""
        size = len(_prefix(name, tags).encode())
        while size > MAX_PREFIX_BYTES and tags:
            longest = max(tags, key=lambda t: len(t.escaped_key) + len(t.escaped_value))
            tags.remove(longest)
            moved.append(longest)
            size = len(_prefix(name, tags).encode())

    def demote(self, measurement: str, tag: str) -> bool:
        """Demote ``tag`` of ``measurement`` in every point rendered from now on, of
        any series (as ``on_cardinality`` says: a field, or left out), because a server
        refused its new values; both named as influxd names them (:func:`stored_text`).
        True if it was not demoted yet."""
        demoted = self.server_demotions.get(measurement, frozenset())
        if tag in demoted:
            return False
        self.server_demotions[measurement] = demoted | {tag}
        self._cache.clear()  # its entries still carry the tag
        return True

    def _server_demoted(self, name: str, tags: list[_Tag], moved: list[_Tag]) -> bool:
        """Demote the tags servers refused (:meth:`demote`); True if one was dropped."""
        if not self.server_demotions:
            return False
        demoted = self.server_demotions.get(stored_text(name, "measurement"), frozenset())
        dropped = False
        for tag in [t for t in tags if stored_text(t.key, "key") in demoted]:
            dropped |= self._demote_tag(tag, tags, moved)
        return dropped

    def _guard(self, name: str, tags: list[_Tag], moved: list[_Tag]) -> bool:
        """The cardinality guard: demote a tag of a new series past the limit; True if dropped."""
        state = self._measurements.get(name)
        if state is None:
            state = self._measurements[name] = _Measurement(self.max_series_per_measurement)
        prefix = _prefix(name, tags)
        if hash(prefix) in state.series:
            return False  # a series written before keeps its tags
        dropped = False
        for tag in [t for t in tags if t.key in state.demoted]:
            dropped |= self._demote_tag(tag, tags, moved)
        prefix = _prefix(name, tags)
        if hash(prefix) in state.series:
            return dropped
        if len(state.series) >= state.limit and state.values:
            growing = max(state.values, key=lambda key: (len(state.values[key]), key))
            self._report(name, state, growing)
            for tag in [t for t in tags if t.key == growing]:
                dropped |= self._demote_tag(tag, tags, moved)
            prefix = _prefix(name, tags)
            if hash(prefix) in state.series:
                return dropped
        state.admit(prefix, tags)
        return dropped

    def _demote_tag(self, tag: _Tag, tags: list[_Tag], moved: list[_Tag]) -> bool:
        tags.remove(tag)
        if self.on_cardinality == "drop":
            return True
        moved.append(tag)
        return False

    def _report(self, name: str, state: _Measurement, tag: str) -> None:
        values = len(state.values.pop(tag, ()))
        state.demoted.add(tag)
        # Room for as many new series again before the next tag goes: the series of
        # the other tags' values, now without this one, are new too.
        state.limit = len(state.series) + self.max_series_per_measurement
        report = CardinalityReport(name, tag, len(state.series), values, self.on_cardinality)
        self.cardinality_reports.append(report)
        what = "a field" if self.on_cardinality == "field" else "left out"
        log.warning(
            "measurement %r has %d series, the limit; its tag %r (%d distinct values) is "
            "%s in new series from now on; existing series are unchanged",
            name,
            report.series,
            tag,
            values,
            what,
        )


def _cache_key(event: Mapping[str, Scalar], not_tags: frozenset[str]) -> tuple[object, ...]:
    """The name and each tag key and raw value, with the type of every non-string.

    The type keeps apart values that Python holds equal but that are different tags
    (``True``, ``1`` and ``1.0``); a float is keyed by its text (``0.0`` and ``-0.0``).
    """
    key: list[object] = [event["name"]]
    for field, val in event.items():
        if field not in not_tags:
            kind = type(val)
            if kind is str:
                key += (field, val)
            else:
                key += (field, kind, repr(val) if kind is float else val)
    return tuple(key)


def _prefix(name: str, tags: list[_Tag]) -> str:
    """``measurement,k=v,...`` with the tags sorted by escaped key, as influxd sorts them."""
    parts = [escape_measurement(name)]
    last = None
    for tag in sorted(tags, key=lambda t: t.escaped_key):
        if tag.escaped_key != last:  # keys meet only through a replaced backslash: keep one
            parts.append(f"{tag.escaped_key}={tag.escaped_value}")
            last = tag.escaped_key
    return ",".join(parts)
