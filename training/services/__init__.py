"""Services of the model side; views, admin, commands and tasks call these and nothing else.

Names resolve lazily (PEP 562): importing this package must not import PyTorch, so that every
`manage.py` command and web process that only reads runs or requests one stays light; the
training and scoring modules load torch when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "Claim": "training.services.runs",
    "ClaimOutcome": "training.services.runs",
    "ExecuteResult": "training.services.execute",
    "LeaseLost": "training.services.runs",
    "PromotionError": "training.services.versions",
    "TrainingDataError": "training.services.dataset",
    "TrainingParams": "training.services.params",
    "TrainingParamsError": "training.services.params",
    "TrainingSet": "training.services.dataset",
    "model_version_active": "training.services.versions",
    "model_version_load": "training.services.versions",
    "model_version_promote": "training.services.versions",
    "predictions_export": "training.services.scoring",
    "scoring_start": "training.services.scoring",
    "snapshot_load": "training.services.dataset",
    "snapshot_write": "training.services.dataset",
    "training_maybe_trigger": "training.services.triggers",
    "training_new_labels_count": "training.services.triggers",
    "training_nightly": "training.services.triggers",
    "training_params_parse": "training.services.params",
    "training_run_claim": "training.services.runs",
    "training_run_enqueue": "training.services.runs",
    "training_run_execute": "training.services.execute",
    "training_run_fail": "training.services.runs",
    "training_run_heartbeat": "training.services.runs",
    "training_run_request": "training.services.runs",
    "training_runs_reconcile": "training.services.runs",
    "training_set_build": "training.services.dataset",
}

if TYPE_CHECKING:
    from training.services.dataset import (
        TrainingDataError,
        TrainingSet,
        snapshot_load,
        snapshot_write,
        training_set_build,
    )
    from training.services.execute import (
        ExecuteResult,
        training_run_execute,
    )
    from training.services.params import (
        TrainingParams,
        TrainingParamsError,
        training_params_parse,
    )
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
    from training.services.scoring import (
        predictions_export,
        scoring_start,
    )
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
    "Claim",
    "ClaimOutcome",
    "ExecuteResult",
    "LeaseLost",
    "PromotionError",
    "TrainingDataError",
    "TrainingParams",
    "TrainingParamsError",
    "TrainingSet",
    "model_version_active",
    "model_version_load",
    "model_version_promote",
    "predictions_export",
    "scoring_start",
    "snapshot_load",
    "snapshot_write",
    "training_maybe_trigger",
    "training_new_labels_count",
    "training_nightly",
    "training_params_parse",
    "training_run_claim",
    "training_run_enqueue",
    "training_run_execute",
    "training_run_fail",
    "training_run_heartbeat",
    "training_run_request",
    "training_runs_reconcile",
    "training_set_build",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
