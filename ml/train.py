"""Training: a dataclass config, small named functions, and ``fit`` for both modes.

``"head"`` trains a linear or MLP head on cached backbone features (:class:`FeatureSet`; what a
nightly retrain on a CPU worker does); ``"finetune"`` trains the whole network on images
(:class:`ml.data.LabelledImages`), on the GPU when there is one (``device="auto"``). Targets are
soft (aggregated posteriors) and samples weighted by evidence; the loss, BCE-with-logits or the
asymmetric loss, takes logits. Early stopping watches validation mAP; per-concept thresholds are
then tuned on validation to maximise F1. Training state is a plain dict of tensors and numbers
(``torch.load(weights_only=True)`` reads it), handed to a callback every ``checkpoint_every``
epochs so that a killed job resumes where it stopped.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from typing import Any, cast

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from ml.data import (
    AugConfig,
    Batch,
    LabelledImages,
    build_transform,
    collate_skip_broken,
    normalize,
)
from ml.losses import AsymmetricLoss, WeightedBCE, balanced_pos_weight
from ml.metrics import f1_scores, mean_average_precision, multilabel_report
from ml.models import Head, MultiLabelNet, create_model
from ml.thresholds import tune_thresholds


@dataclass
class TrainConfig:
    """Everything that decides a training run; stored in the checkpoint."""

    # What to train.
    mode: str = "head"  # "head": a head on cached features; "finetune": the whole network
    backbone: str = "small_cnn"  # registry name; the network of finetune mode
    weights: str | None = None  # local backbone weights file for finetune mode; never downloaded
    head: str = "linear"  # "linear" or "mlp"
    hidden: int = 256  # hidden width of the MLP head
    dropout: float = 0.0  # dropout before head layers; > 0 enables MC-dropout sampling
    # Loss.
    loss: str = "bce"  # "bce" (BCE with logits) or "asl" (asymmetric loss)
    asl_gamma_neg: float = 4.0  # ASL focusing on negatives (Ridnik et al. 2021 default)
    asl_gamma_pos: float = 0.0  # ASL focusing on positives
    asl_clip: float = 0.05  # ASL probability margin: easy negatives below it cost nothing
    pos_weight: str = "none"  # "none" or "balanced": weigh positives by negatives/positives
    max_pos_weight: float = 10.0  # cap on the balanced weight, so rare concepts don't explode
    # Optimisation (AdamW, linear warm-up then cosine decay).
    epochs: int = 30  # at most this many epochs
    batch_size: int = 64
    lr: float = 1e-3  # peak learning rate; the pilot used 1e-4 to fine-tune a pretrained ResNet
    min_lr: float = 1e-5  # floor of the cosine decay
    warmup_epochs: float = 1.0  # linear warm-up length, in epochs
    weight_decay: float = 1e-4  # not applied to biases and norm layers
    grad_clip: float = 0.0  # max gradient norm; 0 disables clipping
    # Early stopping and thresholds.
    patience: int = 5  # stop after this many epochs without a better validation mAP
    min_delta: float = 1e-4  # an improvement smaller than this does not count
    threshold_min_positives: int = 3  # fewer validation positives: use the global threshold
    threshold_fallback: float = 0.5  # when even the global threshold cannot be tuned
    # Data (finetune mode).
    hflip: bool = True  # random horizontal flip; off for digits, inscriptions, maps
    crop_scale: float = 1.0  # lower bound of random-resized-crop area; 1.0 is a plain resize
    num_workers: int = 0  # DataLoader worker processes
    # Runtime.
    device: str = "auto"  # "auto" (cuda when present), "cpu", "cuda", "cuda:1"...
    amp: bool = True  # bfloat16 autocast, on CUDA only
    channels_last: bool = True  # NHWC memory format on CUDA, faster convolutions with AMP
    cpu_threads: int = 0  # torch intra-op threads while fitting on the CPU; 0 leaves them be
    seed: int = 0  # seeds initialisation, data order, augmentation and dropout
    checkpoint_every: int = 1  # hand the training state to the callback every N epochs

    def __post_init__(self) -> None:
        choices = {"mode": ("head", "finetune"), "head": ("linear", "mlp"),
                   "loss": tuple(LOSSES), "pos_weight": ("none", "balanced")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"TrainConfig.{name}={getattr(self, name)!r}: use one of {allowed}")
        if self.epochs < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("epochs, batch_size and checkpoint_every must be at least 1")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild a config from ``asdict`` output, refusing unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig options: {sorted(unknown)}")
        return cls(**data)


# Options that may change between a killed run and its resumption without changing the result.
_RESUMABLE_CHANGES = frozenset({"device", "num_workers", "checkpoint_every", "epochs", "patience",
                                "cpu_threads"})


@dataclass
class FeatureSet:
    """Cached backbone features with their soft targets and weights (head mode).

    Attributes:
        features: (N, D) float32.
        targets: (N, C) in [0, 1].
        weights: (N,) non-negative; ones when not given.
    """

    features: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.features = torch.as_tensor(np.asarray(self.features), dtype=torch.float32)
        self.targets = torch.as_tensor(np.asarray(self.targets), dtype=torch.float32)
        n = len(self.features)
        if self.weights is None:
            self.weights = torch.ones(n)
        self.weights = torch.as_tensor(np.asarray(self.weights), dtype=torch.float32)
        if self.features.ndim != 2 or self.targets.shape[0] != n or self.weights.shape != (n,):
            raise ValueError("features (N, D), targets (N, C) and weights (N,) must agree on N")

    @property
    def num_concepts(self) -> int:
        return self.targets.shape[1]

    def __len__(self) -> int:
        return len(self.features)


@dataclass
class FitResult:
    """What ``fit`` returns.

    Attributes:
        model: the best model (full network, or the head in head mode without a ``model``),
            on the CPU, in eval mode.
        thresholds: (C,) per-concept decision thresholds tuned on validation.
        threshold_tuned: (C,) whether each threshold was tuned (else the global fallback).
        history: one dict per epoch (epoch, train_loss, val_loss, val_map, val_micro_f1, lr, ...).
        val_metrics: :func:`ml.metrics.multilabel_report` on validation at the tuned thresholds.
        best_epoch: the epoch (1-based) whose weights were kept.
        stopped_early: whether patience ran out before ``config.epochs``.
        config: the config used.
        skipped: refused images by split ("train", "val") and dataset index, with the reason;
            filled when images load in the main process (``num_workers=0``), else only logged.
    """

    model: nn.Module
    thresholds: np.ndarray
    threshold_tuned: np.ndarray
    history: list[dict[str, float]]
    val_metrics: dict[str, Any]
    best_epoch: int
    stopped_early: bool
    config: TrainConfig
    skipped: dict[str, dict[int, str]] = field(default_factory=dict)


# ---------------------------------------------------------------------------- losses


LOSSES: dict[str, Callable[..., nn.Module]] = {
    "bce": lambda config, pos_weight: WeightedBCE(pos_weight),
    "asl": lambda config, pos_weight: AsymmetricLoss(
        gamma_neg=config.asl_gamma_neg, gamma_pos=config.asl_gamma_pos, clip=config.asl_clip,
        pos_weight=pos_weight),
}


def create_loss(config: TrainConfig, pos_weight: torch.Tensor | None = None) -> nn.Module:
    """The loss named by ``config.loss``; it takes ``(logits, targets, weights)``."""
    return LOSSES[config.loss](config, pos_weight)


# ---------------------------------------------------------------------------- schedule


def get_lr(step: int, *, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate at optimizer step ``step`` (0-based); a pure function.

    1) linear warm-up from lr / warmup_steps to lr over ``warmup_steps`` steps;
    2) past ``total_steps``, ``min_lr``;
    3) in between, cosine decay from ``lr`` down to ``min_lr``.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    ratio = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return min_lr + coeff * (lr - min_lr)


# ---------------------------------------------------------------------------- loops


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def feature_batches(data: FeatureSet, batch_size: int, *, shuffle: bool,
                    generator: torch.Generator | None = None) -> Iterator[Batch]:
    """Batches ``(features, targets, weights, indices)`` of a :class:`FeatureSet`."""
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        weights = cast(torch.Tensor, data.weights)  # set by __post_init__
        yield data.features[idx], data.targets[idx], weights[idx], idx


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[Batch | None],
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    *,
    device: torch.device,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    lr_at: Callable[[int], float],
    start_step: int,
    amp: bool = False,
    grad_clip: float = 0.0,
) -> tuple[float, int, int]:
    """One pass over the training batches.

    Args:
        prepare: turns a batch of inputs on ``device`` into model inputs (normalisation).
        lr_at: the learning rate at a global step (``get_lr`` with the run's settings).
        start_step: global step at the start of the epoch.

    Returns:
        ``(mean loss per image, global step after the epoch, images seen)``.
    """
    model.train()
    total = torch.zeros((), device=device)  # summed on device: no host sync per step
    seen, step = 0, start_step
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext()
    for batch in batches:
        if batch is None:  # every image of the batch was refused
            continue
        x, y, w, _ = batch
        lr = lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = prepare(x.to(device, non_blocking=True))
        y = y.to(device, non_blocking=True)
        w = w.to(device, non_blocking=True)
        with autocast:
            logits = model(x)  # (B, C)
        loss = loss_fn(logits.float(), y, w)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        total += loss.detach() * len(x)
        seen += len(x)
        step += 1
    return (total.item() / seen if seen else float("nan")), step, seen


@dataclass
class EvalOutput:
    """Predictions over an evaluation set, in dataset order of the images that loaded."""

    probs: np.ndarray  # (M, C)
    targets: np.ndarray  # (M, C) soft targets
    indices: np.ndarray  # (M,) dataset indices (refused images are missing)
    loss: float


def evaluate(
    model: nn.Module,
    batches: Iterable[Batch | None],
    *,
    device: torch.device,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    loss_fn: nn.Module | None = None,
    amp: bool = False,
) -> EvalOutput:
    """Probabilities for every batch, in eval mode and under ``torch.inference_mode()``."""
    model.eval()
    probs, targets, indices = [], [], []
    total = torch.zeros((), device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext()
    with torch.inference_mode():
        for batch in batches:
            if batch is None:
                continue
            x, y, w, idx = batch
            with autocast:
                logits = model(prepare(x.to(device, non_blocking=True))).float()  # (B, C)
            if loss_fn is not None:
                total += loss_fn(logits, y.to(device), w.to(device)) * len(x)
            probs.append(torch.sigmoid(logits).cpu())
            targets.append(y)
            indices.append(idx)
    if not probs:
        raise ValueError("no evaluation image could be loaded")
    n = sum(len(p) for p in probs)
    return EvalOutput(
        probs=torch.cat(probs).numpy(),
        targets=torch.cat(targets).numpy(),
        indices=torch.cat(indices).numpy(),
        loss=total.item() / n if loss_fn is not None else float("nan"),
    )


# ---------------------------------------------------------------------------- fit


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Weight decay on weights only: decaying biases and norm scales just hurts (timm's default).
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _with_images(dataset: LabelledImages, transform: Callable, weights: torch.Tensor
                 ) -> LabelledImages:
    out = copy.copy(dataset)  # the caller's dataset keeps its own transform and weights
    if out.transform is None:
        out.transform = transform
    out.weights = weights
    out.errors = {}
    return out


def fit(
    config: TrainConfig,
    train: FeatureSet | LabelledImages,
    val: FeatureSet | LabelledImages,
    *,
    model: nn.Module | None = None,
    progress: Callable[[dict[str, float]], None] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    resume: dict[str, Any] | None = None,
) -> FitResult:
    """Train a multi-label model, stop early on validation mAP, tune thresholds.

    Args:
        config: the run's settings.
        train: :class:`FeatureSet` in head mode, :class:`ml.data.LabelledImages` in finetune mode.
            An image dataset without a transform gets the backbone's training transform.
        val: the same kind, for early stopping and threshold tuning.
        model: in head mode, a :class:`MultiLabelNet` whose head is trained on ``train``'s
            features (or None: a new head); in finetune mode, the network to train (or None:
            ``create_model(config.backbone, ...)``).
        progress: called after each epoch with that epoch's history row.
        on_checkpoint: called every ``config.checkpoint_every`` epochs and after the last one
            with the training state (a dict of tensors and plain values; save it with
            ``ml.checkpoint.save_train_state``).
        resume: a training state from ``on_checkpoint`` to continue from.

    Returns:
        The :class:`FitResult`.
    """
    previous = torch.get_num_threads(), torch.backends.cudnn.benchmark
    device = resolve_device(config.device)
    if config.cpu_threads and device.type == "cpu":
        # Small matmuls gain nothing from threads, and on a shared machine OpenMP threads
        # spinning against other processes made a head fit 25x slower (see bench/README.md).
        torch.set_num_threads(config.cpu_threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN time its kernels
    try:
        return _fit(config, train, val, model=model, progress=progress,
                    on_checkpoint=on_checkpoint, resume=resume)
    finally:
        torch.set_num_threads(previous[0])
        torch.backends.cudnn.benchmark = previous[1]


def _fit(
    config: TrainConfig,
    train: FeatureSet | LabelledImages,
    val: FeatureSet | LabelledImages,
    *,
    model: nn.Module | None = None,
    progress: Callable[[dict[str, float]], None] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    resume: dict[str, Any] | None = None,
) -> FitResult:
    mode = config.mode
    if mode == "head" and not isinstance(train, FeatureSet):
        raise ValueError("head mode trains on a FeatureSet of cached features")
    if mode == "finetune" and not isinstance(train, LabelledImages):
        raise ValueError("finetune mode trains on LabelledImages")
    if train.num_concepts != val.num_concepts:
        raise ValueError("train and val have different numbers of concepts")
    device = resolve_device(config.device)
    on_cuda = device.type == "cuda"
    amp = config.amp and on_cuda
    channels_last = config.channels_last and on_cuda and mode == "finetune"
    num_concepts = train.num_concepts

    # 1) the network, seeded so that two runs of the same config start from the same weights.
    torch.manual_seed(config.seed)
    if model is None:
        if mode == "head":
            model = Head(cast(FeatureSet, train).features.shape[1], num_concepts, kind=config.head,
                         hidden=config.hidden, dropout=config.dropout)
        else:
            model = create_model(config.backbone, num_concepts, config.weights, head=config.head,
                                 hidden=config.hidden, dropout=config.dropout)
    net = model.head if mode == "head" and isinstance(model, MultiLabelNet) else model
    net.to(device)
    if channels_last:
        net.to(memory_format=torch.channels_last)

    # 2) weights rescaled to mean 1, so the loss scale (and so the lr) does not depend on them.
    train_weights = cast(torch.Tensor, train.weights)  # a FeatureSet's is set by __post_init__
    val_weights = cast(torch.Tensor, val.weights)
    train_w = train_weights / train_weights.mean().clamp(min=1e-12)
    val_w = val_weights / val_weights.mean().clamp(min=1e-12)
    pos_weight = None
    if config.pos_weight == "balanced":
        pos_weight = balanced_pos_weight(train.targets, train_w, cap=config.max_pos_weight)
    loss_fn = create_loss(config, pos_weight).to(device)

    # 3) batches: tensors in head mode; a DataLoader over images in finetune mode.
    gen = torch.Generator()
    if mode == "head":
        train = FeatureSet(cast(FeatureSet, train).features, train.targets, train_w)
        val = FeatureSet(cast(FeatureSet, val).features, val.targets, val_w)
        train_set, val_set = train, val

        def train_batches() -> Iterable[Batch | None]:
            return feature_batches(train_set, config.batch_size, shuffle=True, generator=gen)

        def val_batches() -> Iterable[Batch | None]:
            return feature_batches(val_set, 4 * config.batch_size, shuffle=False)

        def prepare(x: torch.Tensor) -> torch.Tensor:
            return x

        steps_per_epoch = math.ceil(len(train) / config.batch_size)
    else:
        data_config = (model.data_config if isinstance(model, MultiLabelNet)
                       else create_model(config.backbone, 1).data_config)
        aug = AugConfig(hflip=config.hflip, scale=config.crop_scale)
        train = _with_images(cast(LabelledImages, train),
                             build_transform(data_config, train=True, aug=aug), train_w)
        val = _with_images(cast(LabelledImages, val), build_transform(data_config, train=False),
                           val_w)
        loader_kw: dict[str, Any] = dict(
            batch_size=config.batch_size, num_workers=config.num_workers,
            collate_fn=collate_skip_broken, pin_memory=on_cuda,
            persistent_workers=config.num_workers > 0)
        train_loader = DataLoader(train, shuffle=True, drop_last=len(train) > config.batch_size,
                                  generator=gen, **loader_kw)
        val_loader = DataLoader(val, shuffle=False, **loader_kw)

        def train_batches() -> Iterable[Batch | None]:
            return train_loader

        def val_batches() -> Iterable[Batch | None]:
            return val_loader

        def prepare(x: torch.Tensor) -> torch.Tensor:
            x = normalize(x, data_config)  # (B, 3, H, W) uint8 -> float, on the device
            return x.contiguous(memory_format=torch.channels_last) if channels_last else x

        steps_per_epoch = len(train_loader)

    # 4) optimizer and schedule.
    optimizer = torch.optim.AdamW(_param_groups(net, config.weight_decay), lr=config.lr)
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)

    def lr_at(step: int) -> float:
        return get_lr(step, lr=config.lr, min_lr=config.min_lr, warmup_steps=warmup_steps,
                      total_steps=total_steps)

    # 5) state, fresh or resumed.
    history: list[dict[str, float]] = []
    start_epoch, step, best_epoch, bad_epochs = 0, 0, 0, 0
    best_score = -math.inf
    best_state = copy.deepcopy(net.state_dict())
    if resume is not None:
        _check_resumable(config, resume)
        net.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        best_state = resume["best_model"]
        start_epoch, step = int(resume["epoch"]), int(resume["step"])
        best_epoch, bad_epochs = int(resume["best_epoch"]), int(resume["bad_epochs"])
        best_score = float(resume["best_score"])
        history = [dict(row) for row in resume["history"]]

    def state(epoch: int) -> dict[str, Any]:
        # Copies, not references: the loop keeps mutating weights, moments and history in place.
        return {
            "format": "crowdloop-train-state", "version": 1, "config": asdict(config),
            "epoch": epoch, "step": step, "model": _cpu(net.state_dict()),
            "optimizer": copy.deepcopy(optimizer.state_dict()), "best_model": _cpu(best_state),
            "best_epoch": best_epoch, "best_score": best_score, "bad_epochs": bad_epochs,
            "history": [dict(row) for row in history],
        }

    # 6) epochs: train, validate, keep the best, stop when patience runs out.
    stopped_early = bad_epochs >= config.patience
    for epoch in range(start_epoch, config.epochs):
        if stopped_early:
            break
        t0 = time.perf_counter()
        # Re-seeded per epoch (not once) so a resumed run draws exactly what the killed one would.
        gen.manual_seed(config.seed * 1_000_003 + epoch)
        torch.manual_seed(config.seed * 1_000_033 + epoch)
        train_loss, step, seen = train_one_epoch(
            net, train_batches(), optimizer, loss_fn, device=device, prepare=prepare,
            lr_at=lr_at, start_step=step, amp=amp, grad_clip=config.grad_clip)
        train_s = time.perf_counter() - t0
        out = evaluate(net, val_batches(), device=device, prepare=prepare, loss_fn=loss_fn, amp=amp)
        y_val = out.targets >= 0.5
        val_map = mean_average_precision(y_val, out.probs)
        # With no validation positive at all, mAP is undefined: fall back on the loss.
        score = val_map if math.isfinite(val_map) else -out.loss
        row = {
            "epoch": epoch + 1, "train_loss": train_loss, "val_loss": out.loss,
            "val_map": val_map, "val_micro_f1": float(f1_scores(y_val, out.probs)["micro_f1"]),
            "lr": lr_at(step - 1) if step else config.lr, "images": seen,
            "images_per_s": seen / train_s if train_s > 0 else float("nan"),
            "seconds": time.perf_counter() - t0,
        }
        history.append(row)
        if score > best_score + config.min_delta:
            best_score, best_epoch, bad_epochs = score, epoch + 1, 0
            best_state = copy.deepcopy(net.state_dict())
        else:
            bad_epochs += 1
        stopped_early = bad_epochs >= config.patience
        if progress is not None:
            progress(row)
        last = stopped_early or epoch + 1 == config.epochs
        if on_checkpoint is not None and ((epoch + 1) % config.checkpoint_every == 0 or last):
            on_checkpoint(state(epoch + 1))

    # 7) best weights back (gradients dropped: they belong to a later step), thresholds tuned
    # on validation, final report.
    optimizer.zero_grad(set_to_none=True)
    net.load_state_dict(best_state)
    out = evaluate(net, val_batches(), device=device, prepare=prepare, amp=amp)
    y_val = out.targets >= 0.5
    thresholds, tuned = tune_thresholds(
        out.probs, y_val, min_positives=config.threshold_min_positives,
        fallback=config.threshold_fallback)
    model.to("cpu")
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    model.eval()
    return FitResult(
        model=model, thresholds=thresholds, threshold_tuned=tuned, history=history,
        val_metrics=multilabel_report(y_val, out.probs, thresholds), best_epoch=best_epoch,
        stopped_early=stopped_early, config=config,
        skipped={name: dict(getattr(data, "errors", {})) for name, data in
                 (("train", train), ("val", val))},
    )


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _check_resumable(config: TrainConfig, state: dict[str, Any]) -> None:
    if state.get("format") != "crowdloop-train-state":
        raise ValueError("not a crowdloop training state")
    saved = state["config"]
    changed = sorted(k for k, v in asdict(config).items()
                     if k not in _RESUMABLE_CHANGES and saved.get(k) != v)
    if changed:
        raise ValueError(f"cannot resume: the config changed in {changed}")


__all__ = [
    "LOSSES", "EvalOutput", "FeatureSet", "FitResult", "TrainConfig", "create_loss", "evaluate",
    "feature_batches", "fit", "get_lr", "resolve_device", "train_one_epoch",
]
