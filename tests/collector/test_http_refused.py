"""A stream listener (tcp, unix) closes a connection that opens with an HTTP request, so
a web page cannot inject events through it (a cross-site POST reaches any port)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.collector.conftest import (
    LOOPBACK,
    address,
    config,
    line,
    listener,
    memory,
    refused,
    running,
    seqs,
    until,
)
from tests.collector.test_listeners import closed_by_peer, send, tcp_connect

INJECTED = b'\n{"name":"injected","value":666}\n'

REQUESTS = {
    # what curl -X POST --data-binary $'\n{"name":"injected","value":666}\n' sends
    "post": b"POST / HTTP/1.1\r\nHost: 127.0.0.1:3333\r\nUser-Agent: curl/8.5.0\r\n"
    b"Accept: */*\r\nContent-Length: 34\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\n\r\n" + INJECTED,
    "get": b"GET /?x=1 HTTP/1.0\r\n\r\n" + INJECTED,
    "odd-method": b"PROPFIND /dav HTTP/1.1\r\n\r\n" + INJECTED,
}


@pytest.mark.parametrize("request_name", list(REQUESTS))
@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_a_connection_opening_with_an_http_request_is_closed_and_nothing_kept(
    kind: str, request_name: str, short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An HTTP request's connection is closed at once, none of its lines stored nor
    rejected one by one, counted as refused (http_request) and logged; others go on."""

    async def main() -> None:
        where = f"unix://{short_dir / 's.sock'}" if kind == "unix" else f"tcp://{LOOPBACK}:0"
        async with running(config([where])) as collector:
            addr = address(collector, kind)
            web = await tcp_connect(addr)
            await send(web, REQUESTS[request_name])
            assert await closed_by_peer(web)
            web.close()
            assert refused(collector, "http_request", kind) == 1
            label = listener(collector, kind).label
            assert collector.stats.get("rejected", listener=label, reason="bad_json") == 0
            legit = await tcp_connect(addr)
            await send(legit, line(0), json.dumps({"name": "GET / HTTP/1.1"}).encode() + b"\n")
            await until(lambda: len(memory(collector).traffic()) == 2, what="2 events")
            legit.close()
            names = [e["name"] for e in memory(collector).traffic()]
            assert names == ["t.ev", "GET / HTTP/1.1"]
            assert seqs(memory(collector).traffic()) == [0]

    asyncio.run(main())
    assert "sent an HTTP request" in caplog.text


@pytest.mark.parametrize("first", [b"OPTIONS ", b"Host: example.com", b"GET /", b"POST"])
def test_a_first_line_that_is_no_whole_request_line_is_just_a_bad_line(first: bytes) -> None:
    """Junk that merely starts like HTTP (no target and version) is rejected as a line;
    the events after it on the same connection arrive (found by the fuzz test)."""

    async def main() -> None:
        async with running(config([f"tcp://{LOOPBACK}:0"])) as collector:
            sock = await tcp_connect(address(collector, "tcp"))
            await send(sock, first + b"\n" + line(0) + line(1))
            await until(lambda: len(memory(collector).traffic()) == 2, what="2 events")
            sock.close()
            assert refused(collector, "http_request", "tcp") == 0

    asyncio.run(main())
