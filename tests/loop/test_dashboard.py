"""The dashboard: renders empty and full, in a bounded number of queries, for curators only."""

from __future__ import annotations

import io
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from PIL import Image

from annotate import plots, selectors
from annotate.models import (
    AggregatedLabel,
    Classification,
    DatasetRelease,
    Item,
    Round,
    Subject,
    Volunteer,
    VolunteerSkill,
)
from loop import dashboard, dashboard_plots
from loop.models import LoopEvent, StepName
from loop.services.pipeline import event_record
from tests.factories import WorkflowFactory
from training.models import ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Measured at 33 (session, user, permissions, 14 dashboard reads, 15 of the loop panel's one
# ``loop_status()`` call); the bound leaves room for the admin's own context to grow a little,
# never for a query per row, event or step.
MAX_QUERIES = 37


def decoded(png: bytes) -> Image.Image:
    assert png.startswith(PNG_MAGIC)
    image = Image.open(io.BytesIO(png), formats=["PNG"])
    image.load()
    return image


def populate(concepts, *, scale: int = 1) -> None:
    """A small loop: rounds, subjects, votes on several days, labels, skills, reviews, models."""
    keys = list(concepts)[:5]
    workflow = WorkflowFactory(zooniverse_id=1, display_name="wf", version=None)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    volunteers = [Volunteer.objects.create(key=f"v{v}") for v in range(4 * scale)]
    cid = 0
    for r in range(2):
        round_ = Round.objects.create(number=r + 1, name=f"round {r + 1}", workflow=workflow)
        for i in range(10 * scale):
            n = r * 10 * scale + i
            item = Item.objects.create(external_id=f"i{n}", n_classifications=3)
            subject = Subject.objects.create(
                zooniverse_id=1000 + n,
                item=item,
                round=round_,
                retired_at=start if i % 3 == 0 else None,
            )
            for k, key in enumerate(keys):
                AggregatedLabel.objects.create(
                    item=item,
                    concept=concepts[key],
                    posterior=((n + k) % 10) / 9,
                    votes_for=1,
                    votes_against=2,
                    method="test",
                )
            for v in range(3):
                cid += 1
                Classification.objects.create(
                    zooniverse_id=cid,
                    workflow=workflow,
                    workflow_version="1.1",
                    subject=subject,
                    item=item,
                    volunteer=volunteers[(n + v) % len(volunteers)],
                    created_at=start + timedelta(days=n % 4, hours=v),
                    concept_ids=[concepts[keys[v]].pk],
                    is_duplicate=v == 2 and n % 5 == 0,
                )
    for volunteer in volunteers:
        VolunteerSkill.objects.bulk_create(
            VolunteerSkill(
                volunteer=volunteer,
                concept=concepts[key],
                sensitivity=0.8,
                specificity=0.9,
                n_votes=3,
            )
            for key in keys
        )
    Item.objects.filter(external_id="i0").update(
        review_state="edited", curated_concepts=[keys[0], keys[1]]
    )
    Item.objects.filter(external_id="i1").update(review_state="accepted", curated_concepts=[])
    Item.objects.filter(external_id="i2").update(review_state="rejected")
    # The third version had no positive in validation: training stores no mAP (JSON has no NaN).
    for version, val_map in enumerate([0.41, 0.55, None], start=1):
        ModelVersion.objects.create(
            backbone="small_cnn",
            checkpoint_path=f"models/v{version}.json",
            checkpoint_sha256="0" * 64,
            val_map=val_map,
            metrics={"map": val_map, "micro_f1": 0.5},
            status="active" if version == 2 else "candidate",
            n_train=80,
            n_val=20,
        )
    DatasetRelease.objects.create(
        version=1,
        status=DatasetRelease.Status.SUCCEEDED,
        formats=["csv", "jsonl"],
        n_items=19 * scale,
        counts={keys[0]: 7},
        split_counts={"train": 15, "val": 4},
        content_hash="ab" * 32,
    )


# --- access ---------------------------------------------------------------------------------------


def test_an_anonymous_visitor_is_sent_to_the_login_page(client):
    for url in (reverse("loop:dashboard"), reverse("loop:dashboard_plot", args=["labels"])):
        response = client.get(url)
        assert response.status_code == 302
        assert reverse("admin:login") in response["Location"]


def test_a_staff_member_without_the_view_permission_gets_403(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("s", password="x" * 20, is_staff=True))
    assert client.get(reverse("loop:dashboard")).status_code == 403
    for name in dashboard_plots.DASHBOARD_PLOTS:
        assert client.get(reverse("loop:dashboard_plot", args=[name])).status_code == 403


def test_the_admin_index_links_to_the_dashboard_for_curators(curator_client):
    page = curator_client.get(reverse("admin:index"))
    assert page.status_code == 200
    assert reverse("loop:dashboard").encode() in page.content
    assert b'id="crowdloop-box"' in page.content


# --- the page -------------------------------------------------------------------------------------


def test_the_dashboard_renders_on_an_empty_database(curator_client):
    page = curator_client.get(reverse("loop:dashboard"))
    assert page.status_code == 200
    assert b'id="dash-no-model"' in page.content
    assert b'id="dash-no-release"' in page.content
    assert b"No round yet." in page.content
    assert b"<script>" not in page.content  # the CSP would block it anyway


def test_the_dashboard_renders_a_loop_with_data(curator_client, concepts):
    populate(concepts)
    page = curator_client.get(reverse("loop:dashboard"))
    assert page.status_code == 200
    html = page.content.decode()
    for section in ("dash-rounds", "dash-concepts", "dash-skills", "dash-models"):
        assert f'id="{section}"' in html
    assert "round 2" in html and "round 1" in html
    assert "Latest release: version 1" in html
    release = DatasetRelease.objects.get(version=1)  # ids are not reset between tests on PostgreSQL
    assert reverse("api:release-download", args=[release.pk, "csv"]) in html
    assert "0.550" in html  # the active model's mAP in the table
    for name in dashboard_plots.DASHBOARD_PLOTS:
        assert reverse("loop:dashboard_plot", args=[name]) in html


@pytest.mark.parametrize("scale", [1, 4])
def test_the_dashboard_takes_a_bounded_number_of_queries_whatever_the_data(
    curator_client, concepts, django_assert_max_num_queries, scale
):
    populate(concepts, scale=scale)
    with django_assert_max_num_queries(MAX_QUERIES):
        assert curator_client.get(reverse("loop:dashboard")).status_code == 200


# --- the loop panel -------------------------------------------------------------------------------


def record_loop_events(n: int = 1) -> None:
    """``n`` rounds of pull, aggregate and a failed retirement, as the pipeline logs them."""
    for k in range(n):
        event_record(
            step=StepName.PULL,
            status=LoopEvent.Status.DONE,
            summary=f"{7 + k} new votes",
            detail={"votes": 7 + k},
        )
        event_record(
            step=StepName.AGGREGATE, status=LoopEvent.Status.NOTHING, summary="no new votes"
        )
        event_record(
            step=StepName.RETIRE,
            status=LoopEvent.Status.FAILED,
            summary="retirement failed",
            error="PanoptesAPIException: 503 from upstream",
        )


def test_the_dashboard_shows_the_loop_panel_with_each_steps_waiting_text_and_a_failed_reason(
    curator_client, settings
):
    settings.TRAIN_AFTER_NEW_LABELS = 40
    settings.AUTO_ROUNDS = False
    record_loop_events()
    page = curator_client.get(reverse("loop:dashboard"))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="loop-panel"' in html
    # The panel comes first, above the existing sections, and refreshes from its own static file.
    assert html.index('id="loop-panel"') < html.index('id="dash-loop"')
    assert "loop/dashboard.js" in html and 'data-api="/api/v1/loop/?events=10"' in html
    assert 'href="/api/v1/loop/">as JSON</a>' in html
    for step in ("pull", "aggregate", "retire", "train", "round"):
        assert f'data-step="{step}"' in html
    assert "retrain after 40 more labels (0 of 40)" in html
    assert "AUTO_ROUNDS is off: staff choose the next round" in html
    assert "every vote is aggregated" in html
    assert "7 new votes" in html
    assert 'class="cl-badge cl-badge-done">done<' in html
    assert 'class="cl-badge cl-badge-nothing">nothing to do<' in html
    assert 'class="cl-badge cl-badge-failed">failed<' in html
    # The failure's reason, in red, in the failures list and the events table.
    assert html.count("PanoptesAPIException: 503 from upstream") >= 2
    failures = html[html.index('id="loop-failures"') : html.index('id="loop-events"')]
    assert '<li class="cl-error">' in failures and "503 from upstream" in failures
    assert "7 votes pulled" in html
    assert "0 s ago" in html and " UTC" in html  # relative time, the exact one in a title
    # The curator persona may not open training runs: no run link is offered.
    assert 'data-run-url=""' in html


def test_the_latest_training_run_links_to_its_page_for_users_who_may_open_it(client, people):
    run = TrainingRun.objects.create(
        status=TrainingRun.Status.FAILED, progress=0.4, error="CUDA out of memory"
    )
    staff = people["staff"]
    staff.is_staff = True
    staff.save(update_fields=["is_staff"])
    client.force_login(staff)
    html = client.get(reverse("loop:dashboard")).content.decode()
    panel = html[html.index('id="loop-training"') : html.index('id="loop-failures"')]
    assert f'href="/admin/training/trainingrun/{run.pk}/change/"' in panel
    assert 'value="40"' in panel and "CUDA out of memory" in panel
    assert 'data-run-url="/admin/training/trainingrun/__id__/change/"' in html


def test_a_fresh_loop_renders_its_panel_with_nothing_run_yet(curator_client):
    html = curator_client.get(reverse("loop:dashboard")).content.decode()
    assert "No event yet: the loop has not run." in html
    assert "No training run yet." in html and "None recorded." in html


@pytest.mark.parametrize("rounds", [1, 10])
def test_the_dashboard_takes_a_bounded_number_of_queries_with_loop_events(
    curator_client, concepts, django_assert_max_num_queries, rounds
):
    populate(concepts)
    record_loop_events(rounds)
    TrainingRun.objects.create(status=TrainingRun.Status.RUNNING, progress=0.5)
    with django_assert_max_num_queries(MAX_QUERIES):
        assert curator_client.get(reverse("loop:dashboard")).status_code == 200


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s ago"),
        (59.9, "59 s ago"),
        (60, "1 min ago"),
        (3599, "59 min ago"),
        (7200, "2 h ago"),
        (3 * 86400, "3 d ago"),
        (-5, "0 s ago"),
    ],
)
def test_times_read_in_whole_units_ago(seconds, text):
    assert dashboard.time_ago(seconds) == text


# --- the plots ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", dashboard_plots.DASHBOARD_PLOTS)
def test_each_plot_is_an_uncached_png_on_an_empty_database(curator_client, name):
    response = curator_client.get(reverse("loop:dashboard_plot", args=[name]))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["Cache-Control"] == "no-store"
    image = decoded(response.content)
    assert image.width > 200 and image.height > 200


@pytest.mark.parametrize("name", dashboard_plots.DASHBOARD_PLOTS)
def test_each_plot_is_a_png_with_data_in_bounded_queries(
    curator_client, concepts, django_assert_max_num_queries, name
):
    populate(concepts, scale=2)
    with django_assert_max_num_queries(12):
        response = curator_client.get(reverse("loop:dashboard_plot", args=[name]))
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    decoded(response.content)


def test_an_unknown_plot_is_not_found(curator_client):
    assert curator_client.get("/review/dashboard/nothing.png").status_code == 404
    with pytest.raises(ValueError, match="unknown plot"):
        plots.plot_png("../../etc/passwd", board="dashboard")


# --- the numbers ----------------------------------------------------------------------------------


def test_label_counts_follow_the_final_label_contract(concepts):
    populate(concepts)
    stats = dashboard.label_stats()
    expected = Counter(
        key for keys in selectors.item_final_labels(Item.objects.all()).values() for key in keys
    )
    assert {c.key: c.final_positive for c in stats.concepts if c.final_positive} == dict(expected)
    assert stats.rejected == 1
    assert stats.items_in_dataset == Item.objects.count() - 1
    first = stats.concepts[0]
    assert first.from_curators == 1


def test_agreement_is_the_mean_distance_from_a_coin_toss(concepts):
    populate(concepts)
    stats = {c.key: c for c in dashboard.label_stats(confidence=0.9).concepts}
    for key, concept_stats in stats.items():
        posteriors = list(
            AggregatedLabel.objects.filter(concept__key=key).values_list("posterior", flat=True)
        )
        if not posteriors:
            assert concept_stats.agreement is None and concept_stats.labelled == 0
            continue
        mean = sum(abs(2 * p - 1) for p in posteriors) / len(posteriors)
        assert concept_stats.agreement == pytest.approx(mean)
        assert concept_stats.settled == sum(p >= 0.9 or p <= 0.1 + 1e-12 for p in posteriors)


def test_the_loop_counts_add_up(concepts):
    populate(concepts)
    daily = dashboard.classifications_per_day()
    assert daily.total == Classification.objects.count() == int(daily.counts.sum())
    assert daily.counted == Classification.objects.filter(is_duplicate=False).count()
    assert len(daily.days) == 4

    states = dashboard.item_states()
    assert states.total == Item.objects.count()
    assert dict(states.review)["rejected"] == 1

    retirement = dashboard.retirement_counts()
    assert retirement.subjects == retirement.retired + retirement.open + retirement.deleted
    assert retirement.retired == Subject.objects.filter(retired_at__isnull=False).count()

    rounds, n_rounds = dashboard.rounds_recent()
    assert n_rounds == 2 and [r.number for r in rounds] == [2, 1]
    assert all(r.subjects == r.items == 10 for r in rounds)


def test_the_learning_curve_is_oldest_first_with_missing_maps_as_none(concepts):
    populate(concepts)
    points = dashboard.model_versions_curve()
    assert [p.val_map for p in points] == [0.41, 0.55, None]
    assert points[1].status == "active"


def test_the_dashboard_links_what_waits_for_a_curator_to_the_filtered_queue(
    curator_client, concepts
):
    from tests.factories import item_with_labels

    item_with_labels(concepts, "unsure", {"painting": 0.6})
    item_with_labels(
        concepts, "model", {"painting": 0.99}, conflicts_model=True, consensus="confident"
    )

    page = curator_client.get(reverse("loop:dashboard")).content.decode()

    table = page[page.index('id="dash-to-review"') :]
    table = table[: table.index("</table>")]
    assert f'href="{reverse("review:queue")}?flag=model">model against a confident crowd' in table
    assert f'href="{reverse("review:queue")}?consensus=uncertain">undecided crowd' in table
    queue = curator_client.get(reverse("review:queue") + "?flag=model").content.decode()
    assert ">model</a>" in queue and ">unsure</a>" not in queue
