"""Building the training set from final labels: curator targets, crowd posteriors, a snapshot."""

from __future__ import annotations

import numpy as np
import pytest

from annotate.models import AggregatedLabel, Concept, Item, Subject
from training.services.dataset import (
    TrainingDataError,
    snapshot_load,
    snapshot_write,
    training_set_build,
)


@pytest.fixture
def abc(db, settings):
    settings.TRAINING_MIN_ITEMS = 1
    return [Concept.objects.create(key=k, label=k, position=i) for i, k in enumerate("abc")]


def item(name: str, **fields) -> Item:
    defaults = {"image_file": f"items/{name}.png", "image_state": "ok"}
    return Item.objects.create(external_id=name, **{**defaults, **fields})


def crowd(it: Item, concepts, posteriors, votes: int) -> Item:
    AggregatedLabel.objects.bulk_create(
        AggregatedLabel(item=it, concept=c, posterior=p, votes_for=round(p * votes),
                        votes_against=votes - round(p * votes), method="dawid_skene")
        for c, p in zip(concepts, posteriors, strict=True)
    )
    Item.objects.filter(pk=it.pk).update(n_classifications=votes)
    return it


def many(prefix: str, n: int, concepts, **fields) -> list[Item]:
    return [
        crowd(item(f"{prefix}{i}", **fields), concepts, [0.97, 0.02, 0.01], votes=6)
        for i in range(n)
    ]


def row(data, name: str) -> int:
    return data.external_ids.index(name)


def test_curator_decisions_are_hard_targets_at_full_weight(abc):
    item("cur", review_state="edited", curated_concepts=["b", "c", "unknown-key"])
    crowd(item("acc", review_state="accepted", curated_concepts=["a"]), abc, [0.2, 0.9, 0.5], 3)
    many("x", 12, abc)
    data = training_set_build()
    assert data.concepts == ["a", "b", "c"]
    assert data.targets[row(data, "cur")].tolist() == [0.0, 1.0, 1.0]
    # the curator overrides the crowd's posteriors on the same item
    assert data.targets[row(data, "acc")].tolist() == [1.0, 0.0, 0.0]
    assert data.sources[row(data, "cur")] == "curator" and data.weights[row(data, "cur")] == 1.0


def test_crowd_posteriors_are_soft_targets_weighted_by_their_votes(abc):
    crowd(item("two"), abc, [0.9, 0.1, 0.05], votes=2)
    crowd(item("ten"), abc, [0.9, 0.1, 0.05], votes=10)
    many("x", 12, abc)
    data = training_set_build()
    assert np.allclose(data.targets[row(data, "two")], [0.9, 0.1, 0.05])
    assert data.weights[row(data, "two")] == pytest.approx(2 / 5)
    assert data.weights[row(data, "ten")] == pytest.approx(1.0)
    assert data.sources[row(data, "ten")] == "crowd"


def test_rejected_unsure_thinly_voted_and_broken_items_are_left_out(abc):
    item("rejected", review_state="rejected", curated_concepts=["a"])
    crowd(item("one-vote"), abc, [0.99, 0.01, 0.01], votes=1)
    crowd(item("coin-flips"), abc, [0.5, 0.55, 0.45], votes=8)
    crowd(item("corrupt", image_state="corrupt"), abc, [0.99, 0.01, 0.01], votes=8)
    gone = crowd(item("deleted-upstream"), abc, [0.99, 0.01, 0.01], votes=8)
    Subject.objects.create(zooniverse_id=1, item=gone, upstream_state="deleted")
    kept = item("deleted-but-curated", review_state="accepted", curated_concepts=["a"])
    Subject.objects.create(zooniverse_id=2, item=kept, upstream_state="deleted")
    many("x", 12, abc)
    data = training_set_build()
    names = set(data.external_ids)
    assert {"rejected", "one-vote", "coin-flips", "corrupt", "deleted-upstream"}.isdisjoint(names)
    assert "deleted-but-curated" in names


def test_the_split_is_stable_and_both_sides_are_used(abc):
    many("x", 30, abc)
    first, again = training_set_build(), training_set_build()
    assert first.split.tolist() == again.split.tolist()
    assert set(first.split) == {"train", "val"}


def test_too_few_final_labels_is_a_clear_error(abc, settings):
    settings.TRAINING_MIN_ITEMS = 10
    many("x", 3, abc)
    with pytest.raises(TrainingDataError, match="not enough final labels"):
        training_set_build()


def test_the_snapshot_reads_back_identically_and_refuses_a_changed_file(abc, settings):
    from pathlib import Path

    many("x", 12, abc)
    data = training_set_build()
    path, sha = snapshot_write(run_id=7, data=data)
    assert path == "runs/7/snapshot.json"
    back = snapshot_load(path=path, sha256=sha)
    assert back.external_ids == data.external_ids
    assert np.allclose(back.targets, data.targets) and np.allclose(back.weights, data.weights)
    assert back.split.tolist() == data.split.tolist()
    # same labels, same bytes: the hash names the content
    assert snapshot_write(run_id=8, data=training_set_build())[1] == sha
    full = Path(settings.ARTIFACT_ROOT) / path
    full.write_bytes(full.read_bytes().replace(b'"weight":1.0', b'"weight":0.5', 1))
    with pytest.raises(TrainingDataError, match="sha256"):
        snapshot_load(path=path, sha256=sha)
    with pytest.raises(TrainingDataError, match="leaves the artifact root"):
        snapshot_load(path="../../etc/passwd", sha256=sha)
