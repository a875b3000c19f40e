"""The plug-in registries agree with the config schema, and the shipped example is valid."""

from __future__ import annotations

from pathlib import Path

from numbat.collector.listeners import LISTENERS, listener_class
from numbat.collector.outputs import OUTPUTS, Output, output_class
from numbat.config import LISTENER_SCHEMES, OUTPUT_CONFIGS, load

ROOT = Path(__file__).resolve().parents[2]


def test_every_built_in_output_has_options_and_a_class() -> None:
    """Each output type the config accepts imports to an Output declaring those options."""
    assert set(OUTPUTS) == set(OUTPUT_CONFIGS)
    for kind, options in OUTPUT_CONFIGS.items():
        cls = output_class(kind)
        assert issubclass(cls, Output) and cls.Options is options


def test_every_listener_scheme_has_a_class() -> None:
    """Each listener scheme the config accepts imports to a listener class."""
    assert set(LISTENERS) == set(LISTENER_SCHEMES)
    for scheme in LISTENER_SCHEMES:
        assert listener_class(scheme).__name__.endswith("Listener")


def test_example_config_is_valid() -> None:
    """examples/numbat.toml, the README's run command's config, passes validation."""
    config = load(ROOT / "examples" / "numbat.toml")
    assert [o.type for o in config.collector.outputs] == ["logfile", "prettylog"]
