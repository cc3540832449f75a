"""The README's layout names folders and modules that exist, and every top-level code folder."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENTRY = re.compile(r"^(  )?([\w./]+(?:/|\.py))\s")


def layout_entries() -> list[Path]:
    """The paths the README's Layout block starts its lines with; an indented one is inside the
    last top-level folder above it."""
    text = (REPO / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    entries, folder = [], Path()
    for line in block.splitlines():
        match = ENTRY.match(line)
        if not match:
            continue
        path = Path(match.group(2))
        if match.group(1):
            entries.append(folder / path)
        else:
            folder = path
            entries.append(path)
    return entries


def test_every_path_the_readme_layout_names_exists() -> None:
    entries = layout_entries()
    assert len(entries) > 10
    missing = [str(p) for p in entries if not (REPO / p).exists()]
    assert not missing, f"README's layout names paths that are not in the tree: {missing}"


def test_the_readme_layout_lists_every_top_level_folder_with_python_code() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    folders = {Path(f).parts[0] for f in tracked if len(Path(f).parts) > 1}
    listed = {p.parts[0] for p in layout_entries()}
    assert folders - listed == set(), f"not in README's layout: {sorted(folders - listed)}"
