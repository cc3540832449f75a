"""Curator review: the decision service, the final-label contract, the queue and the screens."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from annotate import selectors
from annotate.models import AppendOnlyError, Item, Review
from annotate.services.review import review_record, reviews_bulk_accept
from tests.factories import WorkflowFactory, item_with_labels, model_version_with_scores

pytestmark = pytest.mark.django_db


make_item = item_with_labels


# --- the final label ------------------------------------------------------------------------------


def test_the_final_label_of_an_unreviewed_item_is_the_crowds_above_one_half(concepts):
    item = make_item(concepts, "a", {"painting": 0.9, "drawing": 0.5, "map": 0.51, "toy": 0.1})
    assert selectors.item_final_labels([item.pk]) == {item.pk: ["map", "painting"]}


def test_the_final_label_of_a_curated_item_is_the_curators_and_a_rejected_item_has_none(
    concepts, curator
):
    edited = make_item(concepts, "edited", {"painting": 0.9})
    rejected = make_item(concepts, "rejected", {"painting": 0.9})
    empty = make_item(concepts, "empty", {"painting": 0.2})
    no_votes = make_item(concepts, "no-votes")
    review_record(item=edited, curator=curator, action="edit", concepts=["toy", "map"])
    review_record(item=rejected, curator=curator, action="reject")

    labels = selectors.item_final_labels([edited.pk, rejected.pk, empty.pk, no_votes.pk, 999_999])

    assert labels == {edited.pk: ["map", "toy"], empty.pk: [], no_votes.pk: []}


def test_final_labels_of_many_items_take_two_queries_per_ten_thousand(concepts):
    items = [make_item(concepts, f"i{i}", {"painting": 0.9, "map": 0.2}) for i in range(30)]
    ids = [item.pk for item in items]
    with CaptureQueriesContext(connection) as queries:
        labels = selectors.item_final_labels(ids)
    assert len(queries) == 2
    assert all(labels[pk] == ["painting"] for pk in ids)
    with CaptureQueriesContext(connection) as queries:
        labels = selectors.item_final_labels(Item.objects.filter(external_id__startswith="i"))
    assert len(queries) == 2
    assert len(labels) == 30


# --- decisions ------------------------------------------------------------------------------------


def test_accepting_keeps_the_crowds_label_and_records_it(concepts, curator):
    item = make_item(concepts, "a", {"painting": 0.9, "map": 0.7, "toy": 0.1})

    review = review_record(item=item, curator=curator, action="accept", comment="looks right")

    item.refresh_from_db()
    assert item.review_state == "accepted"
    assert item.curated_concepts == ["map", "painting"]
    assert (review.action, review.before, review.after) == (
        "accept",
        ["map", "painting"],
        ["map", "painting"],
    )
    assert review.curator == curator
    assert review.comment == "looks right"


def test_editing_sets_the_sorted_concepts_given(concepts, curator):
    item = make_item(concepts, "a", {"painting": 0.9})

    review = review_record(
        item=item, curator=curator, action="edit", concepts=["toy", "drawing", "toy"]
    )

    item.refresh_from_db()
    assert item.review_state == "edited"
    assert item.curated_concepts == ["drawing", "toy"]
    assert (review.before, review.after) == (["painting"], ["drawing", "toy"])


def test_an_edit_may_say_that_no_concept_applies(concepts, curator):
    item = make_item(concepts, "a", {"painting": 0.9})
    review_record(item=item, curator=curator, action="edit", concepts=[])
    assert selectors.item_final_labels([item.pk]) == {item.pk: []}


def test_rejecting_takes_the_item_out_of_the_dataset(concepts, curator):
    item = make_item(concepts, "a", {"painting": 0.9})

    review = review_record(item=item, curator=curator, action="reject", comment="not an object")

    item.refresh_from_db()
    assert (item.review_state, item.curated_concepts) == ("rejected", [])
    assert (review.before, review.after) == (["painting"], [])
    assert selectors.item_final_labels([item.pk]) == {}


def test_skipping_changes_nothing_but_is_recorded(concepts, curator):
    item = make_item(concepts, "a", {"painting": 0.9})
    updated_at = item.updated_at

    review = review_record(item=item, curator=curator, action="skip")

    item.refresh_from_db()
    assert (item.review_state, item.curated_concepts, item.updated_at) == (
        "unreviewed",
        [],
        updated_at,
    )
    assert (review.action, review.before, review.after) == ("skip", ["painting"], ["painting"])


def test_a_later_decision_starts_from_the_earlier_one_and_both_stay_in_the_audit(concepts, curator):
    item = make_item(concepts, "a", {"painting": 0.9})
    review_record(item=item, curator=curator, action="edit", concepts=["map"])
    review_record(item=item, curator=curator, action="accept")
    review_record(item=item, curator=curator, action="reject")
    review_record(item=item, curator=curator, action="accept")

    audit = list(
        Review.objects.filter(item=item).order_by("id").values_list("action", "before", "after")
    )
    assert audit == [
        ("edit", ["painting"], ["map"]),
        ("accept", ["map"], ["map"]),
        ("reject", ["map"], []),
        ("accept", [], []),
    ]


def test_the_audit_rows_written_by_the_service_are_append_only(concepts, curator):
    item = make_item(concepts, "a", {"painting": 0.9})
    review = review_record(item=item, curator=curator, action="accept")
    review.comment = "rewritten"
    with pytest.raises(AppendOnlyError):
        review.save()
    with pytest.raises(AppendOnlyError):
        review.delete()


def test_an_unknown_concept_is_refused_by_name_and_nothing_is_written(concepts, curator):
    item = make_item(concepts, "a", {"painting": 0.9})
    with pytest.raises(ValueError, match="'unicorn'"):
        review_record(item=item, curator=curator, action="edit", concepts=["painting", "unicorn"])
    item.refresh_from_db()
    assert item.review_state == "unreviewed"
    assert not Review.objects.exists()


def test_an_inactive_concept_cannot_be_set(concepts, curator):
    concepts["toy"].active = False
    concepts["toy"].save()
    item = make_item(concepts, "a", {"painting": 0.9})
    with pytest.raises(ValueError, match="'toy'"):
        review_record(item=item, curator=curator, action="edit", concepts=["toy"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "approve"}, "unknown review action"),
        ({"action": "accept", "concepts": ["map"]}, "only given with the edit"),
        ({"action": "edit"}, "needs the list of concepts"),
        ({"action": "accept", "comment": "x" * 2001}, "longer than 2000"),
        ({"action": "accept", "comment": "nul\x00"}, "NUL"),
    ],
)
def test_bad_decisions_are_refused_with_a_reason(concepts, curator, kwargs, message):
    item = make_item(concepts, "a", {"painting": 0.9})
    with pytest.raises(ValueError, match=message):
        review_record(item=item, curator=curator, **kwargs)
    assert not Review.objects.exists()


def test_a_comment_of_exactly_2000_characters_is_kept(concepts, curator):
    item = make_item(concepts, "a", {"painting": 0.9})
    review = review_record(item=item, curator=curator, action="skip", comment="x" * 2000)
    assert len(review.comment) == 2000


# --- bulk accept ----------------------------------------------------------------------------------


def test_bulk_accept_takes_only_settled_unreviewed_items_with_votes(concepts, curator):
    settled = make_item(concepts, "settled", {"painting": 0.97, "map": 0.02, "toy": 0.05})
    edge = make_item(concepts, "edge", {"painting": 0.95, "map": 0.05})
    unsure = make_item(concepts, "unsure", {"painting": 0.97, "map": 0.6})
    no_votes = make_item(concepts, "no-votes")
    reviewed = make_item(concepts, "reviewed", {"painting": 0.99})
    review_record(item=reviewed, curator=curator, action="edit", concepts=["map"])

    accepted = reviews_bulk_accept(items_qs=Item.objects.all(), curator=curator)

    assert accepted == 2
    states = dict(Item.objects.values_list("external_id", "review_state"))
    assert states == {
        "settled": "accepted",
        "edge": "accepted",
        "unsure": "unreviewed",
        "no-votes": "unreviewed",
        "reviewed": "edited",
    }
    settled.refresh_from_db()
    edge.refresh_from_db()
    assert settled.curated_concepts == ["painting"]
    assert edge.curated_concepts == ["painting"]
    bulk = Review.objects.filter(item__in=[settled, edge])
    assert sorted(bulk.values_list("item__external_id", "action", "before", "after")) == [
        ("edge", "accept", ["painting"], ["painting"]),
        ("settled", "accept", ["painting"], ["painting"]),
    ]
    assert all(r.curator_id == curator.pk and "bulk accept" in r.comment for r in bulk)
    assert not Review.objects.filter(item__in=[unsure, no_votes]).exists()


def test_bulk_accept_twice_accepts_nothing_the_second_time(concepts, curator):
    make_item(concepts, "settled", {"painting": 0.99})
    assert reviews_bulk_accept(items_qs=Item.objects.all(), curator=curator) == 1
    assert reviews_bulk_accept(items_qs=Item.objects.all(), curator=curator) == 0
    assert Review.objects.count() == 1


def test_bulk_accept_honours_a_stricter_confidence_and_refuses_a_meaningless_one(concepts, curator):
    make_item(concepts, "a", {"painting": 0.97})
    assert (
        reviews_bulk_accept(items_qs=Item.objects.all(), curator=curator, min_confidence=0.99) == 0
    )
    with pytest.raises(ValueError):
        reviews_bulk_accept(items_qs=Item.objects.all(), curator=curator, min_confidence=0.5)


def test_bulk_accept_writes_in_a_bounded_number_of_queries(concepts, curator):
    for i in range(40):
        make_item(concepts, f"i{i}", {"painting": 0.99, "map": 0.01})
    with CaptureQueriesContext(connection) as queries:
        assert reviews_bulk_accept(items_qs=Item.objects.all(), curator=curator) == 40
    assert len(queries) <= 12


# --- the queue ------------------------------------------------------------------------------------


def test_the_queue_puts_the_undecided_then_model_conflicts_then_prior_conflicts_first(concepts):
    make_item(concepts, "no-votes")
    make_item(concepts, "calm", {"painting": 0.9}, consensus="confident")
    make_item(concepts, "unsure", {"painting": 0.55})
    make_item(
        concepts, "contradicting", {"painting": 0.99}, contradicts_prior=True, consensus="confident"
    )
    make_item(
        concepts, "model-says-no", {"painting": 0.99}, conflicts_model=True, consensus="confident"
    )
    make_item(concepts, "calm-twin", {"painting": 0.9}, consensus="confident")

    order = list(selectors.review_queue().values_list("external_id", flat=True))

    assert order == ["unsure", "model-says-no", "contradicting", "calm", "calm-twin"]
    everything = list(selectors.review_queue(votes="all").values_list("external_id", flat=True))
    assert everything == [*order, "no-votes"]
    assert list(selectors.review_queue(votes="without").values_list("external_id", flat=True)) == [
        "no-votes"
    ]


def test_the_queue_filters_by_consensus_flag_round_and_volunteer(concepts, curator):
    from annotate.models import Classification, Round, RoundPick, Subject, Volunteer

    unsure = make_item(concepts, "unsure", {"painting": 0.55})
    model = make_item(
        concepts, "model", {"painting": 0.99}, conflicts_model=True, consensus="confident"
    )
    prior = make_item(
        concepts, "prior", {"painting": 0.99}, contradicts_prior=True, consensus="confident"
    )
    round_ = Round.objects.create(number=3, name="third")
    RoundPick.objects.create(round=round_, item=unsure, rank=1, reason="uncertain")
    workflow = WorkflowFactory(zooniverse_id=7, version=None)
    subject = Subject.objects.create(zooniverse_id=70, item=model)
    volunteer = Volunteer.objects.create(key="ann")
    Classification.objects.create(
        zooniverse_id=1,
        workflow=workflow,
        workflow_version="1.1",
        subject=subject,
        item=model,
        volunteer=volunteer,
        created_at="2026-01-01T00:00:00Z",
    )

    def ids(**filters):
        return set(selectors.review_queue(**filters).values_list("external_id", flat=True))

    assert ids(consensus="uncertain") == {"unsure"}
    assert ids(consensus="confident") == {"model", "prior"}
    assert ids(flag="model") == {"model"} and ids(flag="prior") == {"prior"}
    assert ids(flag="either") == {"model", "prior"}
    assert ids(round=3) == {"unsure"} and ids(round=4) == set()
    assert ids(volunteer=volunteer.pk) == {"model"}
    for bad in ({"consensus": "maybe"}, {"flag": "red"}, {"votes": "some"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            selectors.review_queue(**bad)
    assert prior.pk


def test_the_queue_filters_by_state_and_concept(concepts, curator):
    painting = make_item(concepts, "painting", {"painting": 0.9, "map": 0.0})
    map_prior = make_item(concepts, "map-prior", {"painting": 0.1}, priors=("map",))
    done = make_item(concepts, "done", {"map": 0.9})
    review_record(item=done, curator=curator, action="accept")

    assert set(selectors.review_queue(concept="map").values_list("external_id", flat=True)) == {
        "map-prior"
    }
    assert list(
        selectors.review_queue(concept="map", state="accepted").values_list("pk", flat=True)
    ) == [done.pk]
    assert selectors.review_queue(state="all").count() == 3
    assert list(
        selectors.review_queue(concept=concepts["painting"]).values_list("pk", flat=True)
    ) == [painting.pk]
    assert map_prior.pk
    with pytest.raises(ValueError):
        selectors.review_queue(state="deleted")
    with pytest.raises(ValueError):
        selectors.review_queue(concept="unicorn")


def test_the_neighbours_follow_the_queue_order_even_after_a_decision(concepts, curator):
    first = make_item(concepts, "first", {"painting": 0.5})
    second = make_item(concepts, "second", {"painting": 0.6})
    third = make_item(concepts, "third", {"painting": 0.9})

    assert selectors.review_queue_neighbours(item=first) == (None, second.pk)
    assert selectors.review_queue_neighbours(item=second) == (first.pk, third.pk)
    review_record(item=second, curator=curator, action="accept")
    assert selectors.review_queue_neighbours(item=second) == (first.pk, third.pk)
    assert selectors.review_queue_neighbours(item=third) == (first.pk, None)


def test_the_neighbours_agree_with_the_queue_order_through_ties(db):
    # Every combination of the sort keys, with ties on uncertainty, in a shuffled id order.
    keys = [
        (n, consensus, cm, cp, u)
        for n in (0, 2)
        for consensus in ("confident", "uncertain")
        for cm in (False, True)
        for cp in (False, True)
        for u in (0.2, 0.7, 0.7)
    ]
    Item.objects.bulk_create(
        Item(
            external_id=f"t{i}",
            n_classifications=n,
            consensus=consensus if n else "none",
            conflicts_model=cm,
            contradicts_prior=cp,
            uncertainty=u,
        )
        for i, (n, consensus, cm, cp, u) in enumerate(keys[17:] + keys[:17] + keys[5:20])
    )
    order = list(selectors.review_queue(votes="all").values_list("pk", flat=True))
    items = Item.objects.in_bulk(order)
    for position, pk in enumerate(order):
        expected = (
            order[position - 1] if position else None,
            order[position + 1] if position + 1 < len(order) else None,
        )
        assert selectors.review_queue_neighbours(item=items[pk], votes="all") == expected


def test_the_review_context_shows_crowd_prior_and_final_label_per_concept(concepts, curator):
    item = make_item(concepts, "a", {"painting": 0.9, "map": 0.3}, priors=("map",))
    review_record(item=item, curator=curator, action="edit", concepts=["map"], comment="a map")

    with CaptureQueriesContext(connection) as queries:
        context = selectors.item_review_context(item)

    assert len(queries) <= 6
    rows = {row.key: row for row in context.rows}
    assert len(rows) == 20
    assert rows["painting"].posterior == 0.9 and rows["painting"].votes_for == 4
    assert rows["painting"].final is False and rows["map"].final is True
    assert rows["map"].prior is True and rows["painting"].prior is False
    assert rows["toy"].posterior is None
    assert context.final == ["map"]
    assert [(h.curator, h.action, h.before, h.after, h.comment) for h in context.history] == [
        ("cora", "edit", ["painting"], ["map"], "a map")
    ]


# --- the screens ----------------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_the_login_page(client, concepts):
    item = make_item(concepts, "a", {"painting": 0.9})
    for url in (
        reverse("review:queue"),
        reverse("review:item", args=[item.pk]),
        reverse("review:plots"),
        reverse("review:plot", args=["votes"]),
    ):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
    response = client.post(reverse("review:item", args=[item.pk]), {"action": "accept"})
    assert response.status_code == 302
    assert not Review.objects.exists()


@pytest.fixture
def viewer(db, django_user_model):
    """A staff member who may look at items but not decide on them."""
    user = django_user_model.objects.create_user("vera", password="x" * 20, is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="annotate", codename__in=["view_item", "view_review"]
        )
    )
    return user


def test_a_staff_member_without_the_review_permission_may_look_but_not_decide(
    client, viewer, concepts
):
    item = make_item(concepts, "a", {"painting": 0.9})
    client.force_login(viewer)

    page = client.get(reverse("review:item", args=[item.pk]))
    assert page.status_code == 200
    assert b'id="review-accept"' not in page.content
    assert client.get(reverse("review:queue")).status_code == 200

    assert (
        client.post(reverse("review:item", args=[item.pk]), {"action": "accept"}).status_code == 403
    )
    bulk = client.post(reverse("review:bulk_accept"), {"min_confidence": "0.9"})
    assert bulk.status_code == 403
    item.refresh_from_db()
    assert item.review_state == "unreviewed"
    assert not Review.objects.exists()


def test_a_staff_member_without_any_item_permission_sees_nothing(
    client, django_user_model, concepts
):
    item = make_item(concepts, "a", {"painting": 0.9})
    client.force_login(django_user_model.objects.create_user("s", password="x" * 20, is_staff=True))
    assert client.get(reverse("review:queue")).status_code == 403
    assert client.get(reverse("review:item", args=[item.pk])).status_code == 403
    assert client.get(reverse("review:plots")).status_code == 403


def test_a_curator_decides_and_lands_on_the_next_item_in_the_queue(curator_client, concepts):
    first = make_item(concepts, "first", {"painting": 0.55})
    second = make_item(concepts, "second", {"painting": 0.9})

    response = curator_client.post(
        reverse("review:item", args=[first.pk]),
        {"action": "edit", "concepts": ["map", "painting"], "comment": "both"},
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("review:item", args=[second.pk]) + f"?from={first.pk}"
    # k goes back to the item just decided, though it has left the unreviewed queue.
    page = curator_client.get(response["Location"])
    assert page.context["previous_id"] == first.pk
    first.refresh_from_db()
    assert (first.review_state, first.curated_concepts) == ("edited", ["map", "painting"])
    review = Review.objects.get()
    assert (review.action, review.comment) == ("edit", "both")

    last = curator_client.post(reverse("review:item", args=[second.pk]), {"action": "accept"})
    assert last["Location"].startswith(reverse("review:queue"))


def test_ticks_sent_with_accept_are_ignored(curator_client, concepts):
    item = make_item(concepts, "a", {"painting": 0.9})
    curator_client.post(
        reverse("review:item", args=[item.pk]), {"action": "accept", "concepts": ["toy"]}
    )
    item.refresh_from_db()
    assert item.curated_concepts == ["painting"]


def test_a_bad_decision_is_shown_again_with_the_reason(curator_client, concepts):
    item = make_item(concepts, "a", {"painting": 0.9})
    response = curator_client.post(
        reverse("review:item", args=[item.pk]),
        {"action": "edit", "concepts": ["unicorn"], "comment": "keep me"},
    )
    assert response.status_code == 400
    assert b"unknown concept" in response.content
    assert b"keep me" in response.content
    assert not Review.objects.exists()


def test_the_bulk_accept_form_shows_the_count_and_accepts_only_once_confirmed(
    curator_client, concepts
):
    make_item(concepts, "settled", {"painting": 0.99})
    make_item(concepts, "unsure", {"painting": 0.7})
    asked = curator_client.post(reverse("review:bulk_accept"), {"min_confidence": "0.95"})
    assert asked.status_code == 200 and asked.context["count"] == 1
    assert not Item.objects.filter(review_state="accepted").exists()

    response = curator_client.post(
        reverse("review:bulk_accept"), {"min_confidence": "0.95", "confirm": "on"}
    )
    assert response.status_code == 302
    assert list(
        Item.objects.filter(review_state="accepted").values_list("external_id", flat=True)
    ) == ["settled"]


def test_the_bulk_accept_form_needs_a_csrf_token(client, curator, concepts):
    make_item(concepts, "settled", {"painting": 0.99})
    client = type(client)(enforce_csrf_checks=True)
    client.force_login(curator)
    assert client.post(reverse("review:bulk_accept"), {"min_confidence": "0.95"}).status_code == 403
    assert not Review.objects.exists()


def test_the_queue_page_takes_a_bounded_number_of_queries(
    curator_client, concepts, django_assert_max_num_queries
):
    items = [
        make_item(concepts, f"i{i}", {"painting": 0.6, "map": 0.2}, priors=("map",))
        for i in range(60)
    ]
    # With an active model, so the model's tags are on: its version and its predictions are
    # two queries for the whole page, as are the final labels.
    model_version_with_scores(
        {item.pk: {"painting": 0.9, "map": 0.7} for item in items}, concepts=["painting", "map"]
    )
    with django_assert_max_num_queries(12):
        response = curator_client.get(reverse("review:queue"))
    assert response.status_code == 200
    assert response.content.count(b'class="cl-item-link"') == 50
    assert response.content.count(b"cl-tag-model") == 100
    with django_assert_max_num_queries(13):
        assert (
            curator_client.get(reverse("review:queue") + "?concept=map&page=2").status_code == 200
        )


def test_the_item_screen_takes_a_bounded_number_of_queries(
    curator_client, curator, concepts, django_assert_max_num_queries
):
    item = make_item(concepts, "a", {k: 0.6 for k in concepts}, priors=("map", "toy"))
    model_version_with_scores({item.pk: {"map": 0.9}}, concepts=list(concepts))
    for _ in range(10):
        review_record(item=item, curator=curator, action="skip", comment="later")
    # 15 for the page with the model and the votes, and up to four index lookups per neighbour
    # (a lone item tries every tier that can exist).
    with django_assert_max_num_queries(23):
        response = curator_client.get(reverse("review:item", args=[item.pk]))
    assert response.status_code == 200
    assert response.content.count(b"later") == 10


def test_a_title_full_of_html_is_shown_as_text(curator_client, curator, concepts):
    evil = "<img src=x onerror=alert(1)>"
    item = make_item(concepts, "a", {"painting": 0.9}, title=evil, provider=evil)
    review_record(item=item, curator=curator, action="skip", comment=evil)

    for url in (reverse("review:item", args=[item.pk]), reverse("review:queue")):
        response = curator_client.get(url)
        assert evil.encode() not in response.content
        assert b"&lt;img src=x onerror=alert(1)&gt;" in response.content


def test_only_http_images_and_our_media_are_shown(curator_client, concepts):
    item = make_item(concepts, "a", {"painting": 0.9}, image_url="javascript:alert(1)")
    response = curator_client.get(reverse("review:item", args=[item.pk]))
    assert b"javascript:" not in response.content
    assert b"no image" in response.content
    item.image_file = "items/1.jpg"
    item.save()
    response = curator_client.get(reverse("review:item", args=[item.pk]))
    assert b'src="/media/items/1.jpg"' in response.content


def test_every_page_carries_a_content_security_policy(curator_client, concepts):
    item = make_item(concepts, "a", {"painting": 0.9})
    for url in (
        reverse("review:queue"),
        reverse("review:item", args=[item.pk]),
        reverse("admin:index"),
        reverse("admin:annotate_item_changelist"),
    ):
        policy = curator_client.get(url)["Content-Security-Policy"]
        assert "script-src 'self'" in policy
        assert "default-src 'self'" in policy
        assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]


def test_the_admin_index_links_to_the_review_screens(curator_client):
    response = curator_client.get(reverse("admin:index"))
    assert reverse("review:queue").encode() in response.content
    assert reverse("review:plots").encode() in response.content


# --- admin links and actions ----------------------------------------------------------------------


def test_the_admin_bulk_accept_action_accepts_only_the_settled_selected_items(
    curator_client, concepts
):
    settled = make_item(concepts, "settled", {"painting": 0.99})
    unsure = make_item(concepts, "unsure", {"painting": 0.6})
    other = make_item(concepts, "other", {"painting": 0.99})

    response = curator_client.post(
        reverse("admin:annotate_item_changelist"),
        # Confirmed: the action asks first with the count
        # (tests/annotate/test_admin_fit_and_finish.py).
        {"action": "bulk_accept_confident", "_selected_action": [settled.pk, unsure.pk],
         "confirm": "Yes, accept 1 items"},
        follow=True,
    )

    assert response.status_code == 200
    assert b"Accepted the crowd&#x27;s label on 1 items; 1 left" in response.content
    states = dict(Item.objects.values_list("external_id", "review_state"))
    assert states == {"settled": "accepted", "unsure": "unreviewed", "other": "unreviewed"}
    assert other.pk


def test_the_bulk_accept_action_is_not_offered_without_the_review_permission(client, viewer):
    client.force_login(viewer)
    response = client.get(reverse("admin:annotate_item_changelist"))
    assert response.status_code == 200
    assert b"bulk_accept_confident" not in response.content


def test_the_item_list_and_page_link_to_the_review_screens(curator_client, concepts):
    item = make_item(concepts, "a", {"painting": 0.9})
    review_url = reverse("review:item", args=[item.pk]).encode()
    assert review_url in curator_client.get(reverse("admin:annotate_item_changelist")).content
    listing = curator_client.get(reverse("admin:annotate_item_changelist")).content
    assert reverse("review:queue").encode() in listing
    page = curator_client.get(reverse("admin:annotate_item_change", args=[item.pk]))
    assert review_url in page.content


def test_a_volunteer_page_lists_their_latest_classifications_escaped_and_bounded(
    curator_client, concepts, django_assert_max_num_queries
):
    from datetime import UTC, datetime, timedelta

    from annotate.models import Classification, Subject, Volunteer

    workflow = WorkflowFactory(zooniverse_id=1, version=None)
    volunteer = Volunteer.objects.create(key="v", user_name="<b>vol</b>", n_classifications=30)
    for i in range(30):
        item = make_item(concepts, f"<i>{i}</i>", {"painting": 0.9})
        Classification.objects.create(
            zooniverse_id=i + 1,
            workflow=workflow,
            workflow_version="1.1",
            subject=Subject.objects.create(zooniverse_id=100 + i, item=item),
            item=item,
            volunteer=volunteer,
            created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=i),
            concept_ids=[concepts["map"].pk],
        )

    with django_assert_max_num_queries(16):
        page = curator_client.get(reverse("admin:annotate_volunteer_change", args=[volunteer.pk]))

    html = page.content.decode()
    assert page.status_code == 200
    assert "&lt;i&gt;29&lt;/i&gt;" in html and "<i>29</i>" not in html
    assert "&lt;i&gt;9&lt;/i&gt;" not in html  # only the latest 20
    assert html.count("<td>map</td>") == 20
    assert f"?volunteer__id__exact={volunteer.pk}" in html
    everything = curator_client.get(
        reverse("admin:annotate_classification_changelist")
        + f"?volunteer__id__exact={volunteer.pk}"
    )
    assert everything.status_code == 200
