"""What a training worker does with a run: claim, build the data, train, checkpoint, publish."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from django.conf import settings
from django.db import InterfaceError, OperationalError

from annotate.services.media import image_path
from ml.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_train_state,
    save_checkpoint,
    save_train_state,
)
from ml.data import LabelledImages
from ml.embeddings import compute_embeddings
from ml.models import create_model
from ml.train import FeatureSet, TrainConfig, fit
from training.models import TrainingRun
from training.services.dataset import (
    TrainingSet,
    run_dir,
    snapshot_load,
    snapshot_write,
    training_set_build,
    training_set_count,
)
from training.services.faults import faults_from_env
from training.services.gate import gate_for_run
from training.services.params import run_weights, training_device, weights_resolve, weights_spec
from training.services.runs import (
    ClaimOutcome,
    LeaseLost,
    lease_seconds,
    training_run_claim,
    training_run_fail,
    training_run_heartbeat,
    training_run_record,
    training_run_release,
)
from training.services.scoring import embedding_cache
from training.services.versions import model_version_publish

logger = logging.getLogger(__name__)

#: Errors worth a retry of the whole task: the database or the broker blinked.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)


class _ImageLimits(TypedDict):
    """The image-size limits passed on to the readers (``**limits``)."""

    max_pixels: int
    max_bytes: int


@dataclass(frozen=True)
class ExecuteResult:
    """What one delivery of a run's message did (the task returns it as JSON)."""

    run_id: int
    outcome: str  # a ClaimOutcome other than "claimed", or succeeded / failed / lost
    attempt: int = 0
    model_version_id: int | None = None
    promoted: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "outcome": self.outcome, "attempt": self.attempt,
                "model_version_id": self.model_version_id, "promoted": self.promoted}


def _clean(value: Any) -> Any:
    """JSON-safe numbers: NaN and infinities become null (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def training_run_execute(*, run_id: int, worker_id: str) -> ExecuteResult:
    """Serve one delivery of a run's message; must handle being called more than once.

    A delivery that cannot claim the run (live lease, finished, locked, missing) does nothing;
    one that finds the attempts spent fails the run (poison guard). A claimed run trains and
    publishes; a permanent error fails it; a transient database error hands it back to the queue
    and re-raises so that the task's bounded retry claims it again.
    """
    claim = training_run_claim(run_id=run_id, worker_id=worker_id)
    if claim.outcome != ClaimOutcome.CLAIMED:
        logger.info("training run %s: %s, nothing to do", run_id, claim.outcome)
        return ExecuteResult(run_id, claim.outcome.value)
    assert claim.run is not None
    attempt = claim.attempt
    try:
        version_id, promoted = _train_and_publish(claim.run, attempt)
    except LeaseLost as exc:
        logger.warning("%s", exc)
        return ExecuteResult(run_id, "lost", attempt)
    except TRANSIENT_ERRORS as exc:
        try:
            training_run_release(run_id=run_id, attempt=attempt, reason=f"{type(exc).__name__}")
        except Exception:  # the database is still away: the lease expires, the reconciler acts
            logger.exception("training run %s: could not release after %s", run_id, exc)
        raise
    except Exception as exc:  # a permanent error: record it where staff will look
        logger.exception("training run %s attempt %s failed", run_id, attempt)
        training_run_fail(run_id=run_id, attempt=attempt, error=f"{type(exc).__name__}: {exc}")
        return ExecuteResult(run_id, "failed", attempt)
    return ExecuteResult(run_id, "succeeded", attempt, version_id, promoted)


def _config(params: dict[str, Any]) -> TrainConfig:
    weights = run_weights(params)
    return TrainConfig(
        mode=params["mode"],
        backbone=params["backbone"],
        # The file the spec names (the cache path for a download); verified in _weights.
        weights=str(weights_spec(params["backbone"], weights).path) if weights else None,
        head=params.get("head", "linear"),
        loss=params.get("loss", "bce"),
        epochs=int(params["epochs"]),
        batch_size=int(params["batch_size"]),
        lr=float(params["lr"]),
        seed=int(params["seed"]),
        hflip=bool(params.get("hflip", True)),
        # Runs requested before these knobs existed had a dropout-free linear head.
        dropout=float(params.get("dropout", 0.0)),
        hidden=int(params.get("hidden", 256)),
        patience=int(settings.TRAINING_PATIENCE),
        device=settings.TRAINING_DEVICE,
        checkpoint_every=1,
    )


def _data(run: TrainingRun, attempt: int) -> TrainingSet:
    """The run's snapshot when an earlier attempt wrote one, else a new one from final labels."""
    if run.snapshot_sha256:
        return snapshot_load(path=run.snapshot_path, sha256=run.snapshot_sha256)
    counted = training_set_count()
    data = training_set_build()
    path, sha = snapshot_write(run_id=run.pk, data=data)
    counts = data.counts()
    training_run_record(
        run_id=run.pk, attempt=attempt, snapshot_path=path, snapshot_sha256=sha,
        n_items=len(data), labels_counted=counted,
    )
    training_run_heartbeat(
        run_id=run.pk, attempt=attempt, lease_s=lease_seconds(run),
        note=(f"training set: {counts['items']} items ({counts['curator']} curated, "
              f"{counts['crowd']} crowd; {counts['train']} train, {counts['val']} validation), "
              f"snapshot sha256 {sha[:12]}"),
    )
    return data


def _state_path(run_id: int, sha256: str) -> Path:
    return run_dir(run_id) / f"state-{sha256}.pt"


def _states_drop(run_id: int, *, keep: str | None) -> None:
    """Remove a run's resume states except the one named ``keep`` (all of them for None)."""
    kept = _state_path(run_id, keep) if keep else None
    for path in run_dir(run_id).glob("state-*.pt"):
        if path != kept:
            path.unlink(missing_ok=True)


def _resume_state(run: TrainingRun) -> dict[str, Any] | None:
    path = _state_path(run.pk, run.state_sha256)
    if not run.state_sha256 or not path.exists():
        return None
    try:
        return load_train_state(path, expected_sha256=run.state_sha256)
    except CheckpointError as exc:
        logger.warning("training run %s: not resuming, state refused: %s", run.pk, exc)
        return None


def _weights(run: TrainingRun, attempt: int) -> tuple[str, str, str | None]:
    """The run's pretrained weights: (spec, sha256, verified file), fetched if not cached yet.

    Raises:
        ml.weights.WeightsError: a missing file that cannot be downloaded, a hash mismatch, an
            unreadable file (the run fails with the message).
    """
    text = run_weights(run.params)
    if not text:
        return "", "", None
    resolved = weights_resolve(run.params["backbone"], text, fetch=True)
    training_run_record(run_id=run.pk, attempt=attempt, weights=text,
                        weights_sha256=resolved.sha256)
    training_run_heartbeat(
        run_id=run.pk, attempt=attempt, lease_s=lease_seconds(run),
        note=f"weights {text}: {resolved.path.name}, sha256 {resolved.sha256[:12]}",
    )
    return text, resolved.sha256, str(resolved.path)


def _train_and_publish(run: TrainingRun, attempt: int) -> tuple[int, bool]:
    params = run.params
    lease_s = lease_seconds(run)
    faults = faults_from_env()
    data = _data(run, attempt)
    config = _config(params)
    concepts = data.concepts
    sources = [str(image_path(rel)) for rel in data.images]
    train_idx, val_idx = data.subset("train"), data.subset("val")

    # 1) the network, seeded: a retry rebuilds the same trunk, so head-mode features still match.
    weights, weights_sha256, weights_path = _weights(run, attempt)
    torch.manual_seed(config.seed)
    model = create_model(config.backbone, len(concepts), weights_path, head=config.head,
                         hidden=config.hidden, dropout=config.dropout,
                         **params.get("model_kwargs", {}))
    limits: _ImageLimits = {
        "max_pixels": settings.IMAGE_MAX_PIXELS, "max_bytes": settings.IMAGE_MAX_BYTES
    }
    if config.mode == "head":
        emb = compute_embeddings(model, sources, cache=embedding_cache(model),
                                 device=training_device(), **limits)
        ok = emb.ok
        train_idx, val_idx = train_idx[ok[train_idx]], val_idx[ok[val_idx]]
        refused = int((~ok).sum())
        train: Any = FeatureSet(emb.features[train_idx], data.targets[train_idx],
                                data.weights[train_idx])
        val: Any = FeatureSet(emb.features[val_idx], data.targets[val_idx], data.weights[val_idx])
    else:
        refused = 0
        train = LabelledImages([sources[i] for i in train_idx], data.targets[train_idx],
                               data.weights[train_idx], **limits)
        val = LabelledImages([sources[i] for i in val_idx], data.targets[val_idx],
                             data.weights[val_idx], **limits)
    if not len(train_idx) or not len(val_idx):
        raise ValueError("no usable image left in the training or validation split")

    # 2) resume from the last epoch an earlier attempt checkpointed.
    resume = _resume_state(run)
    history: list[dict[str, Any]] = [dict(r) for r in resume["history"]] if resume else []
    training_run_heartbeat(
        run_id=run.pk, attempt=attempt, lease_s=lease_s, metrics=_clean(history),
        progress=len(history) / config.epochs,
        note=(f"resuming after epoch {resume['epoch']}" if resume else
              f"training {config.backbone} ({config.mode}) for up to {config.epochs} epochs on "
              f"{len(train_idx)} items, validating on {len(val_idx)}")
        + (f"; {refused} images refused" if refused else ""),
    )

    def progress(row: dict[str, float]) -> None:
        history.append(dict(row))
        training_run_heartbeat(
            run_id=run.pk, attempt=attempt, lease_s=lease_s, metrics=_clean(history),
            progress=min(0.95, row["epoch"] / config.epochs),
        )

    def on_checkpoint(state: dict[str, Any]) -> None:
        # Write under a new name, record the hash, then drop the older states: a state file is
        # only trusted once the row names it, and a kill between the write and the record
        # leaves the state the row names in place, so the retry still resumes.
        written = run_dir(run.pk) / "state-next.pt"
        sha = save_train_state(written, state)
        written.replace(_state_path(run.pk, sha))
        training_run_heartbeat(run_id=run.pk, attempt=attempt, lease_s=lease_s, state_sha256=sha)
        _states_drop(run.pk, keep=sha)
        faults.epoch_done(int(state["epoch"]))

    result = fit(config, train, val, model=model, progress=progress,
                 on_checkpoint=on_checkpoint, resume=resume)

    # 3) the checkpoint: temp file, fsync, rename (ml.checkpoint), then read back and verified.
    version_dir = Path(settings.ARTIFACT_ROOT) / "models" / f"run-{run.pk}-attempt-{attempt}"
    metrics = _clean(result.val_metrics)
    snapshot_sha = TrainingRun.objects.values_list("snapshot_sha256", flat=True).get(pk=run.pk)
    saved = save_checkpoint(
        version_dir, result.model, config=result.config, concepts=concepts,
        thresholds=result.thresholds, metrics=metrics,
        extra={"training_run": run.pk, "attempt": attempt, "snapshot_sha256": snapshot_sha,
               "best_epoch": result.best_epoch},
    )
    load_checkpoint(saved.meta_path, expected_sha256=saved.sha256)
    val_map = metrics.get("map")
    # The promotion gate: the candidate and the active version on the same validation items.
    gate = gate_for_run(
        run=run, attempt=attempt, data=data, backbone=config.backbone, mode=config.mode,
        checkpoint_path=str(saved.meta_path.relative_to(Path(settings.ARTIFACT_ROOT))),
        checkpoint_sha256=saved.sha256, val_map=val_map,
    )
    published = model_version_publish(
        run_id=run.pk,
        attempt=attempt,
        gate=dict(gate),
        fields={
            "backbone": config.backbone,
            "mode": config.mode,
            "concepts": concepts,
            "checkpoint_path": str(saved.meta_path.relative_to(Path(settings.ARTIFACT_ROOT))),
            "checkpoint_sha256": saved.sha256,
            "snapshot_sha256": snapshot_sha,
            "weights": weights,
            "weights_sha256": weights_sha256,
            "metrics": {**metrics, "best_epoch": result.best_epoch,
                        "stopped_early": result.stopped_early,
                        "threshold_tuned": [bool(t) for t in result.threshold_tuned]},
            "val_map": val_map,
            "thresholds": [float(t) for t in result.thresholds],
            "n_train": len(train_idx),
            "n_val": len(val_idx),
        },
        note=f"attempt {attempt} succeeded: best epoch {result.best_epoch}, "
        f"val mAP {val_map if val_map is not None else 'n/a'}",
    )
    # The resume state has served its purpose; the published checkpoint is what stays.
    _states_drop(run.pk, keep=None)
    return published.version.pk, published.promoted
