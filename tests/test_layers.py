"""Imports run one way, ml <- annotate <- training <- review <- loop, and ml never imports Django.

The contracts are ``[tool.importlinter]`` in pyproject.toml; ``make lint`` and ``make test`` run
``lint-imports`` on them, and this test runs the same check so plain ``pytest`` holds it too.
Imports inside functions count: a lazy ``from training... import`` in annotate breaks it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

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
