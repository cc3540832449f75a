"""Choosing the next round from a trained model's view of the pool, and pushing it."""

from __future__ import annotations

import pytest

from annotate.models import AggregatedLabel, Item, Round, RoundPick, Subject
from annotate.services.rounds import round_publish
from annotate.zooniverse.sandbox import Sandbox, serve
from ml.mosaics import DIGIT_KEYS
from tests.factories import WorkflowFactory
from tests.training.builders import TINY_PARAMS, write_mosaic_items
from training.models import TrainingRun
from training.selectors import model_version_active
from training.services.runs import training_run_request
from training.services.selection import SelectionError, concept_prevalence, round_select


@pytest.fixture
def trained(db, django_capture_on_commit_callbacks):
    mosaic = write_mosaic_items(40)
    with django_capture_on_commit_callbacks(execute=True):
        run, _ = training_run_request(trigger="command", params=TINY_PARAMS)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    return mosaic


def test_a_round_takes_the_models_picks_and_a_random_control_share(trained):
    result = round_select(size=10, strategy="entropy", random_share=0.2, relabel=False)
    picks = list(result.round.picks.order_by("rank"))
    assert [p.rank for p in picks] == list(range(1, 11))
    assert [p.reason for p in picks].count("random") == 2
    assert all(p.reason == "uncertain" and p.score is not None for p in picks[:8])
    assert result.round.model_version == model_version_active()
    assert result.round.strategy == "entropy" and result.round.random_share == 0.2
    assert len({p.item_id for p in picks}) == 10


def test_the_same_seed_chooses_the_same_round(trained):
    first = round_select(size=6, strategy="margin", seed=4, relabel=False)
    second = round_select(size=6, strategy="margin", seed=4, relabel=False)
    assert list(first.round.picks.values_list("item_id", flat=True)) == list(
        second.round.picks.values_list("item_id", flat=True)
    )
    assert second.round.number == first.round.number + 1


def test_bald_samples_the_dropout_head_of_a_default_run_and_does_not_fall_back(trained):
    version = model_version_active()
    assert version.training_run.params["dropout"] > 0
    result = round_select(size=5, strategy="bald", random_share=0.0, relabel=False)
    assert result.strategy == "bald" and result.round.strategy == "bald"
    assert "no dropout" not in result.round.notes
    assert all(p.reason in ("uncertain", "diverse") and p.score is not None for p in result.picks)


def test_bald_without_dropout_falls_back_to_entropy_and_says_so(
    db, django_capture_on_commit_callbacks
):
    write_mosaic_items(40)
    with django_capture_on_commit_callbacks(execute=True):
        training_run_request(trigger="command", params={**TINY_PARAMS, "dropout": 0.0})
    result = round_select(size=5, strategy="bald", relabel=False)
    assert result.strategy == "entropy"
    assert "no dropout" in result.round.notes


def test_a_run_requested_before_the_dropout_parameter_existed_trains_without_dropout():
    from training.services.execute import _config

    old = {"mode": "finetune", "backbone": "small_cnn", "epochs": 2, "batch_size": 8,
           "lr": 0.01, "seed": 0}
    assert _config(old).dropout == 0.0 and _config({**old, "dropout": 0.3}).dropout == 0.3


def test_items_already_shown_to_volunteers_are_not_chosen_again(trained):
    workflow = WorkflowFactory(zooniverse_id=1)
    shown = Item.objects.order_by("pk")[:30]
    for i, item in enumerate(shown):
        Subject.objects.create(zooniverse_id=900 + i, item=item)
    result = round_select(size=20, strategy="entropy", workflow=workflow, relabel=False)
    assert len(result.picks) == 10
    assert not RoundPick.objects.filter(item__in=shown).exists()


def test_without_a_model_the_first_round_is_a_typical_and_diverse_cold_start(db):
    write_mosaic_items(30, curated=0)
    result = round_select(size=5)
    assert result.strategy == "typical_diverse" and result.round.model_version is None
    assert {p.reason for p in result.picks} <= {"typical", "random"}


def test_an_empty_pool_is_a_clear_error(db):
    with pytest.raises(SelectionError, match="no item is waiting"):
        round_select(size=5)


def test_a_chosen_round_is_pushed_with_priorities_by_rank(trained, settings):
    sandbox = Sandbox([f"digit {k}" for k in DIGIT_KEYS], keys=list(DIGIT_KEYS))
    server, _ = serve("127.0.0.1", 0, sandbox=sandbox)
    try:
        settings.PANOPTES_ENDPOINT = server.endpoint
        settings.PANOPTES_CLIENT_ID, settings.PANOPTES_CLIENT_SECRET = "crowdloop", "secret"
        settings.PANOPTES_PROJECT_ID = str(sandbox.project_id)
        settings.PUBLIC_MEDIA_BASE_URL = "http://127.0.0.1:8000/media"
        workflow = WorkflowFactory(
            zooniverse_id=sandbox.workflow_id, project_id=sandbox.project_id, version=None
        )
        result = round_select(size=8, strategy="entropy", workflow=workflow, relabel=False)
        round_publish(round=result.round)
        round_publish(round=result.round)  # a second push creates nothing new

        by_external = {
            s.metadata["external_id"]: s.metadata["#priority"] for s in sandbox.subjects()
        }
        expected = {p.item.external_id: p.rank for p in result.round.picks.select_related("item")}
        assert by_external == expected
        assert Round.objects.get().status == Round.Status.PUSHED
    finally:
        server.shutdown()
        server.server_close()


def _contested_items() -> None:
    contested = Item.objects.filter(n_classifications__gt=0).order_by("pk")[:8]
    Item.objects.filter(pk__in=[i.pk for i in contested]).update(
        consensus=Item.Consensus.UNCERTAIN, uncertainty=0.9, n_classifications=1
    )
    AggregatedLabel.objects.filter(item__in=contested).update(posterior=0.5)
    for item in contested:  # classified items were shown to volunteers
        Subject.objects.create(zooniverse_id=5000 + item.pk, item=item)


@pytest.mark.parametrize("strategy", ["random", "entropy"])
def test_relabel_picks_replace_model_picks_so_a_round_keeps_its_size(trained, strategy):
    _contested_items()
    result = round_select(size=6, strategy=strategy, random_share=0.2, relabel=True)
    reasons = [p.reason for p in result.picks]
    assert len(reasons) == 6
    assert len({p.item_id for p in result.picks}) == 6
    if strategy == "random":
        assert set(reasons) == {"random"}
    else:
        assert "relabel" in reasons and reasons.count("random") == 1


@pytest.mark.parametrize("configured", [False, True])
def test_relabel_picks_follow_the_acquisition_relabel_setting_unless_asked(
    trained, settings, configured
):
    _contested_items()
    settings.ACQUISITION_RELABEL = configured
    result = round_select(size=6, strategy="entropy", random_share=0.2)
    assert ("relabel" in {p.reason for p in result.picks}) is configured


def test_the_rare_concept_strategies_weigh_by_how_often_the_crowd_saw_each_concept(
    trained, monkeypatch
):
    from ml import acquisition
    from training.services import selection

    keys = list(model_version_active().concepts)
    labelled = AggregatedLabel.objects.filter(concept__key=keys[0])
    assert labelled.exists()
    labelled.update(posterior=0.9)  # the crowd sees the first concept in every labelled item
    AggregatedLabel.objects.filter(concept__key=keys[1]).update(posterior=0.1)  # never the second
    prevalence = selection.concept_prevalence(keys)
    assert prevalence[0] == 1.0 and prevalence[1] == 0.0
    seen: list[acquisition.Pool] = []
    original = acquisition.STRATEGIES["rare_entropy"]

    def spy(pool, k, rng):  # type: ignore[no-untyped-def]
        seen.append(pool)
        return original(pool, k, rng)

    monkeypatch.setitem(acquisition.STRATEGIES, "rare_entropy", spy)
    result = round_select(size=5, strategy="rare_entropy", random_share=0.0, relabel=False)
    assert result.round.strategy == "rare_entropy" and result.round.picks.count() == 5
    assert seen[0].prevalence.tolist() == prevalence.tolist()
    weights = acquisition.rarity_weights(seen[0])
    assert weights[1] / weights[0] == pytest.approx(1.0 / acquisition.RARE_FLOOR)


def test_without_crowd_labels_the_rare_concept_strategies_use_the_models_mean(db):
    assert concept_prevalence(list(DIGIT_KEYS)) is None
