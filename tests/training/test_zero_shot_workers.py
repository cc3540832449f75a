"""Zero-shot scoring of the pool in workers: the scoring chunks of trained versions, queued by
``zero_shot --in-workers``, store what the in-process path stores, once, and a failed chunk keeps
the version from counting as scored. The CLIP is tiny and random (tests/ml/test_zero_shot.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db.models import F
from django.urls import reverse

from annotate.models import Concept, Item, PriorLabel
from tests.training.builders import (
    version_scores,
    write_mosaic_items,
    zero_shot_command,
    zero_shot_files,
)
from training.models import ModelVersion, Prediction, ScoringChunk
from training.services.zero_shot import zero_shot_model_cache_clear, zero_shot_version_latest
from training.tasks import training_score_chunk

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory) -> tuple[Path, str, Path]:
    return zero_shot_files(tmp_path_factory.mktemp("zero-shot-workers"))


@pytest.fixture(autouse=True)
def _fresh_models(settings):
    """Chunks of five items, and no model kept loaded from another test's version."""
    settings.TRAINING_SCORE_CHUNK_SIZE = 5
    zero_shot_model_cache_clear()
    yield
    zero_shot_model_cache_clear()






def _stamps(version: ModelVersion) -> dict[int, object]:
    return dict(
        Prediction.objects.filter(model_version=version).values_list("item_id", "created_at")
    )


def _flagged() -> set[int]:
    return set(Item.objects.filter(zero_shot_contradicts_prior=True).values_list("pk", flat=True))


def _with_priors(item_ids: list[int]) -> dict[int, str]:
    keys = list(Concept.objects.order_by("position").values_list("key", flat=True))
    by_key = {c.key: c for c in Concept.objects.all()}
    prior_of = {}
    for n, item_id in enumerate(item_ids):
        prior_of[item_id] = keys[n % len(keys)]
        PriorLabel.objects.create(item_id=item_id, concept=by_key[prior_of[item_id]])
    return prior_of


def test_a_pool_scored_in_workers_in_chunks_stores_the_scores_of_the_in_process_path(
    clip_files, capsys, django_capture_on_commit_callbacks
):
    mosaic = write_mosaic_items(12, curated=0)
    Item.objects.filter(pk=mosaic.item_ids[3]).update(image_state=Item.ImageState.CORRUPT)
    here = zero_shot_command(clip_files)
    # The workers compute every embedding again instead of reading the first run's.
    shutil.rmtree(Path(django_settings.ARTIFACT_ROOT) / "embeddings")

    with django_capture_on_commit_callbacks(execute=True):
        queued = zero_shot_command(clip_files, "--in-workers")

    assert queued.pk != here.pk and queued.kind == ModelVersion.Kind.ZERO_SHOT
    assert (queued.scoring_chunks, queued.scoring_chunks_done) == (3, 3)
    assert queued.scoring_chunks_failed == 0 and queued.scored_at is not None
    assert queued == zero_shot_version_latest()
    assert not ScoringChunk.objects.filter(model_version=queued, done_at__isnull=True).exists()
    assert "3 chunks sent to the train queue; 3/3 chunks done, 0 failed (scored)" in (
        capsys.readouterr().out
    )
    in_process, in_workers = version_scores(here), version_scores(queued)
    assert set(in_workers) == set(in_process) == set(mosaic.item_ids) - {mosaic.item_ids[3]}
    for item_id, probs in in_process.items():
        np.testing.assert_allclose(in_workers[item_id], probs, atol=1e-6)
    stored = dict(
        Prediction.objects.filter(model_version=queued).values_list("item_id", "uncertainty")
    )
    for item_id, probs in in_workers.items():
        assert stored[item_id] == pytest.approx(float((1 - np.abs(2 * probs - 1)).max()))


def test_the_last_chunk_refreshes_the_prior_doubt_flags_like_the_in_process_path(
    clip_files, settings, django_capture_on_commit_callbacks
):
    settings.MODEL_CONFLICT_CONFIDENCE = 0.5
    mosaic = write_mosaic_items(12, curated=0)
    prior_of = _with_priors(mosaic.item_ids)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        version = zero_shot_command(clip_files, "--in-workers")
    assert version.scored_at is not None and callbacks  # the refresh waits for the commit
    assert _flagged() == set()
    for callback in callbacks:
        callback()

    scores = version_scores(version)
    column = {k: j for j, k in enumerate(version.concepts)}
    expected = {i for i, k in prior_of.items() if scores[i][column[k]] <= 0.5}
    assert 0 < len(expected) < len(mosaic.item_ids)
    assert _flagged() == expected


def test_a_chunk_run_twice_stores_nothing_twice(clip_files, django_capture_on_commit_callbacks):
    mosaic = write_mosaic_items(12, curated=0)
    with django_capture_on_commit_callbacks(execute=True):
        version = zero_shot_command(clip_files, "--in-workers")
    stamps = _stamps(version)
    assert len(stamps) == 12
    chunk = ScoringChunk.objects.filter(model_version=version).order_by("index").first()

    # A redelivered message for a chunk that is done does nothing.
    assert training_score_chunk.apply(kwargs={"chunk_id": chunk.pk}).get().startswith("done")
    # A worker that stored the chunk's scores and died before counting it: the next delivery
    # finds every item scored, stores nothing and counts the chunk once.
    ScoringChunk.objects.filter(pk=chunk.pk).update(done_at=None)
    ModelVersion.objects.filter(pk=version.pk).update(
        scoring_chunks_done=F("scoring_chunks_done") - 1
    )
    with django_capture_on_commit_callbacks(execute=True):
        result = training_score_chunk.apply(kwargs={"chunk_id": chunk.pk}).get()
    assert result == f"chunk 0 of v{version.pk}: 0 scored, 0 refused"

    version.refresh_from_db()
    assert (version.scoring_chunks_done, version.scoring_chunks) == (3, 3)
    assert Prediction.objects.filter(model_version=version).count() == 12
    assert _stamps(version) == stamps  # no row was written again
    # Resumed with new items: only they are scored, in a chunk of their own, and the version
    # stays the latest scored one meanwhile, then counts as scored again.
    scored_before = version.scored_at
    later = write_mosaic_items(3, curated=0, prefix="later")
    with django_capture_on_commit_callbacks(execute=True):
        call_command("zero_shot", "--model-version", str(version.pk), "--in-workers")
    version.refresh_from_db()
    assert (version.scoring_chunks_done, version.scoring_chunks) == (4, 4)
    assert version.scored_at > scored_before and zero_shot_version_latest() == version
    assert set(_stamps(version)) == set(mosaic.item_ids) | set(later.item_ids)
    assert {k: v for k, v in _stamps(version).items() if k in stamps} == stamps


def test_a_failing_chunk_is_marked_failed_and_does_not_show_success(
    clip_files, settings, monkeypatch, capsys, admin_client, django_capture_on_commit_callbacks
):
    settings.MODEL_CONFLICT_CONFIDENCE = 0.5
    mosaic = write_mosaic_items(12, curated=0)
    _with_priors(mosaic.item_ids)
    doomed = mosaic.item_ids[7]  # in the second chunk of five
    import ml.embeddings

    real = ml.embeddings.compute_embeddings

    def out_of_memory(model, sources, **kwargs):  # type: ignore[no-untyped-def]
        if any(f"-{7:04d}.png" in str(s) for s in sources):
            raise RuntimeError("CUDA out of memory")
        return real(model, sources, **kwargs)

    monkeypatch.setattr(ml.embeddings, "compute_embeddings", out_of_memory)
    with django_capture_on_commit_callbacks(execute=True):
        version = zero_shot_command(clip_files, "--in-workers")

    assert "3 chunks sent to the train queue; 2/3 chunks done, 1 failed (not scored" in (
        capsys.readouterr().out
    )
    failed = ScoringChunk.objects.get(model_version=version, index=1)
    assert failed.first_item_id <= doomed <= failed.last_item_id
    assert failed.error == "RuntimeError: CUDA out of memory" and failed.done_at is None
    assert (version.scoring_chunks_done, version.scoring_chunks_failed) == (2, 1)
    assert version.scored_at is None and zero_shot_version_latest() is None
    assert _flagged() == set()  # nothing refreshed from a partial scoring
    assert Prediction.objects.filter(model_version=version).count() == 7
    page = admin_client.get(reverse("admin:training_modelversion_changelist"))
    assert "2/3 chunks, 1 failed" in page.content.decode()
    detail = admin_client.get(reverse("admin:training_modelversion_change", args=[version.pk]))
    assert "chunk 1 (items" in detail.content.decode()
    assert "RuntimeError: CUDA out of memory" in detail.content.decode()

    # The command again on the version tries the failed chunk again, and only it.
    monkeypatch.setattr(ml.embeddings, "compute_embeddings", real)
    with django_capture_on_commit_callbacks(execute=True):
        call_command("zero_shot", "--model-version", str(version.pk), "--in-workers")
    version.refresh_from_db()
    failed.refresh_from_db()
    assert failed.error == "" and failed.done_at is not None and failed.attempts == 1
    assert (version.scoring_chunks_done, version.scoring_chunks_failed) == (3, 0)
    assert version.scored_at is not None and zero_shot_version_latest() == version
    assert Prediction.objects.filter(model_version=version).count() == 12
    assert _flagged()  # the finished scoring refreshed the flags
    page = admin_client.get(reverse("admin:training_modelversion_changelist"))
    assert "chunks, 1 failed" not in page.content.decode()
