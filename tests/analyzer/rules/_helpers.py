"""What the rule tests share: an injected clock and a rule built from TOML text the way
the analyzer builds it (config validation, then ``build_rule``)."""

from __future__ import annotations

from typing import Any

import pytest

from numbat import config
from numbat.analyzer.rules import Match, build_rule
from numbat.errors import ConfigError

T0 = 1_700_000_000_000


class Clock:
    """Wall-clock ms that a test moves by hand."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> int:
        self.now += round(seconds * 1000)
        return self.now


def build(toml: str, clock: Clock, name: str | None = None) -> tuple[Any, Match]:
    """The rule of ``[analyzer.rules.NAME]`` in ``toml`` (the only one, or ``name``)."""
    rules = config.loads(toml).analyzer.rule_configs
    name = name or next(iter(rules))
    return build_rule(name, rules[name], clock)


def config_error(toml: str) -> str:
    """The message of the ConfigError that ``toml`` raises."""
    with pytest.raises(ConfigError) as caught:
        config.loads(toml)
    return str(caught.value)
