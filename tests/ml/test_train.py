"""The training loop: schedule, losses, thresholds, early stopping, determinism and resuming."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ml.checkpoint import load_train_state, save_train_state
from ml.data import LabelledImages
from ml.losses import AsymmetricLoss, WeightedBCE, balanced_pos_weight
from ml.models import create_model
from ml.mosaics import make_mosaics
from ml.thresholds import tune_thresholds
from ml.train import FeatureSet, TrainConfig, fit, get_lr


def separable_features(n: int, seed: int, *, d: int = 16, c: int = 4) -> FeatureSet:
    """Concept j is present when feature j is positive; the rest of the features are noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, :c] > 0).astype(np.float32)
    return FeatureSet(x, y)


def head_config(**kw) -> TrainConfig:
    defaults = dict(mode="head", epochs=6, batch_size=32, lr=5e-2, warmup_epochs=0.5,
                    device="cpu", patience=10)
    return TrainConfig(**{**defaults, **kw})


def weights_of(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.state_dict().values()]


# --------------------------------------------------------------------------- schedule


def test_the_learning_rate_warms_up_then_decays_to_the_floor():
    lrs = [get_lr(s, lr=1.0, min_lr=0.1, warmup_steps=10, total_steps=100) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:100], lrs[11:100], strict=False))
    assert lrs[99] == pytest.approx(0.1, abs=1e-3) and lrs[110] == 0.1


# --------------------------------------------------------------------------- losses


def test_bce_takes_logits_so_the_sigmoid_is_applied_exactly_once():
    logits = torch.tensor([[2.0, -1.0, 0.3]])
    targets = torch.tensor([[1.0, 0.0, 0.7]])
    expected = F.binary_cross_entropy(torch.sigmoid(logits), targets)
    assert WeightedBCE()(logits, targets, torch.ones(1)) == pytest.approx(expected.item())


def test_asl_without_focusing_or_clipping_is_bce():
    logits, targets = torch.randn(8, 5), torch.rand(8, 5)
    asl = AsymmetricLoss(gamma_neg=0, gamma_pos=0, clip=0)
    w = torch.ones(8)
    assert asl(logits, targets, w).item() == pytest.approx(WeightedBCE()(logits, targets, w).item(),
                                                           rel=1e-5)


def test_asl_ignores_easy_negatives_below_the_clip():
    logits = torch.tensor([[-6.0]])  # p ~ 0.0025 < clip 0.05
    assert AsymmetricLoss()(logits, torch.zeros(1, 1), torch.ones(1)).item() == 0.0


@pytest.mark.parametrize("loss", [WeightedBCE(), AsymmetricLoss()])
def test_a_sample_of_weight_zero_contributes_nothing(loss):
    logits = torch.randn(2, 3, requires_grad=True)
    loss(logits, torch.rand(2, 3), torch.tensor([1.0, 0.0])).backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0


def test_balanced_positive_weight_is_the_clipped_negative_to_positive_ratio():
    targets = torch.tensor([[1.0, 0.0, 0.0]] + [[0.0, 1.0, 0.0]] * 3 + [[0.0, 0.0, 0.0]] * 96)
    pw = balanced_pos_weight(targets, torch.ones(100), cap=50.0)
    assert pw.tolist() == pytest.approx([50.0, 97 / 3, 1.0])


# --------------------------------------------------------------------------- thresholds


def test_thresholds_maximise_f1_per_concept():
    # Concept 0: positives score 0.8-0.9, negatives 0.1-0.7 -> a cut between 0.7 and 0.8.
    # Concept 1: positives 0.3-0.4, negatives 0.05-0.2 -> a cut between 0.2 and 0.3.
    p0 = np.r_[np.linspace(0.8, 0.9, 10), np.linspace(0.1, 0.7, 30)]
    p1 = np.r_[np.linspace(0.3, 0.4, 10), np.linspace(0.05, 0.2, 30)]
    y = np.r_[np.ones(10), np.zeros(30)].astype(bool)
    thresholds, tuned = tune_thresholds(np.c_[p0, p1], np.c_[y, y])
    assert 0.7 < thresholds[0] < 0.8 and 0.2 < thresholds[1] < 0.3
    assert tuned.all()


def test_concepts_with_too_few_positives_get_the_global_threshold():
    rng = np.random.default_rng(0)
    y = np.zeros((50, 3), dtype=bool)
    y[:20, 0] = y[:20, 1] = True
    y[0, 2] = True  # a single positive: too few to tune on
    probs = np.where(y, 0.6 + 0.3 * rng.random((50, 3)), 0.4 * rng.random((50, 3)))
    thresholds, tuned = tune_thresholds(probs, y, min_positives=3)
    assert tuned.tolist() == [True, True, False]
    assert 0.4 <= thresholds[2] <= 0.6  # the pooled cut, not concept 2's own


def test_with_no_positives_at_all_thresholds_fall_back():
    thresholds, tuned = tune_thresholds(np.random.rand(10, 2), np.zeros((10, 2), bool),
                                        fallback=0.5)
    assert thresholds.tolist() == [0.5, 0.5] and not tuned.any()


# --------------------------------------------------------------------------- fit (head mode)


def test_a_head_learns_separable_features_and_reports_per_epoch():
    rows = []
    result = fit(head_config(), separable_features(800, 0), separable_features(200, 1),
                 progress=rows.append)
    assert result.val_metrics["map"] > 0.95 and result.val_metrics["micro_f1"] > 0.85
    assert [r["epoch"] for r in rows] == list(range(1, 7)) and result.history == rows
    assert result.thresholds.shape == (4,) and 1 <= result.best_epoch <= 6
    assert not result.model.training


def test_fit_is_deterministic_under_a_seed():
    train, val = separable_features(300, 0), separable_features(100, 1)
    cfg = head_config(head="mlp", hidden=16, dropout=0.2, epochs=3)
    a, b = fit(cfg, train, val), fit(cfg, train, val)
    assert all(torch.equal(x, y) for x, y in zip(weights_of(a.model), weights_of(b.model),
                                                 strict=True))
    assert a.history[-1]["train_loss"] == b.history[-1]["train_loss"]


def test_soft_targets_and_asl_with_balanced_weights_train_too():
    train = separable_features(600, 0)
    train.targets = train.targets * 0.8 + 0.1  # posteriors, never quite 0 or 1
    result = fit(head_config(loss="asl", pos_weight="balanced"), train, separable_features(200, 1))
    assert result.val_metrics["map"] > 0.9


def test_early_stopping_keeps_the_best_epoch_when_validation_stops_improving():
    # lr 0 after warm-up: nothing improves after the first epoch.
    cfg = head_config(lr=1e-9, min_lr=0.0, warmup_epochs=0, epochs=20, patience=2)
    result = fit(cfg, separable_features(200, 0), separable_features(100, 1))
    assert result.stopped_early and result.best_epoch == 1 and len(result.history) == 3


def test_a_head_trains_inside_a_given_network():
    model = create_model("small_cnn", 4, widths=(4, 16))
    before = model.features.block1[0].weight.clone()
    result = fit(head_config(epochs=2), separable_features(200, 0), separable_features(50, 1),
                 model=model)
    assert result.model is model and torch.equal(model.features.block1[0].weight, before)


def test_a_killed_run_resumes_to_the_same_result(tmp_path):
    train, val = separable_features(300, 0), separable_features(100, 1)
    cfg = head_config(head="mlp", hidden=16, dropout=0.2, epochs=5)
    straight = fit(cfg, train, val)

    class Killed(Exception):
        pass

    def save_then_die(state):
        save_train_state(tmp_path / "state.pt", state)
        if state["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        fit(cfg, train, val, on_checkpoint=save_then_die)
    resumed = fit(cfg, train, val, resume=load_train_state(tmp_path / "state.pt"))
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in straight.history]
    assert all(torch.equal(x, y) for x, y in zip(weights_of(resumed.model),
                                                 weights_of(straight.model), strict=True))


def test_resuming_with_a_different_config_is_refused():
    train, val = separable_features(100, 0), separable_features(50, 1)
    states = []
    fit(head_config(epochs=1), train, val, on_checkpoint=states.append)
    with pytest.raises(ValueError, match="lr"):
        fit(head_config(epochs=3, lr=0.5), train, val, resume=states[-1])


def test_unknown_options_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="bce"):
        TrainConfig(loss="focal")
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"epochs": 3, "epocs": 4})


# --------------------------------------------------------------------------- fit (fine-tuning)


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def test_fine_tuning_skips_a_broken_image_and_resumes_deterministically(tmp_path):
    m = make_mosaics(96, seed=3, size=32)
    sources = [png(a) for a in m.images]
    sources[5] = b"\x89PNG\r\n\x1a\n truncated"
    train = LabelledImages(sources[:64], m.labels[:64].astype(np.float32))
    val = LabelledImages(sources[64:], m.labels[64:].astype(np.float32))
    cfg = TrainConfig(mode="finetune", backbone="small_cnn", epochs=3, batch_size=16,
                      hflip=True, device="auto", seed=1)

    def model():
        torch.manual_seed(0)
        return create_model("small_cnn", 10, widths=(4, 8), input_size=32)

    straight = fit(cfg, train, val, model=model())
    assert list(straight.skipped["train"]) == [5]
    states = []
    fit(cfg, train, val, model=model(), on_checkpoint=states.append)
    resumed = fit(cfg, train, val, model=model(), resume=states[0])
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in straight.history]
    assert all(torch.equal(x, y) for x, y in zip(weights_of(resumed.model),
                                                 weights_of(straight.model), strict=True))


def test_cpu_threads_apply_during_the_fit_only():
    before = torch.get_num_threads()
    seen = []
    fit(head_config(epochs=1, cpu_threads=1), separable_features(64, 0), separable_features(32, 1),
        progress=lambda row: seen.append(torch.get_num_threads()))
    assert seen == [1] and torch.get_num_threads() == before
