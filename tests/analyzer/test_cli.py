"""``numbat analyzer`` and ``numbat check`` on analyzer configs: exit codes and messages
a person can act on, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.interop.nodepeers import free_port

ROOT = Path(__file__).resolve().parents[2]


def _numbat(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "numbat", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Refuses:
    """A custom rule that validates but refuses to be built."""

    def __init__(self, options: object, *, name: str, clock: object) -> None:
        raise ValueError("needs a warn level")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[analyzer.rules.disk]\nwarn = 2\ncritical = 1\n", "analyzer.rules.disk."),
        ('[analyzer.rules.x]\ntype = "threshold"\nbogus = 1\n', "analyzer.rules.x.bogus"),
        ('[[analyzer.notifiers]]\ntype = "webhook"\n', "analyzer.notifiers[0].url: required"),
        (
            '[analyzer.rules.mine]\ntype = "tests.analyzer.test_cli:Refuses"\n',
            "analyzer.rules.mine: needs a warn level",
        ),
        ('[analyzer]\nhttp = "http://0.0.0.0:3338"\n', "analyzer.token: required"),
        (
            '[analyzer]\nlisten = ["tcp://127.0.0.1:9", "tcp://127.0.0.1:9"]\n',
            "analyzer.listen[1]: 'tcp://127.0.0.1:9' is listed twice",
        ),
        ('[analyzer]\ndata_dir = "/dev/null/x"\n', "analyzer.data_dir: /dev/null/x: /dev/null is"),
    ],
)
@pytest.mark.parametrize("command", ["check", "analyzer"])
def test_a_bad_analyzer_config_exits_2_naming_the_key(
    tmp_path: Path, toml: str, message: str, command: str
) -> None:
    """numbat check FILE and numbat analyzer -c FILE: exit 2, the key named, no traceback."""
    path = tmp_path / "numbat.toml"
    path.write_text(toml)
    args = ["check", str(path)] if command == "check" else ["analyzer", "-c", str(path)]
    result = _numbat(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_analyzer_without_a_config_is_a_usage_error() -> None:
    """numbat analyzer alone says how to run it and exits 2."""
    result = _numbat("analyzer")
    assert result.returncode == 2 and "numbat analyzer -c numbat.toml" in result.stderr


def test_a_data_dir_that_cannot_hold_the_state_exits_2_naming_it(tmp_path: Path) -> None:
    """data_dir a file: exit 2 naming analyzer.data_dir, no traceback."""
    (tmp_path / "file").write_text("")
    path = tmp_path / "numbat.toml"
    port, http = free_port(), free_port()
    path.write_text(
        f'[analyzer]\nlisten = ["tcp://127.0.0.1:{port}"]\nhttp = "http://127.0.0.1:{http}"\n'
        f'data_dir = "{tmp_path / "file"}"\n'
    )
    result = _numbat("analyzer", "-c", str(path))
    assert result.returncode == 2, result.stderr
    assert "analyzer.data_dir" in result.stderr and "Traceback" not in result.stderr


def test_forget_with_no_analyzer_running_exits_1_saying_so() -> None:
    """numbat analyzer forget KEY when nothing answers: exit 1, the address named."""
    url = f"http://127.0.0.1:{free_port()}"
    result = _numbat("analyzer", "forget", "web-1.web", "--url", url)
    assert result.returncode == 1
    assert f"cannot reach the analyzer at {url}" in result.stderr
