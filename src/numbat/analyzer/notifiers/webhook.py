"""``webhook``: each notification POSTed as JSON to a URL.

The body is the :class:`~numbat.analyzer.model.Notification` as JSON (times in ms, as
everywhere), plus ``"version": 1`` (the payload's shape, raised if it ever changes
incompatibly) and ``"summary"`` (one line, :meth:`Notification.summary`)::

    {"version": 1, "summary": "1 new: name=web.heartbeat", "id": "...", "time": 1700000000000,
     "group": {"name": "web.heartbeat"}, "new": [{"id": "web-1.web.heartbeat", ...}],
     "changed": [], "resolved": [], "flapping": [], "still_firing": [], "repeat": false}

Each list holds at most ``max_incidents`` incidents (1,000 by default, about 0.5 MB);
``"truncated"`` says how many were left out of each (the HTTP API lists them all).

Any 2xx answer is success; 408, 429, 5xx and no answer are retried; other 4xx are not.
The notification's ``id`` is the same on every retry (for the receiver to deduplicate).
"""

from __future__ import annotations

from typing import Any

import msgspec

from numbat.analyzer.model import Notification
from numbat.analyzer.notifiers import expect
from numbat.analyzer.notifiers._http import HttpNotifier
from numbat.config.notifiers import NotifierConfig, WebhookNotifierConfig

PAYLOAD_VERSION = 1


KINDS = ("new", "changed", "resolved", "flapping", "still_firing")


def payload(notification: Notification, max_incidents: int = 0) -> dict[str, Any]:
    """The JSON body for ``notification``; each list cut to ``max_incidents`` (0: no
    limit), with ``"truncated": {kind: incidents left out}`` when any were (as
    Alertmanager's webhook ``max_alerts`` and ``truncatedAlerts``), so a storm's message
    stays under a receiver's body limit (nginx: 1 MiB; a 413 is not retried)."""
    body: dict[str, Any] = {"version": PAYLOAD_VERSION, "summary": notification.summary()}
    body.update(msgspec.to_builtins(notification))
    if max_incidents:
        truncated = {k: len(body[k]) - max_incidents for k in KINDS if len(body[k]) > max_incidents}
        for kind in truncated:
            body[kind] = body[kind][:max_incidents]
        if truncated:
            body["truncated"] = truncated
    return body


class WebhookNotifier(HttpNotifier):
    """POSTs :func:`payload` to ``options.url`` with ``options.headers``."""

    Options = WebhookNotifierConfig

    def __init__(self, options: NotifierConfig) -> None:
        own = expect(options, WebhookNotifierConfig)
        super().__init__(own, own.url, secrets=tuple(own.headers.values()))
        self.headers = dict(own.headers)
        self.max_incidents = own.max_incidents

    async def send(self, notification: Notification) -> None:
        await self.post(payload(notification, self.max_incidents), headers=self.headers)
