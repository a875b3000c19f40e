"""The webhook notifier against a local HTTP server: payload, headers, errors, secrets."""

from __future__ import annotations

import asyncio
import logging

import msgspec
import pytest
from aiohttp import web

from numbat.analyzer.notifiers import Dispatcher, NotifyError
from numbat.analyzer.notifiers.webhook import WebhookNotifier
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

TOKEN = "T0KEN-abc123"


def test_the_body_is_the_notification_with_version_and_summary() -> None:
    """POST JSON: every Notification field, plus version and summary, with the headers."""
    new = incident(value=3.5, tags={"app": "web"})
    gone = incident("db.heartbeat", "db-1", status="ok", resolved_at=T0 + 1500)
    sent = notification(new=[new], resolved=[gone])

    async def main() -> Received:
        async with recorder(status=204) as server:
            webhook = WebhookNotifier(
                options(type="webhook", url=f"{server.url}/hooks/{TOKEN}", headers={"X-Auth": "k"})
            )
            await webhook.send(sent)
            await webhook.close()
            return server.received[0]

    got = asyncio.run(main())
    assert (got.method, got.path) == ("POST", f"/hooks/{TOKEN}")
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Auth"] == "k"
    body = got.json()
    assert body == {
        "version": 1,
        "summary": "1 new, 1 resolved: name=web.heartbeat",
        **msgspec.to_builtins(sent),
    }
    assert body["new"][0] == {
        "id": "web-1.web.heartbeat",
        "name": "web.heartbeat",
        "host": "web-1",
        "status": "critical",
        "message": "web-1.web heartbeat not heard for 2 beats",
        "value": 3.5,
        "tags": {"app": "web"},
        "rule": "heartbeat",
        "breached_at": T0,
        "breached_value": None,
        "fired_at": T0 + 1000,
        "resolved_at": None,
        "updated_at": T0 + 1000,
        "expires_at": 0,
        "acked_by": None,
        "acked_at": None,
        "ack_comment": "",
        "flapping": False,
        "notified": "critical",
        "notified_at": T0 + 1000,
        "peak": None,
    }
    assert body["resolved"][0]["resolved_at"] == T0 + 1500


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (429, True), (408, True), (400, False), (404, False)]
)
def test_error_answers_raise_retryable_or_not(status: int, retryable: bool) -> None:
    """5xx, 408, 429 are retryable; other 4xx are not; the error never shows the token."""

    def leaky(_: Received) -> web.Response:
        return web.Response(status=status, text=f"bad hook /hooks/{TOKEN} key=secret-h")

    async def main() -> NotifyError:
        async with recorder(reply=leaky) as server:
            webhook = WebhookNotifier(
                options(
                    type="webhook",
                    url=f"{server.url}/hooks/{TOKEN}",
                    headers={"Authorization": "key=secret-h"},
                )
            )
            with pytest.raises(NotifyError) as caught:
                await webhook.send(notification(new=[incident()]))
            await webhook.close()
            return caught.value

    error = asyncio.run(main())
    assert error.retryable is retryable
    assert f"answered {status}" in str(error)
    assert TOKEN not in str(error) and "secret-h" not in str(error)
    assert "http://127.0.0.1:" in str(error)


def test_no_server_is_a_retryable_error_naming_only_the_origin() -> None:
    """A refused connection is retryable; the error names scheme://host:port only."""

    async def main() -> NotifyError:
        async with recorder() as server:
            url = f"{server.url}/hooks/{TOKEN}"
        webhook = WebhookNotifier(options(type="webhook", url=url))
        with pytest.raises(NotifyError) as caught:
            await webhook.send(notification(new=[incident()]))
        await webhook.close()
        return caught.value

    error = asyncio.run(main())
    assert error.retryable
    assert TOKEN not in str(error)


def test_retries_and_failures_are_logged_without_the_url_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through the dispatcher: a failing hook is retried and logged, its token never shown."""
    counts = Stats(host="h", prefix="numbat.analyzer")

    async def main() -> FakeLog:
        async with recorder(answers=[503, 503], status=200) as server:
            log = FakeLog()
            config = options(type="webhook", url=f"{server.url}/hooks/{TOKEN}?token=qq")

            async def no_wait(_: float) -> None:
                return None

            dispatcher = Dispatcher([config], log, counts, sleep=no_wait)
            await dispatcher.start()
            n = notification(new=[incident()])
            row = log.add("webhook", n)
            dispatcher.enqueue([(row, "webhook", n)])
            await log.wait_done([row])
            await dispatcher.close(1.0)
            assert len(server.received) == 3
            return log

    with caplog.at_level(logging.DEBUG):
        log = asyncio.run(main())
    assert log.done[1] == ("sent", "")
    assert counts.get("notifications", notifier="webhook", outcome="retried") == 2
    assert "answered 503" in caplog.text
    assert TOKEN not in caplog.text and "qq" not in caplog.text


def test_config_errors_name_the_key_and_hide_the_token() -> None:
    """A bad webhook table is refused naming the key; the URL's path is not quoted."""
    head = '[[analyzer.notifiers]]\ntype = "webhook"\n'
    url = 'url = "http://h/x"\n'
    cases = [
        (head, "url: required"),
        (head + f'url = "ftp://h/{TOKEN}"\n', "url: expected an http:// or https:// URL"),
        (head + url + "headers = 3\n", "headers: expected a table"),
        (head + url + "queue_size = 0\n", "queue_size: must be positive"),
    ]
    for text, expected in cases:
        with pytest.raises(ConfigError) as caught:
            loads(text)
        assert f"analyzer.notifiers[0].{expected}" in str(caught.value)
        assert TOKEN not in str(caught.value)


def test_a_retry_after_answer_is_honoured_up_to_max_backoff() -> None:
    """429 with Retry-After: the next attempt waits that long, capped at max_backoff."""
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    def limited(after: str) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": after}, text="slow down")

    async def main() -> None:
        answers = [limited("7"), limited("999"), limited("soon")]

        def reply(_: Received) -> web.Response:
            return answers.pop(0) if answers else web.Response(status=200)

        async with recorder(reply=reply) as server:
            log = FakeLog()
            config = options(type="webhook", url=server.url + "/h", max_backoff=60)
            dispatcher = Dispatcher([config], log, Stats("h", "p"), backoff=lambda _: 0.5,
                                    sleep=record)  # fmt: skip
            await dispatcher.start()
            n = notification(new=[incident()])
            row = log.add("webhook", n)
            dispatcher.enqueue([(row, "webhook", n)])
            await log.wait_done([row])
            await dispatcher.close(1.0)

    asyncio.run(main())
    assert delays == [7.0, 60.0, 0.5]


def test_a_storm_message_is_cut_to_max_incidents_and_says_how_many_were_left_out() -> None:
    """1,500 new incidents: the body lists 1,000 (the default max_incidents) and says
    truncated={"new": 500}; the summary still counts them all; 0 means no limit."""
    from numbat.analyzer.notifiers.webhook import payload

    storm = notification(new=[incident(f"h{i}.disk") for i in range(1_500)])
    limit = options(type="webhook", url="http://127.0.0.1:1/hook").max_incidents  # type: ignore[attr-defined]
    body = payload(storm, limit)
    assert (len(body["new"]), body["truncated"]) == (1_000, {"new": 500})
    assert body["summary"].startswith("1500 new")
    assert "truncated" not in payload(storm, 0) and len(payload(storm, 0)["new"]) == 1_500
