"""No import runs back up (issue 26): the package's modules and subpackages import one another
without a cycle, so they stack in layers, and the top layers stay on top: only `__main__` imports
the CLI, only the CLI imports the server (serve/), and the page's builders (browser/), the figures
(plots/) and the engine (engine/) import none of the layers that use them.

A unit is a top-level module of src/digitlab (runs.py: "runs") or a subpackage (serve/: "serve");
imports inside a function count as well as those at the top of a file. Fast: it reads the sources.
`python tests/test_layers.py` prints each unit's imports, bottom layer first.
"""

from __future__ import annotations

import ast
import collections
import graphlib
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "src" / "digitlab"
# Which units may import a unit (the rest of the package may not); and what a unit may not import.
ONLY_IMPORTED_BY = {"cli": {"__main__"}, "serve": {"cli"}}
NEVER_IMPORTS = {
    "browser": {"serve", "cli"},
    "plots": {"training", "sweep", "serve", "browser", "cli", "bench", "report"},
    "engine": {"training", "sweep", "serve", "browser", "cli", "bench", "evaluation", "report"},
}


def unit_of(path: Path) -> str:
    """The unit a source file belongs to: its subpackage, or its module's name."""
    return path.relative_to(SOURCE).with_suffix("").parts[0]


def imports() -> dict[str, set[str]]:
    """Each unit's imports of other units of digitlab."""
    graph: dict[str, set[str]] = collections.defaultdict(set)
    for path in sorted(SOURCE.rglob("*.py")):
        unit = unit_of(path)
        graph[unit]  # Present even when it imports nothing of digitlab.
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("digitlab"):
                parts = node.module.split(".")
                names = [alias.name for alias in node.names] if len(parts) == 1 else [parts[1]]
            elif isinstance(node, ast.Import):
                names = [alias.name.split(".")[1] for alias in node.names if alias.name.startswith("digitlab.")]
            graph[unit].update(name for name in names if name != unit)
    return graph


def test_the_units_import_one_another_without_a_cycle():
    graph = imports()
    assert {"cli", "serve", "training", "engine", "runs"} <= set(graph)  # The walk found the package.
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        raise AssertionError(f"an import runs back up: {' -> '.join(error.args[1])}") from None


def test_the_top_layers_stay_on_top():
    graph = imports()
    wrong = [
        f"{importer} imports {unit}"
        for unit, allowed in ONLY_IMPORTED_BY.items()
        for importer, imported in graph.items()
        if unit in imported and importer not in allowed
    ]
    wrong += [
        f"{unit} imports {above}" for unit, forbidden in NEVER_IMPORTS.items() for above in graph[unit] & forbidden
    ]
    assert not wrong, "imports from a lower layer to a higher one: " + "; ".join(wrong)


if __name__ == "__main__":
    graph = imports()
    for unit in graphlib.TopologicalSorter(graph).static_order():
        print(f"{unit}: {', '.join(sorted(graph.get(unit, ()))) or '-'}")
    sys.exit(0)
