"""Zero-shot model versions: made by the command, scoring the pool, choosing the first round and
flagging prior labels they doubt. The CLIP is tiny and random (tests/ml/test_zero_shot.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from annotate.models import Concept, Item, PriorLabel
from ml.acquisition import binary_entropy
from tests.factories import item_with_labels, model_version_with_scores
from tests.ml.builders import TINY_CLIP
from tests.training.builders import (
    TINY_PARAMS,
    version_scores,
    write_mosaic_items,
    zero_shot_command,
    zero_shot_files,
)
from training.models import ModelVersion, Prediction, TrainingRun
from training.selectors import model_version_active
from training.services.conflicts import item_zero_shot_prior_refresh
from training.services.runs import training_run_request
from training.services.selection import round_select
from training.services.versions import PromotionError, model_version_promote
from training.services.zero_shot import zero_shot_model_load, zero_shot_version_latest

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory) -> tuple[Path, str, Path]:
    return zero_shot_files(tmp_path_factory.mktemp("zero-shot"))






def test_the_command_stores_a_zero_shot_version_with_a_prediction_per_pool_item(clip_files, capsys):
    mosaic = write_mosaic_items(12, curated=0)
    Item.objects.filter(pk=mosaic.item_ids[0]).update(image_state=Item.ImageState.CORRUPT)
    version = zero_shot_command(clip_files)

    weights, sha, _ = clip_files
    assert version.kind == "zero_shot" and version.status == "candidate"
    assert version.weights_sha256 == sha and version.weights == f"{weights}#sha256={sha}"
    assert version.scored_at is not None and version == zero_shot_version_latest()
    assert version.concepts == list(
        Concept.objects.filter(active=True)
        .order_by("position", "key")
        .values_list("key", flat=True)
    )
    scores = version_scores(version)
    assert set(scores) == set(mosaic.item_ids[1:])
    matrix = np.stack(list(scores.values()))
    assert matrix.shape == (11, len(version.concepts))
    assert np.all((matrix >= 0) & (matrix <= 1)) and matrix.std() > 0
    assert model_version_active() is None
    assert "11 items scored" in capsys.readouterr().out


def test_the_stored_scores_are_the_models_and_the_sidecar_keeps_every_prompt(clip_files):
    write_mosaic_items(4, curated=0)
    version = zero_shot_command(clip_files)
    model = zero_shot_model_load(version)
    labels = dict(Concept.objects.values_list("key", "label"))
    assert model.concept_text.shape == (len(version.concepts), TINY_CLIP["embed_dim"])

    from annotate.services.media import image_path
    from ml.embeddings import compute_embeddings

    items = list(Item.objects.order_by("pk").values_list("pk", "image_file"))
    result = compute_embeddings(model, [str(image_path(rel)) for _, rel in items])
    expected = model.scores(result.features)
    stored = version_scores(version)
    np.testing.assert_allclose(np.stack([stored[pk] for pk, _ in items]), expected, atol=1e-6)

    from training.services.zero_shot import zero_shot_sidecar

    meta = zero_shot_sidecar(version)
    for key, prompts in zip(meta["concepts"], meta["prompts"], strict=True):
        assert f"a photo of {labels[key]}." in prompts


def test_running_it_again_on_the_same_version_scores_only_new_items(clip_files, capsys):
    write_mosaic_items(5, curated=0)
    version = zero_shot_command(clip_files)
    first = dict(Prediction.objects.filter(model_version=version).values_list("item_id", "scores"))
    write_mosaic_items(3, curated=0, prefix="later")
    call_command("zero_shot", "--model-version", str(version.pk))
    assert "3 items scored" in capsys.readouterr().out.splitlines()[-1]
    assert Prediction.objects.filter(model_version=version).count() == 8
    for item_id, blob in first.items():
        assert bytes(
            Prediction.objects.get(model_version=version, item_id=item_id).scores
        ) == bytes(blob)


def test_weights_with_another_sha256_are_refused_and_no_version_is_made(clip_files):
    write_mosaic_items(3, curated=0)
    weights, sha, config = clip_files
    wrong = ("0" if sha[0] != "0" else "1") + sha[1:]
    with pytest.raises(CommandError, match="hash mismatch"):
        call_command(
            "zero_shot", "--model-config", str(config), "--weights", f"{weights}#sha256={wrong}"
        )
    assert not ModelVersion.objects.exists()


def test_a_changed_sidecar_is_refused_when_the_version_is_used_again(clip_files):
    from django.conf import settings

    write_mosaic_items(3, curated=0)
    version = zero_shot_command(clip_files)
    sidecar = Path(settings.ARTIFACT_ROOT) / version.checkpoint_path
    sidecar.write_text(sidecar.read_text().replace("a photo of", "a drawing of"))
    with pytest.raises(CommandError, match="changed"):
        call_command("zero_shot", "--model-version", str(version.pk))


def test_a_zero_shot_version_cannot_be_promoted(clip_files):
    write_mosaic_items(3, curated=0)
    version = zero_shot_command(clip_files)
    with pytest.raises(PromotionError):
        model_version_promote(version=version)
    assert model_version_active() is None


def _mean_entropy(scores: dict[int, np.ndarray], ids) -> float:
    return float(np.mean([binary_entropy(scores[i].astype(np.float64)).mean() for i in ids]))


def test_the_cold_start_takes_the_uncertain_varied_images_of_the_zero_shot_scores(clip_files):
    write_mosaic_items(60, curated=0)
    version = zero_shot_command(clip_files)
    scores = version_scores(version)

    result = round_select(size=4, random_share=0.0, seed=3)
    picks = [p.item_id for p in result.picks]
    assert result.strategy == "kcenter" and result.round.model_version == version
    assert "zero-shot" in result.round.notes
    assert {p.reason for p in result.picks} == {"diverse"}
    # k-center spreads the round over the 20 (5 x size) most uncertain of the shortlist: every
    # pick is in the more uncertain half of the pool.
    median = np.median([_mean_entropy(scores, [i]) for i in scores])
    assert all(_mean_entropy(scores, [i]) > median for i in picks)
    assert _mean_entropy(scores, picks) > _mean_entropy(scores, list(scores))
    # ...which chance does not give: the same seed's random picks are other, less sure ones.
    rng = np.random.default_rng(3)
    chance = rng.permutation(sorted(scores))[:4].tolist()
    assert set(picks) != set(chance)
    assert _mean_entropy(scores, picks) > _mean_entropy(scores, chance)


def test_without_a_scored_zero_shot_version_the_cold_start_is_unchanged(clip_files):
    write_mosaic_items(30, curated=0)
    before = round_select(size=5, seed=2)
    version = zero_shot_command(clip_files)
    ModelVersion.objects.filter(pk=version.pk).update(scored_at=None)
    after = round_select(size=5, seed=2)
    assert before.strategy == after.strategy == "typical_diverse"
    assert after.round.model_version is None
    assert [p.item_id for p in before.picks] == [p.item_id for p in after.picks]


def test_a_scored_trained_model_chooses_the_round_not_the_zero_shot_one(
    clip_files, django_capture_on_commit_callbacks
):
    write_mosaic_items(40)
    zero_shot_command(clip_files)
    with django_capture_on_commit_callbacks(execute=True):
        run, _ = training_run_request(trigger="command", params=TINY_PARAMS)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    result = round_select(size=5, strategy="entropy", relabel=False)
    assert result.strategy == "entropy" and result.round.model_version == model_version_active()


def _zero_shot_scores(item_scores, *, concepts):
    version = model_version_with_scores(item_scores, concepts=concepts, status="candidate")
    ModelVersion.objects.filter(pk=version.pk).update(
        kind=ModelVersion.Kind.ZERO_SHOT, scored_at=timezone.now()
    )
    return version


def test_a_confident_zero_shot_score_against_a_prior_label_flags_the_item(concepts, settings):
    settings.MODEL_CONFLICT_CONFIDENCE = 0.8
    doubted = item_with_labels(concepts, "doubted", priors=("painting",))
    unsure = item_with_labels(concepts, "unsure", priors=("painting",))
    unlisted = item_with_labels(concepts, "unlisted", priors=("map",))
    no_prior = item_with_labels(concepts, "no-prior")
    _zero_shot_scores(
        {
            doubted.pk: {"painting": 0.1, "map": 0.9},
            unsure.pk: {"painting": 0.3},
            unlisted.pk: {"painting": 0.05, "map": 0.95},
            no_prior.pk: {"painting": 0.01, "map": 0.01},
        },
        concepts=["painting", "map"],
    )
    assert item_zero_shot_prior_refresh() == 1
    flagged = set(
        Item.objects.filter(zero_shot_contradicts_prior=True).values_list("pk", flat=True)
    )
    assert flagged == {doubted.pk}

    # A newer zero-shot version that agrees with the prior clears the flag.
    _zero_shot_scores({doubted.pk: {"painting": 0.7}}, concepts=["painting"])
    assert item_zero_shot_prior_refresh() == 1
    assert not Item.objects.filter(zero_shot_contradicts_prior=True).exists()


def test_scoring_the_pool_flags_exactly_the_prior_labels_the_model_doubts(clip_files, settings):
    mosaic = write_mosaic_items(16, curated=0)
    keys = list(Concept.objects.order_by("position").values_list("key", flat=True))
    by_key = {c.key: c for c in Concept.objects.all()}
    prior_of = {}
    for n, item_id in enumerate(mosaic.item_ids):
        prior_of[item_id] = keys[n % len(keys)]
        PriorLabel.objects.create(item_id=item_id, concept=by_key[prior_of[item_id]])
    settings.MODEL_CONFLICT_CONFIDENCE = 0.5
    version = zero_shot_command(clip_files)
    scores = version_scores(version)
    column = {k: j for j, k in enumerate(version.concepts)}
    prior_score = {i: float(scores[i][column[k]]) for i, k in prior_of.items()}

    def flagged() -> set[int]:
        return set(
            Item.objects.filter(zero_shot_contradicts_prior=True).values_list("pk", flat=True)
        )

    assert flagged() == {i for i, p in prior_score.items() if p <= 0.5}
    # A confidence that the random model's scores cross for some items and not for others.
    cut = float(np.median(list(prior_score.values())))
    settings.MODEL_CONFLICT_CONFIDENCE = max(0.5, 1.0 - cut)
    item_zero_shot_prior_refresh()
    expected = {i for i, p in prior_score.items() if p <= 1.0 - settings.MODEL_CONFLICT_CONFIDENCE}
    assert flagged() == expected and 0 < len(expected) < len(mosaic.item_ids)


def test_the_item_screen_shows_the_zero_shot_doubt_of_the_prior(curator_client, concepts):
    item = item_with_labels(concepts, "doubted", priors=("painting",))
    page = curator_client.get(reverse("review:item", args=[item.pk]))
    assert b'id="review-zero-shot-flag"' not in page.content
    Item.objects.filter(pk=item.pk).update(zero_shot_contradicts_prior=True)
    page = curator_client.get(reverse("review:item", args=[item.pk]))
    assert b'id="review-zero-shot-flag"' in page.content


def test_prior_labels_imported_after_the_zero_shot_scoring_are_judged_at_once(
    concepts, settings, tmp_path, django_capture_on_commit_callbacks
):
    from annotate.services.items import items_import
    from tests.images import png_bytes

    settings.MODEL_CONFLICT_CONFIDENCE = 0.8
    (tmp_path / "a.png").write_bytes(png_bytes())
    (tmp_path / "b.png").write_bytes(png_bytes(color=(0, 90, 200)))
    manifest = tmp_path / "items.csv"
    manifest.write_text("external_id,image,prior_labels\na,a.png,\nb,b.png,\n")
    items_import(path=manifest)
    a, b = Item.objects.get(external_id="a"), Item.objects.get(external_id="b")
    _zero_shot_scores(
        {a.pk: {"painting": 0.05, "map": 0.9}, b.pk: {"painting": 0.95, "map": 0.9}},
        concepts=["painting", "map"],
    )
    assert item_zero_shot_prior_refresh() == 0  # no prior label yet: nothing to doubt

    # The enrichment arrives later: the zero-shot model doubts "painting" on a, not on b.
    manifest.write_text("external_id,image,prior_labels\na,a.png,painting\nb,b.png,painting\n")
    with django_capture_on_commit_callbacks(execute=True):
        items_import(path=manifest)
    assert set(
        Item.objects.filter(zero_shot_contradicts_prior=True).values_list("pk", flat=True)
    ) == {a.pk}

    # Taking the prior label away clears the doubt, again by itself.
    manifest.write_text("external_id,image,prior_labels\na,a.png,\nb,b.png,painting\n")
    with django_capture_on_commit_callbacks(execute=True):
        items_import(path=manifest)
    assert not Item.objects.filter(zero_shot_contradicts_prior=True).exists()
