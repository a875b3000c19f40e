"""The analyzer daemon in-process: events in over TCP, the HTTP API (reads, silences,
acknowledgements, forget, auth, bad input), its own alert events ignored, write-back to a
collector that comes and goes, and reload keeping incidents."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from numbat.analyzer.daemon import Analyzer
from numbat.analyzer.state import StateError
from numbat.config import Config, from_dict
from numbat.errors import ConfigError
from tests.collector.conftest import until


def _config(tmp_path: Path, **analyzer: Any) -> Config:
    section: dict[str, Any] = {
        "listen": ["tcp://127.0.0.1:0"],
        "http": "http://127.0.0.1:0",
        "data_dir": str(tmp_path / "state"),
        "tick_interval": 0.05,
        "writeback": {"uri": ""},
        **analyzer,
    }
    return from_dict({"analyzer": section})


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[Analyzer]:
    analyzer = Analyzer(config, hostname="test-host")
    await analyzer.start()
    try:
        yield analyzer
    finally:
        await analyzer.stop(drain_timeout=1.0)


def _port(analyzer: Analyzer) -> int:
    (listener,) = analyzer.listeners.values()
    server = listener.server  # type: ignore[attr-defined]
    port: int = server.sockets[0].getsockname()[1]
    return port


async def _send(analyzer: Analyzer, *events: dict[str, Any]) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", _port(analyzer))
    writer.write(b"".join(json.dumps(e).encode() + b"\n" for e in events))
    await writer.drain()
    writer.close()
    await writer.wait_closed()


class Api:
    def __init__(self, analyzer: Analyzer, session: aiohttp.ClientSession) -> None:
        self.base = f"http://127.0.0.1:{analyzer.api.port}/api/v1"
        self.session = session

    async def __call__(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(
            method, self.base + path, json=body, headers=headers
        ) as answer:
            return answer.status, await answer.json()


@asynccontextmanager
async def api(analyzer: Analyzer) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(analyzer, session)


def _critical(name: str = "backup", host: str = "db-1", **fields: Any) -> dict[str, Any]:
    return {"name": name, "host": host, "status": "critical", "description": "full", **fields}


def test_events_over_tcp_open_incidents_the_api_lists(tmp_path: Path) -> None:
    """A critical status event sent over TCP is an open incident in GET /incidents, with
    its history in GET /incidents/{id}; health counts it."""

    async def main() -> None:
        async with running(_config(tmp_path)) as analyzer, api(analyzer) as call:
            await _send(analyzer, _critical(), {"name": "cpu", "host": "db-1", "value": 3})
            await until(lambda: bool(analyzer.manager.incidents()), what="the incident")
            status, body = await call("GET", "/incidents")
            assert status == 200
            assert [(i["id"], i["status"], i["muted_by"]) for i in body["incidents"]] == [
                ("db-1.backup", "critical", None)
            ]
            await until(lambda: analyzer.manager.dirty is False)
            status, body = await call("GET", "/incidents/db-1.backup")
            assert status == 200 and body["incident"]["message"] == "full"
            await until(lambda: analyzer.state is not None)
            status, health = await call("GET", "/health")
            assert (status, health["open_incidents"]) == (200, 1)
            assert "status" in health["rules"]

    asyncio.run(main())


def test_silences_and_acks_through_the_api(tmp_path: Path) -> None:
    """POST /silences mutes a matching incident (muted_by says which), DELETE expires
    it; a planned window's duration counts from its starts_at; POST /acks records who
    acknowledged."""

    async def main() -> None:
        async with running(_config(tmp_path)) as analyzer, api(analyzer) as call:
            status, silence = await call(
                "POST",
                "/silences",
                {"host": "db-*", "duration": 600, "author": "ana", "comment": "maintenance"},
            )
            assert status == 201 and silence["author"] == "ana"
            await _send(analyzer, _critical())
            await until(lambda: bool(analyzer.manager.incidents()), what="the incident")
            _, body = await call("GET", "/incidents")
            assert body["incidents"][0]["muted_by"] == f"silence:{silence['id']}"
            status, _ = await call("DELETE", f"/silences/{silence['id']}")
            assert status == 200
            _, body = await call("GET", "/silences")
            assert body["silences"] == []
            later = analyzer.clock() + 3_600_000
            window = {"host": "db-2", "starts_at": later, "duration": 7200, "author": "ana"}
            status, planned = await call("POST", "/silences", window)
            assert status == 201 and planned["ends_at"] - planned["starts_at"] == 7_200_000
            status, acked = await call(
                "POST", "/acks", {"incident": "db-1.backup", "author": "bo", "comment": "on it"}
            )
            assert (status, acked["acked_by"], acked["ack_comment"]) == (200, "bo", "on it")

    asyncio.run(main())


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("GET", "/incidents?state=maybe", None, 400, "state: got 'maybe'"),
        ("GET", "/incidents?stat=open", None, 400, "stat: unknown parameter"),
        ("GET", "/incidents/nope", None, 404, "no incident 'nope'"),
        ("POST", "/acks", {"incident": "nope", "author": "a"}, 404, "no open incident"),
        ("POST", "/acks", {"incident": "x"}, 400, "author: required"),
        ("POST", "/silences", {"author": "a"}, 400, "give ends_at"),
        ("POST", "/silences", {"author": "a", "duration": "1h"}, 400, "duration: expected"),
        ("POST", "/silences", {"author": "a", "duration": 5, "tags": [1]}, 400, "tags:"),
        ("POST", "/silences", [1, 2], 400, "must be a JSON object"),
        ("POST", "/silences", {"author": "a", "duration": 5, "hots": "w"}, 400, "hots: unknown"),
        ("POST", "/silences", {"author": "a", "duration": 5, "host": ""}, 400, "give name, host"),
        ("POST", "/silences", {"author": "a", "ends_at": 1e23}, 400, "ends_at: must be from"),
        ("POST", "/silences", {"author": "a", "duration": 1e308}, 400, "duration: must be"),
        (
            "POST",
            "/silences",
            {"author": "a", "duration": 5, "starts_at": -1},
            400,
            "starts_at: must be from 0",
        ),
        ("POST", "/acks", {"incident": "x", "author": "a", "by": "b"}, 400, "by: unknown key"),
        ("DELETE", "/silences/nope", None, 404, "no silence 'nope'"),
        ("POST", "/heartbeats/forget", {}, 400, "key: required"),
    ],
)
def test_bad_api_calls_get_a_4xx_naming_what_is_wrong(
    tmp_path: Path, method: str, path: str, body: Any, status: int, error: str
) -> None:
    """Each bad call gets its status and a JSON error naming the problem."""

    async def main() -> None:
        async with running(_config(tmp_path)) as analyzer, api(analyzer) as call:
            got, answer = await call(method, path, body)
            assert got == status and error in answer["error"], answer

    asyncio.run(main())


def test_mutations_need_the_token_when_one_is_set(tmp_path: Path) -> None:
    """With a token, POST/DELETE without it (or with another) are 401; reads are open."""

    async def main() -> None:
        config = _config(tmp_path, token="s3cret")
        async with running(config) as analyzer, api(analyzer) as call:
            silence = {"host": "web-1", "duration": 60, "author": "a"}
            assert (await call("POST", "/silences", silence))[0] == 401
            status, answer = await call("POST", "/silences", silence, token="wrong")
            assert status == 401 and "s3cret" not in json.dumps(answer)
            assert (await call("POST", "/silences", silence, token="s3cret"))[0] == 201
            lower = {"Authorization": "bearer s3cret"}  # the scheme is case-insensitive
            async with call.session.post(call.base + "/silences", json=silence, headers=lower) as r:
                assert r.status == 201
            assert (await call("GET", "/silences"))[0] == 200

    asyncio.run(main())


def test_forget_stops_tracking_a_heartbeat_and_resolves_its_incident(tmp_path: Path) -> None:
    """GET /heartbeats lists the key and its host as missing once a beat is missed;
    POST /heartbeats/forget: the key is no longer tracked and its open incident
    resolves; an unknown key answers forgotten=false."""
    clock = [1_700_000_000_000]

    async def main() -> None:
        analyzer = Analyzer(_config(tmp_path), hostname="t", clock=lambda: clock[0])
        await analyzer.start()
        try:
            async with api(analyzer) as call:
                await _send(analyzer, {"name": "web.heartbeat", "host": "web-1", "ttl": 1000})
                await until(lambda: analyzer.stats.get("alerts") == 0 and _tracked(analyzer))
                clock[0] += 5_000
                analyzer.tick()
                await until(lambda: bool(analyzer.manager.incidents()), what="the miss")
                _, beats = await call("GET", "/heartbeats")
                assert beats["hosts"] == {"beating": [], "missing": ["web-1"]}
                assert [(k["key"], k["missed"], k["ttl"]) for k in beats["heartbeats"]] == [
                    ("web-1.web", 1, 1000)
                ]
                _, answer = await call("POST", "/heartbeats/forget", {"key": "web-1.web"})
                assert answer == {"key": "web-1.web", "forgotten": True}
                assert (await call("GET", "/heartbeats"))[1]["heartbeats"] == []
                assert _heartbeats(analyzer) == []
                clock[0] += 60_000
                analyzer.tick()
                assert _heartbeats(analyzer) == []
                _, answer = await call("POST", "/heartbeats/forget", {"key": "web-1.web"})
                assert answer["forgotten"] is False
        finally:
            await analyzer.stop(drain_timeout=1.0)

    asyncio.run(main())


def _heartbeats(analyzer: Analyzer) -> list[str]:
    return [i.id for i in analyzer.manager.incidents() if i.rule == "heartbeat"]


def _tracked(analyzer: Analyzer) -> bool:
    return analyzer.stats.get("received", listener=next(iter(analyzer.listeners))) >= 1


def test_its_own_alert_events_are_dropped_at_the_input_and_counted(tmp_path: Path) -> None:
    """numbat.alert / numbat.alerts events (its write-back coming round again) feed no
    rule: counted skipped, reason=own_alert."""

    async def main() -> None:
        async with running(_config(tmp_path)) as analyzer:
            own = {"name": "numbat.alert", "host": "h", "status": "critical", "alert": "x"}
            await _send(analyzer, own, {**own, "name": "numbat.alerts"}, _critical())
            await until(lambda: analyzer.stats.get("skipped", reason="own_alert") == 2)
            assert [i.id for i in analyzer.manager.incidents()] == ["db-1.backup"]

    asyncio.run(main())


def test_alert_events_wait_for_the_collector_and_reach_it(tmp_path: Path) -> None:
    """With the collector down, write-back events wait in the state database; once it
    listens they arrive, each once, as numbat.alert and numbat.alerts events."""
    received: list[dict[str, Any]] = []

    async def collector(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.extend(json.loads(line) for line in (await reader.read()).splitlines())
        writer.close()

    async def main() -> None:
        probe = await asyncio.start_server(collector, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        config = _config(tmp_path, writeback={"uri": f"tcp://127.0.0.1:{port}"})
        async with running(config) as analyzer:
            await _send(analyzer, _critical())
            await until(lambda: analyzer.stats.get("writeback_failed") >= 1, 10.0)
            server = await asyncio.start_server(collector, "127.0.0.1", port)
            try:
                await until(
                    lambda: {e["name"] for e in received} >= {"numbat.alert", "numbat.alerts"},
                    15.0,
                    "the write-back",
                )
            finally:
                server.close()
        alerts = [e for e in received if e["name"] == "numbat.alert"]
        assert [(e["incident"], e["status"], e["kind"]) for e in alerts] == [
            ("db-1.backup", "critical", "opened")
        ]

    asyncio.run(main())


def test_a_reload_keeps_incidents_and_a_bad_rule_keeps_the_running_config(
    tmp_path: Path,
) -> None:
    """reload() with a new rule keeps the open incident; a config whose rule cannot be
    built raises and leaves rules and incidents as they were."""

    async def main() -> None:
        async with running(_config(tmp_path)) as analyzer:
            await _send(analyzer, _critical())
            await until(lambda: bool(analyzer.manager.incidents()), what="the incident")
            before = [b.name for b in analyzer.engine.rules]
            extra = {"rules": {"big": {"type": "threshold", "match": {"name": "x"}, "warn": 1}}}
            await analyzer.reload(_config(tmp_path, **extra))
            assert [b.name for b in analyzer.engine.rules] == [*before, "big"]
            assert [i.id for i in analyzer.manager.incidents()] == ["db-1.backup"]
            bad = {"rules": {"mine": {"type": "tests.analyzer.test_daemon:Refuses"}}}
            with pytest.raises(ConfigError, match=r"analyzer\.rules\.mine: refuses"):
                await analyzer.reload(from_dict({"analyzer": {**_raw(tmp_path), **bad}}))
            assert [b.name for b in analyzer.engine.rules] == [*before, "big"]
            assert [i.id for i in analyzer.manager.incidents()] == ["db-1.backup"]

    asyncio.run(main())


class Refuses:
    """A custom rule whose options pass validation but which refuses to be built."""

    def __init__(self, options: Any, *, name: str, clock: Any) -> None:
        raise ValueError("refuses")


def _raw(tmp_path: Path) -> dict[str, Any]:
    return {"http": "http://127.0.0.1:0", "data_dir": str(tmp_path / "state")}


def test_a_failed_commit_is_retried_and_its_changes_are_not_lost(tmp_path: Path) -> None:
    """The state commit fails (a full disk): counted state_errors, health says degraded
    (503); once it takes commits again, the failed changes and those made meanwhile are
    all committed by themselves, with no new change needed."""

    async def main() -> None:
        async with running(_config(tmp_path)) as analyzer, api(analyzer) as call:
            assert analyzer.state is not None
            store = analyzer.state.store
            real = store.commit
            disk_full = [True]

            def commit(*args: Any) -> list[int]:
                if disk_full[0]:
                    raise StateError(f"{store.path}: commit: disk I/O error")
                return real(*args)

            store.commit = commit  # type: ignore[method-assign,assignment]
            await _send(analyzer, _critical())
            await until(lambda: analyzer.stats.get("state_errors") >= 1, what="the failure")
            await _send(analyzer, _critical("restore"))
            await until(lambda: analyzer.manager.get("db-1.restore") is not None, what="it")
            status, health = await call("GET", "/health")
            assert (status, health["status"]) == (503, "degraded")
            assert "state commits fail: " in health["problems"][0]
            disk_full[0] = False
            await until(lambda: analyzer._unsaved is None, 10.0, "the retry")
            for incident in ("db-1.backup", "db-1.restore"):
                _, body = await call("GET", f"/incidents/{incident}")
                assert [h["kind"] for h in body["history"]] == ["opened"], incident
            assert (await call("GET", "/health"))[1]["status"] == "ok"

    asyncio.run(main())


def test_a_changed_config_file_is_reloaded_and_a_broken_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Watching its config file: a new rule written to it runs without a SIGHUP; a file
    broken next keeps the running rules (reload_failed counted)."""
    from numbat.analyzer import daemon as daemon_module
    from numbat.config import load

    monkeypatch.setattr(daemon_module, "WATCH_INTERVAL", 0.05)
    path = tmp_path / "numbat.toml"
    base = (
        '[analyzer]\nlisten = ["tcp://127.0.0.1:0"]\nhttp = "http://127.0.0.1:0"\n'
        f'data_dir = "{tmp_path / "state"}"\n[analyzer.writeback]\nuri = ""\n'
    )
    path.write_text(base)

    async def main() -> None:
        analyzer = Analyzer(load(path), hostname="t")
        analyzer._load, analyzer._watched = (lambda: load(path)), path
        await analyzer.start()
        try:

            def names() -> list[str]:
                return [b.name for b in analyzer.engine.rules]

            assert "big" not in names()
            path.write_text(
                base + '[analyzer.rules.big]\ntype = "threshold"\nmatch = {name = "x"}\nwarn = 1\n'
            )
            await until(lambda: "big" in names(), 10.0, "the reload")
            path.write_text(base + "[analyzer.rules.big\n")
            await until(lambda: analyzer.stats.get("reload_failed") == 1, 10.0, "the refusal")
            assert "big" in names()
        finally:
            await analyzer.stop(drain_timeout=1.0)

    asyncio.run(main())


def test_a_web_page_cannot_make_the_api_silence_anything(tmp_path: Path) -> None:
    """With no token (numbat up's default), a cross-site POST (a foreign Origin, or a
    text/plain body a page can send without asking) is refused; the CLI's JSON is not."""

    async def main() -> None:
        async with running(_config(tmp_path)) as analyzer, api(analyzer) as call:
            body = json.dumps({"name": "*", "duration": 60, "author": "x"})
            url = call.base + "/silences"
            plain = {"Content-Type": "text/plain"}
            async with call.session.post(url, data=body, headers=plain) as r:
                assert r.status == 415
            evil = {"Content-Type": "application/json", "Origin": "https://evil.example"}
            async with call.session.post(url, data=body, headers=evil) as r:
                assert r.status == 403 and "evil.example" in (await r.json())["error"]
            own = {"Content-Type": "application/json", "Origin": call.base.rsplit("/api", 1)[0]}
            async with call.session.post(url, data=body, headers=own) as r:
                assert r.status == 201
            assert len(analyzer.manager.silences()) == 1

    asyncio.run(main())


def test_stopping_during_a_commit_never_commits_the_same_changes_twice(tmp_path: Path) -> None:
    """SIGTERM while a commit is on the state thread: the commit finishes and stop()
    does not write the same changes (and notification rows) again."""
    import threading

    async def main() -> None:
        analyzer = Analyzer(_config(tmp_path), hostname="t")
        await analyzer.start()
        assert analyzer.state is not None
        store = analyzer.state.store
        real = store.commit
        entered, release = threading.Event(), threading.Event()
        rows: list[int] = []

        def commit(effects: Any, routed: Any) -> list[int]:
            if routed:
                entered.set()
                release.wait(10)
            done = real(effects, routed)
            rows.extend(done)
            return done

        store.commit = commit  # type: ignore[method-assign,assignment]
        await _send(analyzer, _critical())
        await asyncio.to_thread(entered.wait, 10)
        stopping = asyncio.create_task(analyzer.stop(drain_timeout=1.0))
        await asyncio.sleep(0.1)
        release.set()
        await stopping
        assert len(rows) == 1, rows

    asyncio.run(main())


def test_a_loopback_api_answers_only_loopback_host_names(tmp_path: Path) -> None:
    """DNS rebinding: a request naming another host (a page whose name now resolves to
    127.0.0.1) is refused, reads and mutations alike; loopback names are answered."""

    async def main() -> None:
        async with running(_config(tmp_path)) as analyzer, api(analyzer) as call:
            port = analyzer.api.port
            evil = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
            async with call.session.get(call.base + "/incidents", headers=evil) as r:
                assert r.status == 403 and "evil.example" in (await r.json())["error"]
            body = {"name": "*", "duration": 60, "author": "x"}
            async with call.session.post(call.base + "/silences", json=body, headers=evil) as r:
                assert r.status == 403
            for name in ("localhost", "127.0.0.1"):
                async with call.session.get(
                    call.base + "/health", headers={"Host": f"{name}:{port}"}
                ) as r:
                    assert r.status == 200
            assert analyzer.manager.silences() == []

    asyncio.run(main())
