"""Model versions: publish a run's checkpoint (fenced), promote, and find the active one."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from ml.checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint
from training.models import DEFAULT_FAMILY, ModelVersion, TrainingRun
from training.services.runs import LeaseLost, _followup, _line
from training.signals import model_version_promoted

logger = logging.getLogger(__name__)


class PromotionError(ValueError):
    """The version cannot become active (its checkpoint does not verify)."""


class PromotionNeedsConfirmation(PromotionError):
    """A person promoting a version that did worse on validation than the active one (or whose
    mAP is unknown while the active one's is known) must say so: promote again with
    ``confirm=True``. Carries both versions and their validation mAPs, to show them."""

    def __init__(self, *, version: ModelVersion, active: ModelVersion) -> None:
        self.version, self.active = version, active
        super().__init__(
            f"v{version.pk} has a validation mAP of {_fmt(version.val_map)}, the active "
            f"v{active.pk} {_fmt(active.val_map)}: promoting it needs a confirmation"
        )


def checkpoint_file(version: ModelVersion) -> Path:
    """The sidecar path of a version, refusing anything outside ARTIFACT_ROOT."""
    root = Path(settings.ARTIFACT_ROOT).resolve()
    path = (root / version.checkpoint_path).resolve()
    if not path.is_relative_to(root):
        raise CheckpointError(f"checkpoint path leaves ARTIFACT_ROOT: {version.checkpoint_path}")
    return path


def model_version_load(version: ModelVersion) -> LoadedCheckpoint:
    """The version's model, after its weights hash to the sha256 recorded on the row.

    Raises:
        ml.checkpoint.CheckpointError: missing or changed files.
    """
    return load_checkpoint(checkpoint_file(version), expected_sha256=version.checkpoint_sha256)


def model_version_active(*, family: str = DEFAULT_FAMILY) -> ModelVersion | None:
    return ModelVersion.objects.filter(family=family, status=ModelVersion.Status.ACTIVE).first()


def _not_worse(candidate: float | None, active: float | None) -> bool:
    """Promotion rule: validation mAP not worse than the active version's (unknown loses)."""
    if active is None or not math.isfinite(active):
        return True
    if candidate is None or not math.isfinite(candidate):
        return False
    return candidate >= active


def _activate(
    version: ModelVersion, *, previous: ModelVersion | None, by: Any = None, note: str = ""
) -> None:
    now = timezone.now()
    if previous is not None and previous.pk != version.pk:
        # Archive first: the partial unique constraint allows one active version at a time.
        ModelVersion.objects.filter(pk=previous.pk).update(status=ModelVersion.Status.ARCHIVED)
    ModelVersion.objects.filter(pk=version.pk).update(
        status=ModelVersion.Status.ACTIVE, promoted_at=now,
        promoted_by=by if getattr(by, "pk", None) else None, promotion_note=note,
    )
    version.status, version.promoted_at = ModelVersion.Status.ACTIVE, now
    version.promotion_note = note
    transaction.on_commit(
        partial(
            model_version_promoted.send,
            sender=ModelVersion,
            version_id=version.pk,
            previous_id=previous.pk if previous is not None else None,
            by=getattr(by, "username", None) or "training",
        )
    )


def _score_after_commit(version: ModelVersion) -> None:
    from training.services.scoring import scoring_start

    transaction.on_commit(partial(scoring_start, model_version_id=version.pk))


@dataclass(frozen=True)
class Published:
    version: ModelVersion
    promoted: bool
    previous: ModelVersion | None


def model_version_publish(
    *,
    run_id: int,
    attempt: int,
    fields: dict[str, Any],
    note: str,
) -> Published:
    """Register a trained checkpoint as a version and finish the run, in ONE transaction.

    The transaction starts with ``UPDATE run SET status='succeeded' WHERE id=:run AND
    attempts=:mine AND status='running'``: an attempt whose lease was taken over publishes
    nothing. The new version becomes active when its validation mAP is not worse than the active
    one's; the pool is scored after commit.

    Raises:
        LeaseLost: this attempt no longer holds the run.
    """
    now = timezone.now()
    with transaction.atomic():
        fenced = TrainingRun.objects.filter(
            pk=run_id, attempts=attempt, status=TrainingRun.Status.RUNNING
        ).update(
            status=TrainingRun.Status.SUCCEEDED,
            progress=1.0,
            finished_at=now,
            lease_until=None,
            log=Concat(F("log"), Value(_line(note, now=now))),
        )
        if fenced != 1:
            raise LeaseLost(f"training run {run_id}: attempt {attempt} lost it before publishing")
        run = TrainingRun.objects.get(pk=run_id)
        version = ModelVersion.objects.create(family=run.family, training_run=run, **fields)
        previous = (
            ModelVersion.objects.select_for_update()
            .filter(family=run.family, status=ModelVersion.Status.ACTIVE)
            .first()
        )
        promoted = _not_worse(version.val_map, previous.val_map if previous else None)
        if promoted:
            _activate(version, previous=previous)
            _score_after_commit(version)
        elif settings.TRAINING_SCORE_CANDIDATES:
            _score_after_commit(version)
        verdict = (
            f"model v{version.pk} active (val mAP {_fmt(version.val_map)}"
            + (f" vs {_fmt(previous.val_map)} of v{previous.pk})" if previous else ")")
            if promoted
            else f"model v{version.pk} kept as candidate (val mAP {_fmt(version.val_map)} < "
            f"{_fmt(previous.val_map)} of active v{previous.pk})"
        )
        TrainingRun.objects.filter(pk=run_id).update(log=Concat(F("log"), Value(_line(verdict))))
        _followup(run)
    logger.info("training run %s: %s", run_id, verdict)
    return Published(version=version, promoted=promoted, previous=previous)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def model_version_promote(
    *, version: ModelVersion, by: Any = None, confirm: bool = False
) -> bool:
    """Make a version active (staff action); False when it already was.

    The checkpoint is verified first: a version whose files changed is never made active. A
    version that did worse on validation than the active one (the publish gate's rule,
    ``_not_worse``) is promoted only with ``confirm=True``, and the override is written on it
    (``promotion_note``: over which version, both mAPs, confirmed by whom).

    Raises:
        PromotionNeedsConfirmation: a worse version, without ``confirm``.
        PromotionError: the checkpoint is missing or does not match its sha256.
    """
    try:
        model_version_load(version)
    except CheckpointError as exc:
        raise PromotionError(f"v{version.pk} cannot be promoted: {exc}") from exc
    with transaction.atomic():
        current = (
            ModelVersion.objects.select_for_update()
            .filter(family=version.family, status=ModelVersion.Status.ACTIVE)
            .first()
        )
        if current is not None and current.pk == version.pk:
            return False
        note = ""
        if current is not None and not _not_worse(version.val_map, current.val_map):
            if not confirm:
                raise PromotionNeedsConfirmation(version=version, active=current)
            note = (
                f"promoted over v{current.pk} (val mAP {_fmt(current.val_map)}) with val mAP "
                f"{_fmt(version.val_map)}, confirmed by {getattr(by, 'username', None) or 'system'}"
            )
        _activate(version, previous=current, by=by, note=note)
        if version.scored_at is None and not version.scoring_chunks:
            _score_after_commit(version)
    logger.info("model v%s promoted by %s", version.pk, getattr(by, "username", "system"))
    return True
