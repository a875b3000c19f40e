"""counter(), gauge(), timing() and annotate(): events with a display hint in `type`,
on the same wire as any event."""

from __future__ import annotations

import asyncio
import json

import numbat
from numbat import AsyncEmitter
from numbat.hints import hint_of
from numbat.testing import CaptureEmitter, capture_metrics


def test_each_method_sets_its_hint_and_value() -> None:
    """Each method sends its value with `type` naming the hint; other fields pass."""
    em = CaptureEmitter(app="web", host="h")
    em.counter("requests", route="/")
    em.counter("bytes", 512)
    em.gauge("queue", 7, queue="mail")
    em.timing("db.query", 12.5, table="users")
    kept = [(e["name"], e["value"], e["type"]) for e in em.events]
    assert kept == [
        ("web.requests", 1, "counter"),
        ("web.bytes", 512, "counter"),
        ("web.queue", 7, "gauge"),
        ("web.db.query", 12.5, "timing"),
    ]
    assert em.events[0]["route"] == "/" and em.events[3]["table"] == "users"
    assert [hint_of(e) for e in em.events] == ["counter", "counter", "gauge", "timing"]


def test_annotate_sends_text_and_no_value() -> None:
    """annotate sends the description; with no value given the event model fills 1."""
    em = CaptureEmitter(app="web", host="h")
    event = em.annotate("deploy", "v1.2 by <ann>", version="1.2")
    assert event is not None
    (sent,) = em.events
    assert sent["type"] == "annotation" and sent["description"] == "v1.2 by <ann>"
    assert sent["value"] == 1 and sent["version"] == "1.2"


def test_method_hint_wins_over_a_type_field() -> None:
    """A `type` passed among the fields cannot contradict the method's hint."""
    em = CaptureEmitter(app="web", host="h")
    em.gauge("queue", 3, type="counter")
    assert em.events[0]["type"] == "gauge"


def test_invalid_value_is_dropped_and_counted() -> None:
    """A bad value is dropped and counted as invalid, never raised, as for metric()."""
    em = CaptureEmitter(app="web", host="h")
    assert em.gauge("queue", float("nan")) is None
    assert em.timing("db.query", "slow") is None  # type: ignore[arg-type]
    assert em.dropped["invalid"] == 2 and em.events == []


def test_global_functions_use_the_global_emitter() -> None:
    """numbat.counter/gauge/timing/annotate send through the global emitter, else no-op."""
    numbat.set_global_emitter(None)
    assert numbat.counter("x") is None
    with capture_metrics(app="web") as events:
        numbat.counter("requests")
        numbat.gauge("queue", 2)
        numbat.timing("db.query", 3)
        numbat.annotate("deploy", "v2")
    assert [e["type"] for e in events] == ["counter", "gauge", "timing", "annotation"]


def test_wire_is_ndjson_with_type_as_a_field() -> None:
    """Over TCP the hint is one more JSON field of the event (the original's wire)."""

    async def main() -> list[dict[str, object]]:
        lines: list[bytes] = []
        arrived = asyncio.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            async for line in reader:
                lines.append(line)
                if len(lines) == 2:
                    arrived.set()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        em = AsyncEmitter(f"tcp://127.0.0.1:{port}", app="aio", host="h")
        em.counter("hits", 2)
        em.annotate("deploy", "v3")
        await asyncio.wait_for(arrived.wait(), 10)
        await em.aclose()
        server.close()
        return [json.loads(line) for line in lines]

    first, second = asyncio.run(main())
    assert first["name"] == "aio.hits" and first["value"] == 2 and first["type"] == "counter"
    assert second["type"] == "annotation" and second["description"] == "v3"
    assert second["value"] == 1  # none given: the event model's default, as for metric()
