"""Multi-label metrics, vectorised in numpy (checked against scikit-learn in the tests).

Conventions: ``y_true`` is (N, C) bool (soft targets are binarised by the caller, usually at
0.5), ``scores`` are (N, C) probabilities or any monotone score, ``thresholds`` are (C,) or a
scalar. Concepts without a single positive have no AP (NaN) and are left out of mAP.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _check(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 2:
        raise ValueError(f"y_true and scores must both be (N, C), got {y.shape} and {s.shape}")
    return y, s


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-concept average precision (C,), NaN where a concept has no positive.

    Same definition as ``sklearn.metrics.average_precision_score``: the sum over distinct score
    thresholds of (increase in recall) x precision, with tied scores forming one threshold.
    """
    y, s = _check(y_true, scores)
    n, c = y.shape
    order = np.argsort(-s, axis=0, kind="stable")  # (N, C): rows by descending score
    s_sorted = np.take_along_axis(s, order, axis=0)
    y_sorted = np.take_along_axis(y, order, axis=0)
    tp = np.cumsum(y_sorted, axis=0)  # (N, C) true positives among the top k+1
    precision = tp / np.arange(1, n + 1)[:, None]
    # A threshold ends where the next score differs: every item of a tie group gets the
    # precision at the end of its group.
    is_end = np.ones((n, c), dtype=bool)
    is_end[:-1] = s_sorted[:-1] != s_sorted[1:]
    end_idx = np.where(is_end, np.arange(n)[:, None], n)
    end_idx = np.minimum.accumulate(end_idx[::-1], axis=0)[::-1]  # (N, C) next group end
    prec_at_end = np.take_along_axis(precision, end_idx, axis=0)
    n_pos = y.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (y_sorted * prec_at_end).sum(axis=0) / n_pos
    return np.where(n_pos > 0, ap, np.nan)


def mean_average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Macro mAP over the concepts that have at least one positive (NaN if none has)."""
    ap = average_precision(y_true, scores)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


def f1_scores(
    y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray | float = 0.5
) -> dict[str, Any]:
    """Micro and macro F1 (and per-concept F1) of ``scores >= thresholds``.

    A concept with no positive and no predicted positive has F1 0, as scikit-learn's
    ``zero_division=0``; macro F1 averages over all concepts.
    """
    y, s = _check(y_true, scores)
    pred = s >= np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (s.shape[1],))
    tp = (pred & y).sum(axis=0).astype(np.float64)
    fp = (pred & ~y).sum(axis=0)
    fn = (~pred & y).sum(axis=0)
    denom = 2 * tp + fp + fn
    per_concept = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    micro_denom = 2 * tp.sum() + fp.sum() + fn.sum()
    micro = float(2 * tp.sum() / micro_denom) if micro_denom > 0 else 0.0
    return {"micro_f1": micro, "macro_f1": float(per_concept.mean()), "per_concept_f1": per_concept}


def label_ranking_average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Label-ranking average precision, as scikit-learn's LRAP score.

    For each image, the mean over its true concepts of the share of true concepts among those
    ranked at or above it. Images with no true concept or only true concepts score 1.
    """
    y, s = _check(y_true, scores)
    # at_or_above[i, j, k]: concept k scores at least as high as concept j in image i.
    at_or_above = s[:, None, :] >= s[:, :, None]  # (N, C, C)
    rank = at_or_above.sum(axis=2)  # (N, C) rank of each concept, ties counted pessimistically
    rank_true = (at_or_above & y[:, None, :]).sum(axis=2)  # (N, C) true concepts at or above
    n_true = y.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_image = (y * rank_true / rank).sum(axis=1) / n_true
    trivial = (n_true == 0) | (n_true == y.shape[1])
    return float(np.where(trivial, 1.0, per_image).mean()) if len(y) else float("nan")


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, *, n_bins: int = 15
                               ) -> float:
    """ECE over all (image, concept) pairs with equal-width probability bins.

    The sum over bins of (share of pairs in the bin) x |observed positive rate - mean probability|.
    """
    y, p = _check(y_true, probs)
    y, p = y.ravel().astype(np.float64), p.ravel()
    if not len(p):
        return float("nan")
    bins = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)  # p == 1 goes in the last bin
    count = np.bincount(bins, minlength=n_bins)
    gap = np.abs(np.bincount(bins, weights=y, minlength=n_bins)
                 - np.bincount(bins, weights=p, minlength=n_bins))
    return float(gap.sum() / count.sum())


def multilabel_report(
    y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | float = 0.5
) -> dict[str, object]:
    """All the metrics a model version records: mAP, per-concept AP, F1s, LRAP and ECE.

    Returns:
        A dict with ``map``, ``ap`` (list, None for concepts without positives), ``micro_f1``,
        ``macro_f1``, ``per_concept_f1`` (list), ``lrap``, ``ece`` and ``n``: JSON-ready.
    """
    ap = average_precision(y_true, probs)
    f1 = f1_scores(y_true, probs, thresholds)
    return {
        "n": int(len(probs)),
        "map": float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan"),
        "ap": [None if np.isnan(a) else float(a) for a in ap],
        "micro_f1": f1["micro_f1"],
        "macro_f1": f1["macro_f1"],
        "per_concept_f1": [float(v) for v in f1["per_concept_f1"]],
        "lrap": label_ranking_average_precision(y_true, probs),
        "ece": expected_calibration_error(y_true, probs),
    }
