"""The workbench: the model beside the crowd, who voted, undo, and the no-vote accept rule."""

from __future__ import annotations

import pytest
from django.urls import reverse

from annotate.models import (
    Classification,
    Item,
    Review,
    Subject,
    Volunteer,
    VolunteerSkill,
)
from annotate.services.review import (
    UndoError,
    review_record,
    review_undo,
    reviews_bulk_accept,
    reviews_undo_batch,
)
from review.selectors import item_workbench, queue_rows
from tests.factories import WorkflowFactory, item_with_labels, model_version_with_scores

pytestmark = pytest.mark.django_db


def test_the_item_screen_shows_the_active_models_score_and_flags_its_conflict_with_the_crowd(
    curator_client, concepts
):
    item = item_with_labels(concepts, "a", {"painting": 0.01, "map": 0.99}, conflicts_model=True)
    model_version_with_scores(
        {item.pk: {"painting": 0.97, "map": 0.95}}, concepts=["painting", "map"]
    )

    bench = item_workbench(item)
    rows = {row.crowd.key: row for row in bench.rows}
    assert bench.has_model
    assert rows["painting"].model == pytest.approx(0.97) and rows["painting"].conflicts_model
    assert rows["map"].predicted and not rows["map"].conflicts_model
    assert rows["toy"].model is None

    page = curator_client.get(reverse("review:item", args=[item.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "⚑ model" in html and "validation mAP" in html
    assert 'id="review-model-flag"' in html


def test_without_an_active_model_the_item_screen_says_so_and_has_no_model_column(
    curator_client, concepts
):
    item = item_with_labels(concepts, "a", {"painting": 0.9})
    page = curator_client.get(reverse("review:item", args=[item.pk]))
    assert b"no active model" in page.content
    assert b"cl-model" not in page.content


def test_queue_rows_carry_the_final_label_and_the_models_predicted_concepts(concepts):
    item = item_with_labels(concepts, "a", {"painting": 0.9, "map": 0.2})
    model_version_with_scores(
        {item.pk: {"painting": 0.8, "map": 0.3}}, concepts=["painting", "map"]
    )
    [row] = queue_rows([item])
    assert row.labels == ["painting"]
    assert [(tag.key, round(tag.score, 2)) for tag in row.model] == [("painting", 0.8)]


def test_the_item_screen_lists_who_voted_what_with_their_skill(curator_client, concepts):
    item = item_with_labels(concepts, "a", {"painting": 0.7})
    workflow = WorkflowFactory(zooniverse_id=5, version=None)
    subject = Subject.objects.create(zooniverse_id=50, item=item)
    ann, bob = (
        Volunteer.objects.create(key="ann", user_name="ann"),
        Volunteer.objects.create(key="bob", user_name="bob"),
    )
    for n, (volunteer, ticked) in enumerate([(ann, [concepts["painting"].pk]), (bob, [])]):
        Classification.objects.create(
            zooniverse_id=n + 1,
            workflow=workflow,
            workflow_version="1.1",
            subject=subject,
            item=item,
            volunteer=volunteer,
            created_at="2026-01-01T00:00:00Z",
            concept_ids=ticked,
        )
    VolunteerSkill.objects.create(
        volunteer=ann, concept=concepts["painting"], sensitivity=0.91, specificity=0.42, n_votes=9
    )

    document = curator_client.get(reverse("review:item_votes", args=[item.pk])).json()
    voters = document["voters"]
    votes = [
        (voters[i]["name"], ticked, se, sp)
        for i, ticked, se, sp in document["concepts"]["painting"]
    ]
    assert votes == [("ann", True, 0.91, 0.42), ("bob", False, None, None)]
    assert document["n_voters"] == 2
    assert voters[0]["url"] == reverse("admin:annotate_volunteer_change", args=[ann.pk])
    assert voters[0]["items_url"] == f"{reverse('review:queue')}?volunteer={ann.pk}&state=all"
    page = curator_client.get(reverse("review:item", args=[item.pk])).content.decode()
    assert reverse("review:item_votes", args=[item.pk]) in page
    assert '<ul class="cl-voters" data-concept="painting">' in page


def test_accept_is_refused_on_an_item_nobody_voted_on_and_the_prior_can_be_taken_instead(
    concepts, curator
):
    item = item_with_labels(concepts, "a", priors=("map", "toy"))
    with pytest.raises(ValueError, match="no votes yet"):
        review_record(item=item, curator=curator, action="accept")
    assert not Review.objects.exists()

    review = review_record(item=item, curator=curator, action="accept_prior")

    item.refresh_from_db()
    assert (item.review_state, item.curated_concepts) == ("accepted", ["map", "toy"])
    assert (review.action, review.after) == ("accept_prior", ["map", "toy"])
    bare = item_with_labels(concepts, "bare")
    with pytest.raises(ValueError, match="no prior labels"):
        review_record(item=bare, curator=curator, action="accept_prior")


def test_undo_restores_the_state_and_label_before_the_decision_and_keeps_both_rows(
    concepts, curator
):
    item = item_with_labels(concepts, "a", {"painting": 0.9})
    review_record(item=item, curator=curator, action="edit", concepts=["map"])
    second = review_record(item=item, curator=curator, action="reject")

    undo = review_undo(review=second, curator=curator)

    item.refresh_from_db()
    assert (item.review_state, item.curated_concepts) == ("edited", ["map"])
    assert (undo.action, undo.undoes_id, undo.before, undo.after) == (
        "undo",
        second.pk,
        [],
        ["map"],
    )
    assert Review.objects.count() == 3
    with pytest.raises(UndoError, match="already undone"):
        review_undo(review=second, curator=curator)


def test_undo_refuses_a_decision_with_a_later_one_on_top(concepts, curator):
    item = item_with_labels(concepts, "a", {"painting": 0.9})
    first = review_record(item=item, curator=curator, action="accept")
    later = review_record(item=item, curator=curator, action="reject")
    with pytest.raises(UndoError, match="later decision"):
        review_undo(review=first, curator=curator)
    review_undo(review=later, curator=curator)
    review_undo(review=first, curator=curator)
    item.refresh_from_db()
    assert (item.review_state, item.curated_concepts) == ("unreviewed", [])


def test_a_bulk_accept_is_undone_as_a_whole_except_items_decided_again_since(concepts, curator):
    items = [item_with_labels(concepts, f"i{i}", {"painting": 0.99}) for i in range(4)]
    assert reviews_bulk_accept(items_qs=Item.objects.all(), curator=curator) == 4
    batch = Review.objects.first().batch
    review_record(item=items[0], curator=curator, action="reject")

    result = reviews_undo_batch(batch=batch, curator=curator)

    assert result.undone == 3 and sum(result.skipped.values()) == 1
    states = dict(Item.objects.values_list("external_id", "review_state"))
    assert states == {"i0": "rejected", "i1": "unreviewed", "i2": "unreviewed", "i3": "unreviewed"}


def test_the_undo_button_on_the_item_page_undoes_the_decision(curator_client, curator, concepts):
    item = item_with_labels(concepts, "a", {"painting": 0.9})
    review = review_record(item=item, curator=curator, action="accept")
    page = curator_client.get(reverse("review:item", args=[item.pk]))
    assert f'id="undo-{review.pk}"'.encode() in page.content

    response = curator_client.post(reverse("review:undo", args=[review.pk]))

    assert response.status_code == 302
    item.refresh_from_db()
    assert item.review_state == "unreviewed"


def test_the_decisions_page_lists_bulk_decisions_with_an_undo(curator_client, curator, concepts):
    item_with_labels(concepts, "a", {"painting": 0.99})
    reviews_bulk_accept(items_qs=Item.objects.all(), curator=curator)
    batch = Review.objects.get().batch
    page = curator_client.get(reverse("review:decisions"))
    assert page.status_code == 200
    assert reverse("review:undo_batch", args=[batch]).encode() in page.content
    response = curator_client.post(reverse("review:undo_batch", args=[batch]))
    assert response.status_code == 302
    assert Item.objects.get().review_state == "unreviewed"


def test_a_viewer_cannot_undo(client, concepts, curator, django_user_model):
    from django.contrib.auth.models import Permission

    item = item_with_labels(concepts, "a", {"painting": 0.9})
    review = review_record(item=item, curator=curator, action="accept")
    viewer = django_user_model.objects.create_user("vera", password="x" * 20, is_staff=True)
    viewer.user_permissions.set(
        Permission.objects.filter(content_type__app_label="annotate", codename="view_item")
    )
    client.force_login(viewer)
    assert client.post(reverse("review:undo", args=[review.pk])).status_code == 403


def test_every_queue_filter_stays_in_the_links(curator_client, concepts):
    item = item_with_labels(concepts, "a", {"painting": 0.55})
    url = reverse("review:queue") + "?consensus=uncertain&flag=either&concept=painting&view=grid"
    page = curator_client.get(url)
    assert page.status_code == 200
    assert b'class="cl-grid"' in page.content
    item_link = reverse("review:item", args=[item.pk])
    html = page.content.decode()
    assert f"{item_link}?consensus=uncertain" not in html  # flag=either has no match
    page = curator_client.get(reverse("review:queue") + "?consensus=uncertain&concept=painting")
    assert f"{item_link}?concept=painting&amp;consensus=uncertain" in page.content.decode()


def test_a_filter_the_queue_does_not_understand_is_named_not_silently_dropped(
    curator_client, concepts
):
    page = curator_client.get(reverse("review:queue") + "?state=uncertain")
    assert page.status_code == 200
    assert b"not understood: state" in page.content


def test_a_decision_is_undone_through_the_api_and_an_undo_cannot_be_posted_as_a_decision(
    client, concepts, curator
):
    item = item_with_labels(concepts, "a", {"painting": 0.9})
    client.force_login(curator)
    made = client.post(
        "/api/v1/reviews/", {"item": item.pk, "action": "accept"}, content_type="application/json"
    )
    assert made.status_code == 201, made.content
    undone = client.post(f"/api/v1/reviews/{made.json()['id']}/undo/")
    assert undone.status_code == 201, undone.content
    assert (undone.json()["action"], undone.json()["undoes"]) == ("undo", made.json()["id"])
    assert Item.objects.get(pk=item.pk).review_state == "unreviewed"
    again = client.post(f"/api/v1/reviews/{made.json()['id']}/undo/")
    assert again.status_code == 400 and "already undone" in again.content.decode()
    posted = client.post(
        "/api/v1/reviews/", {"item": item.pk, "action": "undo"}, content_type="application/json"
    )
    assert posted.status_code == 400


def test_an_item_link_with_a_concept_that_is_gone_opens_the_item_with_that_filter_dropped(
    curator_client, concepts
):
    item = item_with_labels(concepts, "a", {"painting": 0.6})
    page = curator_client.get(reverse("review:item", args=[item.pk]) + "?concept=unicorn")
    assert page.status_code == 200
    bulk = curator_client.post(
        reverse("review:bulk_accept") + "?concept=unicorn", {"min_confidence": "0.95"}
    )
    assert bulk.status_code == 302


@pytest.mark.parametrize("n", [4, 40])
def test_undoing_a_bulk_accept_takes_the_same_queries_for_4_or_40_items(
    concepts, curator, n, django_assert_max_num_queries
):
    for i in range(n):
        item_with_labels(concepts, f"i{i}", {"painting": 0.99})
    reviews_bulk_accept(items_qs=Item.objects.all(), curator=curator)
    batch = Review.objects.first().batch

    with django_assert_max_num_queries(16):
        result = reviews_undo_batch(batch=batch, curator=curator)

    assert result.undone == n
    assert Item.objects.filter(review_state="unreviewed").count() == n
