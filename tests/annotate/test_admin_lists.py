"""Every admin list renders for a curator in a bounded number of queries, whatever the row count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from annotate.models import (
    AggregatedLabel,
    Classification,
    ImportReport,
    Item,
    PriorLabel,
    QuarantinedRow,
    Review,
    Round,
    Subject,
    Volunteer,
    VolunteerSkill,
    Workflow,
)

pytestmark = pytest.mark.django_db


def populate(concepts, n: int, admin_user) -> None:
    workflow, _ = Workflow.objects.get_or_create(zooniverse_id=7)
    round_ = Round.objects.get_or_create(
        number=1, defaults={"name": "round-1", "workflow": workflow}
    )[0]
    start = Item.objects.count()
    report = ImportReport.objects.create(kind="items")
    keys = list(concepts)
    for i in range(start, start + n):
        item = Item.objects.create(external_id=f"it-{i}", image_url=f"https://example.org/{i}.jpg")
        PriorLabel.objects.create(item=item, concept=concepts[keys[i % 20]])
        subject = Subject.objects.create(zooniverse_id=1000 + i, item=item, round=round_)
        volunteer = Volunteer.objects.create(key=f"user:{i}", user_name=f"v{i}")
        Classification.objects.create(
            zooniverse_id=5000 + i,
            workflow=workflow,
            workflow_version="1.1",
            subject=subject,
            item=item,
            volunteer=volunteer,
            created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(i),
            concept_ids=[concepts[keys[i % 20]].id, concepts[keys[(i + 1) % 20]].id],
        )
        AggregatedLabel.objects.create(
            item=item, concept=concepts[keys[i % 20]], posterior=0.9, method="ds"
        )
        VolunteerSkill.objects.create(
            volunteer=volunteer, concept=concepts[keys[0]], sensitivity=0.8, specificity=0.9
        )
        QuarantinedRow.objects.create(report=report, line=i, reason="bad")
        Review.objects.create(item=item, curator=admin_user, action="accept", after=[keys[0]])


LISTS = [
    "item",
    "concept",
    "workflow",
    "round",
    "subject",
    "volunteer",
    "classification",
    "synccursor",
    "importreport",
    "quarantinedrow",
    "aggregatedlabel",
    "volunteerskill",
    "review",
]


@pytest.mark.parametrize("model", LISTS)
def test_an_admin_list_costs_the_same_queries_for_3_and_for_30_rows(
    model, concepts, admin_client, admin_user, django_assert_max_num_queries
):
    url = reverse(f"admin:annotate_{model}_changelist")
    populate(concepts, 3, admin_user)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as small:
        assert admin_client.get(url).status_code == 200
    populate(concepts, 27, admin_user)
    with django_assert_max_num_queries(len(small.captured_queries)):
        assert admin_client.get(url).status_code == 200


def test_the_item_list_shows_thumbnails_and_escapes_titles(concepts, admin_client, settings):
    settings.IMAGE_HOSTS = ("example.org",)  # remote images shown from their source
    Item.objects.create(
        external_id="x-1",
        image_url="https://example.org/x.jpg",
        title="<img src=x onerror=alert(1)>",
    )
    Item.objects.create(external_id="x-2", thumbnail="thumbs/ab/abc.jpg")
    Item.objects.create(external_id="x-3", image_url="", image_state="corrupt")
    html = admin_client.get(reverse("admin:annotate_item_changelist")).content.decode()
    assert 'src="https://example.org/x.jpg"' in html
    assert 'src="/media/thumbs/ab/abc.jpg"' in html
    assert "no image" in html
    assert "<img src=x onerror" not in html and "&lt;img src=x onerror" in html


def test_the_item_page_shows_the_image_large_with_its_labels(concepts, admin_client):
    item = Item.objects.create(
        external_id="x-1", image_file="items/ab/abc.png", thumbnail="thumbs/ab/abc.jpg"
    )
    PriorLabel.objects.create(item=item, concept=concepts["map"])
    AggregatedLabel.objects.create(
        item=item, concept=concepts["map"], posterior=0.97, votes_for=4, method="ds"
    )
    html = admin_client.get(reverse("admin:annotate_item_change", args=[item.pk])).content.decode()
    assert 'src="/media/items/ab/abc.png"' in html
    assert "0.97" in html


def test_a_curator_sees_items_but_cannot_edit_the_audit(curator_client, concepts, admin_user):
    item = Item.objects.create(external_id="x-1")
    review = Review.objects.create(item=item, curator=admin_user, action="accept")
    assert curator_client.get(reverse("admin:annotate_item_changelist")).status_code == 200
    page = curator_client.get(reverse("admin:annotate_review_change", args=[review.pk]))
    assert page.status_code == 200 and b"Save" not in page.content
    assert (
        curator_client.post(reverse("admin:annotate_review_delete", args=[review.pk])).status_code
        == 403
    )
