"""A small real-image multi-label task built from scikit-learn's handwritten digits.

Each image is a 2x2 mosaic of tiles; a tile holds one real 8x8 digit scan (upscaled and tinted)
or stays empty. The labels of an image are the digits present, so the task is multi-label with a
known truth, needs no download, and is hard enough that a model has something to learn: the demo,
the tests and the benchmarks all use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIGIT_KEYS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)


@dataclass(frozen=True)
class Mosaics:
    """Images (n, size, size, 3) uint8, labels (n, 10) bool, and where each digit sits."""

    images: np.ndarray
    labels: np.ndarray
    tiles: np.ndarray  # (n, 4) int: digit in each tile (row-major), -1 for an empty tile


def digit_vocabulary() -> list[dict[str, str]]:
    """The digits as a vocabulary: key, label and a Wikidata-style URI."""
    wikidata = [
        "Q204",
        "Q199",
        "Q200",
        "Q201",
        "Q202",
        "Q203",
        "Q23350",
        "Q23351",
        "Q23355",
        "Q19108",
    ]
    return [
        {"key": key, "label": f"digit {i} ({key})", "uri": f"http://www.wikidata.org/entity/{q}"}
        for i, (key, q) in enumerate(zip(DIGIT_KEYS, wikidata, strict=True))
    ]


def make_mosaics(
    n: int,
    *,
    seed: int = 0,
    size: int = 64,
    empty_tile_rate: float = 0.35,
    noise: float = 12.0,
) -> Mosaics:
    """Build ``n`` mosaics deterministically from ``seed``.

    Args:
        n: number of images.
        seed: random seed; the same seed gives the same images.
        size: side of the square image in pixels (a multiple of 2).
        empty_tile_rate: chance that a tile holds no digit (at least one tile is always filled).
        noise: standard deviation of the pixel noise added to the background.
    """
    from sklearn.datasets import load_digits  # ships with scikit-learn, no download

    digits = load_digits()
    scans = digits.images.astype(np.float32) / 16.0  # (1797, 8, 8) in [0, 1]
    targets = digits.target
    rng = np.random.default_rng(seed)
    tile = size // 2

    tiles = rng.integers(0, 10, size=(n, 4))
    empty = rng.random((n, 4)) < empty_tile_rate
    all_empty = empty.all(axis=1)
    empty[all_empty, rng.integers(0, 4, size=int(all_empty.sum()))] = False
    tiles[empty] = -1

    by_digit = [np.flatnonzero(targets == d) for d in range(10)]
    # Pick one real scan per filled tile, vectorised per digit.
    scan_idx = np.zeros((n, 4), dtype=np.int64)
    for d in range(10):
        mask = tiles == d
        scan_idx[mask] = rng.choice(by_digit[d], size=int(mask.sum()))

    # Upscale 8x8 -> tile x tile by nearest neighbour.
    reps = tile // 8
    up = np.repeat(np.repeat(scans, reps, axis=1), reps, axis=2)  # (1797, tile', tile')
    pad = tile - up.shape[1]

    background = rng.uniform(180, 245, size=(n, 1, 1, 3)).astype(np.float32)
    ink = rng.uniform(10, 90, size=(n, 4, 1, 1, 3)).astype(np.float32)
    images = np.broadcast_to(background, (n, size, size, 3)).copy()
    images += rng.normal(0, noise, size=images.shape).astype(np.float32)
    for t in range(4):
        r, c = divmod(t, 2)
        filled = tiles[:, t] >= 0
        if not filled.any():
            continue
        glyph = np.zeros((int(filled.sum()), tile, tile), dtype=np.float32)
        glyph[:, pad // 2 : pad // 2 + up.shape[1], pad // 2 : pad // 2 + up.shape[2]] = up[
            scan_idx[filled, t]
        ]
        rows = slice(r * tile, (r + 1) * tile)
        cols = slice(c * tile, (c + 1) * tile)
        region = images[filled, rows, cols, :]  # boolean indexing copies: write it back below
        alpha = glyph[..., None]
        images[filled, rows, cols, :] = region * (1 - alpha) + ink[filled, t] * alpha

    labels = np.zeros((n, 10), dtype=bool)
    tile_rows, tile_cols = np.nonzero(tiles >= 0)
    labels[tile_rows, tiles[tile_rows, tile_cols]] = True
    return Mosaics(images=np.clip(images, 0, 255).astype(np.uint8), labels=labels, tiles=tiles)
