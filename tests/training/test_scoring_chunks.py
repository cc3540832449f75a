"""Scoring chunks: claimed and counted once, given up after the attempt limit, re-sent if lost."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from tests.training.builders import write_mosaic_items
from training.models import ModelVersion, ScoringChunk
from training.services.runs import training_runs_reconcile
from training.services.scoring import scoring_chunk_execute, scoring_start


def version() -> ModelVersion:
    return ModelVersion.objects.create(backbone="small_cnn", concepts=["a"],
                                       checkpoint_path="x.json", checkpoint_sha256="0" * 64)


def test_the_pool_is_cut_into_contiguous_chunks_once(db, settings, monkeypatch):
    sent: list[list[int]] = []
    monkeypatch.setattr("training.services.scoring.chunks_send", lambda ids: sent.append(
        list(ids)) or len(list(ids)))
    settings.TRAINING_SCORE_CHUNK_SIZE = 5
    items = write_mosaic_items(12)
    v = version()
    assert scoring_start(model_version_id=v.pk) == 3
    chunks = list(v.scoring_chunk_rows.order_by("index"))
    assert [(c.first_item_id, c.last_item_id) for c in chunks] == [
        (items.item_ids[0], items.item_ids[4]), (items.item_ids[5], items.item_ids[9]),
        (items.item_ids[10], items.item_ids[11])]
    scoring_start(model_version_id=v.pk)  # again: the same chunks, sent again, none added
    assert v.scoring_chunk_rows.count() == 3


def test_a_chunk_that_keeps_killing_its_worker_is_given_up(db):
    v = version()
    chunk = ScoringChunk.objects.create(model_version=v, index=0, first_item_id=1,
                                        last_item_id=9, attempts=3, max_attempts=3)
    assert scoring_chunk_execute(chunk_id=chunk.pk) == "gave up"
    chunk.refresh_from_db()
    v.refresh_from_db()
    assert chunk.error.startswith("gave up") and v.scoring_chunks_failed == 1
    assert scoring_chunk_execute(chunk_id=chunk.pk).startswith("done")  # no second count
    v.refresh_from_db()
    assert v.scoring_chunks_failed == 1


def test_the_reconciler_sends_again_chunks_whose_message_was_lost(db, monkeypatch):
    sent: list[int] = []
    monkeypatch.setattr("training.services.scoring.chunks_send",
                        lambda ids: sent.extend(ids) or len(sent))
    v = version()
    old = timezone.now() - timedelta(hours=1)
    lost = ScoringChunk.objects.create(model_version=v, index=0, first_item_id=1,
                                       last_item_id=2, sent_at=old)
    ScoringChunk.objects.create(model_version=v, index=1, first_item_id=3, last_item_id=4,
                                sent_at=old, done_at=old)
    ScoringChunk.objects.create(model_version=v, index=2, first_item_id=5, last_item_id=6,
                                sent_at=timezone.now())
    assert training_runs_reconcile(stale_after_s=300).scoring_resent == 1
    assert sent == [lost.pk]
