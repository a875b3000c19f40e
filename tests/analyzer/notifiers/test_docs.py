"""The notifier examples in the docs are valid configuration."""

from __future__ import annotations

import re
from pathlib import Path

from numbat.config import loads

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_every_notifier_example_in_the_cookbook_loads() -> None:
    """Each TOML block of rules.md's Notifiers section passes numbat.config.loads."""
    text = (DOCS / "rules.md").read_text()
    section = text[text.index("## Notifiers") :]
    section = section.split("\n## ", 1)[0]  # up to the next section (the rules')
    blocks = re.findall(r"```toml\n(.*?)```", section, re.S)
    kinds = set()
    for block in blocks:
        analyzer = loads(block).analyzer
        assert analyzer is not None
        kinds |= {n.type for n in analyzer.notifier_configs}
    assert kinds == {"log", "console", "webhook", "slack", "pagerduty", "email", "alertmanager"}
