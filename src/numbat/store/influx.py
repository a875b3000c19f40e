"""InfluxDB 1.x over HTTP: :class:`InfluxClient` (one server) and :class:`InfluxStore`.

:class:`InfluxClient` is the one way numbat talks to influxd: line protocol to
``/write``, InfluxQL to ``/query``, credentials as a header and never in a message. The
store and the collector's InfluxDB output both use it.

:class:`InfluxStore` is InfluxDB as a :class:`~numbat.store.Store`: line protocol in,
InfluxQL out. Writes render events with :class:`~numbat.store.lineprotocol.LineRenderer`,
exactly as the collector's InfluxDB output does, and POST them to ``/write`` (the
database is created when a write finds it missing). Reads are one InfluxQL statement
each.

Where InfluxDB and :class:`~numbat.store.sqlite.SQLiteStore` would differ, and what
this store does about it:

* Buckets: ``GROUP BY time()`` aligns windows to the epoch; the query passes the offset
  ``start % bucket`` so windows start at ``start`` exactly, as SQLite counts them.
* Ranges: InfluxDB stores times in ``[0, MAX_TIME_MS]`` only (the renderer skips
  others) and refuses time literals past int64 nanoseconds, so the ``WHERE`` range is
  clipped to that; a range that meets only one bucket there is aggregated without
  ``GROUP BY time()`` (influxd 1.6 answers nothing for a window that reaches past
  int64 nanoseconds, as one bucket spanning all time does).
* Tag filters compare tags only (``"k"::tag``), never a field of the same name, and
  go through :func:`~numbat.store.lineprotocol.stored_text`, so the tags an event was
  written with find its series. A key that is never a tag (``time``, the text and
  number fields) matches nothing, as in SQLite.
* ``last``: points of one millisecond are kept apart by nanosecond offsets, so the
  last one *written* wins; across series with the very same timestamp InfluxDB keeps
  the largest value. SQLite only promises one of the values at the latest millisecond.
* A database that does not exist yet reads as empty, as a fresh SQLite file does.
* Expired points: influxd drops a point older than its retention policy's duration and
  answers 400 ``partial write: points beyond retention policy dropped=N``; the store
  counts those ``expired`` (SQLite does the same with its ``retention_ms``).
* Annotations: ``SELECT`` of the text fields, which influxd answers only for the points
  that have one; ``GROUP BY *`` gives each series' tags, ``LIMIT`` per series the
  newest, merged here into the overall newest (:func:`~numbat.store.newest`). A
  pattern matches measurement names as stored (see
  :func:`~numbat.store.lineprotocol.stored_text`), by a regular expression.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp

from numbat.errors import NumbatError
from numbat.event import Event, Scalar
from numbat.store import (
    ANNOTATIONS_LIMIT,
    EVENTS_PAGE,
    MAX_GROUPS,
    MAX_RATE_POINTS,
    MAX_SERIES,
    PERCENTILES,
    RECENT_POINTS,
    Aggregate,
    Annotation,
    Bucket,
    Page,
    Series,
    SeriesInfo,
    Store,
    WriteResult,
    bucket_count,
    busiest,
    check_groups,
    check_limit,
    check_rate_points,
    check_series_limit,
    glob_regex,
    newest,
    paged_events,
    point_event,
    rate_buckets,
    series_hint,
)
from numbat.store.lineprotocol import MAX_TIME_MS, LineRenderer, stored_text
from numbat.store.points import TEXT_FIELDS, scalar_text

__all__ = [
    "InfluxClient",
    "InfluxStore",
    "Reply",
    "StoreError",
    "parse_series_key",
    "quote_ident",
    "quote_literal",
]

log = logging.getLogger(__name__)

WRITE_BATCH: Final = 5_000  # events per POST: keeps bodies far below influxd's 25 MB limit

_FUNCTIONS: Final[Mapping[str, str]] = {
    "mean": 'MEAN("value")',
    "min": 'MIN("value")',
    "max": 'MAX("value")',
    "count": 'COUNT("value")',
    "last": 'LAST("value")',
    # Nearest rank, as the SQLite store picks it (see numbat.store.nearest_rank).
    **{name: f'PERCENTILE("value", {rank})' for name, rank in PERCENTILES.items()},
}
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)
_EXPIRED = re.compile(r"^partial write: points beyond retention policy dropped=(\d+)$")


class StoreError(NumbatError):
    """InfluxDB refused a request or could not be reached; ``status`` is the HTTP status.

    >>> err = StoreError("influxdb 127.0.0.1:8086: write: 400 unable to parse", 400)
    >>> err.status, str(err)
    (400, 'influxdb 127.0.0.1:8086: write: 400 unable to parse')
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def quote_ident(name: str) -> str:
    r"""An InfluxQL identifier: in double quotes, ``\``, ``"`` and newlines escaped.

    >>> print(quote_ident('web "x"\\y'))
    "web \"x\"\\y"
    """
    return '"' + _escape(name, '"') + '"'


def quote_literal(text: str) -> str:
    r"""An InfluxQL string literal: in single quotes, ``\``, ``'`` and newlines escaped.

    >>> print(quote_literal("it's C:\\x"))
    'it\'s C:\\x'
    """
    return "'" + _escape(text, "'") + "'"


def _escape(text: str, quote: str) -> str:
    # InfluxQL's string scanner knows \\, \n and \<quote>; a raw newline ends the token.
    return text.replace("\\", "\\\\").replace(quote, "\\" + quote).replace("\n", "\\n")


def parse_series_key(key: str) -> Series:
    r"""A series key of ``SHOW SERIES`` (``measurement,k1=v1,k2=v2``, escaped as line
    protocol) as a :class:`~numbat.store.Series`.

    >>> parse_series_key(r"web\ ms,path=/a\,b,q\=1=x\ y,z=C:\\dir")
    Series(measurement='web ms', tags=(('path', '/a,b'), ('q=1', 'x y'), ('z', 'C:\\\\dir')))
    """
    measurement, *pairs = _split(key, ",")
    tags = []
    for pair in pairs:
        tag_key, value = [*_split(pair, "=", 1), ""][:2]
        tags.append((_unescape(tag_key, ",= "), _unescape(value, ",= ")))
    return Series(_unescape(measurement, ", "), tuple(sorted(tags)))


def _split(text: str, sep: str, limit: int = -1) -> list[str]:
    """``text`` split at each ``sep`` not escaped; a backslash always takes the next
    character with it, as influxd's scanner reads a key."""
    parts: list[str] = []
    begin = i = 0
    while i < len(text) and len(parts) != limit:
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == sep:
            parts.append(text[begin:i])
            begin = i + 1
        i += 1
    parts.append(text[begin:])
    return parts


def _unescape(text: str, special: str) -> str:
    if "\\" not in text:
        return text
    return _ESCAPED.sub(lambda m: m[1] if m[1] in special else m[0], text)


def _without_credentials(url: str) -> tuple[str, str | None, str | None]:
    """The URL without ``user:password@`` (so no message can show it), and those two."""
    parts = urlsplit(url.rstrip("/"))
    if "@" not in parts.netloc:
        return parts.geturl(), None, None
    netloc = parts.netloc.rpartition("@")[2]
    password = None if parts.password is None else unquote(parts.password)
    return urlunsplit(parts._replace(netloc=netloc)), unquote(parts.username or ""), password


def basic_auth(username: str, password: str | None) -> str:
    """The Basic ``Authorization`` header (aiohttp.BasicAuth is deprecated in aiohttp 3.14)."""
    if ":" in username:
        raise ValueError('a username cannot contain ":" (RFC 7617)')
    return "Basic " + base64.b64encode(f"{username}:{password or ''}".encode()).decode()


def _message(text: str) -> str:
    """The error influxd put in a JSON body, or the start of whatever else came back."""
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()[:300]
    error = body.get("error") if isinstance(body, dict) else None
    return str(error) if error else text.strip()[:300]


class Reply(NamedTuple):
    """What influxd answered: the HTTP status and the body as text.

    >>> reply = Reply(404, '{"error": "database not found: numbat"}')
    >>> reply.ok, reply.database_missing, reply.message
    (False, True, 'database not found: numbat')
    """

    status: int
    text: str

    @property
    def ok(self) -> bool:
        """A 2xx: influxd did what was asked."""
        return 200 <= self.status < 300

    @property
    def database_missing(self) -> bool:
        """A write to a database that does not exist (not yet, or not any more)."""
        return self.status == 404 and "database not found" in self.text

    @property
    def message(self) -> str:
        """The error influxd put in a JSON body, or the start of whatever else came back."""
        return _message(self.text)

    @property
    def expired(self) -> int:
        """Points influxd dropped as older than its retention policy (a 400 ``partial
        write: points beyond retention policy dropped=N``; influxd 1.6.7 then says
        nothing of lines it could not parse in the same request); 0 for any other answer.

        >>> Reply(400, '{"error": "partial write: points beyond retention policy dropped=2"}'
        ...       ).expired
        2
        """
        found = _EXPIRED.match(self.message) if self.status == 400 else None
        return int(found[1]) if found else 0


class InfluxClient:
    """One InfluxDB 1.x server over HTTP, for one database: the one way numbat talks to it.

    ``url`` is the server's base URL (``http://host:8086``). A ``user:password@`` in it
    is taken out (``client.url`` is without it) and used unless ``username`` is given.
    Credentials travel only as a Basic ``Authorization`` header: logs and errors name
    the server by ``client.address`` (``host:port``), never by anything that holds them.
    ``timeout``: seconds per request, whole. ``gzip``: compress write bodies.

    * :meth:`write` POSTs line protocol to ``/write`` (``precision=ns``, ``rp`` when a
      ``retention_policy`` is given) and returns influxd's :class:`Reply` whatever its
      status; with ``create_database=True`` a 404 "database not found" creates the
      database and writes once more.
    * :meth:`statement` runs one InfluxQL statement (times in ms) and returns its result
      (``{"series": [...]}``); :meth:`create_database` runs ``CREATE DATABASE``.

    Errors: :class:`StoreError` with ``status`` None when the server cannot be reached
    or does not answer within ``timeout``; :meth:`statement` and
    :meth:`create_database` also raise it (``status`` set) for an error answer. After
    :meth:`close`, calls raise RuntimeError.

    The HTTP session is made on first use, on the running loop, so a client built on one
    loop can serve another (the InfluxDB output's senders run their own); use it from
    that one loop only, and close it there.

    Example::

        client = InfluxClient("http://u:p@127.0.0.1:8086", "numbat", gzip=True)
        client.url, client.address  # ('http://127.0.0.1:8086', '127.0.0.1:8086')
        try:
            reply = await client.write(
                b"cpu,host=a value=1.0 1700000000000000000\n", create_database=True
            )
            reply.status  # 204
            await client.statement('SELECT last("value") FROM "cpu"')
            # {'statement_id': 0, 'series': [{'name': 'cpu', 'columns': ['time', 'last'],
            #                                 'values': [[1700000000000, 1]]}]}
        finally:
            await client.close()
    """

    def __init__(
        self,
        url: str,
        database: str,
        *,
        username: str | None = None,
        password: str | None = None,
        retention_policy: str | None = None,
        timeout: float = 10.0,
        gzip: bool = False,
    ) -> None:
        self.url, url_user, url_password = _without_credentials(url)
        if username is None:
            username, password = url_user, url_password
        self.address = urlsplit(self.url).netloc
        self.database = database
        self.retention_policy = retention_policy
        self.timeout = timeout
        self.gzip = gzip
        self._headers = (
            {} if username is None else {"Authorization": basic_auth(username, password)}
        )
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def write(self, data: bytes, *, create_database: bool = False) -> Reply:
        """POST line protocol (ns timestamps); influxd's answer, whatever its status."""
        reply = await self._post_write(data)
        if create_database and reply.database_missing:
            # Created only when a write finds it missing: a user with write but no admin
            # rights works as long as the database exists.
            await self.create_database()
            reply = await self._post_write(data)
        return reply

    async def statement(self, query: str, *, missing_ok: bool = False) -> dict[str, Any]:
        """Run one InfluxQL statement (times in ms); its result, or StoreError.

        ``missing_ok``: a database not created yet gives an empty result, as a fresh
        SQLite file would."""
        params = {"db": self.database, "epoch": "ms"}
        reply = await self._post("/query", params, {"q": query})
        try:
            result: dict[str, Any] = json.loads(reply.text)["results"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            result = {"error": reply.message}
        if missing_ok and str(result.get("error", "")).startswith("database not found"):
            return {}
        if "error" in result or not reply.ok:
            message = result.get("error") or reply.message
            raise StoreError(
                f"influxdb {self.address}: query: {reply.status} {message}", reply.status
            )
        return result

    async def create_database(self) -> None:
        """``CREATE DATABASE`` (a no-op when it exists); StoreError if refused."""
        await self.statement(f"CREATE DATABASE {quote_ident(self.database)}")

    async def close(self) -> None:
        """Close the HTTP session, on the loop that used it; closing twice is fine."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def _post_write(self, data: bytes) -> Reply:
        params = {"db": self.database, "precision": "ns"}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.gzip:
            data = gzip.compress(data, 1)  # level 1: most of the saving for little CPU
            headers["Content-Encoding"] = "gzip"
        return await self._post("/write", params, data, headers)

    async def _post(
        self, path: str, params: dict[str, str], data: Any, headers: dict[str, str] | None = None
    ) -> Reply:
        """POST to influxd; its answer. Connection trouble is a StoreError."""
        try:
            async with self._client().post(
                f"{self.url}{path}", params=params, data=data, headers=headers
            ) as resp:
                reply = Reply(resp.status, await resp.text())
        except (aiohttp.ClientError, OSError) as exc:  # OSError: TimeoutError too
            what = str(exc) or type(exc).__name__
            raise StoreError(f"influxdb {self.address}: {path[1:]}: {what}") from exc
        log.debug("influxdb %s: %s: %d", self.address, path[1:], reply.status)
        return reply

    def _client(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError(f"the InfluxDB client for {self.address} is closed")
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            self._session = aiohttp.ClientSession(timeout=timeout, headers=self._headers)
        return self._session


class InfluxStore(Store):
    """A :class:`~numbat.store.Store` in one InfluxDB 1.x database (see the module).

    Use it from one event loop; its HTTP session (an :class:`InfluxClient`'s) is made on
    first use. Credentials are handled as :class:`InfluxClient` does.

    Example::

        store = InfluxStore("http://127.0.0.1:8086", "numbat", username="u", password="p")
        try:
            await store.write([{"name": "web.requests", "value": 3, "time": 70_000,
                                "host": "a"}])
            await store.series()  # [Series('web.requests', (('host', 'a'),))]
            await store.query("web.requests", {"host": "a"}, start=0, end=120_000,
                              bucket=60_000, aggregate="max")
            # [Bucket(start=0, value=None), Bucket(start=60000, value=3.0)]
        finally:
            await store.close()
    """

    def __init__(
        self,
        url: str,
        database: str,
        *,
        username: str | None = None,
        password: str | None = None,
        retention_policy: str | None = None,
        timeout: float = 10.0,
        text_fields: Iterable[str] = TEXT_FIELDS,
    ) -> None:
        self.client = InfluxClient(
            url,
            database,
            username=username,
            password=password,
            retention_policy=retention_policy,
            timeout=timeout,
        )
        self.url = self.client.url
        self.database = database
        self.retention_policy = retention_policy
        self.timeout = timeout
        self.renderer = LineRenderer(text_fields=text_fields)

    # -- the Store interface --

    async def write(self, events: Sequence[Event]) -> WriteResult:
        """Store the events' points (heartbeats and unstorable times are ``skipped``;
        points older than the retention policy's duration, which influxd drops, are
        ``expired``).

        Raises :class:`StoreError` when influxd refuses a batch; the batches before it
        are stored. Unlike SQLite's, a failed write is not all-or-nothing (a timeout may
        come after influxd stored the batch), and writing the same events again with
        this store adds them again, as SQLite does: points of a series in a millisecond
        it already has get the next nanosecond offsets (see numbat.store.lineprotocol).
        """
        written = skipped = expired = 0
        for first in range(0, len(events), WRITE_BATCH):
            result = self.renderer.render(events[first : first + WRITE_BATCH])
            skipped += result.skipped
            if result.points:
                dropped = await self._write(result.data)
                written += result.points - dropped
                expired += dropped
        return WriteResult(written, skipped, expired)

    async def series(self, measurement: str | None = None) -> list[Series]:
        """Every series, or those of one measurement, sorted."""
        query = "SHOW SERIES"
        if measurement is not None:
            query += f" FROM {quote_ident(stored_text(measurement, 'measurement'))}"
        return sorted(parse_series_key(str(row[0])) for row in await self._rows(query))

    async def query(
        self,
        measurement: str,
        tags: Mapping[str, str],
        *,
        start: int,
        end: int,
        bucket: int,
        aggregate: Aggregate = "mean",
    ) -> list[Bucket]:
        """See :meth:`numbat.store.Store.query`; the points of all matching series together."""
        count = bucket_count(start, end, bucket, aggregate)
        found = await self._aggregate(measurement, tags, start, end, bucket, aggregate)
        return [Bucket(start + i * bucket, found.get(i)) for i in range(count)]

    async def annotations(
        self,
        pattern: str = "*",
        tags: Mapping[str, str] | None = None,
        *,
        start: int,
        end: int,
        limit: int = ANNOTATIONS_LIMIT,
    ) -> list[Annotation]:
        """See :meth:`numbat.store.Store.annotations`."""
        check_limit(limit)
        tags = tags or {}
        low, high = max(start, 0), min(end, MAX_TIME_MS + 1)  # where points can be
        text_fields = self.renderer.mapper.text_fields
        if low >= high or not text_fields or not self.renderer.mapper.not_tags.isdisjoint(tags):
            return []
        regex = glob_regex(stored_text(pattern, "measurement"))
        query = (
            f"SELECT {','.join(map(quote_ident, text_fields))} FROM {self._source(regex=regex)}"
            f" WHERE time >= {low}ms AND time < {high}ms{_tag_filter(tags)}"
            f" GROUP BY * ORDER BY time DESC LIMIT {limit}"
        )
        result = await self.client.statement(query, missing_ok=True)
        found = []
        for series in result.get("series", []):
            columns = series["columns"]
            # GROUP BY * lists every tag key of the measurements matched, "" where absent.
            series_tags = tuple(sorted((k, v) for k, v in series.get("tags", {}).items() if v))
            for row in reversed(series.get("values", [])):  # oldest first
                fields = {
                    c: str(v) for c, v in zip(columns[1:], row[1:], strict=True) if v is not None
                }
                found.append(Annotation(int(row[0]), series["name"], series_tags, fields))
        return newest(found, limit)

    async def series_info(self, pattern: str = "*", *, limit: int = MAX_SERIES) -> list[SeriesInfo]:
        """See :meth:`numbat.store.Store.series_info`: ``SHOW SERIES`` of the matching
        measurements, then one ``SELECT`` of each one's newest points (``GROUP BY *``,
        ``LIMIT`` per series) with their text fields."""
        check_series_limit(limit)
        regex = glob_regex(stored_text(pattern, "measurement"))
        source = self._source(regex=regex)
        keys = sorted(
            parse_series_key(str(row[0])) for row in await self._rows(f"SHOW SERIES FROM {source}")
        )
        keys = keys[:limit]
        if not keys:
            return []
        texts = "".join(f",{quote_ident(field)}" for field in self.renderer.mapper.text_fields)
        query = (
            f'SELECT "value"{texts} FROM {source}'
            f" GROUP BY * ORDER BY time DESC LIMIT {RECENT_POINTS}"
        )
        result = await self.client.statement(query, missing_ok=True)
        recent: dict[Series, list[list[Any]]] = {}
        for series in result.get("series", []):
            tags = tuple(sorted((k, v) for k, v in series.get("tags", {}).items() if v))
            rows = [row for row in series.get("values", []) if row[1] is not None]
            recent.setdefault(Series(series["name"], tags), []).extend(rows)
        found = []
        for key in keys:
            rows = recent.get(key, [])
            values = [float(row[1]) for row in reversed(rows)]
            has_text = any(v is not None for row in rows for v in row[2:])
            hint = series_hint(key.tags, values, has_text)
            newest_time, newest_value = (int(rows[0][0]), values[-1]) if rows else (None, None)
            found.append(SeriesInfo(key.measurement, key.tags, hint, newest_time, newest_value))
        return found

    async def query_by(
        self,
        measurement: str,
        tags: Mapping[str, str],
        by: str,
        *,
        start: int,
        end: int,
        bucket: int,
        aggregate: Aggregate = "mean",
        limit: int = MAX_GROUPS,
    ) -> dict[str, list[Bucket]]:
        """See :meth:`numbat.store.Store.query_by`: one ``COUNT`` ``GROUP BY`` the tag to
        rank its values, then :meth:`query` per value kept."""
        count = bucket_count(start, end, bucket, aggregate)
        check_groups(by, limit, count)
        low, high = max(start, 0), min(end, MAX_TIME_MS + 1)
        mapper = self.renderer.mapper
        if low >= high or not mapper.not_tags.isdisjoint({*tags, by}):
            return {}
        query = (
            f'SELECT COUNT("value") FROM {self._source(measurement)}'
            f" WHERE time >= {low}ms AND time < {high}ms{_tag_filter(tags)}"
            f" GROUP BY {quote_ident(stored_text(by, 'key'))}"
        )
        result = await self.client.statement(query, missing_ok=True)
        counts: dict[str, int] = {}
        for series in result.get("series", []):
            value = series.get("tags", {}).get(stored_text(by, "key"), "")
            if value:  # "": the series without the tag
                counts[value] = sum(int(row[1] or 0) for row in series.get("values", []))
        groups = {}
        for value in busiest(counts, limit):
            groups[value] = await self.query(
                measurement,
                {**tags, by: value},
                start=start,
                end=end,
                bucket=bucket,
                aggregate=aggregate,
            )
        return groups

    def events(
        self, *, start: int, end: int, pattern: str = "*", page: int = EVENTS_PAGE
    ) -> AsyncIterator[Event]:
        """See :meth:`numbat.store.Store.events`. Each read is one ``SELECT *`` of a
        time window, ``GROUP BY *`` (the tags) with ``LIMIT`` per series, so a read
        holds at most ``page`` points per series (and far fewer once the window has
        adapted to the data). Unlike SQLite, InfluxDB keeps the number fields: ``ttl``
        comes back (an int when whole). Other fields (the text fields, a tag the
        cardinality guard demoted to a field) come back as text."""
        regex = glob_regex(stored_text(pattern, "measurement"))
        numbers = set(self.renderer.mapper.number_fields)
        skip = {"time", "value", *numbers}

        async def fetch(low: int, high: int, limit: int | None) -> Page:
            query = (
                f"SELECT * FROM {self._source(regex=regex)}"
                f" WHERE time >= {low}ms AND time < {high}ms GROUP BY * ORDER BY time ASC"
            )
            if limit is not None:
                query += f" LIMIT {limit}"
            result = await self.client.statement(query, missing_ok=True)
            found: list[Any] = []
            complete = high
            for series in result.get("series", []):
                tags = tuple(sorted((k, v) for k, v in series.get("tags", {}).items() if v))
                columns, rows = series["columns"], series.get("values", [])
                fields = [(i, c) for i, c in enumerate(columns) if c not in skip]
                number_at = [(i, c) for i, c in enumerate(columns) if c in numbers]
                value_at = columns.index("value") if "value" in columns else -1
                for row in rows:
                    texts: dict[str, Scalar] = {
                        c: scalar_text(row[i]) for i, c in fields if row[i] is not None
                    }
                    for i, c in number_at:
                        if isinstance(row[i], int | float):
                            texts[c] = _number(row[i])
                    value = row[value_at] if value_at >= 0 else None
                    if value is None:
                        continue  # not a point numbat wrote
                    time = int(row[0])
                    event = point_event(series["name"], tags, time, float(value), texts)
                    found.append(((time, series["name"], tags), event))
                if limit is not None and len(rows) >= limit:
                    complete = min(complete, int(rows[-1][0]))
            return Page(found, complete)

        return paged_events(fetch, max(start, 0), min(end, MAX_TIME_MS + 1), page)

    async def close(self) -> None:
        """Close the HTTP session; closing twice is fine."""
        await self.client.close()

    # -- writing --

    async def _write(self, data: bytes) -> int:
        """POST rendered points; how many influxd dropped as older than its retention."""
        reply = await self.client.write(data, create_database=True)
        if reply.ok:
            return 0
        if reply.expired:
            return reply.expired
        where = f"influxdb {self.client.address}: write"
        raise StoreError(f"{where}: {reply.status} {reply.message}", reply.status)

    # -- reading --

    async def _aggregate(
        self,
        measurement: str,
        tags: Mapping[str, str],
        start: int,
        end: int,
        bucket: int,
        aggregate: str,
    ) -> dict[int, float]:
        """Aggregate per bucket index, for the buckets that have points."""
        low, high = max(start, 0), min(end, MAX_TIME_MS + 1)  # where points can be
        if low >= high or not self.renderer.mapper.not_tags.isdisjoint(tags):
            return {}
        if aggregate == "rate":
            return await self._rate(measurement, tags, low, high, start, bucket)
        first, last = (low - start) // bucket, (high - 1 - start) // bucket
        query = (
            f"SELECT {_FUNCTIONS[aggregate]} FROM {self._source(measurement)}"
            f" WHERE time >= {low}ms AND time < {high}ms{_tag_filter(tags)}"
        )
        # A single bucket needs no GROUP BY, whose window could reach past int64 ns.
        if first != last:
            query += f" GROUP BY time({bucket}ms, {start % bucket}ms) fill(none)"
        found: dict[int, float] = {}
        for row in await self._rows(query):
            if row[1] is not None:
                found[first if first == last else (int(row[0]) - start) // bucket] = float(row[1])
        return found

    async def _rate(
        self,
        measurement: str,
        tags: Mapping[str, str],
        low: int,
        high: int,
        start: int,
        bucket: int,
    ) -> dict[int, float]:
        """The ``rate`` aggregate (see :func:`numbat.store.rate_buckets`) from the raw
        points of each series, in time order (a millisecond's points in write order:
        their nanosecond offsets)."""
        query = (
            f'SELECT "value" FROM {self._source(measurement)}'
            f" WHERE time >= {low}ms AND time < {high}ms{_tag_filter(tags)}"
            f" GROUP BY * ORDER BY time ASC LIMIT {MAX_RATE_POINTS + 1}"
        )
        result = await self.client.statement(query, missing_ok=True)
        series = [
            (
                [(k, v) for k, v in found.get("tags", {}).items() if v],
                [
                    (int(row[0]), float(row[1]))
                    for row in found.get("values", [])
                    if row[1] is not None
                ],
            )
            for found in result.get("series", [])
        ]
        check_rate_points(sum(len(points) for _, points in series))
        return rate_buckets(series, start, bucket)

    def _source(self, measurement: str = "", *, regex: str = "") -> str:
        """The ``FROM`` of one measurement, or of those matching ``regex`` (a
        :func:`~numbat.store.glob_regex`, whose ``/`` are escaped), in the retention
        policy if one is set."""
        name = f"/{regex}/" if regex else quote_ident(stored_text(measurement, "measurement"))
        if not self.retention_policy:
            return name
        return f"{quote_ident(self.database)}.{quote_ident(self.retention_policy)}.{name}"

    async def _rows(self, query: str) -> list[list[Any]]:
        """The rows of every series in the statement's result; none if no database yet."""
        result = await self.client.statement(query, missing_ok=True)
        return [row for series in result.get("series", []) for row in series.get("values", [])]


def _number(value: float) -> int | float:
    """A number field as it was most likely sent: whole numbers as int (a ttl)."""
    return int(value) if float(value).is_integer() else float(value)


def _tag_filter(tags: Mapping[str, str]) -> str:
    """`` AND "k"::tag = 'v'`` for each tag, as written (see stored_text)."""
    conditions = []
    for key, val in sorted(tags.items()):
        text = val if type(val) is str else scalar_text(val)
        conditions.append(
            f" AND {quote_ident(stored_text(key, 'key'))}::tag"
            f" = {quote_literal(stored_text(text, 'tag_value'))}"
        )
    return "".join(conditions)
