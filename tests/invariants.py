"""The state every fault test must leave behind (reliability §4 conventions).

:func:`invariants_check` asserts, against the database the test uses:

* every Panoptes classification id is stored once;
* no sync cursor is ahead of the largest classification id committed for its workflow;
* at most one training run per model family is queued or running;
* the active model version of each family points at a checkpoint whose hash verifies.
"""

from __future__ import annotations

from django.db.models import Count, Max


def invariants_check() -> None:
    from annotate.models import Classification, SyncCursor
    from training.models import ModelVersion, TrainingRun
    from training.services.versions import model_version_load

    repeated = list(
        Classification.objects.values("zooniverse_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .values_list("zooniverse_id", flat=True)[:5]
    )
    assert not repeated, f"classification ids stored twice: {repeated}"

    committed = dict(
        Classification.objects.values("workflow_id")
        .annotate(top=Max("zooniverse_id"))
        .values_list("workflow_id", "top")
    )
    for workflow_id, last_id in SyncCursor.objects.values_list("workflow_id", "last_id"):
        top = committed.get(workflow_id) or 0
        assert last_id <= top, f"cursor of workflow {workflow_id} at {last_id}, stored up to {top}"

    in_flight = list(
        TrainingRun.objects.filter(status__in=["queued", "running"])
        .values("family")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    assert not in_flight, f"more than one training run in flight: {in_flight}"

    for version in ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE):
        model_version_load(version)  # raises CheckpointError when the hash does not verify
