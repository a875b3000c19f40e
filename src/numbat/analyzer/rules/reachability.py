"""``reachability``, as the original: a ``reachability`` event with value 0 says its
host cannot reach its ``target``: critical ``"<host> cannot reach <target>"``; any
other value resolves. One incident per host and target."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from numbat.analyzer.model import Alert, Clock, Status
from numbat.analyzer.rules import Match
from numbat.analyzer.rules._common import Raised, number
from numbat.config.rules import ReachabilityRuleConfig
from numbat.event import Event


class ReachabilityRule:
    """Alerts: name ``reachability``, host the event's, id ``<host>.reachability.<target>``,
    tag ``target``; ``ok`` only for a pair this rule has raised.

    >>> rule = ReachabilityRule(ReachabilityRuleConfig(), name="r", clock=lambda: 0)
    >>> [(a.key, a.message) for a in rule({"name": "reachability", "host": "web-1",
    ...                                    "target": "db", "value": 0, "time": 1})]
    [('web-1.reachability.db', 'web-1 cannot reach db')]
    """

    match = Match(["reachability", "*.reachability"])

    def __init__(self, options: ReachabilityRuleConfig, *, name: str, clock: Clock) -> None:
        self.name = name
        self.target_field = options.target_field
        self.raised = Raised()

    def __call__(self, event: Event) -> list[Alert] | None:
        value = number(event, "value")
        if value is None:
            return None
        raw_host = event.get("host", "")
        host = raw_host if isinstance(raw_host, str) else str(raw_host)
        raw_target = event.get(self.target_field, "")
        target = raw_target if isinstance(raw_target, str) else str(raw_target)
        key = f"{host}.reachability.{target}"
        status: Status = "critical" if value == 0 else "ok"
        if not self.raised.update(key, status):
            return None
        message = f"{host} cannot reach {target}" if value == 0 else f"{host} reaches {target}"
        time = event.get("time", 0)
        ttl = event.get("ttl")
        return [
            Alert(
                name="reachability",
                host=host,
                status=status,
                message=message,
                value=value,
                time=time if isinstance(time, int) else 0,
                ttl=float(ttl) if isinstance(ttl, int | float) else None,
                id=key,
                tags={"target": target},
            )
        ]

    def save(self) -> dict[str, Any]:
        """Host-target pairs raised or cleared since the last call."""
        return self.raised.save()

    def restore(self, state: Mapping[str, Any], now: int) -> None:
        """Pairs raised before a restart: their next reachable event resolves them."""
        self.raised.restore(state)
