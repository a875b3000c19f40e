"""The house's layer rules (docs/architecture.md), checked on every import in src/numbat.

Static: every ``import`` and ``from ... import`` anywhere in a module counts, inside
functions and ``if TYPE_CHECKING:`` blocks too, since a lazy import is still a
dependency. Relative imports are resolved against the importing module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

DAEMONS = ("numbat.collector", "numbat.analyzer", "numbat.dashboard", "numbat.producers")
TOP = ("numbat.up", "numbat.cli")  # compose the daemons: nothing below may reach up to them
NEUTRAL = ("numbat.server", "numbat.store", "numbat.event", "numbat.config", "numbat.emitter")
# What a producer may import: the emitter and the event model, nothing of a daemon.
PRODUCER_MAY = ("numbat", "numbat.emitter", "numbat.event", "numbat.errors", "numbat.producers")


def within(module: str, *packages: str) -> bool:
    """True if ``module`` is one of ``packages`` or inside one of them."""
    return any(module == p or module.startswith(p + ".") for p in packages)


def imports(module: str, tree: ast.AST, is_package: bool) -> Iterator[tuple[int, list[str]]]:
    """``(line, what it may import)`` for every imported name in ``tree``: for ``from a
    import b`` both ``a`` and ``a.b``, since ``b`` may be a module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, [alias.name]
        elif isinstance(node, ast.ImportFrom):
            base = resolve(module, node.module, node.level, is_package)
            for alias in node.names:
                yield node.lineno, [base, f"{base}.{alias.name}"]


def resolve(module: str, name: str | None, level: int, is_package: bool) -> str:
    if not level:
        return name or ""
    parts = module.split(".")
    keep = len(parts) - level + (1 if is_package else 0)
    return ".".join([*parts[:keep], *([name] if name else [])])


def broken_rule(importer: str, imported: str) -> str | None:
    """The rule that ``importer`` importing ``imported`` breaks, or None."""
    if not imported.startswith("numbat"):
        return None
    if within(imported, "numbat.cli") and importer != "numbat.__main__":
        return "nothing imports cli"
    neutral = within(importer, *NEUTRAL) or importer in (
        "numbat",
        "numbat.errors",
        "numbat.testing",
    )
    if neutral and within(imported, *DAEMONS, *TOP):
        return "server, store, event, config and the emitter import no daemon part"
    for daemon in DAEMONS[:3]:
        others = [d for d in DAEMONS[:3] if d != daemon]
        if within(importer, daemon) and within(imported, *others, *TOP):
            return "the collector, the analyzer and the dashboard never import each other"
    if within(importer, "numbat.producers") and not (
        imported == "numbat" or within(imported, *PRODUCER_MAY[1:])
    ):
        return "producers import only the emitter and the event model"
    if within(imported, *TOP) and not within(importer, *TOP, "numbat.__main__"):
        return "only the CLI composes daemons (up, cli)"
    return None


Modules = Mapping[str, tuple[ast.AST, bool]]
"""Module name -> (its syntax tree, whether it is a package's ``__init__``)."""


def violations(modules: Modules) -> list[str]:
    """``module:line imports X: rule`` for each imported name that breaks a rule."""
    found = []
    for module, (tree, is_package) in sorted(modules.items()):
        for line, candidates in imports(module, tree, is_package):
            broken = [(c, r) for c in candidates if (r := broken_rule(module, c)) is not None]
            if broken:
                imported, rule = broken[-1]
                found.append(f"{module}:{line} imports {imported}: {rule}")
    return found


def source_modules() -> Modules:
    modules: dict[str, tuple[ast.AST, bool]] = {}
    for path in sorted((SRC / "numbat").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        modules[name] = (ast.parse(path.read_text(encoding="utf-8"), str(path)), is_package)
    return modules


def test_the_source_tree_keeps_every_layer_rule() -> None:
    """No module in src/numbat imports across a layer boundary."""
    modules = source_modules()
    assert "numbat.server.lifecycle" in modules and "numbat.collector.daemon" in modules
    assert violations(modules) == []


@pytest.mark.parametrize(
    ("module", "source", "rule"),
    [
        ("numbat.server.bad", "from numbat.collector.daemon import Collector", "no daemon part"),
        ("numbat.store.bad", "from ..collector import outputs", "no daemon part"),
        ("numbat.config", "def f():\n    import numbat.analyzer.rules", "no daemon part"),
        ("numbat.emitter.bad", "from numbat.up import UpSettings", "no daemon part"),
        ("numbat.collector.bad", "import numbat.analyzer", "never import each other"),
        ("numbat.analyzer", "from numbat.collector.outputs import Output", "each other"),
        ("numbat.dashboard.app", "from numbat.analyzer.api import x", "each other"),
        ("numbat.producers.redis", "from numbat.config import load", "only the emitter"),
        ("numbat.producers.host", "from numbat.server.stats import Stats", "only the emitter"),
        ("numbat.collector.daemon", "from numbat import cli", "nothing imports cli"),
        ("numbat.analyzer.rules", "from numbat.up import UpSettings", "each other"),
    ],
)
def test_a_wrong_import_in_a_synthetic_module_is_caught(
    module: str, source: str, rule: str
) -> None:
    """Each rule fails on a module that breaks it (so the check above can fail)."""
    is_package = module.count(".") == 1
    (found,) = violations({module: (ast.parse(source), is_package)})
    assert rule in found


def test_allowed_imports_pass() -> None:
    """Imports the rules allow are not reported (the check is not just 'any import')."""
    allowed = {
        "numbat.collector.daemon": "from numbat.server.lifecycle import serve",
        "numbat.producers.redis": "import numbat\nfrom numbat.event import Event",
        "numbat.analyzer.daemon": "from numbat.store import Store\nfrom numbat.server import x",
        "numbat.__main__": "from numbat.cli import main",
        "numbat.cli": "from numbat.collector.daemon import Collector\nfrom numbat.up import U",
    }
    modules = {name: (ast.parse(src), False) for name, src in allowed.items()}
    assert violations(modules) == []
