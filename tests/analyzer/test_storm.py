"""The storm test (issue 9): 1,000 hosts' heartbeats go silent at once, through the real
daemon in-process (TCP in, default rules, incident manager, state database, webhook
notifier, HTTP API), on an injected clock."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

from numbat.analyzer.daemon import Analyzer
from tests.analyzer.harness import WebhookReceiver
from tests.analyzer.test_daemon import _config, _port, api
from tests.collector.conftest import until

HOSTS = 1000
TTL = 10_000  # ms
T0 = 1_700_000_000_000
MAX_MESSAGES = 5
"""Messages per storm at most: all 1,000 share one group (``group_by = ["name"]``)."""


async def _beats(analyzer: Analyzer) -> None:
    """One heartbeat from every host, over one TCP connection."""
    _, writer = await asyncio.open_connection("127.0.0.1", _port(analyzer))
    writer.write(
        b"".join(
            json.dumps({"name": "web.heartbeat", "host": f"web-{i:04d}", "ttl": TTL}).encode()
            + b"\n"
            for i in range(HOSTS)
        )
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()


def _ids(bodies: list[dict[str, Any]], kind: str) -> Counter[str]:
    return Counter(i["id"] for body in bodies for i in body[kind])


def test_a_thousand_silent_hosts_page_in_a_few_grouped_messages_and_lose_nothing(
    tmp_path: Path,
) -> None:
    """1,000 heartbeats stop at once: a bounded number of webhook messages, each saying
    what changed, name every incident exactly once as new; the API lists all 1,000 open;
    the beats resume and every one is resolved exactly once, in as few messages."""
    clock = [T0]
    hook = WebhookReceiver()
    expected = {f"web-{i:04d}.web.heartbeat" for i in range(HOSTS)}

    def bodies() -> list[dict[str, Any]]:
        return [b for b in hook.bodies if b.get("group") == {"name": "web.heartbeat"}]

    async def main() -> None:
        config = _config(
            tmp_path,
            notifiers=[{"type": "webhook", "url": hook.url, "max_backoff": 0.1}],
            grouping={"group_interval": 1.0},
        )
        analyzer = Analyzer(config, hostname="storm", clock=lambda: clock[0])
        await analyzer.start()
        try:
            async with api(analyzer) as call:
                await _beats(analyzer)
                await until(
                    lambda: analyzer.stats.get("received", listener=_uri(analyzer)) == HOSTS
                )
                clock[0] += TTL  # every deadline passes at once
                await until(lambda: set(_ids(bodies(), "new")) == expected, 20.0, "the storm")
                storm = bodies()
                assert len(storm) <= MAX_MESSAGES, [b["summary"] for b in storm]
                assert _ids(storm, "new") == Counter(expected)  # each exactly once
                for body in storm:
                    assert body["new"] and body["summary"].startswith(f"{len(body['new'])} new")
                    assert not body["resolved"] and not body["still_firing"]
                    assert {i["status"] for i in body["new"]} == {"critical"}
                status, listed = await call("GET", "/incidents?state=open&name=web.heartbeat")
                assert status == 200
                assert {i["id"] for i in listed["incidents"]} == expected
                assert {i["status"] for i in listed["incidents"]} == {"critical"}

                clock[0] += 100
                await _beats(analyzer)  # all resume
                await until(
                    lambda: analyzer.stats.get("received", listener=_uri(analyzer)) == 2 * HOSTS
                )
                clock[0] += 1_000  # the group's interval since its last message
                await until(
                    lambda: set(_ids(bodies(), "resolved")) == expected, 20.0, "the resolves"
                )
                resolves = bodies()[len(storm) :]
                assert len(resolves) <= MAX_MESSAGES, [b["summary"] for b in resolves]
                assert _ids(resolves, "resolved") == Counter(expected)
                assert not _ids(resolves, "new")
                for body in resolves:
                    assert body["summary"].startswith(f"{len(body['resolved'])} resolved")
                _, listed = await call("GET", "/incidents?state=open&name=web.heartbeat")
                assert listed["incidents"] == []
                label = config.analyzer.notifier_configs[0].label
                # each message counted sent once its POST was answered: after it arrived
                await until(
                    lambda: (
                        analyzer.stats.get("notifications", notifier=label, outcome="sent")
                        == len(hook.bodies)
                    )
                )
                for reason in ("queue_full", "failed", "rejected"):
                    assert analyzer.stats.get("dropped", notifier=label, reason=reason) == 0
        finally:
            await analyzer.stop(drain_timeout=1.0)
            hook.close()

    asyncio.run(main())


def _uri(analyzer: Analyzer) -> str:
    return next(iter(analyzer.listeners))
