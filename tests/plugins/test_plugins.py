"""Plug-ins loaded by import path: an output and a listener that live outside numbat."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from numbat.config import from_dict
from numbat.errors import ConfigError
from tests.collector.conftest import LOOPBACK, config, line, memory, running, until
from tests.plugins.http_listener import HTTPListener

HTTP = "tests.plugins.http_listener:HTTPListener"
JSONFILE = "tests.plugins.jsonfile_output:JSONFileOutput"


def test_a_third_party_listener_and_output_run_in_the_collector(tmp_path: Path) -> None:
    """Events POSTed to the plug-in listener reach the plug-in output (and the others);
    bad lines are counted by the listener like any built-in's."""
    out = tmp_path / "web.jsonl"
    cfg = config(
        [{"type": HTTP, "uri": f"http://{LOOPBACK}:0/events"}],
        [
            {"type": "tests.collector.conftest:MemoryOutput", "name": "mem"},
            {"type": JSONFILE, "name": "web", "path": str(out), "match": "web.*"},
        ],
    )

    async def main() -> None:
        async with running(cfg) as collector:
            (lis,) = collector.listeners.values()
            assert isinstance(lis, HTTPListener)
            body = line(0, name="web.hits") + b"not json\n" + line(1, name="db.q")
            async with aiohttp.ClientSession() as session:
                url = f"http://{LOOPBACK}:{lis.port}/events"
                async with session.post(url, data=body) as resp:
                    assert resp.status == 204
            await until(lambda: len(memory(collector).traffic()) == 2, what="two events")
            assert collector.stats.get("rejected", listener=lis.label, reason="bad_json") == 1
            await until(out.exists, what="the plug-in output's file")

    asyncio.run(main())
    assert [json.loads(raw)["seq"] for raw in out.read_text().splitlines()] == [0]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"listen": [{"type": HTTP, "uri": "http://h:1/", "max_body_bytes": 0}]},
            "listen[0].max_body_bytes: must be positive",
        ),
        (
            {"listen": [{"type": HTTP, "uri": "http://h:1/", "bogus": 1}]},
            "listen[0].bogus: unknown key",
        ),
        ({"outputs": [{"type": JSONFILE}]}, "outputs[0].path: required"),
        ({"outputs": [{"type": "tests.plugins.nope:X"}]}, "outputs[0].type: cannot import"),
        (
            {"listen": [{"type": "tests.plugins.http_listener:Nope", "uri": "http://h:1/"}]},
            "listen[0].type: cannot import",
        ),
    ],
    ids=["option-range", "unknown-key", "missing-key", "no-module", "no-class"],
)
def test_plug_in_options_are_validated_naming_the_key(
    table: dict[str, object], message: str
) -> None:
    """A plug-in's own keys are checked by its Options, errors name the key path."""
    with pytest.raises(ConfigError) as info:
        from_dict({"collector": table})
    assert f"collector.{message}" in str(info.value)
