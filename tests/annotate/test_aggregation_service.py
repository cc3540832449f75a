from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command

from annotate.models import (
    AggregatedLabel,
    Classification,
    Item,
    PriorLabel,
    Subject,
    Volunteer,
    VolunteerSkill,
    Workflow,
)
from annotate.services.aggregation import labels_aggregate

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 3, 1, tzinfo=UTC)


class Crowd:
    """Builds classifications straight in the database."""

    def __init__(self, concepts):
        self.concepts = concepts
        self.workflow = Workflow.objects.create(zooniverse_id=1)
        self.next_id = 1

    def item(self, external_id: str, prior: list[str] = ()) -> Item:
        item = Item.objects.create(external_id=external_id)
        Subject.objects.create(zooniverse_id=10_000 + item.pk, item=item)
        for key in prior:
            PriorLabel.objects.create(item=item, concept=self.concepts[key])
        return item

    def vote(self, item: Item, volunteer: str, ticked: list[str], **extra) -> Classification:
        volunteer_row, _ = Volunteer.objects.get_or_create(
            key=volunteer, defaults={"logged_in": not volunteer.startswith("anon")}
        )
        self.next_id += 1
        return Classification.objects.create(
            zooniverse_id=self.next_id,
            workflow=self.workflow,
            workflow_version="1.1",
            subject=item.subjects.get(),
            item=item,
            volunteer=volunteer_row,
            created_at=T0 + timedelta(minutes=self.next_id),
            concept_ids=[self.concepts[k].pk for k in ticked],
            **extra,
        )


def posterior(item: Item, key: str) -> float:
    return AggregatedLabel.objects.get(item=item, concept__key=key).posterior


def test_unanimous_votes_give_confident_labels_counts_and_skills(concepts):
    crowd = Crowd(concepts)
    item = crowd.item("a", prior=["painting"])
    for v in ("u1", "u2", "u3", "u4"):
        crowd.vote(item, v, ["painting", "map"])
    summary = labels_aggregate(method="dawid_skene")

    assert summary.n_classifications == 4 and summary.n_items == 1
    assert posterior(item, "painting") > 0.95 and posterior(item, "map") > 0.95
    assert posterior(item, "sculpture") < 0.05
    label = AggregatedLabel.objects.get(item=item, concept__key="map")
    assert (label.votes_for, label.votes_against, label.method) == (4, 0, "dawid_skene")
    assert AggregatedLabel.objects.filter(item=item).count() == 20
    assert VolunteerSkill.objects.count() == 4 * 20
    item.refresh_from_db()
    assert item.consensus == Item.Consensus.CONFIDENT
    # The crowd confidently says "map", which the prior enrichment missed.
    assert item.contradicts_prior


def test_a_split_crowd_leaves_the_item_uncertain_and_not_retired(concepts):
    crowd = Crowd(concepts)
    item = crowd.item("split")
    crowd.vote(item, "u1", ["drawing"])
    crowd.vote(item, "u2", [])
    summary = labels_aggregate(method="majority", min_votes=1)
    item.refresh_from_db()
    assert item.consensus == Item.Consensus.UNCERTAIN
    assert item.uncertainty == pytest.approx(1.0)
    assert summary.retire_subject_ids == []


def test_settled_items_with_enough_votes_are_listed_for_retirement(concepts):
    crowd = Crowd(concepts)
    settled, young = crowd.item("settled"), crowd.item("young")
    for v in ("u1", "u2", "u3"):
        crowd.vote(settled, v, ["map"])
    crowd.vote(young, "u1", ["map"])
    summary = labels_aggregate(method="majority", min_votes=3)
    assert summary.retire_subject_ids == [settled.subjects.get().zooniverse_id]


def test_only_the_earliest_of_a_volunteers_repeats_counts(concepts):
    crowd = Crowd(concepts)
    item = crowd.item("a")
    crowd.vote(item, "u1", ["map"])
    crowd.vote(item, "u1", ["painting"], is_duplicate=True)
    labels_aggregate(method="majority")
    label = AggregatedLabel.objects.get(item=item, concept__key="painting")
    assert (label.votes_for, label.votes_against) == (0, 1)


def test_a_curators_decision_is_fixed_and_teaches_volunteer_skill(concepts, admin_user):
    crowd = Crowd(concepts)
    reviewed = crowd.item("reviewed")
    crowd.vote(reviewed, "careless", [])
    crowd.vote(reviewed, "careful", ["map"])
    Item.objects.filter(pk=reviewed.pk).update(review_state="edited", curated_concepts=["map"])
    for i in range(6):
        other = crowd.item(f"o{i}")
        crowd.vote(other, "careless", [])
        crowd.vote(other, "careful", ["map"])
    labels_aggregate(method="dawid_skene")
    assert posterior(reviewed, "map") == 1.0
    skill = {
        s.volunteer.key: s.sensitivity
        for s in VolunteerSkill.objects.filter(concept__key="map").select_related("volunteer")
    }
    assert skill["careful"] > skill["careless"]


def test_rejected_items_and_deleted_subjects_are_left_out(concepts):
    crowd = Crowd(concepts)
    rejected, deleted, kept = crowd.item("rejected"), crowd.item("deleted"), crowd.item("kept")
    for item in (rejected, deleted, kept):
        crowd.vote(item, "u1", ["map"])
    Item.objects.filter(pk=rejected.pk).update(review_state="rejected")
    Subject.objects.filter(item=deleted).update(upstream_state="deleted")
    summary = labels_aggregate(method="majority")
    assert summary.n_items == 1
    assert set(AggregatedLabel.objects.values_list("item__external_id", flat=True)) == {"kept"}


def test_aggregating_twice_writes_the_same_labels(concepts):
    crowd = Crowd(concepts)
    for i in range(5):
        item = crowd.item(f"i{i}", prior=["map"])
        crowd.vote(item, "u1", ["map"] if i % 2 else ["drawing"])
        crowd.vote(item, "anon-1", ["map"])
    labels_aggregate()
    first = sorted(AggregatedLabel.objects.values_list("item_id", "concept_id", "posterior"))
    labels_aggregate()
    assert (
        sorted(AggregatedLabel.objects.values_list("item_id", "concept_id", "posterior")) == first
    )
    assert AggregatedLabel.objects.count() == 5 * 20


def test_a_rerun_rewrites_only_the_labels_whose_votes_changed(concepts):
    crowd = Crowd(concepts)
    still, moved = crowd.item("still"), crowd.item("moved")
    for item in (still, moved):
        crowd.vote(item, "u1", ["map"])
    labels_aggregate(method="majority")
    stamp = datetime(2020, 1, 1, tzinfo=UTC)
    AggregatedLabel.objects.update(updated_at=stamp)
    VolunteerSkill.objects.update(updated_at=stamp)

    crowd.vote(moved, "u2", ["painting"])
    labels_aggregate(method="majority")
    touched = set(
        AggregatedLabel.objects.exclude(updated_at=stamp).values_list(
            "item__external_id", "concept__key"
        )
    )
    # "moved" gained a vote on every concept (votes_against or votes_for changed); "still" did not.
    assert {item for item, _ in touched} == {"moved"} and len(touched) == 20
    label = AggregatedLabel.objects.get(item=moved, concept__key="painting")
    assert (label.votes_for, label.votes_against, label.posterior) == (1, 1, 0.5)
    assert AggregatedLabel.objects.filter(item=still, updated_at=stamp).count() == 20

    # Same votes, another method: every label says which method wrote it.
    labels_aggregate(method="dawid_skene")
    assert set(AggregatedLabel.objects.values_list("method", flat=True)) == {"dawid_skene"}


def test_no_votes_at_all_is_a_valid_empty_aggregation(concepts, capsys):
    Item.objects.create(external_id="lonely")
    call_command("aggregate")
    out = capsys.readouterr().out
    assert "0 classifications of 0 items" in out
    assert not AggregatedLabel.objects.exists()
    assert Item.objects.get().consensus == Item.Consensus.NONE
