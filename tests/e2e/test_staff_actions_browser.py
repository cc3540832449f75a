"""Staff use the admin's staff actions page in a real headless Chromium, against the Zooniverse
stand-in: request a round, push it, sync the crowd's votes, make a release, and watch a run
appear in the lists without a reload.

Celery is eager here, so each form's task runs inside the request that queued it (after its
commit, as a worker would pick it up): the outcome is in the list when the page comes back.
"""

from __future__ import annotations

import pytest

from annotate.models import Classification, DatasetRelease, Round
from loop.models import LoopEvent, StepName
from loop.services.pipeline import event_record
from tests.browser import BROWSER_MARKS, browser_errors
from tests.training.builders import write_mosaic_items
from training.models import RoundRequest

pytestmark = BROWSER_MARKS

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from tests.browser import PASSWORD  # noqa: E402


def message(browser) -> str:  # type: ignore[no-untyped-def]
    """The admin's message after a submit; "" while the next page is still loading."""
    try:
        found = browser.find_elements(By.CSS_SELECTOR, "ul.messagelist")
        return found[0].text if found else ""
    except StaleElementReferenceException:
        return ""


def first_run(browser, table: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """(status, whole text) of the newest row of one list."""
    row = browser.find_element(By.CSS_SELECTOR, f"#{table} tbody tr")
    return row.get_attribute("data-status"), row.text


def test_staff_request_push_sync_and_release_from_the_page_and_see_each_outcome(
    live_server,
    browser,
    staff,
    stand_in,
    screenshots,
):
    write_mosaic_items(20, curated=0)
    browser.get(f"{live_server.url}/admin/login/?next=/admin/")
    browser.find_element(By.NAME, "username").send_keys(staff.username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.ID, "staff-actions-link"))
    browser.find_element(By.ID, "staff-actions-link").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.ID, "staff-actions"))
    assert "No round request yet." in browser.find_element(By.ID, "runs-rounds").text

    # Request the next round: four items at random, not pushed.
    size = browser.find_element(By.ID, "id_size")
    size.clear()
    size.send_keys("4")
    Select(browser.find_element(By.ID, "id_strategy")).select_by_value("random")
    browser.find_element(By.ID, "submit-round").click()
    WebDriverWait(browser, 60).until(lambda d: "queued" in message(d))
    # Its id, not 1: PostgreSQL's sequences run on across the tests of a session.
    request = RoundRequest.objects.get()
    assert f"Round request {request.pk} queued: 4 items by random, not pushed" in message(browser)
    status, text = first_run(browser, "runs-rounds")
    assert status == "succeeded" and f"round request {request.pk}: 4 items, random" in text
    assert "round-1" in text and "by stan" in text
    chosen = Round.objects.get()

    # Push it: the draft is offered, and the push succeeds once the stand-in has it.
    Select(browser.find_element(By.ID, "id_round")).select_by_value(str(chosen.pk))
    browser.find_element(By.ID, "submit-push").click()
    WebDriverWait(browser, 60).until(lambda d: "Push of round-1" in message(d))
    status, text = first_run(browser, "runs-pushes")
    assert status == "succeeded" and "push round-1" in text and "pushed: " in text
    assert len(stand_in.subjects()) == 4
    assert browser.find_elements(By.ID, "push-none")  # nothing left to push
    assert not browser.find_element(By.ID, "submit-push").is_enabled()

    # The crowd classifies; Sync now brings the votes in through the loop's pull step.
    stand_in.run_volunteers(stand_in.workflow_id, classifications=6)
    browser.find_element(By.ID, "submit-sync").click()
    WebDriverWait(browser, 60).until(lambda d: "Pull of every active workflow" in message(d))
    status, text = first_run(browser, "runs-sync")
    assert status == "succeeded" and "sync now by stan" in text and "6 new votes" in text
    assert Classification.objects.count() == 6

    # Make a release: the page links to the release form, whose build the list then shows.
    browser.find_element(By.ID, "release-add").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.NAME, "_save"))
    browser.find_element(By.NAME, "note").send_keys("from the staff page")
    browser.find_element(By.NAME, "_save").click()
    WebDriverWait(browser, 120).until(lambda d: "was added successfully" in message(d))
    release = DatasetRelease.objects.get()
    browser.get(f"{live_server.url}/admin/loop/loopstep/actions/")
    status, text = first_run(browser, "runs-releases")
    assert status == release.status == "succeeded", release.error
    assert f"release {release.version}: from the staff page" in text and "by stan" in text

    # A run recorded elsewhere (beat's pull, failing) appears by itself, without a reload.
    browser.execute_script("window.__notReloaded = true")
    event_record(
        step=StepName.PULL,
        status=LoopEvent.Status.FAILED,
        summary="failed",
        error="PanoptesAPIException: 503 Service Unavailable",
        trigger="scheduled pull",
    )
    # The list is redrawn in place while it is read: a row gone stale is read again.
    WebDriverWait(
        browser, 20, poll_frequency=0.5, ignored_exceptions=(StaleElementReferenceException,)
    ).until(lambda d: first_run(d, "runs-sync")[0] == "failed")
    status, text = first_run(browser, "runs-sync")
    assert "scheduled pull" in text and "503 Service Unavailable" in text
    assert browser.execute_script("return window.__notReloaded") is True
    assert not browser.find_element(By.ID, "runs-refresh-error").is_displayed()
    # Nothing wider than the window at 1400 px.
    assert browser.execute_script(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
    browser.save_screenshot(str(screenshots / "staff_actions.png"))
    assert browser_errors(browser) == []
