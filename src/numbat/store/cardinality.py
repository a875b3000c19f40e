r"""Tags InfluxDB refused new values of: remembered on disk, and the refused points re-sent.

The renderer's own guard (:mod:`numbat.store.lineprotocol`) counts series per process
and from zero after each restart; influxd counts across every writer. When the server's
limit comes first, influxd 1.x stores what it can of a batch and answers 400 (as
influxd 1.6.7 words it)::

    partial write: max-values-per-tag limit exceeded (100000/100000): measurement="m"
        tag="reqid" value="8a1f" dropped=3
    partial write: max-series-per-database limit exceeded: (1000000) dropped=5000

:func:`parse_refusal` reads these. :func:`resolve` then finds which lines of the batch
were refused and re-renders exactly those with the tag demoted, so that nothing is lost
and nothing is stored twice:

* **What to demote.** ``max-values-per-tag`` names the measurement and the tag: that
  tag. ``max-series-per-database`` names neither: for each measurement among the
  refused points, the tag with the most distinct values among them (ties: the first
  key), if it has two or more (a tag with one value there is not what grows).
* **Which lines were refused.** The answer does not say (it names one refused point
  and counts the dropped, for one shard only). A line of our renderer is stored again
  unchanged at no cost (InfluxDB overwrites a point of the same series and time), so
  groups of the batch's lines are posted again as they were: a group the server takes
  whole (204) was stored; one whose ``dropped`` count is its size was refused whole; a
  mixed group is split (by measurement, then by the named tag, then in halves) and its
  parts posted again. Usually two posts settle it: the refused measurement's lines,
  all refused, and the rest, all stored.
* **Re-sending.** The refused lines are parsed back into events and rendered again by
  the output's renderer, which now demotes the tag (:meth:`LineRenderer.demote
  <numbat.store.lineprotocol.LineRenderer.demote>`): demoting merges series, so their
  nanosecond offsets must come from the renderer's tie-breaker, like any other point
  of the merged series (keeping the old timestamps would make two refused points of one
  millisecond overwrite each other), and their guarantees are the tie-breaker's. The
  caller sends the re-rendered bytes in the batch's place and keeps them until they
  are stored, so a retry (a 5xx, a timeout after the server wrote them) posts the same
  bytes and overwrites instead of adding. Only a collector killed after storing them
  and before the batch left the spool renders them again at start, at other offsets:
  they may then be stored twice.
* **More than one tag.** Each answer names the tag of one refused point only, so the
  tags named by the probes' answers are demoted too, and a refused line that no known
  demotion changes is sent again unchanged as long as the round taught a new demotion
  (its next answer names its tag); when a round teaches nothing, such a line is refused
  for good (counted rejected by the caller). Each round demotes a tag, so it ends.

Only batches rendered before a demotion was known meet the refusal: once demoted, the
renderer writes the tag as a field from the next point on. Settling such a batch takes
a few more posts (two probes and the re-send, usually); a group mixing stored and
refused points of one measurement and tag (a tag at the limit whose known values keep
coming) is halved until each part is all stored or all refused.

Demotions are kept in :class:`DemotionFile` (JSON, one per output, shared by its worker
processes under ``flock``, replaced atomically) and applied to the renderer at start,
so they survive restarts; :class:`TagDemotions` logs each one once, when it is first
added to the file, at WARNING.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

from numbat._ratelimit import RateLimitedLog
from numbat.event import Event, now_ms
from numbat.store import Series
from numbat.store.influx import Reply, parse_series_key
from numbat.store.lineprotocol import NS_PER_MS, LineRenderer, split_lines

__all__ = [
    "Demotion",
    "DemotionFile",
    "Refusal",
    "Resolution",
    "TagDemotions",
    "parse_line",
    "parse_refusal",
    "resolve",
    "split_lines",
]

log = logging.getLogger(__name__)

VALUES: Final = "max-values-per-tag"
SERIES: Final = "max-series-per-database"
Limit = Literal["max-values-per-tag", "max-series-per-database"]
FILE_VERSION: Final = 1

_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_VALUES = re.compile(
    rf"max-values-per-tag limit exceeded \((\d+)/(\d+)\): measurement={_QUOTED} tag={_QUOTED}",
    re.DOTALL,
)
_SERIES = re.compile(r"max[- ]series[- ]per[- ]database (?:limit )?exceeded")
_DROPPED = re.compile(r"dropped=(\d+)\s*$")
_GO_ESCAPES: Final = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
}


class Refusal(NamedTuple):
    """A partial write refused for a cardinality limit: which limit, and for
    ``max-values-per-tag`` the measurement and tag influxd names (as it stores them)."""

    limit: Limit
    measurement: str | None = None
    tag: str | None = None


def parse_refusal(message: str) -> Refusal | None:
    r"""The cardinality limit an influxd 1.x write error names, or None for any other.

    >>> parse_refusal('partial write: max-values-per-tag limit exceeded (5/5): '
    ...               'measurement="web req" tag="req\\"id" value="x" dropped=1')
    Refusal(limit='max-values-per-tag', measurement='web req', tag='req"id')
    >>> parse_refusal("partial write: max-series-per-database limit exceeded: (20) dropped=15")
    Refusal(limit='max-series-per-database', measurement=None, tag=None)
    >>> parse_refusal("partial write: field type conflict dropped=1") is None
    True
    """
    if not message.startswith("partial write"):
        return None
    if found := _VALUES.search(message):
        return Refusal(VALUES, go_unquote(found[3]), go_unquote(found[4]))
    if _SERIES.search(message):
        return Refusal(SERIES)
    return None


def go_unquote(text: str) -> str:
    r"""The string a Go ``%q`` verb quoted (without its quotes): how influxd names things.

    >>> go_unquote(r'a\"b\\c\nd\x00\u00e9')
    'a"b\\c\nd\x00é'
    """
    if "\\" not in text:
        return text
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\" or i + 1 == len(text):
            out += char.encode()
            i += 1
            continue
        kind = text[i + 1]
        if kind in _GO_ESCAPES:
            out += _GO_ESCAPES[kind].encode()
            i += 2
        elif kind == "x":
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        elif kind in "uU":
            width = 4 if kind == "u" else 8
            out += chr(int(text[i + 2 : i + 2 + width], 16)).encode()
            i += 2 + width
        elif kind in "01234567":
            out.append(int(text[i + 1 : i + 4], 8))
            i += 4
        else:
            out += text[i : i + 2].encode()
            i += 2
    return out.decode("utf-8", "replace")


def dropped_count(message: str) -> int | None:
    """The ``dropped=N`` of a partial write, or None for another error."""
    found = _DROPPED.search(message) if message.startswith("partial write") else None
    return int(found[1]) if found else None


# -- reading our own line protocol back ----------------------------------------------


class Line(NamedTuple):
    """One line as :class:`~numbat.store.lineprotocol.LineRenderer` wrote it, read back:
    its series (measurement and tags as stored), fields (strings or floats) and time."""

    series: Series
    key: bytes  # the series key as written: measurement,tags
    fields: tuple[tuple[str, str | float], ...]
    ns: int


def parse_line(line: bytes) -> Line:
    r"""A line of our line protocol read back; ValueError if it is not one.

    >>> parse_line(b'web\\ a,h=x\\,y value=1.5,reqid="r \\"1\\"" 1700000000000000001\n')
    ... # doctest: +NORMALIZE_WHITESPACE
    Line(series=Series(measurement='web a', tags=(('h', 'x,y'),)), key=b'web\\ a,h=x\\,y',
         fields=(('value', 1.5), ('reqid', 'r "1"')), ns=1700000000000000001)
    """
    text = line.decode("utf-8").rstrip("\n")
    end = _unescaped(text, " ", 0)
    key = text[:end]
    fields: list[tuple[str, str | float]] = []
    i = end + 1
    while True:
        eq = _unescaped(text, "=", i)
        name = _unescape(text[i:eq])
        if eq + 1 < len(text) and text[eq + 1] == '"':
            value, i = _quoted(text, eq + 2)
            fields.append((name, value))
        else:
            stop = min(_end(text, ",", eq + 1), _end(text, " ", eq + 1))
            fields.append((name, float(text[eq + 1 : stop])))
            i = stop
        if i >= len(text) or text[i] == " ":
            break
        i += 1  # the comma before the next field
    stamp = text[i + 1 :]
    if i >= len(text) or not (stamp.isascii() and stamp.isdigit()) or not fields:
        raise ValueError(f"not a line of numbat's line protocol: {text[:200]!r}")
    return Line(parse_series_key(key), key.encode(), tuple(fields), int(stamp))


def _end(text: str, char: str, start: int) -> int:
    found = text.find(char, start)
    return len(text) if found < 0 else found


def _unescaped(text: str, char: str, start: int) -> int:
    """The index of the first ``char`` at or after ``start`` that no backslash escapes."""
    i = start
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == char:
            return i
        i += 1
    raise ValueError(f"no {char!r} in {text[:200]!r}")


def _unescape(key: str) -> str:
    return re.sub(r"\\([,= ])", r"\1", key) if "\\" in key else key


def _quoted(text: str, start: int) -> tuple[str, int]:
    """A string field's value from just after its opening quote; and the index after
    its closing quote."""
    out: list[str] = []
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in '\\"':
            out.append(text[i + 1])
            i += 2
        elif char == '"':
            return "".join(out), i + 1
        else:
            out.append(char)
            i += 1
    raise ValueError(f"unclosed string field in {text[:200]!r}")


def to_event(line: Line) -> Event:
    """The event a line was rendered from, near enough to render it again: its fields
    go back as they were, so a tag the renderer had written as a string field is a tag
    again (any key but the text and number fields is), and the renderer decides anew.

    >>> to_event(parse_line(b'm,host=a value=2.0,pid="7",description="x" 1700000000000000003'))
    {'name': 'm', 'time': 1700000000000, 'host': 'a', 'value': 2.0, 'pid': '7', 'description': 'x'}
    """
    event: Event = {"name": line.series.measurement, "time": line.ns // NS_PER_MS}
    event.update(line.series.tags)
    event.update(line.fields)
    return event


# -- the durable list -----------------------------------------------------------------


class Demotion(NamedTuple):
    """A tag of a measurement (named as influxd stores them) that a server refused new
    values of: the limit, which server said so, and when (ms)."""

    measurement: str
    tag: str
    limit: str
    server: str
    since_ms: int


class DemotionFile:
    """The demotions of one output, for one database, in ``path`` (JSON).

    Shared by the output's worker processes: every read-merge-write holds ``flock`` on
    ``path`` + ``.lock``, and the file is replaced atomically (a temporary file, fsync,
    rename, fsync of the directory), so a kill -9 leaves the old list or the new one.
    Entries of other databases are kept but not returned. A file that cannot be read is
    logged, set aside as ``path.bad`` and taken as empty.

    Format: ``{"version": 1, "demotions": [{"database", "measurement", "tag", "limit",
    "server", "since_ms"}, ...]}``.
    """

    def __init__(self, path: Path, database: str) -> None:
        self.path = path
        self.database = database

    def load(self) -> list[Demotion]:
        """The demotions of this database (none if the file does not exist yet)."""
        with self._locked():
            return [d for db, d in self._read() if db == self.database]

    def add(self, demotions: list[Demotion]) -> tuple[list[Demotion], list[Demotion]]:
        """Add demotions: those the file did not have yet (in order), and all it now
        has for this database (other processes may have added some). Blocking I/O."""
        with self._locked():
            entries = self._read()
            known = {(db, d.measurement, d.tag) for db, d in entries}
            new = []
            for demotion in demotions:
                if (self.database, demotion.measurement, demotion.tag) not in known:
                    known.add((self.database, demotion.measurement, demotion.tag))
                    new.append(demotion)
            entries += [(self.database, d) for d in new]
            if new:
                self._write(entries)
            return new, [d for db, d in entries if db == self.database]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self) -> list[tuple[str, Demotion]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            return _entries(json.loads(raw))
        except (ValueError, TypeError, KeyError) as exc:
            bad = self.path.with_name(self.path.name + ".bad")
            log.error(
                "%s: cannot read the tag demotions (%s); set aside as %s", self.path, exc, bad
            )
            self.path.replace(bad)
            return []

    def _write(self, entries: list[tuple[str, Demotion]]) -> None:
        body = {
            "version": FILE_VERSION,
            "demotions": [{"database": db, **d._asdict()} for db, d in entries],
        }
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            with temporary.open("w", encoding="utf-8") as out:
                json.dump(body, out, indent=1, ensure_ascii=False)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            temporary.replace(self.path)
        except OSError:
            temporary.unlink(missing_ok=True)  # a full disk keeps no half-written copy
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _entries(body: Any) -> list[tuple[str, Demotion]]:
    if not isinstance(body, dict) or body.get("version") != FILE_VERSION:
        raise ValueError(f"expected an object with version {FILE_VERSION}")
    entries = []
    for item in body["demotions"]:
        fields = [item[key] for key in ("database", *Demotion._fields)]
        if not all(isinstance(v, str) for v in fields[:5]) or type(fields[5]) is not int:
            raise ValueError(f"a demotion is not database/measurement/tag/...: {item!r}")
        entries.append((fields[0], Demotion(*fields[1:])))
    return entries


class TagDemotions:
    """The demotions an output applies to its renderer, learned from its servers' answers.

    ``renderer`` is rendered only while ``lock`` is held (the output renders on the
    collector's loop, its senders re-render refused lines on their own threads);
    :meth:`learn`, :meth:`retry` and :meth:`rerender` may be called from any thread.
    ``learned``: demotions this instance learned first (added to the file, or kept in
    memory while the file cannot be written), each also logged once, at WARNING.

    The file never stops a demotion: one is applied to the renderer at once, and when
    the file cannot be read or written (a full disk, an I/O error) the demotions not in
    it yet are kept (:attr:`unsaved`) and written by the next :meth:`learn` or
    :meth:`retry`; the failure is logged, rate-limited.
    """

    def __init__(
        self,
        file: DemotionFile,
        renderer: LineRenderer,
        lock: threading.Lock,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.file = file
        self.renderer = renderer
        self.lock = lock
        self.clock = clock
        self.learned = 0
        # Demotions learned here that the file does not hold yet (it refused a write),
        # and whether it must be read again (it refused a read); guarded by _file_lock,
        # which also keeps this process's threads from racing on the file.
        self._unsaved: list[Demotion] = []
        self._reread = False
        self._announced: set[tuple[str, str]] = set()
        self._file_lock = threading.Lock()
        self._warn = RateLimitedLog(log)

    @property
    def unsaved(self) -> bool:
        """Whether the file lacks demotions learned here (or was not read): a
        :meth:`retry` has work to do."""
        return bool(self._unsaved) or self._reread

    def load(self) -> int:
        """Apply the demotions remembered in the file; how many (blocking I/O). A file
        that cannot be read is logged and read again by :meth:`retry` (0 meanwhile)."""
        try:
            demotions = self.file.load()
        except OSError as exc:
            with self._file_lock:
                self._reread = True
            self._file_failed("read", exc)
            return 0
        self._apply(demotions)
        return len(demotions)

    def learn(self, limit: str, server: str, tags: list[tuple[str, str]]) -> int:
        """Demote ``(measurement, tag)`` pairs a server refused, and any other the file
        has; how many the renderer did not demote yet (blocking I/O). Never raises for
        the file: the demotions apply at once, the file is written when it can be."""
        now = self.clock()
        demotions = [Demotion(m, t, limit, server, now) for m, t in tags]
        applied = self._apply(demotions)  # at once, whatever becomes of the file
        with self._file_lock:
            waiting = {(d.measurement, d.tag) for d in self._unsaved}
            for demotion in demotions:
                if (demotion.measurement, demotion.tag) not in waiting:
                    waiting.add((demotion.measurement, demotion.tag))
                    self._unsaved.append(demotion)
            return applied + self._save()

    def retry(self) -> int:
        """Write the demotions the file lacks, and apply those other processes added;
        how many the renderer did not demote yet (blocking I/O; nothing to do: no I/O)."""
        with self._file_lock:
            return self._save() if self.unsaved else 0

    def _save(self) -> int:
        """Add the unsaved demotions to the file (with _file_lock held); how many of
        all it holds the renderer did not demote yet. An OSError keeps them unsaved."""
        try:
            new, known = self.file.add(self._unsaved)
        except OSError as exc:
            for demotion in self._unsaved:
                self._announce(demotion, None)
            self._file_failed("write", exc)
            return 0
        for demotion in new:
            self._announce(demotion, self.file.path)
        self._unsaved.clear()
        self._reread = False
        return self._apply(known)  # with those other worker processes added meanwhile

    def _announce(self, demotion: Demotion, remembered: Path | None) -> None:
        """Log a demotion learned here, once: where it is remembered, if it is yet."""
        key = (demotion.measurement, demotion.tag)
        if key in self._announced:
            return
        self._announced.add(key)
        self.learned += 1
        log.warning(
            "influxdb %s refused new values of tag %r of measurement %r (%s): the tag "
            "is %s in every point of it from now on, and the refused points are sent "
            "again so; %s",
            demotion.server,
            demotion.tag,
            demotion.measurement,
            demotion.limit,
            "a field" if self.renderer.on_cardinality == "field" else "left out",
            f"remembered in {remembered}"
            if remembered
            else f"not remembered yet ({self.file.path} cannot be written)",
        )

    def _file_failed(self, what: str, exc: OSError) -> None:
        self._warn.warning(
            f"file:{what}",
            "%s: cannot %s the tag demotions (%s); they apply in memory, and the file "
            "is tried again at the next demotion and every second",
            self.file.path,
            what,
            exc,
        )

    def demoted(self, measurement: str) -> frozenset[str]:
        return self.renderer.server_demotions.get(measurement, frozenset())

    def rerender(self, lines: list[Line]) -> list[bytes | None]:
        """Each line rendered again with the demotions applied; None where that does not
        change its series (no demotion helps it) or it cannot be rendered (skipped)."""
        out: list[bytes | None] = []
        with self.lock:
            for line in lines:
                data = self.renderer.render([to_event(line)]).data
                changed = data and not data.startswith(line.key + b" ")
                out.append(data if changed else None)
        return out

    def _apply(self, demotions: list[Demotion]) -> int:
        with self.lock:
            return sum(self.renderer.demote(d.measurement, d.tag) for d in demotions)


# -- finding the refused lines ----------------------------------------------------------

Post = Callable[[bytes], Awaitable[Reply | None]]


class Resolution(NamedTuple):
    """What became of a batch refused in part for a cardinality limit: lines stored as
    they were; the refused ones to send again (``resend``, ``resend_points`` lines), of
    which ``demoted`` rendered again with a tag demoted (the others unchanged, see the
    module); refused lines no demotion helps (``rejected``)."""

    stored: int
    resend: bytes
    resend_points: int
    demoted: int
    rejected: int


async def resolve(
    post: Post, payload: bytes, reply: Reply, refusal: Refusal, demotions: TagDemotions, server: str
) -> Resolution | None:
    """Settle ``payload``, which ``post`` answered with ``reply`` naming ``refusal``
    (see the module). None when a post failed (no answer, 5xx): retry the batch later;
    nothing was stored twice meanwhile. ValueError when a line is not one our renderer
    writes (then nothing was posted again). File I/O and rendering run in a thread."""
    raw = split_lines(payload)
    lines = [parse_line(line) for line in raw]
    # The tag named is demoted at once, so that new points stop meeting the refusal.
    new = await _learn(demotions, server, [refusal], [])
    finder = _Finder(post, raw, lines)
    refused = await finder.refused(list(range(len(raw))), reply)
    if refused is None:
        return None
    # Each answer names one refused point's tag: those of the probes count too.
    new += await _learn(demotions, server, finder.refusals, [lines[i] for i in refused])
    again = await asyncio.to_thread(demotions.rerender, [lines[i] for i in refused])
    resend: list[bytes] = []
    demoted = 0
    for i, data in zip(refused, again, strict=True):
        if data is not None:
            resend.append(data)
            demoted += 1
        elif new:
            # Refused for a tag no answer has named yet, maybe: sent again unchanged,
            # its next answer names it. With nothing learned, it is refused for good.
            resend.append(raw[i])
    stored = len(raw) - len(refused)
    rejected = len(refused) - len(resend)
    return Resolution(stored, b"".join(resend), len(resend), demoted, rejected)


async def _learn(
    demotions: TagDemotions, server: str, refusals: list[Refusal], refused: list[Line]
) -> int:
    """Learn the tags ``refusals`` name, and for a max-series-per-database refusal the
    busiest tags of the ``refused`` lines; how many demotions are new to the renderer."""
    named = list(dict.fromkeys((r.measurement, r.tag) for r in refusals if r.limit == VALUES))
    pairs = [(m, t) for m, t in named if m is not None and t is not None]
    new = await asyncio.to_thread(demotions.learn, VALUES, server, pairs) if pairs else 0
    if any(r.limit == SERIES for r in refusals) and (busiest := _busiest_tags(refused, demotions)):
        new += await asyncio.to_thread(demotions.learn, SERIES, server, busiest)
    return new


def _busiest_tags(lines: list[Line], demotions: TagDemotions) -> list[tuple[str, str]]:
    """Per measurement, the not yet demoted tag with the most distinct values among
    ``lines`` (ties: the first key), if it has two or more."""
    values: dict[str, dict[str, set[str]]] = {}
    for line in lines:
        tags = values.setdefault(line.series.measurement, {})
        for key, value in line.series.tags:
            tags.setdefault(key, set()).add(value)
    chosen = []
    for measurement, tags in values.items():
        done = demotions.demoted(measurement)
        counts = [(-len(vals), key) for key, vals in tags.items() if key not in done]
        if counts and -min(counts)[0] >= 2:
            chosen.append((measurement, min(counts)[1]))
    return chosen


class _Finder:
    """Finds which lines a server refused by posting groups of them again, unchanged."""

    def __init__(self, post: Post, raw: list[bytes], lines: list[Line]) -> None:
        self.post = post
        self.raw = raw
        self.lines = lines
        self.refusals: list[Refusal] = []  # what each answer named

    async def refused(self, group: list[int], reply: Reply) -> list[int] | None:
        """The lines of ``group`` refused, given ``reply`` to posting exactly them."""
        if reply.ok:
            return []
        if reply.status >= 500 or reply.status == 413:
            return None
        refusal = parse_refusal(reply.message)
        if refusal is not None:
            self.refusals.append(refusal)
        dropped = dropped_count(reply.message)
        if dropped is None or dropped >= len(group) or len(group) == 1:
            return group  # not a partial write (a plain 4xx), or all of it dropped
        found: list[int] = []
        for part in self._split(group, refusal):
            answer = await self.post(b"".join(self.raw[i] for i in part))
            refused = None if answer is None else await self.refused(part, answer)
            if refused is None:
                return None
            found += refused
        return sorted(found)

    def _split(self, group: list[int], refusal: Refusal | None) -> list[list[int]]:
        """A mixed group in two: the named measurement's lines and the rest; with one
        measurement, the lines with the named tag and the rest; else in halves, keeping
        a measurement's lines together while there are several, and then by time (the
        earlier half, the later), which keeps apart points of different shards."""
        named = refusal.measurement if refusal else None
        tag = refusal.tag if refusal else None
        by: dict[str, list[int]] = {}
        for i in group:
            by.setdefault(self.lines[i].series.measurement, []).append(i)
        if len(by) > 1:
            if named in by:
                return [by[named], [i for i in group if self.lines[i].series.measurement != named]]
            names = list(by)
            half = len(names) // 2
            return [
                [i for n in names[:half] for i in by[n]],
                [i for n in names[half:] for i in by[n]],
            ]
        if named in by and tag is not None:
            with_tag = [i for i in group if any(k == tag for k, _ in self.lines[i].series.tags)]
            if 0 < len(with_tag) < len(group):
                chosen = set(with_tag)
                return [with_tag, [i for i in group if i not in chosen]]
        by_time = sorted(group, key=lambda i: self.lines[i].ns)
        half = len(group) // 2
        return [by_time[:half], by_time[half:]]
