"""The volunteers' admin: skill columns that sort, a filter by exclusion, and excluding (or taking
back) from the list or the volunteer's page, always with a reason, recorded and shown."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from annotate.models import (
    Classification,
    Item,
    Subject,
    Volunteer,
    VolunteerExclusion,
    VolunteerSkill,
)
from tests.factories import WorkflowFactory

pytestmark = pytest.mark.django_db
LIST = reverse("admin:annotate_volunteer_changelist")


def volunteer(key: str, concepts, skills: list[tuple[str, float, float, int]]) -> Volunteer:
    row = Volunteer.objects.create(key=key, user_name=key)
    VolunteerSkill.objects.bulk_create(
        VolunteerSkill(
            volunteer=row, concept=concepts[c], sensitivity=se, specificity=sp, n_votes=n
        )
        for c, se, sp, n in skills
    )
    return row


@pytest.fixture
def crowd(concepts):
    """Three volunteers whose vote-weighted means differ from their plain means."""
    return {
        # (0.9 * 30 + 0.5 * 10) / 40 = 0.8; (0.95 * 30 + 0.75 * 10) / 40 = 0.9
        "careful": volunteer(
            "careful", concepts, [("painting", 0.9, 0.95, 30), ("map", 0.5, 0.75, 10)]
        ),
        # (0.2 * 10 + 0.8 * 30) / 40 = 0.65; 0.5
        "middling": volunteer(
            "middling", concepts, [("painting", 0.2, 0.5, 10), ("map", 0.8, 0.5, 30)]
        ),
        "spammer": volunteer(
            "spammer", concepts, [("painting", 0.5007119767439956, 0.1, 8), ("map", 0.5007, 0.1, 8)]
        ),
        "new": volunteer("new", concepts, []),
    }


@pytest.fixture
def excluder(db, django_user_model):
    """Staff who may read volunteers and exclude them."""
    user = django_user_model.objects.create_user("exa", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="annotate",
            codename__in=["view_volunteer", "add_volunteerexclusion", "view_classification",
                          "view_volunteerskill", "view_volunteerexclusion"],
        )
    )
    return user


@pytest.fixture
def excluder_client(client, excluder):
    client.force_login(excluder)
    return client


def cells(html: str, column: str) -> list[str]:
    import re

    return re.findall(rf'<td class="field-{column}[^"]*">(.*?)</td>', html)


def names(html: str) -> list[str]:
    import re

    return re.findall(r'<th class="field-name_short"><a [^>]*>(.*?)</a></th>', html)


def test_the_list_shows_vote_weighted_skills_rounded_and_the_votes_counted(admin_client, crowd):
    html = admin_client.get(LIST, {"o": "1"}).content.decode()  # by volunteer key

    assert names(html) == ["careful", "middling", "new", "spammer"]
    assert cells(html, "sensitivity") == ["0.800", "0.650", "–", "0.501"]
    assert cells(html, "specificity") == ["0.900", "0.500", "–", "0.100"]
    assert cells(html, "votes") == ["30", "30", "–", "8"]
    assert "0.5007119767439956" not in html


def test_the_list_sorts_by_skill_either_way_with_volunteers_without_skills_last(
    admin_client, crowd
):
    # The admin numbers columns from the action checkbox: 1 name, 2 excluded, 3 and 4 skills.
    sensitivity, specificity = 3, 4

    assert names(admin_client.get(LIST, {"o": f"{sensitivity}"}).content.decode()) == [
        "spammer", "middling", "careful", "new"
    ]
    assert names(admin_client.get(LIST, {"o": f"-{sensitivity}"}).content.decode()) == [
        "careful", "middling", "spammer", "new"
    ]
    assert names(admin_client.get(LIST, {"o": f"-{specificity}"}).content.decode()) == [
        "careful", "middling", "spammer", "new"
    ]


def test_the_list_costs_the_same_queries_for_3_and_for_30_volunteers(
    admin_client, concepts, django_assert_max_num_queries
):
    for i in range(3):
        volunteer(f"v{i}", concepts, [("painting", 0.8, 0.9, 5), ("map", 0.7, 0.6, 5)])
    with CaptureQueriesContext(connection) as small:
        assert admin_client.get(LIST).status_code == 200
    for i in range(3, 30):
        volunteer(f"v{i}", concepts, [("painting", 0.8, 0.9, 5), ("map", 0.7, 0.6, 5)])
    with django_assert_max_num_queries(len(small.captured_queries)):
        page = admin_client.get(LIST, {"o": "-3"})  # sorted by sensitivity, too
    assert page.status_code == 200 and len(names(page.content.decode())) == 30


def test_the_list_filters_by_exclusion(admin_client, crowd):
    Volunteer.objects.filter(key="spammer").update(excluded=True)

    excluded = admin_client.get(LIST, {"excluded__exact": "1"}).content.decode()
    counted = admin_client.get(LIST, {"excluded__exact": "0"}).content.decode()

    assert names(excluded) == ["spammer"]
    assert "spammer" not in names(counted) and len(names(counted)) == 3


def test_the_exclude_action_asks_for_a_reason_first(excluder_client, crowd):
    spammer = crowd["spammer"]

    page = excluder_client.post(
        LIST, {"action": "exclude_from_aggregation", "_selected_action": [spammer.pk]}
    )

    assert page.status_code == 200
    html = page.content.decode()
    assert "Exclude this volunteer from aggregation?" in html
    assert 'name="reason"' in html and 'value="Exclude 1 volunteer"' in html
    assert f'name="_selected_action" value="{spammer.pk}"' in html
    assert not Volunteer.objects.get(pk=spammer.pk).excluded

    blank = excluder_client.post(
        LIST,
        {"action": "exclude_from_aggregation", "_selected_action": [spammer.pk],
         "confirm": "Exclude 1 volunteer", "reason": ""},
    )
    assert blank.status_code == 200 and "This field is required" in blank.content.decode()
    assert not VolunteerExclusion.objects.exists()


def test_the_exclude_action_records_the_reason_and_take_back_reverses_it(
    excluder_client, excluder, crowd
):
    spammer, careful = crowd["spammer"], crowd["careful"]
    done = excluder_client.post(
        LIST,
        {"action": "exclude_from_aggregation", "_selected_action": [spammer.pk, careful.pk],
         "confirm": "Exclude 2 volunteers", "reason": "ticks every concept"},
    )
    assert done.status_code == 302
    assert set(Volunteer.objects.filter(excluded=True).values_list("key", flat=True)) == {
        "spammer", "careful"
    }
    assert list(VolunteerExclusion.objects.order_by().values_list("by", "reason").distinct()) == [
        (excluder.pk, "ticks every concept")
    ]
    assert "2 volunteers excluded from aggregation" in excluder_client.get(
        done["Location"]
    ).content.decode()

    # Taking back only the ones that are excluded: the page lists them.
    page = excluder_client.post(
        LIST, {"action": "take_back", "_selected_action": [careful.pk, crowd["new"].pk]}
    ).content.decode()
    assert "Take this volunteer back?" in page and "careful" in page
    excluder_client.post(
        LIST,
        {"action": "take_back", "_selected_action": [careful.pk, crowd["new"].pk],
         "confirm": "Take back 1 volunteer", "reason": "a careful volunteer after all"},
    )
    assert list(Volunteer.objects.filter(excluded=True).values_list("key", flat=True)) == [
        "spammer"
    ]
    assert VolunteerExclusion.objects.count() == 3


def test_a_viewer_sees_no_exclusion_action_or_button(client, django_user_model, crowd):
    viewer = django_user_model.objects.create_user("vic", is_staff=True)
    viewer.user_permissions.set(
        Permission.objects.filter(content_type__app_label="annotate", codename="view_volunteer")
    )
    client.force_login(viewer)
    spammer = crowd["spammer"]

    listing = client.get(LIST).content.decode()
    page = client.get(reverse("admin:annotate_volunteer_change", args=[spammer.pk])).content
    exclusion = reverse("admin:annotate_volunteer_exclusion", args=[spammer.pk])

    assert "exclude_from_aggregation" not in listing
    assert exclusion.encode() not in page
    assert client.post(exclusion, {"reason": "no"}).status_code == 403
    assert not VolunteerExclusion.objects.exists()


def test_the_volunteers_page_has_the_button_the_history_and_their_classifications(
    excluder_client, excluder, crowd
):
    spammer = crowd["spammer"]
    workflow = WorkflowFactory(zooniverse_id=3, version=None)
    item = Item.objects.create(external_id="it-1")
    subject = Subject.objects.create(zooniverse_id=9, item=item)
    Classification.objects.create(
        zooniverse_id=77, workflow=workflow, subject=subject, item=item, volunteer=spammer,
        created_at=datetime(2026, 1, 1, tzinfo=UTC), concept_ids=[],
    )
    page_url = reverse("admin:annotate_volunteer_change", args=[spammer.pk])
    exclusion = reverse("admin:annotate_volunteer_exclusion", args=[spammer.pk])

    page = excluder_client.get(page_url).content.decode()
    assert f'href="{exclusion}"' in page and "Exclude from aggregation" in page
    classifications = reverse("admin:annotate_classification_changelist")
    assert f'href="{classifications}?volunteer__id__exact={spammer.pk}"' in page
    assert f'href="{reverse("review:queue")}?volunteer={spammer.pk}&amp;state=all"' in page
    assert "sensitivity 0.501 · specificity 0.100" in page

    form = excluder_client.get(exclusion).content.decode()
    assert "Exclude this volunteer from aggregation?" in form and 'name="reason"' in form
    done = excluder_client.post(exclusion, {"reason": "all ticks", "confirm": "x"})
    assert done.status_code == 302 and done["Location"] == page_url

    page = excluder_client.get(page_url).content.decode()
    assert "history of exclusions from aggregation" in page.lower()
    assert "all ticks" in page and "excluded" in page and excluder.username in page
    assert "Take back into aggregation" in page

    excluder_client.post(exclusion, {"reason": "appeal upheld", "confirm": "x"})
    assert list(
        VolunteerExclusion.objects.order_by("pk").values_list("excluded", "reason")
    ) == [(True, "all ticks"), (False, "appeal upheld")]
    listing = excluder_client.get(
        classifications, {"volunteer__id__exact": spammer.pk}
    ).content.decode()
    assert "77" in listing
