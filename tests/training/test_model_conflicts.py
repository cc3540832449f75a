"""The model-vs-crowd conflict flag: computed from both sides, kept in step by the signals."""

from __future__ import annotations

import numpy as np
import pytest

from annotate.models import Item
from tests.factories import item_with_labels, model_version_with_scores
from training.services.conflicts import concept_conflicts, item_model_conflicts_refresh

pytestmark = pytest.mark.django_db


def test_a_concept_conflicts_only_when_both_sides_are_sure_of_opposite_answers(settings):
    settings.MODEL_CONFLICT_CONFIDENCE = 0.8
    settings.RETIRE_CONFIDENCE = 0.95
    model = np.array([0.9, 0.1, 0.9, 0.7, 0.9, np.nan])
    crowd = np.array([0.02, 0.99, 0.99, 0.01, 0.5, 0.01])
    assert concept_conflicts(model, crowd).tolist() == [True, True, False, False, False, False]


def test_a_crowd_without_votes_never_conflicts_with_the_model():
    conflict = concept_conflicts(np.array([0.99, 0.99]), np.array([0.0, 0.0]), np.array([1, 0]))
    assert conflict.tolist() == [True, False]


def test_refreshing_flags_the_items_where_the_active_model_and_the_crowd_disagree(concepts):
    disagree = item_with_labels(concepts, "disagree", {"painting": 0.01, "map": 0.99})
    agree = item_with_labels(concepts, "agree", {"painting": 0.99})
    unsure_crowd = item_with_labels(concepts, "unsure", {"painting": 0.6})
    unscored = item_with_labels(concepts, "unscored", {"painting": 0.01})
    model_version_with_scores(
        {
            disagree.pk: {"painting": 0.95, "map": 0.9},
            agree.pk: {"painting": 0.97},
            unsure_crowd.pk: {"painting": 0.01},
        },
        concepts=["painting", "map"],
    )

    changed = item_model_conflicts_refresh()

    assert changed == 1
    flagged = set(Item.objects.filter(conflicts_model=True).values_list("external_id", flat=True))
    assert flagged == {"disagree"}
    assert not Item.objects.get(pk=unscored.pk).conflicts_model


def test_the_flag_clears_when_no_model_is_active_any_more(concepts):
    item = item_with_labels(concepts, "x", {"painting": 0.01})
    version = model_version_with_scores({item.pk: {"painting": 0.99}}, concepts=["painting"])
    item_model_conflicts_refresh()
    assert Item.objects.get(pk=item.pk).conflicts_model
    version.status = "archived"
    version.save(update_fields=["status"])

    assert item_model_conflicts_refresh(item_ids=[item.pk]) == 1
    assert not Item.objects.get(pk=item.pk).conflicts_model
    assert item_model_conflicts_refresh() == 0


def test_an_aggregation_that_changes_the_crowds_mind_refreshes_the_flag(
    concepts, django_capture_on_commit_callbacks
):
    """labels_aggregated -> training.receivers -> the refresh task (eager in tests)."""
    from annotate.models import AggregatedLabel
    from annotate.signals import labels_aggregated

    item = item_with_labels(concepts, "x", {"painting": 0.5})
    model_version_with_scores({item.pk: {"painting": 0.99}}, concepts=["painting"])
    item_model_conflicts_refresh()
    assert not Item.objects.get(pk=item.pk).conflicts_model

    AggregatedLabel.objects.filter(item=item).update(posterior=0.01)
    with django_capture_on_commit_callbacks(execute=True):
        labels_aggregated.send(sender=AggregatedLabel, item_ids=[item.pk])

    assert Item.objects.get(pk=item.pk).conflicts_model


def test_promoting_a_version_refreshes_every_items_flag(
    concepts, django_capture_on_commit_callbacks
):
    from training.models import ModelVersion
    from training.signals import model_version_promoted

    item = item_with_labels(concepts, "x", {"painting": 0.99})
    version = model_version_with_scores({item.pk: {"painting": 0.02}}, concepts=["painting"])
    with django_capture_on_commit_callbacks(execute=True):
        model_version_promoted.send(
            sender=ModelVersion, version_id=version.pk, previous_id=None, by="training"
        )

    assert Item.objects.get(pk=item.pk).conflicts_model
