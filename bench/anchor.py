"""Side-by-side runs against an anchor revision: its tree checked out beside this one, and the
median, range and ratio of what each side measured."""

from __future__ import annotations

import statistics
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def anchor_tree(revision: str) -> Iterator[Path]:
    """``revision`` checked out into a temporary git worktree that shares this checkout's
    ``.venv``; removed on the way out."""
    with tempfile.TemporaryDirectory(prefix="crowdloop-anchor-") as folder:
        tree = Path(folder) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), revision],
            cwd=REPO, check=True, capture_output=True,
        )  # fmt: skip
        try:
            (tree / ".venv").symlink_to(REPO / ".venv")
            yield tree
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False
            )


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """Median, lowest and highest of ``values``."""
    return statistics.median(values), min(values), max(values)


def compare_row(name: str, anchor: Sequence[float], this: Sequence[float], unit: str) -> str:
    """One line: each side's median (range) and the ratio this / anchor (below 1: less)."""
    (a, a_lo, a_hi), (t, t_lo, t_hi) = spread(anchor), spread(this)
    d = 0 if max(a, t) >= 100 else 2

    def cell(mid: float, lo: float, hi: float) -> str:
        return f"{mid:10.{d}f} {unit} ({lo:.{d}f}-{hi:.{d}f})"

    return f"{name:28} {cell(a, a_lo, a_hi):>30} {cell(t, t_lo, t_hi):>30} {t / a:6.2f}x"


def compare_header(anchor: str, runs: int) -> str:
    return (
        f"{'figure':28} {'anchor ' + anchor + ' median (range)':>30} "
        f"{'this tree median (range)':>30}  ratio   [{runs} runs a side, alternating]"
    )
