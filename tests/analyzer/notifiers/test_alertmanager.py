"""The Alertmanager notifier: exact alerts against a local server, and a real
Alertmanager (Debian's prometheus-alertmanager) that receives and lists them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from numbat.analyzer.model import Notification
from numbat.analyzer.notifiers import NotifyError
from numbat.analyzer.notifiers._text import iso
from numbat.analyzer.notifiers.alertmanager import AlertmanagerNotifier
from numbat.config import loads
from numbat.errors import ConfigError
from numbat.event import now_ms
from tests.analyzer.notifiers.helpers import T0, Received, incident, notification, options, recorder
from tests.store.conftest import _Process, free_port, http

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
CONFIG = """\
route:
  receiver: "null"
receivers:
  - name: "null"
"""


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Alertmanager on a free loopback port, no clustering, files in a temp dir."""
    root = tmp_path_factory.mktemp("alertmanager")
    (root / "alertmanager.yml").write_text(CONFIG)
    for _attempt in range(3):
        url = f"http://127.0.0.1:{free_port()}"
        args = [
            ALERTMANAGER,
            f"--config.file={root / 'alertmanager.yml'}",
            f"--storage.path={root / 'data'}",
            f"--web.listen-address={url.removeprefix('http://')}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]
        process = _Process(args, root / "alertmanager.log")
        if process.wait_ready(url + "/-/ready", 200):
            break
        process.stop()
    else:
        raise AssertionError((root / "alertmanager.log").read_text())
    yield url
    process.stop()


def now() -> dict[str, Any]:
    """Incident times of now: Alertmanager drops alerts whose endsAt has passed."""
    t = now_ms()
    return {"breached_at": t - 2000, "fired_at": t - 1000, "updated_at": t - 1000}


def sent_to(url: str, n: Notification, **extra: Any) -> None:
    async def main() -> None:
        am = AlertmanagerNotifier(options(type="alertmanager", url=url, **extra))
        await am.send(n)
        await am.close()

    asyncio.run(main())


def listed(url: str, **labels: str) -> list[dict[str, Any]]:
    """The active alerts Alertmanager lists, filtered by label equality."""
    matchers = "&".join(f'filter={k}%3D"{v}"' for k, v in labels.items())
    status, body = http("GET", f"{url}/api/v2/alerts?{matchers}")
    assert status == 200, body
    found: list[dict[str, Any]] = json.loads(body)
    return found


def test_a_real_alertmanager_lists_our_alerts_and_their_resolve(alertmanager: str) -> None:
    """Posted alerts are listed with our labels and annotations; a resolve ends them."""
    firing = incident(value=2.0, tags={"app": "web", "team.name": "ops"}, **now())
    sent_to(
        alertmanager,
        notification(new=[firing], time=now_ms()),
        generator_url="http://numbat/i/{id}",
    )
    [alert] = listed(alertmanager, incident=firing.id)
    assert alert["labels"] == {
        "alertname": "web.heartbeat",
        "host": "web-1",
        "severity": "critical",
        "incident": "web-1.web.heartbeat",
        "app": "web",
        "team_name": "ops",
    }
    assert alert["annotations"]["summary"] == "web-1.web heartbeat not heard for 2 beats"
    assert alert["startsAt"] == iso(firing.fired_at)
    assert alert["generatorURL"] == "http://numbat/i/web-1.web.heartbeat"
    assert alert["status"]["state"] == "active"

    gone = incident(status="ok", notified="critical", tags=firing.tags, resolved_at=T0 + 10_000)
    sent_to(alertmanager, notification(resolved=[gone]))
    assert listed(alertmanager, incident=firing.id) == []


def test_a_real_alertmanager_sees_a_raise_end_the_lower_severity(alertmanager: str) -> None:
    """warning then critical: only the critical alert is left active."""
    warn = incident("db.disk", "db-1", status="warning", message="disk 91%", **now())
    sent_to(alertmanager, notification(new=[warn], time=now_ms()))
    assert [a["labels"]["severity"] for a in listed(alertmanager, incident=warn.id)] == ["warning"]
    crit = incident("db.disk", "db-1", status="critical", message="disk 99%", **now())
    sent_to(alertmanager, notification(changed=[crit], time=now_ms()))
    assert [a["labels"]["severity"] for a in listed(alertmanager, incident=warn.id)] == ["critical"]


def test_a_real_alertmanager_refuses_an_invalid_alert_without_retry(alertmanager: str) -> None:
    """Alertmanager's 400 (a label name it refuses) is not retryable."""

    async def main() -> NotifyError:
        am = AlertmanagerNotifier(options(type="alertmanager", url=alertmanager))
        am.am.labels["bad-name"] = "x"  # past config validation, as a buggy plug-in might
        with pytest.raises(NotifyError) as caught:
            await am.send(notification(new=[incident(**now())], time=now_ms()))
        await am.close()
        return caught.value

    error = asyncio.run(main())
    assert not error.retryable and "answered 400" in str(error)


def test_the_exact_alerts_posted() -> None:
    """The documented postable-alert shape: labels, annotations, startsAt, endsAt."""
    firing = incident(value=2.0, breached_value=1.5, tags={"app": "web"})
    gone = incident("db.disk", "db-1", status="ok", notified="warning", resolved_at=T0 + 9000)
    sent = notification(new=[firing], resolved=[gone], time=T0 + 2000)

    async def main() -> Received:
        async with recorder() as server:
            am = AlertmanagerNotifier(
                options(type="alertmanager", url=server.url + "/", firing_ttl=3600,
                        labels={"cluster": "eu"})
            )  # fmt: skip
            await am.send(sent)
            await am.close()
            return server.received[0]

    got = asyncio.run(main())
    assert (got.method, got.path) == ("POST", "/api/v2/alerts")
    assert got.json() == [
        {
            "labels": {
                "cluster": "eu",
                "app": "web",
                "alertname": "web.heartbeat",
                "severity": "critical",
                "incident": "web-1.web.heartbeat",
                "host": "web-1",
            },
            "annotations": {
                "summary": "web-1.web heartbeat not heard for 2 beats",
                "description": "web-1.web.heartbeat critical since 2023-11-14T22:13:21.000Z"
                " (value 2); first breach 2023-11-14T22:13:20.000Z (value 1.5)",
            },
            "startsAt": "2023-11-14T22:13:21.000Z",
            "endsAt": "2023-11-14T23:13:22.000Z",
        },
        {
            "labels": {
                "cluster": "eu",
                "alertname": "db.disk",
                "severity": "warning",
                "incident": "db-1.db.disk",
                "host": "db-1",
            },
            "annotations": {
                "summary": "db-1.db.disk heartbeat not heard for 2 beats",
                "description": "db-1.db.disk ok since 2023-11-14T22:13:21.000Z;"
                " first breach 2023-11-14T22:13:20.000Z; resolved 2023-11-14T22:13:29.000Z",
            },
            "startsAt": "2023-11-14T22:13:21.000Z",
            "endsAt": "2023-11-14T22:13:29.000Z",
        },
    ]


def test_config_errors_name_the_key() -> None:
    """A bad alertmanager table is refused naming the key, without its password."""
    head = '[[analyzer.notifiers]]\ntype = "alertmanager"\n'
    with pytest.raises(ConfigError, match=r"notifiers\[0\]\.url: required"):
        loads(head)
    with pytest.raises(ConfigError) as caught:
        loads(head + 'url = "am:9093"\n')
    assert "notifiers[0].url: expected an http:// or https:// URL" in str(caught.value)
    with pytest.raises(ConfigError, match=r"notifiers\[0\]\.firing_ttl: must be positive"):
        loads(head + 'url = "http://am:9093"\nfiring_ttl = 0\n')
    with pytest.raises(ConfigError, match=r"notifiers\[0\]\.labels: 'a-b' is not a label name"):
        loads(head + 'url = "http://am:9093"\nlabels = {a-b = "x"}\n')
    with pytest.raises(ConfigError) as caught:
        loads(head + 'url = "ftp://u:s3cret@am:9093"\n')
    assert "s3cret" not in str(caught.value)


def test_basic_auth_in_the_url_is_sent_and_never_shown(tmp_path: Path) -> None:
    """user:password@ in url goes as Basic auth; errors name the server without it."""

    async def main() -> tuple[Received, NotifyError]:
        async with recorder(answers=[500], status=200) as server:
            url = server.url.replace("http://", "http://numbat:s3cret@")
            am = AlertmanagerNotifier(options(type="alertmanager", url=url))
            with pytest.raises(NotifyError) as caught:
                await am.send(notification(new=[incident()]))
            await am.close()
            return server.received[0], caught.value

    got, error = asyncio.run(main())
    assert got.headers["Authorization"] == "Basic bnVtYmF0OnMzY3JldA=="
    assert error.retryable and "s3cret" not in str(error)
