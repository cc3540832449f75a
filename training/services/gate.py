"""The promotion gate: a new version and the active one, scored on the same validation items.

Each run's own validation mAP is measured on a split that grows with the pool, so two recorded
mAPs compare different items (on a long-tailed pool, a first model with an easy tiny split stayed
active through every later retrain). After a run trains, the active version is scored on the
candidate's validation items by the pool's scoring code
(:func:`training.services.scoring.probabilities`), both mAPs come from
:func:`ml.metrics.mean_average_precision` on the concepts both know, and the candidate is
promoted when it is not worse. When the active version cannot be scored, the gate falls back to
the two recorded mAPs and says why in :attr:`ModelVersion.gate`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from annotate.services.media import image_path
from ml.checkpoint import CheckpointError
from ml.metrics import mean_average_precision
from training.models import ModelVersion, TrainingRun

if TYPE_CHECKING:
    from training.services.dataset import TrainingSet

logger = logging.getLogger(__name__)

#: The gate compared both versions on the same validation items and concepts.
SAME_ITEMS = "same-items"
#: The fallback: each version's own validation mAP, measured on different items.
VALIDATION_MAP = "validation-map"
#: No version was active: the candidate is the first.
FIRST = "first"

#: What scoring a checkpoint may raise when it cannot be used for the comparison.
_UNSCORABLE = (CheckpointError, TypeError, ValueError, RuntimeError, OSError, KeyError)


class Gate(TypedDict, total=False):
    """The JSON stored on ``ModelVersion.gate``."""

    rule: str  # SAME_ITEMS, VALIDATION_MAP or FIRST
    items: int | None  # validation items both versions scored (SAME_ITEMS only)
    candidate_map: float | None
    active_map: float | None
    active_version: int | None
    concepts: list[str]  # the concepts compared (those both versions know)
    concepts_left_out: list[str]  # the candidate's concepts the active version does not know
    reason: str  # why the fallback rule was used
    passed: bool  # the candidate is not worse than the active version under ``rule``


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def gate_fallback(
    *, candidate_map: float | None, active: ModelVersion, reason: str
) -> Gate:
    """The rule before this gate: each version's own validation mAP (unknown loses)."""
    cand, act = _finite(candidate_map), _finite(active.val_map)
    return Gate(
        rule=VALIDATION_MAP, items=None, candidate_map=cand, active_map=act,
        active_version=active.pk, reason=reason,
        passed=act is None or (cand is not None and cand >= act),
    )


def gate_first() -> Gate:
    return Gate(rule=FIRST, items=None, active_version=None, reason="no version was active",
                passed=True)


def gate_compare(
    *,
    candidate: ModelVersion,
    active: ModelVersion | None,
    data: TrainingSet,
    candidate_map: float | None,
) -> Gate:
    """Score ``candidate`` and ``active`` on ``data``'s validation items and compare their mAPs.

    Args:
        candidate: the new version; it need not be saved yet (its checkpoint must exist).
        active: the version active now, or None.
        data: the training set the candidate was trained on; its ``val`` split is used.
        candidate_map: the candidate's own validation mAP, for the fallback rule.

    Returns:
        The gate record; ``passed`` says whether the candidate is not worse.
    """
    if active is None:
        return gate_first()
    order = list(candidate.concepts)
    known = set(active.concepts)
    shared = [k for k in order if k in known]
    left_out = [k for k in order if k not in known]
    if not shared:
        return gate_fallback(candidate_map=candidate_map, active=active,
                             reason=f"v{active.pk} knows none of the candidate's concepts")
    val = data.subset("val")
    if not len(val):
        return gate_fallback(candidate_map=candidate_map, active=active,
                             reason="the training set has no validation item")
    sources = [str(image_path(data.images[i])) for i in val]
    try:
        cand_probs, cand_ok = _scores(candidate, sources)
    except _UNSCORABLE as exc:
        logger.warning("gate: the candidate could not be scored: %s", exc)
        return gate_fallback(candidate_map=candidate_map, active=active,
                             reason=f"the candidate could not be scored: {_short(exc)}")
    try:
        act_probs, act_ok = _scores(active, sources)
    except _UNSCORABLE as exc:
        logger.warning("gate: active v%s could not be scored: %s", active.pk, exc)
        return gate_fallback(candidate_map=candidate_map, active=active,
                             reason=f"v{active.pk} could not be scored: {_short(exc)}")
    ok = cand_ok & act_ok
    cand_cols = [order.index(k) for k in shared]
    act_cols = [list(active.concepts).index(k) for k in shared]
    y_true = data.targets[val][ok][:, cand_cols] >= 0.5  # binarised as in training
    comparison = shared_maps(y_true, cand_probs[ok][:, cand_cols], act_probs[ok][:, act_cols])
    if comparison is None:
        return gate_fallback(
            candidate_map=candidate_map, active=active,
            reason=f"no positive label among the {int(ok.sum())} validation items both scored",
        )
    cand_map, act_map = comparison
    return Gate(
        rule=SAME_ITEMS, items=int(ok.sum()), candidate_map=cand_map, active_map=act_map,
        active_version=active.pk, concepts=shared, concepts_left_out=left_out,
        passed=cand_map >= act_map,
    )


def shared_maps(
    y_true: np.ndarray, candidate_scores: np.ndarray, active_scores: np.ndarray
) -> tuple[float, float] | None:
    """Both mAPs over the same (N, C) labels, or None when no concept has a positive."""
    if not len(y_true):
        return None
    cand = mean_average_precision(y_true, candidate_scores)
    act = mean_average_precision(y_true, active_scores)
    if not (math.isfinite(cand) and math.isfinite(act)):
        return None
    return round(cand, 6), round(act, 6)


def _scores(version: ModelVersion, sources: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    # Imported here: the scoring module pulls in torchvision, and this one is imported by the
    # worker only.
    from training.services.scoring import probabilities

    probs, ok, _ = probabilities(version, list(sources))
    return probs, ok


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 200 else text[:199] + "…"


def gate_describe(gate: dict[str, Any]) -> str:
    """One line for a log, a promotion note or the admin: both figures and what they stand on."""
    if not gate:
        return "no gate recorded"
    rule = gate.get("rule")
    if rule == FIRST:
        return "first version: no version was active"
    active = f"v{gate.get('active_version')}"
    cand, act = _fmt(gate.get("candidate_map")), _fmt(gate.get("active_map"))
    if rule == SAME_ITEMS:
        concepts = gate.get("concepts") or []
        left = gate.get("concepts_left_out") or []
        text = (f"mAP {cand} vs {act} of {active} on the same {gate.get('items')} validation "
                f"items")
        if left:
            text += (f", on the {len(concepts)} concepts both know ({active} does not know "
                     f"{', '.join(left[:5])}{'…' if len(left) > 5 else ''})")
        return text
    return (f"val mAP {cand} vs {act} of {active}, each on its own validation split "
            f"({gate.get('reason', 'fallback')})")


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def gate_for_run(
    *,
    run: TrainingRun,
    attempt: int,
    data: TrainingSet,
    backbone: str,
    mode: str,
    checkpoint_path: str,
    checkpoint_sha256: str,
    val_map: float | None,
) -> Gate:
    """The gate of a run's freshly saved checkpoint, before it is published (the training
    worker calls it). Scoring takes as long as a validation pass, so the lease is renewed first.

    Raises:
        LeaseLost: this attempt no longer holds the run.
    """
    from training.services.runs import lease_seconds, training_run_heartbeat

    candidate = ModelVersion(
        family=run.family, backbone=backbone, mode=mode, concepts=list(data.concepts),
        checkpoint_path=checkpoint_path, checkpoint_sha256=checkpoint_sha256, val_map=val_map,
    )
    active = ModelVersion.objects.filter(
        family=run.family, status=ModelVersion.Status.ACTIVE
    ).first()
    if active is not None:
        training_run_heartbeat(
            run_id=run.pk, attempt=attempt, lease_s=lease_seconds(run),
            note=f"promotion gate: scoring the candidate and active v{active.pk} on the same "
            f"{int((data.split == 'val').sum())} validation items",
        )
    gate = gate_compare(candidate=candidate, active=active, data=data, candidate_map=val_map)
    logger.info("training run %s: gate %s", run.pk, gate_describe(dict(gate)))
    return gate
