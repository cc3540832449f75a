"""The reference data (real exports) under ../shared/reference, which some tests read."""

from __future__ import annotations

from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parent.parent.parent / "shared" / "reference"


def reference_path(*parts: str) -> Path:
    """A file under ../shared/reference, or a clean skip when that folder is absent."""
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data not available: {path}")
    return path
