"""The plug-in registries: every entry imports, declares its options, and the example is valid."""

from __future__ import annotations

from pathlib import Path

from numbat.collector.outputs import Output, output_class
from numbat.config import LISTENERS, OUTPUTS, load
from numbat.server.listeners import Listener, listener_class

ROOT = Path(__file__).resolve().parents[2]


def test_every_built_in_output_entry_imports_to_an_output_declaring_its_options() -> None:
    """Each output entry's class path imports to an Output whose Options are the entry's."""
    for kind, entry in OUTPUTS.items():
        cls = output_class(kind)
        assert issubclass(cls, Output) and cls.Options is entry.options, kind


def test_every_built_in_listener_entry_imports_to_a_listener_declaring_its_options() -> None:
    """Each listener entry's class path imports to a Listener whose Options are the entry's."""
    for scheme, entry in LISTENERS.items():
        cls = listener_class(scheme)
        assert issubclass(cls, Listener) and cls.Options is entry.options, scheme


def test_example_config_is_valid() -> None:
    """examples/numbat.toml, the README's run command's config, passes validation."""
    config = load(ROOT / "examples" / "numbat.toml")
    assert [o.type for o in config.collector.outputs] == ["logfile", "prettylog"]
