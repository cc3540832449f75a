"""Staff run the loop in a real headless Chromium: retrain, watch the run, read the dashboard.

The curator's part of the flow (log in, review three items, see the audit) is
``test_review_browser.py``; the live redraw of a run page while a worker reports epochs is
``tests/training/test_progress_browser.py``. This test joins them up from the staff side: on a
project that has run two rounds, staff press "Retrain now", follow the run to its end, and open
the dashboard, whose plots must all load and whose learning curve and latest release must show
the new model version and the release. Celery is eager here, so the run trains (on tiny digit
mosaics) inside the button's request.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from annotate.models import (
    Classification,
    Concept,
    DatasetRelease,
    Item,
    Round,
    Subject,
    Volunteer,
    VolunteerSkill,
)
from tests.browser import BROWSER_MARKS, browser_errors  # noqa: E402
from tests.factories import WorkflowFactory
from tests.training.builders import write_mosaic_items
from training.models import ModelVersion, TrainingRun

pytestmark = BROWSER_MARKS

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests.browser import PASSWORD  # noqa: E402


def two_rounds_of_the_loop() -> None:
    """Digit mosaics with labels, two rounds of votes over five days, skills, two earlier model
    versions with their validation mAP, and a written release."""
    mosaic = write_mosaic_items(40, curated=20)
    concepts = list(Concept.objects.order_by("position"))
    workflow = WorkflowFactory(zooniverse_id=5, display_name="Which digits?", version=None)
    volunteers = [Volunteer.objects.create(key=f"v{v}", user_name=f"vol {v}") for v in range(6)]
    start = datetime(2026, 10, 1, tzinfo=UTC)
    vote_id = 0
    for number in (1, 2):
        round_ = Round.objects.create(
            number=number,
            name=f"round {number}",
            workflow=workflow,
            status=Round.Status.CLOSED if number == 1 else Round.Status.PUSHED,
            strategy="typical_diverse" if number == 1 else "bald",
            pushed_at=start + timedelta(days=3 * (number - 1)),
        )
        for k, item_id in enumerate(mosaic.item_ids[(number - 1) * 20 : number * 20]):
            subject = Subject.objects.create(
                zooniverse_id=7000 + item_id,
                item_id=item_id,
                round=round_,
                retired_at=start if k % 2 else None,
            )
            truth = [
                concepts[d].pk for d in mosaic.labels[mosaic.item_ids.index(item_id)].nonzero()[0]
            ]
            for v, volunteer in enumerate(volunteers[:4]):
                vote_id += 1
                Classification.objects.create(
                    zooniverse_id=vote_id,
                    workflow=workflow,
                    workflow_version="1.1",
                    subject=subject,
                    item_id=item_id,
                    volunteer=volunteer,
                    created_at=start + timedelta(days=3 * (number - 1) + v % 3, hours=k),
                    concept_ids=truth if v else truth[:1],
                )
    for v, volunteer in enumerate(volunteers):
        VolunteerSkill.objects.bulk_create(
            VolunteerSkill(
                volunteer=volunteer,
                concept=concept,
                sensitivity=0.6 + 0.05 * v,
                specificity=0.95 - 0.02 * v,
                n_votes=10 + v,
            )
            for concept in concepts
        )
    Item.objects.filter(pk__in=mosaic.item_ids[20:]).update(consensus="confident")
    for version, val_map in enumerate([0.52, 0.71], start=1):
        ModelVersion.objects.create(
            backbone="small_cnn",
            checkpoint_path=f"models/earlier-v{version}.json",
            checkpoint_sha256="0" * 64,
            val_map=val_map,
            metrics={"map": val_map, "micro_f1": val_map - 0.05},
            status="active" if version == 2 else "archived",
            n_train=30,
            n_val=10,
        )
    DatasetRelease.objects.create(
        version=1,
        status=DatasetRelease.Status.SUCCEEDED,
        formats=["csv", "jsonl"],
        n_items=40,
        counts={concepts[0].key: 11},
        split_counts={"train": 32, "val": 8},
        content_hash="cd" * 32,
        finished_at=start + timedelta(days=6),
    )


def test_staff_retrain_watch_the_run_and_read_the_dashboard(
    live_server, browser, staff, screenshots, settings
):
    settings.TRAINING_EPOCHS = 2  # a real fit, kept short: the button sends no parameters
    two_rounds_of_the_loop()
    wait = WebDriverWait(browser, 60)

    # Log in on the training-run list and press "Retrain now".
    browser.get(f"{live_server.url}/admin/login/?next=/admin/training/trainingrun/")
    browser.find_element(By.NAME, "username").send_keys(staff.username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait.until(lambda d: d.find_elements(By.ID, "retrain-now"))
    browser.find_element(By.ID, "retrain-now").click()

    # The button lands on the run's page, which follows the run to its end.
    run = wait.until(lambda d: TrainingRun.objects.filter(trigger="button").first())
    wait.until(lambda d: f"/admin/training/trainingrun/{run.pk}/change/" in d.current_url)
    assert "requested" in browser.find_element(By.CSS_SELECTOR, ".messagelist").text
    wait.until(lambda d: d.find_element(By.ID, "run-progress-bar").get_attribute("value") == "100")
    wait.until(lambda d: "succeeded" in d.find_element(By.ID, "run-progress-text").text)
    plot = browser.find_element(By.ID, "run-metrics-plot")
    wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", plot) > 0)
    browser.save_screenshot(str(screenshots / "training_run.png"))
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    new_version = ModelVersion.objects.get(training_run=run)
    assert new_version.val_map is not None

    # The dashboard: every plot is a decoded image, the tables carry the loop's numbers.
    browser.set_window_size(1400, 4200)  # the whole page in one screenshot
    browser.get(f"{live_server.url}/review/dashboard/")
    images = browser.find_elements(By.CSS_SELECTOR, "#dashboard figure img")
    sources = [image.get_attribute("src") for image in images]
    assert [src.rsplit("/", 1)[-1] for src in sources] == [
        "classifications.png",
        "labels.png",
        "agreement.png",
        "skills.png",
        "learning.png",
    ]
    wait.until(lambda d: all(d.execute_script("return arguments[0].complete", i) for i in images))
    widths = [browser.execute_script("return arguments[0].naturalWidth", i) for i in images]
    assert all(width > 300 for width in widths), dict(zip(sources, widths, strict=True))
    browser.save_screenshot(str(screenshots / "dashboard.png"))

    rounds = browser.find_element(By.ID, "dash-rounds").text
    assert "round 1" in rounds and "round 2" in rounds
    assert "160" in browser.find_element(By.ID, "dash-classifications").text
    # The learning curve's table: the new version first, then the two before it, with their mAP.
    model_rows = browser.find_elements(By.CSS_SELECTOR, "#dash-models tbody tr")
    assert [row.text.split()[0] for row in model_rows][:3] == [
        f"v{new_version.pk}",
        *(
            f"v{pk}"
            for pk in ModelVersion.objects.exclude(pk=new_version.pk)
            .order_by("-pk")
            .values_list("pk", flat=True)
        ),
    ]
    assert "0.710" in model_rows[1].text and "0.520" in model_rows[2].text
    release = browser.find_element(By.ID, "dash-latest-release").text
    assert "Latest release: version 1" in release and "csv, jsonl" in release
    assert browser_errors(browser) == []
