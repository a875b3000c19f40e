"""The Slack notifier against a local incoming-webhook server: exact payloads."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from numbat.analyzer.model import Notification
from numbat.analyzer.notifiers import NotifyError
from numbat.analyzer.notifiers.slack import SlackNotifier
from numbat.config import loads
from numbat.errors import ConfigError
from tests.analyzer.notifiers.helpers import T0, Received, incident, notification, options, recorder

HOOK = "/services/T000/B000/XXXXsecretXXXX"


def sent(n: Notification, **extra: Any) -> Any:
    """The body the hook got for ``n``."""

    async def main() -> Received:
        async with recorder(reply=lambda _: web.Response(text="ok")) as server:
            slack = SlackNotifier(options(type="slack", url=server.url + HOOK, **extra))
            await slack.send(n)
            await slack.close()
            return server.received[0]

    got = asyncio.run(main())
    assert (got.method, got.path) == ("POST", HOOK)
    return got.json()


def test_each_change_is_an_attachment_coloured_by_status_with_status_host_value() -> None:
    """Attachments: colour by status, fields Status/Host/Value, title, text, fallback."""
    crit = incident(value=2.0, updated_at=T0 + 1000)
    warn = incident("web.load", status="warning", message="load 3.2", value=3.25)
    unknown = incident("web.check", status="unknown", message="", host="")
    gone = incident("db.disk", "db-1", status="ok", message="disk 95%", resolved_at=T0 + 9000)
    body = sent(notification(new=[crit, unknown], changed=[warn], resolved=[gone]))
    assert body == {
        "username": "numbat",
        "text": "2 new, 1 changed, 1 resolved: name=web.heartbeat",
        "attachments": [
            {
                "author_name": "numbat",
                "color": "danger",
                "fallback": "Incident triggered: web-1.web heartbeat not heard for 2 beats",
                "title": "New: web-1.web.heartbeat",
                "text": "web-1.web heartbeat not heard for 2 beats",
                "fields": [
                    {"title": "Status", "value": "critical", "short": True},
                    {"title": "Host", "value": "web-1", "short": True},
                    {"title": "Value", "value": "2", "short": True},
                ],
                "ts": (T0 + 1000) // 1000,
            },
            {
                "author_name": "numbat",
                "color": "#808080",
                "fallback": "Incident triggered: web.check",
                "title": "New: .web.check",
                "text": "web.check",
                "fields": [{"title": "Status", "value": "unknown", "short": True}],
                "ts": (T0 + 1000) // 1000,
            },
            {
                "author_name": "numbat",
                "color": "warning",
                "fallback": "Incident triggered: load 3.2",
                "title": "Changed: web-1.web.load",
                "text": "load 3.2",
                "fields": [
                    {"title": "Status", "value": "warning", "short": True},
                    {"title": "Host", "value": "web-1", "short": True},
                    {"title": "Value", "value": "3.25", "short": True},
                ],
                "ts": (T0 + 1000) // 1000,
            },
            {
                "author_name": "numbat",
                "color": "good",
                "fallback": "Incident resolved: disk 95%",
                "title": "Resolved: db-1.db.disk",
                "text": "disk 95%",
                "fields": [
                    {"title": "Status", "value": "ok", "short": True},
                    {"title": "Host", "value": "db-1", "short": True},
                ],
                "ts": (T0 + 9000) // 1000,
            },
        ],
    }


def test_attachments_are_capped_with_an_and_n_more_line() -> None:
    """Past max_attachments, the last attachment says how many more changed."""
    many = [incident(host=f"web-{i}") for i in range(10)]
    body = sent(notification(new=many), max_attachments=4, username="pager", channel="#ops")
    assert body["username"] == "pager" and body["channel"] == "#ops"
    titles = [a.get("title") for a in body["attachments"]]
    assert titles == [f"New: web-{i}.web.heartbeat" for i in range(3)] + [None]
    assert body["attachments"][-1] == {
        "color": "#808080",
        "fallback": "and 7 more",
        "text": "and 7 more",
    }


def test_a_refused_hook_is_not_retried_and_its_token_is_never_shown() -> None:
    """Slack's 404 (no such hook) is not retryable; the error has no part of the path."""

    async def main() -> NotifyError:
        reply = web.Response(status=404, text=f"no_service {HOOK}")
        async with recorder(reply=lambda _: reply) as server:
            slack = SlackNotifier(options(type="slack", url=server.url + HOOK))
            with pytest.raises(NotifyError) as caught:
                await slack.send(notification(new=[incident()]))
            await slack.close()
            return caught.value

    error = asyncio.run(main())
    assert not error.retryable
    assert "XXXXsecretXXXX" not in str(error) and "T000" not in str(error)


def test_config_errors_name_the_key_and_never_quote_the_hook() -> None:
    """A bad slack table is refused naming the key; the hook's path is not quoted."""
    with pytest.raises(ConfigError) as caught:
        loads(f'[[analyzer.notifiers]]\ntype = "slack"\nurl = "hooks.slack.com{HOOK}"\n')
    assert "analyzer.notifiers[0].url:" in str(caught.value)
    assert "XXXXsecret" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"notifiers\[0\]\.max_attachments: must be positive"):
        loads('[[analyzer.notifiers]]\ntype = "slack"\nurl = "https://h/x"\nmax_attachments = 0\n')
