"""The incident manager's options in ``[analyzer]``: grouping, flapping and inhibit keys
are validated, errors naming the key."""

from __future__ import annotations

import pytest

from numbat.config import loads
from numbat.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[analyzer.grouping]\ngroup_by = ["name", ""]', "analyzer.grouping.group_by"),
        ('[analyzer.grouping]\ngroup_by = ["host", "host"]', "'host' is given twice"),
        ("[analyzer.grouping]\ngroup_interval = 0", "analyzer.grouping.group_interval"),
        ("[analyzer.flapping]\nmax_changes = -1", "analyzer.flapping.max_changes"),
        ('[[analyzer.inhibit]]\nsource = {name = "x"}\nequal = [""]', "equal"),
        ('[[analyzer.inhibit]]\nsource = {name = "x"}\nsource_status = "ok"', "source_status"),
    ],
)
def test_bad_incident_options_name_the_key(text: str, expected: str) -> None:
    """Each bad grouping/flapping/inhibit value is a ConfigError naming what is wrong."""
    with pytest.raises(ConfigError, match=expected):
        loads(text)


def test_incident_options_load() -> None:
    """Good grouping, flapping and inhibit tables load as given; inhibit replaces the default."""
    config = loads(
        '[analyzer.grouping]\ngroup_by = ["host", "app"]\ngroup_wait = 30\n'
        "[analyzer.flapping]\nwindow = 60\nmax_changes = 0\n"
        '[[analyzer.inhibit]]\nsource = {name = "dc.power"}\nequal = ["dc"]\n'
    )
    analyzer = config.analyzer
    assert analyzer.grouping.group_by == ["host", "app"] and analyzer.grouping.group_wait == 30
    assert (analyzer.flapping.window, analyzer.flapping.max_changes) == (60, 0)
    assert [(i.source.names, i.equal) for i in analyzer.inhibit] == [(["dc.power"], ["dc"])]
