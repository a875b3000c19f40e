"""``webhook``: each notification POSTed as JSON to a URL.

The body is the :class:`~numbat.analyzer.model.Notification` as JSON (times in ms, as
everywhere), plus ``"version": 1`` (the payload's shape, raised if it ever changes
incompatibly) and ``"summary"`` (one line, :meth:`Notification.summary`)::

    {"version": 1, "summary": "1 new: name=web.heartbeat", "id": "...", "time": 1700000000000,
     "group": {"name": "web.heartbeat"}, "new": [{"id": "web-1.web.heartbeat", ...}],
     "changed": [], "resolved": [], "flapping": [], "still_firing": [], "repeat": false}

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


def payload(notification: Notification) -> dict[str, Any]:
    """The JSON body for ``notification``."""
    body: dict[str, Any] = {"version": PAYLOAD_VERSION, "summary": notification.summary()}
    body.update(msgspec.to_builtins(notification))
    return body


class WebhookNotifier(HttpNotifier):
    """POSTs :func:`payload` to ``options.url`` with ``options.headers``."""

    Options = WebhookNotifierConfig

    def __init__(self, options: NotifierConfig) -> None:
        own = expect(options, WebhookNotifierConfig)
        super().__init__(own, own.url, secrets=tuple(own.headers.values()))
        self.headers = dict(own.headers)

    async def send(self, notification: Notification) -> None:
        await self.post(payload(notification), headers=self.headers)
