"""The PagerDuty notifier against a local Events API v2 server: exact events, answers."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from aiohttp import web

from numbat.analyzer.model import Notification
from numbat.analyzer.notifiers import Dispatcher, NotifyError
from numbat.analyzer.notifiers.pagerduty import PagerDutyNotifier
from numbat.config import loads
from numbat.errors import ConfigError
from numbat.server.stats import Stats
from tests.analyzer.notifiers.helpers import (
    T0,
    FakeLog,
    Received,
    incident,
    notification,
    options,
    recorder,
)

KEY = "R0UT1NGKEY0123456789abcdefabcdef"


def accept(got: Received) -> web.Response:
    """PagerDuty's answer to a valid event (the documented shape), 400 otherwise."""
    body = got.json()
    valid = (
        body.get("routing_key") == KEY
        and body.get("event_action") in ("trigger", "resolve")
        and (
            body["event_action"] == "resolve"
            or {"summary", "source", "severity"} <= set(body.get("payload", {}))
        )
    )
    if not valid:
        return web.json_response(
            {"status": "invalid event", "message": "Event object is invalid", "errors": [KEY]},
            status=400,
        )
    reply = {"status": "success", "message": "Event processed", "dedup_key": body["dedup_key"]}
    return web.json_response(reply, status=202)


def posted(n: Notification, **extra: Any) -> list[Any]:
    async def main() -> list[Received]:
        async with recorder(reply=accept) as server:
            pd = PagerDutyNotifier(
                options(type="pagerduty", routing_key=KEY, url=server.url + "/v2/enqueue", **extra)
            )
            await pd.send(n)
            await pd.close()
            return server.received

    got = asyncio.run(main())
    assert all((r.method, r.path) == ("POST", "/v2/enqueue") for r in got)
    return [r.json() for r in got]


def test_a_new_incident_triggers_with_the_incident_id_as_dedup_key() -> None:
    """new -> one trigger: dedup_key, summary, source, severity, timestamp, details."""
    new = incident(value=2.0, breached_value=1.0, tags={"app": "web"})
    assert posted(notification(new=[new]), client_url="https://numbat.example/") == [
        {
            "routing_key": KEY,
            "event_action": "trigger",
            "dedup_key": "web-1.web.heartbeat",
            "payload": {
                "summary": "web-1.web heartbeat not heard for 2 beats",
                "source": "web-1",
                "severity": "critical",
                "timestamp": "2023-11-14T22:13:21.000Z",
                "component": "web.heartbeat",
                "class": "heartbeat",
                "custom_details": {
                    "incident": "web-1.web.heartbeat",
                    "status": "critical",
                    "change": "new",
                    "value": 2.0,
                    "breached_at": "2023-11-14T22:13:20.000Z",
                    "breached_value": 1.0,
                    "tags": {"app": "web"},
                },
            },
            "client": "numbat",
            "client_url": "https://numbat.example/",
        }
    ]


def test_resolves_changes_and_severities_map_to_events() -> None:
    """resolved -> resolve; changed -> trigger at the new severity; unknown -> error."""
    gone = incident(status="ok", notified="critical", resolved_at=T0 + 5000)
    lowered = incident("web.load", status="warning", message="")
    unknown = incident("web.check", host="", status="unknown", message="")
    sent = posted(notification(changed=[lowered], new=[unknown], resolved=[gone]), source="dc1")
    assert [(e["event_action"], e["dedup_key"]) for e in sent] == [
        ("trigger", ".web.check"),
        ("trigger", "web-1.web.load"),
        ("resolve", "web-1.web.heartbeat"),
    ]
    assert sent[2] == {"routing_key": KEY, "event_action": "resolve", "dedup_key": gone.id}
    assert [e["payload"]["severity"] for e in sent[:2]] == ["error", "warning"]
    assert sent[0]["payload"]["source"] == "dc1"  # no host: the configured source
    assert sent[1]["payload"]["summary"] == "warning: web-1.web.load"


def test_reminders_of_still_firing_incidents_are_not_sent() -> None:
    """A repeat of still-firing incidents sends no event: PagerDuty escalates itself."""
    assert posted(notification(still_firing=[incident()], repeat=True)) == []


def test_a_long_message_is_cut_to_pagerdutys_summary_limit() -> None:
    """payload.summary is at most 1024 characters."""
    sent = posted(notification(new=[incident(message="x" * 5000)]))
    assert sent[0]["payload"]["summary"] == "x" * 1024


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (429, True), (500, True)])
def test_answers_map_to_retryable_or_not_and_never_show_the_key(
    status: int, retryable: bool
) -> None:
    """400 is not retried, 429/5xx are; the routing key, even echoed, is masked."""

    async def main() -> NotifyError:
        reply = web.Response(status=status, text=json.dumps({"errors": [f"bad key {KEY}"]}))
        async with recorder(reply=lambda _: reply) as server:
            pd = PagerDutyNotifier(
                options(type="pagerduty", routing_key=KEY, url=server.url + "/v2/enqueue")
            )
            with pytest.raises(NotifyError) as caught:
                await pd.send(notification(new=[incident()]))
            await pd.close()
            return caught.value

    error = asyncio.run(main())
    assert error.retryable is retryable
    assert KEY not in str(error) and "bad key ***" in str(error)


def test_rate_limited_events_are_retried_and_the_key_stays_out_of_the_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through the dispatcher: 429 then 202 sends it; no log line holds the key."""
    counts = Stats(host="h", prefix="numbat.analyzer")

    async def main() -> FakeLog:
        answers = [429]

        def limited(got: Received) -> web.Response:
            if answers:
                return web.Response(status=answers.pop(), text=f"slow down {KEY}")
            return accept(got)

        async with recorder(reply=limited) as server:
            log = FakeLog()
            config = options(type="pagerduty", routing_key=KEY, url=server.url + "/v2/enqueue")

            async def no_wait(_: float) -> None:
                return None

            dispatcher = Dispatcher([config], log, counts, sleep=no_wait)
            await dispatcher.start()
            n = notification(new=[incident()])
            row = log.add("pagerduty", n)
            dispatcher.enqueue([(row, "pagerduty", n)])
            await log.wait_done([row])
            await dispatcher.close(1.0)
            return log

    with caplog.at_level(logging.DEBUG):
        log = asyncio.run(main())
    assert log.done[1] == ("sent", "")
    assert counts.get("notifications", notifier="pagerduty", outcome="retried") == 1
    assert "answered 429" in caplog.text and KEY not in caplog.text


def test_config_requires_a_routing_key_and_names_the_key() -> None:
    """routing_key is required and non-empty; url must be http(s); errors name the key."""
    head = '[[analyzer.notifiers]]\ntype = "pagerduty"\n'
    with pytest.raises(ConfigError, match=r"notifiers\[0\]\.routing_key: required"):
        loads(head)
    with pytest.raises(ConfigError, match=r"notifiers\[0\]\.routing_key: must not be empty"):
        loads(head + 'routing_key = " "\n')
    with pytest.raises(ConfigError) as caught:
        loads(head + f'routing_key = "{KEY}"\nurl = "events.pagerduty.com"\n')
    assert "notifiers[0].url:" in str(caught.value) and KEY not in str(caught.value)
    with pytest.raises(ConfigError, match=r"routing_key: only pagerduty notifiers take"):
        loads('[[analyzer.notifiers]]\ntype = "log"\nrouting_key = "k"\n')
    config = loads(head + f'routing_key = "{KEY}"\n').analyzer
    assert config is not None
    assert config.notifier_configs[0].url == "https://events.pagerduty.com/v2/enqueue"  # type: ignore[attr-defined]
