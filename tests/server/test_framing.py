"""Line framing and parsing: size cap, split lines, overlong lines, and every reject reason."""

from __future__ import annotations

import itertools
import json
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from numbat.event import Event
from numbat.server.framing import LineFramer, parse_lines, split_message

CAP = 64 * 1024
MiB = 1024 * 1024


def collect(lines: list[bytes]) -> tuple[list[Event], list[tuple[str, bytes]]]:
    """Parse ``lines``; return the events and the (reason, sample) of each rejection."""
    rejects: list[tuple[str, bytes]] = []

    def reject(reason: str, message: str, sample: bytes) -> None:
        assert message, "every rejection carries a message"
        rejects.append((reason, sample))

    return parse_lines(lines, reject, clock=lambda: 7), rejects


def test_complete_lines_come_out_without_newlines() -> None:
    """Each newline ends a line; the text after the last newline is held back."""
    framer = LineFramer(CAP)
    assert framer.feed(b"a\nbb\nccc") == [b"a", b"bb"]
    assert framer.buffered == 3
    assert framer.feed(b"c\n\n") == [b"cccc", b""]
    assert framer.buffered == 0
    assert framer.finish() == b""


def test_line_split_into_single_bytes_is_reassembled() -> None:
    """A line arriving one byte per read comes out whole, once, when its newline arrives."""
    payload = json.dumps({"name": "split", "text": "x" * 5000}).encode()
    framer = LineFramer(CAP)
    for i, byte in enumerate(payload):
        assert framer.feed(bytes([byte])) == []
        assert framer.buffered == i + 1
    assert framer.feed(b"\n") == [payload]
    assert framer.buffered == 0 and framer.overlong == 0


def test_line_of_exactly_the_cap_passes_and_one_byte_more_does_not() -> None:
    """The cap is inclusive, whether the line arrives in one read or across two."""
    cap = 100
    for chunks in ([b"x" * cap + b"\n"], [b"x" * 60, b"x" * 40 + b"\n"]):
        framer = LineFramer(cap)
        assert [out for chunk in chunks for out in framer.feed(chunk)] == [b"x" * cap]
        assert framer.overlong == 0
    for chunks in ([b"x" * (cap + 1) + b"\n"], [b"x" * 60, b"x" * 41 + b"\n"], [b"x" * 101]):
        framer = LineFramer(cap)
        assert [out for chunk in chunks for out in framer.feed(chunk)] == []
        assert framer.overlong == 1
        assert framer.buffered == 0


def test_overlong_line_between_good_lines_loses_only_itself() -> None:
    """An overlong line inside one read is dropped and counted; its neighbours are kept."""
    framer = LineFramer(10)
    assert framer.feed(b"ok1\n" + b"y" * 50 + b"\nok2\nok") == [b"ok1", b"ok2"]
    assert framer.overlong == 1
    assert framer.feed(b"3\n") == [b"ok3"]


def test_overlong_partial_is_skipped_up_to_its_newline() -> None:
    """A partial line over the cap is forgotten; the lines after its newline survive."""
    framer = LineFramer(10)
    assert framer.feed(b"good\n" + b"z" * 8) == [b"good"]
    assert framer.feed(b"z" * 8) == []  # now 16 bytes: over the cap, skipping
    assert framer.overlong == 1 and framer.buffered == 0
    assert framer.feed(b"zzzz") == []
    assert framer.feed(b"zz\nafter\nnext") == [b"after"]
    assert framer.overlong == 1
    assert framer.finish() == b"next"


def test_16_mib_line_without_newline_in_chunks_keeps_at_most_the_cap() -> None:
    """A 16 MiB line fed in 64 KiB reads: nothing returned, <= cap retained, counted once."""
    chunk = b"x" * (64 * 1024)
    framer = LineFramer(CAP)
    max_buffered = 0
    tracemalloc.start()
    try:
        for _ in range(16 * MiB // len(chunk)):
            assert framer.feed(chunk) == []
            max_buffered = max(max_buffered, framer.buffered)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert max_buffered <= CAP
    assert framer.buffered == 0  # past the cap, nothing of the line is kept
    assert framer.overlong == 1
    # Memory stays near the cap plus one read, far below the 16 MiB that came in.
    assert peak < 1 * MiB, peak
    assert framer.feed(b"tail\n" + b'{"name":"after"}\n') == [b'{"name":"after"}']
    assert framer.overlong == 1


def test_16_mib_line_in_one_read_is_never_copied() -> None:
    """A single 16 MiB read with no newline is only scanned: nothing kept, no copy made."""
    data = b"x" * (16 * MiB)
    framer = LineFramer(CAP)
    tracemalloc.start()
    try:
        assert framer.feed(data) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 * MiB, peak
    assert (framer.buffered, framer.overlong) == (0, 1)
    assert framer.finish() == b""


def test_16_mib_of_odd_sized_reads_with_lines_after_it() -> None:
    """Odd read sizes (1 byte to 1 MiB) over a 16 MiB line: cap held, later lines intact."""
    framer = LineFramer(CAP)
    sizes = [1, 7, 65535, 65536, 65537, 1 * MiB, 3]
    sent = 0
    i = 0
    while sent < 16 * MiB:
        size = min(sizes[i % len(sizes)], 16 * MiB - sent)
        assert framer.feed(b"q" * size) == []
        assert framer.buffered <= CAP
        sent += size
        i += 1
    assert framer.feed(b"\n{}\n[]\n") == [b"{}", b"[]"]
    assert framer.overlong == 1


def test_finish_returns_the_unterminated_last_line() -> None:
    """At end of stream the bytes after the last newline are handed back once."""
    framer = LineFramer(CAP)
    assert framer.feed(b'{"name":"a"}\n{"name":"b"}') == [b'{"name":"a"}']
    assert framer.finish() == b'{"name":"b"}'
    assert framer.finish() == b""


@settings(max_examples=300, deadline=None)
@given(
    stream=st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.sampled_from([b"\n", b"\n\n", b"x" * 70, b'{"name":"a"}\n']),
        ),
        max_size=30,
    ).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=20),
    cap=st.integers(min_value=1, max_value=64),
)
def test_any_chunking_gives_the_same_lines_as_splitting(
    stream: bytes, cuts: list[int], cap: int
) -> None:
    """However a stream is cut into reads, the framer yields exactly split()'s short lines."""
    *complete, tail = stream.split(b"\n")
    want = [seg for seg in complete if len(seg) <= cap]
    want_overlong = sum(len(seg) > cap for seg in [*complete, tail])
    framer = LineFramer(cap)
    got: list[bytes] = []
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    for start, end in itertools.pairwise(bounds):
        got += framer.feed(stream[start:end])
        assert framer.buffered <= cap
    assert got == want
    assert framer.finish() == (tail if len(tail) <= cap else b"")
    assert framer.overlong == want_overlong


def test_each_kind_of_bad_line_is_rejected_with_its_reason() -> None:
    """Invalid JSON, non-objects, event-model failures and bad UTF-8 each get their reason."""
    bad = {
        b"not json": "bad_json",
        b'{"name":"a"': "bad_json",
        b'{"name":"x"} {"name":"y"}': "bad_json",
        b"[1,2]": "not_object",
        b"null": "not_object",
        b'"text"': "not_object",
        b"42": "not_object",
        b'{"value":1}': "missing_name",
        b'{"name":""}': "bad_name",
        b'{"name":"x","value":"high"}': "bad_value",
        b'{"name":"x","time":-5}': "bad_time",
        b'{"name":"x","ttl":0}': "bad_ttl",
        b'{"name":"x","status":"fine"}': "bad_status",
        b'{"name":"x","tags":[1]}': "bad_field",
        b"\xff\xfe{}": "not_utf8",
        b'{"name":"caf\xe9"}': "not_utf8",
    }
    events, rejects = collect(list(bad))
    assert events == []
    assert rejects == [(reason, sample) for sample, reason in bad.items()]


def test_good_events_around_bad_lines_are_all_kept_in_order() -> None:
    """Bad lines cost only themselves: every good line around them becomes an event."""
    lines = [
        b'{"name":"a","value":1}',
        b"garbage",
        b'{"name":"b","value":2}',
        b"\x80\x81",
        b'{"name":"c","value":3,"status":"OKAY"}\r',
        b"[]",
    ]
    events, rejects = collect(lines)
    assert events == [
        {"name": "a", "value": 1, "time": 7},
        {"name": "b", "value": 2, "time": 7},
        {"name": "c", "value": 3, "status": "ok", "time": 7},
    ]
    assert [reason for reason, _ in rejects] == ["bad_json", "not_utf8", "not_object"]


def test_blank_lines_are_skipped_silently() -> None:
    """Empty and whitespace-only lines (keep-alives, CR leftovers) are silently skipped."""
    events, rejects = collect([b"", b"   ", b"\r", b"\t"])
    assert events == [] and rejects == []


def test_an_empty_line_between_events_skips_only_itself() -> None:
    """Blank lines (a double newline, a keep-alive) are skipped; the events after them stay."""
    lines = [b'{"name":"a","time":1}', b"", b"   ", b'{"name":"b","time":2}']
    rejects: list[str] = []
    events = parse_lines(lines, lambda reason, message, sample: rejects.append(reason))
    assert [e["name"] for e in events] == ["a", "b"]
    assert rejects == []  # nothing was wrong with a blank line


def test_a_line_of_exactly_the_cap_is_kept_in_a_stream_and_in_a_message() -> None:
    """The cap is inclusive: a line of max_line bytes is kept, one byte more is not."""
    exact, over = b"x" * 8, b"y" * 9
    assert split_message(exact + b"\nok\n" + over, limit=8) == ([exact, b"ok"], 1)
    assert split_message(b"ok\nfine", limit=8) == ([b"ok", b"fine"], 0)
    framer = LineFramer(max_line=8)
    assert framer.feed(exact + b"\n" + over + b"\nok\n") == [exact, b"ok"]
    assert framer.overlong == 1


def test_after_skipping_an_overlong_line_the_framer_reads_normally_again() -> None:
    """An overlong line whose newline comes in a later read is skipped once; every line
    after it, in that read and the next ones, comes through."""
    framer = LineFramer(max_line=8)
    assert framer.feed(b"x" * 20) == []  # over the cap: skipping to its newline
    assert framer.feed(b"xx\nok1\n") == [b"ok1"]
    assert framer.feed(b"ok2\n") == [b"ok2"]
    assert framer.feed(b"o") == [] and framer.feed(b"k3\n") == [b"ok3"]
    assert framer.overlong == 1


def test_lines_orjson_refuses_get_the_event_models_reasons_and_good_ones_are_kept() -> None:
    """Over the wire, as in numbat.event.parse: a lone surrogate is not_utf8, 1e400 and NaN
    are bad_value (not bad_json), and an event orjson cannot read but the event model
    can (an integer past 64 bits in an extra field) is kept."""
    lines = [
        b'{"name":"a","s":"\\ud800"}',
        b'{"name":"a","value":1e400}',
        b'{"name":"a","value":NaN}',
        b'{"name":"big","n":123456789012345678901234567890,"time":7}',
        b"{nope",
        b"\xff\xfe",
    ]
    reasons: list[str] = []
    events = parse_lines(lines, lambda reason, message, sample: reasons.append(reason))
    assert reasons == ["not_utf8", "bad_value", "bad_value", "bad_json", "not_utf8"]
    assert [(e["name"], e["time"]) for e in events] == [("big", 7)]


def test_times_in_other_units_are_reported_whichever_reader_takes_the_line() -> None:
    """A converted time is reported through ``converted`` when orjson reads the line and
    when only the event model's reader can (nanoseconds past 64 bits)."""
    lines = [
        b'{"name":"a","time":1795996339}',
        b'{"name":"b","time":99999999999999999999}',
        b'{"name":"c","time":1795996339260}',
        b'{"name":"d","time":1795996339260123}',
    ]
    units: list[str] = []
    events = parse_lines(lines, lambda *rejected: None, converted=units.append)
    assert [e["time"] for e in events] == [1795996339000, 10**14, 1795996339260, 1795996339260]
    assert units == ["s", "ns", "us"]
