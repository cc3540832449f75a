"""Staff promote a model that did worse on validation in a real headless Chromium: the admin
warns with both mAPs, "Promote anyway" promotes it, and the version says who overrode.

A screenshot of the warning goes to $CROWDLOOP_SCREENSHOTS when set (else to the test's
temporary folder).
"""

from __future__ import annotations

import pytest

from tests.browser import BROWSER_MARKS, browser_errors
from tests.training.builders import version
from training.models import ModelVersion

pytestmark = BROWSER_MARKS

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from tests.browser import PASSWORD  # noqa: E402


def test_promoting_a_worse_model_warns_with_both_maps_and_records_the_override(
    live_server, browser, staff, screenshots
):
    active = version(0.654, status="active", name="v1")
    worse = version(0.398, name="v2")
    browser.get(f"{live_server.url}/admin/login/?next=/admin/training/modelversion/")
    browser.find_element(By.NAME, "username").send_keys(staff.username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.ID, "result_list"))

    browser.find_element(
        By.CSS_SELECTOR, f'input[name="_selected_action"][value="{worse.pk}"]'
    ).click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("promote")
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()

    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.ID, "crowdloop-confirm"))
    page = browser.find_element(By.ID, "content").text
    assert f"Promote v{worse.pk} over a better model?" in page
    assert "0.398" in page and "0.654" in page
    browser.save_screenshot(str(screenshots / "promote_warning.png"))
    assert ModelVersion.objects.get(pk=worse.pk).status == "candidate"

    browser.find_element(By.ID, "crowdloop-confirm").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".messagelist"))
    note = (
        f"promoted over v{active.pk} (val mAP 0.654) with val mAP 0.398, "
        f"confirmed by {staff.username}"
    )
    assert note in browser.find_element(By.CSS_SELECTOR, ".messagelist").text
    assert ModelVersion.objects.get(pk=worse.pk).status == "active"

    browser.get(f"{live_server.url}/admin/training/modelversion/{worse.pk}/change/")
    WebDriverWait(browser, 30).until(
        lambda d: d.find_elements(By.CLASS_NAME, "field-promotion_note")
    )
    assert note in browser.find_element(By.CLASS_NAME, "field-promotion_note").text
    assert browser_errors(browser) == []
