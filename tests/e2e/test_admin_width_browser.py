"""The admin's busiest lists fit a 1,400 px wide window: no sideways scroll on items,
classifications, volunteers and training runs, with long ids, titles and names in them.

Screenshots go to $CROWDLOOP_SCREENSHOTS when set (else to the test's temporary folder).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from annotate.models import (
    AggregatedLabel,
    Classification,
    Concept,
    Item,
    Subject,
    Volunteer,
    VolunteerSkill,
)
from tests.browser import BROWSER_MARKS, browser_errors, chromium
from tests.factories import WorkflowFactory

pytestmark = BROWSER_MARKS

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

PASSWORD = "a-long-test-password"

LISTS = {
    "items": "/admin/annotate/item/",
    "classifications": "/admin/annotate/classification/",
    "volunteers": "/admin/annotate/volunteer/",
    "training runs": "/admin/training/trainingrun/",
}


def fill(concepts: dict[str, Concept], admin) -> None:  # type: ignore[no-untyped-def]
    """Rows as long as real ones get: Europeana ids, catalogue titles, anonymous volunteer keys,
    a classification that ticks many concepts, long provider names in the filter."""
    from training.models import ModelVersion, TrainingRun

    workflow = WorkflowFactory(
        zooniverse_id=21_345, display_name="Which concepts apply?", version=None
    )
    keys = list(concepts)
    for i in range(12):
        item = Item.objects.create(
            external_id=f"/2048128/618580_{i:04d}_europeana_fashion_collection_item_identifier",
            image_url=f"https://images.example.org/very/long/path/{i}/full/max/0/default.jpg",
            title="Portrait of an unknown gentleman in a black doublet with a white ruff collar, "
            f"seated at a table with a book and a skull, oil on oak panel, copy {i}",
            provider=f"Rijksmuseum Amsterdam, Department of Paintings and Prints {i % 3}",
            n_classifications=7,
            consensus="uncertain",
            uncertainty=0.5007119767439956,
            contradicts_prior=bool(i % 2),
            conflicts_model=bool(i % 3 == 0),
        )
        subject = Subject.objects.create(zooniverse_id=90_000_000 + i, item=item)
        volunteer = Volunteer.objects.create(
            key=f"not-logged-in-{i:02d}4f7a2b9c1d8e3f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e",
            user_name="" if i % 2 else f"a_very_long_zooniverse_user_name_number_{i}",
            logged_in=not i % 2,
            n_classifications=1234,
        )
        VolunteerSkill.objects.create(
            volunteer=volunteer, concept=concepts[keys[0]], sensitivity=0.5007119767439956,
            specificity=0.912345678, n_votes=1234,
        )
        Classification.objects.create(
            zooniverse_id=400_000_000 + i,
            workflow=workflow,
            workflow_version="112.45",
            subject=subject,
            item=item,
            volunteer=volunteer,
            created_at=datetime(2026, 9, 30, 23, 59, tzinfo=UTC) - timedelta(days=i),
            concept_ids=[c.pk for c in concepts.values()][: 12],
        )
        AggregatedLabel.objects.create(
            item=item, concept=concepts[keys[0]], posterior=0.5007119767439956, method="dawid_skene"
        )
    for i in range(6):
        run = TrainingRun.objects.create(
            trigger=["button", "api", "command", "beat", "auto", "auto"][i],
            status="succeeded" if i else "running",
            progress=1.0 if i else 0.5007119767439956,
            requested_by=admin,
            attempts=3,
            finished_at=datetime(2026, 9, 30, 10, 30, tzinfo=UTC) if i else None,
        )
        if i:
            ModelVersion.objects.create(
                training_run=run, backbone="resnet50_imagenet", concepts=keys,
                val_map=0.5007119767439956, checkpoint_path="x", checkpoint_sha256="0" * 64,
            )


@pytest.fixture
def admin_with_password(db, django_user_model):
    return django_user_model.objects.create_superuser(
        "administrator.with.a.long.name", "admin@example.org", PASSWORD
    )


@pytest.fixture
def window_1400(tmp_path):
    with chromium(tmp_path / "profile", window="1400,900") as driver:
        yield driver


def test_the_busiest_admin_lists_need_no_sideways_scroll_at_1400_px(
    live_server, window_1400, admin_with_password, concepts, screenshots
):
    browser = window_1400
    fill(concepts, admin_with_password)
    browser.get(f"{live_server.url}/admin/login/?next=/admin/")
    browser.find_element(By.NAME, "username").send_keys(admin_with_password.username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 30).until(lambda d: "/login/" not in d.current_url)
    assert browser.execute_script("return window.innerWidth") == 1400

    too_wide = {}
    for name, path in LISTS.items():
        browser.get(f"{live_server.url}{path}")
        WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.ID, "result_list"))
        rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
        assert len(rows) >= 6, name
        browser.save_screenshot(str(screenshots / f"admin_{name.replace(' ', '_')}.png"))
        # The page, and the list inside it (the admin scrolls a wide table in its own box).
        widths = browser.execute_script(
            "const results = document.querySelector('#changelist .results');"
            "return [document.documentElement.scrollWidth, window.innerWidth,"
            " results.scrollWidth, results.clientWidth];"
        )
        if widths[0] > widths[1] or widths[2] > widths[3]:
            too_wide[name] = widths
        assert "0.5007119767439956" not in browser.page_source, name
    assert too_wide == {}
    # The images are on servers this machine cannot reach: only those may fail to load.
    assert [e for e in browser_errors(browser) if "images.example.org" not in e] == []
