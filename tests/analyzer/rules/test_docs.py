"""The cookbook's examples stay valid: every TOML block of docs/rules.md is a config
that numbat accepts, and builds."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from numbat import config
from numbat.analyzer.rules import build_rule

from ._helpers import Clock

DOC = Path(__file__).resolve().parents[3] / "docs" / "rules.md"


def test_every_toml_block_of_the_cookbook_validates_and_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each toml block of docs/rules.md loads and its rules build (custom rule included)."""
    text = DOC.read_text(encoding="utf-8")
    [python] = re.findall(r"```python\n# mychecks.py\n(.*?)```", text, re.S)
    (tmp_path / "mychecks.py").write_text(python, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(blocks) >= 12
    for block in blocks:
        rules = config.loads(block, source="docs/rules.md").analyzer.rule_configs
        for name, options in rules.items():
            build_rule(name, options, Clock())
    sys.modules.pop("mychecks", None)
