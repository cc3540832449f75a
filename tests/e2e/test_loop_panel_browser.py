"""The dashboard's loop panel keeps itself current in a real headless Chromium.

Staff open the dashboard and see the pipeline; the loop then records a pull in the database and
the panel shows it within one refresh (10 s), without a reload; when the session is gone, the
next refresh fails and the panel says so instead of passing stale numbers for live ones.
"""

from __future__ import annotations

import pytest

from loop.models import LoopEvent, StepName
from loop.services.pipeline import event_record
from tests.browser import BROWSER_MARKS, browser_errors

pytestmark = BROWSER_MARKS

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests.browser import PASSWORD  # noqa: E402


def test_the_loop_panel_shows_a_new_event_by_itself_and_says_when_it_cannot_refresh(
    live_server, browser, staff, screenshots
):
    event_record(
        step=StepName.RETIRE,
        status=LoopEvent.Status.FAILED,
        summary="retire failed",
        error="PanoptesAPIException: 503 Service Unavailable",
    )
    browser.get(f"{live_server.url}/admin/login/?next=/review/dashboard/")
    browser.find_element(By.NAME, "username").send_keys(staff.username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.ID, "loop-panel"))

    panel = browser.find_element(By.ID, "loop-panel")
    steps = [
        row.get_attribute("data-step")
        for row in panel.find_elements(By.CSS_SELECTOR, "#loop-steps tbody tr")
    ]
    assert steps == ["pull", "aggregate", "retire", "train", "round"]
    assert "503 Service Unavailable" in browser.find_element(By.ID, "loop-failures").text
    pull = browser.find_element(By.CSS_SELECTOR, '#loop-steps tr[data-step="pull"]')
    assert "never" in pull.text
    assert not browser.find_element(By.ID, "loop-refresh-error").is_displayed()
    # Nothing wider than the window at 1400 px.
    assert browser.execute_script(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
    marker = browser.execute_script("window.__notReloaded = true; return window.__notReloaded")
    assert marker is True

    # The loop pulls: the panel shows it at its next refresh, in the step's row and the events.
    event_record(
        step=StepName.PULL,
        status=LoopEvent.Status.DONE,
        summary="7 new votes from Zooniverse",
        detail={"votes": 7},
    )
    WebDriverWait(browser, 15, poll_frequency=0.5).until(
        lambda d: (
            "7 new votes from Zooniverse"
            in d.find_element(By.CSS_SELECTOR, '#loop-steps tr[data-step="pull"]').text
        )
    )
    pull = browser.find_element(By.CSS_SELECTOR, '#loop-steps tr[data-step="pull"]')
    assert "done" in pull.find_element(By.CSS_SELECTOR, ".cl-badge").text
    assert pull.find_element(By.TAG_NAME, "time").get_attribute("title").endswith(" UTC")
    assert not browser.find_element(By.ID, "loop-refresh-error").is_displayed()
    first_event = browser.find_element(By.CSS_SELECTOR, "#loop-events tbody tr")
    assert "7 new votes from Zooniverse" in first_event.text
    assert "7 votes pulled" in browser.find_element(By.ID, "loop-totals").text
    assert browser.execute_script("return window.__notReloaded") is True  # no reload
    browser.save_screenshot(str(screenshots / "loop_panel.png"))

    # The session ends: the next refresh is refused, and the panel says it could not refresh.
    from django.contrib.sessions.models import Session

    Session.objects.all().delete()
    note = browser.find_element(By.ID, "loop-refresh-error")
    WebDriverWait(browser, 15, poll_frequency=0.5).until(lambda d: note.is_displayed())
    assert "Could not refresh" in note.text and "out of date" in note.text
    assert "cl-stale" in panel.get_attribute("class")
    assert "7 new votes from Zooniverse" in panel.text  # the last figures stay, marked stale
    # The refused fetch is logged by the browser as a failed resource; nothing else is.
    errors = [e for e in browser_errors(browser) if "/api/v1/loop/" not in e]
    assert errors == []
