from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from django.core.management import call_command

from annotate.models import (
    AggregatedLabel,
    AggregationState,
    Classification,
    Item,
    Subject,
    VolunteerSkill,
)
from annotate.services.aggregation import labels_aggregate, labels_aggregate_and_retire
from annotate.services.classifications.counters import counts_recompute
from tests.factories import Crowd, WorkflowVersionFactory, answers_for

pytestmark = pytest.mark.django_db


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


def test_the_summary_reports_how_many_labels_agree_with_majority_vote(concepts, capsys):
    crowd = Crowd(concepts)
    plain, overruled = crowd.item("plain"), crowd.item("overruled")
    for v in ("u1", "u2", "u3"):
        crowd.vote(plain, v, ["map"])
        crowd.vote(overruled, v, ["map"])
    # A curator says "no map": one label of the 2 x 20 goes against the three votes.
    Item.objects.filter(pk=overruled.pk).update(review_state="accepted", curated_concepts=[])

    summary = labels_aggregate(method="majority")
    assert summary.majority_agreement == pytest.approx(39 / 40)
    assert "97.5% of labels agree with majority vote" in summary.summary()

    # Dawid-Skene learns from the curator that u1-u3 tick "map" where there is none, and may
    # overrule them on the other item too: whatever it decides, the summary counts it.
    call_command("aggregate", method="dawid_skene")
    rows = AggregatedLabel.objects.values_list("posterior", "votes_for", "votes_against")
    agree = [(p > 0.5) == (votes_for > votes_against) for p, votes_for, votes_against in rows]
    share = sum(agree) / len(agree)
    assert len(agree) == 40 and share < 1
    assert f"{share:.1%} of labels agree with majority vote" in capsys.readouterr().out


def test_with_no_labels_all_of_them_agree_with_majority_vote(concepts):
    Item.objects.create(external_id="lonely")
    summary = labels_aggregate(method="dawid_skene")
    assert summary.majority_agreement == 1.0
    assert "100.0% of labels agree with majority vote" in summary.summary()


# --------------------------------------------------------------------------------------------
# Incremental passes
# --------------------------------------------------------------------------------------------

TAGS = ["painting", "map", "drawing", "photograph"]


def crowd_history(crowd: Crowd, n_items: int = 80, seed: int = 0) -> list[Item]:
    """Items with five votes each from careful, careless and anonymous volunteers."""
    rng = np.random.default_rng(seed)
    careful = [f"u{k}" for k in range(1, 7)]
    volunteers = careful + ["careless1", "careless2", "anon-1", "anon-2", "anon-3"]
    sensitivity = {v: 0.92 if v in careful else 0.6 for v in volunteers}
    false_positive = {v: 0.04 if v in careful else 0.2 for v in volunteers}
    items = []
    for i in range(n_items):
        item = crowd.item(f"h{i:02d}", prior=["painting"] if i % 5 == 0 else [])
        truth = rng.random(len(TAGS)) < 0.35
        for volunteer in rng.choice(volunteers, 5, replace=False):
            p_tick = np.where(truth, sensitivity[volunteer], false_positive[volunteer])
            ticked = [key for key, p in zip(TAGS, p_tick, strict=True) if rng.random() < p]
            crowd.vote(item, str(volunteer), ticked)
        items.append(item)
    return items


def labels_table() -> dict[tuple[int, int], tuple[float, int, int, str]]:
    return {
        (item, concept): (posterior, votes_for, votes_against, method)
        for item, concept, posterior, votes_for, votes_against, method in (
            AggregatedLabel.objects.values_list(
                "item_id", "concept_id", "posterior", "votes_for", "votes_against", "method"
            )
        )
    }


def item_states() -> dict[int, tuple[str, float, bool]]:
    return {
        pk: (consensus, uncertainty, contradicts)
        for pk, consensus, uncertainty, contradicts in Item.objects.values_list(
            "pk", "consensus", "uncertainty", "contradicts_prior"
        )
    }


def sides_changed(before: dict, after: dict, items: set[int]) -> int:
    """Labels of ``items`` that are new in ``after`` or on the other side of 0.5."""
    return sum(
        1
        for (item, concept), (posterior, *_) in after.items()
        if item in items
        and ((item, concept) not in before or (before[item, concept][0] > 0.5) != (posterior > 0.5))
    )


def test_the_first_incremental_pass_falls_back_to_a_full_pass_and_stores_the_parameters(
    concepts,
):
    crowd = Crowd(concepts)
    items = crowd_history(crowd, n_items=10)
    summary = labels_aggregate(item_ids=[items[0].pk], method="dawid_skene")

    assert not summary.incremental and summary.iterations > 0
    assert summary.n_items == 10 and summary.labels_changed == 10 * 20
    assert AggregatedLabel.objects.count() == 10 * 20
    state = AggregationState.objects.get()
    assert state.full_pass and state.method == "dawid_skene" and state.n_votes == 50
    assert set(state.priors) == {str(c.pk) for c in concepts.values()}
    assert set(state.crowd_sensitivity) == set(state.priors)
    # Three anonymous sessions were pooled; their shared skill is kept for new sessions.
    assert set(state.pooled_sensitivity) == set(state.priors)


def test_an_incremental_pass_without_new_votes_reproduces_the_full_pass(concepts):
    crowd = Crowd(concepts)
    items = crowd_history(crowd)
    labels_aggregate(method="dawid_skene")
    full = labels_table()
    chosen = [item.pk for item in items[::8]]

    summary = labels_aggregate(item_ids=chosen, method="dawid_skene")
    assert summary.incremental and summary.iterations == 0
    assert (summary.n_items, summary.n_classifications) == (10, 50)
    assert summary.labels_changed == 0
    after = labels_table()
    for key, (posterior, *counts) in after.items():
        # Stored skills carry six decimals: the E-step lands within about that of the EM.
        assert posterior == pytest.approx(full[key][0], abs=1e-5)
        assert counts == list(full[key][1:])
    state = AggregationState.objects.order_by("-created_at", "-id").first()
    assert not state.full_pass and state.n_items == 10


def test_new_votes_on_a_few_items_get_nearly_the_full_pass_labels_and_touch_nothing_else(
    concepts,
):
    crowd = Crowd(concepts)
    items = crowd_history(crowd)
    labels_aggregate(method="dawid_skene")
    stamp = datetime(2020, 1, 1, tzinfo=UTC)
    AggregatedLabel.objects.update(updated_at=stamp)
    VolunteerSkill.objects.update(updated_at=stamp)
    n_skills = VolunteerSkill.objects.count()
    before, states_before = labels_table(), item_states()

    # A contested item tipped by careful volunteers, two items with votes from a newcomer and a
    # new anonymous session, and a brand-new item.
    contested = crowd.item("contested")
    crowd.vote(contested, "careless1", ["map"])
    crowd.vote(contested, "careless2", ["map"])
    labels_aggregate(method="dawid_skene", item_ids=[contested.pk])
    before = labels_table()
    assert before[contested.pk, concepts["map"].pk][0] > 0.5
    for volunteer in ("u1", "u2", "u3", "u4"):
        crowd.vote(contested, volunteer, [])
    crowd.vote(items[1], "newbie", ["drawing"])
    crowd.vote(items[2], "anon-new", [])
    fresh = crowd.item("fresh")
    for volunteer in ("u1", "u5", "anon-2"):
        crowd.vote(fresh, volunteer, ["photograph"])
    touched = {contested.pk, items[1].pk, items[2].pk, fresh.pk}

    summary = labels_aggregate(item_ids=sorted(touched), method="dawid_skene")
    after = labels_table()

    assert summary.incremental and summary.n_items == 4
    assert summary.labels_changed == sides_changed(before, after, touched)
    assert summary.labels_changed >= 20 + 1  # the new item's labels and the tipped "map"
    assert after[contested.pk, concepts["map"].pk][0] < 0.5
    assert after[fresh.pk, concepts["photograph"].pk][0] > 0.9
    # Nothing outside the four items was written: labels, item states, skills.
    others = {key: row for key, row in after.items() if key[0] not in touched}
    assert others == {key: row for key, row in before.items() if key[0] not in touched}
    assert not AggregatedLabel.objects.exclude(item_id__in=touched).exclude(updated_at=stamp)
    states_after = item_states()
    assert all(states_after[pk] == states_before[pk] for pk in states_before if pk not in touched)
    assert VolunteerSkill.objects.count() == n_skills
    assert not VolunteerSkill.objects.exclude(updated_at=stamp).exists()

    # A full pass re-estimates the skills with the new votes: close, and on the same side.
    full = labels_aggregate(method="dawid_skene")
    assert not full.incremental
    redone = labels_table()
    # 0.07, not 0.05: the newcomer's "no" makes items[2]'s "map" a clear majority against u1's
    # tick (4 of 6, three of them anonymous), and where the clear-majority rule divides the odds
    # against it (ml.aggregation.OVERRULE_FACTOR) the posterior lands on a steeper part of the
    # curve: 0.84 under the old skills, 0.78 under the re-estimated ones.
    for key in (k for k in after if k[0] in touched):
        assert after[key][0] == pytest.approx(redone[key][0], abs=0.07), key
        assert (after[key][0] > 0.5) == (redone[key][0] > 0.5), key
        assert after[key][1:] == redone[key][1:]
    # (Consensus may differ where a posterior sits near RETIRE_CONFIDENCE.)
    redone_states = item_states()
    for pk in touched:
        # Uncertainty is 1 - |2p - 1|: twice the posteriors' tolerance.
        assert states_after[pk][1] == pytest.approx(redone_states[pk][1], abs=0.14)


def test_an_incremental_pass_over_items_without_counted_votes_clears_them_like_a_full_pass(
    concepts,
):
    crowd = Crowd(concepts)
    items = crowd_history(crowd, n_items=12)
    labels_aggregate(method="dawid_skene")
    gone, kept = items[3], items[4]
    Classification.objects.filter(item=gone).update(item=None)
    before = labels_table()

    summary = labels_aggregate(item_ids=[gone.pk, kept.pk], method="dawid_skene")
    assert summary.incremental and summary.n_items == 1
    assert not AggregatedLabel.objects.filter(item=gone).exists()
    gone.refresh_from_db()
    assert (gone.consensus, gone.uncertainty, gone.contradicts_prior) == ("none", 0.0, False)
    assert summary.labels_changed == 0
    after = labels_table()
    assert set(after) == {key for key in before if key[0] != gone.pk}
    for key, (posterior, *counts) in after.items():
        assert posterior == pytest.approx(before[key][0], abs=1e-5)
        assert counts == list(before[key][1:])

    # What a full pass does with the same votes.
    labels_aggregate(method="dawid_skene")
    assert not AggregatedLabel.objects.filter(item=gone).exists()
    gone.refresh_from_db()
    assert gone.consensus == "none"


def test_a_changed_vocabulary_or_method_sends_the_incremental_pass_back_to_a_full_one(concepts):
    crowd = Crowd(concepts)
    items = crowd_history(crowd, n_items=6)
    labels_aggregate(method="dawid_skene")
    assert labels_aggregate(item_ids=[items[0].pk], method="dawid_skene").incremental
    # Another method's incremental pass would mix its labels with these: a full pass first.
    assert not labels_aggregate(item_ids=[items[0].pk], method="majority").incremental
    assert labels_aggregate(item_ids=[items[0].pk], method="majority").incremental

    concepts["toy"].active = False
    concepts["toy"].save()
    summary = labels_aggregate(item_ids=[items[0].pk], method="majority")
    assert not summary.incremental
    assert not AggregatedLabel.objects.filter(concept=concepts["toy"]).exists()


def test_an_incremental_majority_pass_is_exact(concepts):
    crowd = Crowd(concepts)
    items = crowd_history(crowd, n_items=8)
    labels_aggregate(method="majority")
    crowd.vote(items[0], "newbie", ["map", "toy"])
    summary = labels_aggregate(item_ids=[items[0].pk], method="majority")
    incremental = labels_table()
    assert summary.incremental
    labels_aggregate(method="majority")
    assert labels_table() == incremental


def test_an_incremental_pass_lists_only_its_own_items_for_retirement(concepts):
    crowd = Crowd(concepts)
    settled = [crowd.item(f"s{i}") for i in range(3)]
    for item in settled:
        for volunteer in ("u1", "u2", "u3"):
            crowd.vote(item, volunteer, ["map"])
    full = labels_aggregate(method="majority", min_votes=3)
    assert len(full.retire_subject_ids) == 3
    summary, retired = labels_aggregate_and_retire(item_ids=[settled[1].pk], method="majority")
    assert summary.incremental
    assert summary.retire_subject_ids == [settled[1].subjects.get().zooniverse_id]
    assert retired == 0  # the test subjects belong to no round of a workflow


# A vote is only what the volunteer was asked (issue 17).


def two_versions(crowd: Crowd) -> None:
    """Version 1.1 of the crowd's workflow offered painting and map; 2.0 adds sculpture."""
    offered = {"1.1": ["painting", "map"], "2.0": ["painting", "map", "sculpture"]}
    for version, keys in offered.items():
        WorkflowVersionFactory(workflow=crowd.workflow, version=version, answers=answers_for(keys))


def old_and_new_votes(crowd: Crowd) -> tuple[Item, list[Classification]]:
    """Three volunteers on version 1.1 tick painting; two on version 2.0 tick sculpture too."""
    item = crowd.item("versions")
    old = [crowd.vote(item, v, ["painting"]) for v in ("o1", "o2", "o3")]
    for v in ("n1", "n2"):
        crowd.vote(item, v, ["painting", "sculpture"], workflow_version="2.0")
    return item, old


@pytest.mark.parametrize("method", ["majority", "dawid_skene"])
def test_a_concept_the_old_workflow_version_never_offered_gets_no_vote_from_it(concepts, method):
    crowd = Crowd(concepts)
    two_versions(crowd)
    item, old = old_and_new_votes(crowd)
    labels_aggregate(method=method)
    with_old = posterior(item, "sculpture")
    label = AggregatedLabel.objects.get(item=item, concept__key="sculpture")
    # votes_for + votes_against = the votes asked about sculpture: the two new ones.
    assert (label.votes_for, label.votes_against) == (2, 0)
    painting = AggregatedLabel.objects.get(item=item, concept__key="painting")
    assert (painting.votes_for, painting.votes_against) == (5, 0)
    # A concept neither version offered has no votes at all.
    drawing = AggregatedLabel.objects.get(item=item, concept__key="drawing")
    assert (drawing.votes_for, drawing.votes_against) == (0, 0)
    skill = VolunteerSkill.objects.get(volunteer__key="o1", concept__key="sculpture")
    assert skill.n_votes == 0
    assert with_old > 0.5

    # The old votes say nothing about sculpture: without them its posterior is the same.
    Classification.objects.filter(pk__in=[c.pk for c in old]).update(is_duplicate=True)
    labels_aggregate(method=method)
    assert posterior(item, "sculpture") == pytest.approx(with_old, abs=1e-6)


def test_a_version_written_without_trailing_zeros_or_unknown_is_read_as_the_ingest_reads_it(
    concepts,
):
    crowd = Crowd(concepts)
    two_versions(crowd)
    item = crowd.item("numbers")
    # "2" is version 2.0 as a spreadsheet writes it back: sculpture was offered.
    crowd.vote(item, "u1", ["sculpture"], workflow_version="2")
    # A version nobody configured: every concept is taken to have been asked, as before.
    crowd.vote(item, "u2", [], workflow_version="9.9")
    labels_aggregate(method="majority")
    sculpture = AggregatedLabel.objects.get(item=item, concept__key="sculpture")
    assert (sculpture.votes_for, sculpture.votes_against) == (1, 1)
    drawing = AggregatedLabel.objects.get(item=item, concept__key="drawing")
    assert (drawing.votes_for, drawing.votes_against) == (0, 1)


def test_a_gold_classification_anchors_only_the_concepts_its_version_asked(concepts):
    crowd = Crowd(concepts)
    two_versions(crowd)
    item = crowd.item("gold")
    crowd.vote(item, "expert", ["painting"], gold_standard=True)
    crowd.vote(item, "n1", ["sculpture"], workflow_version="2.0")
    labels_aggregate(method="majority")
    assert posterior(item, "painting") == 1.0 and posterior(item, "map") == 0.0
    assert posterior(item, "sculpture") == 1.0  # n1's vote, not the gold row's silence


def test_an_items_count_is_of_its_votes_only(concepts):
    crowd = Crowd(concepts)
    item = crowd.item("counted")
    crowd.vote(item, "u1", ["map"])
    crowd.vote(item, "u2", [])
    crowd.vote(item, "u1", ["map"], is_duplicate=True)
    crowd.vote(item, "u3", [], task_shown=False)
    crowd.vote(item, "u4", [], answers_known=False)
    counts_recompute(items={item.pk}, volunteers=set())
    item.refresh_from_db()
    assert item.n_classifications == 2
    assert labels_aggregate(method="majority").n_classifications == item.n_classifications
