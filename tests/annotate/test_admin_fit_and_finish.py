"""Admin fit and finish: numbers rounded for reading, an item's identity read-only, rounds made
only by the round service, a favicon, and bulk accept asking first with the count."""

from __future__ import annotations

import pytest
from django.contrib.staticfiles import finders
from django.urls import reverse

from annotate.models import Item, Review, Round, RoundPick, VolunteerSkill
from tests.factories import WorkflowFactory, item_with_labels

pytestmark = pytest.mark.django_db

LONG = 0.5007119767439956


# --- numbers --------------------------------------------------------------------------------------


def test_the_item_list_and_page_round_posteriors_and_uncertainty(admin_client, concepts):
    item = item_with_labels(concepts, "x-1", {"painting": LONG, "map": 0.98765432})

    listing = admin_client.get(reverse("admin:annotate_item_changelist")).content.decode()
    page = admin_client.get(reverse("admin:annotate_item_change", args=[item.pk])).content.decode()

    assert str(LONG) not in listing and str(LONG) not in page
    assert '<td class="field-uncertainty_rounded">1.00</td>' in listing
    assert "0.501" in page and "0.988" in page and "0.98765432" not in page
    assert str(item.uncertainty) not in page


def test_the_label_and_skill_lists_round_their_numbers(admin_client, concepts):
    item = item_with_labels(concepts, "x-1", {"painting": LONG})
    from annotate.models import Volunteer

    volunteer = Volunteer.objects.create(key="v1")
    VolunteerSkill.objects.create(
        volunteer=volunteer, concept=concepts["map"], sensitivity=LONG, specificity=0.123456789,
        n_votes=4,
    )
    pages = [
        admin_client.get(reverse("admin:annotate_aggregatedlabel_changelist")),
        admin_client.get(reverse("admin:annotate_volunteerskill_changelist")),
        admin_client.get(reverse("admin:annotate_volunteer_change", args=[volunteer.pk])),
        admin_client.get(
            reverse("admin:annotate_aggregatedlabel_change",
                    args=[item.aggregated_labels.get().pk])
        ),
    ]
    for page in pages:
        html = page.content.decode()
        assert page.status_code == 200
        assert str(LONG) not in html and "0.123456789" not in html
        assert "0.501" in html


# --- an item's identity -------------------------------------------------------------------------


def test_an_items_external_id_and_image_url_are_read_only_for_everyone(
    admin_client, curator_client
):
    item = Item.objects.create(external_id="eu-1", image_url="https://example.org/1.jpg", title="t")
    url = reverse("admin:annotate_item_change", args=[item.pk])

    for client in (admin_client, curator_client):
        html = client.get(url).content.decode()
        assert 'name="external_id"' not in html and 'name="image_url"' not in html
        assert "eu-1" in html and "https://example.org/1.jpg" in html
        assert 'name="title"' in html

    admin_client.post(
        url,
        {"external_id": "eu-2", "image_url": "https://evil.example/x.jpg", "title": "new title",
         "image_state": "pending", "metadata": "{}",
         "prior_labels-TOTAL_FORMS": "0", "prior_labels-INITIAL_FORMS": "0",
         "aggregated_labels-TOTAL_FORMS": "0", "aggregated_labels-INITIAL_FORMS": "0"},
    )
    item.refresh_from_db()
    assert (item.external_id, item.image_url, item.title) == (
        "eu-1", "https://example.org/1.jpg", "new title"
    )


def test_the_add_form_still_sets_the_identity(admin_client):
    add = reverse("admin:annotate_item_add")
    html = admin_client.get(add).content.decode()
    assert 'name="external_id"' in html and 'name="image_url"' in html

    admin_client.post(
        add,
        {"external_id": "new-1", "image_url": "https://example.org/n.jpg", "title": "",
         "image_state": "pending", "metadata": "{}",
         "prior_labels-TOTAL_FORMS": "0", "prior_labels-INITIAL_FORMS": "0",
         "aggregated_labels-TOTAL_FORMS": "0", "aggregated_labels-INITIAL_FORMS": "0"},
    )
    assert Item.objects.filter(external_id="new-1", image_url="https://example.org/n.jpg").exists()


# --- rounds ---------------------------------------------------------------------------------------


def test_rounds_cannot_be_added_in_the_admin_and_their_status_is_read_only(admin_client):
    workflow = WorkflowFactory(zooniverse_id=7)
    round_ = Round.objects.create(number=1, name="round-1", workflow=workflow, strategy="entropy",
                                  random_share=0.15000000001)
    RoundPick.objects.create(round=round_, item=Item.objects.create(external_id="i"), rank=1,
                             score=0.123456789, reason="uncertain")

    listing = admin_client.get(reverse("admin:annotate_round_changelist")).content.decode()
    assert reverse("admin:annotate_round_add") not in listing
    assert admin_client.get(reverse("admin:annotate_round_add")).status_code == 403
    assert "0.15" in listing and "0.15000000001" not in listing

    url = reverse("admin:annotate_round_change", args=[round_.pk])
    page = admin_client.get(url).content.decode()
    assert 'name="status"' not in page and 'name="number"' not in page
    assert 'name="name"' in page and 'name="notes"' in page
    assert "0.1235" in page and "0.123456789" not in page

    admin_client.post(url, {"name": "renamed", "notes": "checked", "status": "closed",
                            "number": "9", "picks-TOTAL_FORMS": "0",
                            "picks-INITIAL_FORMS": "0"})
    round_.refresh_from_db()
    assert (round_.name, round_.notes, round_.status, round_.number) == (
        "renamed", "checked", "draft", 1
    )


# --- favicon --------------------------------------------------------------------------------------


def test_the_admin_names_a_favicon_and_favicon_ico_is_not_a_404(admin_client, client):
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert '<link rel="icon" href="/static/annotate/favicon.svg"' in html
    assert finders.find("annotate/favicon.svg") and finders.find("annotate/favicon.ico")

    answer = client.get("/favicon.ico")
    assert answer.status_code == 302 and answer["Location"] == "/static/annotate/favicon.ico"
    login = client.get(reverse("admin:login")).content.decode()
    assert 'rel="icon"' in login


# --- bulk accept ----------------------------------------------------------------------------------


def test_bulk_accept_shows_the_count_and_asks_before_accepting(curator_client, concepts):
    settled = [item_with_labels(concepts, f"s{i}", {"painting": 0.99}) for i in range(3)]
    unsure = item_with_labels(concepts, "u", {"painting": 0.6})
    selected = [i.pk for i in [*settled, unsure]]
    listing = reverse("admin:annotate_item_changelist")

    page = curator_client.post(
        listing, {"action": "bulk_accept_confident", "_selected_action": selected}
    )

    assert page.status_code == 200
    html = page.content.decode()
    assert "accepts the crowd&#x27;s label on 3 of the 4 selected items" in html
    assert 'value="Yes, accept 3 items"' in html
    assert not Review.objects.exists()
    assert set(Item.objects.values_list("review_state", flat=True)) == {"unreviewed"}

    done = curator_client.post(
        listing,
        {"action": "bulk_accept_confident", "_selected_action": selected,
         "confirm": "Yes, accept 3 items"},
    )

    assert done.status_code == 302
    assert Review.objects.count() == 3
    assert Item.objects.get(pk=unsure.pk).review_state == "unreviewed"


def test_bulk_accept_over_every_filtered_item_asks_with_the_filtered_count(
    curator_client, concepts
):
    for i in range(4):
        item_with_labels(concepts, f"s{i}", {"painting": 0.99}, consensus="confident")
    item_with_labels(concepts, "other", {"painting": 0.99}, consensus="uncertain")
    first = Item.objects.order_by("pk").first()
    listing = reverse("admin:annotate_item_changelist") + "?consensus__exact=confident"

    page = curator_client.post(
        listing,
        {"action": "bulk_accept_confident", "_selected_action": [first.pk], "select_across": "1"},
    ).content.decode()
    assert "on 4 of the 4 selected items" in page
    assert 'name="select_across" value="1"' in page

    curator_client.post(
        listing,
        {"action": "bulk_accept_confident", "_selected_action": [first.pk], "select_across": "1",
         "confirm": "Yes, accept 4 items"},
    )
    assert Review.objects.count() == 4
    assert Item.objects.get(external_id="other").review_state == "unreviewed"


def test_bulk_accept_with_nothing_to_accept_says_so_without_asking(curator_client, concepts):
    unsure = item_with_labels(concepts, "u", {"painting": 0.6})

    done = curator_client.post(
        reverse("admin:annotate_item_changelist"),
        {"action": "bulk_accept_confident", "_selected_action": [unsure.pk]},
    )

    assert done.status_code == 302
    assert "None of the 1 selected items" in curator_client.get(done["Location"]).content.decode()
