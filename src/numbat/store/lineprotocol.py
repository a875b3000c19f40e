r"""InfluxDB 1.x line protocol: each event one line, ``measurement,tags fields time``.

The mapping is :mod:`numbat.store.points`'s; this module adds the text format, the
timestamps and a guard against runaway series cardinality. What follows was checked
against a real influxd 1.6.7 (``tests/store/test_lineprotocol.py`` writes and reads back).

Escaping
    * measurement: ``,`` and space get a backslash (``=`` and ``"`` need none there);
    * tag keys, tag values, field keys: ``,``, ``=`` and space get a backslash;
    * string field values (``description="..."``): in double quotes, with ``\`` and
      ``"`` preceded by a backslash. Newlines, tabs, NUL and every other character
      are written as they are and come back as they were. A newline in a string does
      not end the line (influxd ends one at a newline outside quotes), so a payload is
      cut between points where :func:`line_ends` says, or where
      :attr:`RenderResult.ends` does;
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
    series and timestamp (a second write overwrites the first), so events of a series
    in one millisecond (a busy counter) need distinct offsets. The renderer counts the
    points it writes in each millisecond, of whatever series: the k-th takes slot
    ``base + k`` (modulo ``1_000_000 // workers`` slots) and ``offset = slot * workers +
    worker``, so two collector worker processes never collide either.

    ``base`` comes from the renderer's ``generation`` (:func:`generation_base`). The
    InfluxDB output counts its starts on disk and gives each a new generation, so the
    points a restarted (or reloaded) output writes in a millisecond start 38% of the
    slots or more away from those of the life before, and an event in the same
    millisecond as one written before the restart does not overwrite it; the
    embedded store keeps both as well. Offsets are a function of the generation and
    the order of the events only: rendering the same events with a renderer of the
    same generation gives the same bytes, and as retries resend the rendered bytes
    (the spool does), a replayed batch overwrites its own points instead of adding
    copies.

    The counts are kept for the latest ``counted_ms`` distinct milliseconds (120,000:
    two minutes at one point a millisecond, or more); a point in an older millisecond
    (a backlog sent late) takes the next of a count shared by all such points, down
    from ``base - 1``, clear of the slots counted up. Each direction has half of the
    slots (500,000 with one worker) and wraps past them; the state is one small dict
    entry per millisecond, whatever the number of series.

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

Cost
    An event whose name and tag values were seen before costs one dict lookup; one seen
    for the first time (a new series, or a new value of a demoted tag) builds its series
    key in one pass over its tags, about three times as much, and is cached only when it
    comes again, so a tag of unique values does not churn the cache. The cache holds
    ``cache_size`` entries in two halves, of strings and ints only (which the garbage
    collector stops tracking), and is never cleared or scanned at once: the half that
    goes is freed two entries at a time. So :meth:`LineRenderer.render` takes time in
    proportion to the events it is given, with no pause of its own.
"""

from __future__ import annotations

import heapq
import logging
import re
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import accumulate, pairwise
from operator import itemgetter
from typing import Any, Final, Literal, NamedTuple

from numbat.event import Scalar, now_ms
from numbat.store.points import NUMBER_FIELDS, TEXT_FIELDS, PointMapper, is_heartbeat, scalar_text

log = logging.getLogger(__name__)

NS_PER_MS: Final = 1_000_000
# The last millisecond whose every nanosecond InfluxDB accepts (its time is an int64).
MAX_TIME_MS: Final = 9_223_372_036_853
# influxd refuses a point whose series key (measurement, tags and a field key) passes
# 65535 bytes; this leaves room for the longest field key.
MAX_PREFIX_BYTES: Final = 64_000
# The distinct milliseconds whose points the tie-breaker counts (two minutes' worth).
COUNTED_MS: Final = 120_000
# The cardinality guard's sets are split in this many by hash (a power of two).
_SHARDS: Final = 16
_MASK: Final = _SHARDS - 1
# Values of demoted tags remembered per measurement, to tell one that comes again.
RECENT_VALUES: Final = 4_096
# The golden section: successive generations' offsets start as far apart as can be.
_GOLDEN: Final = (5**0.5 - 1) / 2

OnCardinality = Literal["field", "drop"]

# Whether a tag value needs more than to be written as it is (not None: it does).
_needs_escape = re.compile(r"[ ,=\\\n]").search
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
    ``ends``: where each point's line ends in ``data`` (the offset after its newline),
    when a string field holds a newline (then not every newline ends a point); None
    when every newline ends one, the common case (see :class:`PointEnds`).
    """

    data: bytes
    points: int
    skipped: int
    demoted: int
    ends: tuple[int, ...] | None = None


class CardinalityReport(NamedTuple):
    """A tag the cardinality guard demoted: from now on new series of ``measurement``
    carry ``tag`` as a field (``action="field"``) or not at all (``"drop"``)."""

    measurement: str
    tag: str
    series: int
    values: int
    action: OnCardinality


# A tag as written: (key, value as text, escaped key, escaped value). A plain tuple: a
# NamedTuple costs 6x as much to make, and the slow path makes one per tag.
_Tag = tuple[str, str, str, str]

# How the events of one combination of name and tag values are written (the cache's
# values): ("measurement,tags value=", the demoted tags as fields, changes). Strings
# and an int only (the keys too), so the garbage collector stops tracking them once it
# has seen them; a cache of objects (100,000 series) made each full collection hold
# the loop for 0.1 s.
_Entry = tuple[str, str, int]
_DEMOTED: Final = 1  # changes: a tag written as a field
_DROPPED: Final = 2  # a tag left out
_SKIPPED: Final = 4  # not written at all

# The entry of events that are not written: no name, or a heartbeat (unless configured).
_SKIP: Final[_Entry] = ("", "", _SKIPPED)


class _Shape:
    """The keys of events, in their order: which are tags, whether any is a field.

    Events of one shape are looked up in the cache by their name and tag values alone
    (``(shape id, values)``), which is cheaper than :func:`_cache_key`. Python holds
    ``True``, ``1`` and ``1.0`` equal, so once a shape meets a tag value that is not a
    string, its events are looked up by :func:`_cache_key` (which keeps the types).
    """

    __slots__ = ("clash", "fields", "id", "mixed", "tags", "values")

    def __init__(
        self, ident: int, keys: tuple[str, ...], not_tags: frozenset[str], fields: set[str]
    ) -> None:
        # In cache keys instead of the shape: a key of ints and strings goes untracked.
        self.id = ident
        # The name alone, or a tuple of the name and the tag values; no name: None.
        tags = [key for key in keys if key not in not_tags]
        self.values: Callable[[Mapping[str, Scalar]], object] = (
            itemgetter("name", *tags) if "name" in keys else _no_name
        )
        self.fields = not fields.isdisjoint(keys)
        self.mixed = False
        # The tag keys and their escaped forms in the order of a series key: influxd
        # sorts by escaped key (equal escaped keys, from a replaced backslash: by key).
        self.tags = sorted(((key, escape_key(key)) for key in tags), key=lambda t: (t[1], t[0]))
        escaped = [escaped_key for _, escaped_key in self.tags]
        self.clash = len(set(escaped)) < len(escaped)  # two keys that escape alike


def _no_name(event: Mapping[str, Scalar]) -> None:
    return None


class _Measurement:
    """One measurement: its escaped name, and the cardinality guard's view of it.

    The guard's sets (the series keys written, each tag's values) are split in _SHARDS
    by hash: a set that doubles copies itself, and one of 80,000 entries took ~5 ms."""

    __slots__ = ("count", "demoted", "escaped", "limit", "recent", "series", "server", "values")

    def __init__(self, name: str, limit: int, server: frozenset[str]) -> None:
        self.escaped = escape_measurement(name)
        self.server = server  # its tags a server refused (LineRenderer.demote)
        self.series = _shards()  # hashes of the series keys written
        self.count = 0  # series written
        self.values: defaultdict[str, list[set[Any]]] = defaultdict(_shards)  # tag -> values
        # tag key -> the values of it series were written with before it was demoted
        self.demoted: dict[str, list[set[Any]]] = {}
        self.limit = limit  # series count at which the next tag is demoted
        self.recent: set[str] = set()  # values of demoted tags seen lately

    def written(self, prefix: str) -> bool:
        hashed = hash(prefix)
        return hashed in self.series[hashed & _MASK]

    def first_sight(self, value: str) -> bool:
        """Whether a value of a demoted tag is new lately (among the last RECENT_VALUES)."""
        recent = self.recent
        if value in recent:
            return False
        if len(recent) >= RECENT_VALUES:
            recent = self.recent = set()  # small: freed at once in well under a ms
        recent.add(value)
        return True

    def admit(self, prefix: str, tags: list[_Tag]) -> None:
        hashed = hash(prefix)
        self.series[hashed & _MASK].add(hashed)
        self.count += 1
        values = self.values
        for key, text, _, _ in tags:
            values[key][hash(text) & _MASK].add(text)

    def distinct(self, key: str) -> int:
        return sum(map(len, self.values[key]))


def _shards() -> list[set[Any]]:
    return [set() for _ in range(_SHARDS)]


class LineRenderer:
    r"""Renders events to InfluxDB 1.x line protocol (see the module documentation).

    ``generation``: which life of this worker's renderer this is (0, 1, 2, ...; the
    InfluxDB output counts its starts on disk): it places the offsets, so the points
    of two lives in one millisecond do not share a nanosecond (see the module).

    >>> renderer = LineRenderer()
    >>> event = {"name": "web.requests", "value": 1, "time": 1_700_000_000_000,
    ...          "host": "a b", "description": 'said "hi"'}
    >>> result = renderer.render([event, event, {"name": "web.heartbeat", "time": 1}])
    >>> print(result.data.decode(), end="")
    web.requests,host=a\ b value=1.0,description="said \"hi\"" 1700000000000000000
    web.requests,host=a\ b value=1.0,description="said \"hi\"" 1700000000000000001
    >>> result.points, result.skipped
    (2, 1)
    >>> LineRenderer(generation=1).render([event]).data.split()[-1]
    b'1700000000000618034'
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
        generation: int = 0,
        cache_size: int = 100_000,
        counted_ms: int = COUNTED_MS,
        now_ms: Callable[[], int] = now_ms,
    ) -> None:
        if not 1 <= workers <= NS_PER_MS // 4 or not 0 <= worker < workers:
            raise ValueError(
                f"worker {worker} of {workers}: need 0 <= worker < workers <= {NS_PER_MS // 4}"
            )
        if max_series_per_measurement < 1 or cache_size < 1 or counted_ms < 1:
            raise ValueError(
                "max_series_per_measurement, cache_size and counted_ms must be positive"
            )
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
        # Timestamps: the points so far in each of the latest counted_ms milliseconds
        # (a heap of them, oldest first), the newest millisecond counted out, and the
        # points written since in milliseconds counted out (see the module).
        self.counted_ms = counted_ms
        self._slots = NS_PER_MS // workers  # distinct offsets this worker has per ms
        self._counts: dict[int, int] = {}
        self._heap: list[int] = []
        self._floor = -1
        self._late = 0
        # generation, its base slot, and the ordinals that need no wrapping: under half
        # of the slots, and short of their end.
        self.generation = self._base = self._room = 0
        self.start_generation(generation)
        # The cache, in two halves: a miss in the young one looks in the old one and
        # brings what it finds along; when the young one is full, the old one goes and
        # the young one becomes old. Nothing is cleared at once (50,000 entries hold
        # the loop for 10 ms or more): the half that went is freed two entries for
        # each one added (_miss).
        self._space = max(1, cache_size // 2)
        self._cache: dict[tuple[object, ...], _Entry] = {}
        self._old_cache: dict[tuple[object, ...], _Entry] = {}
        self._dying: dict[tuple[object, ...], _Entry] = {}
        self._shapes: dict[tuple[str, ...], _Shape] = {}
        self._shape_ids = 0
        self._measurements: dict[str, _Measurement] = {}
        self._text = [(key, f",{escape_key(key)}=") for key in self.mapper.text_fields]
        self._numbers = [(key, f",{escape_key(key)}=") for key in self.mapper.number_fields]
        self._field_keys = {*self.mapper.text_fields, *self.mapper.number_fields}

    def start_generation(self, generation: int) -> None:
        """Render with ``generation``'s offsets (see the module), for a renderer that has
        rendered nothing yet: the InfluxDB output's, at its start. Raises ValueError for
        a negative generation, RuntimeError once points were rendered."""
        if generation < 0:
            raise ValueError(f"generation must be 0 or more, not {generation}")
        if self._counts or self._late:
            raise RuntimeError("the generation of a renderer is set before it renders")
        self.generation = generation
        self._base = generation_base(generation, self._slots)
        self._room = min(self._slots // 2, self._slots - self._base)

    def render(self, events: Iterable[Mapping[str, Scalar]]) -> RenderResult:
        """Render the events that should be stored; one line each, in order."""
        # The per-event work is inlined here: it is most of what the collector's
        # InfluxDB output costs.
        lines: list[str] = []
        add = lines.append
        changes: list[int] = []
        skipped = 0
        cache, shapes, not_tags = self._cache, self._shapes, self.mapper.not_tags
        clock, fields_of, counts = self.mapper.clock, self._fields, self._counts
        workers, room = self.workers, self._room
        # The millisecond in hand (events come mostly in time order): its count, kept
        # here until another comes, and the ns of its first slot; none: -1.
        held, ordinal, held_ns = -1, 0, 0
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
            key = _cache_key(event, not_tags) if shape.mixed else (shape.id, shape.values(event))
            entry = cache.get(key)
            if entry is None:
                entry = self._miss(event, key, shape)
                cache = self._cache  # the miss may have made the young cache old
            head, moved, changed = entry
            if changed:
                if changed == _SKIPPED:  # no name, or a heartbeat
                    skipped += 1
                    continue
                changes.append(changed)
            # The timestamp in ns: the next free slot of its millisecond (see the module).
            if when == held and ordinal < room:
                ns = held_ns + ordinal * workers
                ordinal += 1
            else:
                if held != -1:
                    counts[held] = ordinal
                ns, held, ordinal, held_ns = self._take(when)
            value = float(event.get("value", 1))
            if shape.fields:
                add(f"{head}{value!r}{moved}{fields_of(event)} {ns}\n")
            else:
                add(f"{head}{value!r}{moved} {ns}\n")
        if held != -1:
            counts[held] = ordinal
        self._count(len(lines), skipped, changes)
        data = "".join(lines).encode("utf-8", "replace")
        ends = None
        if data.count(b"\n") != len(lines):  # a string field holds a newline: rare
            ends = tuple(accumulate(len(line.encode("utf-8", "replace")) for line in lines))
        return RenderResult(data, len(lines), skipped, len(changes), ends)

    def _take(self, when: int) -> tuple[int, int, int, int]:
        """The ns of a point in millisecond ``when``, not in render's hand, and what
        render holds from then on: the millisecond (-1: none), its count, the ns of its
        first slot. None is held while its slots wrap, nor a millisecond counted out."""
        workers, worker = self.workers, self.worker
        ns = when * NS_PER_MS + self._slot(when, self._counts.get(when)) * workers + worker
        ordinal = self._counts.get(when)
        if ordinal is None or ordinal >= self._room:
            return ns, -1, 0, 0
        return ns, when, ordinal, when * NS_PER_MS + self._base * workers + worker

    def _slot(self, when: int, ordinal: int | None) -> int:
        """The slot of a point in millisecond ``when`` that render does not work out
        itself: the first of a millisecond (``ordinal`` None), or one past the room
        before the end of the slots, which wraps (see the module)."""
        slots, half = self._slots, self._slots // 2
        if ordinal is None:
            if when <= self._floor:  # counted out: counted down from the base
                late = self._late
                self._late = late + 1
                return (self._base - 1 - late % half) % slots
            heapq.heappush(self._heap, when)
            if len(self._heap) > self.counted_ms:
                # Milliseconds leave in the order of time, so none is counted again.
                self._floor = heapq.heappop(self._heap)
                if self._floor == when:  # older than every one counted: out at once
                    return self._base
                del self._counts[self._floor]
            ordinal = 0
        self._counts[when] = ordinal + 1
        return (self._base + ordinal % half) % slots

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

    def _count(self, points: int, skipped: int, changes: list[int]) -> None:
        self.points += points
        self.skipped += skipped
        both = changes.count(_DEMOTED | _DROPPED)  # (counted in C: one a demoted event)
        self.demoted += changes.count(_DEMOTED) + both
        self.dropped_tags += changes.count(_DROPPED) + both

    # -- the first event of a combination of tag values: the slow path ----------------
    # A unique tag value (a request id) sends every event here, so it is kept short:
    # one pass over the tags makes the series key and counts the values for the guard.

    def _shape(self, keys: tuple[str, ...]) -> _Shape:
        if len(self._shapes) >= self.cache_size:
            self._shapes.clear()  # rare: as many orders of keys as series
        self._shape_ids += 1
        shape = _Shape(self._shape_ids, keys, self.mapper.not_tags, self._field_keys)
        self._shapes[keys] = shape
        return shape

    def _miss(self, event: Mapping[str, Scalar], key: tuple[object, ...], shape: _Shape) -> _Entry:
        """The entry of an event not found in the young cache under ``key``."""
        entry = self._old_cache.get(key)
        if entry is None:
            key, entry, once = self._entry(event, key, shape)
            if once:
                return entry
        if len(self._cache) >= self._space:
            self._dying.clear()  # empty already: see below
            self._dying, self._old_cache, self._cache = self._old_cache, self._cache, {}
        dying = self._dying
        if dying:
            # Two items freed an entry added: the half that went is empty before the
            # young one is full, and no miss frees more than two.
            dying.popitem()
            if dying:
                dying.popitem()
        self._cache[key] = entry
        return entry

    def _entry(
        self, event: Mapping[str, Scalar], key: tuple[object, ...], shape: _Shape
    ) -> tuple[tuple[object, ...], _Entry, bool]:
        """The cache key and entry of an event not in the cache, and whether it is seen
        for the first time (a new series, a new value of a demoted tag): such an entry
        is cached only when it comes again, so unique values do not churn the cache."""
        name = event.get("name")
        if type(name) is not str:
            return key, _SKIP, False
        state = self._measurements.get(name)
        if state is None:
            if not name or self._heartbeat(name):
                return key, _SKIP, False
            state = self._measurements[name] = self._measurement(name)
        demoted, values = state.demoted, state.values
        # A new series is admitted below with its values counted here, unless the limit
        # is reached; counting the values of a series written before changes nothing.
        track = state.count < state.limit
        prefix = state.escaped
        moved: list[_Tag] = []
        dropped = mixed = once = False
        # Two tags that escape alike (see _prefix), or tags a server refused: see _slow.
        slow = shape.clash or bool(state.server)
        for tag, escaped_key in shape.tags:
            val = event[tag]
            if type(val) is not str:
                mixed = True
                val = scalar_text(val)
            if not val:
                continue
            if demoted and tag in demoted:
                # A series written before the tag was demoted keeps it: only a value
                # it was written with can be one of those.
                if val in demoted[tag][hash(val) & _MASK]:
                    slow = True
                elif state.first_sight(val):
                    once = True
                if self.on_cardinality == "drop":
                    dropped = True
                else:
                    moved.append((tag, val, escaped_key, ""))
                continue
            if val.isalnum() or _needs_escape(val) is None:
                prefix += f",{escaped_key}={val}"
            else:
                prefix += f",{escaped_key}={escape_tag_value(val)}"
            if track:
                values[tag][hash(val) & _MASK].add(val)
        if mixed and not shape.mixed:
            shape.mixed = True  # see _Shape; from now on keyed by type too
            key = _cache_key(event, self.mapper.not_tags)
            if found := self._cache.get(key) or self._old_cache.get(key):
                return key, found, False
        # The rest is the slow path's: a series key too long for influxd (4: the most
        # bytes UTF-8 takes a character), an old value of a demoted tag, the limit.
        hashed = hash(prefix)
        known = state.series[hashed & _MASK]
        if slow or len(prefix) > MAX_PREFIX_BYTES // 4 or (not track and hashed not in known):
            prefix, moved, dropped, new = self._slow(name, state, _tags(event, shape))
            once = once or new
        elif hashed not in known:
            known.add(hashed)
            state.count += 1
            once = True
        return key, _written(prefix, moved, dropped), once

    def _measurement(self, name: str) -> _Measurement:
        server = self.server_demotions.get(stored_text(name, "measurement"), frozenset())
        return _Measurement(name, self.max_series_per_measurement, server)

    def _slow(
        self, name: str, state: _Measurement, tags: list[_Tag]
    ) -> tuple[str, list[_Tag], bool, bool]:
        """Every rule, in order (refused by a server, too long for influxd, written
        before, the guard): the series key, the tags moved to fields, whether one was
        left out, and whether the series is new (not written with these tags before)."""
        moved: list[_Tag] = []
        dropped = self._server_demoted(state, tags, moved)
        prefix = _fit(state.escaped, tags, moved)
        if state.written(prefix):
            return prefix, moved, dropped, False
        prefix, demoted = self._guard(name, state, tags, moved)
        return prefix, moved, dropped or demoted, True

    def _heartbeat(self, name: str) -> bool:
        return not self.mapper.write_heartbeats and is_heartbeat(name)

    def demote(self, measurement: str, tag: str) -> bool:
        """Demote ``tag`` of ``measurement`` in every point rendered from now on, of
        any series (as ``on_cardinality`` says: a field, or left out), because a server
        refused its new values; both named as influxd names them (:func:`stored_text`).
        True if it was not demoted yet."""
        demoted = self.server_demotions.get(measurement, frozenset())
        if tag in demoted:
            return False
        self.server_demotions[measurement] = demoted | {tag}
        for name, state in self._measurements.items():
            if stored_text(name, "measurement") == measurement:
                state.server = self.server_demotions[measurement]
        # The entries still carry the tag. Rare (a server's limit): freed at once.
        self._cache.clear()
        self._old_cache.clear()
        return True

    def _server_demoted(self, state: _Measurement, tags: list[_Tag], moved: list[_Tag]) -> bool:
        """Demote the tags servers refused (:meth:`demote`); True if one was dropped."""
        dropped = False
        for tag in [t for t in tags if stored_text(t[0], "key") in state.server]:
            dropped |= self._demote_tag(tag, tags, moved)
        return dropped

    def _guard(
        self, name: str, state: _Measurement, tags: list[_Tag], moved: list[_Tag]
    ) -> tuple[str, bool]:
        """The cardinality guard, for a series not written before: its tags demoted
        before, or one more past the limit, go. The prefix, and True if a tag was left out."""
        dropped = False
        for tag in [tag for tag in tags if tag[0] in state.demoted]:
            dropped |= self._demote_tag(tag, tags, moved)
        prefix = _prefix(state.escaped, tags)
        if state.written(prefix):
            return prefix, dropped
        if state.count >= state.limit and state.values:
            growing = max(state.values, key=lambda key: (state.distinct(key), key))
            self._report(name, state, growing)
            for tag in [t for t in tags if t[0] == growing]:
                dropped |= self._demote_tag(tag, tags, moved)
            prefix = _prefix(state.escaped, tags)
            if state.written(prefix):
                return prefix, dropped
        state.admit(prefix, tags)
        return prefix, dropped

    def _demote_tag(self, tag: _Tag, tags: list[_Tag], moved: list[_Tag]) -> bool:
        tags.remove(tag)
        if self.on_cardinality == "drop":
            return True
        moved.append(tag)
        return False

    def _report(self, name: str, state: _Measurement, tag: str) -> None:
        written = state.demoted[tag] = state.values.pop(tag)
        values = sum(map(len, written))
        # Room for as many new series again before the next tag goes: the series of
        # the other tags' values, now without this one, are new too.
        state.limit = state.count + self.max_series_per_measurement
        report = CardinalityReport(name, tag, state.count, values, self.on_cardinality)
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


def generation_base(generation: int, slots: int) -> int:
    """The slot (of ``slots`` per millisecond) where a generation's offsets start.

    Generation g starts at g times the golden section of the slots, modulo the slots:
    each new generation lands in the largest gap the earlier ones left, so two
    successive ones are at least 38% of the slots apart (381,966 ns with one worker).

    >>> [generation_base(g, 1_000_000) for g in range(4)]
    [0, 618034, 236068, 854102]
    """
    return generation * round(slots * _GOLDEN) % slots


def _written(prefix: str, moved: list[_Tag], dropped: bool) -> _Entry:
    """The entry of a series key, the tags written as fields and whether one was left out."""
    if not moved:
        return f"{prefix} value=", "", _DROPPED if dropped else 0
    if len(moved) == 1:  # the usual: one tag demoted
        _, text, ekey, _ = moved[0]
        fields = f",{ekey}={quote_string(text)}"
    else:
        fields = "".join([f",{ekey}={quote_string(text)}" for _, text, ekey, _ in moved])
    return f"{prefix} value=", fields, _DEMOTED | (_DROPPED if dropped else 0)


def _tags(event: Mapping[str, Scalar], shape: _Shape) -> list[_Tag]:
    """The tags of ``event`` as written, in the order of a series key."""
    tags = []
    for tag, escaped_key in shape.tags:
        val = event[tag]
        text = val if type(val) is str else scalar_text(val)
        if text:
            tags.append((tag, text, escaped_key, escape_tag_value(text)))
    return tags


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


def _prefix(measurement: str, tags: list[_Tag]) -> str:
    """``measurement,k=v,...`` from the escaped measurement and the tags, which come
    in the order of a series key (see _Shape)."""
    parts = [measurement]
    last = None
    for _, _, escaped_key, escaped_value in tags:
        if escaped_key != last:  # keys meet only through a replaced backslash: keep one
            parts.append(f"{escaped_key}={escaped_value}")
            last = escaped_key
    return ",".join(parts)


def _fit(measurement: str, tags: list[_Tag], moved: list[_Tag]) -> str:
    """Move the longest tags to fields until the series key is short enough for influxd;
    the series key left."""
    prefix = _prefix(measurement, tags)
    while len(prefix.encode()) > MAX_PREFIX_BYTES and tags:
        longest = max(tags, key=lambda t: len(t[2]) + len(t[3]))
        tags.remove(longest)
        moved.append(longest)
        prefix = _prefix(measurement, tags)
    return prefix


# -- where influxd cuts a payload into lines ---------------------------------------------
#
# influxd 1.x (scanLine in models/points.go) ends a line at a newline outside a string
# field value: a backslash takes the next byte with it (unless it is one of the last
# two bytes); past the first space, '=' and ',' are counted outside quotes, and a quote
# opens or closes a string only where more '=' than ',' were seen (in a field value).
# _LINE follows this for lines where that difference stays 0 or 1, as in every line
# the renderer writes, in C; any other line is scanned byte by byte (_scan_line).
_ESCAPED = rb"\\.(?=.)"
_STRING = rb'"(?:[^\\"]++|' + _ESCAPED + rb')*+"'
_KEY = rb"(?:[^\\=,\n]++|" + _ESCAPED + rb")*+"  # a quote here opens no string
_VALUE = rb'(?:[^\\=,"\n]++|' + _ESCAPED + rb"|" + _STRING + rb")*+"
_SERIES_KEY = rb"(?:[^\\ \n]++|" + _ESCAPED + rb")*+"
_FIELDS = rb" " + _KEY + rb"(?:=" + _VALUE + rb"," + _KEY + rb")*+(?:=" + _VALUE + rb")?+"
# A line as group 1; any other byte (a line _LINE does not follow) alone.
_LINE = re.compile(rb"(" + _SERIES_KEY + rb"(?:" + _FIELDS + rb")?+(?:\n|\Z))|.", re.DOTALL)
_SCAN = re.compile(rb'[\\ =,"\n]')


def line_ends(payload: bytes) -> list[int]:
    r"""Where each line of ``payload`` ends as influxd 1.x cuts it (the offset after its
    newline, or the payload's length for a last line without one): at a newline
    outside a string field value, which may hold newlines.

    >>> line_ends(b'm value=1.0,description="a\nb" 1\nm value=2.0 2\n')
    [32, 46]
    """
    ends: list[int] = []
    size, pos = len(payload), 0
    while pos < size:
        for found in _LINE.finditer(payload, pos):
            if found.lastindex is None:  # a line _LINE does not follow: byte by byte
                pos = _scan_line(payload, found.start())
                ends.append(pos)
                break
            end = found.end()
            if end == found.start():  # the empty match at the end
                return ends
            ends.append(end)
        else:
            return ends
    return ends


def _scan_line(payload: bytes, start: int) -> int:
    """The end of the line that starts at ``start``, byte by byte as influxd's scanLine."""
    i, size, equals, commas = start, len(payload), 0, 0
    fields = quoted = False
    while (found := _SCAN.search(payload, i)) is not None:
        i = found.start()
        char = payload[i]
        if char == 0x5C and i + 2 < size:  # backslash
            i += 2
            continue
        fields = fields or char == 0x20
        if fields and not quoted and char in b"=,":
            equals, commas = (equals + 1, commas) if char == 0x3D else (equals, commas + 1)
        elif fields and char == 0x22 and equals > commas:
            quoted = not quoted
        elif char == 0x0A and not quoted:
            return i + 1
        i += 1
    return size


def split_lines(payload: bytes) -> list[bytes]:
    r"""The lines of a payload, each with its newline, cut where influxd 1.x cuts them
    (:func:`line_ends`).

    >>> split_lines(b'm value=1.0,description="a\nb" 1\nm value=2.0 2\n')
    [b'm value=1.0,description="a\nb" 1\n', b'm value=2.0 2\n']
    """
    return [payload[start:end] for start, end in pairwise([0, *line_ends(payload)])]


def count_lines(payload: bytes) -> int:
    r"""How many lines influxd 1.x cuts ``payload`` into (:func:`line_ends`); at the
    cost of counting newlines when it holds no quote and no backslash before a newline.

    >>> count_lines(b'm value=1.0,description="a\nb" 1\nm value=2.0 2\n')
    2
    """
    if b'"' not in payload and b"\\\n" not in payload:
        return payload.count(b"\n") + (not payload.endswith(b"\n") and bool(payload))
    return len(line_ends(payload))


class PointEnds:
    r"""Where the points of a payload of line protocol end, to cut it between points:
    after every newline (``ends`` None: no string field holds one, the common case, at
    the cost of a newline search), or at the offsets in ``ends`` (ascending; the last
    is the payload's length).

    >>> ends = PointEnds.of(b'a x="1\n2" 1\nb x=3 2\n', 2)
    >>> ends.ends, ends.last(0, 15), ends.first(0), ends.count(0, 20)
    ([12, 20], 12, 12, 2)
    """

    __slots__ = ("data", "ends")

    def __init__(self, data: bytes, ends: Sequence[int] | None = None) -> None:
        self.data = data
        self.ends = ends

    @classmethod
    def of(cls, data: bytes, points: int) -> PointEnds:
        """For ``data`` holding ``points`` points, each ending with a newline: as many
        newlines as points means none is inside a string (checked at C speed); else
        influxd's cuts are found (:func:`line_ends`)."""
        return cls(data, None if data.count(b"\n") == points else line_ends(data))

    def last(self, start: int, limit: int) -> int:
        """The end of the last point that ends after ``start`` and at or before
        ``limit``; ``start`` when none does."""
        if self.ends is None:
            return self.data.rfind(b"\n", start, limit) + 1 or start
        index = bisect_right(self.ends, limit)
        return max(self.ends[index - 1], start) if index else start

    def first(self, start: int) -> int:
        """The end of the first point after ``start`` (the payload's length if none)."""
        if self.ends is None:
            return self.data.find(b"\n", start) + 1 or len(self.data)
        index = bisect_right(self.ends, start)
        return self.ends[index] if index < len(self.ends) else len(self.data)

    def count(self, start: int, stop: int) -> int:
        """Points that end after ``start`` and at or before ``stop``."""
        if self.ends is None:
            return self.data.count(b"\n", start, stop)
        return bisect_right(self.ends, stop) - bisect_right(self.ends, start)
