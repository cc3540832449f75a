"""The admin shows rounds and why each item was picked, in a few queries whatever the size."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from annotate.models import Item, Round, RoundPick, Workflow

pytestmark = pytest.mark.django_db

REASONS = ["uncertain", "diverse", "random", "relabel"]


def make_rounds(n_rounds: int, picks_each: int) -> list[Round]:
    workflow, _ = Workflow.objects.get_or_create(zooniverse_id=7)
    start = Round.objects.count()
    rounds = []
    for r in range(start, start + n_rounds):
        round_ = Round.objects.create(
            number=r + 1, name=f"round-{r + 1}", workflow=workflow, strategy="bald",
            random_share=0.15,
        )
        for rank in range(1, picks_each + 1):
            item = Item.objects.create(external_id=f"r{r}-i{rank}")
            RoundPick.objects.create(
                round=round_, item=item, rank=rank, score=1.0 / rank,
                reason=REASONS[rank % len(REASONS)],
            )
        rounds.append(round_)
    return rounds


@pytest.mark.parametrize("model", ["round", "roundpick"])
def test_the_round_and_pick_lists_cost_the_same_queries_for_3_and_for_30_rows(
    model, admin_client, django_assert_max_num_queries
):
    url = reverse(f"admin:annotate_{model}_changelist")
    make_rounds(3, 1)
    with CaptureQueriesContext(connection) as small:
        assert admin_client.get(url).status_code == 200
    make_rounds(27, 1)
    with django_assert_max_num_queries(len(small.captured_queries)):
        assert admin_client.get(url).status_code == 200


def test_the_round_list_shows_strategy_and_the_number_of_picks(admin_client):
    make_rounds(1, 4)
    html = admin_client.get(reverse("admin:annotate_round_changelist")).content.decode()
    assert "bald" in html and '<td class="field-n_picks">4</td>' in html


def test_a_round_page_lists_each_pick_with_rank_reason_and_score_in_a_few_queries(
    admin_client, django_assert_max_num_queries
):
    small, big = make_rounds(1, 3)[0], make_rounds(1, 30)[0]
    with CaptureQueriesContext(connection) as few:
        page = admin_client.get(reverse("admin:annotate_round_change", args=[small.pk]))
        assert page.status_code == 200
    with django_assert_max_num_queries(len(few.captured_queries)):
        page = admin_client.get(reverse("admin:annotate_round_change", args=[big.pk]))
    html = page.content.decode()
    assert "r1-i30" in html and "another vote on a contested item" in html
    assert "0.0333" in html  # the score of rank 30


def test_a_pick_cannot_be_edited_by_hand(admin_client):
    pick = make_rounds(1, 1)[0].picks.get()
    page = admin_client.get(reverse("admin:annotate_roundpick_change", args=[pick.pk]))
    assert page.status_code == 200 and b'name="_save"' not in page.content
