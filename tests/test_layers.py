"""Imports run one way, ml <- annotate <- training <- review <- loop, and ml never imports Django.

The contracts are ``[tool.importlinter]`` in pyproject.toml; ``make lint`` and ``make test`` run
``lint-imports`` on them, and this test runs the same check so plain ``pytest`` holds it too.
Imports inside functions count: a lazy ``from training... import`` in annotate breaks it.
Within a layer, no module reaches itself through others: grimp's graph, lazy imports and
``TYPE_CHECKING`` ones included, has no cycle.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: The project's own packages, whose modules the cycle test walks.
PACKAGES = ("annotate", "training", "review", "loop", "ml", "config")

LINT = (
    "from importlinter.cli import lint_imports; "
    "raise SystemExit(lint_imports(no_cache=True, no_logo=True))"
)


def test_imports_follow_the_layers_and_ml_stays_free_of_django() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LINT], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_module_imports_itself_through_others() -> None:
    import grimp
    import networkx as nx

    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    edges = nx.DiGraph(
        (module, imported)
        for module in graph.modules
        for imported in graph.find_modules_directly_imported_by(module)
    )
    cycles = sorted((" -> ".join(cycle) for cycle in nx.simple_cycles(edges)), key=len)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
