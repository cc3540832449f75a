"""A whole retrain in-process (Celery eager) on tiny digit mosaics: train, publish, score."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from ml.checkpoint import sha256_file
from tests.training.builders import TINY_PARAMS
from training.models import ModelVersion, Prediction, TrainingRun
from training.selectors import model_version_active
from training.services.execute import training_run_execute
from training.services.runs import training_run_request
from training.services.versions import model_version_load


def retrain(capture, params=None) -> TrainingRun:
    with capture(execute=True):
        run, created = training_run_request(trigger="command", params=params or TINY_PARAMS)
    assert created
    run.refresh_from_db()
    return run


def test_a_retrain_publishes_an_active_version_with_a_verified_checkpoint_and_predictions(
    mosaic_items, django_capture_on_commit_callbacks
):
    run = retrain(django_capture_on_commit_callbacks)
    assert run.status == "succeeded", run.error
    assert run.attempts == 1 and run.progress == 1.0
    assert [row["epoch"] for row in run.metrics] == [1, 2, 3]
    assert run.n_items == 40 and len(run.snapshot_sha256) == 64
    assert run.labels_counted == 40  # the new-label trigger's baseline

    version = model_version_active()
    assert version is not None and version.training_run_id == run.pk
    assert version.concepts[:3] == ["zero", "one", "two"] and len(version.thresholds) == 10
    assert version.val_map is not None and "map" in version.metrics
    weights = (Path(settings.ARTIFACT_ROOT) / version.checkpoint_path).with_suffix(".safetensors")
    assert sha256_file(weights) == version.checkpoint_sha256
    assert model_version_load(version).concepts == version.concepts
    # the resume state is gone, the snapshot stays
    assert not list((Path(settings.ARTIFACT_ROOT) / "runs" / str(run.pk)).glob("state*.pt"))
    assert (Path(settings.ARTIFACT_ROOT) / run.snapshot_path).is_file()

    version.refresh_from_db()
    assert version.scored_at is not None and version.scoring_chunks_done == version.scoring_chunks
    assert Prediction.objects.filter(model_version=version).count() == 40
    prediction = Prediction.objects.select_related("model_version").first()
    probs = prediction.probabilities()
    assert probs.shape == (10,) and np.all((probs >= 0) & (probs <= 1))
    assert prediction.uncertainty == pytest.approx(float((1 - np.abs(2 * probs - 1)).max()),
                                                   abs=1e-5)


def test_scoring_in_several_chunks_scores_every_pool_item_once(
    mosaic_items, django_capture_on_commit_callbacks, settings
):
    settings.TRAINING_SCORE_CHUNK_SIZE = 7
    retrain(django_capture_on_commit_callbacks)
    version = model_version_active()
    assert version.scoring_chunks == 6 and version.scoring_chunks_done == 6
    assert Prediction.objects.filter(model_version=version).count() == 40
    # a redelivered chunk changes nothing
    from training.services.scoring import scoring_chunk_execute

    chunk = version.scoring_chunk_rows.first()
    assert "done" in scoring_chunk_execute(chunk_id=chunk.pk)
    assert Prediction.objects.count() == 40


def test_predict_writes_jsonl_scores_for_the_listed_items(
    mosaic_items, django_capture_on_commit_callbacks, tmp_path, capsys
):
    retrain(django_capture_on_commit_callbacks)
    wanted = tmp_path / "items.txt"
    wanted.write_text("m-3-0001\nm-3-0005\nnot-an-item\n")
    out = tmp_path / "scores.jsonl"
    call_command("predict", "--out", str(out), "--items", str(wanted))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["external_id"] for line in lines] == ["m-3-0001", "m-3-0005"]
    assert set(lines[0]["scores"]) == set(model_version_active().concepts)
    summary = capsys.readouterr().out
    assert "2 items written" in summary and "1 unknown ids" in summary


def test_a_training_that_crashes_leaves_the_active_model_in_place(
    mosaic_items, django_capture_on_commit_callbacks, monkeypatch
):
    retrain(django_capture_on_commit_callbacks)
    active = model_version_active()

    def broken_fit(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr("training.services.execute.fit", broken_fit)
    run = retrain(django_capture_on_commit_callbacks)
    assert run.status == "failed" and "out of memory" in run.error
    assert model_version_active().pk == active.pk
    assert ModelVersion.objects.count() == 1


def four_epoch_run() -> TrainingRun:
    """A queued run of the tiny model for four epochs, its params parsed as a request would."""
    from training.services.params import training_params_parse

    run = TrainingRun.objects.create(
        trigger="api", params={**TINY_PARAMS, "epochs": 4, "lease_seconds": 60}
    )
    TrainingRun.objects.filter(pk=run.pk).update(params=training_params_parse(run.params).as_json())
    return run


def test_a_killed_attempt_is_resumed_from_its_last_epoch_by_the_next_one(
    mosaic_items, monkeypatch
):
    from training.services import faults

    class Killed(BaseException):
        """Stands for SIGKILL: nothing in the worker gets to handle it."""

    class KillAfterTwo(faults.Faults):
        def epoch_done(self, epoch: int) -> None:
            if epoch == 2:
                raise Killed

    monkeypatch.setattr("training.services.execute.faults_from_env", lambda: KillAfterTwo())
    run = four_epoch_run()
    with pytest.raises(Killed):
        training_run_execute(run_id=run.pk, worker_id="doomed")
    run.refresh_from_db()
    assert run.status == "running" and len(run.metrics) == 2 and run.state_sha256
    assert not ModelVersion.objects.exists()

    # A redelivery while the lease lives is a no-op; after it expires the next attempt resumes.
    monkeypatch.setattr("training.services.execute.faults_from_env", lambda: faults.Faults())
    assert training_run_execute(run_id=run.pk, worker_id="dup").outcome == "busy"
    TrainingRun.objects.filter(pk=run.pk).update(lease_until=timezone.now() - timedelta(1))
    result = training_run_execute(run_id=run.pk, worker_id="survivor")
    assert result.outcome == "succeeded" and result.attempt == 2
    run.refresh_from_db()
    assert "resuming after epoch 2" in run.log
    assert [row["epoch"] for row in run.metrics] == [1, 2, 3, 4]
    assert ModelVersion.objects.filter(training_run=run).count() == 1


def test_a_kill_after_a_state_is_written_but_before_it_is_recorded_still_resumes(
    mosaic_items, monkeypatch
):
    from training.services import execute

    class Killed(BaseException):
        """Stands for SIGKILL between writing epoch 3's state and recording its hash."""

    heartbeat = execute.training_run_heartbeat
    recorded: list[str] = []

    def dying_heartbeat(**kwargs):
        if kwargs.get("state_sha256"):
            if len(recorded) == 2:
                raise Killed
            recorded.append(kwargs["state_sha256"])
        return heartbeat(**kwargs)

    monkeypatch.setattr(execute, "training_run_heartbeat", dying_heartbeat)
    run = four_epoch_run()
    with pytest.raises(Killed):
        training_run_execute(run_id=run.pk, worker_id="doomed")
    run.refresh_from_db()
    assert run.state_sha256 == recorded[-1]
    states = sorted(p.name for p in execute.run_dir(run.pk).glob("state*.pt"))
    assert len(states) == 2 and f"state-{recorded[-1]}.pt" in states  # epoch 3's is unrecorded

    monkeypatch.setattr(execute, "training_run_heartbeat", heartbeat)
    TrainingRun.objects.filter(pk=run.pk).update(lease_until=timezone.now() - timedelta(1))
    result = training_run_execute(run_id=run.pk, worker_id="survivor")
    assert result.outcome == "succeeded" and result.attempt == 2
    run.refresh_from_db()
    assert "resuming after epoch 2" in run.log
    assert not list(execute.run_dir(run.pk).glob("state*.pt"))


def test_the_train_command_trains_and_prints_a_one_line_summary(
    transactional_db, capsys, monkeypatch
):
    from tests.training.builders import write_mosaic_items

    write_mosaic_items(30)
    monkeypatch.setattr("training.services.params.SMALL_CNN_DEFAULTS",
                        TINY_PARAMS["model_kwargs"])
    # A real commit: the run is sent (and, without a broker, trained) before the command returns.
    call_command("train", "--epochs", "2", "--wait")
    out = capsys.readouterr().out
    assert out.startswith("train: run ") and "succeeded" in out and "model v" in out


def test_review_screens_get_scores_and_a_grad_cam_map_per_concept(
    mosaic_items, django_capture_on_commit_callbacks, curator_client
):
    from django.urls import reverse

    from training.selectors import predictions_for_items

    retrain(django_capture_on_commit_callbacks)
    first = mosaic_items.item_ids[0]
    scores = predictions_for_items([first, 10**9])
    assert list(scores) == [first] and [s.key for s in scores[first]][:2] == ["zero", "one"]
    assert all(0 <= s.probability <= 1 for s in scores[first])
    png = curator_client.get(reverse("training:item-explain-png", args=[first, "seven"]))
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    missing = curator_client.get(reverse("training:item-explain-png", args=[first, "eleven"]))
    assert missing.status_code == 404


def test_a_read_only_checkpoint_folder_fails_the_run_and_keeps_the_active_model(
    mosaic_items, django_capture_on_commit_callbacks, monkeypatch
):
    retrain(django_capture_on_commit_callbacks)
    active = model_version_active()

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "models/run-2-attempt-1")

    monkeypatch.setattr("training.services.execute.save_checkpoint", read_only)
    run = retrain(django_capture_on_commit_callbacks)
    assert run.status == "failed" and "Permission denied" in run.error
    assert model_version_active().pk == active.pk and ModelVersion.objects.count() == 1
