"""Services of the model side; views, admin, commands and tasks call these and nothing else."""

from __future__ import annotations

from training.services.dataset import (
    TrainingDataError,
    TrainingSet,
    snapshot_load,
    snapshot_write,
    training_set_build,
)
from training.services.execute import ExecuteResult, training_run_execute
from training.services.params import TrainingParams, TrainingParamsError, training_params_parse
from training.services.runs import (
    Claim,
    ClaimOutcome,
    LeaseLost,
    training_run_claim,
    training_run_enqueue,
    training_run_fail,
    training_run_heartbeat,
    training_run_request,
    training_runs_reconcile,
)
from training.services.scoring import predictions_export, scoring_start
from training.services.triggers import (
    training_maybe_trigger,
    training_new_labels_count,
    training_nightly,
)
from training.services.versions import (
    PromotionError,
    model_version_active,
    model_version_load,
    model_version_promote,
)

__all__ = [
    "ExecuteResult",
    "PromotionError",
    "model_version_active",
    "model_version_load",
    "model_version_promote",
    "predictions_export",
    "scoring_start",
    "training_maybe_trigger",
    "training_new_labels_count",
    "training_nightly",
    "training_run_execute",
    "Claim",
    "ClaimOutcome",
    "LeaseLost",
    "TrainingDataError",
    "TrainingParams",
    "TrainingParamsError",
    "TrainingSet",
    "snapshot_load",
    "snapshot_write",
    "training_params_parse",
    "training_run_claim",
    "training_run_enqueue",
    "training_run_fail",
    "training_run_heartbeat",
    "training_run_request",
    "training_runs_reconcile",
    "training_set_build",
]
