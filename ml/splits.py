"""Stable train/val/test splits by hash: numpy only, so the web process that counts a training
set's items (``training.services.dataset``) does not import PyTorch to do it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def stable_split(
    external_ids: Sequence[str],
    fractions: tuple[float, ...] = (0.8, 0.1, 0.1),
    *,
    names: tuple[str, ...] = ("train", "val", "test"),
    salt: str = "",
) -> np.ndarray:
    """Assign each id to a split by the sha256 of the id, so an item never changes split.

    Adding or removing other items does not move an item, and the split is the same on every
    machine and Python version (unlike ``hash()``, which is salted per process).

    Args:
        external_ids: stable item ids (e.g. Europeana record ids).
        fractions: share of each split, summing to 1.
        names: the split names, one per fraction.
        salt: change it to draw a different, equally stable split.

    Returns:
        An array of split names, one per id.
    """
    if len(fractions) != len(names):
        raise ValueError("give one name per fraction")
    if any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}")
    # The first 8 bytes of the digest as a uniform number in [0, 1).
    u = np.array(
        [int.from_bytes(hashlib.sha256(f"{salt}{i}".encode()).digest()[:8], "big") / 2.0**64
         for i in external_ids],
        dtype=np.float64,
    )
    edges = np.cumsum(fractions)[:-1]
    return np.asarray(names, dtype=object)[np.searchsorted(edges, u, side="right")].astype(str)
