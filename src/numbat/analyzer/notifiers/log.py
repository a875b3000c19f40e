"""``log`` and ``console``: one line per changed incident, for a terminal or a log file.

``log`` writes through Python logging (logger ``numbat.analyzer.alerts``): WARNING for a
problem, INFO for a resolve; ``console`` prints the same lines on standard output
(what ``numbat up`` shows in its terminal).
"""

from __future__ import annotations

import logging
import sys

from numbat.analyzer.model import Notification
from numbat.analyzer.notifiers import Notifier, NotifyError
from numbat.analyzer.notifiers._text import line
from numbat.config.notifiers import LogNotifierConfig

alerts = logging.getLogger("numbat.analyzer.alerts")


class LogNotifier(Notifier):
    """Logs (``type = "log"``) or prints (``type = "console"``) each change."""

    Options = LogNotifierConfig

    async def send(self, notification: Notification) -> None:
        for kind, incident in notification.changes():
            text = line(kind, incident)
            if self.options.type == "console":
                try:
                    print(text, file=sys.stdout, flush=True)
                except OSError as exc:  # a closed terminal
                    raise NotifyError(f"cannot write to standard output: {exc}") from None
            else:
                alerts.log(logging.INFO if kind == "resolved" else logging.WARNING, "%s", text)
