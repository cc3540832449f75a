"""Metrics agree with scikit-learn on random data, ties and concepts without positives."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from ml.metrics import (
    average_precision,
    expected_calibration_error,
    f1_scores,
    label_ranking_average_precision,
    mean_average_precision,
    multilabel_report,
)


def random_case(seed: int, *, n: int = 300, c: int = 8, decimals: int | None = None):
    rng = np.random.default_rng(seed)
    y = rng.random((n, c)) < 0.3
    scores = np.clip(0.35 * y + rng.random((n, c)) * 0.8, 0, 1)
    if decimals is not None:
        scores = np.round(scores, decimals)  # many ties
    y[:, 2] = False  # a concept without positives
    return y, scores


@pytest.mark.parametrize("seed,decimals", [(0, None), (1, 1), (2, 2)])
def test_average_precision_matches_sklearn_per_concept(seed, decimals):
    y, s = random_case(seed, decimals=decimals)
    ap = average_precision(y, s)
    for c in range(y.shape[1]):
        if y[:, c].any():
            assert ap[c] == pytest.approx(skm.average_precision_score(y[:, c], s[:, c]))
        else:
            assert np.isnan(ap[c])


def test_map_is_the_mean_over_concepts_with_positives():
    y, s = random_case(3)
    ap = [skm.average_precision_score(y[:, c], s[:, c]) for c in range(y.shape[1])
          if y[:, c].any()]
    assert mean_average_precision(y, s) == pytest.approx(np.mean(ap))


@pytest.mark.parametrize("threshold", [0.3, 0.5, np.linspace(0.2, 0.8, 8)])
def test_micro_and_macro_f1_match_sklearn(threshold):
    y, s = random_case(4)
    pred = s >= threshold
    f1 = f1_scores(y, s, threshold)
    assert f1["micro_f1"] == pytest.approx(skm.f1_score(y, pred, average="micro", zero_division=0))
    assert f1["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))
    assert f1["per_concept_f1"] == pytest.approx(
        skm.f1_score(y, pred, average=None, zero_division=0))


@pytest.mark.parametrize("decimals", [None, 1])
def test_label_ranking_average_precision_matches_sklearn(decimals):
    y, s = random_case(5, decimals=decimals)
    y[0] = False  # an image with no concept
    y[1] = True  # an image with every concept
    assert label_ranking_average_precision(y, s) == pytest.approx(
        skm.label_ranking_average_precision_score(y, s))


def test_calibration_error_is_zero_when_frequencies_match_probabilities():
    # 10 pairs at p=0.2 with 2 positives, 10 at p=0.7 with 7: perfectly calibrated.
    p = np.array([0.2] * 10 + [0.7] * 10).reshape(-1, 1)
    y = np.array([1] * 2 + [0] * 8 + [1] * 7 + [0] * 3, dtype=bool).reshape(-1, 1)
    assert expected_calibration_error(y, p) == pytest.approx(0.0)


def test_calibration_error_of_an_overconfident_model_is_the_gap():
    p = np.full((100, 1), 0.9)
    y = (np.arange(100) < 60).reshape(-1, 1)  # 60% positive at 90% confidence
    assert expected_calibration_error(y, p) == pytest.approx(0.3)


def test_report_is_json_ready_and_marks_concepts_without_positives():
    y, s = random_case(6)
    report = multilabel_report(y, s, 0.5)
    assert report["ap"][2] is None
    assert set(report) >= {"map", "ap", "micro_f1", "macro_f1", "lrap", "ece", "n"}
    assert all(isinstance(v, float) for v in report["per_concept_f1"])


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError):
        average_precision(np.zeros((3, 2), bool), np.zeros((3, 3)))
