"""Model versions: publish a run's checkpoint (fenced), promote, and find the active one."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from ml.checkpoint import CheckpointError
from training.models import ModelVersion, TrainingRun
from training.services.gate import (
    SAME_ITEMS,
    gate_describe,
    gate_fallback,
    gate_first,
)
from training.services.model_cache import model_version_load
from training.services.runs import LeaseLost, run_log_line, training_run_followup_create
from training.signals import model_version_promoted

logger = logging.getLogger(__name__)


class PromotionError(ValueError):
    """The version cannot become active (its checkpoint does not verify)."""


class PromotionNeedsConfirmation(PromotionError):
    """A person promoting a version that did worse on validation than the active one (or whose
    mAP is unknown while the active one's is known) must say so: promote again with
    ``confirm=True``. Carries both versions and the comparison (:func:`promotion_comparison`),
    to show both figures."""

    def __init__(
        self, *, version: ModelVersion, active: ModelVersion,
        comparison: dict[str, Any] | None = None,
    ) -> None:
        self.version, self.active = version, active
        self.comparison = comparison or promotion_comparison(version=version, active=active)
        if self.comparison.get("rule") == SAME_ITEMS:
            figures = (f"on the same {self.comparison.get('items')} validation items v{version.pk} "
                       f"has an mAP of {_fmt(self.comparison.get('candidate_map'))}, the active "
                       f"v{active.pk} {_fmt(self.comparison.get('active_map'))}")
        else:
            figures = (f"v{version.pk} has a validation mAP of {_fmt(version.val_map)}, the "
                       f"active v{active.pk} {_fmt(active.val_map)}")
        super().__init__(f"{figures}: promoting it needs a confirmation")


def promotion_comparison(
    *, version: ModelVersion, active: ModelVersion | None
) -> dict[str, Any]:
    """How ``version`` compares with ``active``: its gate when the gate scored both on the same
    items against that very version, else each one's own validation mAP (and why).

    Returns:
        A gate record (:class:`training.services.gate.Gate`); ``passed`` says "not worse".
    """
    if active is None:
        return dict(gate_first())
    gate = version.gate or {}
    if gate.get("rule") == SAME_ITEMS and gate.get("active_version") == active.pk:
        return dict(gate)
    if gate.get("rule") == SAME_ITEMS:
        reason = f"the gate compared v{version.pk} with v{gate.get('active_version')}"
    else:
        reason = f"v{version.pk} was not scored on the same items as v{active.pk}"
    return dict(gate_fallback(candidate_map=version.val_map, active=active, reason=reason))


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
    gate: dict[str, Any] | None = None,
) -> Published:
    """Register a trained checkpoint as a version and finish the run, in ONE transaction.

    The transaction starts with ``UPDATE run SET status='succeeded' WHERE id=:run AND
    attempts=:mine AND status='running'``: an attempt whose lease was taken over publishes
    nothing. The new version becomes active when it is not worse than the active one: on the same
    validation items when ``gate`` (:func:`training.services.gate.gate_compare`) scored both
    against the version still active, else on each one's own validation mAP (the reason is
    recorded in ``ModelVersion.gate``). The pool is scored after commit.

    Raises:
        LeaseLost: this attempt no longer holds the run.
    """
    now = timezone.now()
    with transaction.atomic():
        fenced = TrainingRun.objects.filter(pk=run_id).held_by(attempt).finish(
            status=TrainingRun.Status.SUCCEEDED,
            now=now,
            progress=1.0,
            log=Concat(F("log"), Value(run_log_line(note, now=now))),
        )
        if fenced != 1:
            raise LeaseLost(f"training run {run_id}: attempt {attempt} lost it before publishing")
        run = TrainingRun.objects.get(pk=run_id)
        previous = (
            ModelVersion.objects.select_for_update()
            .filter(family=run.family, status=ModelVersion.Status.ACTIVE)
            .first()
        )
        decided = _gate_decide(gate, val_map=fields.get("val_map"), previous=previous)
        version = ModelVersion.objects.create(
            family=run.family, training_run=run, gate=decided, **fields
        )
        promoted = bool(decided["passed"])
        described = gate_describe(decided)
        if promoted:
            _activate(version, previous=previous,
                      note=_note(f"promoted by the gate: {described}") if previous else "")
            _score_after_commit(version)
        elif settings.TRAINING_SCORE_CANDIDATES:
            _score_after_commit(version)
        verdict = (
            f"model v{version.pk} active ({described})"
            if promoted
            # not promoted: the gate compared with a previous version (gate_first passes)
            else f"model v{version.pk} kept as candidate, worse than active "
            f"v{cast(ModelVersion, previous).pk} "
            f"({described})"
        )
        line = Value(run_log_line(verdict))
        TrainingRun.objects.filter(pk=run_id).update(log=Concat(F("log"), line))
        training_run_followup_create(run)
    logger.info("training run %s: %s", run_id, verdict)
    return Published(version=version, promoted=promoted, previous=previous)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _note(text: str) -> str:
    limit = ModelVersion._meta.get_field("promotion_note").max_length or 500
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _gate_decide(
    gate: dict[str, Any] | None, *, val_map: float | None, previous: ModelVersion | None
) -> dict[str, Any]:
    """The gate record to store: the comparison made before publishing when it was made against
    the version active now, else the fallback rule on each one's own validation mAP."""
    if previous is None:
        return dict(gate_first())
    if gate and gate.get("active_version") == previous.pk and "passed" in gate:
        return dict(gate)
    if gate and gate.get("rule") == SAME_ITEMS:
        reason = (f"v{previous.pk} became active while the gate scored "
                  f"v{gate.get('active_version')}")
    elif gate and gate.get("reason"):
        reason = str(gate["reason"])
    else:
        reason = "the candidate and the active version were not scored on the same items"
    return dict(gate_fallback(candidate_map=val_map, active=previous, reason=reason))


def model_version_promote(
    *, version: ModelVersion, by: Any = None, confirm: bool = False
) -> bool:
    """Make a version active (staff action); False when it already was.

    The checkpoint is verified first: a version whose files changed is never made active. A
    version that did worse on validation than the active one (the publish gate's rule) is
    promoted only with ``confirm=True``, and the override is written on it
    (``promotion_note``: over which version, both mAPs, confirmed by whom). "Worse" is judged on
    the same validation items when the version's gate compared it with the version active now
    (:func:`promotion_comparison`).

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
        comparison = promotion_comparison(version=version, active=current)
        if current is not None and not comparison["passed"]:
            if not confirm:
                raise PromotionNeedsConfirmation(
                    version=version, active=current, comparison=comparison
                )
            who = getattr(by, "username", None) or "system"
            note = _note(
                f"promoted over v{current.pk} ({gate_describe(comparison)}), confirmed by {who}"
                if comparison.get("rule") == SAME_ITEMS else
                f"promoted over v{current.pk} (val mAP {_fmt(current.val_map)}) with val mAP "
                f"{_fmt(version.val_map)}, confirmed by {who}"
            )
        _activate(version, previous=current, by=by, note=note)
        if version.scored_at is None and not version.scoring_chunks:
            _score_after_commit(version)
    logger.info("model v%s promoted by %s", version.pk, getattr(by, "username", "system"))
    return True
