"""Retrains that trigger themselves: after N new final labels, and the nightly schedule."""

from __future__ import annotations

import pytest

from tests.training.builders import write_mosaic_items
from training.models import ModelVersion, TrainingRun
from training.services.triggers import (
    training_maybe_trigger,
    training_new_labels_count,
    training_nightly,
)


@pytest.fixture
def sent(monkeypatch):
    ids: list[int] = []
    monkeypatch.setattr("training.tasks.training_run_task.apply_async",
                        lambda kwargs, **_: ids.append(kwargs["run_id"]))
    return ids


def test_no_run_is_requested_below_the_new_label_threshold(db, settings, sent):
    settings.TRAIN_AFTER_NEW_LABELS = 50
    write_mosaic_items(20)
    assert training_new_labels_count() == 20
    assert training_maybe_trigger() is None
    assert not TrainingRun.objects.exists()


def test_enough_new_final_labels_request_a_run(db, settings, sent):
    settings.TRAIN_AFTER_NEW_LABELS = 10
    write_mosaic_items(20)
    run = training_maybe_trigger()
    assert run is not None and run.trigger == "auto"


def test_only_labels_since_the_last_snapshot_count(db, settings, sent):
    settings.TRAIN_AFTER_NEW_LABELS = 10
    write_mosaic_items(20)
    TrainingRun.objects.create(trigger="api", status="succeeded", n_items=20)
    assert training_new_labels_count() == 0
    write_mosaic_items(12, seed=5, prefix="n")
    assert training_new_labels_count() == 12
    assert training_maybe_trigger() is not None


def test_labels_arriving_during_training_mark_one_follow_up(db, settings, sent):
    from training.services.runs import training_run_claim, training_run_request

    settings.TRAIN_AFTER_NEW_LABELS = 1
    write_mosaic_items(12)
    run, _ = training_run_request(trigger="button", params={})
    training_run_claim(run_id=run.pk, worker_id="w")
    assert training_maybe_trigger().pk == run.pk
    run.refresh_from_db()
    assert run.followup_requested and TrainingRun.objects.count() == 1


def test_a_threshold_of_zero_turns_the_automatic_trigger_off(db, settings, sent):
    settings.TRAIN_AFTER_NEW_LABELS = 0
    write_mosaic_items(12)
    assert training_maybe_trigger() is None


def test_the_nightly_retrain_skips_when_nothing_changed_since_the_active_model(db, sent):
    write_mosaic_items(12)
    run = TrainingRun.objects.create(trigger="api", status="succeeded", n_items=12)
    ModelVersion.objects.create(training_run=run, backbone="small_cnn", status="active",
                                checkpoint_path="x", checkpoint_sha256="0" * 64)
    assert training_nightly() is None
    write_mosaic_items(3, seed=9, prefix="late")
    nightly = training_nightly()
    assert nightly is not None and nightly.trigger == "beat"


def test_crowd_labels_too_unsure_to_train_on_never_count_as_new_after_a_run(db, settings, sent):
    """The snapshot leaves out unsure crowd labels; the trigger must not count them as new
    after every aggregation, or the loop would retrain forever on the same labels."""
    from annotate.models import AggregatedLabel

    settings.TRAIN_AFTER_NEW_LABELS = 10
    write_mosaic_items(30, curated=10)
    AggregatedLabel.objects.update(posterior=0.5)  # the 20 crowd items: a coin toss
    from training.services.dataset import training_set_build, training_set_count

    assert len(training_set_build()) == 10 and training_set_count() == 30
    TrainingRun.objects.create(trigger="auto", status="succeeded", n_items=10,
                               labels_counted=training_set_count())
    assert training_new_labels_count() == 0
    assert training_maybe_trigger() is None
