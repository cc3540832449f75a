"""Per-concept decision thresholds tuned on validation to maximise F1 (pure numpy)."""

from __future__ import annotations

import numpy as np


def _best_f1_cut(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the threshold maximising F1 of ``probs >= t`` and that F1. (N, C) -> (C,)."""
    n = len(probs)
    order = np.argsort(-probs, axis=0, kind="stable")
    p_sorted = np.take_along_axis(probs, order, axis=0)
    tp = np.cumsum(np.take_along_axis(y, order, axis=0), axis=0)  # (N, C)
    f1 = 2 * tp / (y.sum(0) + np.arange(1, n + 1)[:, None])  # predicted positives = k + 1
    # Only cut between distinct scores: a tie group is all in or all out.
    ends = np.ones_like(f1, dtype=bool)
    ends[:-1] = p_sorted[:-1] != p_sorted[1:]
    best = np.where(ends, f1, -1.0).argmax(axis=0)
    cols = np.arange(probs.shape[1])
    below = np.where(best + 1 < n, p_sorted[np.minimum(best + 1, n - 1), cols], 0.0)
    # Midway to the next lower score generalises better than the exact score.
    return (p_sorted[best, cols] + below) / 2, f1[best, cols]


def tune_thresholds(
    probs: np.ndarray, y_true: np.ndarray, *, min_positives: int = 3, fallback: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Per-concept thresholds maximising validation F1.

    A concept with fewer than ``min_positives`` validation positives gets the global threshold
    (the one maximising micro F1 over all concepts pooled), or ``fallback`` when the pooled
    data has fewer than ``min_positives`` positives too.

    Args:
        probs: (N, C) validation probabilities.
        y_true: (N, C) validation labels (bool).
        min_positives: positives a concept needs for its own threshold.
        fallback: threshold when nothing can be tuned.

    Returns:
        ``(thresholds (C,), tuned (C,) bool)``.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true).astype(bool)
    if len(probs) == 0:
        c = probs.shape[1]
        return np.full(c, fallback), np.zeros(c, dtype=bool)
    tuned = y.sum(0) >= min_positives
    per_concept, _ = _best_f1_cut(probs, y)
    if y.sum() >= min_positives:
        global_t = float(_best_f1_cut(probs.reshape(-1, 1), y.reshape(-1, 1))[0][0])
    else:
        global_t = fallback
    return np.where(tuned, per_concept, global_t), tuned
